//! The engine with a fake clock and a ledger that can be told to fail: no
//! HTTP, no processes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tollgate_ledger::hooked::{Hooked, Hooks};
use tollgate_ledger::prelude::*;
use tollgate_ledger::{Append, Error as LedgerError, SqliteLedger, SqliteOptions};
use tollgate_protocol::{
    Clock, Domain, HashAlg, IntentEnvelope, Object, Timestamp, Value, Verdict, parse,
};
use tollgate_signer::{Ed25519Signer, Signer as _};

use super::*;

/// A clock the test sets.
pub(crate) struct FakeClock(Mutex<Timestamp>);

impl FakeClock {
    pub(crate) fn at(t: &str) -> Arc<Self> {
        Arc::new(Self(Mutex::new(Timestamp::parse(t).unwrap())))
    }

    pub(crate) fn set(&self, t: &str) {
        *self.0.lock().unwrap() = Timestamp::parse(t).unwrap();
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Timestamp {
        self.0.lock().unwrap().clone()
    }
}

/// A SQLite ledger whose writes or reads fail on demand.
pub(crate) type Faulty = Hooked<SqliteLedger, Faults>;

/// The failures a [`Faulty`] ledger is told to inject.
#[derive(Clone, Default)]
pub(crate) struct Faults {
    pub(crate) fail_writes: Arc<AtomicBool>,
    /// Writes fail as a database out of reach or out of room would.
    pub(crate) unavailable: Arc<AtomicBool>,
    pub(crate) fail_reads: Arc<AtomicBool>,
    /// Append units are refused as an approval conflict (another instance
    /// recorded a step first).
    pub(crate) approval_conflict: Arc<AtomicBool>,
    /// Guarded appends are refused as stale (another instance changed the
    /// registries, every time).
    pub(crate) stale: Arc<AtomicBool>,
}

impl Hooks for Faults {
    fn read(&self) -> Result<(), LedgerError> {
        if self.fail_reads.load(Ordering::SeqCst) {
            Err(LedgerError::Database(
                "database is locked (injected)".into(),
            ))
        } else {
            Ok(())
        }
    }

    fn write(&self) -> Result<(), LedgerError> {
        if self.fail_writes.load(Ordering::SeqCst) {
            Err(LedgerError::Database("disk I/O error (injected)".into()))
        } else if self.unavailable.load(Ordering::SeqCst) {
            Err(LedgerError::Unavailable(
                "database or disk is full (injected)".into(),
            ))
        } else {
            Ok(())
        }
    }

    fn append(&self, items: &[Append]) -> Result<(), LedgerError> {
        self.write()?;
        if self.stale.load(Ordering::SeqCst) && items.iter().any(|i| i.guard.is_some()) {
            return Err(LedgerError::Stale(tollgate_ledger::Staleness::Registry {
                seen: 0,
                current: 1,
            }));
        }
        if self.approval_conflict.load(Ordering::SeqCst) {
            return Err(LedgerError::ApprovalConflict(
                "the approval is unknown or has ended (injected)".into(),
            ));
        }
        Ok(())
    }
}

pub(crate) const T0: &str = "2026-11-22T10:00:00Z";

pub(crate) struct World {
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) ledger: Faulty,
    pub(crate) clock: Arc<FakeClock>,
    pub(crate) issuer: Ed25519Signer,
    pub(crate) agent: Ed25519Signer,
    pub(crate) gateway: Arc<Gateway<Faulty>>,
}

pub(crate) fn token(issuer: &Ed25519Signer, agent: &Ed25519Signer, id: &str) -> Value {
    token_with(issuer, agent, id, |_| {})
}

/// The demo delegation's shape under `id`, with `edit` applied to the
/// payload before it is signed.
pub(crate) fn token_with(
    issuer: &Ed25519Signer,
    agent: &Ed25519Signer,
    id: &str,
    edit: impl FnOnce(&mut Object),
) -> Value {
    let mut p = crate::demo::token(id, agent.jwk().to_value())
        .into_value()
        .as_object()
        .unwrap()
        .clone();
    edit(&mut p);
    issuer.envelope(Domain::Delegation, Value::Object(p))
}

pub(crate) fn refunds() -> std::collections::BTreeMap<String, String> {
    tollgate_policies::Bundle::read_files(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/examples/refunds"),
    )
    .unwrap()
}

/// The refunds policy's `bundle.toml` committing to an `http` target with
/// `manifest` after its approval line: its orders are then resources the
/// registry keeps (a model governs actions at target `none` only).
pub(crate) fn at_http_target(toml: &str, manifest: &str) -> String {
    let toml = match toml.find("# Orders as a state machine") {
        Some(i) => &toml[..i],
        None => toml,
    };
    toml.replace(
        "approval = \"by_rule\"",
        &format!("approval = \"by_rule\"\ntarget = \"http\"{manifest}"),
    )
}

/// The demo world under the example refunds policy.
pub(crate) fn seed(issuer: &Ed25519Signer, agent: &Ed25519Signer) -> Seed {
    crate::demo::seed(refunds(), issuer, agent)
}

pub(crate) async fn open_in(
    dir: &tempfile::TempDir,
    clock: Arc<FakeClock>,
    seed: Seed,
) -> (Faulty, Arc<Gateway<Faulty>>) {
    open_with(dir, clock, seed, Upstreams::default()).await
}

pub(crate) async fn open_with(
    dir: &tempfile::TempDir,
    clock: Arc<FakeClock>,
    seed: Seed,
    upstreams: Upstreams,
) -> (Faulty, Arc<Gateway<Faulty>>) {
    let ledger = Hooked {
        inner: SqliteLedger::open(SqliteOptions::new(dir.path().join("ledger.db")))
            .await
            .unwrap(),
        hooks: Faults::default(),
    };
    let gateway = Gateway::open(
        Parts {
            ledger: ledger.clone(),
            signer: Ed25519Signer::from_secret(&[1; 32]).into(),
            clock,
            limits: Limits::default(),
            upstreams,
            webhooks: Default::default(),
        },
        move || Ok::<_, crate::Error>(seed),
        None,
    )
    .await
    .unwrap();
    (ledger, gateway)
}

pub(crate) async fn world() -> World {
    world_with(|_| {}).await
}

/// A world whose seed `edit` may change first.
pub(crate) async fn world_with(edit: impl FnOnce(&mut Seed)) -> World {
    world_upstreams(edit, Upstreams::default()).await
}

/// [`world_with`], with `upstreams` (and resource lookups).
pub(crate) async fn world_upstreams(edit: impl FnOnce(&mut Seed), upstreams: Upstreams) -> World {
    let dir = tempfile::tempdir().unwrap();
    let clock = FakeClock::at(T0);
    let issuer = Ed25519Signer::from_secret(&[2; 32]);
    let agent = Ed25519Signer::from_secret(&[3; 32]);
    let mut seed = seed(&issuer, &agent);
    edit(&mut seed);
    let (ledger, gateway) = open_with(&dir, clock.clone(), seed, upstreams).await;
    World {
        _dir: dir,
        ledger,
        clock,
        issuer,
        agent,
        gateway,
    }
}

pub(crate) fn intent(
    agent: &Ed25519Signer,
    id: &str,
    resource: &str,
    amount: i64,
    at: &str,
) -> IntentEnvelope {
    let p = crate::demo::intent(id, resource, amount)
        .member("issued_at", at)
        .into_value();
    IntentEnvelope::from_value(agent.envelope(Domain::Intent, p)).unwrap()
}

pub(crate) async fn head(w: &World) -> u64 {
    w.ledger.inner.head().await.unwrap().seq
}

pub(crate) fn receipt_of(line: &[u8]) -> Object {
    parse(line)
        .unwrap()
        .as_object()
        .unwrap()
        .get("receipt")
        .unwrap()
        .as_object()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn a_first_start_imports_the_seed_then_never_reads_it_again() {
    let w = world().await;
    // policy.publish, policy.activate, issuer, delegation, four orders.
    assert_eq!(head(&w).await, 8);
    let state = w.ledger.inner.registry().await.unwrap();
    assert!(state.seeded);
    // Reopened with a seed that would panic if read: the ledger decides.
    let dir = w._dir;
    drop(w.gateway);
    let (_, again) = Gateway::open(
        Parts {
            ledger: Hooked {
                inner: w.ledger.inner.clone(),
                hooks: Faults::default(),
            },
            signer: Ed25519Signer::from_secret(&[1; 32]).into(),
            clock: w.clock.clone(),
            limits: Limits::default(),
            upstreams: Upstreams::default(),
            webhooks: Default::default(),
        },
        || -> Result<Seed, crate::Error> { panic!("the seed must not be read again") },
        None,
    )
    .await
    .map(|g| ((), g))
    .unwrap();
    assert_eq!(again.registry().delegations().len(), 1);
    drop(dir);
}

#[tokio::test]
async fn decisions_carry_their_inputs_and_registry_receipts_the_fake_clock() {
    let w = world().await;
    let s = w
        .gateway
        .intents()
        .submit(intent(&w.agent, "i-1", "order:o-1001", 2500, T0), None)
        .await
        .unwrap();
    assert_eq!(s.verdict, Some(Verdict::Pass));
    let r = receipt_of(&s.line);
    let inputs = r.get("inputs").unwrap().as_object().unwrap();
    let token_bytes = tollgate_protocol::canonical(&token(&w.issuer, &w.agent, "dlg_demo"));
    let expected = HashAlg::Sha256.digest(&[&token_bytes]).to_string();
    assert_eq!(
        inputs.get("delegations").unwrap(),
        &Value::Array(vec![expected.into()])
    );
    assert_eq!(
        inputs
            .get("resource")
            .unwrap()
            .as_object()
            .unwrap()
            .get("state")
            .and_then(Value::as_str),
        Some("paid")
    );
    // A registry change's issued_at is the (fake) clock's.
    w.clock.set("2026-11-22T10:01:00Z");
    let id = "d-2";
    assert_eq!(
        w.gateway
            .registry()
            .register_delegation(token(&w.issuer, &w.agent, id))
            .await
            .unwrap(),
        Changed::Recorded
    );
    let line = w
        .ledger
        .inner
        .lines(head(&w).await, 1)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        receipt_of(&line).get("issued_at").and_then(Value::as_str),
        Some("2026-11-22T10:01:00Z")
    );
}

#[tokio::test]
async fn the_skew_check_reads_the_injected_clock() {
    let w = world().await;
    w.clock.set("2026-11-22T11:00:00Z");
    let err = w
        .gateway
        .intents()
        .submit(intent(&w.agent, "i-1", "order:o-1001", 2500, T0), None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, IntentError::ClockSkew(super::Skew { skew: 3600, .. })),
        "{err}"
    );
    w.clock.set("2026-11-22T10:04:00Z");
    assert!(
        w.gateway
            .intents()
            .submit(intent(&w.agent, "i-1", "order:o-1001", 2500, T0), None)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn a_storage_error_at_any_step_appends_nothing_and_never_passes() {
    let w = world().await;
    let before = head(&w).await;
    w.ledger.hooks.fail_writes.store(true, Ordering::SeqCst);
    // The append of a decision.
    let err = w
        .gateway
        .intents()
        .submit(intent(&w.agent, "i-1", "order:o-1001", 2500, T0), None)
        .await
        .unwrap_err();
    assert!(matches!(err, IntentError::Internal(_)), "{err}");
    // Every registry change.
    let errors = [
        w.gateway
            .registry()
            .register_delegation(token(&w.issuer, &w.agent, "d-2"))
            .await
            .unwrap_err(),
        w.gateway
            .registry()
            .revoke_delegation("dlg_demo")
            .await
            .unwrap_err(),
        w.gateway
            .policies()
            .publish_policy({
                let mut f = refunds();
                f.insert(
                    "bundle.toml".into(),
                    f["bundle.toml"].replace("1.0.0", "1.0.1"),
                );
                f
            })
            .await
            .unwrap_err(),
        w.gateway
            .policies()
            .rollback_policy("refunds", false)
            .await
            .unwrap_err(),
    ];
    for e in &errors[..3] {
        assert!(matches!(e, RegistryError::Internal(_)), "{e}");
    }
    assert!(matches!(errors[3], RegistryError::NothingToRollBack(_)));
    w.ledger.hooks.fail_writes.store(false, Ordering::SeqCst);
    assert_eq!(head(&w).await, before, "nothing appended");
    // Nothing applied either: the view still agrees with the ledger.
    assert_eq!(w.gateway.registry().delegations().len(), 1);
    assert!(!w.gateway.registry().delegations()[0].revoked);
    assert_eq!(w.gateway.policies().list().published.len(), 1);

    // A failing read where the flow needs one: an error, not a pass.
    w.ledger.hooks.fail_reads.store(true, Ordering::SeqCst);
    let dup = intent(&w.agent, "i-2", "order:o-1001", 2500, T0);
    w.ledger.hooks.fail_reads.store(false, Ordering::SeqCst);
    w.gateway.intents().submit(dup.clone(), None).await.unwrap();
    let n = head(&w).await;
    // The same intent again: its entry exists, and reading it fails: the
    // caller gets an error, and nothing new is written.
    w.ledger.hooks.fail_reads.store(true, Ordering::SeqCst);
    let err = w.gateway.intents().submit(dup, None).await.unwrap_err();
    assert!(matches!(err, IntentError::Internal(_)), "{err}");
    w.ledger.hooks.fail_reads.store(false, Ordering::SeqCst);
    assert_eq!(head(&w).await, n);
}

#[tokio::test]
async fn a_revoked_id_stays_revoked_and_revocations_race_safely() {
    let w = Arc::new(world().await);
    let ids: Vec<String> = (0..30).map(|i| format!("d-r{i}")).collect();
    for id in &ids {
        w.gateway
            .registry()
            .register_delegation(token(&w.issuer, &w.agent, id))
            .await
            .unwrap();
    }
    let before = head(&w).await;
    // 30 revocations at once, each id twice: every call succeeds, each id
    // is recorded once.
    let mut tasks = Vec::new();
    for id in ids.iter().chain(ids.iter()) {
        let (w, id) = (w.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            w.gateway.registry().revoke_delegation(&id).await
        }));
    }
    let mut recorded = 0;
    for t in tasks {
        if t.await.unwrap().unwrap() == Changed::Recorded {
            recorded += 1;
        }
    }
    assert_eq!(recorded, 30);
    assert_eq!(head(&w).await, before + 30);
    let state = w.ledger.inner.registry().await.unwrap();
    assert_eq!(state.revoked_delegations.len(), 30);
    // Registering a revoked id again is refused, by the engine.
    let err = w
        .gateway
        .registry()
        .register_delegation(token(&w.issuer, &w.agent, "d-r0"))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::RevokedDelegation(_)), "{err}");
    assert_eq!(head(&w).await, before + 30);
}

#[tokio::test]
async fn an_http_target_is_never_called_when_the_ledger_cannot_reserve_or_read() {
    // An upstream that records every request it gets.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/refund", listener.local_addr().unwrap());
    listener.set_nonblocking(true).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let issuer = Ed25519Signer::from_secret(&[2; 32]);
    let agent = Ed25519Signer::from_secret(&[3; 32]);
    let mut seed = seed(&issuer, &agent);
    let toml = seed.policy.get_mut("bundle.toml").unwrap();
    *toml = at_http_target(toml, "");
    let mut upstreams = Upstreams::default();
    upstreams.urls.insert("orders.refund".into(), url);
    let (ledger, gateway) = open_with(&dir, FakeClock::at(T0), seed, upstreams).await;
    let before = ledger.inner.head().await.unwrap().seq;
    for (fail, id) in [
        (&ledger.hooks.fail_writes, "i-1"),
        (&ledger.hooks.fail_reads, "i-2"),
    ] {
        fail.store(true, Ordering::SeqCst);
        let err = gateway
            .intents()
            .submit(intent(&agent, id, "order:o-1001", 2500, T0), None)
            .await
            .unwrap_err();
        fail.store(false, Ordering::SeqCst);
        assert!(matches!(err, IntentError::Internal(_)), "{err}");
    }
    assert_eq!(
        ledger.inner.head().await.unwrap().seq,
        before,
        "nothing appended"
    );
    assert!(
        ledger.inner.pending().await.unwrap().is_empty(),
        "nothing reserved"
    );
    assert!(listener.accept().is_err(), "the upstream was never called");
}

#[tokio::test]
async fn recovery_clears_orphans_and_reports_what_it_cannot_finish_without_stopping() {
    let w = world().await;
    // An orphan: the entry of its key is in the ledger already.
    let s = w
        .gateway
        .intents()
        .submit(intent(&w.agent, "i-1", "order:o-1001", 2500, T0), None)
        .await
        .unwrap();
    assert!(!s.replayed);
    let decided = identity("agent-demo", "i-1");
    w.ledger.inner.reserve(&decided, b"{}").await.unwrap();
    // One left by an older version: an envelope, no decision.
    w.ledger
        .inner
        .reserve("agent-demo/old", b"{\"payload\":{},\"signature\":{}}")
        .await
        .unwrap();
    // One whose action has no upstream configured any more.
    let mut draft = Object::new();
    draft.insert("decision", Object::new().into());
    draft.insert(
        "subject",
        intent(&w.agent, "i-2", "order:o-1001", 2500, T0).value,
    );
    let mut record = Object::new();
    record.insert("draft", Value::Object(draft));
    record.insert("charges", Value::Array(Vec::new()));
    w.ledger
        .inner
        .reserve(
            "agent-demo/i-2",
            &tollgate_protocol::canonical(&Value::Object(record)),
        )
        .await
        .unwrap();
    let before = head(&w).await;
    let report = w.gateway.intents().recover().await.unwrap();
    assert_eq!((report.finished, report.released), (0, 1));
    let keys: Vec<&str> = report.unfinished.iter().map(|u| u.key.as_str()).collect();
    assert_eq!(keys, ["agent-demo/i-2", "agent-demo/old"]);
    assert!(report.unfinished[0].reason.contains("no upstream"));
    assert!(report.unfinished[1].reason.contains("no decision"));
    assert_eq!(w.gateway.intents().unfinished(), report.unfinished);
    assert_eq!(head(&w).await, before, "nothing appended, nothing decided");
    let pending: Vec<String> = w
        .ledger
        .inner
        .pending()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.0)
        .collect();
    assert_eq!(
        pending,
        ["agent-demo/i-2", "agent-demo/old"],
        "the orphan is gone"
    );
    // And a gateway opened on this ledger starts all the same.
    let (_, again) = open_in(&w._dir, w.clock.clone(), Seed::default()).await;
    assert_eq!(again.intents().unfinished().len(), 2);
}

fn budget_of(p: &mut Object, eur: i64, window: i64) {
    let mut b = Object::new();
    b.insert("EUR", Value::integer(eur).unwrap());
    p.insert("budget", b.into());
    p.insert("window_seconds", Value::integer(window).unwrap());
}

fn verdict_and_inputs(s: &Submitted) -> (String, Value) {
    let r = receipt_of(&s.line);
    (
        r.get("decision")
            .unwrap()
            .as_object()
            .unwrap()
            .get("verdict")
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned(),
        r.get("inputs")
            .unwrap()
            .as_object()
            .unwrap()
            .get("spent")
            .unwrap()
            .clone(),
    )
}

#[tokio::test]
async fn a_budget_holds_across_intents_restarts_and_windows() {
    let issuer = Ed25519Signer::from_secret(&[2; 32]);
    let agent = Ed25519Signer::from_secret(&[3; 32]);
    let w = world_with(|s| {
        s.delegations = vec![token_with(&issuer, &agent, "dlg_demo", |p| {
            budget_of(p, 10_000, 86_400)
        })];
    })
    .await;
    let mut verdicts = Vec::new();
    for i in 0..4 {
        let s = w
            .gateway
            .intents()
            .submit(
                intent(&w.agent, &format!("b-{i}"), "order:o-1001", 4000, T0),
                None,
            )
            .await
            .unwrap();
        verdicts.push(verdict_and_inputs(&s));
    }
    let names: Vec<&str> = verdicts.iter().map(|v| v.0.as_str()).collect();
    assert_eq!(names, ["pass", "pass", "escalate", "escalate"]);
    // What each decision read is in its receipt (spec §4.6).
    let spent_of = |v: &Value| {
        let Value::Array(items) = v else { panic!() };
        let o = items[0].as_object().unwrap();
        assert_eq!(
            o.get("delegation").and_then(Value::as_str),
            Some("dlg_demo")
        );
        assert_eq!(o.get("currency").and_then(Value::as_str), Some("EUR"));
        assert_eq!(
            o.get("window_start").and_then(Value::as_str),
            Some("2026-11-22T00:00:00Z")
        );
        o.get("amount_minor").unwrap().as_safe_integer().unwrap()
    };
    let spent: Vec<i64> = verdicts.iter().map(|v| spent_of(&v.1)).collect();
    assert_eq!(spent, [0, 4000, 8000, 8000], "escalations spend nothing");
    // The reason quotes what is left.
    let third = w
        .gateway
        .intents()
        .submit(intent(&w.agent, "b-2", "order:o-1001", 4000, T0), None)
        .await
        .unwrap();
    let text = String::from_utf8(third.line).unwrap();
    assert!(
        text.contains("the 20.00 EUR left in the budget of delegation dlg_demo"),
        "{text}"
    );
    // A gateway opened again on the same ledger reads the same spending.
    let (_, again) = open_in(&w._dir, w.clock.clone(), Seed::default()).await;
    let again = Arc::new(again);
    let s = again
        .intents()
        .submit(intent(&w.agent, "b-9", "order:o-1001", 2500, T0), None)
        .await
        .unwrap();
    assert_eq!(verdict_and_inputs(&s).0, "escalate");
    let s = again
        .intents()
        .submit(intent(&w.agent, "b-10", "order:o-1001", 2000, T0), None)
        .await
        .unwrap();
    assert_eq!(verdict_and_inputs(&s).0, "pass");
    // The next window starts afresh.
    w.clock.set("2026-11-23T00:00:01Z");
    let s = again
        .intents()
        .submit(
            intent(
                &w.agent,
                "b-11",
                "order:o-1001",
                4000,
                "2026-11-23T00:00:01Z",
            ),
            None,
        )
        .await
        .unwrap();
    let (verdict, inputs) = verdict_and_inputs(&s);
    assert_eq!(verdict, "pass");
    let Value::Array(items) = inputs else {
        panic!()
    };
    assert_eq!(
        items[0]
            .as_object()
            .unwrap()
            .get("amount_minor")
            .unwrap()
            .as_safe_integer(),
        Some(0)
    );
}

#[tokio::test]
async fn concurrent_intents_never_spend_more_than_the_budget_and_children_count_for_parents() {
    let issuer = Ed25519Signer::from_secret(&[2; 32]);
    let agent = Ed25519Signer::from_secret(&[3; 32]);
    let w = Arc::new(
        world_with(|s| {
            s.delegations = vec![token_with(&issuer, &agent, "dlg_demo", |p| {
                budget_of(p, 10_000, 86_400)
            })];
        })
        .await,
    );
    // A child, signed by the holder's agent key: its spending is its
    // parent's too. A child with a shorter window is refused.
    let child = |id: &str, window: i64| {
        let mut t = token_with(&issuer, &agent, id, |p| {
            budget_of(p, 10_000, window);
            p.insert("parent", "dlg_demo".into());
        });
        let payload = t.as_object().unwrap().get("payload").unwrap().clone();
        t = agent.envelope(Domain::Delegation, payload);
        t
    };
    let err = w
        .gateway
        .registry()
        .register_delegation(child("d-short", 1))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("budget window of 1 s is shorter than the parent's 86400 s"),
        "{err}"
    );
    w.gateway
        .registry()
        .register_delegation(child("d-child", 86_400))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..32 {
        let (w2, id) = (w.clone(), format!("c-{i}"));
        tasks.push(tokio::spawn(async move {
            let mut env = intent(&w2.agent, &id, "order:o-1001", 700, T0);
            if i % 2 == 1 {
                // Half of them under the child.
                let mut p = env
                    .value
                    .as_object()
                    .unwrap()
                    .get("payload")
                    .unwrap()
                    .as_object()
                    .unwrap()
                    .clone();
                p.insert("delegation", "d-child".into());
                env =
                    IntentEnvelope::from_value(w2.agent.envelope(Domain::Intent, Value::Object(p)))
                        .unwrap();
            }
            w2.gateway.intents().submit(env, None).await.unwrap()
        }));
    }
    let mut passed = 0;
    for t in tasks {
        if verdict_and_inputs(&t.await.unwrap()).0 == "pass" {
            passed += 1;
        }
    }
    assert_eq!(passed, 14, "14 x 700 = 9800 <= 10000 < 15 x 700");
    let total: i64 = w
        .ledger
        .inner
        .spending(
            tollgate_protocol::Timestamp::parse(T0)
                .unwrap()
                .unix_seconds(),
        )
        .await
        .unwrap()
        .iter()
        .filter(|s| s.delegation == "dlg_demo")
        .map(|s| s.amount_minor)
        .sum();
    assert_eq!(total, 9800);
}

#[tokio::test]
async fn an_escalation_names_who_must_review_it_and_by_when() {
    let w = world_with(|s| {
        let toml = s.policy.get_mut("bundle.toml").unwrap();
        *toml = toml.replace(
            "approval = \"by_rule\"",
            "approval = \"by_rule\"\nreview = { role = \"refunds\", count = 2, deadline_seconds = 3600 }",
        );
    })
    .await;
    let s = w
        .gateway
        .intents()
        .submit(intent(&w.agent, "big", "order:o-1001", 99_900, T0), None)
        .await
        .unwrap();
    assert_eq!(s.verdict, Some(Verdict::Escalate));
    let outcome = receipt_of(&s.line)
        .get("outcome")
        .unwrap()
        .as_object()
        .unwrap()
        .clone();
    assert_eq!(
        outcome.get("status").and_then(Value::as_str),
        Some("pending_approval")
    );
    assert_eq!(
        tollgate_protocol::canonical(outcome.get("review").unwrap()),
        br#"{"count":2,"deadline":"2026-11-22T11:00:00Z","role":"refunds"}"#
    );
    // A pass names no review.
    let s = w
        .gateway
        .intents()
        .submit(intent(&w.agent, "small", "order:o-1001", 2500, T0), None)
        .await
        .unwrap();
    assert!(
        receipt_of(&s.line)
            .get("outcome")
            .unwrap()
            .as_object()
            .unwrap()
            .get("review")
            .is_none()
    );
}
