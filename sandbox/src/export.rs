//! Reading a ledger export (JSON Lines, one entry a line) into a replay.
//! The caller opens the file; this reads what it is handed.

use std::io::BufRead;

use tollgate_policies::Bundle;
use tollgate_protocol::{HashValue, Value, parse};

use crate::{Mismatch, Replay, text};

/// Entries handed to [`Replay::run`] at a time: enough to keep every
/// thread busy, few enough to bound memory on any export.
const BATCH: usize = 8192;

/// Replays every entry of the export read from `input`, in batches, on
/// `threads` threads: `Ok(Err(mismatch))` for the first entry that does
/// not re-decide to itself (or is not an entry), `Err` if reading fails.
/// `progress` is told the bytes read and the entries replayed after each
/// batch.
pub fn replay_export(
    replay: &mut Replay,
    input: impl BufRead,
    threads: usize,
    mut progress: impl FnMut(u64, u64),
) -> std::io::Result<Result<(), Mismatch>> {
    let mut batch = Vec::with_capacity(BATCH);
    let mut seq = 0u64;
    let mut bytes = 0u64;
    let mut lines = input.split(b'\n');
    loop {
        let line = lines.next().transpose()?;
        let done = line.is_none();
        bytes += line.as_ref().map_or(0, |l| l.len() as u64 + 1);
        if let Some(line) = line.filter(|l| !l.is_empty()) {
            seq += 1;
            let entry = match parse(&line) {
                Ok(v) => v,
                Err(e) => {
                    return Ok(Err(Mismatch {
                        seq,
                        reason: e.to_string(),
                    }));
                }
            };
            let o = entry.as_object();
            let alg = o
                .and_then(|o| o.get("hash"))
                .and_then(Value::as_str)
                .and_then(HashValue::parse)
                .map(|h| h.alg)
                .unwrap_or_default();
            let receipt = o
                .and_then(|o| o.get("receipt"))
                .cloned()
                .unwrap_or(Value::Null);
            batch.push((seq, alg, receipt));
        }
        if batch.len() >= BATCH || (done && !batch.is_empty()) {
            if let Err(m) = replay.run(&mut batch, threads) {
                return Ok(Err(m));
            }
            batch.clear();
            progress(bytes, seq);
        }
        if done {
            return Ok(Ok(()));
        }
    }
}

/// Every bundle a `policy.publish` receipt of the export read from `input`
/// carries, in ledger order, each loaded from its files (so its version is
/// the one its files hash to).
pub fn published(input: impl BufRead) -> std::io::Result<Result<Vec<Bundle>, Mismatch>> {
    let mut bundles = Vec::new();
    for (n, line) in input.split(b'\n').enumerate() {
        let line = line?;
        // Most lines are decisions: look closer only at a publication.
        if !line.windows(16).any(|w| w == b"\"policy.publish\"") {
            continue;
        }
        let seq = n as u64 + 1;
        let bad = |reason: String| Mismatch { seq, reason };
        let entry = match parse(&line) {
            Ok(v) => v,
            Err(e) => return Ok(Err(bad(e.to_string()))),
        };
        let subject = entry
            .as_object()
            .and_then(|o| o.get("receipt"))
            .and_then(|r| r.as_object())
            .and_then(|r| r.get("subject"))
            .cloned()
            .unwrap_or(Value::Null);
        if tollgate_protocol::Change::from_name(text(&subject, &["change"]))
            != Some(tollgate_protocol::Change::PolicyPublish)
        {
            continue;
        }
        match crate::published_bundle(&subject) {
            Ok(b) => bundles.push(b),
            Err(e) => return Ok(Err(bad(e.to_string()))),
        }
    }
    Ok(Ok(bundles))
}
