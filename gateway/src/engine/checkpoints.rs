//! Signed checkpoints of the ledger (spec §6): made from the stored
//! tree, which covers only durable entries, so a checkpoint never names an
//! entry that is not durable; cosigned by the configured witnesses (C2SP
//! `tlog-witness`) when they answer; recorded in the ledger, where every
//! server sharing it reads the latest.
//!
//! A checkpoint is made when the tree has grown past the latest one and
//! either the interval has passed since this server made one or the
//! entries threshold is reached. A witness that is down or refuses costs
//! only its cosignature on this checkpoint; the next one asks it again.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tollgate_ledger::{Ledger, tree};
use tollgate_protocol::checkpoint::{
    Checkpoint, NOTE_ED25519, Note, NoteSignature, VerifierKey, hash_b64,
};
use tollgate_protocol::{Value, parse};
use tollgate_signer::AnySigner;

use super::Checkpoints;

/// A witness the gateway asks to cosign its checkpoints.
#[derive(Clone, Debug)]
pub struct WitnessSetting {
    /// Its submission prefix: `add-checkpoint` is posted under it.
    pub url: String,
    /// Its cosigning key (type 0x04).
    pub key: VerifierKey,
}

impl std::str::FromStr for WitnessSetting {
    type Err = crate::Error;

    /// A `--witness` setting: its verifier key and its URL prefix,
    /// separated by a space ("NAME+ID+KEY https://w.example/").
    fn from_str(w: &str) -> Result<Self, Self::Err> {
        let bad = crate::Error::Config;
        let (vkey, url) = w
            .trim()
            .split_once(' ')
            .ok_or_else(|| bad("a verifier key and a URL, separated by a space".into()))?;
        let key = VerifierKey::parse(vkey).map_err(|e| bad(e.to_string()))?;
        if key.kind != tollgate_protocol::checkpoint::NOTE_COSIGNATURE {
            return Err(bad(format!(
                "{vkey} is not a witness cosigning key (type 0x04)"
            )));
        }
        let url = url.trim();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(bad(format!("{url:?} is not an http(s) URL")));
        }
        Ok(Self {
            url: url.to_owned(),
            key,
        })
    }
}

/// How checkpoints are made.
#[derive(Debug)]
pub struct CheckpointSettings {
    /// The checkpoint key (Ed25519: a key file or a KMS key).
    pub key: AnySigner,
    /// The origin to record if the ledger has none yet.
    pub origin: String,
    /// Whether `origin` was asked for explicitly: then a ledger recorded
    /// under another origin is refused rather than kept.
    pub origin_explicit: bool,
    /// At most one checkpoint per this much time...
    pub interval: Duration,
    /// ...unless this many entries arrived since the latest.
    pub entries: u64,
    /// Witnesses to ask for cosignatures.
    pub witnesses: Vec<WitnessSetting>,
    /// Time a witness has to answer.
    pub witness_timeout: Duration,
}

struct Witness {
    setting: WitnessSetting,
    /// The size it last cosigned, as far as this server knows.
    cosigned: Mutex<u64>,
}

/// A checkpoint this server signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Made {
    /// Its size.
    pub size: u64,
    /// Whether it was recorded (not, if another server recorded a larger
    /// one meanwhile).
    pub recorded: bool,
    /// The witnesses that did not cosign it, by name.
    pub missing: Vec<String>,
}

/// Makes and publishes checkpoints for one ledger.
pub struct Checkpointer {
    key: AnySigner,
    vkey: VerifierKey,
    interval: Duration,
    entries: u64,
    witnesses: Vec<Witness>,
    timeout: Duration,
    last: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointer")
            .field("key", &self.vkey.to_string())
            .finish_non_exhaustive()
    }
}

/// Why checkpoints cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The ledger failed.
    #[error(transparent)]
    Ledger(#[from] tollgate_ledger::Error),
    /// The origin setting is unusable or contradicts the ledger's, or the
    /// key is not an Ed25519 key.
    #[error("{0}")]
    Origin(String),
    /// The key could not sign (a KMS error).
    #[error("checkpoint key: {0}")]
    Sign(#[from] tollgate_signer::Error),
}

impl Checkpointer {
    /// Settles the ledger's origin (recorded at its first start, kept
    /// after) and prepares the checkpoint key under it.
    pub async fn open<L: Ledger>(
        ledger: &L,
        settings: CheckpointSettings,
    ) -> Result<Self, CheckpointError> {
        let bad = |e: tollgate_protocol::Error| CheckpointError::Origin(format!("origin: {e}"));
        let public = settings.key.ed25519_public().ok_or_else(|| {
            CheckpointError::Origin(
                "the checkpoint key must be an Ed25519 key (C2SP signed notes)".into(),
            )
        })?;
        VerifierKey::new(&settings.origin, NOTE_ED25519, public).map_err(bad)?;
        let origin = ledger
            .origin(Some(&settings.origin))
            .await?
            .ok_or_else(|| CheckpointError::Origin("the ledger recorded no origin".into()))?;
        if settings.origin_explicit && origin != settings.origin {
            return Err(CheckpointError::Origin(format!(
                "the ledger's origin is {origin:?}, chosen at its creation; it cannot become {:?}",
                settings.origin
            )));
        }
        let vkey = VerifierKey::new(&origin, NOTE_ED25519, public).map_err(bad)?;
        Ok(Self {
            key: settings.key,
            vkey,
            interval: settings.interval,
            entries: settings.entries.max(1),
            witnesses: settings
                .witnesses
                .into_iter()
                .map(|setting| Witness {
                    setting,
                    cosigned: Mutex::new(0),
                })
                .collect(),
            timeout: settings.witness_timeout,
            last: Mutex::new(None),
        })
    }

    /// The note verifier key of the checkpoints (`origin+id+key`).
    pub fn verifier_key(&self) -> &VerifierKey {
        &self.vkey
    }

    /// Makes a checkpoint of the stored tree if one is due.
    pub async fn tick<L: Ledger>(&self, ledger: &L) -> Result<Option<Made>, CheckpointError> {
        let size = ledger.tree_size().await?;
        let latest = ledger.checkpoint().await?.map_or(0, |(s, _)| s);
        if size <= latest {
            return Ok(None);
        }
        let due = self
            .last
            .lock()
            .map(|l| l.is_none_or(|t| t.elapsed() >= self.interval))
            .unwrap_or(true);
        if !due && size - latest < self.entries {
            return Ok(None);
        }
        let made = self.make(ledger, size).await?;
        if let Ok(mut l) = self.last.lock() {
            *l = Some(Instant::now());
        }
        Ok(Some(made))
    }

    /// Signs the checkpoint of the first `size` entries, gathers the
    /// witnesses' cosignatures and records it unless a larger one is
    /// recorded already.
    pub async fn make<L: Ledger>(&self, ledger: &L, size: u64) -> Result<Made, CheckpointError> {
        let note = self.sign(ledger, size).await?;
        let mut cosigned = note.clone();
        let mut missing = Vec::new();
        for w in &self.witnesses {
            let sigs = self.cosign(ledger, w, size, &note).await;
            if sigs.is_empty() {
                missing.push(w.setting.key.name.clone());
            }
            cosigned.signatures.extend(sigs);
        }
        let recorded = ledger.put_checkpoint(size, cosigned.to_text()).await?;
        Ok(Made {
            size,
            recorded,
            missing,
        })
    }

    /// The checkpoint of the first `size` entries, signed by the log key
    /// only.
    pub async fn sign<L: Ledger>(&self, ledger: &L, size: u64) -> Result<Note, CheckpointError> {
        let root = tree::root(ledger, size).await?;
        let head = if size == 0 {
            ledger.hash_alg().zero().to_string()
        } else {
            let lines = ledger.lines(size, 1).await?;
            let corrupt = || tollgate_ledger::Error::Corrupt {
                seq: size,
                reason: "the entry has no hash".into(),
            };
            let line = lines.first().ok_or_else(corrupt)?;
            match parse(line).ok() {
                Some(Value::Object(o)) => o
                    .get("hash")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(corrupt)?,
                _ => return Err(corrupt().into()),
            }
        };
        let text = Checkpoint {
            origin: self.vkey.name.clone(),
            size,
            root,
            head,
        }
        .text();
        let sig = self.key.sign_ed25519_raw(text.as_bytes()).await?;
        Ok(Note {
            text,
            signatures: vec![NoteSignature {
                name: self.vkey.name.clone(),
                key_id: self.vkey.id(),
                bytes: sig.to_vec(),
            }],
        })
    }

    /// Asks `w` to cosign `note` (of `size` entries): its valid
    /// cosignatures, none if it is down or refuses.
    async fn cosign<L: Ledger>(
        &self,
        ledger: &L,
        w: &Witness,
        size: u64,
        note: &Note,
    ) -> Vec<NoteSignature> {
        let mut old = w.cosigned.lock().map(|c| *c).unwrap_or(0);
        // Twice at most: the second time from the size the witness says
        // it holds (a 409), which this server may not have known.
        for _ in 0..2 {
            if old > size {
                return Vec::new();
            }
            let Ok(proof) = tree::consistency(ledger, old, size).await else {
                return Vec::new();
            };
            let mut body = format!("old {old}\n");
            for h in &proof {
                body.push_str(&hash_b64(h));
                body.push('\n');
            }
            body.push('\n');
            body.push_str(&note.to_text());
            let url = format!("{}/add-checkpoint", w.setting.url.trim_end_matches('/'));
            let timeout = self.timeout;
            let answer = crate::outbound::exchange(timeout, 64 * 1024, move |agent| {
                agent.post(&url).send(body.as_bytes())
            })
            .await;
            // A body that is not UTF-8 holds no signature line, and no size.
            let answer =
                answer.map(|a| a.map(|(s, b)| (s, String::from_utf8_lossy(&b).into_owned())));
            match answer {
                Ok(Ok((200, text))) => {
                    let sigs: Vec<NoteSignature> = text
                        .lines()
                        .filter_map(|l| NoteSignature::parse_line(l).ok())
                        .filter(|s| {
                            w.setting.key.claims(s) && w.setting.key.verify(&note.text, s).is_ok()
                        })
                        .collect();
                    if !sigs.is_empty()
                        && let Ok(mut c) = w.cosigned.lock()
                    {
                        *c = size;
                    }
                    return sigs;
                }
                Ok(Ok((409, text))) => match text.trim_end().parse::<u64>() {
                    Ok(theirs) if theirs != old => old = theirs,
                    _ => return Vec::new(),
                },
                _ => return Vec::new(),
            }
        }
        Vec::new()
    }
}

impl<L: Ledger> Checkpoints<'_, L> {
    /// Grows the ledger's Merkle tree (spec §6) over entries once
    /// they are durable, every `every`, for as long as the gateway lives,
    /// and makes checkpoints of it when they are enabled and due.
    pub fn spawn_tree(&self, every: std::time::Duration) {
        // A failure is tried again next time; the tree never runs ahead of
        // durable entries.
        self.spawn_every(every, |g| async move {
            if tollgate_ledger::tree::grow(&g.ledger).await.is_ok()
                && let Some(c) = g.checkpointer.get()
            {
                let now = g.clock.now();
                match c.tick(&g.ledger).await {
                    Ok(Some(made)) => {
                        g.metrics.checkpoint(made.size, made.missing.len());
                        for w in &made.missing {
                            crate::observe::event(
                                now.as_str(),
                                "checkpoint_not_cosigned",
                                &[("size", made.size.to_string()), ("witness", w.clone())],
                            );
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        g.metrics.checkpoint_failed();
                        crate::observe::event(
                            now.as_str(),
                            "checkpoint_failed",
                            &[("error", e.to_string())],
                        );
                    }
                }
            }
        });
    }

    /// Enables checkpoints: settles the ledger's origin and keeps the
    /// checkpoint key; [`Checkpoints::spawn_tree`] then makes them.
    pub async fn enable_checkpoints(
        &self,
        settings: CheckpointSettings,
    ) -> Result<Arc<Checkpointer>, CheckpointError> {
        let c = Arc::new(Checkpointer::open(&self.ledger, settings).await?);
        Ok(self.checkpointer.get_or_init(|| c).clone())
    }

    /// What makes the checkpoints, if they are enabled.
    pub fn checkpointer(&self) -> Option<Arc<Checkpointer>> {
        self.checkpointer.get().cloned()
    }
}
