//! The agent side: sign an intent and submit it over HTTP.

use std::path::Path;

use tollgate_protocol::{Domain, MAX_INTENT_DEPTH, Object, Timestamp, Value, parse_with_depth};
use tollgate_signer::Ed25519Signer;

use crate::commands::CommandError;

/// Signs the intent payload in `file` with `key` (filling `issued_at` with
/// the current time when it is missing or `"NOW"`) and posts it to `url`.
/// Returns the gateway's answer: the ledger entry of the receipt.
pub fn submit(url: &str, key: &Path, file: &Path) -> Result<String, CommandError> {
    let signer = Ed25519Signer::load(key).map_err(|e| CommandError::Usage(e.to_string()))?;
    let bytes = std::fs::read(file)
        .map_err(|e| CommandError::Usage(format!("cannot read {}: {e}", file.display())))?;
    let value = parse_with_depth(&bytes, MAX_INTENT_DEPTH)
        .map_err(|e| CommandError::Invalid(format!("{}: {e}", file.display())))?;
    let Value::Object(mut payload) = value else {
        return Err(CommandError::Invalid(format!(
            "{}: an intent payload is a JSON object",
            file.display()
        )));
    };
    if payload
        .get("issued_at")
        .is_none_or(|v| v.as_str() == Some("NOW"))
    {
        payload.insert("issued_at", now().as_str().into());
    }
    let env = signer.envelope(Domain::Intent, Value::Object(payload));
    post_json(
        &format!("{}/v1/intents", url.trim_end_matches('/')),
        &env.to_string(),
    )
}

/// Posts `body` as JSON; a 2xx answer is returned, a problem document is
/// an [`CommandError::Invalid`], a transport failure a [`CommandError::Usage`].
pub fn post_json(url: &str, body: &str) -> Result<String, CommandError> {
    let mut response = agent()
        .post(url)
        .header("content-type", "application/json")
        .send(body)
        .map_err(|e| CommandError::Usage(format!("cannot reach {url}: {e}")))?;
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .read_to_string()
        .map_err(|e| CommandError::Usage(format!("{url}: {e}")))?;
    if (200..300).contains(&status) {
        Ok(text.trim_end().to_owned())
    } else {
        Err(CommandError::Invalid(format!(
            "HTTP {status}: {}",
            text.trim_end()
        )))
    }
}

/// An HTTP client. `TOLLGATE_CA_CERT` names a PEM certificate to trust
/// (a gateway with a private CA or a self-signed certificate); without it,
/// the usual public roots.
fn agent() -> ureq::Agent {
    let mut config = ureq::Agent::config_builder().http_status_as_error(false);
    if let Ok(path) = std::env::var("TOLLGATE_CA_CERT")
        && let Ok(pem) = std::fs::read(&path)
        && let Ok(cert) = ureq::tls::Certificate::from_pem(&pem)
    {
        config = config.tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::new_with_certs(&[cert]))
                .build(),
        );
    }
    config.build().into()
}

/// A response's status and body.
fn read(
    resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    url: &str,
) -> Result<(u16, Vec<u8>), CommandError> {
    let mut resp = resp.map_err(|e| CommandError::Usage(format!("cannot reach {url}: {e}")))?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(1 << 34)
        .read_to_vec()
        .map_err(|e| CommandError::Usage(format!("{url}: {e}")))?;
    Ok((status, body))
}

fn now() -> Timestamp {
    tollgate_ledger::Clock::now(&tollgate_ledger::SystemClock)
}

/// Signs `payload` and posts it; returns the status and the body.
fn send_intent(
    url: &str,
    signer: &Ed25519Signer,
    payload: Object,
) -> Result<(u16, Value), CommandError> {
    let env = signer.envelope(Domain::Intent, Value::Object(payload));
    let target = format!("{}/v1/intents", url.trim_end_matches('/'));
    let (status, body) = read(
        agent()
            .post(&target)
            .header("content-type", "application/json")
            .send(env.to_string()),
        &target,
    )?;
    let v = tollgate_protocol::parse(&body)
        .map_err(|e| CommandError::Usage(format!("{target}: answer is not JSON: {e}")))?;
    Ok((status, v))
}

/// `tollgate ledger export`: the export and the key set, to files.
pub fn export(url: &str, out: &Path) -> Result<String, CommandError> {
    let base = url.trim_end_matches('/');
    let (status, body) = read(
        agent().get(&format!("{base}/v1/ledger/export")).call(),
        base,
    )?;
    if status != 200 {
        return Err(CommandError::Invalid(format!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&body)
        )));
    }
    std::fs::write(out, &body)
        .map_err(|e| CommandError::Usage(format!("cannot write {}: {e}", out.display())))?;
    let keys_path = out.with_extension("jwks.json");
    let (_, keys) = read(
        agent().get(&format!("{base}/.well-known/jwks.json")).call(),
        base,
    )?;
    std::fs::write(&keys_path, &keys)
        .map_err(|e| CommandError::Usage(format!("cannot write {}: {e}", keys_path.display())))?;
    let n = body.iter().filter(|b| **b == b'\n').count();
    Ok(format!(
        "wrote {n} entries to {} and the key set to {}\nverify: tollgate-verify ledger {} --keys {}",
        out.display(),
        keys_path.display(),
        out.display(),
        keys_path.display()
    ))
}

fn field<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.as_object()?.get(k))
}

/// `tollgate tour`: a narrated walk through a running gateway, with the
/// demo material of its data folder.
pub fn tour(url: &str, data_dir: &Path) -> Result<String, CommandError> {
    let demo = data_dir.join("demo");
    let agent_key = Ed25519Signer::load(&demo.join("agent.jwk")).map_err(|e| {
        CommandError::Usage(format!(
            "{e} (run the tour with the data folder of the running gateway: --data-dir)"
        ))
    })?;
    let issuer = Ed25519Signer::load(&demo.join("issuer.jwk"))
        .map_err(|e| CommandError::Usage(e.to_string()))?;
    let admin_token = std::fs::read_to_string(data_dir.join("admin.token")).map_err(|e| {
        CommandError::Usage(format!("{}: {e}", data_dir.join("admin.token").display()))
    })?;
    let run = now().unix_seconds();
    let mut failures = Vec::new();
    let intent = |n: &str, delegation: &str, resource: &str, amount: i64| {
        let mut p = Object::new();
        p.insert("type", "tollgate.intent/v1".into());
        p.insert("intent_id", format!("tour-{run}-{n}").into());
        p.insert("agent", "agent-demo".into());
        p.insert("delegation", delegation.into());
        p.insert("action", "orders.refund".into());
        p.insert("resource", resource.into());
        let mut params = Object::new();
        params.insert(
            "amount_minor",
            Value::integer(amount).unwrap_or(Value::Null),
        );
        params.insert("currency", "EUR".into());
        p.insert("params", params.into());
        let mut d = Object::new();
        d.insert("confidence_bp", Value::Number(9000.0));
        p.insert("decision", d.into());
        p.insert("issued_at", now().as_str().into());
        p
    };
    let step = |failures: &mut Vec<String>,
                title: &str,
                payload: Object,
                want: &str|
     -> Result<(), CommandError> {
        println!("\n{title}");
        let (status, answer) = send_intent(url, &agent_key, payload)?;
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
            println!(
                "  → {} (receipt {rid}, ledger seq {seq})",
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
        } else {
            let detail = field(&answer, &["detail"])
                .and_then(Value::as_str)
                .unwrap_or("");
            println!("  → refused, HTTP {status}: {detail}");
            if want != "refused" {
                failures.push(format!("{title}: expected {want}, got HTTP {status}"));
            }
        }
        Ok(())
    };
    println!("Tollgate tour against {url}: agent-demo refunds orders under delegation dlg_demo.");
    step(
        &mut failures,
        "1. A small refund of a paid order: 25.00 EUR on order o-1001.",
        intent("small", "dlg_demo", "order:o-1001", 2500),
        "pass",
    )?;
    step(
        &mut failures,
        "2. A large refund: 999.00 EUR on order o-1002 waits for a reviewer.",
        intent("large", "dlg_demo", "order:o-1002", 99_900),
        "escalate",
    )?;
    step(
        &mut failures,
        "3. A refund of an unpaid order (o-1003) is blocked.",
        intent("unpaid", "dlg_demo", "order:o-1003", 2500),
        "block",
    )?;

    // A fresh delegation, registered, used, revoked, refused.
    let id = format!("dlg_tour_{run}");
    let mut p = Object::new();
    p.insert("type", "tollgate.delegation/v1".into());
    p.insert("id", id.clone().into());
    p.insert("issuer", "demo issuer".into());
    p.insert("agent", "agent-demo".into());
    p.insert(
        "agent_key",
        tollgate_signer::Signer::jwk(&agent_key).to_value(),
    );
    p.insert("actions", Value::Array(vec!["orders.refund".into()]));
    p.insert("resources", Value::Array(vec!["order:o-1001".into()]));
    p.insert("not_before", "2020-01-01T00:00:00Z".into());
    p.insert("expires_at", "2100-01-01T00:00:00Z".into());
    let env = issuer.envelope(Domain::Delegation, Value::Object(p));
    let base = url.trim_end_matches('/');
    let auth = format!("Bearer {}", admin_token.trim());
    println!("\n4. The issuer registers delegation {id} (order o-1001 only), then revokes it.");
    let target = format!("{base}/v1/admin/delegations");
    let (status, body) = read(
        agent()
            .post(&target)
            .header("authorization", &auth)
            .header("content-type", "application/json")
            .send(env.to_string()),
        &target,
    )?;
    if status != 201 {
        failures.push(format!(
            "registering {id}: HTTP {status}: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    step(
        &mut failures,
        "   Under the new delegation, 10.00 EUR on o-1001:",
        intent("fresh", &id, "order:o-1001", 1000),
        "pass",
    )?;
    let target = format!("{base}/v1/admin/delegations/{id}/revoke");
    let (status, body) = read(
        agent()
            .post(&target)
            .header("authorization", &auth)
            .send(""),
        &target,
    )?;
    if status != 200 {
        failures.push(format!(
            "revoking {id}: HTTP {status}: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    step(
        &mut failures,
        "   Revoked; the very next intent under it:",
        intent("revoked", &id, "order:o-1001", 1000),
        "refused",
    )?;

    // The auditor's view.
    let out = data_dir.join("tour-export.jsonl");
    println!("\n5. Export the ledger and verify it offline, as an auditor would.");
    let said = export(url, &out)?;
    let bytes = std::fs::read(&out).map_err(|e| CommandError::Usage(e.to_string()))?;
    let keys_bytes = std::fs::read(out.with_extension("jwks.json"))
        .map_err(|e| CommandError::Usage(e.to_string()))?;
    let keys = tollgate_protocol::KeySet::parse(&keys_bytes)
        .map_err(|e| CommandError::Invalid(e.to_string()))?;
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
    if failures.is_empty() {
        Ok("\nTour complete.".into())
    } else {
        Err(CommandError::Invalid(format!(
            "tour: {}",
            failures.join("; ")
        )))
    }
}

/// What `tollgate bench` measured.
#[derive(Debug)]
pub struct BenchReport {
    /// Decisions answered 200 per second.
    pub decisions_per_s: f64,
    /// Latency percentiles, microseconds: p50, p99, p99.9.
    pub latency_us: (u64, u64, u64),
    /// Answers other than 200.
    pub errors: u64,
    /// `/healthz` answers per second, same concurrency.
    pub healthz_per_s: f64,
    /// Bare Ed25519 sign + verify per second on all cores of this machine.
    pub sign_verify_per_s: f64,
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs `work` on `threads` threads until `duration` passes (or `work`
/// says there is no more); returns the successes, the failures, every
/// latency (µs, sorted) and the wall time taken.
fn load(
    threads: usize,
    duration: std::time::Duration,
    work: impl Fn(usize) -> Option<bool> + Sync,
) -> (u64, u64, Vec<u64>, f64) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let start = std::time::Instant::now();
    let per: Vec<(u64, u64, Vec<u64>)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let (mut ok, mut bad, mut lat) = (0u64, 0u64, Vec::new());
                    while start.elapsed() < duration {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let t = std::time::Instant::now();
                        match work(i) {
                            None => break,
                            Some(true) => ok += 1,
                            Some(false) => bad += 1,
                        }
                        lat.push(t.elapsed().as_micros() as u64);
                    }
                    (ok, bad, lat)
                })
            })
            .collect();
        hs.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let mut lat: Vec<u64> = per.iter().flat_map(|p| p.2.iter().copied()).collect();
    lat.sort_unstable();
    let wall = start.elapsed().as_secs_f64();
    (
        per.iter().map(|p| p.0).sum(),
        per.iter().map(|p| p.1).sum(),
        lat,
        wall,
    )
}

/// `tollgate bench`: decisions/s and latency against a running gateway,
/// with the intents signed before the clock starts, and two baselines from
/// the same run: the server's `/healthz` rate and the machine's bare
/// Ed25519 sign-plus-verify rate.
pub fn bench(
    url: &str,
    data_dir: &Path,
    concurrency: usize,
    seconds: u64,
) -> Result<BenchReport, CommandError> {
    let agent_key = Ed25519Signer::load(&data_dir.join("demo/agent.jwk"))
        .map_err(|e| CommandError::Usage(format!("{e} (give the gateway's --data-dir)")))?;
    let base = url.trim_end_matches('/').to_owned();
    let duration = std::time::Duration::from_secs(seconds.max(1));
    // Sign the intents first: the client should cost little while timed.
    let pool = 60_000usize;
    let run = now().unix_seconds();
    let issued = now();
    let bodies: Vec<String> = (0..pool)
        .map(|i| {
            let mut p = Object::new();
            p.insert("type", "tollgate.intent/v1".into());
            p.insert("intent_id", format!("bench-{run}-{i}").into());
            p.insert("agent", "agent-demo".into());
            p.insert("delegation", "dlg_demo".into());
            p.insert("action", "orders.refund".into());
            p.insert("resource", "order:o-1001".into());
            let mut params = Object::new();
            params.insert(
                "amount_minor",
                Value::integer(100 + (i % 5000) as i64).unwrap_or(Value::Null),
            );
            params.insert("currency", "EUR".into());
            p.insert("params", params.into());
            p.insert("issued_at", issued.as_str().into());
            let env = agent_key.envelope(Domain::Intent, Value::Object(p));
            env.to_string()
        })
        .collect();
    let agents: Vec<ureq::Agent> = (0..concurrency).map(|_| agent()).collect();
    let intents_url = format!("{base}/v1/intents");
    let (ok, bad, lat, elapsed) = load(concurrency, duration, |i| {
        let body = bodies.get(i)?;
        let a = &agents[i % agents.len()];
        let resp = a
            .post(&intents_url)
            .header("content-type", "application/json")
            .send(body);
        Some(match resp {
            Ok(mut r) => r.status().as_u16() == 200 && r.body_mut().read_to_vec().is_ok(),
            Err(_) => false,
        })
    });
    let health_url = format!("{base}/healthz");
    let health_time = std::time::Duration::from_secs((seconds / 3).max(1));
    let (health_ok, _, _, health_wall) = load(concurrency, health_time, |i| {
        let a = &agents[i % agents.len()];
        Some(
            a.get(&health_url)
                .call()
                .map(|mut r| r.body_mut().read_to_vec().is_ok())
                .unwrap_or(false),
        )
    });
    // Bare sign + verify of a receipt-sized message, all cores.
    let msg = vec![b'x'; 1200];
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let signer = Ed25519Signer::from_secret(&[7; 32]);
    let keys =
        tollgate_protocol::KeySet::from_keys([tollgate_signer::Signer::jwk(&signer).clone()])
            .unwrap_or_default();
    let body = Value::String(String::from_utf8_lossy(&msg).into_owned());
    let at = now();
    let sv_time = std::time::Duration::from_secs(2);
    let (sv_ok, _, _, sv_wall) = load(cores, sv_time, |_| {
        let sig = signer.sign_now(Domain::Receipt, &body);
        Some(keys.verify(Domain::Receipt, &body, &sig, &at).is_ok())
    });
    Ok(BenchReport {
        decisions_per_s: ok as f64 / elapsed,
        latency_us: (
            percentile(&lat, 0.50),
            percentile(&lat, 0.99),
            percentile(&lat, 0.999),
        ),
        errors: bad,
        healthz_per_s: health_ok as f64 / health_wall,
        sign_verify_per_s: sv_ok as f64 / sv_wall,
    })
}
