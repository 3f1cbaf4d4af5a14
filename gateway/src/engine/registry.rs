//! Registry changes (spec §4.3): each is checked against the current
//! registries under the registry lock, recorded as a `registry` receipt
//! whose change the ledger applies in the same transaction, and only then
//! published to the in-memory view.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tollgate_ledger::{Ledger, RegistryAppend, RegistryChange, RegistryState};
use tollgate_pipeline::Snapshot;
use tollgate_policies::delegation::Token;
use tollgate_policies::reviewer::Reviewer;
use tollgate_policies::source::Source;
use tollgate_policies::{Bundle, Error as PolicyError, Problem};
use tollgate_protocol::{
    Clock, Domain, HashAlg, Jwk, KeySet, Object, Receipt, Value, canonical, parse,
};
use tollgate_signer::Keyring;

use super::{Policies, RecordedError, Registry, RegistryError, Seed, StartError, View};
use crate::limits::{MAX_BUNDLE_FILES, MAX_BUNDLE_PATH};

/// The registries' own state: nothing outside this module opens it.
#[derive(Default)]
pub(super) struct State {
    /// Serializes registry changes: each is checked against the state it
    /// applies to.
    pub(super) lock: tokio::sync::Mutex<()>,
}

/// Whether a registry call changed anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Changed {
    /// Recorded: a new registry receipt.
    Recorded,
    /// Already so: nothing appended.
    Unchanged,
}

/// A registered delegation, as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DelegationInfo {
    /// Token id.
    pub id: String,
    /// The agent.
    pub agent: String,
    /// Whether it is revoked.
    pub revoked: bool,
    /// `expires_at`.
    pub expires_at: String,
}

/// A registered reviewer, as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReviewerInfo {
    /// Reviewer id.
    pub id: String,
    /// Its key's `kid`.
    pub kid: String,
    /// Roles held.
    pub roles: Vec<String>,
    /// Action patterns it may approve.
    pub actions: Vec<String>,
    /// Whether it is revoked.
    pub revoked: bool,
}

/// A registered event source, as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceInfo {
    /// Source id.
    pub id: String,
    /// Its key's `kid`.
    pub kid: String,
    /// Entity types it may send events about.
    pub types: Vec<String>,
    /// Event name patterns it may send.
    pub events: Vec<String>,
    /// Whether it is revoked.
    pub revoked: bool,
}

/// The published policy versions and the ones in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyList {
    /// The versions in force, one per bundle name, by name.
    pub active: Vec<String>,
    /// Every published version, sorted.
    pub published: Vec<String>,
}

impl View {
    /// The view of the registries as recorded in the ledger.
    pub(crate) fn from_recorded(
        state: &RegistryState,
        alg: HashAlg,
    ) -> Result<Self, RecordedError> {
        let mut issuers = BTreeMap::new();
        for (kid, bytes) in &state.issuers {
            let jwk = parse(bytes)
                .and_then(|v| Jwk::from_value(&v, ""))
                .map_err(|source| RecordedError::Issuer {
                    kid: kid.clone(),
                    source,
                })?;
            issuers.insert(kid.clone(), jwk);
        }
        let mut tokens = BTreeMap::new();
        let mut parsed = BTreeMap::new();
        for (id, bytes) in &state.delegations {
            let v = parse(bytes).map_err(|source| RecordedError::DelegationJson {
                id: id.clone(),
                source,
            })?;
            let t = Token::from_value(&v).map_err(|source| RecordedError::Delegation {
                id: id.clone(),
                source,
            })?;
            parsed.insert(id.clone(), t);
            tokens.insert(id.clone(), bytes.clone());
        }
        let mut resources = BTreeMap::new();
        for (r, bytes) in &state.resources {
            let attrs = parse(bytes)
                .ok()
                .and_then(|v| v.as_object().cloned())
                .ok_or_else(|| RecordedError::Resource(r.clone()))?;
            resources.insert(r.clone(), attrs);
        }
        let mut reviewers = BTreeMap::new();
        for (id, bytes) in &state.reviewers {
            let v = parse(bytes).map_err(|source| RecordedError::ReviewerJson {
                id: id.clone(),
                source,
            })?;
            let r = Reviewer::from_value(&v).map_err(|source| RecordedError::Reviewer {
                id: id.clone(),
                source,
            })?;
            reviewers.insert(id.clone(), r);
        }
        let mut sources = BTreeMap::new();
        for (id, bytes) in &state.sources {
            let s = parse(bytes)
                .map_err(|e| e.to_string())
                .and_then(|v| Source::from_value(&v).map_err(|e| e.to_string()))
                .map_err(|reason| RecordedError::Source {
                    id: id.clone(),
                    reason,
                })?;
            sources.insert(id.clone(), s);
        }
        let mut published = BTreeMap::new();
        for (version, bytes) in &state.policies {
            published.insert(version.clone(), Arc::new(files_of(bytes)?));
        }
        let history = state.policy_domains();
        let mut in_force = Vec::new();
        for version in history.active() {
            let files = published
                .get(version)
                .ok_or_else(|| RecordedError::ActiveUnpublished(version.to_owned()))?;
            let bundle =
                Bundle::from_files(files).map_err(|source| RecordedError::ActiveBundle {
                    version: version.to_owned(),
                    source,
                })?;
            in_force.push(Arc::new(bundle));
        }
        let domains = tollgate_policies::Domains::of(in_force).map_err(|source| {
            RecordedError::ActiveBundle {
                version: history.active().collect::<Vec<_>>().join(", "),
                source,
            }
        })?;
        let leases = match &state.leases {
            None => tollgate_leases::State::default(),
            Some(bytes) => parse(bytes)
                .ok()
                .and_then(|v| tollgate_leases::State::from_value(&v))
                .ok_or(RecordedError::Leases)?,
        };
        let mut view = Self {
            domains,
            snapshot: Arc::new({
                let mut registry = tollgate_policies::delegation::Registry::default();
                registry.tokens = parsed;
                registry.revoked = state.revoked_delegations.clone();
                Snapshot {
                    registry,
                    resources,
                    leases,
                }
            }),
            issuers,
            revoked_issuers: state.revoked_issuers.clone(),
            token_hashes: BTreeMap::new(),
            tokens,
            reviewers,
            revoked_reviewers: state.revoked_reviewers.clone(),
            sources,
            revoked_sources: state.revoked_sources.clone(),
            published,
            history,
            registry_seq: state.seq,
        };
        view.rehash(alg);
        view.prepare();
        Ok(view)
    }

    fn rehash(&mut self, alg: HashAlg) {
        self.token_hashes = self
            .tokens
            .iter()
            .map(|(id, bytes)| (id.clone(), alg.digest(&[bytes])))
            .collect();
    }

    /// Rebuilds the trusted key set and the token signature verdicts.
    fn prepare(&mut self) {
        let mut snapshot = (*self.snapshot).clone();
        snapshot.registry.issuers = KeySet::from_keys(
            self.issuers
                .iter()
                .filter(|(kid, _)| !self.revoked_issuers.contains(*kid))
                .map(|(_, k)| k.clone()),
        )
        .unwrap_or_default();
        snapshot.registry = snapshot.registry.prepare();
        self.snapshot = Arc::new(snapshot);
    }
}

/// A bundle's files from the canonical bytes of `{path: text}`.
fn files_of(bytes: &[u8]) -> Result<BTreeMap<String, String>, RecordedError> {
    let v = parse(bytes).map_err(RecordedError::FilesJson)?;
    let o = v.as_object().ok_or(RecordedError::FilesNotAnObject)?;
    o.iter()
        .map(|(k, v)| {
            v.as_str()
                .map(|t| (k.to_owned(), t.to_owned()))
                .ok_or_else(|| RecordedError::FileNotText(k.to_owned()))
        })
        .collect()
}

fn files_value(files: &BTreeMap<String, String>) -> Value {
    let mut o = Object::new();
    for (k, v) in files {
        o.insert(k.clone(), v.as_str().into());
    }
    Value::Object(o)
}

/// Plain relative paths only: segments of letters, digits, '.', '_' and
/// '-', none starting with a dot.
fn plain_path(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= MAX_BUNDLE_PATH
        && path.split('/').all(|seg| {
            !seg.is_empty()
                && !seg.starts_with('.')
                && seg
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
        })
}

/// Checks a bundle's file names, then loads it.
pub(crate) fn load_bundle(files: &BTreeMap<String, String>) -> Result<Bundle, RegistryError> {
    let problem = |file: &str, message: String| Problem {
        file: file.to_owned(),
        line: None,
        message,
    };
    if files.len() > MAX_BUNDLE_FILES {
        return Err(RegistryError::InvalidBundle(vec![problem(
            "",
            format!(
                "{} files; a bundle has at most {MAX_BUNDLE_FILES}",
                files.len()
            ),
        )]));
    }
    let bad: Vec<Problem> = files
        .keys()
        .filter(|p| !plain_path(p))
        .map(|p| {
            problem(
                p,
                "each file is a relative path of letters, digits, '.', '_', '-' and '/'".into(),
            )
        })
        .collect();
    if !bad.is_empty() {
        return Err(RegistryError::InvalidBundle(bad));
    }
    Bundle::from_files(files).map_err(|e| {
        RegistryError::InvalidBundle(match e {
            PolicyError::Bundle(problems) => problems,
            other => vec![problem("", other.to_string())],
        })
    })
}

/// A signed registry receipt of `change` to `object`, under `policy`.
async fn registry_item(
    signer: &Keyring,
    clock: &dyn Clock,
    change: RegistryChange,
    object: Value,
    policy: &str,
) -> Result<RegistryAppend, String> {
    let kind = change
        .kind()
        .ok_or_else(|| format!("{} is no registry change", change.name()))?;
    let receipt = Receipt::registry(clock.now(), policy.to_owned(), kind, object).seal();
    let signature = signer
        .sign(Domain::Receipt, &receipt)
        .await
        .map_err(|e| e.to_string())?;
    Ok(RegistryAppend {
        receipt,
        signature,
        change,
    })
}

/// The first-start import: every seed object as a registry receipt, in one
/// transaction. The policy comes first, so that every later receipt names
/// the version in force.
pub(super) async fn import<L: Ledger>(
    ledger: &L,
    signer: &Keyring,
    clock: &dyn Clock,
    seed: Seed,
) -> Result<(), StartError> {
    // Each change with its object and the version its receipt names;
    // signed once the list is made.
    let item =
        |change: RegistryChange, object: Value, policy: &str| (change, object, policy.to_owned());
    // Every seed bundle published and activated, in name order; none may
    // declare another's action.
    let mut bundles = Vec::new();
    for files in std::iter::once(&seed.policy).chain(&seed.also) {
        let bundle = load_bundle(files).map_err(|e| StartError::Seed(e.to_string()))?;
        bundles.push((Arc::new(bundle), files));
    }
    bundles.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    let domains = tollgate_policies::Domains::of(bundles.iter().map(|(b, _)| b.clone()))
        .map_err(|e| StartError::Seed(e.to_string()))?;
    let mut items = Vec::new();
    for (bundle, files) in &bundles {
        let version = bundle.version_string();
        let mut object = Object::new();
        object.insert("files", files_value(files));
        items.push(item(
            RegistryChange::PolicyPublish {
                version: version.clone(),
                files: canonical(&files_value(files)),
            },
            Value::Object(object),
            &version,
        ));
        items.push(item(
            RegistryChange::PolicyActivate {
                version: version.clone(),
            },
            version.as_str().into(),
            &version,
        ));
    }
    // The other receipts name the versions in force.
    let version = domains.versions();
    for issuer in &seed.issuers {
        let jwk = Jwk::from_value(issuer, "").map_err(|e| StartError::Seed(e.to_string()))?;
        let public = jwk.to_value();
        items.push(item(
            RegistryChange::IssuerRegister {
                kid: jwk.kid.clone(),
                jwk: canonical(&public),
            },
            public,
            &version,
        ));
    }
    let mut ids = BTreeSet::new();
    for env in &seed.delegations {
        let t = Token::from_value(env).map_err(|e| StartError::Seed(e.to_string()))?;
        if !ids.insert(t.id.clone()) {
            return Err(StartError::Seed(format!(
                "delegation {} appears twice",
                t.id
            )));
        }
        items.push(item(
            RegistryChange::DelegationRegister {
                id: t.id.clone(),
                token: canonical(env),
            },
            env.clone(),
            &version,
        ));
    }
    for id in seed.revoked.iter().filter(|id| ids.contains(*id)) {
        items.push(item(
            RegistryChange::DelegationRevoke { id: id.clone() },
            id.as_str().into(),
            &version,
        ));
    }
    for (resource, attrs) in &seed.resources {
        let mut o = Object::new();
        o.insert("resource", resource.as_str().into());
        o.insert("attributes", Value::Object(attrs.clone()));
        items.push(item(
            RegistryChange::ResourcePut {
                resource: resource.clone(),
                attributes: canonical(&Value::Object(attrs.clone())),
            },
            Value::Object(o),
            &version,
        ));
    }
    let mut sources = BTreeSet::new();
    for object in &seed.sources {
        let s = Source::from_value(object).map_err(|e| StartError::Seed(e.to_string()))?;
        if !sources.insert(s.id.clone()) {
            return Err(StartError::Seed(format!(
                "event source {} appears twice",
                s.id
            )));
        }
        items.push(item(
            RegistryChange::SourceRegister {
                id: s.id.clone(),
                source: canonical(object),
            },
            object.clone(),
            &version,
        ));
    }
    let mut signed = Vec::with_capacity(items.len());
    for (change, object, policy) in items {
        signed.push(
            registry_item(signer, clock, change, object, &policy)
                .await
                .map_err(|e| StartError::Seed(format!("signing the seed's receipts: {e}")))?,
        );
    }
    ledger.append_registry(signed, true).await?;
    Ok(())
}

impl<L: Ledger> Registry<'_, L> {
    /// Appends one change checked against `view`; the seq of its entry.
    /// The view is the caller's to update after. If another instance
    /// changed the registries since `view`, nothing is appended: the view
    /// is reloaded and the change is [`RegistryError::Contended`], to be
    /// checked again ([`Registry::retrying`]).
    async fn record(
        &self,
        view: &View,
        change: RegistryChange,
        object: Value,
        policy: &str,
    ) -> Result<u64, RegistryError> {
        self.record_all(view, vec![(change, object)], policy).await
    }

    /// [`Registry::record`] of several changes, in one transaction.
    pub(super) async fn record_all(
        &self,
        view: &View,
        changes: Vec<(RegistryChange, Value)>,
        policy: &str,
    ) -> Result<u64, RegistryError> {
        let mut items = Vec::with_capacity(changes.len());
        for (change, object) in changes {
            items.push(
                registry_item(&self.signer, &*self.clock, change, object, policy)
                    .await
                    .map_err(|e| RegistryError::Internal(e.to_string()))?,
            );
        }
        match self
            .ledger
            .append_registry_after(items, false, Some(view.registry_seq))
            .await
        {
            Ok(entries) => Ok(entries.last().map_or(view.registry_seq, |e| e.seq)),
            Err(tollgate_ledger::Error::Stale(tollgate_ledger::Staleness::Executing(approval))) => {
                Err(RegistryError::ApprovalExecuting(approval))
            }
            Err(tollgate_ledger::Error::Stale(why)) => {
                self.refresh(view.registry_seq)
                    .await
                    .map_err(|e| RegistryError::Internal(e.to_string()))?;
                Err(RegistryError::Contended(why.to_string()))
            }
            Err(e) => Err(RegistryError::Internal(e.to_string())),
        }
    }

    /// [`Registry::record`] under the active policy, then the view read
    /// again from the ledger, which now holds the change.
    async fn record_and_reload(
        &self,
        view: &View,
        change: RegistryChange,
        object: Value,
    ) -> Result<Changed, RegistryError> {
        self.record(view, change, object, &view.domains.versions())
            .await?;
        self.refresh(view.registry_seq)
            .await
            .map_err(|e| RegistryError::Internal(e.to_string()))?;
        Ok(Changed::Recorded)
    }

    /// Runs a registry change until it is checked and recorded on the
    /// current registries, or gives up after a few tries.
    async fn retrying<T, F>(&self, mut attempt: impl FnMut() -> F) -> Result<T, RegistryError>
    where
        F: Future<Output = Result<T, RegistryError>>,
    {
        let mut last = RegistryError::Contended(String::new());
        for _ in 0..super::intents::MAX_ATTEMPTS {
            match attempt().await {
                Err(e @ RegistryError::Contended(_)) => last = e,
                other => return other,
            }
        }
        Err(last)
    }

    /// Registers a delegation token envelope. It must parse, be trusted as
    /// things stand (signed by an issuer, or by its registered parent's
    /// agent) and be no wider than its parent. The same token again is
    /// [`Changed::Unchanged`]; a revoked id is refused.
    pub async fn register_delegation(&self, envelope: Value) -> Result<Changed, RegistryError> {
        self.retrying(|| self.try_register_delegation(envelope.clone()))
            .await
    }

    async fn try_register_delegation(&self, envelope: Value) -> Result<Changed, RegistryError> {
        let token = Token::from_value(&envelope)
            .map_err(|e| RegistryError::InvalidDelegation(e.to_string()))?;
        let now = self.clock.now();
        if token.expires_at <= now {
            return Err(RegistryError::ExpiredDelegation {
                id: token.id,
                expires_at: token.expires_at.as_str().to_owned(),
                now: now.as_str().to_owned(),
            });
        }
        let _lock = self.registry_state.lock.lock().await;
        let view = self.view();
        let registry = &view.snapshot.registry;
        if registry.revoked.contains(&token.id) {
            return Err(RegistryError::RevokedDelegation(token.id));
        }
        let bytes = canonical(&envelope);
        if let Some(existing) = view.tokens.get(&token.id) {
            return if *existing == bytes {
                Ok(Changed::Unchanged)
            } else {
                Err(RegistryError::DelegationExists(token.id))
            };
        }
        let mut trial = registry.clone();
        trial.tokens.insert(token.id.clone(), token.clone());
        if !trial.prepare().is_trusted(&token.id) {
            return Err(RegistryError::UntrustedDelegation(token.id));
        }
        if let Some(parent) = token.parent.as_ref().and_then(|p| registry.tokens.get(p))
            && let Some(why) = token.wider_than(parent)
        {
            return Err(RegistryError::WiderThanParent(why));
        }
        if let Some(holder) = tollgate_policies::delegation::agent_key_holder(
            &token,
            registry.tokens.values(),
            |id| registry.tokens.get(id),
            &registry.revoked,
        ) {
            return Err(RegistryError::AgentKeyBound {
                agent: token.agent.clone(),
                holder: holder.id.clone(),
            });
        }
        let id = token.id.clone();
        let seq = self
            .record(
                &view,
                RegistryChange::DelegationRegister {
                    id: id.clone(),
                    token: bytes.clone(),
                },
                envelope,
                &view.domains.versions(),
            )
            .await?;
        let mut next = (*view).clone();
        next.registry_seq = seq;
        let mut snapshot = (*next.snapshot).clone();
        snapshot.registry.tokens.insert(id.clone(), token);
        next.snapshot = Arc::new(snapshot);
        next.token_hashes
            .insert(id.clone(), self.ledger.hash_alg().digest(&[&bytes]));
        next.tokens.insert(id, bytes);
        next.prepare();
        self.set_view(next);
        Ok(Changed::Recorded)
    }

    /// Revokes a registered delegation, effective for the very next
    /// intent. Revoking it again is [`Changed::Unchanged`].
    pub async fn revoke_delegation(&self, id: &str) -> Result<Changed, RegistryError> {
        self.retrying(|| self.try_revoke_delegation(id)).await
    }

    async fn try_revoke_delegation(&self, id: &str) -> Result<Changed, RegistryError> {
        let _lock = self.registry_state.lock.lock().await;
        let view = self.view();
        if !view.tokens.contains_key(id) {
            return Err(RegistryError::UnknownDelegation(id.to_owned()));
        }
        if view.snapshot.registry.revoked.contains(id) {
            return Ok(Changed::Unchanged);
        }
        let seq = self
            .record(
                &view,
                RegistryChange::DelegationRevoke { id: id.to_owned() },
                id.into(),
                &view.domains.versions(),
            )
            .await?;
        let mut next = (*view).clone();
        next.registry_seq = seq;
        let mut snapshot = (*next.snapshot).clone();
        snapshot.registry.revoked.insert(id.to_owned());
        next.snapshot = Arc::new(snapshot);
        next.prepare();
        self.set_view(next);
        Ok(Changed::Recorded)
    }

    /// Every registered delegation.
    pub fn delegations(&self) -> Vec<DelegationInfo> {
        let view = self.view();
        let r = &view.snapshot.registry;
        r.tokens
            .values()
            .map(|t| DelegationInfo {
                id: t.id.clone(),
                agent: t.agent.clone(),
                revoked: r.revoked.contains(&t.id),
                expires_at: t.expires_at.as_str().to_owned(),
            })
            .collect()
    }

    /// Registers a reviewer object. Its id and its key must not be an
    /// agent's (no agent approves, least of all its own intents), and its
    /// key no other reviewer's, revoked or not (a reviewer is a key); the
    /// same object again is [`Changed::Unchanged`]; a revoked id is
    /// refused.
    pub async fn register_reviewer(&self, object: Value) -> Result<Changed, RegistryError> {
        self.retrying(|| self.try_register_reviewer(object.clone()))
            .await
    }

    async fn try_register_reviewer(&self, object: Value) -> Result<Changed, RegistryError> {
        let reviewer = Reviewer::from_value(&object).map_err(RegistryError::InvalidReviewer)?;
        let _lock = self.registry_state.lock.lock().await;
        let view = self.view();
        if view.revoked_reviewers.contains(&reviewer.id) {
            return Err(RegistryError::RevokedReviewer(reviewer.id));
        }
        let bytes = canonical(&object);
        if let Some(existing) = view.reviewers.get(&reviewer.id) {
            return if canonical(&existing.value) == bytes {
                Ok(Changed::Unchanged)
            } else {
                Err(RegistryError::ReviewerExists(reviewer.id))
            };
        }
        if let Some(holder) =
            tollgate_policies::reviewer::key_holder(view.reviewers.values(), &reviewer)
        {
            return Err(RegistryError::ReviewerKeyRegistered {
                kid: reviewer.key.kid.clone(),
                holder: holder.id.clone(),
            });
        }
        // A credential id names one reviewer's passkey: sign-in finds the
        // reviewer by it.
        if let Some(holder) =
            tollgate_policies::reviewer::passkey_holder(view.reviewers.values(), &reviewer)
        {
            let credential = reviewer
                .passkey
                .as_ref()
                .map(|p| p.credential_id.as_slice());
            return Err(RegistryError::PasskeyRegistered {
                credential: tollgate_protocol::b64(credential.unwrap_or_default()),
                holder: holder.id.clone(),
            });
        }
        for t in view.snapshot.registry.tokens.values() {
            if t.agent == reviewer.id {
                return Err(RegistryError::ReviewerIsAgent(format!(
                    "reviewer id {} is the agent of delegation {}: an agent never approves",
                    reviewer.id, t.id
                )));
            }
            if t.agent_key.kid == reviewer.key.kid {
                return Err(RegistryError::ReviewerIsAgent(format!(
                    "reviewer key {} is the key of agent {} (delegation {}): an agent never approves",
                    reviewer.key.kid, t.agent, t.id
                )));
            }
        }
        let id = reviewer.id.clone();
        let seq = self
            .record(
                &view,
                RegistryChange::ReviewerRegister {
                    id: id.clone(),
                    kid: reviewer.key.kid.clone(),
                    reviewer: bytes,
                },
                object,
                &view.domains.versions(),
            )
            .await?;
        let mut next = (*view).clone();
        next.registry_seq = seq;
        next.reviewers.insert(id, reviewer);
        self.set_view(next);
        Ok(Changed::Recorded)
    }

    /// Revokes a reviewer, effective at once: the ledger withdraws, in the
    /// revocation's transaction, the reviewer's grants on every approval
    /// still pending. Refused while the execution of a quorum the reviewer
    /// is part of is under way ([`RegistryError::ApprovalExecuting`]).
    /// Again is [`Changed::Unchanged`].
    pub async fn revoke_reviewer(&self, id: &str) -> Result<Changed, RegistryError> {
        self.retrying(|| self.try_revoke_reviewer(id)).await
    }

    async fn try_revoke_reviewer(&self, id: &str) -> Result<Changed, RegistryError> {
        let _lock = self.registry_state.lock.lock().await;
        let view = self.view();
        if !view.reviewers.contains_key(id) {
            return Err(RegistryError::UnknownReviewer(id.to_owned()));
        }
        if view.revoked_reviewers.contains(id) {
            return Ok(Changed::Unchanged);
        }
        let seq = self
            .record(
                &view,
                RegistryChange::ReviewerRevoke { id: id.to_owned() },
                id.into(),
                &view.domains.versions(),
            )
            .await?;
        let mut next = (*view).clone();
        next.registry_seq = seq;
        next.revoked_reviewers.insert(id.to_owned());
        self.set_view(next);
        Ok(Changed::Recorded)
    }

    /// Registers an event source (a `source.register` receipt): its
    /// events are accepted from the very next request. The same object
    /// again is [`Changed::Unchanged`]; another object under a registered
    /// id, or a revoked id, is refused.
    pub async fn register_source(&self, object: Value) -> Result<Changed, RegistryError> {
        self.retrying(|| self.try_register_source(object.clone()))
            .await
    }

    async fn try_register_source(&self, object: Value) -> Result<Changed, RegistryError> {
        let source = Source::from_value(&object).map_err(RegistryError::InvalidSource)?;
        let _lock = self.registry_state.lock.lock().await;
        let view = self.view();
        if view.revoked_sources.contains(&source.id) {
            return Err(RegistryError::RevokedSource(source.id));
        }
        let bytes = canonical(&object);
        if let Some(existing) = view.sources.get(&source.id) {
            return if canonical(&existing.value) == bytes {
                Ok(Changed::Unchanged)
            } else {
                Err(RegistryError::SourceExists(source.id))
            };
        }
        let id = source.id.clone();
        let seq = self
            .record(
                &view,
                RegistryChange::SourceRegister {
                    id: id.clone(),
                    source: bytes,
                },
                object,
                &view.domains.versions(),
            )
            .await?;
        let mut next = (*view).clone();
        next.registry_seq = seq;
        next.sources.insert(id, source);
        self.set_view(next);
        Ok(Changed::Recorded)
    }

    /// Revokes an event source, effective at once: its events are refused
    /// from the next request (those applied before stay). Again is
    /// [`Changed::Unchanged`].
    pub async fn revoke_source(&self, id: &str) -> Result<Changed, RegistryError> {
        self.retrying(|| self.try_revoke_source(id)).await
    }

    async fn try_revoke_source(&self, id: &str) -> Result<Changed, RegistryError> {
        let _lock = self.registry_state.lock.lock().await;
        let view = self.view();
        if !view.sources.contains_key(id) {
            return Err(RegistryError::UnknownSource(id.to_owned()));
        }
        if view.revoked_sources.contains(id) {
            return Ok(Changed::Unchanged);
        }
        let seq = self
            .record(
                &view,
                RegistryChange::SourceRevoke { id: id.to_owned() },
                id.into(),
                &view.domains.versions(),
            )
            .await?;
        let mut next = (*view).clone();
        next.registry_seq = seq;
        next.revoked_sources.insert(id.to_owned());
        self.set_view(next);
        Ok(Changed::Recorded)
    }

    /// The registered event sources, revoked ones included, by id.
    pub fn sources(&self) -> Vec<SourceInfo> {
        let view = self.view();
        view.sources
            .values()
            .map(|s| SourceInfo {
                id: s.id.clone(),
                kid: s.key.kid.clone(),
                types: s.types.clone(),
                events: s.events.clone(),
                revoked: view.revoked_sources.contains(&s.id),
            })
            .collect()
    }

    /// Trusts an issuer's public key (a JWK; a private part is refused):
    /// delegation tokens it signs may be registered and used from the very
    /// next request. The same key again is [`Changed::Unchanged`]; a
    /// revoked key is refused.
    pub async fn register_issuer(&self, jwk: Value) -> Result<Changed, RegistryError> {
        self.retrying(|| self.try_register_issuer(jwk.clone()))
            .await
    }

    async fn try_register_issuer(&self, jwk: Value) -> Result<Changed, RegistryError> {
        if jwk.as_object().is_some_and(|o| o.get("d").is_some()) {
            return Err(RegistryError::InvalidIssuer(
                "the key holds a private part (\"d\"): send the public key only".into(),
            ));
        }
        let jwk =
            Jwk::from_value(&jwk, "").map_err(|e| RegistryError::InvalidIssuer(e.to_string()))?;
        let _lock = self.registry_state.lock.lock().await;
        let view = self.view();
        if view.revoked_issuers.contains(&jwk.kid) {
            return Err(RegistryError::RevokedIssuer(jwk.kid));
        }
        if view.issuers.contains_key(&jwk.kid) {
            // A kid is the key's thumbprint: the same kid is the same key.
            return Ok(Changed::Unchanged);
        }
        let public = jwk.to_value();
        self.record_and_reload(
            &view,
            RegistryChange::IssuerRegister {
                kid: jwk.kid.clone(),
                jwk: canonical(&public),
            },
            public,
        )
        .await
    }

    /// Stops trusting an issuer key, at once: tokens rooted in it are no
    /// longer trusted. Again is [`Changed::Unchanged`].
    pub async fn revoke_issuer(&self, kid: &str) -> Result<Changed, RegistryError> {
        self.retrying(|| self.try_revoke_issuer(kid)).await
    }

    async fn try_revoke_issuer(&self, kid: &str) -> Result<Changed, RegistryError> {
        let _lock = self.registry_state.lock.lock().await;
        let view = self.view();
        if !view.issuers.contains_key(kid) {
            return Err(RegistryError::UnknownIssuer(kid.to_owned()));
        }
        if view.revoked_issuers.contains(kid) {
            return Ok(Changed::Unchanged);
        }
        self.record_and_reload(
            &view,
            RegistryChange::IssuerRevoke {
                kid: kid.to_owned(),
            },
            kid.into(),
        )
        .await
    }

    /// The issuer keys, each with whether it is revoked.
    pub fn issuers(&self) -> Vec<(Jwk, bool)> {
        let view = self.view();
        view.issuers
            .values()
            .map(|k| (k.clone(), view.revoked_issuers.contains(&k.kid)))
            .collect()
    }

    /// Sets a resource's attributes (`type:id`, an object), replacing any
    /// before, from the very next decision. The same attributes again are
    /// [`Changed::Unchanged`].
    pub async fn put_resource(
        &self,
        resource: &str,
        attributes: Value,
    ) -> Result<Changed, RegistryError> {
        self.retrying(|| self.try_put_resource(resource, attributes.clone()))
            .await
    }

    async fn try_put_resource(
        &self,
        resource: &str,
        attributes: Value,
    ) -> Result<Changed, RegistryError> {
        if !tollgate_protocol::is_resource(resource) {
            return Err(RegistryError::InvalidResource(format!(
                "{resource:?} is not a resource: type:id, as intents name them"
            )));
        }
        let Value::Object(attrs) = attributes else {
            return Err(RegistryError::InvalidResource(
                "a resource's attributes are a JSON object".into(),
            ));
        };
        let _lock = self.registry_state.lock.lock().await;
        let view = self.view();
        // Attributes the rules could not read as declared would be left
        // out of a decision (a `has` test false, a forbid skipped).
        // Every bundle in force that declares the resource's type reads it.
        for bundle in view.domains.bundles() {
            // A modelled type is read as the entity the attributes make.
            let model = resource
                .split_once(':')
                .and_then(|(ty, _)| bundle.model(ty));
            if let Some(m) = model
                && let Some(Err(below)) = m
                    .unrecorded(Some(&attrs))
                    .map(|e| m.check_min(&e.attributes))
            {
                return Err(RegistryError::InvalidResource(format!(
                    "policy {} models {resource} as an entity: {below}",
                    bundle.version_string()
                )));
            }
            if let Some(m) = model
                && m.unrecorded(Some(&attrs)).is_none()
            {
                return Err(RegistryError::InvalidResource(format!(
                    "policy {} models {} as an entity: its attributes need a state, one of {}",
                    bundle.version_string(),
                    resource.split_once(':').map_or("", |(t, _)| t),
                    m.states.join(", ")
                )));
            }
            if let Err(m) = bundle.check_resource(resource, &bundle.as_read(resource, &attrs)) {
                return Err(RegistryError::InvalidResource(format!(
                    "attribute {}: {} cannot be given to the rules as the {} that policy {} declares{}",
                    m.pointer.trim_start_matches('/'),
                    m.found,
                    m.want,
                    bundle.version_string(),
                    m.why
                )));
            }
        }
        // An entity is changed by its model's transitions alone, once it
        // has one: its registry attributes no longer reach any decision.
        if let Some(rec) = self
            .ledger
            .entity(resource)
            .await
            .map_err(|e| RegistryError::Internal(e.to_string()))?
        {
            return Err(RegistryError::EntityManaged {
                resource: resource.to_owned(),
                version: rec.version,
            });
        }
        if view.snapshot.resources.get(resource) == Some(&attrs) {
            return Ok(Changed::Unchanged);
        }
        let mut o = Object::new();
        o.insert("resource", resource.into());
        o.insert("attributes", Value::Object(attrs.clone()));
        self.record_and_reload(
            &view,
            RegistryChange::ResourcePut {
                resource: resource.to_owned(),
                attributes: canonical(&Value::Object(attrs)),
            },
            Value::Object(o),
        )
        .await
    }

    /// The registered resources and their attributes.
    pub fn resources(&self) -> BTreeMap<String, Object> {
        self.view().snapshot.resources.clone()
    }

    /// Every registered reviewer.
    pub fn reviewers(&self) -> Vec<ReviewerInfo> {
        let view = self.view();
        view.reviewers
            .values()
            .map(|r| ReviewerInfo {
                id: r.id.clone(),
                kid: r.key.kid.clone(),
                roles: r.roles.clone(),
                actions: r.actions.clone(),
                revoked: view.revoked_reviewers.contains(&r.id),
            })
            .collect()
    }
}

impl<L: Ledger> Policies<'_, L> {
    /// Puts `files` in force for its bundle name: published if new,
    /// activated unless in force already.
    pub(super) async fn use_policy(
        &self,
        files: BTreeMap<String, String>,
    ) -> Result<(), RegistryError> {
        let bundle = load_bundle(&files)?;
        let version = bundle.version_string();
        self.publish_policy(files).await?;
        if self.view().history.version_of(&bundle.name) != Some(version.as_str()) {
            self.activate_policy(&version, false).await?;
        }
        Ok(())
    }

    /// A ledger written when one policy was active at a time keeps, read
    /// by bundle name, the versions it had replaced in force: each is
    /// deactivated now, once (a `policy.deactivate` receipt each, in one
    /// transaction), so that its single active policy becomes one domain.
    pub(super) async fn upgrade_history(&self) -> Result<(), RegistryError> {
        let state = self
            .ledger
            .registry()
            .await
            .map_err(|e| RegistryError::Internal(e.to_string()))?;
        let replaced = state.replaced_policies();
        if replaced.is_empty() {
            return Ok(());
        }
        let _lock = self.registry_state.lock.lock().await;
        let mut view = (*self.view()).clone();
        for version in replaced {
            let name = tollgate_protocol::policy_name(&version).to_owned();
            let seq = self
                .registry()
                .record(
                    &view,
                    RegistryChange::PolicyDeactivate {
                        version: version.clone(),
                    },
                    version.as_str().into(),
                    &version,
                )
                .await?;
            view.registry_seq = seq;
            view.domains = view.domains.without(&name);
            view.history
                .apply(tollgate_protocol::Change::PolicyDeactivate, &version);
        }
        self.set_view(view);
        Ok(())
    }

    /// Publishes a bundle (every file by relative path) without activating
    /// it; returns its version. Publishing a published version again is
    /// [`Changed::Unchanged`].
    pub async fn publish_policy(
        &self,
        files: BTreeMap<String, String>,
    ) -> Result<(String, Changed), RegistryError> {
        self.registry()
            .retrying(|| self.try_publish_policy(files.clone()))
            .await
    }

    async fn try_publish_policy(
        &self,
        files: BTreeMap<String, String>,
    ) -> Result<(String, Changed), RegistryError> {
        let bundle = load_bundle(&files)?;
        let version = bundle.version_string();
        let _lock = self.registry_state.lock.lock().await;
        let view = self.view();
        if view.published.contains_key(&version) {
            return Ok((version, Changed::Unchanged));
        }
        let value = files_value(&files);
        let mut object = Object::new();
        object.insert("files", value.clone());
        let seq = self
            .registry()
            .record(
                &view,
                RegistryChange::PolicyPublish {
                    version: version.clone(),
                    files: canonical(&value),
                },
                Value::Object(object),
                &version,
            )
            .await?;
        let mut next = (*view).clone();
        next.registry_seq = seq;
        next.published.insert(version.clone(), Arc::new(files));
        self.set_view(next);
        Ok((version, Changed::Recorded))
    }

    /// From the very next intent, published version `version` governs the
    /// actions it declares, in place of its bundle name's version in force
    /// (if any); other bundles are untouched. Refused if a bundle of
    /// another name in force declares one of its actions, and, unless
    /// `force`, if an action its name governed and it does not would be
    /// left with pending approvals or unfinished commits.
    pub async fn activate_policy(
        &self,
        version: &str,
        force: bool,
    ) -> Result<String, RegistryError> {
        self.registry()
            .retrying(|| self.try_activate_policy(version, force))
            .await
    }

    async fn try_activate_policy(
        &self,
        version: &str,
        force: bool,
    ) -> Result<String, RegistryError> {
        let _lock = self.registry_state.lock.lock().await;
        let view = self.view();
        let version = published_version(&view, version)?;
        let bundle = self.published_bundle(&view, &version)?;
        let next = view.domains.with(bundle).map_err(RegistryError::Overlap)?;
        self.switch(
            &view,
            tollgate_protocol::Change::PolicyActivate,
            &version,
            next,
            force,
        )
        .await?;
        Ok(version)
    }

    /// Back to the version of bundle `name` in force before its current
    /// one; returns it. Other bundles are untouched.
    pub async fn rollback_policy(&self, name: &str, force: bool) -> Result<String, RegistryError> {
        self.registry()
            .retrying(|| self.try_rollback_policy(name, force))
            .await
    }

    async fn try_rollback_policy(&self, name: &str, force: bool) -> Result<String, RegistryError> {
        let _lock = self.registry_state.lock.lock().await;
        let view = self.view();
        if view.history.version_of(name).is_none() {
            return Err(RegistryError::NotActive(name.to_owned()));
        }
        let previous = view
            .history
            .previous(name)
            .ok_or_else(|| RegistryError::NothingToRollBack(name.to_owned()))?
            .to_owned();
        let bundle = self.published_bundle(&view, &previous)?;
        let next = view.domains.with(bundle).map_err(RegistryError::Overlap)?;
        self.switch(
            &view,
            tollgate_protocol::Change::PolicyRollback,
            &previous,
            next,
            force,
        )
        .await?;
        Ok(previous)
    }

    /// Nothing in force for bundle `name` from the very next intent: the
    /// actions it governed are refused until a bundle declaring them is
    /// activated. Returns the version that stopped. Unless `force`,
    /// refused if those actions have pending approvals or unfinished
    /// commits.
    pub async fn deactivate_policy(
        &self,
        name: &str,
        force: bool,
    ) -> Result<String, RegistryError> {
        self.registry()
            .retrying(|| self.try_deactivate_policy(name, force))
            .await
    }

    async fn try_deactivate_policy(
        &self,
        name: &str,
        force: bool,
    ) -> Result<String, RegistryError> {
        let _lock = self.registry_state.lock.lock().await;
        let view = self.view();
        let version = view
            .history
            .version_of(name)
            .ok_or_else(|| RegistryError::NotActive(name.to_owned()))?
            .to_owned();
        let next = view.domains.without(name);
        self.switch(
            &view,
            tollgate_protocol::Change::PolicyDeactivate,
            &version,
            next,
            force,
        )
        .await?;
        Ok(version)
    }

    /// The bundle of published `version`.
    fn published_bundle(&self, view: &View, version: &str) -> Result<Arc<Bundle>, RegistryError> {
        let files = view
            .published
            .get(version)
            .ok_or_else(|| RegistryError::UnknownPolicy(version.to_owned()))?;
        let bundle = Bundle::from_files(files)
            .map_err(|e| RegistryError::Internal(format!("published {version}: {e}")))?;
        if let Some(action) = self.upstreams.missing(&bundle) {
            return Err(RegistryError::MissingUpstream(action));
        }
        Ok(Arc::new(bundle))
    }

    /// The actions `view` governs that `next` does not, which have pending
    /// approvals or unfinished commits: what a change to `next` would
    /// leave without a policy.
    async fn stranded(
        &self,
        view: &View,
        next: &tollgate_policies::Domains,
    ) -> Result<Option<(String, Vec<String>)>, RegistryError> {
        let dropped: BTreeSet<&str> = view
            .domains
            .bundles()
            .flat_map(|b| b.action_names())
            .filter(|a| next.governing(a).is_none())
            .collect();
        if dropped.is_empty() {
            return Ok(None);
        }
        let internal = |e: tollgate_ledger::Error| RegistryError::Internal(e.to_string());
        let mut pending = BTreeSet::new();
        let mut after = 0;
        loop {
            let page = self
                .ledger
                .approvals(true, after, super::MAX_LISTED)
                .await
                .map_err(internal)?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for record in &page {
                if record.status() != tollgate_protocol::Status::PendingApproval {
                    continue;
                }
                let action = parse(&record.body).ok().and_then(|b| {
                    b.as_object()
                        .and_then(|o| o.get("action"))
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                });
                if let Some(a) = action.filter(|a| dropped.contains(a.as_str())) {
                    pending.insert(a);
                }
            }
            if page.len() < super::MAX_LISTED as usize {
                break;
            }
        }
        if !pending.is_empty() {
            return Ok(Some((
                "pending approvals".into(),
                pending.into_iter().collect(),
            )));
        }
        let mut unfinished = BTreeSet::new();
        for (_, body) in self.ledger.pending().await.map_err(internal)? {
            let Ok(v) = parse(&body) else { continue };
            let action = [
                &["draft", "subject", "payload", "action"][..],
                &["intent", "payload", "action"][..],
            ]
            .iter()
            .find_map(|path| {
                path.iter()
                    .try_fold(&v, |v, k| v.as_object()?.get(k))
                    .and_then(Value::as_str)
            });
            if let Some(a) = action.filter(|a| dropped.contains(a)) {
                unfinished.insert(a.to_owned());
            }
        }
        if !unfinished.is_empty() {
            return Ok(Some((
                "unfinished commits".into(),
                unfinished.into_iter().collect(),
            )));
        }
        Ok(None)
    }

    /// Records `change` of `version` (its receipt names the version it
    /// concerns) and puts `next` in force.
    async fn switch(
        &self,
        view: &View,
        change: tollgate_protocol::Change,
        version: &str,
        next: tollgate_policies::Domains,
        force: bool,
    ) -> Result<(), RegistryError> {
        if !force && let Some((what, actions)) = self.stranded(view, &next).await? {
            return Err(RegistryError::Stranded {
                change: format!("{} {version}", change.name()),
                what,
                actions,
            });
        }
        let version = version.to_owned();
        let recorded = match change {
            tollgate_protocol::Change::PolicyRollback => RegistryChange::PolicyRollback {
                version: version.clone(),
            },
            tollgate_protocol::Change::PolicyDeactivate => RegistryChange::PolicyDeactivate {
                version: version.clone(),
            },
            _ => RegistryChange::PolicyActivate {
                version: version.clone(),
            },
        };
        let seq = self
            .registry()
            .record(view, recorded, version.as_str().into(), &version)
            .await?;
        let mut updated = view.clone();
        updated.registry_seq = seq;
        updated.domains = next;
        updated.history.apply(change, &version);
        self.set_view(updated);
        Ok(())
    }

    /// The published versions and the ones in force.
    pub fn list(&self) -> PolicyList {
        let view = self.view();
        PolicyList {
            active: view.history.active().map(str::to_owned).collect(),
            published: view.published.keys().cloned().collect(),
        }
    }
}

/// The full version `asked` names among the published ones: itself when it
/// has its hash (`name@semver+sha256:…`); else the one published version
/// of that `name@semver`, if exactly one is.
fn published_version(view: &View, asked: &str) -> Result<String, RegistryError> {
    if asked.contains('+') {
        return Ok(asked.to_owned());
    }
    let prefix = format!("{asked}+");
    let matching: Vec<&String> = view
        .published
        .keys()
        .filter(|v| v.starts_with(&prefix))
        .collect();
    match matching.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(RegistryError::UnknownPolicy(asked.to_owned())),
        several => Err(RegistryError::AmbiguousPolicy(
            asked.to_owned(),
            several
                .iter()
                .map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(" and "),
        )),
    }
}

impl<L: Ledger> Registry<'_, L> {
    /// Reloads the registries whenever the ledger announces a change made
    /// by another instance, for as long as the gateway lives. Announcements
    /// only make reloads earlier: a decision on an older view is refused at
    /// append whether or not one arrived.
    pub async fn spawn_registry_listener(&self) -> Result<(), StartError> {
        let Some(mut announced) = self.ledger.registry_announcements().await? else {
            return Ok(());
        };
        let weak = Arc::downgrade(self);
        let stop = self.stop.clone();
        self.tasks.spawn(async move {
            loop {
                let seq = tokio::select! {
                    () = stop.cancelled() => return,
                    seq = announced.recv() => match seq {
                        Some(seq) => seq,
                        None => return,
                    },
                };
                let Some(gateway) = weak.upgrade() else {
                    return;
                };
                if gateway.view().registry_seq < seq {
                    let _ = gateway.refresh(seq.saturating_sub(1)).await;
                }
            }
        });
        Ok(())
    }
}
