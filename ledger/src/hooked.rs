//! A ledger with hooks before each read, write and append: the one place
//! where a test injects a store's failures (a full disk, a lost database,
//! a concurrent change) without writing a fake of every store trait. Its
//! every method forwards to the ledger inside once the hook allows it.
//!
//! Built with the cargo feature `testing` (and in this crate's own tests).

use crate::{
    Append, AppendStats, ApprovalRecord, ApprovalStore, AttemptRow, Chain, EndpointRow, Error,
    Guard, Head, OutboxEvent, OutboxStore, RegistryAppend, RegistryState, RegistryStore, Spend,
    SpendingStore, TreeStore, WebhookOp,
};
use tollgate_protocol::{HashAlg, LedgerEntry};

/// What runs before each call: an error ends the call with it, before the
/// ledger inside is reached.
pub trait Hooks: Send + Sync + 'static {
    /// Before each read.
    fn read(&self) -> Result<(), Error> {
        Ok(())
    }

    /// Before each write that is not an append of entries.
    fn write(&self) -> Result<(), Error> {
        Ok(())
    }

    /// Before each append of `items` as one unit.
    fn append(&self, items: &[Append]) -> Result<(), Error> {
        let _ = items;
        self.write()
    }
}

/// `inner`, with `hooks` before each call.
#[derive(Clone, Debug)]
pub struct Hooked<L, H> {
    /// The ledger the calls reach.
    pub inner: L,
    /// What runs first.
    pub hooks: H,
}

impl<L: Chain, H: Hooks> Chain for Hooked<L, H> {
    async fn append_unit(&self, items: Vec<Append>) -> Result<Vec<LedgerEntry>, Error> {
        self.hooks.append(&items)?;
        self.inner.append_unit(items).await
    }

    async fn line_by_idempotency_key(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        self.hooks.read()?;
        self.inner.line_by_idempotency_key(key).await
    }

    async fn line_by_receipt_id(&self, receipt_id: &str) -> Result<Option<Vec<u8>>, Error> {
        self.hooks.read()?;
        self.inner.line_by_receipt_id(receipt_id).await
    }

    async fn get(&self, seq: u64) -> Result<Option<LedgerEntry>, Error> {
        self.hooks.read()?;
        self.inner.get(seq).await
    }

    async fn get_by_receipt_id(&self, receipt_id: &str) -> Result<Option<LedgerEntry>, Error> {
        self.hooks.read()?;
        self.inner.get_by_receipt_id(receipt_id).await
    }

    async fn head(&self) -> Result<Head, Error> {
        self.hooks.read()?;
        self.inner.head().await
    }

    async fn lines(&self, from: u64, limit: u32) -> Result<Vec<Vec<u8>>, Error> {
        self.hooks.read()?;
        self.inner.lines(from, limit).await
    }

    async fn line_lengths(&self, from: u64, limit: u32) -> Result<Vec<u64>, Error> {
        self.hooks.read()?;
        self.inner.line_lengths(from, limit).await
    }

    fn hash_alg(&self) -> HashAlg {
        self.inner.hash_alg()
    }

    async fn probe(&self) -> Result<(), Error> {
        self.hooks.write()?;
        self.inner.probe().await
    }

    fn stats(&self) -> AppendStats {
        self.inner.stats()
    }
}

impl<L: RegistryStore, H: Hooks> RegistryStore for Hooked<L, H> {
    async fn append_registry_after(
        &self,
        items: Vec<RegistryAppend>,
        seed: bool,
        seen: Option<u64>,
    ) -> Result<Vec<LedgerEntry>, Error> {
        self.hooks.write()?;
        self.inner.append_registry_after(items, seed, seen).await
    }

    async fn registry(&self) -> Result<RegistryState, Error> {
        self.hooks.read()?;
        self.inner.registry().await
    }

    async fn registry_seq(&self) -> Result<u64, Error> {
        self.hooks.read()?;
        self.inner.registry_seq().await
    }

    async fn lease(&self, id: &str) -> Result<Option<crate::LeaseRecord>, Error> {
        self.hooks.read()?;
        self.inner.lease(id).await
    }

    async fn registry_announcements(
        &self,
    ) -> Result<Option<tokio::sync::mpsc::Receiver<u64>>, Error> {
        self.inner.registry_announcements().await
    }
}

impl<L: ApprovalStore, H: Hooks> ApprovalStore for Hooked<L, H> {
    async fn approval(&self, id: &str) -> Result<Option<ApprovalRecord>, Error> {
        self.hooks.read()?;
        self.inner.approval(id).await
    }

    async fn approvals(
        &self,
        open_only: bool,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<ApprovalRecord>, Error> {
        self.hooks.read()?;
        self.inner.approvals(open_only, after_seq, limit).await
    }

    async fn approvals_due(&self, now: i64, limit: u32) -> Result<Vec<ApprovalRecord>, Error> {
        self.hooks.read()?;
        self.inner.approvals_due(now, limit).await
    }
}

impl<L: SpendingStore, H: Hooks> SpendingStore for Hooked<L, H> {
    async fn spending(&self, now: i64) -> Result<Vec<Spend>, Error> {
        self.hooks.read()?;
        self.inner.spending(now).await
    }

    async fn reserve_holding(
        &self,
        key: &str,
        body: &[u8],
        guard: Option<Guard>,
        charges: Vec<Spend>,
    ) -> Result<(), Error> {
        self.hooks.write()?;
        self.inner.reserve_holding(key, body, guard, charges).await
    }

    async fn held(&self, now: i64) -> Result<Vec<(String, Spend)>, Error> {
        self.hooks.read()?;
        self.inner.held(now).await
    }

    async fn release(&self, key: &str) -> Result<(), Error> {
        self.hooks.write()?;
        self.inner.release(key).await
    }

    async fn pending(&self) -> Result<Vec<(String, Vec<u8>)>, Error> {
        self.hooks.read()?;
        self.inner.pending().await
    }
}

impl<L: OutboxStore, H: Hooks> OutboxStore for Hooked<L, H> {
    async fn outbox_after(&self, after: u64, limit: u32) -> Result<Vec<OutboxEvent>, Error> {
        self.hooks.read()?;
        self.inner.outbox_after(after, limit).await
    }

    async fn outbox_last(&self) -> Result<u64, Error> {
        self.hooks.read()?;
        self.inner.outbox_last().await
    }

    async fn outbox_event(&self, id: u64) -> Result<Option<OutboxEvent>, Error> {
        self.hooks.read()?;
        self.inner.outbox_event(id).await
    }

    async fn outbox_first_from(&self, seq: u64) -> Result<Option<u64>, Error> {
        self.hooks.read()?;
        self.inner.outbox_first_from(seq).await
    }

    async fn webhook_endpoints(&self) -> Result<Vec<EndpointRow>, Error> {
        self.hooks.read()?;
        self.inner.webhook_endpoints().await
    }

    async fn webhook_write(&self, ops: Vec<WebhookOp>) -> Result<(), Error> {
        self.hooks.write()?;
        self.inner.webhook_write(ops).await
    }

    async fn webhook_attempts(
        &self,
        endpoint: &str,
        from_event: u64,
        limit: u32,
    ) -> Result<Vec<AttemptRow>, Error> {
        self.hooks.read()?;
        self.inner
            .webhook_attempts(endpoint, from_event, limit)
            .await
    }

    async fn webhook_redeliveries(&self, endpoint: &str) -> Result<Vec<u64>, Error> {
        self.hooks.read()?;
        self.inner.webhook_redeliveries(endpoint).await
    }

    async fn delivery_lease(&self) -> Result<bool, Error> {
        self.inner.delivery_lease().await
    }
}

impl<L: crate::EntityStore, H: Hooks> crate::EntityStore for Hooked<L, H> {
    async fn entity(&self, resource: &str) -> Result<Option<crate::EntityRecord>, Error> {
        self.hooks.read()?;
        self.inner.entity(resource).await
    }

    async fn entity_history(&self, resource: &str) -> Result<Vec<(u64, u64)>, Error> {
        self.hooks.read()?;
        self.inner.entity_history(resource).await
    }
}

impl<L: TreeStore, H: Hooks> TreeStore for Hooked<L, H> {
    async fn tree_size(&self) -> Result<u64, Error> {
        self.hooks.read()?;
        self.inner.tree_size().await
    }

    async fn tree_hashes(&self, indexes: &[u64]) -> Result<Vec<[u8; 32]>, Error> {
        self.hooks.read()?;
        self.inner.tree_hashes(indexes).await
    }

    async fn extend_tree(
        &self,
        from: u64,
        to: u64,
        hashes: Vec<(u64, [u8; 32])>,
    ) -> Result<bool, Error> {
        self.hooks.write()?;
        self.inner.extend_tree(from, to, hashes).await
    }

    async fn origin(&self, proposed: Option<&str>) -> Result<Option<String>, Error> {
        self.hooks.write()?;
        self.inner.origin(proposed).await
    }

    async fn checkpoint(&self) -> Result<Option<(u64, String)>, Error> {
        self.hooks.read()?;
        self.inner.checkpoint().await
    }

    async fn put_checkpoint(&self, size: u64, note: String) -> Result<bool, Error> {
        self.hooks.write()?;
        self.inner.put_checkpoint(size, note).await
    }
}
