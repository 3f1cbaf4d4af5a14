//! The instance's writer: one task that groups the appends queued on this
//! instance and commits each group in one transaction. The transaction
//! first locks the `chain_head` row (`SELECT … FOR UPDATE`): instances
//! append one group at a time, each after the last, so the chain stays
//! single and gap-free however many instances share the database. The
//! head row is written in the same transaction as the entries, so a
//! crashed group leaves neither.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::Row as _;
use sqlx::postgres::{PgConnection, PgPool};
use tokio::sync::mpsc;
use tollgate_protocol::{HashValue, LedgerEntry, Timestamp};

use super::db;
use crate::writes::postgres::{check_guards, insert_rows};
use crate::{Clock, Error, Item, Request, insert_error, refuse_stale};

/// Groups and entries committed by this instance.
#[derive(Default)]
pub(super) struct Counters {
    pub groups: AtomicU64,
    pub appends: AtomicU64,
}

pub(super) struct Writer {
    pub pool: PgPool,
    pub clock: Arc<dyn Clock>,
    pub max_batch: usize,
    pub stats: Arc<Counters>,
    /// The head after this instance's last group, and its time: where the
    /// next group is chained from if no other instance appended since.
    pub last: Option<(u64, HashValue, Timestamp)>,
}

impl Writer {
    pub async fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        let mut batch = Vec::with_capacity(self.max_batch);
        while rx.recv_many(&mut batch, self.max_batch).await > 0 {
            self.commit_group(std::mem::take(&mut batch)).await;
        }
    }

    /// Commits a group; if one unit of it is refused (a receipt or key
    /// already stored, or an approval row the tables refuse), the others
    /// are committed one by one so that only it fails.
    async fn commit_group(&mut self, mut batch: Vec<Request>) {
        match self.insert_all(&mut batch).await {
            Ok(mut entries) => {
                for req in batch {
                    let rest = entries.split_off(req.items.len());
                    let _ = req.reply.send(Ok(std::mem::replace(&mut entries, rest)));
                }
            }
            Err(
                Error::DuplicateReceipt(_) | Error::DuplicateKey(_) | Error::ApprovalConflict(_),
            ) if batch.len() > 1 => {
                for req in batch {
                    let mut one = vec![req];
                    let result = self.insert_all(&mut one).await;
                    if let Some(req) = one.pop() {
                        let _ = req.reply.send(result);
                    }
                }
            }
            Err(e) => {
                for req in batch {
                    let _ = req.reply.send(Err(e.clone()));
                }
            }
        }
    }

    /// Appends `batch` in one transaction, under the chain head; units
    /// whose guard fails there are answered and removed first. A group of
    /// plain appends chained from this instance's last head goes in one
    /// round trip ([`Writer::append_fast`]); anything else, or a head
    /// another instance moved, takes the general path.
    async fn insert_all(&mut self, batch: &mut Vec<Request>) -> Result<Vec<LedgerEntry>, Error> {
        if let Some(entries) = self.append_fast(batch).await? {
            return Ok(entries);
        }
        let result = self.insert_general(batch).await;
        if result.is_err() {
            self.last = None;
        }
        result
    }

    /// The registry seq every guard of `batch` read, if the group can take
    /// the one-round-trip path: no spending, approval rows, reservations
    /// opened, entities changed, budget, approval or entity guards, and one
    /// registry seq among its guards. `Some(None)`: no guard at all.
    fn plain(batch: &[Request]) -> Option<Option<u64>> {
        let mut registry = None;
        for item in batch.iter().flat_map(|r| &r.items) {
            let a = &item.append;
            if !a.spend.is_empty()
                || a.approval.is_some()
                || a.reserve.is_some()
                || a.entity.is_some()
            {
                return None;
            }
            if let Some(g) = &a.guard {
                if !g.budgets.is_empty()
                    || g.approval.is_some()
                    || g.entity.is_some()
                    || registry.is_some_and(|r| r != g.registry_seq)
                {
                    return None;
                }
                registry = Some(g.registry_seq);
            }
        }
        Some(registry)
    }

    /// The group in one statement (`tollgate_append`), chained from this
    /// instance's last head; `None` if it cannot go that way (then
    /// nothing was written).
    async fn append_fast(&mut self, batch: &[Request]) -> Result<Option<Vec<LedgerEntry>>, Error> {
        let (Some((head_seq, head_hash, last_at)), Some(registry)) =
            (self.last.clone(), Self::plain(batch))
        else {
            return Ok(None);
        };
        let items: Vec<&Item> = batch.iter().flat_map(|r| &r.items).collect();
        let now = self.clock.now();
        let at = if last_at > now { last_at } else { now };
        let g = Chained::new(&items, head_seq, head_hash, &at);
        let (seq, prev) = (head_seq + g.entries.len() as u64, g.last);
        let (ev_seqs, ev_types) = events(&g.entries);
        let done: i64 = sqlx::query_scalar(
            "SELECT tollgate_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(head_seq as i64)
        .bind(head_hash.to_string())
        .bind(registry.map(|r| r as i64))
        .bind(g.seqs)
        .bind(g.ids)
        .bind(g.hashes)
        .bind(g.lines)
        .bind(g.keys)
        .bind(ev_seqs)
        .bind(ev_types)
        .bind(prev.to_string())
        .bind(at.as_str())
        .fetch_one(&self.pool)
        .await
        .map_err(|e| {
            self.last = None;
            insert_error(e, &items)
        })?;
        if done != seq as i64 {
            // Another instance appended (or changed the registries) since.
            self.last = None;
            return Ok(None);
        }
        self.last = Some((seq, prev, at));
        self.stats.groups.fetch_add(1, Ordering::Relaxed);
        self.stats
            .appends
            .fetch_add(g.entries.len() as u64, Ordering::Relaxed);
        Ok(Some(g.entries))
    }

    /// The general path: lock the head, check guards, write everything
    /// the group records, move the head, in one transaction.
    async fn insert_general(
        &mut self,
        batch: &mut Vec<Request>,
    ) -> Result<Vec<LedgerEntry>, Error> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let (head_seq, head_hash, at) = lock_head(&mut tx, &*self.clock).await?;
        let units: Vec<_> = batch.iter().map(crate::guarded).collect();
        let answers = check_guards(&mut tx, &units).await?;
        drop(units);
        refuse_stale(batch, answers);
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let items: Vec<&Item> = batch.iter().flat_map(|r| &r.items).collect();
        let g = Chained::new(&items, head_seq, head_hash, &at);
        let (seq, prev) = (head_seq + g.entries.len() as u64, g.last);
        let inserted = sqlx::query(
            "INSERT INTO entries (seq, receipt_id, hash, line, idempotency_key)
             SELECT * FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::BYTEA[], $5::TEXT[])",
        )
        .bind(g.seqs)
        .bind(g.ids)
        .bind(g.hashes)
        .bind(g.lines)
        .bind(g.keys)
        .execute(&mut *tx)
        .await;
        let entries = g.entries;
        if let Err(e) = inserted {
            // With several rows the culprit is not known: the caller
            // retries one by one, where it is.
            return Err(insert_error(e, &items));
        }
        // The group's outbox events in one statement.
        let (seqs, types) = events(&entries);
        if !seqs.is_empty() {
            sqlx::query(
                "INSERT INTO outbox (seq, type)
             SELECT s, t FROM UNNEST($1::BIGINT[], $2::TEXT[]) WITH ORDINALITY AS u (s, t, n)
             ORDER BY n",
            )
            .bind(seqs)
            .bind(types)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        insert_rows(&mut tx, &items, &entries).await?;
        // The reservations this group fulfils, whichever instance made
        // them.
        let keys: Vec<String> = items
            .iter()
            .filter_map(|i| i.append.idempotency_key.clone())
            .collect();
        if !keys.is_empty() {
            sqlx::query("DELETE FROM pending WHERE idempotency_key = ANY($1)")
                .bind(keys)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        set_head(&mut tx, seq, prev, &at).await?;
        tx.commit().await.map_err(db)?;
        self.last = Some((seq, prev, at));
        self.stats.groups.fetch_add(1, Ordering::Relaxed);
        self.stats
            .appends
            .fetch_add(entries.len() as u64, Ordering::Relaxed);
        Ok(entries)
    }
}

/// A group's entries chained from a head, and the columns of their rows.
struct Chained {
    entries: Vec<LedgerEntry>,
    /// The last entry's hash: the new head's.
    last: HashValue,
    seqs: Vec<i64>,
    ids: Vec<String>,
    hashes: Vec<String>,
    lines: Vec<Vec<u8>>,
    keys: Vec<Option<String>>,
}

impl Chained {
    /// `items` as entries after `seq` (whose hash is `prev`), stamped `at`.
    fn new(items: &[&Item], mut seq: u64, mut prev: HashValue, at: &Timestamp) -> Self {
        let mut g = Self {
            entries: Vec::with_capacity(items.len()),
            last: prev,
            seqs: Vec::with_capacity(items.len()),
            ids: Vec::with_capacity(items.len()),
            hashes: Vec::with_capacity(items.len()),
            lines: Vec::with_capacity(items.len()),
            keys: Vec::with_capacity(items.len()),
        };
        for item in items {
            seq += 1;
            let entry = item.append.entry(seq, prev, at.clone());
            prev = entry.hash;
            g.seqs.push(seq as i64);
            g.ids.push(item.receipt_id.clone());
            g.hashes.push(entry.hash.to_string());
            g.lines.push(entry.to_canonical());
            g.keys.push(item.append.idempotency_key.clone());
            g.entries.push(entry);
        }
        g.last = prev;
        g
    }
}

/// Each entry's outbox events, as `(seq, type)` columns in order.
fn events(entries: &[LedgerEntry]) -> (Vec<i64>, Vec<&'static str>) {
    entries
        .iter()
        .flat_map(|e| {
            crate::event_types(e.receipt())
                .into_iter()
                .map(move |t| (e.seq as i64, t))
        })
        .unzip()
}

/// Locks the chain head for this transaction (every other instance's
/// append waits) and returns the last seq, its hash, and the time to stamp
/// entries with: the clock, but never before the last group's, whichever
/// instance appended it.
pub(super) async fn lock_head(
    conn: &mut PgConnection,
    clock: &dyn Clock,
) -> Result<(u64, HashValue, Timestamp), Error> {
    let head = sqlx::query("SELECT seq, hash, appended_at FROM chain_head WHERE id = 1 FOR UPDATE")
        .fetch_one(&mut *conn)
        .await
        .map_err(db)?;
    let (seq, hash, last): (i64, String, Option<String>) = (head.get(0), head.get(1), head.get(2));
    let prev = HashValue::parse(&hash).ok_or_else(|| Error::Corrupt {
        seq: seq as u64,
        reason: format!("the chain head's hash {hash:?} is not a hash value"),
    })?;
    let now = clock.now();
    let at = match last.as_deref().and_then(Timestamp::parse) {
        Some(last) if last > now => last,
        _ => now,
    };
    Ok((seq as u64, prev, at))
}

/// Moves the chain head, in the transaction that appended up to it.
pub(super) async fn set_head(
    conn: &mut PgConnection,
    seq: u64,
    hash: HashValue,
    at: &Timestamp,
) -> Result<(), Error> {
    sqlx::query("UPDATE chain_head SET seq = $1, hash = $2, appended_at = $3 WHERE id = 1")
        .bind(seq as i64)
        .bind(hash.to_string())
        .bind(at.as_str())
        .execute(conn)
        .await
        .map(|_| ())
        .map_err(db)
}
