//! HTTP/2 on the gateway's one listener: h2c with prior knowledge and h2
//! by ALPN over TLS, beside HTTP/1.1, spoken to by an independent client
//! (Python's httpx with h2), and `tollgate bench --http2` loading it with
//! every acknowledged receipt in the ledger exactly once.

use std::collections::BTreeMap;
use std::process::Command;

use tollgate_tests::gateway::Gateway;
use tollgate_tests::{bin, python};

/// Posts each line of `intents` at once over ONE connection of `version`
/// ("h2c", "h2" or "http1"), then the first again; prints one JSON line per
/// answer: the HTTP version, the status, the receipt id, whether replayed.
const CLIENT: &str = r#"
import asyncio, json, ssl, sys
import httpx

url, version, path = sys.argv[1], sys.argv[2], sys.argv[3]
ca = sys.argv[4] if len(sys.argv) > 4 else None
lines = [l for l in open(path).read().splitlines() if l]

async def main():
    verify = ssl.create_default_context(cafile=ca) if ca else True
    limits = httpx.Limits(max_connections=1)
    http1, http2 = (True, False) if version == "http1" else (version == "h2", True)
    async with httpx.AsyncClient(http1=http1, http2=http2, verify=verify, limits=limits, timeout=60) as c:
        async def post(body):
            r = await c.post(url + "/v1/intents", content=body,
                             headers={"content-type": "application/json"})
            entry = r.json() if r.status_code == 200 else {}
            return {"version": r.http_version, "status": r.status_code,
                    "receipt": entry.get("receipt", {}).get("receipt_id"),
                    "replayed": r.headers.get("idempotent-replayed")}
        answers = await asyncio.gather(*(post(b) for b in lines))
        answers.append(await post(lines[0]))
    for a in answers:
        print(json.dumps(a))

asyncio.run(main())
"#;

fn write_intents(g: &Gateway, count: usize, name: &str) -> std::path::PathBuf {
    let file = g.dir.path().join(name);
    let out = Command::new(bin("tollgate"))
        .args(["bench", "--count", &count.to_string(), "--write-intents"])
        .arg(&file)
        .arg("--data-dir")
        .arg(g.data())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    file
}

fn client(
    url: &str,
    version: &str,
    intents: &std::path::Path,
    ca: Option<&std::path::Path>,
) -> Vec<serde_json::Value> {
    let mut cmd = Command::new(python());
    cmd.args(["-c", CLIENT, url, version]).arg(intents);
    if let Some(ca) = ca {
        cmd.arg(ca);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// 32 intents at once over one connection: each decided once, each answer
/// over the version asked for; the first again is a replay.
fn decided_once_each(answers: &[serde_json::Value], version: &str) {
    assert_eq!(answers.len(), 33);
    let mut ids = BTreeMap::new();
    for a in &answers[..32] {
        assert_eq!(a["version"], version, "{a}");
        assert_eq!(a["status"], 200, "{a}");
        assert!(a["replayed"].is_null(), "{a}");
        *ids.entry(a["receipt"].as_str().unwrap().to_owned())
            .or_insert(0) += 1;
    }
    assert_eq!(ids.len(), 32, "one receipt each");
    let again = &answers[32];
    assert_eq!(again["status"], 200);
    assert_eq!(again["replayed"], "true", "{again}");
    assert_eq!(again["receipt"], answers[0]["receipt"]);
}

#[test]
fn h2c_with_prior_knowledge_and_http1_on_one_listener() {
    let g = Gateway::start();
    let a = write_intents(&g, 32, "a.txt");
    decided_once_each(&client(&g.url, "h2c", &a, None), "HTTP/2");
    let b = write_intents(&g, 32, "b.txt");
    decided_once_each(&client(&g.url, "http1", &b, None), "HTTP/1.1");
    assert_eq!(g.head_seq(), g.seeded + 64);
}

#[test]
fn h2_by_alpn_over_tls_and_http1_on_one_listener() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = crate::tls::certificates(certs.path());
    let g = Gateway::start_with(
        tempfile::tempdir().unwrap(),
        |_| {},
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let a = write_intents(&g, 32, "a.txt");
    decided_once_each(&client(&g.url, "h2", &a, Some(&ca)), "HTTP/2");
    let b = write_intents(&g, 32, "b.txt");
    decided_once_each(&client(&g.url, "http1", &b, Some(&ca)), "HTTP/1.1");
}

/// `tollgate bench --http2`: 16 clients over 2 connections, then the same
/// intents read back; every acknowledged entry is in the ledger once, and
/// nothing else was decided.
#[test]
fn bench_over_http2_acknowledges_each_decision_once() {
    let g = Gateway::start();
    let acks = g.dir.path().join("acks.jsonl");
    let before = g.head_seq();
    let out = Command::new(bin("tollgate"))
        .args(["bench", "--url", &g.url, "--http2", "--connections", "2"])
        .args([
            "--concurrency",
            "16",
            "--duration",
            "2",
            "--path",
            "entity,replay",
        ])
        .arg("--data-dir")
        .arg(g.data())
        .arg("--acks")
        .arg(&acks)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |prefix: &str| {
        said.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in {said}"))
            .to_owned()
    };
    let decided = line("durable decisions:");
    assert!(decided.contains("(0 errors)  path entity"), "{said}");
    assert!(line("reads:").contains("(0 errors)  path replay"), "{said}");
    assert!(
        line("latency:").contains("HTTP/2 over 2 connections"),
        "{said}"
    );
    assert!(line("server CPU per answer:").ends_with("µs (user + system, from /metrics)"));
    // Every ack once in the export; the head moved by the acks and the 64
    // orders the bench paid first (16 clients × 4), nothing else.
    let text = std::fs::read_to_string(&acks).unwrap();
    let acked: Vec<&str> = text.lines().collect();
    assert!(acked.len() > 16, "{said}");
    let export = tollgate_tests::assert_export_verifies(
        &g.get("/v1/ledger/export").1,
        &g.get("/.well-known/jwks.json").1,
    );
    for ack in &acked {
        let n = export
            .iter()
            .filter(|l| l.as_slice() == ack.as_bytes())
            .count();
        assert_eq!(n, 1, "{ack}");
    }
    assert_eq!(g.head_seq(), before + 64 + acked.len() as i64);
}
