//! Crash-test helper: appends receipts to a SQLite ledger from several
//! tasks, forever, and prints `SEQ RECEIPT_ID` for each append only after
//! it has returned (that is, once the ledger says it is durable).
//!
//! Usage: `append-loop LEDGER_DB KEY_FILE TAG`

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tollgate_ledger::prelude::*;
use tollgate_ledger::{SqliteLedger, SqliteOptions};
use tollgate_protocol::{Domain, Object, Value, seal_receipt};
use tollgate_signer::Ed25519Signer;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let ledger = SqliteLedger::open(SqliteOptions::new(&args[1]))
        .await
        .unwrap();
    let signer = Arc::new(Ed25519Signer::load(args[2].as_ref()).unwrap());
    let tag = args[3].clone();
    let counter = Arc::new(AtomicU64::new(0));
    let stdout = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    for _ in 0..8 {
        let (ledger, signer, tag, counter, stdout) = (
            ledger.clone(),
            signer.clone(),
            tag.clone(),
            counter.clone(),
            stdout.clone(),
        );
        tokio::spawn(async move {
            loop {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let mut o = Object::new();
                o.insert("type", "tollgate.receipt/v1".into());
                o.insert("kind", "decision".into());
                o.insert("issued_at", "2026-11-22T10:00:00Z".into());
                o.insert("subject", format!("{tag}-{n}").into());
                let r = Value::Object(seal_receipt(o));
                let sig = signer.sign_now(Domain::Receipt, &r);
                let e = match ledger.append(r.clone(), sig, None).await {
                    Ok(e) => e,
                    Err(e) => {
                        eprintln!("append-loop: append failed: {e}");
                        std::process::exit(1);
                    }
                };
                let id = r
                    .as_object()
                    .unwrap()
                    .get("receipt_id")
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_owned();
                let mut out = stdout.lock().unwrap();
                writeln!(out, "{} {id}", e.seq).unwrap();
                out.flush().unwrap();
            }
        });
    }
    // Runs until killed.
    std::future::pending::<()>().await;
}
