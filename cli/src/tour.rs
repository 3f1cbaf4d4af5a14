//! `tollgate tour`: a narrated walk through a running gateway, with the
//! demo material of its data folder.

use tollgate_gateway::datadir::Layout;
use tollgate_gateway::demo;

use tollgate_client::Client;
use tollgate_protocol::{ApprovalVerdict, Domain, Object, Value};
use tollgate_signer::Ed25519Signer;

use crate::agent::{export, now};
use crate::approvals::post_decision;
use crate::error::CliError;

fn field<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.as_object()?.get(k))
}

/// `tollgate tour`: a narrated walk through a running gateway, with the
/// demo material of its data folder.
pub fn tour(url: &str, data: &Layout) -> Result<String, CliError> {
    let agent_key = Ed25519Signer::load(&data.demo("agent.jwk")).map_err(|e| {
        CliError::Usage(format!(
            "{e} (run the tour with the data folder of the running gateway: --data-dir)"
        ))
    })?;
    let issuer = Ed25519Signer::load(&data.demo("issuer.jwk"))
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let admin_token = std::fs::read_to_string(data.admin_token())
        .map_err(|e| CliError::Usage(format!("{}: {e}", data.admin_token().display())))?;
    let client = Client::new(url).with_admin_token(&admin_token);
    let run = now().unix_seconds();
    let mut failures = Vec::new();
    let intent = |n: &str, delegation: &str, resource: &str, amount: i64| {
        let payload = demo::intent(&format!("tour-{run}-{n}"), resource, amount)
            .member("delegation", delegation)
            .issued_at(&now())
            .into_value();
        match payload {
            Value::Object(o) => o,
            _ => Object::new(),
        }
    };
    let step = |failures: &mut Vec<String>,
                title: &str,
                payload: Object,
                want: &str|
     -> Result<Option<(String, String)>, CliError> {
        println!("\n{title}");
        let env = agent_key.envelope(Domain::Intent, Value::Object(payload));
        let got = client.submit(env.to_string().as_bytes(), None)?;
        let status = got.status;
        let answer = got.json()?;
        if status == 200 {
            let verdict = field(&answer, &["receipt", "decision", "verdict"])
                .and_then(Value::as_str)
                .unwrap_or("?");
            let rid = field(&answer, &["receipt", "receipt_id"])
                .and_then(Value::as_str)
                .unwrap_or("?");
            let seq = field(&answer, &["seq"])
                .map(ToString::to_string)
                .unwrap_or_default();
            let policy = field(&answer, &["receipt", "policy_version"])
                .and_then(Value::as_str)
                .unwrap_or("?");
            let name = policy.split('@').next().unwrap_or(policy);
            println!(
                "  → {} (receipt {rid}, ledger seq {seq}, decided by the {name} policy)",
                verdict.to_uppercase()
            );
            if let Some(Value::Array(rules)) = field(&answer, &["receipt", "decision", "rules"]) {
                for r in rules {
                    let reason = field(r, &["reason"]).and_then(Value::as_str).unwrap_or("");
                    println!(
                        "    {}: {reason}",
                        field(r, &["id"]).and_then(Value::as_str).unwrap_or("")
                    );
                }
            }
            if verdict != want {
                failures.push(format!("{title}: expected {want}, got {verdict}"));
            }
            return Ok(Some((rid.to_owned(), policy.to_owned())));
        } else {
            let detail = field(&answer, &["detail"])
                .and_then(Value::as_str)
                .unwrap_or("");
            println!("  → refused, HTTP {status}: {detail}");
            if want != "refused" {
                failures.push(format!("{title}: expected {want}, got HTTP {status}"));
            }
        }
        Ok(None)
    };
    println!("Tollgate tour against {url}: agent-demo refunds orders under delegation dlg_demo.");
    step(
        &mut failures,
        "1. A small refund of a paid order: 25.00 EUR on order o-1001.",
        intent("small", demo::DELEGATION, demo::PAID, 2500),
        "pass",
    )?;
    let large = step(
        &mut failures,
        "2. A large refund: 999.00 EUR on order o-1002 waits for a reviewer.",
        intent("large", demo::DELEGATION, demo::PAID_SILVER, 99_900),
        "escalate",
    )?;
    step(
        &mut failures,
        "3. A refund of an unpaid order (o-1003) is blocked.",
        intent("unpaid", demo::DELEGATION, demo::UNPAID, 2500),
        "block",
    )?;

    // A fresh delegation, registered, used, revoked, refused.
    let id = format!("dlg_tour_{run}");
    let p = demo::token(&id, tollgate_signer::Signer::jwk(&agent_key).to_value())
        .resources(&[demo::PAID])
        .into_value();
    let env = issuer.envelope(Domain::Delegation, p);
    println!("\n4. The issuer registers delegation {id} (order o-1001 only), then revokes it.");
    let expect = |failures: &mut Vec<String>, what: &str, got: tollgate_client::Answer, want| {
        if got.status != want {
            failures.push(format!("{what} {id}: HTTP {}: {}", got.status, got.text()));
        }
    };
    let got = client.register_delegation(env.to_string().as_bytes())?;
    expect(&mut failures, "registering", got, 201);
    step(
        &mut failures,
        "   Under the new delegation, 10.00 EUR on o-1001:",
        intent("fresh", &id, demo::PAID, 1000),
        "pass",
    )?;
    let got = client.revoke_delegation(&id)?;
    expect(&mut failures, "revoking", got, 200);
    step(
        &mut failures,
        "   Revoked; the very next intent under it:",
        intent("revoked", &id, demo::PAID, 1000),
        "refused",
    )?;

    // A second domain: deploys, governed by their own policy.
    let deploy = demo::deploy(&format!("tour-{run}-deploy"), demo::STAGING, "2.4.1", 2)
        .issued_at(&now())
        .into_value();
    let deploy = match deploy {
        Value::Object(o) => o,
        _ => Object::new(),
    };
    let decided = step(
        &mut failures,
        "5. A deploy of service:api to staging (2 replicas), under delegation dlg_deploys: the deploys policy governs deploys.create and decides it, beside refunds.",
        deploy,
        "pass",
    )?;
    if let Some((_, policy)) = decided
        && !policy.starts_with("deploys@")
    {
        failures.push(format!(
            "the deploy was decided by {policy}, not by the deploys policy"
        ));
    }
    step(
        &mut failures,
        "   Refunds keep their own policy: 12.00 EUR on o-1001:",
        intent("after-deploy", demo::DELEGATION, demo::PAID, 1200),
        "pass",
    )?;

    approvals_chapter(
        &client,
        data,
        &mut failures,
        large.map(|(rid, _)| rid),
        &|n, resource, amount, ago| {
            let mut p = intent(n, demo::DELEGATION, resource, amount);
            p.insert(
                "issued_at",
                tollgate_protocol::Timestamp::from_unix(now().unix_seconds() - ago, 0)
                    .as_str()
                    .into(),
            );
            let env = agent_key.envelope(Domain::Intent, Value::Object(p));
            let got = client
                .submit(env.to_string().as_bytes(), None)?
                .ok()?
                .json()?;
            Ok(field(&got, &["receipt", "receipt_id"])
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned())
        },
        run,
    )?;

    entities_chapter(
        &client,
        data,
        &mut failures,
        run,
        &mut |failures, title, n, order, amount, want| {
            step(
                failures,
                title,
                intent(n, demo::DELEGATION, order, amount),
                want,
            )
            .map(|_| ())
        },
    )?;

    leases_chapter(&client, &issuer, &agent_key, &mut failures, run)?;

    // The auditor's view.
    let out = data.root().join("tour-export.jsonl");
    println!("\n11. Export the ledger and verify it offline, as an auditor would.");
    let said = export(url, &out)?;
    let bytes = std::fs::read(&out).map_err(|e| CliError::Usage(e.to_string()))?;
    let keys_bytes = std::fs::read(out.with_extension("jwks.json"))
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let keys = tollgate_protocol::KeySet::parse(&keys_bytes)
        .map_err(|e| CliError::Invalid(e.to_string()))?;
    let lines: Vec<&[u8]> = bytes
        .strip_suffix(b"\n")
        .unwrap_or(&bytes)
        .split(|b| *b == b'\n')
        .collect();
    let mut v = tollgate_protocol::ChainVerifier::new(Some(&keys));
    match v.verify_lines(&lines) {
        Ok(()) => println!(
            "  → {} entries verified; head {}",
            v.verified(),
            v.head().map(|h| h.to_string()).unwrap_or_default()
        ),
        Err(f) => failures.push(format!("the export does not verify: {f}")),
    }
    println!("  {}", said.replace('\n', "\n  "));
    if let Err(e) = checkpoint_chapter(&client, &lines) {
        failures.push(e);
    }
    if failures.is_empty() {
        Ok("\nTour complete.".into())
    } else {
        Err(CliError::Invalid(format!("tour: {}", failures.join("; "))))
    }
}

/// Chapter 10: leases. A deploy agent takes service:api exclusively; a
/// younger migration agent dies and comes back later; an older one waits,
/// and is granted when the deploy agent releases; meanwhile the demo
/// agent's deploy of the leased service is blocked.
fn leases_chapter(
    client: &Client,
    issuer: &Ed25519Signer,
    demo_agent: &Ed25519Signer,
    failures: &mut Vec<String>,
    run: i64,
) -> Result<(), CliError> {
    use tollgate_protocol::{LeaseOp, LeaseRequest, Timestamp, lease_payload};
    println!(
        "\n10. Leases: agents declare what they are about to do to shared resources; wait-die decides who goes first."
    );
    // Two agents of the tour's own, each with a delegation that may lease
    // services.
    let bots: Vec<(String, Ed25519Signer)> = ["deploy-bot", "migrate-bot"]
        .iter()
        .enumerate()
        .map(|(n, name)| {
            let mut secret = [0u8; 32];
            secret[..8].copy_from_slice(&run.to_be_bytes());
            secret[8] = n as u8 + 1;
            (format!("{name}-{run}"), Ed25519Signer::from_secret(&secret))
        })
        .collect();
    for (agent, key) in &bots {
        let p = tollgate_protocol::build::TokenPayload::new(
            &format!("dlg_{agent}"),
            demo::ISSUER,
            agent,
            tollgate_signer::Signer::jwk(key).to_value(),
            "2020-01-01T00:00:00Z",
            "2100-01-01T00:00:00Z",
        )
        .actions(&[demo::DEPLOY_ACTION])
        .resources(&["service:*"])
        .leases(&["reads", "writes", "exclusive"], &["service:*"])
        .into_value();
        let got = client.register_delegation(
            issuer
                .envelope(Domain::Delegation, p)
                .to_string()
                .as_bytes(),
        )?;
        if got.status != 201 {
            failures.push(format!(
                "registering dlg_{agent}: HTTP {}: {}",
                got.status,
                got.text()
            ));
            return Ok(());
        }
    }
    let t0 = now().unix_seconds();
    let ask = |failures: &mut Vec<String>,
               title: &str,
               who: usize,
               lease: &str,
               op: LeaseOp,
               at: i64,
               want: &str|
     -> Result<(), CliError> {
        println!("{title}");
        let (agent, key) = &bots[who];
        let r = LeaseRequest {
            lease: format!("tour-{run}-{lease}"),
            agent: agent.clone(),
            delegation: format!("dlg_{agent}"),
            op,
            issued_at: Timestamp::from_unix(at, 0),
        };
        let env = key.envelope(Domain::Lease, lease_payload(&r));
        let got = client.send_lease(env.to_string().as_bytes())?;
        let answer = got.json()?;
        let o = |k: &str| {
            field(&answer, &["receipt", "outcome", k])
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
        };
        if got.status != 200 {
            failures.push(format!("{title}: HTTP {}: {}", got.status, got.text()));
            return Ok(());
        }
        let status = o("status").unwrap_or_default();
        let mut line = format!("  → {} lease {}", status.to_uppercase(), r.lease);
        match (o("expires_at"), o("holders")) {
            (Some(t), Some(h)) => line.push_str(&format!(
                ", behind {h} (its wait lapses at {t} without a heartbeat)"
            )),
            (Some(t), None) => line.push_str(&format!(", until {t}")),
            _ => {}
        }
        if let (Some(b), Some(h)) = (o("because_of"), o("holder")) {
            line.push_str(&format!(": {h}'s older lease {b} holds; come back later"));
        }
        println!("{line}");
        if status != want {
            failures.push(format!("{title}: expected {want}, got {status}"));
        }
        Ok(())
    };
    let exclusive = || LeaseOp::Acquire {
        triples: vec![("exclusive".into(), demo::STAGING.into())],
        ttl_seconds: 30,
    };
    let writes = || LeaseOp::Acquire {
        triples: vec![("writes".into(), demo::STAGING.into())],
        ttl_seconds: 30,
    };
    ask(
        failures,
        "   deploy-bot takes service:api exclusively for a rollout:",
        0,
        "deploy",
        exclusive(),
        t0,
        "granted",
    )?;
    ask(
        failures,
        "   migrate-bot, starting after it (a younger timestamp), asks to write service:api:",
        1,
        "migrate-young",
        writes(),
        t0 + 1,
        "died",
    )?;
    ask(
        failures,
        "   migrate-bot with an attempt it began before the rollout (older): it waits.",
        1,
        "migrate-old",
        writes(),
        t0 - 30,
        "waiting",
    )?;
    // Nothing bypasses the lease: another agent's deploy is blocked.
    println!("   Meanwhile agent-demo deploys service:api under dlg_deploys:");
    let deploy = demo::deploy(&format!("tour-{run}-leased"), demo::STAGING, "2.4.2", 2)
        .issued_at(&now())
        .into_value();
    let env = demo_agent.envelope(Domain::Intent, deploy);
    let got = client.submit(env.to_string().as_bytes(), None)?.json()?;
    let verdict = field(&got, &["receipt", "decision", "verdict"])
        .and_then(Value::as_str)
        .unwrap_or("?");
    println!("  → {}", verdict.to_uppercase());
    if let Some(Value::Array(rules)) = field(&got, &["receipt", "decision", "rules"]) {
        for r in rules {
            println!(
                "    {}: {}",
                field(r, &["id"]).and_then(Value::as_str).unwrap_or(""),
                field(r, &["reason"]).and_then(Value::as_str).unwrap_or("")
            );
        }
    }
    if verdict != "block" {
        failures.push(format!(
            "the deploy of the leased service: {verdict}, not block"
        ));
    }
    ask(
        failures,
        "   deploy-bot is done and releases its lease:",
        0,
        "deploy",
        LeaseOp::Release,
        t0 + 2,
        "released",
    )?;
    let waiting = format!("tour-{run}-migrate-old");
    let seen = client.lease(&waiting, 5)?.json()?;
    let state = field(&seen, &["state"])
        .and_then(Value::as_str)
        .unwrap_or("?");
    println!(
        "  → migrate-bot's waiting request is now {} (granted in the release's transaction, receipt {})",
        state.to_uppercase(),
        field(&seen, &["last", "receipt", "receipt_id"])
            .and_then(Value::as_str)
            .unwrap_or("?")
    );
    if state != "held" {
        failures.push(format!(
            "the waiting request after the release: {state}, not held"
        ));
    }
    ask(
        failures,
        "   migrate-bot finishes and releases too:",
        1,
        "migrate-old",
        LeaseOp::Release,
        t0 + 3,
        "released",
    )
}

/// Submits a refund intent of the tour's: `(title, name, order,
/// amount_minor, the verdict wanted)`.
type Refund<'a> =
    dyn FnMut(&mut Vec<String>, &str, &str, &str, i64, &str) -> Result<(), CliError> + 'a;

/// Chapter 9: orders are entities the gateway keeps. The order service
/// (an event source) tells it of a new paid order; a partial refund moves
/// it to partially refunded, the rest to refunded, and a third refund is
/// blocked by that state; a shipped order's refund waits for a reviewer;
/// an event the order's state does not allow is refused; the order's
/// history tells the story.
fn entities_chapter(
    client: &Client,
    data: &Layout,
    failures: &mut Vec<String>,
    run: i64,
    refund: &mut Refund<'_>,
) -> Result<(), CliError> {
    let key = Ed25519Signer::load(&data.demo("orders-service.jwk"))
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let order = format!("order:o-tour-{run}");
    let shipped = format!("order:o-tour-{run}-s");
    let send = |failures: &mut Vec<String>,
                n: &str,
                resource: &str,
                event: &str,
                data: Object,
                want: u16|
     -> Result<(), CliError> {
        let e = tollgate_protocol::Event {
            source: demo::ORDER_SERVICE.into(),
            event_id: format!("tour-{run}-{n}"),
            resource: resource.into(),
            event: event.into(),
            data,
            issued_at: now(),
        };
        let env = key.envelope(Domain::Event, tollgate_protocol::event_payload(&e));
        let got = client.send_event(env.to_string().as_bytes())?;
        let answer = got.json()?;
        if got.status == 200 {
            println!(
                "  → {event} on {resource}: {} at version {} (receipt {})",
                field(
                    &answer,
                    &["receipt", "outcome", "entity", "attributes", "state"]
                )
                .and_then(Value::as_str)
                .unwrap_or("?"),
                field(&answer, &["receipt", "outcome", "entity", "version"])
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                field(&answer, &["receipt", "receipt_id"])
                    .and_then(Value::as_str)
                    .unwrap_or("?"),
            );
        } else {
            println!(
                "  → {event} on {resource} refused, HTTP {}: {}",
                got.status,
                field(&answer, &["detail"])
                    .and_then(Value::as_str)
                    .unwrap_or("")
            );
        }
        if got.status != want {
            failures.push(format!(
                "event {event} on {resource}: expected HTTP {want}, got {}",
                got.status
            ));
        }
        Ok(())
    };
    let paid = |tier: &str| {
        let mut d = Object::new();
        d.insert(
            "amount_minor",
            Value::integer(12_000).unwrap_or(Value::Null),
        );
        d.insert("customer_tier", tier.into());
        d
    };
    println!(
        "\n9. Orders are entities the gateway keeps. The order service (event source {}) says order {order} was paid, 120.00 EUR.",
        demo::ORDER_SERVICE
    );
    send(failures, "paid", &order, "order.paid", paid("gold"), 200)?;
    refund(
        failures,
        "   A partial refund, 40.00 EUR: the order becomes partially refunded.",
        "part-1",
        &order,
        4_000,
        "pass",
    )?;
    refund(
        failures,
        "   The rest, 80.00 EUR: the order becomes refunded.",
        "part-2",
        &order,
        8_000,
        "pass",
    )?;
    refund(
        failures,
        "   A third refund, 5.00 EUR, however it is asked: blocked by the state the others left.",
        "part-3",
        &order,
        500,
        "block",
    )?;
    println!(
        "   The order service says the refunded order was paid again: its model does not allow it."
    );
    send(
        failures,
        "paid-again",
        &order,
        "order.paid",
        paid("gold"),
        409,
    )?;
    println!("   Another order, {shipped}, paid and then shipped:");
    send(
        failures,
        "s-paid",
        &shipped,
        "order.paid",
        paid("silver"),
        200,
    )?;
    send(
        failures,
        "s-shipped",
        &shipped,
        "order.shipped",
        Object::new(),
        200,
    )?;
    refund(
        failures,
        "   A refund of the shipped order, 30.00 EUR, waits for a reviewer.",
        "shipped",
        &shipped,
        3_000,
        "escalate",
    )?;
    println!("   tollgate entity history {order}:");
    match crate::entity::history(client.base(), &order, false) {
        Ok(story) => println!("  {}", story.replace('\n', "\n  ")),
        Err(e) => failures.push(format!("the history of {order}: {e}")),
    }
    Ok(())
}

/// Submits a refund intent `(name, resource, amount_minor, seconds ago)`
/// and returns its receipt id.
type Propose<'a> = dyn Fn(&str, &str, i64, i64) -> Result<String, CliError> + 'a;

/// Chapters 6 to 8: a reviewer grants the large refund of chapter 2 (the
/// same intent now commits), denies another (nothing runs), and lets a
/// third expire; each step is a receipt whose `refs` tell the story.
fn approvals_chapter(
    client: &Client,
    data: &Layout,
    failures: &mut Vec<String>,
    large: Option<String>,
    propose: &Propose<'_>,
    run: i64,
) -> Result<(), CliError> {
    let key_path = data.demo("reviewer.jwk");
    if !key_path.exists() {
        Ed25519Signer::generate()
            .and_then(|k| k.save(&key_path))
            .map_err(|e| CliError::Usage(format!("{}: {e}", key_path.display())))?;
    }
    let reviewer = Ed25519Signer::load(&key_path).map_err(|e| CliError::Usage(e.to_string()))?;
    let mut o = Object::new();
    o.insert("id", "rev-demo".into());
    o.insert("key", tollgate_signer::Signer::jwk(&reviewer).to_value());
    o.insert("roles", Value::Array(vec!["approver".into()]));
    o.insert("actions", Value::Array(vec!["orders.refund".into()]));
    let got = client.register_reviewer(Value::Object(o).to_string().as_bytes())?;
    println!(
        "\n6. Reviewer rev-demo (role approver) looks at the large refund of step 2, and grants it."
    );
    match (got.status, got.problem_type().as_deref()) {
        (201, _) => println!("  → rev-demo registered (a reviewer.register receipt)"),
        (200, _) => println!("  → rev-demo is registered already"),
        (409, Some("reviewer-exists")) => println!("  → rev-demo is registered already"),
        (status, _) => failures.push(format!(
            "registering rev-demo: HTTP {status}: {}",
            got.text()
        )),
    }
    let story =
        |failures: &mut Vec<String>, agent_intent: &str, want: &str| -> Result<(), CliError> {
            let got = client
                // Long enough for the expiry sweeper on a busy machine; an
                // intent already settled is answered at once.
                .intent_state("agent-demo", agent_intent, 30)?
                .ok()?
                .json()?;
            let status = field(&got, &["status"])
                .and_then(Value::as_str)
                .unwrap_or("?");
            let receipts: Vec<&str> = match field(&got, &["receipts"]) {
                Some(Value::Array(r)) => r.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            println!(
                "  → the intent is {status}; its story: {}",
                receipts.join(" → ")
            );
            if status != want {
                failures.push(format!(
                    "intent {agent_intent}: expected {want}, got {status}"
                ));
            }
            Ok(())
        };
    let decide =
        |failures: &mut Vec<String>, id: &str, verdict, reason: &str| -> Result<(), CliError> {
            match post_decision(client, id, &reviewer, "rev-demo", reason, verdict) {
                Ok(after) => {
                    let status = after.get("status").and_then(Value::as_str).unwrap_or("?");
                    println!("  → approval {id}: {status}");
                    if let Some(e) = after.get("execution").and_then(Value::as_str) {
                        println!(
                            "  → executed: receipt {e} (refs: the decision, then the approval)"
                        );
                    }
                }
                Err(e) => failures.push(format!("deciding {id}: {e}")),
            }
            Ok(())
        };
    match large {
        Some(id) => {
            decide(
                failures,
                &id,
                ApprovalVerdict::Grant,
                "customer verified; refund justified",
            )?;
            story(failures, &format!("tour-{run}-large"), "committed")?;
        }
        None => failures.push("step 2 left no approval to grant".into()),
    }

    println!("\n7. Another large refund, 1,500.00 EUR on order o-1002: the reviewer denies it.");
    let id = propose("denied", "order:o-1002", 150_000, 0)?;
    decide(
        failures,
        &id,
        ApprovalVerdict::Deny,
        "duplicate of an earlier refund",
    )?;
    story(failures, &format!("tour-{run}-denied"), "denied")?;

    println!("\n8. A third, proposed 2.5 minutes ago, is never reviewed: its deadline passes.");
    propose("expired", "order:o-1001", 120_000, 150)?;
    story(failures, &format!("tour-{run}-expired"), "expired")?;
    Ok(())
}

/// Chapter 12: the export against the gateway's latest signed checkpoint
/// (waiting for one that covers it), and one entry's inclusion proof.
fn checkpoint_chapter(client: &Client, lines: &[&[u8]]) -> Result<(), String> {
    use tollgate_protocol::checkpoint::{
        TreeBuilder, VerifierKey, hash_b64, leaf_hash, parse_hash_b64, verify_checkpoint,
        verify_inclusion,
    };
    println!(
        "\n12. Check the export against the gateway's signed checkpoint (an auditor gets its key out of band; here it is read from the gateway)."
    );
    let get = |path: &str| {
        client
            .get(path, false)
            .and_then(|a| a.ok())
            .map_err(|e| format!("{path}: {e}"))
    };
    let key = VerifierKey::parse(&get("/.well-known/tollgate-checkpoint-key")?.text())
        .map_err(|e| format!("checkpoint key: {e}"))?;
    let exported = lines.len() as u64;
    let mut checkpoint = None;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        if let Ok(a) = client.get("/log/checkpoint", false)
            && a.status == 200
        {
            let v = verify_checkpoint(&a.body, &key, &[], 0)
                .map_err(|e| format!("the checkpoint does not verify: {e}"))?;
            if v.checkpoint.size >= exported {
                checkpoint = Some(v.checkpoint);
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let c = checkpoint.ok_or("no checkpoint covered the export within 60 s")?;
    // The checkpoint may cover entries made after the export: check the
    // ones both hold, against a checkpoint of exactly that size's proof.
    let n = c.size.min(exported);
    let mut tree = TreeBuilder::new();
    for l in &lines[..n as usize] {
        tree.push(l);
    }
    if n == c.size && tree.root() != c.root {
        return Err(format!(
            "the export's first {n} entries hash to {}, not the checkpoint's root",
            hash_b64(&tree.root())
        ));
    }
    let proof = get(&format!("/v1/proofs/inclusion?seq={n}&size={}", c.size))?
        .json()
        .map_err(|e| e.to_string())?;
    let path: Vec<[u8; 32]> = field(&proof, &["proof"])
        .and_then(|p| match p {
            Value::Array(a) => a
                .iter()
                .map(|h| h.as_str().and_then(|s| parse_hash_b64(s).ok()))
                .collect::<Option<Vec<_>>>(),
            _ => None,
        })
        .ok_or("the inclusion proof is malformed")?;
    verify_inclusion(
        n - 1,
        c.size,
        &leaf_hash(lines[n as usize - 1]),
        &path,
        &c.root,
    )
    .map_err(|e| format!("entry {n}'s inclusion proof: {e}"))?;
    println!(
        "  → checkpoint of {} entries signed by {}; entry {n}'s inclusion proof leads to its root{}",
        c.size,
        key.name,
        if n == c.size {
            ", and the export's entries hash to it"
        } else {
            ""
        }
    );
    println!(
        "  (tollgate-verify ledger … --checkpoint FILE --checkpoint-key KEY does the same offline)"
    );
    Ok(())
}
