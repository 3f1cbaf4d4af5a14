//! The ledger conformance suite, written once: every check runs against
//! any [`Backend`] — the embedded SQLite ledger and the shared PostgreSQL
//! one pass the same checks, through the [`Ledger`] trait alone.

use std::future::Future;

use tollgate_ledger::prelude::*;
use tollgate_ledger::{
    Append, ApprovalRow, BudgetRead, Error, Guard, Ledger, RegistryAppend, RegistryChange,
    RegistryState, Spend, Staleness, WebhookOp,
};
use tollgate_protocol::{ChainVerifier, Domain, KeySet, Object, Value, seal_receipt};
use tollgate_signer::{Ed25519Signer, key_set};

/// Where a backend keeps its stores.
pub trait Backend {
    /// Its ledger.
    type L: Ledger;
    /// Makes a new, empty store and names it.
    fn create(&mut self) -> String;
    /// Opens (again) the store `name`.
    fn open(&self, name: &str) -> impl Future<Output = Self::L>;
}

fn signer() -> Ed25519Signer {
    Ed25519Signer::from_secret(&[3; 32])
}

fn signed(signer: &Ed25519Signer, n: u64) -> Append {
    let r = crate::receipt(n);
    let s = signer.sign_now(Domain::Receipt, &r);
    Append::new(r, s)
}

/// Every export line of `ledger`, verified as an auditor would; their
/// number.
async fn verified(ledger: &impl Ledger, keys: &KeySet) -> u64 {
    let lines = ledger.lines(1, 100_000).await.unwrap();
    // Their lengths, as a reader bounding a page by bytes reads them
    // first; and from the middle, a few.
    let lengths: Vec<u64> = lines.iter().map(|l| l.len() as u64).collect();
    assert_eq!(ledger.line_lengths(1, 100_000).await.unwrap(), lengths);
    let mid = lines.len() / 2;
    assert_eq!(
        ledger.line_lengths(mid as u64 + 1, 3).await.unwrap(),
        lengths[mid..(mid + 3).min(lengths.len())]
    );
    let refs: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
    let mut v = ChainVerifier::new(Some(keys));
    v.verify_lines(&refs).unwrap();
    v.verified()
}

/// Runs every check, each on a store of its own: the suite of each store
/// trait in turn.
pub async fn suite<B: Backend>(b: &mut B) {
    chain(b).await;
    registry_store(b).await;
    approval_store(b).await;
    spending_store(b).await;
    outbox_store(b).await;
    tree_store(b).await;
    entity_store(b).await;
}

/// [`tollgate_ledger::EntityStore`].
pub async fn entity_store<B: Backend>(b: &mut B) {
    an_entity_changes_one_version_at_a_time_with_its_entry(b).await;
}

/// [`tollgate_ledger::Chain`]: entries, with what each records, and the
/// guards checked when they are appended.
pub async fn chain<B: Backend>(b: &mut B) {
    guards_refuse_decisions_made_on_state_changed_since(b).await;
}

/// [`tollgate_ledger::RegistryStore`].
pub async fn registry_store<B: Backend>(b: &mut B) {
    registry_changes_land_with_their_receipt_or_not_at_all(b).await;
}

/// [`tollgate_ledger::ApprovalStore`].
pub async fn approval_store<B: Backend>(b: &mut B) {
    approval_rows_are_written_with_their_receipts_and_the_tables_enforce_the_rules(b).await;
    steps_of_one_approval_are_serialized_by_the_steps_they_read(b).await;
    a_revocation_withdraws_pending_grants_and_a_key_is_one_reviewers(b).await;
    a_revocation_waits_for_the_execution_of_a_quorum_the_reviewer_is_in(b).await;
}

/// [`tollgate_ledger::SpendingStore`].
pub async fn spending_store<B: Backend>(b: &mut B) {
    reservations_last_until_their_entry_is_appended(b).await;
    an_entry_opens_a_reservation_that_the_entry_of_its_key_ends(b).await;
    a_budget_holds_under_racing_appends_through_two_handles(b).await;
}

/// [`tollgate_ledger::OutboxStore`].
pub async fn outbox_store<B: Backend>(b: &mut B) {
    each_entry_writes_its_events_with_it(b).await;
    spending_sums_per_window_and_webhook_state_round_trips(b).await;
}

/// [`tollgate_ledger::TreeStore`].
pub async fn tree_store<B: Backend>(b: &mut B) {
    the_tree_covers_durable_entries_and_its_roots_are_rfc_6962(b).await;
    the_origin_is_recorded_once_and_checkpoints_only_grow(b).await;
}

/// Two handles on one store; changes to order:o-1 with their entries:
/// each appended only if the entity is at the version it read, its
/// version then one more; a stale one appends nothing, whichever handle
/// wrote first; the history lists each change's entry.
async fn an_entity_changes_one_version_at_a_time_with_its_entry<B: Backend>(b: &mut B) {
    let name = b.create();
    let one = b.open(&name).await;
    let two = b.open(&name).await;
    let signer = signer();
    let change = |n: u64, read: u64, state: &str| {
        let mut a = signed(&signer, n);
        a.entity = Some(tollgate_ledger::EntityWrite {
            resource: "order:o-1".into(),
            read,
            attributes: format!(r#"{{"state":"{state}"}}"#).into_bytes(),
        });
        a
    };
    assert_eq!(one.entity("order:o-1").await.unwrap(), None);
    let first = one.append_unit(vec![change(1, 0, "paid")]).await.unwrap();
    let e = two.entity("order:o-1").await.unwrap().unwrap();
    assert_eq!(
        (e.version, e.seq, e.attributes.as_slice()),
        (1, first[0].seq, &br#"{"state":"paid"}"#[..])
    );
    // Both read version 1; the first to append wins.
    let second = two
        .append_unit(vec![change(2, 1, "partially_refunded")])
        .await
        .unwrap();
    let head = one.head().await.unwrap();
    assert_eq!(
        one.append_unit(vec![change(3, 1, "refunded")])
            .await
            .unwrap_err(),
        Error::Stale(Staleness::Entity {
            resource: "order:o-1".into(),
            read: 1,
            current: 2
        })
    );
    assert_eq!(one.head().await.unwrap(), head, "nothing appended");
    // Two changes in one unit read versions in turn; a unit whose second
    // change read a stale version appends neither.
    assert!(matches!(
        one.append_unit(vec![change(4, 2, "refunded"), change(5, 2, "refunded")])
            .await
            .unwrap_err(),
        Error::Stale(Staleness::Entity {
            read: 2,
            current: 3,
            ..
        })
    ));
    assert_eq!(one.head().await.unwrap(), head, "nothing appended");
    let third = one
        .append_unit(vec![change(6, 2, "refunded")])
        .await
        .unwrap();
    let e = one.entity("order:o-1").await.unwrap().unwrap();
    assert_eq!((e.version, e.seq), (3, third[0].seq));
    assert_eq!(
        two.entity_history("order:o-1").await.unwrap(),
        [(1, first[0].seq), (2, second[0].seq), (3, third[0].seq)]
    );
    assert!(two.entity_history("order:o-2").await.unwrap().is_empty());
    // A decision that read the entity and changes nothing (a block, an
    // escalation) is appended only while the entity is at the version it
    // read, through either handle.
    let reading = |n: u64, version: u64| {
        let mut a = signed(&signer, n);
        a.guard = Some(Guard {
            registry_seq: 0,
            entity: Some(tollgate_ledger::EntitySeen {
                resource: "order:o-1".into(),
                version,
            }),
            ..Guard::default()
        });
        a
    };
    let head = two.head().await.unwrap();
    assert_eq!(
        two.append_unit(vec![reading(7, 2)]).await.unwrap_err(),
        Error::Stale(Staleness::Entity {
            resource: "order:o-1".into(),
            read: 2,
            current: 3
        })
    );
    assert_eq!(two.head().await.unwrap(), head, "nothing appended");
    assert!(two.append_unit(vec![reading(8, 3)]).await.is_ok());
    assert_eq!(one.entity("order:o-1").await.unwrap().unwrap().version, 3);
    // Changes appended one after another through one handle each move the
    // entity (found by a race over three gateways: a store's quick path
    // for plain groups wrote the entry and not the entity).
    for (n, read) in [(9, 3), (10, 4), (11, 5)] {
        let e = two
            .append_unit(vec![change(n, read, "refunded")])
            .await
            .unwrap();
        let now = one.entity("order:o-1").await.unwrap().unwrap();
        assert_eq!((now.version, now.seq), (read + 1, e[0].seq));
    }
    // Two changes of one entity in one unit, each reading the version the
    // other left: both land, in order (the store writes them row by row).
    let both = one
        .append_unit(vec![
            change(12, 6, "partially_refunded"),
            change(13, 7, "refunded"),
        ])
        .await
        .unwrap();
    let e = two.entity("order:o-1").await.unwrap().unwrap();
    assert_eq!(
        (e.version, e.seq, e.attributes.as_slice()),
        (8, both[1].seq, &br#"{"state":"refunded"}"#[..])
    );
    let history = two.entity_history("order:o-1").await.unwrap();
    assert_eq!(
        history[history.len() - 2..],
        [(7, both[0].seq), (8, both[1].seq)]
    );
    // Many entities changed at once through both handles, grouped as the
    // store likes: each at version 1, its row and history its entry's.
    let other = |n: u64, k: u64| {
        let mut a = signed(&signer, n);
        a.entity = Some(tollgate_ledger::EntityWrite {
            resource: format!("order:m-{k}"),
            read: 0,
            attributes: format!(r#"{{"n":{k}}}"#).into_bytes(),
        });
        a
    };
    let appends = (0..40u64).map(|k| {
        let h = if k % 2 == 0 { &one } else { &two };
        let a = other(100 + k, k);
        async move { h.append_unit(vec![a]).await.unwrap() }
    });
    let appended = futures_util::future::join_all(appends).await;
    for (k, e) in appended.iter().enumerate() {
        let now = one.entity(&format!("order:m-{k}")).await.unwrap().unwrap();
        assert_eq!((now.version, now.seq), (1, e[0].seq));
        assert_eq!(now.attributes, format!(r#"{{"n":{k}}}"#).into_bytes());
        assert_eq!(
            two.entity_history(&format!("order:m-{k}")).await.unwrap(),
            [(1, e[0].seq)]
        );
    }
}

fn registry_item(signer: &Ed25519Signer, n: u64, change: RegistryChange) -> RegistryAppend {
    let a = signed(signer, 10_000 + n);
    RegistryAppend {
        receipt: a.receipt,
        signature: a.signature,
        change,
    }
}

async fn registry_changes_land_with_their_receipt_or_not_at_all<B: Backend>(b: &mut B) {
    let name = b.create();
    let ledger = b.open(&name).await;
    let signer = signer();
    assert_eq!(ledger.registry().await.unwrap(), RegistryState::default());
    let token = |id: &str| RegistryChange::DelegationRegister {
        id: id.into(),
        token: format!("{{\"id\":\"{id}\"}}").into_bytes(),
    };
    let seed = vec![
        registry_item(
            &signer,
            1,
            RegistryChange::PolicyPublish {
                version: "p@1.0.0".into(),
                files: b"{}".to_vec(),
            },
        ),
        registry_item(
            &signer,
            2,
            RegistryChange::PolicyActivate {
                version: "p@1.0.0".into(),
            },
        ),
        registry_item(&signer, 3, token("d-1")),
    ];
    assert_eq!(ledger.append_registry(seed, true).await.unwrap().len(), 3);
    // The first-start import happens once.
    let again = vec![registry_item(&signer, 4, token("d-2"))];
    assert_eq!(
        ledger.append_registry(again, true).await.unwrap_err(),
        Error::AlreadySeeded
    );
    assert_eq!(ledger.head().await.unwrap().seq, 3);
    let revoke = RegistryChange::DelegationRevoke { id: "d-1".into() };
    ledger
        .append_registry(vec![registry_item(&signer, 5, revoke)], false)
        .await
        .unwrap();
    // The tables refuse, whatever the caller checked: a revoked id again,
    // a revocation of nothing, an unpublished activation. Each leaves the
    // ledger as it was.
    for (n, change) in [
        (6, token("d-1")),
        (
            7,
            RegistryChange::DelegationRevoke {
                id: "d-unknown".into(),
            },
        ),
        (
            8,
            RegistryChange::PolicyActivate {
                version: "p@9.9.9".into(),
            },
        ),
    ] {
        let err = ledger
            .append_registry(vec![registry_item(&signer, n, change)], false)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::RegistryConflict(_)), "{err}");
        assert_eq!(ledger.head().await.unwrap().seq, 4);
    }
    // Two changes in one call are one transaction: the second's refusal
    // takes the first with it.
    let pair = vec![
        registry_item(&signer, 9, token("d-3")),
        registry_item(&signer, 10, token("d-3")),
    ];
    assert!(ledger.append_registry(pair, false).await.is_err());
    assert_eq!(ledger.head().await.unwrap().seq, 4);
    let state = ledger.registry().await.unwrap();
    assert!(state.seeded);
    assert_eq!(state.delegations.len(), 1);
    assert_eq!(
        state.revoked_delegations.iter().collect::<Vec<_>>(),
        ["d-1"]
    );
    assert_eq!(
        state.policy_domains().active().collect::<Vec<_>>(),
        ["p@1.0.0"]
    );
    assert!(
        state.policy_domains,
        "a policy change marks the history by name"
    );
    // Registry receipts are entries like any other: the chain verifies.
    assert_eq!(verified(&ledger, &key_set([&signer])).await, 4);
}

fn step(approval: &str, reviewer: Option<&str>, status: &str, hash: Option<&str>) -> ApprovalRow {
    ApprovalRow::Step {
        approval: approval.into(),
        reviewer: reviewer.map(str::to_owned),
        verdict: if reviewer.is_some() {
            tollgate_ledger::StepVerdict::Grant
        } else {
            tollgate_ledger::StepVerdict::Expire
        },
        status: tollgate_protocol::Status::from_name(status).unwrap(),
        decision_hash: hash.map(str::to_owned),
    }
}

fn with_row(signer: &Ed25519Signer, n: u64, row: ApprovalRow) -> Append {
    let mut a = signed(signer, n);
    a.approval = Some(row);
    a
}

async fn approval_rows_are_written_with_their_receipts_and_the_tables_enforce_the_rules<
    B: Backend,
>(
    b: &mut B,
) {
    let name = b.create();
    let ledger = b.open(&name).await;
    let signer = signer();
    let open_row = ApprovalRow::Open {
        id: "rcpt_a".into(),
        deadline: 1_000,
        body: b"{}".to_vec(),
    };
    ledger
        .append_unit(vec![with_row(&signer, 1, open_row.clone())])
        .await
        .unwrap();
    let head = ledger.head().await.unwrap().seq;
    let refused = |e: Error| matches!(e, Error::ApprovalConflict(_));
    assert!(ledger.approvals_due(999, 10).await.unwrap().is_empty());
    assert_eq!(ledger.approvals_due(1_000, 10).await.unwrap().len(), 1);
    // Unknown approval, opened twice: refused, nothing appended.
    for (n, row, why) in [
        (
            2,
            step("rcpt_b", Some("r1"), "pending_approval", Some("h1")),
            "unknown or has ended",
        ),
        (3, open_row, "already open"),
    ] {
        let e = ledger
            .append_unit(vec![with_row(&signer, n, row)])
            .await
            .unwrap_err();
        assert!(refused(e.clone()) && e.to_string().contains(why), "{e}");
    }
    assert_eq!(ledger.head().await.unwrap().seq, head);
    // One grant; the same reviewer again and the same decision again are
    // refused, each saying why; a unit of two fails whole when its second
    // item is refused.
    ledger
        .append_unit(vec![with_row(
            &signer,
            4,
            step("rcpt_a", Some("r1"), "pending_approval", Some("h1")),
        )])
        .await
        .unwrap();
    for (row, why) in [
        (
            step("rcpt_a", Some("r1"), "approved", Some("h2")),
            "already decided",
        ),
        (
            step("rcpt_a", Some("r2"), "approved", Some("h1")),
            "already used",
        ),
    ] {
        let e = ledger
            .append_unit(vec![with_row(&signer, 5, row)])
            .await
            .unwrap_err();
        assert!(refused(e.clone()) && e.to_string().contains(why), "{e}");
    }
    let e = ledger
        .append_unit(vec![
            signed(&signer, 6),
            with_row(
                &signer,
                7,
                step("rcpt_a", Some("r1"), "approved", Some("h3")),
            ),
        ])
        .await
        .unwrap_err();
    assert!(refused(e.clone()), "{e}");
    assert_eq!(ledger.head().await.unwrap().seq, head + 1);
    // The quorum completes with its execution in one unit; then nothing
    // more: not an expiry, not another grant.
    let entries = ledger
        .append_unit(vec![
            with_row(
                &signer,
                9,
                step("rcpt_a", Some("r2"), "approved", Some("h4")),
            ),
            signed(&signer, 8),
        ])
        .await
        .unwrap();
    assert_eq!(entries[1].seq, entries[0].seq + 1);
    for row in [
        step("rcpt_a", None, "expired", None),
        step("rcpt_a", Some("r3"), "pending_approval", Some("h5")),
    ] {
        let e = ledger
            .append_unit(vec![with_row(&signer, 10, row)])
            .await
            .unwrap_err();
        assert!(refused(e.clone()), "{e}");
    }
    let record = ledger.approval("rcpt_a").await.unwrap().unwrap();
    assert_eq!(record.status(), tollgate_protocol::Status::Approved);
    assert_eq!(
        record
            .steps
            .iter()
            .map(|s| s.reviewer.clone().unwrap())
            .collect::<Vec<_>>(),
        ["r1", "r2"]
    );
    assert!(ledger.approvals(true, 0, 10).await.unwrap().is_empty());
    assert!(ledger.approvals_due(5_000, 10).await.unwrap().is_empty());
    assert_eq!(ledger.approvals(false, 0, 10).await.unwrap().len(), 1);
    assert_eq!(ledger.head().await.unwrap().seq, head + 3);
}

/// `n`'s step on `approval`, decided on `steps` recorded steps.
fn guarded_step(
    signer: &Ed25519Signer,
    n: u64,
    registry_seq: u64,
    row: ApprovalRow,
    steps: u64,
) -> Append {
    let ApprovalRow::Step { approval, .. } = &row else {
        panic!("a step")
    };
    let mut a = with_row(signer, n, row.clone());
    a.guard = Some(Guard {
        registry_seq,
        entity: None,
        budgets: Vec::new(),
        approval: Some(tollgate_ledger::ApprovalRead {
            approval: approval.clone(),
            steps,
            reviewer: None,
        }),
    });
    a
}

async fn steps_of_one_approval_are_serialized_by_the_steps_they_read<B: Backend>(b: &mut B) {
    let name = b.create();
    let ledger = b.open(&name).await;
    let signer = signer();
    let open = ApprovalRow::Open {
        id: "rcpt_a".into(),
        deadline: 1_000,
        body: b"{}".to_vec(),
    };
    ledger
        .append_unit(vec![with_row(&signer, 1, open)])
        .await
        .unwrap();
    // Two grants decided on no step race: one is appended, the other is
    // stale (whether they meet in one group or not).
    let grant = |n: u64, r: &str| {
        let row = step("rcpt_a", Some(r), "pending_approval", Some(r));
        guarded_step(&signer, n, 0, row, 0)
    };
    let (x, y) = tokio::join!(
        ledger.append_unit(vec![grant(2, "r1")]),
        ledger.append_unit(vec![grant(3, "r2")])
    );
    let stale = |e: &Error| {
        matches!(
            e,
            Error::Stale(Staleness::Approval {
                seen: 0,
                recorded: 1,
                ..
            })
        )
    };
    assert!(
        x.is_ok() != y.is_ok() && [&x, &y].iter().all(|r| r.as_ref().err().is_none_or(stale)),
        "{x:?} {y:?}"
    );
    assert_eq!(
        ledger
            .approval("rcpt_a")
            .await
            .unwrap()
            .unwrap()
            .steps
            .len(),
        1
    );
    // Decided again on one step, it is appended.
    ledger
        .append_unit(vec![guarded_step(
            &signer,
            4,
            0,
            step("rcpt_a", Some("r3"), "pending_approval", Some("r3")),
            1,
        )])
        .await
        .unwrap();
    // While the approval's execution is reserved, no step is appended on
    // what it read, and a reservation of it again is refused.
    let read = |steps| Guard {
        registry_seq: 0,
        entity: None,
        budgets: Vec::new(),
        approval: Some(tollgate_ledger::ApprovalRead {
            approval: "rcpt_a".into(),
            steps,
            reviewer: Some("r4".into()),
        }),
    };
    let key = "execution:rcpt_a";
    ledger
        .reserve_holding(key, b"{}", Some(read(2)), Vec::new())
        .await
        .unwrap();
    let e = ledger
        .append_unit(vec![guarded_step(
            &signer,
            5,
            0,
            step("rcpt_a", Some("r4"), "approved", Some("r4")),
            2,
        )])
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::Stale(Staleness::Executing(a)) if a == "rcpt_a"),
        "{e}"
    );
    let e = ledger
        .reserve_holding(key, b"{}", Some(read(2)), Vec::new())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Stale(Staleness::Executing(_))), "{e}");
    // The completing unit after the reservation is not checked again.
    let mut done = with_row(
        &signer,
        6,
        step("rcpt_a", Some("r5"), "approved", Some("r5")),
    );
    done.idempotency_key = None;
    let mut exec = signed(&signer, 7);
    exec.idempotency_key = Some(key.into());
    ledger.append_unit(vec![done, exec]).await.unwrap();
    assert!(ledger.pending().await.unwrap().is_empty());
    assert_eq!(
        ledger
            .approval("rcpt_a")
            .await
            .unwrap()
            .unwrap()
            .steps
            .len(),
        3
    );
}

fn register(signer: &Ed25519Signer, n: u64, id: &str, kid: &str) -> RegistryAppend {
    registry_item(
        signer,
        n,
        RegistryChange::ReviewerRegister {
            id: id.into(),
            kid: kid.into(),
            reviewer: format!("{{\"id\":\"{id}\"}}").into_bytes(),
        },
    )
}

fn revoke(signer: &Ed25519Signer, n: u64, id: &str) -> RegistryAppend {
    registry_item(signer, n, RegistryChange::ReviewerRevoke { id: id.into() })
}

async fn a_revocation_withdraws_pending_grants_and_a_key_is_one_reviewers<B: Backend>(b: &mut B) {
    let name = b.create();
    let ledger = b.open(&name).await;
    let signer = signer();
    let conflict = |e: Error| matches!(e, Error::RegistryConflict(_));
    ledger
        .append_registry(vec![register(&signer, 1, "r1", "k1")], false)
        .await
        .unwrap();
    // A second id for a registered key is refused by the tables.
    let e = ledger
        .append_registry(vec![register(&signer, 2, "r2", "k1")], false)
        .await
        .unwrap_err();
    assert!(conflict(e.clone()), "{e}");
    ledger
        .append_registry(vec![register(&signer, 3, "r2", "k2")], false)
        .await
        .unwrap();
    // r1 grants on a and b; b then ends with r2's grant.
    for (n, id) in [(10, "rcpt_a"), (11, "rcpt_b")] {
        let open = ApprovalRow::Open {
            id: id.into(),
            deadline: 1_000,
            body: b"{}".to_vec(),
        };
        ledger
            .append_unit(vec![with_row(&signer, n, open)])
            .await
            .unwrap();
        let h = format!("{id}-r1");
        ledger
            .append_unit(vec![with_row(
                &signer,
                n + 10,
                step(id, Some("r1"), "pending_approval", Some(&h)),
            )])
            .await
            .unwrap();
    }
    ledger
        .append_unit(vec![with_row(
            &signer,
            30,
            step("rcpt_b", Some("r2"), "approved", Some("b-r2")),
        )])
        .await
        .unwrap();
    // Revoking r1 withdraws its grant on a (pending), not on b (ended),
    // in the revocation's transaction.
    let entries = ledger
        .append_registry(vec![revoke(&signer, 4, "r1")], false)
        .await
        .unwrap();
    let revocation = entries[0]
        .receipt()
        .as_object()
        .and_then(|o| o.get("receipt_id"))
        .and_then(Value::as_str)
        .unwrap()
        .to_owned();
    let a = ledger.approval("rcpt_a").await.unwrap().unwrap();
    assert_eq!(
        a.steps[0].withdrawn_by.as_deref(),
        Some(revocation.as_str())
    );
    let b_steps = ledger.approval("rcpt_b").await.unwrap().unwrap().steps;
    assert!(b_steps.iter().all(|s| s.withdrawn_by.is_none()));
    // A revoked reviewer's key stays theirs.
    let e = ledger
        .append_registry(vec![register(&signer, 5, "r3", "k1")], false)
        .await
        .unwrap_err();
    assert!(conflict(e.clone()), "{e}");
    // Opened again, the ledger finds every withdrawal recorded (what it
    // adds to a ledger written before withdrawals were is what the
    // revocations withdrew): none more, none less.
    let before = withdrawals(&ledger, &["rcpt_a", "rcpt_b"]).await;
    assert_eq!(before[0], [Some(revocation.clone())]);
    drop(ledger);
    let again = b.open(&name).await;
    assert_eq!(withdrawals(&again, &["rcpt_a", "rcpt_b"]).await, before);
}

async fn a_revocation_waits_for_the_execution_of_a_quorum_the_reviewer_is_in<B: Backend>(
    b: &mut B,
) {
    let name = b.create();
    let ledger = b.open(&name).await;
    let signer = signer();
    // While the execution of c's quorum (r2's grant, r4's completing one)
    // is reserved, neither r2 nor r4 is revoked; r5, in no such quorum, is.
    for (n, id, kid) in [(3, "r2", "k2"), (8, "r4", "k4"), (9, "r5", "k5")] {
        ledger
            .append_registry(vec![register(&signer, n, id, kid)], false)
            .await
            .unwrap();
    }
    let open = ApprovalRow::Open {
        id: "rcpt_c".into(),
        deadline: 1_000,
        body: b"{}".to_vec(),
    };
    ledger
        .append_unit(vec![with_row(&signer, 40, open)])
        .await
        .unwrap();
    let r2 = step("rcpt_c", Some("r2"), "pending_approval", Some("c-r2"));
    ledger
        .append_unit(vec![with_row(&signer, 41, r2)])
        .await
        .unwrap();
    let on_c = Guard {
        registry_seq: ledger.registry_seq().await.unwrap(),
        entity: None,
        budgets: Vec::new(),
        approval: Some(tollgate_ledger::ApprovalRead {
            approval: "rcpt_c".into(),
            steps: 1,
            reviewer: Some("r4".into()),
        }),
    };
    ledger
        .reserve_holding("execution:rcpt_c", b"{}", Some(on_c), Vec::new())
        .await
        .unwrap();
    let head = ledger.head().await.unwrap().seq;
    for (n, id) in [(12, "r2"), (13, "r4")] {
        let e = ledger
            .append_registry(vec![revoke(&signer, n, id)], false)
            .await
            .unwrap_err();
        assert!(
            matches!(&e, Error::Stale(Staleness::Executing(a)) if a == "rcpt_c"),
            "{id}: {e}"
        );
    }
    assert_eq!(ledger.head().await.unwrap().seq, head);
    ledger
        .append_registry(vec![revoke(&signer, 14, "r5")], false)
        .await
        .unwrap();
    ledger.release("execution:rcpt_c").await.unwrap();
    ledger
        .append_registry(vec![revoke(&signer, 15, "r2")], false)
        .await
        .unwrap();
}

/// Each step of each approval: the revocation that withdrew it, if any.
async fn withdrawals(ledger: &impl Ledger, ids: &[&str]) -> Vec<Vec<Option<String>>> {
    let mut out = Vec::new();
    for id in ids {
        let steps = ledger.approval(id).await.unwrap().unwrap().steps;
        out.push(steps.into_iter().map(|s| s.withdrawn_by).collect());
    }
    out
}

async fn each_entry_writes_its_events_with_it<B: Backend>(b: &mut B) {
    let name = b.create();
    let ledger = b.open(&name).await;
    let signer = signer();
    let decision = |n: u64, verdict: &str, status: &str| {
        let mut o = crate::receipt(n).as_object().unwrap().clone();
        o.remove("receipt_id");
        let mut d = Object::new();
        d.insert("verdict", verdict.into());
        o.insert("decision", d.into());
        let mut out = Object::new();
        out.insert("status", status.into());
        out.insert("target", "http".into());
        o.insert("outcome", out.into());
        let r = Value::Object(seal_receipt(o));
        let s = signer.sign_now(Domain::Receipt, &r);
        (r, s)
    };
    let (r, s) = decision(1, "pass", "committed");
    ledger
        .append(r.clone(), s.clone(), Some("k1"))
        .await
        .unwrap();
    let (r2, s2) = decision(2, "escalate", "pending_approval");
    ledger.append(r2, s2, None).await.unwrap();
    let events = ledger.outbox_after(0, 100).await.unwrap();
    let got: Vec<(u64, &str)> = events
        .iter()
        .map(|e| (e.seq, e.event_type.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (1, "decision.passed"),
            (1, "commit.committed"),
            (2, "decision.escalated"),
            (2, "approval.opened")
        ]
    );
    assert!(events.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(ledger.outbox_last().await.unwrap(), events[3].id);
    assert_eq!(
        ledger.outbox_first_from(2).await.unwrap(),
        Some(events[2].id)
    );
    assert_eq!(
        ledger.outbox_event(events[1].id).await.unwrap().unwrap(),
        events[1]
    );
    // A refused append writes no event.
    assert!(matches!(
        ledger.append(r, s, Some("k1")).await,
        Err(Error::DuplicateReceipt(_) | Error::DuplicateKey(_))
    ));
    assert_eq!(ledger.outbox_after(0, 100).await.unwrap().len(), 4);
}

async fn reservations_last_until_their_entry_is_appended<B: Backend>(b: &mut B) {
    let name = b.create();
    let signer = signer();
    {
        let ledger = b.open(&name).await;
        ledger.reserve("agent-7:int-1", b"body one").await.unwrap();
        ledger.reserve("agent-7:int-2", b"body two").await.unwrap();
        ledger.reserve("agent-7:int-1", b"ignored").await.unwrap();
        let a = signed(&signer, 1);
        ledger
            .append(a.receipt, a.signature, Some("agent-7:int-2"))
            .await
            .unwrap();
        ledger.probe().await.unwrap();
    }
    // Opened again, what was started and never recorded is listed.
    let ledger = b.open(&name).await;
    assert_eq!(
        ledger.pending().await.unwrap(),
        vec![("agent-7:int-1".to_owned(), b"body one".to_vec())]
    );
    ledger.release("agent-7:int-1").await.unwrap();
    assert!(ledger.pending().await.unwrap().is_empty());
    assert_eq!(
        ledger
            .line_by_idempotency_key("agent-7:int-2")
            .await
            .unwrap()
            .unwrap(),
        ledger.get(1).await.unwrap().unwrap().to_canonical()
    );
}

/// An entry may open a reservation in its own transaction (a commit whose
/// outcome is unknown): it holds its charges, for every handle, until the
/// entry of its key is appended.
async fn an_entry_opens_a_reservation_that_the_entry_of_its_key_ends<B: Backend>(b: &mut B) {
    let name = b.create();
    let signer = signer();
    let one = b.open(&name).await;
    let two = b.open(&name).await;
    for n in [1, 3] {
        let key = format!("reconcile:r-{n}");
        let mut a = signed(&signer, n);
        a.reserve = Some(tollgate_ledger::Reservation {
            key: key.clone(),
            body: b"what to resend".to_vec(),
            charges: vec![charge(40)],
        });
        one.append_unit(vec![a]).await.unwrap();
        assert_eq!(
            one.pending().await.unwrap(),
            vec![(key.clone(), b"what to resend".to_vec())]
        );
        assert_eq!(
            two.held(now()).await.unwrap(),
            vec![(key.clone(), charge(40))]
        );
        let mut end = signed(&signer, n + 1);
        end.idempotency_key = Some(key.clone());
        end.spend = vec![charge(40)];
        one.append_unit(vec![end]).await.unwrap();
        assert!(
            two.pending().await.unwrap().is_empty(),
            "ended by {}",
            n + 1
        );
        assert!(two.held(now()).await.unwrap().is_empty());
    }
    assert_eq!(one.spending(now()).await.unwrap(), vec![charge(80)]);
}

async fn spending_sums_per_window_and_webhook_state_round_trips<B: Backend>(b: &mut B) {
    let name = b.create();
    let ledger = b.open(&name).await;
    let signer = signer();
    let spend = |window_start: i64, amount_minor: i64| Spend {
        delegation: "d-1".into(),
        currency: "EUR".into(),
        window_start,
        window_seconds: 100,
        amount_minor,
    };
    for (n, s) in [(1, spend(0, 500)), (2, spend(0, 250)), (3, spend(100, 40))] {
        let a = signed(&signer, n);
        ledger
            .append_spending(a.receipt, a.signature, None, vec![s])
            .await
            .unwrap();
    }
    // At 50 both windows are open; at 150 only the second.
    assert_eq!(
        ledger.spending(50).await.unwrap(),
        vec![spend(0, 750), spend(100, 40)]
    );
    assert_eq!(ledger.spending(150).await.unwrap(), vec![spend(100, 40)]);
    // An endpoint changes with its registry receipt, and only if it is
    // there to change.
    let disable = |n| {
        registry_item(
            &signer,
            n,
            RegistryChange::WebhookDisable {
                id: "wh_1".into(),
                reason: "410 Gone".into(),
            },
        )
    };
    let head = ledger.head().await.unwrap();
    assert!(matches!(
        ledger.append_registry(vec![disable(1)], false).await,
        Err(tollgate_ledger::Error::RegistryConflict(_))
    ));
    assert_eq!(ledger.head().await.unwrap(), head);
    let add = RegistryChange::WebhookAdd {
        id: "wh_1".into(),
        config: b"{}".to_vec(),
        secrets: b"[]".to_vec(),
        cursor: 3,
    };
    ledger
        .append_registry(vec![registry_item(&signer, 2, add)], false)
        .await
        .unwrap();
    ledger
        .webhook_write(vec![WebhookOp::Redeliver {
            endpoint: "wh_1".into(),
            event: 2,
        }])
        .await
        .unwrap();
    ledger
        .webhook_write(vec![
            WebhookOp::AdvanceCursor {
                id: "wh_1".into(),
                from: 3,
                to: 5,
            },
            // A move from a cursor that is not current changes nothing.
            WebhookOp::AdvanceCursor {
                id: "wh_1".into(),
                from: 3,
                to: 9,
            },
        ])
        .await
        .unwrap();
    ledger
        .append_registry(vec![disable(3)], false)
        .await
        .unwrap();
    let endpoints = ledger.webhook_endpoints().await.unwrap();
    assert_eq!(endpoints.len(), 1);
    assert_eq!(endpoints[0].cursor, 5);
    assert!(!endpoints[0].enabled);
    assert_eq!(endpoints[0].disabled_reason.as_deref(), Some("410 Gone"));
    assert_eq!(ledger.webhook_redeliveries("wh_1").await.unwrap(), [2]);
    ledger
        .webhook_write(vec![WebhookOp::Redelivered {
            endpoint: "wh_1".into(),
            event: 2,
        }])
        .await
        .unwrap();
    assert!(
        ledger
            .webhook_redeliveries("wh_1")
            .await
            .unwrap()
            .is_empty()
    );
}

/// A window that has not ended for a century.
const LONG: i64 = 3_155_760_000;

fn charge(amount_minor: i64) -> Spend {
    Spend {
        delegation: "d-1".into(),
        currency: "EUR".into(),
        window_start: 0,
        window_seconds: LONG,
        amount_minor,
    }
}

fn read(spent: i64) -> BudgetRead {
    BudgetRead {
        delegation: "d-1".into(),
        currency: "EUR".into(),
        window_start: 0,
        spent,
        limit: 1000,
    }
}

fn guarded(
    signer: &Ed25519Signer,
    n: u64,
    registry_seq: u64,
    budgets: Vec<BudgetRead>,
    spend: Vec<Spend>,
) -> Append {
    let mut a = signed(signer, n);
    a.guard = Some(Guard {
        registry_seq,
        entity: None,
        budgets,
        approval: None,
    });
    a.spend = spend;
    a
}

/// Seconds since the epoch, for listing open windows.
fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The guard (what a decision read) is checked in the appending
/// transaction, across two handles on one store as across two servers.
async fn guards_refuse_decisions_made_on_state_changed_since<B: Backend>(b: &mut B) {
    let name = b.create();
    let one = b.open(&name).await;
    let two = b.open(&name).await;
    let signer = signer();
    let publish = |n: u64, v: &str| {
        registry_item(
            &signer,
            n,
            RegistryChange::PolicyPublish {
                version: v.into(),
                files: b"{}".to_vec(),
            },
        )
    };
    one.append_registry(vec![publish(1, "p@1.0.0")], true)
        .await
        .unwrap();
    assert_eq!(two.registry().await.unwrap().seq, 1);
    two.append_unit(vec![guarded(&signer, 2, 1, vec![], vec![])])
        .await
        .unwrap();
    // A registry change through the other handle, checked against the
    // current view: recorded, and the registry seq moves to it.
    one.append_registry_after(vec![publish(3, "p@1.1.0")], false, Some(1))
        .await
        .unwrap();
    assert_eq!(two.registry().await.unwrap().seq, 3);
    // A decision on the old view appends nothing.
    let head = two.head().await.unwrap();
    assert_eq!(
        two.append_unit(vec![guarded(&signer, 4, 1, vec![], vec![])])
            .await
            .unwrap_err(),
        Error::Stale(Staleness::Registry {
            seen: 1,
            current: 3
        })
    );
    // Nor does a registry change checked against it.
    assert!(matches!(
        two.append_registry_after(vec![publish(5, "p@2.0.0")], false, Some(1))
            .await
            .unwrap_err(),
        Error::Stale(Staleness::Registry { seen: 1, .. })
    ));
    assert_eq!(two.head().await.unwrap(), head);
    assert_eq!(two.registry().await.unwrap().policies.len(), 2);

    // Budgets: 1000 EUR for d-1. 600 committed by a decision that read 0.
    one.append_unit(vec![guarded(
        &signer,
        6,
        3,
        vec![read(0)],
        vec![charge(600)],
    )])
    .await
    .unwrap();
    // A decision that read 0 did not see them.
    assert_eq!(
        two.append_unit(vec![guarded(&signer, 7, 3, vec![read(0)], vec![])])
            .await
            .unwrap_err(),
        Error::Stale(Staleness::Spending {
            delegation: "d-1".into(),
            currency: "EUR".into(),
            read: 0,
            recorded: 600
        })
    );
    // One that saw them may not charge past the budget.
    assert_eq!(
        two.append_unit(vec![guarded(
            &signer,
            8,
            3,
            vec![read(600)],
            vec![charge(401)]
        )])
        .await
        .unwrap_err(),
        Error::Stale(Staleness::OverBudget {
            delegation: "d-1".into(),
            currency: "EUR".into(),
            limit: 1000,
            committed: 600,
            held: 0,
            charge: 401
        })
    );
    // A reservation holds 300, seen through the other handle; what it
    // holds counts against every later charge.
    one.reserve_holding(
        "agent-1/k-1",
        b"draft",
        Some(Guard {
            registry_seq: 3,
            entity: None,
            budgets: vec![read(600)],
            approval: None,
        }),
        vec![charge(300)],
    )
    .await
    .unwrap();
    assert_eq!(
        two.held(now()).await.unwrap(),
        vec![("agent-1/k-1".to_owned(), charge(300))]
    );
    two.append_unit(vec![guarded(
        &signer,
        9,
        3,
        vec![read(600)],
        vec![charge(100)],
    )])
    .await
    .unwrap();
    assert!(matches!(
        two.append_unit(vec![guarded(
            &signer,
            10,
            3,
            vec![read(700)],
            vec![charge(1)]
        )])
        .await
        .unwrap_err(),
        Error::Stale(Staleness::OverBudget {
            committed: 700,
            held: 300,
            ..
        })
    ));
    // A reservation over the budget is refused as well, and holds nothing.
    assert!(matches!(
        two.reserve_holding(
            "agent-1/k-2",
            b"draft",
            Some(Guard {
                registry_seq: 3,
                entity: None,
                budgets: vec![read(700)],
                approval: None,
            }),
            vec![charge(1)],
        )
        .await
        .unwrap_err(),
        Error::Stale(Staleness::OverBudget { .. })
    ));
    assert_eq!(two.pending().await.unwrap().len(), 1);
    // The reservation's entry (checked when it was reserved, not again)
    // turns the hold into spending, in one transaction.
    let mut done = signed(&signer, 11);
    done.idempotency_key = Some("agent-1/k-1".into());
    done.spend = vec![charge(300)];
    one.append_unit(vec![done]).await.unwrap();
    assert!(two.held(now()).await.unwrap().is_empty());
    assert_eq!(two.spending(now()).await.unwrap(), vec![charge(1000)]);
    // A released reservation holds nothing.
    two.reserve_holding("agent-1/k-3", b"draft", None, vec![charge(7)])
        .await
        .unwrap();
    assert_eq!(one.held(now()).await.unwrap().len(), 1);
    one.release("agent-1/k-3").await.unwrap();
    assert!(two.held(now()).await.unwrap().is_empty());
    let keys = key_set([&signer]);
    assert_eq!(verified(&one, &keys).await, 6);
}

/// 24 tasks over two handles race to charge 100 each against a budget of
/// 1000, each reading the spending, charging, and on a stale answer
/// reading again: exactly 10 commit, and the budget is never exceeded.
async fn a_budget_holds_under_racing_appends_through_two_handles<B: Backend>(b: &mut B) {
    let name = b.create();
    let one = std::sync::Arc::new(b.open(&name).await);
    let two = std::sync::Arc::new(b.open(&name).await);
    let signer = signer();
    let mut tasks = Vec::new();
    for n in 0..24u64 {
        let signer = self::signer();
        let (one, two) = (one.clone(), two.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..100 {
                let spent = |rows: Vec<Spend>| rows.first().map_or(0, |s| s.amount_minor);
                let seen = if n % 2 == 0 {
                    spent(one.spending(now()).await.unwrap())
                } else {
                    spent(two.spending(now()).await.unwrap())
                };
                if seen + 100 > 1000 {
                    return false;
                }
                let a = guarded(&signer, 100 + n, 0, vec![read(seen)], vec![charge(100)]);
                let r = if n % 2 == 0 {
                    one.append_unit(vec![a]).await
                } else {
                    two.append_unit(vec![a]).await
                };
                match r {
                    Ok(_) => return true,
                    Err(Error::Stale(_)) => continue,
                    Err(e) => panic!("{e}"),
                }
            }
            panic!("task {n} never got an answer that was not stale");
        }));
    }
    let mut committed = 0;
    for t in tasks {
        committed += usize::from(t.await.unwrap());
    }
    assert_eq!(committed, 10);
    assert_eq!(one.spending(now()).await.unwrap(), vec![charge(1000)]);
    assert_eq!(verified(&*two, &key_set([&signer])).await, 10);
}

/// RFC 6962 §2.1's Merkle Tree Hash, written from the RFC alone.
fn mth(leaves: &[Vec<u8>]) -> [u8; 32] {
    use sha2::Digest as _;
    match leaves.len() {
        0 => sha2::Sha256::digest(b"").into(),
        1 => {
            let mut h = sha2::Sha256::new();
            h.update([0u8]);
            h.update(&leaves[0]);
            h.finalize().into()
        }
        n => {
            let mut k = 1;
            while k * 2 < n {
                k *= 2;
            }
            let mut h = sha2::Sha256::new();
            h.update([1u8]);
            h.update(mth(&leaves[..k]));
            h.update(mth(&leaves[k..]));
            h.finalize().into()
        }
    }
}

/// The stored tree grows only over durable entries, two servers growing
/// it at once agree, and every root is RFC 6962's over the export lines.
async fn the_tree_covers_durable_entries_and_its_roots_are_rfc_6962<B: Backend>(b: &mut B) {
    let name = b.create();
    let one = b.open(&name).await;
    let two = b.open(&name).await;
    let signer = signer();
    let mut n = 0;
    for unit in [1usize, 2, 5, 1, 13, 7, 32, 9] {
        let items = (0..unit)
            .map(|_| {
                n += 1;
                signed(&signer, 500 + n)
            })
            .collect();
        one.append_unit(items).await.unwrap();
    }
    assert_eq!(one.tree_size().await.unwrap(), 0);
    assert!(tollgate_ledger::tree::root(&one, 1).await.is_err());
    // Both grow it at once: one transaction wins, the other finds it grown.
    let (a, b2) = tokio::join!(
        tollgate_ledger::tree::grow(&one),
        tollgate_ledger::tree::grow(&two)
    );
    assert_eq!((a.unwrap(), b2.unwrap()), (70, 70));
    let lines = one.lines(1, 1000).await.unwrap();
    for size in 0..=70usize {
        assert_eq!(
            tollgate_ledger::tree::root(&two, size as u64)
                .await
                .unwrap(),
            mth(&lines[..size]),
            "root of {size}"
        );
    }
    // More entries: the tree grows over them, earlier roots unchanged.
    for i in 0..5 {
        one.append_unit(vec![signed(&signer, 900 + i)])
            .await
            .unwrap();
    }
    assert_eq!(tollgate_ledger::tree::grow(&two).await.unwrap(), 75);
    let lines = one.lines(1, 1000).await.unwrap();
    for size in [1usize, 64, 70, 71, 75] {
        assert_eq!(
            tollgate_ledger::tree::root(&one, size as u64)
                .await
                .unwrap(),
            mth(&lines[..size])
        );
    }
    // A grower that read a stale size records nothing.
    assert!(!one.extend_tree(70, 71, vec![(0, [0; 32])]).await.unwrap());
    assert_eq!(one.tree_size().await.unwrap(), 75);
}

async fn the_origin_is_recorded_once_and_checkpoints_only_grow<B: Backend>(b: &mut B) {
    let name = b.create();
    let one = b.open(&name).await;
    let two = b.open(&name).await;
    // Read alone, nothing is recorded; the first proposal is kept.
    assert_eq!(one.origin(None).await.unwrap(), None);
    let (a, c) = tokio::join!(
        one.origin(Some("example.com/a")),
        two.origin(Some("example.com/b"))
    );
    let (a, c) = (a.unwrap().unwrap(), c.unwrap().unwrap());
    assert_eq!(a, c, "two servers starting at once agree on one origin");
    assert_eq!(two.origin(None).await.unwrap(), Some(a.clone()));
    assert_eq!(one.origin(Some("example.com/z")).await.unwrap(), Some(a));

    assert_eq!(one.checkpoint().await.unwrap(), None);
    assert!(one.put_checkpoint(5, "five".into()).await.unwrap());
    // A checkpoint no larger than the latest is not recorded.
    assert!(!two.put_checkpoint(5, "other five".into()).await.unwrap());
    assert!(!two.put_checkpoint(3, "three".into()).await.unwrap());
    assert!(two.put_checkpoint(8, "eight".into()).await.unwrap());
    assert_eq!(
        one.checkpoint().await.unwrap(),
        Some((8, "eight".to_owned()))
    );
}
