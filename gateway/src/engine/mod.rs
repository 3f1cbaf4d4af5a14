//! The engine: the intent flow, approvals, the registries, the commit
//! targets, recovery and webhook delivery, with no HTTP and no command
//! line.
//!
//! A [`Gateway`] owns the ledger, the signer, the clock, the commit
//! targets and an in-memory view of the registries: the core every
//! aggregate shares. Each aggregate is a module with a handle that borrows
//! the gateway ([`Gateway::intents`], [`Gateway::approvals`],
//! [`Gateway::registry`], [`Gateway::policies`], [`Gateway::webhooks`],
//! [`Gateway::checkpoints`]) and a `State` of its own (its locks, its
//! waiters) that no other module opens; what one aggregate asks of
//! another goes through that one's handle. The view is built from
//! the ledger at start ([`Gateway::open`]) and replaced whole after each
//! registry change, once that change's receipt is durable: the ledger is
//! the one source of truth (spec §4.3), the view only a cache of it.
//! Registry changes are serialized by one lock, so each is checked against
//! the state it will apply to.
//!
//! Several gateways may share one ledger (PostgreSQL). Each decision and
//! registry change carries what it read (the registry seq of its view,
//! the spending of each budget) as a [`tollgate_ledger::Guard`], which the
//! ledger checks in the appending transaction after every earlier append,
//! whichever instance made it. A stale one appends nothing; the engine
//! reads the registries or spending again and decides again. So no
//! decision is ever recorded on a view older than the registry changes
//! before it in the chain, and no budget is exceeded across instances,
//! by construction; announcements of changes (LISTEN/NOTIFY) only make
//! the reload come earlier.
//!
//! Invariants:
//! - nothing is acknowledged before its receipt is durable;
//! - a refused intent or registry change appends nothing;
//! - the clock is read only for the skew check, a registry receipt's
//!   `issued_at`, budget windows, whether an approval's deadline has
//!   passed and the ledger's `appended_at`; never by a decision;
//! - an escalated intent is committed only through a [`Quorum`], which
//!   only the approvals module makes, after checking a completed quorum.

mod approvals;
mod budget;
pub mod checkpoints;
mod commit;
mod entities;
mod error;
mod events;
mod intents;
mod leases;
mod registry;
pub mod resources;
pub mod webhooks;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};

use tollgate_ledger::Ledger;
use tollgate_pipeline::Snapshot;
use tollgate_policies::Bundle;
use tollgate_protocol::{Clock, HashValue, Jwk, KeySet, Object, Value};
use tollgate_signer::Keyring;

use crate::observe::Metrics;

pub use approvals::{ApprovalInfo, Decided, IntentState, MAX_LISTED, Quorum, Requirement};
pub use error::{
    ApprovalError, AuthFailure, CoreError, IntentError, RecordedError, RegistryError, Skew,
    StartError,
};
pub use events::EventError;
pub use intents::{Recovery, Submitted, Unfinished, identity};
pub use leases::{LeaseAnswer, LeaseError, LeaseView};
pub use registry::{Changed, DelegationInfo, PolicyList, ReviewerInfo, SourceInfo};

/// Limits of the intent flow.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest distance between an intent's `issued_at` and the gateway's
    /// clock, seconds.
    pub max_skew_seconds: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_skew_seconds: crate::limits::DEFAULT_MAX_SKEW_SECONDS,
        }
    }
}

/// Where `http` targets are: the upstream URL of each action, and how long
/// to wait for an answer.
#[derive(Clone, Debug)]
pub struct Upstreams {
    /// URL by action name.
    pub urls: BTreeMap<String, String>,
    /// Timeout of one upstream call.
    pub timeout: std::time::Duration,
    /// Commit `http` targets to a simulated upstream that accepts every
    /// intent and is never called (the sandbox): no URL is needed.
    pub simulate: bool,
    /// Resource types whose attributes are looked up at the target rather
    /// than read from the registry (within `timeout`).
    pub lookups: resources::Lookups,
}

/// An `--upstream` setting: the URL an action with an `http` target
/// commits to ("ACTION=URL").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamSetting {
    /// The action.
    pub action: String,
    /// Its upstream URL.
    pub url: String,
}

impl std::str::FromStr for UpstreamSetting {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| crate::Error::Config(why.to_owned());
        let (action, url) = s
            .split_once('=')
            .ok_or_else(|| bad("expected ACTION=URL"))?;
        if !tollgate_protocol::is_action(action) {
            return Err(bad("the action is not an action name (e.g. orders.refund)"));
        }
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(bad("the URL is http:// or https://"));
        }
        Ok(Self {
            action: action.to_owned(),
            url: url.to_owned(),
        })
    }
}

impl Upstreams {
    /// The upstream of each action in `settings`; an action given twice
    /// is refused.
    pub fn urls_of(settings: &[UpstreamSetting]) -> Result<BTreeMap<String, String>, crate::Error> {
        let mut urls = BTreeMap::new();
        for u in settings {
            if urls.insert(u.action.clone(), u.url.clone()).is_some() {
                return Err(crate::Error::Config(format!(
                    "--upstream: action {} is given twice",
                    u.action
                )));
            }
        }
        Ok(urls)
    }

    /// The first action of `bundle` that commits to an `http` target with
    /// no upstream configured.
    pub(crate) fn missing(&self, bundle: &Bundle) -> Option<String> {
        if self.simulate {
            return None;
        }
        bundle
            .action_names()
            .find(|a| {
                bundle
                    .action(a)
                    .is_some_and(|c| c.target == tollgate_policies::Target::Http)
                    && !self.urls.contains_key(*a)
            })
            .map(str::to_owned)
    }
}

impl Default for Upstreams {
    fn default() -> Self {
        Self {
            urls: BTreeMap::new(),
            timeout: std::time::Duration::from_millis(crate::limits::DEFAULT_UPSTREAM_TIMEOUT_MS),
            simulate: false,
            lookups: resources::Lookups::default(),
        }
    }
}

/// What a first start imports into an empty ledger, each as a registry
/// receipt (spec §4.3), before any decision. Read from the data
/// folder by the caller, and only when the ledger asks for it.
#[derive(Clone, Debug, Default)]
pub struct Seed {
    /// The policy bundle's files, by relative path; it becomes active.
    pub policy: BTreeMap<String, String>,
    /// Further bundles in force beside it, each governing its own actions.
    pub also: Vec<BTreeMap<String, String>>,
    /// Trusted issuer keys (public JWKs).
    pub issuers: Vec<Value>,
    /// Delegation token envelopes.
    pub delegations: Vec<Value>,
    /// Revoked delegation ids.
    pub revoked: Vec<String>,
    /// Resource attributes by resource.
    pub resources: BTreeMap<String, Object>,
    /// Event source objects.
    pub sources: Vec<Value>,
}

/// The parts a gateway is made of.
pub struct Parts<L> {
    /// The ledger.
    pub ledger: L,
    /// The receipt-signing key.
    pub signer: Keyring,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Limits.
    pub limits: Limits,
    /// Upstreams of `http` targets.
    pub upstreams: Upstreams,
    /// How webhooks are delivered.
    pub webhooks: webhooks::WebhookSettings,
}

/// The registries as the engine reads them: built from the ledger,
/// replaced whole on change, never edited in place.
#[derive(Clone, Debug)]
pub(crate) struct View {
    /// The bundles in force, each governing the actions it declares.
    pub domains: tollgate_policies::Domains,
    /// Delegations, revocations, trusted issuers and resources, as the
    /// pipeline reads them.
    pub snapshot: Arc<Snapshot>,
    /// Issuer keys by kid, revoked ones included.
    pub issuers: BTreeMap<String, Jwk>,
    /// Revoked issuer kids.
    pub revoked_issuers: BTreeSet<String>,
    /// Canonical bytes of each registered token envelope.
    pub tokens: BTreeMap<String, Vec<u8>>,
    /// Hash (ledger algorithm) of each registered token envelope.
    pub token_hashes: BTreeMap<String, HashValue>,
    /// Reviewers by id, revoked ones included.
    pub reviewers: BTreeMap<String, tollgate_policies::reviewer::Reviewer>,
    /// Revoked reviewer ids.
    pub revoked_reviewers: BTreeSet<String>,
    /// Event sources by id, revoked ones included.
    pub sources: BTreeMap<String, tollgate_policies::source::Source>,
    /// Revoked event source ids.
    pub revoked_sources: BTreeSet<String>,
    /// Published bundles' files by version.
    pub published: BTreeMap<String, Arc<BTreeMap<String, String>>>,
    /// Each bundle name's activations (the ledger's policy history).
    pub history: tollgate_protocol::PolicyDomains,
    /// The seq of the last registry change this view holds.
    pub registry_seq: u64,
}

/// One aggregate of the engine, reached from the gateway: a handle that
/// borrows it ([`Gateway::intents`] and the others).
macro_rules! aggregate {
    ($(#[$doc:meta])* $name:ident, $accessor:ident) => {
        $(#[$doc])*
        pub struct $name<'a, L: Ledger>(&'a Arc<Gateway<L>>);

        impl<L: Ledger> std::ops::Deref for $name<'_, L> {
            type Target = Arc<Gateway<L>>;
            fn deref(&self) -> &Self::Target {
                self.0
            }
        }

        impl<L: Ledger> Gateway<L> {
            $(#[$doc])*
            pub fn $accessor(self: &Arc<Self>) -> $name<'_, L> {
                $name(self)
            }
        }
    };
}

aggregate!(
    /// The intent flow: submissions, replays, recovery of reservations.
    Intents,
    intents
);
aggregate!(
    /// Approvals: reviewers' decisions, executions, expiry.
    Approvals,
    approvals
);
aggregate!(
    /// The registries: issuers, delegations, reviewers, resources.
    Registry,
    registry
);
aggregate!(
    /// Policy versions: publish, activate, roll back.
    Policies,
    policies
);
aggregate!(
    /// Webhook endpoints and their deliveries.
    Webhooks,
    webhooks
);
aggregate!(
    /// The ledger's Merkle tree and its checkpoints.
    Checkpoints,
    checkpoints
);

/// The gateway's engine.
pub struct Gateway<L: Ledger> {
    ledger: L,
    signer: Keyring,
    keys: KeySet,
    clock: Arc<dyn Clock>,
    limits: Limits,
    upstreams: Upstreams,
    view: RwLock<Arc<View>>,
    /// The registries' own state (their lock).
    registry_state: registry::State,
    /// One reload of the registries at a time.
    refreshing: tokio::sync::Mutex<()>,
    /// The intent flow's own state (what is in flight, what recovery left).
    intent_state: intents::State,
    /// One decision or event at a time per entity on this instance.
    entity_locks: entities::EntityLocks,
    /// Spending per budget window: the ledger's record and what is in
    /// flight. Deciding a budgeted intent and reserving its amount happen
    /// under this lock.
    budgets: Mutex<budget::Budgets>,
    /// Approvals' own state (their lock, their waiters, bundles kept).
    approval_state: approvals::State,
    /// Webhook delivery's own state (settings, its waiters).
    webhook_state: webhooks::State,
    /// Notified when this instance changes the lease state (long-polls of
    /// waiting requests).
    lease_changed: tokio::sync::Notify,
    metrics: Metrics,
    /// Makes the ledger's checkpoints, once enabled.
    checkpointer: std::sync::OnceLock<Arc<checkpoints::Checkpointer>>,
    /// Every task the engine starts (decisions, approval steps, background
    /// loops): a graceful stop waits for them.
    tasks: tokio_util::task::TaskTracker,
    /// Cancelled when the gateway stops: background loops end at their
    /// next turn, long-polls answer what they have.
    stop: tokio_util::sync::CancellationToken,
}

impl<L: Ledger> Gateway<L> {
    /// Opens the gateway over `parts`. On a ledger whose registries were
    /// never seeded, `seed` is called and its material appended as
    /// registry receipts, all in one transaction; otherwise it is never
    /// called, and nothing outside the ledger is read. With `policy`, that
    /// bundle is published (if new) and activated unless it is active
    /// already. Then reservations left by a crash are finished; one that
    /// cannot be is reported ([`Intents::unfinished`]) and never stops the
    /// start.
    pub async fn open<E: std::fmt::Display>(
        parts: Parts<L>,
        seed: impl FnOnce() -> Result<Seed, E>,
        policy: Option<BTreeMap<String, String>>,
    ) -> Result<Arc<Self>, StartError> {
        let mut recorded = parts.ledger.registry().await?;
        if !recorded.seeded {
            let seed = seed().map_err(|e| StartError::Seed(e.to_string()))?;
            match registry::import(&parts.ledger, &parts.signer, &*parts.clock, seed).await {
                // Another instance sharing the ledger seeded it first.
                Ok(()) | Err(StartError::Ledger(tollgate_ledger::Error::AlreadySeeded)) => {}
                Err(e) => return Err(e),
            }
            recorded = parts.ledger.registry().await?;
        }
        let view = View::from_recorded(&recorded, parts.ledger.hash_alg())
            .map_err(StartError::Registry)?;
        let budgets = budget::Budgets::from_ledger(
            parts
                .ledger
                .spending(parts.clock.now().unix_seconds())
                .await?,
        );
        let keys = parts.signer.key_set().clone();
        let gateway = Arc::new(Self {
            ledger: parts.ledger,
            keys,
            signer: parts.signer,
            clock: parts.clock,
            limits: parts.limits,
            upstreams: parts.upstreams,
            view: RwLock::new(Arc::new(view)),
            registry_state: registry::State::default(),
            refreshing: tokio::sync::Mutex::new(()),
            intent_state: intents::State::default(),
            entity_locks: entities::EntityLocks::default(),
            budgets: Mutex::new(budgets),
            approval_state: approvals::State::default(),
            webhook_state: webhooks::State::new(parts.webhooks),
            lease_changed: tokio::sync::Notify::new(),
            metrics: Metrics::default(),
            checkpointer: std::sync::OnceLock::new(),
            tasks: tokio_util::task::TaskTracker::new(),
            stop: tokio_util::sync::CancellationToken::new(),
        });
        // A ledger written when one policy was active at a time: the
        // versions it had replaced stop being in force, once.
        gateway
            .policies()
            .upgrade_history()
            .await
            .map_err(|e| StartError::Recovery(e.to_string()))?;
        if let Some(files) = policy {
            gateway
                .policies()
                .use_policy(files)
                .await
                .map_err(|e| StartError::Config(format!("--policy: {e}")))?;
        }
        for bundle in gateway.view().domains.bundles() {
            if let Some(action) = gateway.upstreams.missing(bundle) {
                return Err(StartError::Config(format!(
                    "action {action} commits to an http target: give its upstream with --upstream {action}=URL"
                )));
            }
        }
        gateway.intents().recover().await?;
        // Endpoints stored before their changes were receipts are recorded.
        gateway
            .webhooks()
            .adopt_webhooks()
            .await
            .map_err(|e| StartError::Recovery(e.to_string()))?;
        // Deadlines that passed while the gateway was down end now.
        gateway
            .approvals()
            .expire_due()
            .await
            .map_err(|e| StartError::Recovery(e.to_string()))?;
        Ok(gateway)
    }

    /// The registered attributes of `resource`, if any.
    pub fn resource_attributes(&self, resource: &str) -> Option<Object> {
        self.view().snapshot.resources.get(resource).cloned()
    }

    /// The registered attributes of `resource` as a decision reads them
    /// before its entity has a transition: for a type a bundle in force
    /// models, the entity they make, every attribute the model declares
    /// present ([`tollgate_policies::Bundle::as_read`]).
    pub fn resource_as_read(&self, resource: &str) -> Option<Object> {
        let view = self.view();
        let attrs = view.snapshot.resources.get(resource)?;
        let ty = resource.split_once(':').map_or("", |(t, _)| t);
        Some(match view.domains.modelling(ty) {
            Some(b) => b.as_read(resource, attrs),
            None => attrs.clone(),
        })
    }

    /// The bundles in force.
    pub fn domains(&self) -> tollgate_policies::Domains {
        self.view().domains.clone()
    }

    /// The bundle in force that governs `action`.
    pub fn governing(&self, action: &str) -> Option<Arc<Bundle>> {
        self.view().domains.governing(action).cloned()
    }

    pub(crate) fn view(&self) -> Arc<View> {
        match self.view.read() {
            Ok(v) => v.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Publishes `view`, unless the one in place is newer (a reload that
    /// read the ledger before a change this instance made).
    fn set_view(&self, view: View) {
        let mut v = match self.view.write() {
            Ok(v) => v,
            Err(poisoned) => poisoned.into_inner(),
        };
        if view.registry_seq >= v.registry_seq {
            *v = Arc::new(view);
        }
    }

    /// Reads the registries from the ledger again, unless the view is
    /// already newer than `seen` (another task reloaded it).
    pub(crate) async fn refresh(&self, seen: u64) -> Result<(), CoreError> {
        let _one = self.refreshing.lock().await;
        if self.view().registry_seq > seen {
            return Ok(());
        }
        let state = self.ledger.registry().await?;
        let view =
            View::from_recorded(&state, self.ledger.hash_alg()).map_err(CoreError::Registry)?;
        self.set_view(view);
        self.metrics.reloaded();
        Ok(())
    }

    /// Runs `tick` every `every`, until the gateway stops or is dropped
    /// (the task holds it only while a tick runs; a tick under way when
    /// the stop comes runs to its end).
    pub(crate) fn spawn_every<F, Fut>(self: &Arc<Self>, every: std::time::Duration, tick: F)
    where
        F: Fn(Arc<Self>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let weak = Arc::downgrade(self);
        let stop = self.stop.clone();
        self.tasks.spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(every) => {}
                }
                let Some(gateway) = weak.upgrade() else {
                    return;
                };
                tick(gateway).await;
            }
        });
    }

    /// Runs `work` to its end in a task of its own, whoever still waits
    /// for it (a client that disconnects cannot stop a commit half-way);
    /// a graceful stop waits for it.
    pub(crate) async fn run_detached<T, F>(&self, work: F) -> Result<T, tokio::task::JoinError>
    where
        F: std::future::Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        self.tasks.spawn(work).await
    }

    /// Begins a stop: background loops end at their next turn and
    /// long-polls answer what they have. Decisions and approval steps
    /// still run (callers stop sending them first).
    pub fn stop(&self) {
        self.stop.cancel();
        self.approval_state.wake();
        self.webhook_state.wake();
    }

    /// Ends a stop: waits until every task the engine started (decisions
    /// and approval steps in flight, background passes) has ended, or
    /// `grace` has passed. Returns how many were still running then (0 for
    /// a clean stop).
    pub async fn stopped(&self, grace: std::time::Duration) -> usize {
        self.stop();
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait()).await.is_ok() {
            0
        } else {
            self.tasks.len()
        }
    }

    /// Whether the gateway can commit now: the ledger takes a small durable
    /// write within [`crate::limits::READY_TIMEOUT_MS`].
    pub async fn ready(&self) -> Result<(), CoreError> {
        let limit = std::time::Duration::from_millis(crate::limits::READY_TIMEOUT_MS);
        match tokio::time::timeout(limit, self.ledger.probe()).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(CoreError::ProbeTimeout(limit.as_millis())),
        }
    }

    /// The ledger.
    pub fn ledger(&self) -> &L {
        &self.ledger
    }

    /// The published key set of receipt signatures.
    pub fn keys(&self) -> &KeySet {
        &self.keys
    }

    /// Counters and histograms.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The clock.
    pub fn clock(&self) -> &dyn Clock {
        &*self.clock
    }

    /// Where a passed intent of `action` commits: its upstream, or in the
    /// sandbox the simulated one.
    pub(crate) fn upstream(&self, action: &str) -> Result<commit::Upstream<'_>, CoreError> {
        if self.upstreams.simulate {
            return Ok(commit::Upstream::Simulated);
        }
        self.upstreams
            .urls
            .get(action)
            .map(|url| commit::Upstream::Url(url, self.upstreams.timeout))
            .ok_or_else(|| CoreError::NoUpstream(action.to_owned()))
    }
}

#[cfg(test)]
pub(crate) mod approval_tests;
#[cfg(test)]
pub(crate) mod tests;
