//! A transparency-log witness (C2SP `tlog-witness`): it cosigns (C2SP
//! `tlog-cosignature`, Ed25519) a checkpoint of a log it trusts only when
//! the checkpoint is consistent with the last one it cosigned for that
//! log, proven by an RFC 6962 consistency proof.
//!
//! Invariant: for each origin the witness keeps the size and root it last
//! cosigned in a state file, replaced atomically (written aside, synced,
//! renamed, directory synced) before any cosignature leaves; checking the
//! old size and recording the new one happen under one lock. So a witness
//! killed at any instant and restarted never cosigns a checkpoint
//! inconsistent with one it cosigned before.
//!
//! Scope: the witness's HTTP API (`POST /add-checkpoint`) and [`serve`],
//! which runs it until told to stop. It does not find logs, fetch
//! checkpoints or gossip: logs post to it (the gateway's `--witness`).

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tollgate_protocol::checkpoint::{
    self, Checkpoint, NOTE_COSIGNATURE, Note, NoteSignature, TreeHash, VerifierKey,
};
use tollgate_protocol::{Object, Value, canonical, parse};
use tollgate_signer::Ed25519Signer;

/// Most consistency proof lines a request may carry.
const MAX_PROOF_LINES: usize = 63;

/// Serves `witness` on `listener` until `shutdown` resolves, then lets
/// requests in progress finish.
pub async fn serve(
    witness: Arc<Witness>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(witness))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Why the witness cannot start.
#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    /// The state file cannot be read or written.
    #[error("{path}: {reason}")]
    State {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A setting is unusable.
    #[error("{0}")]
    Setting(String),
}

/// What a witness knows of one log.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Cosigned {
    size: u64,
    root: TreeHash,
}

/// The witness: its key, the logs it trusts, and what it cosigned.
pub struct Witness {
    key: Ed25519Signer,
    vkey: VerifierKey,
    logs: Vec<VerifierKey>,
    state: PathBuf,
    cosigned: tokio::sync::Mutex<BTreeMap<String, Cosigned>>,
    clock: Box<dyn Fn() -> u64 + Send + Sync>,
}

impl std::fmt::Debug for Witness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Witness")
            .field("key", &self.vkey.to_string())
            .finish_non_exhaustive()
    }
}

/// The witness's verifier key for `key` under `name` (type 0x04).
pub fn verifier_key(name: &str, key: &Ed25519Signer) -> Result<VerifierKey, WitnessError> {
    VerifierKey::new(name, NOTE_COSIGNATURE, key.public_bytes())
        .map_err(|e| WitnessError::Setting(format!("witness name: {e}")))
}

fn state_error(path: &Path, reason: impl std::fmt::Display) -> WitnessError {
    WitnessError::State {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

fn read_state(path: &Path) -> Result<BTreeMap<String, Cosigned>, WitnessError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(state_error(path, e)),
    };
    let bad = |what: &str| state_error(path, format!("not a witness state file: {what}"));
    let Ok(Value::Object(o)) = parse(&bytes) else {
        return Err(bad("not a JSON object"));
    };
    let mut out = BTreeMap::new();
    for (origin, v) in o.iter() {
        let Value::Object(v) = v else {
            return Err(bad(origin));
        };
        let size = v
            .get("size")
            .and_then(Value::as_safe_integer)
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| bad(origin))?;
        let root = v
            .get("root")
            .and_then(Value::as_str)
            .and_then(|r| checkpoint::parse_hash_b64(r).ok())
            .ok_or_else(|| bad(origin))?;
        out.insert(origin.to_owned(), Cosigned { size, root });
    }
    Ok(out)
}

/// Replaces the state file atomically and durably.
fn write_state(path: &Path, state: &BTreeMap<String, Cosigned>) -> Result<(), WitnessError> {
    use std::io::Write as _;
    let mut o = Object::new();
    for (origin, c) in state {
        let mut v = Object::new();
        v.insert(
            "size",
            Value::integer(i64::try_from(c.size).unwrap_or(i64::MAX)).unwrap_or(Value::Null),
        );
        v.insert("root", checkpoint::hash_b64(&c.root).into());
        o.insert(origin.as_str(), Value::Object(v));
    }
    let mut bytes = canonical(&Value::Object(o));
    bytes.push(b'\n');
    let aside = path.with_extension("tmp");
    let mut f = std::fs::File::create(&aside).map_err(|e| state_error(&aside, e))?;
    f.write_all(&bytes).map_err(|e| state_error(&aside, e))?;
    f.sync_all().map_err(|e| state_error(&aside, e))?;
    std::fs::rename(&aside, path).map_err(|e| state_error(path, e))?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| state_error(dir, e))
}

/// A refusal: status and the reason, said in the body.
#[derive(Debug)]
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (
            self.0,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{}\n", self.1),
        )
            .into_response()
    }
}

fn bad(msg: impl Into<String>) -> Refusal {
    Refusal(StatusCode::BAD_REQUEST, msg.into())
}

impl Witness {
    /// A witness named `name` with `key`, trusting `logs` (Ed25519
    /// checkpoint keys, named by their origins), its state in `state`
    /// (created on the first cosignature).
    pub fn open(
        name: &str,
        key: Ed25519Signer,
        logs: Vec<VerifierKey>,
        state: PathBuf,
    ) -> Result<Self, WitnessError> {
        let vkey = verifier_key(name, &key)?;
        if logs.is_empty() {
            return Err(WitnessError::Setting(
                "a witness needs at least one log key".into(),
            ));
        }
        if let Some(k) = logs.iter().find(|k| k.kind != checkpoint::NOTE_ED25519) {
            return Err(WitnessError::Setting(format!(
                "{k} is not a log's checkpoint key (type 0x01)"
            )));
        }
        let cosigned = read_state(&state)?;
        Ok(Self {
            key,
            vkey,
            logs,
            state,
            cosigned: tokio::sync::Mutex::new(cosigned),
            clock: Box::new(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
            }),
        })
    }

    /// The witness's verifier key.
    pub fn verifier_key(&self) -> &VerifierKey {
        &self.vkey
    }

    /// Handles one `add-checkpoint` body: the cosignature line, or why
    /// not.
    async fn add(&self, body: &[u8]) -> Result<String, Refusal> {
        let text = std::str::from_utf8(body).map_err(|_| bad("the body is not UTF-8"))?;
        let (old_line, rest) = text
            .split_once('\n')
            .ok_or_else(|| bad("the body has no old size line"))?;
        let old: u64 = old_line
            .strip_prefix("old ")
            .filter(|n| n.parse::<u64>().is_ok_and(|v| v.to_string() == *n))
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| bad(format!("{old_line:?} is not an old size line (old N)")))?;
        let (proof_text, note_text) = match rest.strip_prefix('\n') {
            Some(note) => ("", note),
            None => rest
                .split_once("\n\n")
                .ok_or_else(|| bad("no blank line after the consistency proof"))?,
        };
        let proof: Vec<TreeHash> = proof_text
            .split('\n')
            .filter(|l| !l.is_empty())
            .map(checkpoint::parse_hash_b64)
            .collect::<Result<_, _>>()
            .map_err(|e| bad(e.to_string()))?;
        if proof.len() > MAX_PROOF_LINES {
            return Err(bad(format!("more than {MAX_PROOF_LINES} proof lines")));
        }
        let note = Note::parse(note_text.as_bytes()).map_err(|e| bad(e.to_string()))?;
        let cp = Checkpoint::parse_text(&note.text).map_err(|e| bad(e.to_string()))?;
        let Some(log) = self.logs.iter().find(|k| k.name == cp.origin) else {
            return Err(Refusal(
                StatusCode::NOT_FOUND,
                format!("unknown log {:?}", cp.origin),
            ));
        };
        let mut signed = false;
        for s in note.signatures.iter().filter(|s| log.claims(s)) {
            if log.verify(&note.text, s).is_err() {
                return Err(Refusal(
                    StatusCode::FORBIDDEN,
                    format!("a signature by {log} does not verify"),
                ));
            }
            signed = true;
        }
        if !signed {
            return Err(Refusal(
                StatusCode::FORBIDDEN,
                format!("the checkpoint carries no signature by {log}"),
            ));
        }
        if old > cp.size {
            return Err(bad(format!(
                "old size {old} is larger than the checkpoint's {}",
                cp.size
            )));
        }
        let mut state = self.cosigned.lock().await;
        let known = state.get(&cp.origin).cloned();
        let known_size = known.as_ref().map_or(0, |c| c.size);
        if old != known_size {
            return Err(Refusal(StatusCode::CONFLICT, known_size.to_string()));
        }
        if let Some(k) = &known {
            checkpoint::verify_consistency(k.size, cp.size, &k.root, &cp.root, &proof).map_err(
                |e| {
                    let status = if k.size == cp.size {
                        StatusCode::CONFLICT
                    } else {
                        StatusCode::UNPROCESSABLE_ENTITY
                    };
                    Refusal(
                        status,
                        format!(
                            "not consistent with the checkpoint of size {} this witness cosigned: {e}",
                            k.size
                        ),
                    )
                },
            )?;
        } else if !proof.is_empty() {
            return Err(Refusal(
                StatusCode::UNPROCESSABLE_ENTITY,
                "a consistency proof from size 0 must be empty".into(),
            ));
        }
        let mut next = state.clone();
        next.insert(
            cp.origin.clone(),
            Cosigned {
                size: cp.size,
                root: cp.root,
            },
        );
        // Durable before the cosignature leaves; the lock is held across
        // the check and the write.
        let path = self.state.clone();
        let written = next.clone();
        tokio::task::spawn_blocking(move || write_state(&path, &written))
            .await
            .map_err(|e| Refusal(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
            .map_err(|e| Refusal(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        *state = next;
        drop(state);
        let ts = (self.clock)();
        let sig = self
            .key
            .sign_raw(checkpoint::cosigned_message(ts, &note.text).as_bytes());
        let mut bytes = ts.to_be_bytes().to_vec();
        bytes.extend_from_slice(&sig);
        Ok(NoteSignature {
            name: self.vkey.name.clone(),
            key_id: self.vkey.id(),
            bytes,
        }
        .line())
    }
}

async fn add_checkpoint(State(w): State<Arc<Witness>>, body: Bytes) -> Response {
    match w.add(&body).await {
        Ok(line) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            line,
        )
            .into_response(),
        Err(Refusal(StatusCode::CONFLICT, size)) if size.parse::<u64>().is_ok() => (
            StatusCode::CONFLICT,
            [(header::CONTENT_TYPE, "text/x.tlog.size")],
            format!("{size}\n"),
        )
            .into_response(),
        Err(r) => {
            eprintln!("refused a checkpoint: {} {}", r.0.as_u16(), r.1);
            r.into_response()
        }
    }
}

/// The witness's routes: `POST /add-checkpoint`.
pub fn router(w: Arc<Witness>) -> Router {
    Router::new()
        .route("/add-checkpoint", post(add_checkpoint))
        .layer(axum::extract::DefaultBodyLimit::max(
            checkpoint::MAX_NOTE_BYTES + 8 * 1024,
        ))
        .with_state(w)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use tollgate_protocol::checkpoint::{NOTE_ED25519, TreeBuilder};

    fn log() -> (Ed25519Signer, VerifierKey) {
        let k = Ed25519Signer::from_secret(&[1; 32]);
        let v = VerifierKey::new("example.com/log", NOTE_ED25519, k.public_bytes()).unwrap();
        (k, v)
    }

    fn checkpoint_of(k: &Ed25519Signer, v: &VerifierKey, leaves: &[&str]) -> String {
        let mut t = TreeBuilder::new();
        for l in leaves {
            t.push(l.as_bytes());
        }
        let text = Checkpoint {
            origin: v.name.clone(),
            size: t.size(),
            root: t.root(),
            head: "sha256:00".into(),
        }
        .text();
        Note {
            signatures: vec![NoteSignature {
                name: v.name.clone(),
                key_id: v.id(),
                bytes: k.sign_raw(text.as_bytes()).to_vec(),
            }],
            text,
        }
        .to_text()
    }

    #[tokio::test]
    async fn it_cosigns_a_first_checkpoint_keeps_it_across_a_restart_and_refuses_a_fork() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("witness.json");
        let (lk, lv) = log();
        let wk = || Ed25519Signer::from_secret(&[2; 32]);
        let w = Witness::open("w.example/1", wk(), vec![lv.clone()], state.clone()).unwrap();
        let a = checkpoint_of(&lk, &lv, &["a", "b", "c"]);
        let line = w.add(format!("old 0\n\n{a}").as_bytes()).await.unwrap();
        let sig = NoteSignature::parse_line(line.trim_end()).unwrap();
        let note = Note::parse(a.as_bytes()).unwrap();
        assert!(w.verifier_key().verify(&note.text, &sig).unwrap().is_some());

        // Restarted: it remembers size 3 and refuses another root for it.
        drop(w);
        let w = Witness::open("w.example/1", wk(), vec![lv.clone()], state).unwrap();
        let fork = checkpoint_of(&lk, &lv, &["a", "b", "x"]);
        let Err(Refusal(status, why)) = w.add(format!("old 0\n\n{fork}").as_bytes()).await else {
            panic!("cosigned a fork");
        };
        assert_eq!((status, why.as_str()), (StatusCode::CONFLICT, "3"));
        let Err(Refusal(status, why)) = w.add(format!("old 3\n\n{fork}").as_bytes()).await else {
            panic!("cosigned a fork");
        };
        assert_eq!(status, StatusCode::CONFLICT);
        assert!(why.contains("forked"), "{why}");
    }
}
