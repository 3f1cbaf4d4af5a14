//! Checkpoints, proofs and witnesses (spec §6), black-box: the
//! gateway's checkpoints, proofs and tiles checked by an implementation
//! written from RFC 6962 and the C2SP specs alone
//! (`tests/fixtures/check_checkpoints.py`); a cut export, a rewritten and
//! re-signed one and a forked checkpoint caught by `tollgate-verify` and by
//! a witness; a witness killed and restarted that still refuses the fork.

use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use tollgate_gateway::checkpoints::{CheckpointSettings, Checkpointer};
use tollgate_ledger::prelude::*;
use tollgate_ledger::{SqliteLedger, SqliteOptions, tree};
use tollgate_protocol::checkpoint::{
    Checkpoint, NOTE_ED25519, Note, NoteSignature, TreeBuilder, VerifierKey, hash_b64,
};
use tollgate_protocol::{
    Domain, LedgerEntry, Object, Timestamp, Value, canonical, parse, seal_receipt,
};
use tollgate_signer::Ed25519Signer;
use tollgate_tests::gateway::{Gateway, intent};
use tollgate_tests::{bin, python, receipt, verify_cmd};

/// Runs the independent checker on `case` (written to `dir`).
fn independent_check(dir: &Path, case: Value) -> String {
    let path = dir.join("case.json");
    std::fs::write(&path, canonical(&case)).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/check_checkpoints.py");
    let out = Command::new(python())
        .arg(&script)
        .arg("--case")
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python()));
    assert!(
        out.status.success(),
        "the independent checker refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn proof_value(p: &[[u8; 32]]) -> Value {
    Value::Array(p.iter().map(|h| hash_b64(h).into()).collect())
}

fn int(n: u64) -> Value {
    Value::integer(n as i64).unwrap()
}

/// The sizes a proof is checked at for a tree of `n`: the ends, the
/// middle, and each side of every power of two.
fn probes(n: u64) -> BTreeSet<u64> {
    let mut s: BTreeSet<u64> = [1, n, n.div_ceil(2)].into();
    let mut p = 1;
    while p <= n {
        for q in [p - 1, p, p + 1] {
            if (1..=n).contains(&q) {
                s.insert(q);
            }
        }
        p *= 2;
    }
    s
}

/// Checkpoints under `origin`, asked for explicitly, made at once.
fn settings(key: Ed25519Signer, origin: &str) -> CheckpointSettings {
    CheckpointSettings {
        key: tollgate_signer::AnySigner::File(key),
        origin: origin.into(),
        origin_explicit: true,
        interval: std::time::Duration::from_millis(10),
        entries: 1,
        witnesses: Vec::new(),
        witness_timeout: std::time::Duration::from_secs(1),
    }
}

#[tokio::test]
async fn checkpoints_proofs_and_tiles_of_every_size_to_300_verify_independently() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = SqliteLedger::open(SqliteOptions::new(dir.path().join("ledger.db")))
        .await
        .unwrap();
    let signer = Ed25519Signer::from_secret(&[5; 32]);
    for n in 1..=300u64 {
        let r = receipt(n);
        let sig = signer.sign_now(Domain::Receipt, &r);
        ledger.append(r, sig, None).await.unwrap();
    }
    assert_eq!(tree::grow(&ledger).await.unwrap(), 300);
    let key = Ed25519Signer::from_secret(&[6; 32]);
    let c = Checkpointer::open(&ledger, settings(key, "example.com/refunds-test"))
        .await
        .unwrap();

    let export = dir.path().join("export.jsonl");
    let mut bytes = Vec::new();
    for l in ledger.lines(1, 1000).await.unwrap() {
        bytes.extend_from_slice(&l);
        bytes.push(b'\n');
    }
    std::fs::write(&export, &bytes).unwrap();

    let mut checkpoints = Object::new();
    let (mut inclusion, mut consistency) = (Vec::new(), Vec::new());
    for n in 1..=300u64 {
        let note = c.sign(&ledger, n).await.unwrap();
        checkpoints.insert(n.to_string().as_str(), note.to_text().into());
        for seq in probes(n) {
            let p = tree::inclusion(&ledger, seq, n).await.unwrap();
            inclusion.push(Value::Array(vec![int(seq), int(n), proof_value(&p)]));
        }
        for m in probes(n) {
            let p = tree::consistency(&ledger, m, n).await.unwrap();
            consistency.push(Value::Array(vec![int(m), int(n), proof_value(&p)]));
        }
    }
    let mut tiles = Object::new();
    for path in ["0/000", "0/001.p/44", "1/000.p/1"] {
        let t = tree::TilePath::parse(path).unwrap();
        let data = tree::tile(&ledger, t, 300).await.unwrap().unwrap();
        tiles.insert(path, b64(&data).into());
    }
    // A tile the tree of 300 does not hold yet is not served.
    let beyond = tree::TilePath::parse("0/001").unwrap();
    assert_eq!(tree::tile(&ledger, beyond, 300).await.unwrap(), None);

    let mut case = Object::new();
    case.insert("export", export.display().to_string().into());
    case.insert("vkey", c.verifier_key().to_string().into());
    case.insert("checkpoints", Value::Object(checkpoints));
    case.insert("inclusion", Value::Array(inclusion));
    case.insert("consistency", Value::Array(consistency));
    case.insert("tiles", Value::Object(tiles));
    case.insert("tile_size", int(300));
    let said = independent_check(dir.path(), Value::Object(case));
    assert!(said.starts_with("ok: 300 checkpoints"), "{said}");

    // The origin is the one recorded at creation: another is refused.
    let other = Checkpointer::open(
        &ledger,
        settings(Ed25519Signer::from_secret(&[6; 32]), "example.com/another"),
    )
    .await
    .unwrap_err();
    assert!(other.to_string().contains("refunds-test"), "{other}");
}

fn b64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// A running `tollgate witness serve`.
struct WitnessProcess {
    child: Child,
    url: String,
}

impl Drop for WitnessProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn witness_key(dir: &Path) -> (PathBuf, String) {
    let key = dir.join("witness.jwk");
    let out = Command::new(bin("tollgate"))
        .args(["witness", "key", "--name", "witness.test/w1", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    (
        key,
        String::from_utf8(out.stdout).unwrap().trim().to_owned(),
    )
}

fn start_witness(key: &Path, log_vkey: &str, state: &Path, listen: &str) -> WitnessProcess {
    let mut child = Command::new(bin("tollgate"))
        .args(["witness", "serve", "--name", "witness.test/w1", "--key"])
        .arg(key)
        .args(["--log", log_vkey, "--state"])
        .arg(state)
        .args(["--listen", listen])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = loop {
        let line = lines.next().expect("the witness exited").unwrap();
        if let Some(u) = line.strip_prefix("listening on ") {
            break u.to_owned();
        }
    };
    WitnessProcess { child, url }
}

fn post(url: &str, body: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent.post(url).send(body.as_bytes()).unwrap();
    (
        resp.status().as_u16(),
        resp.body_mut().read_to_string().unwrap(),
    )
}

fn get_text(g: &Gateway, path: &str) -> String {
    let (code, body) = g.get(path);
    assert_eq!(code, 200, "{path}: {}", String::from_utf8_lossy(&body));
    String::from_utf8(body).unwrap()
}

/// Waits until the gateway's latest checkpoint covers its whole ledger.
fn settled_checkpoint(g: &Gateway) -> String {
    settled_checkpoint_signed(g, 1)
}

/// Waits until the gateway's latest checkpoint covers its whole ledger
/// and carries `signatures` signatures (the log's, and its witnesses').
fn settled_checkpoint_signed(g: &Gateway, signatures: usize) -> String {
    let head = g.head_seq() as u64;
    let mut latest = String::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        let (code, body) = g.get("/log/checkpoint");
        if code == 200 {
            let text = String::from_utf8(body).unwrap();
            let note = Note::parse(text.as_bytes()).unwrap();
            if Checkpoint::parse_text(&note.text).unwrap().size == head
                && note.signatures.len() >= signatures
            {
                return text;
            }
            latest = text;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("no checkpoint of {head} entries with {signatures} signatures; the latest:\n{latest}");
}

/// The value of the metric line `name value` of `g`, once there is one.
fn metric(g: &Gateway, name: &str) -> Option<u64> {
    get_text(g, "/metrics")
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

fn submit(g: &Gateway, agent: &Ed25519Signer, from: usize, n: usize) {
    for i in from..from + n {
        let (code, _, body, _) = g.post_raw(
            "application/json",
            &intent(agent, &format!("cp-{i}"), "order:o-1001", 1_000, |_| {}),
            None,
        );
        assert!(
            code == 200 || code == 202,
            "{code} {}",
            String::from_utf8_lossy(&body)
        );
    }
}

/// Re-seals and re-signs every entry from `from` on with `signer` (the
/// gateway's own key: an insider rewriting history), changing entry
/// `from`'s receipt with `edit`.
fn rewrite(
    export: &[u8],
    from: usize,
    signer: &Ed25519Signer,
    edit: impl Fn(&mut Object),
) -> Vec<u8> {
    let lines: Vec<Value> = export
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| parse(l).unwrap())
        .collect();
    let mut out = Vec::new();
    let mut prev = None;
    for (i, e) in lines.iter().enumerate() {
        let seq = i + 1;
        let o = e.as_object().unwrap();
        if seq < from {
            out.extend_from_slice(&canonical(e));
            out.push(b'\n');
            prev = Some(
                tollgate_protocol::HashValue::parse(o.get("hash").unwrap().as_str().unwrap())
                    .unwrap(),
            );
            continue;
        }
        let mut r = o.get("receipt").unwrap().as_object().unwrap().clone();
        if seq == from {
            edit(&mut r);
        }
        r.remove("receipt_id");
        let r = Value::Object(seal_receipt(r));
        let sig = signer.sign_now(Domain::Receipt, &r);
        let at = Timestamp::parse(o.get("appended_at").unwrap().as_str().unwrap()).unwrap();
        let entry = LedgerEntry::seal(seq as u64, prev.unwrap(), at, r, sig);
        prev = Some(entry.hash);
        out.extend_from_slice(&entry.to_canonical());
        out.push(b'\n');
    }
    out
}

/// The checkpoint of the entries in `export` (plus a leaf `extra`, which
/// is no entry), signed with `key` under `vk`'s name: what an insider
/// holding the checkpoint key could publish.
fn signed_checkpoint(
    export: &[u8],
    extra: Option<&[u8]>,
    key: &Ed25519Signer,
    vk: &VerifierKey,
) -> String {
    let mut t = TreeBuilder::new();
    let mut head = String::new();
    for l in export.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        t.push(l);
        let e = parse(l).unwrap();
        head = e
            .as_object()
            .unwrap()
            .get("hash")
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned();
    }
    if let Some(x) = extra {
        t.push(x);
    }
    let text = Checkpoint {
        origin: vk.name.clone(),
        size: t.size(),
        root: t.root(),
        head,
    }
    .text();
    Note {
        signatures: vec![NoteSignature {
            name: vk.name.clone(),
            key_id: vk.id(),
            bytes: key.sign_raw(text.as_bytes()).to_vec(),
        }],
        text,
    }
    .to_text()
}

fn verify(args: &[&str]) -> (i32, String) {
    let out = verify_cmd(args);
    (
        out.status.code().unwrap(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A gateway whose checkpoints a witness cosigns; two settled checkpoints
/// of its ledger (`old.cp`, `new.cp`), its export and its keys, written to
/// a folder of their own.
struct Cosigned {
    // Fields drop in order: the witness, then the gateway, then the folder.
    witness: WitnessProcess,
    g: Gateway,
    agent: Ed25519Signer,
    wkey_file: PathBuf,
    wvkey: String,
    vkey: String,
    state: PathBuf,
    new: String,
    old_size: u64,
    size: u64,
    export: Vec<u8>,
    /// `export.jsonl`, `jwks.json` and `new.cp` in the folder.
    files: [String; 3],
    tmp: tempfile::TempDir,
}

impl Cosigned {
    fn w(&self) -> &Path {
        self.tmp.path()
    }

    fn p(&self, n: &str) -> String {
        self.w().join(n).display().to_string()
    }

    /// The whole export against the cosigned checkpoint.
    fn full(&self) -> [&str; 10] {
        let [export, jwks, new] = &self.files;
        [
            "ledger",
            export,
            "--keys",
            jwks,
            "--checkpoint",
            new,
            "--checkpoint-key",
            &self.vkey,
            "--witness-key",
            &self.wvkey,
        ]
    }
}

fn cosigned_gateway_and_witness() -> Cosigned {
    let tmp = tempfile::tempdir().unwrap();
    let w = tmp.path();
    let (wkey_file, wvkey) = witness_key(w);
    // The log key is only known once the gateway made its data folder:
    // start it, learn the key, then start the witness and restart.
    let g = Gateway::start_with(
        tempfile::tempdir().unwrap(),
        |_| {},
        &[
            "--origin",
            "gateway.test/refunds",
            "--checkpoint-interval-ms",
            "20",
        ],
    );
    let key_out = Command::new(bin("tollgate"))
        .args(["checkpoint", "key", "--data-dir"])
        .arg(g.data())
        .output()
        .unwrap();
    assert!(key_out.status.success(), "{key_out:?}");
    let vkey = String::from_utf8(key_out.stdout).unwrap().trim().to_owned();
    assert_eq!(
        get_text(&g, "/.well-known/tollgate-checkpoint-key").trim(),
        vkey
    );
    assert!(vkey.starts_with("gateway.test/refunds+"), "{vkey}");
    let state = w.join("witness-state.json");
    let witness = start_witness(&wkey_file, &vkey, &state, "127.0.0.1:0");
    let witness_arg = format!("{wvkey} {}", witness.url);
    // The witness answers however busy the machine is: a slow answer must
    // not cost the checkpoints below their cosignature.
    let g = g.restart_with(&[
        "--origin",
        "gateway.test/refunds",
        "--checkpoint-interval-ms",
        "20",
        "--witness",
        &witness_arg,
        "--witness-timeout-ms",
        "30000",
    ]);
    let agent = g.agent();
    submit(&g, &agent, 0, 6);
    let old = settled_checkpoint_signed(&g, 2);
    let old_size = g.head_seq() as u64;
    submit(&g, &agent, 6, 5);
    let new = settled_checkpoint_signed(&g, 2);
    let size = g.head_seq() as u64;

    let export = get_text(&g, "/v1/ledger/export").into_bytes();
    let jwks = get_text(&g, "/.well-known/jwks.json");
    for (name, bytes) in [
        ("export.jsonl", &export[..]),
        ("jwks.json", jwks.as_bytes()),
        ("old.cp", old.as_bytes()),
        ("new.cp", new.as_bytes()),
    ] {
        std::fs::write(w.join(name), bytes).unwrap();
    }
    let p = |n: &str| w.join(n).display().to_string();
    Cosigned {
        witness,
        g,
        agent,
        wkey_file,
        wvkey,
        vkey,
        state,
        new,
        old_size,
        size,
        files: [p("export.jsonl"), p("jwks.json"), p("new.cp")],
        export,
        tmp,
    }
}

/// The whole export verifies against the cosigned checkpoint; usage errors
/// (exit 2) and a checkpoint that is not one (exit 1) are refused.
fn the_whole_export_verifies_and_bad_arguments_are_refused(s: &Cosigned) {
    let (w, full) = (s.w(), s.full());
    let p = |n: &str| s.p(n);
    let (code, said) = verify(&full);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("cosigned by witness.test/w1"), "{said}");

    // Usage errors (exit 2) and a checkpoint that is not one (exit 1).
    let (code, said) = verify(
        &full[..4]
            .iter()
            .chain(&full[6..8])
            .copied()
            .collect::<Vec<_>>(),
    );
    assert_eq!(code, 2, "a key without a checkpoint: {said}");
    assert!(said.contains("give --checkpoint too"), "{said}");
    let mut bad_key = full;
    bad_key[7] = "gateway.test/refunds+00000000+AQ==";
    let (code, said) = verify(&bad_key);
    assert_eq!(code, 2, "{said}");
    assert!(said.contains("32-byte"), "{said}");
    std::fs::write(w.join("garbled.cp"), s.new.replacen('\n', "\n\u{7}", 1)).unwrap();
    let garbled = p("garbled.cp");
    let mut bad_cp = full;
    bad_cp[5] = &garbled;
    let (code, said) = verify(&bad_cp);
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("control character"), "{said}");
}

/// Inclusion of one receipt, and consistency between the checkpoints, from
/// the gateway's proof endpoints: checked by the verifier, and the same
/// checkpoint, proofs and tiles checked independently.
fn the_proofs_verify_and_check_out_independently(s: &Cosigned) {
    let (g, w) = (&s.g, s.w());
    let p = |n: &str| s.p(n);
    let (vkey, wvkey) = (&s.vkey, &s.wvkey);
    let (old_size, size, new, export) = (s.old_size, s.size, &s.new, &s.export);
    let seq = old_size - 2;
    let proof = get_text(g, &format!("/v1/proofs/inclusion?seq={seq}&size={size}"));
    std::fs::write(w.join("incl.json"), &proof).unwrap();
    let entry = export
        .split(|b| *b == b'\n')
        .nth(seq as usize - 1)
        .unwrap()
        .to_vec();
    std::fs::write(w.join("entry.json"), &entry).unwrap();
    let (code, said) = verify(&[
        "inclusion",
        &p("entry.json"),
        "--proof",
        &p("incl.json"),
        "--keys",
        &p("jwks.json"),
        "--checkpoint",
        &p("new.cp"),
        "--checkpoint-key",
        vkey,
        "--witness-key",
        wvkey,
    ]);
    assert_eq!(code, 0, "{said}");
    let cons = get_text(
        g,
        &format!("/v1/proofs/consistency?from={old_size}&to={size}"),
    );
    std::fs::write(w.join("cons.json"), &cons).unwrap();
    let (code, said) = verify(&[
        "consistency",
        &p("old.cp"),
        &p("new.cp"),
        "--proof",
        &p("cons.json"),
        "--checkpoint-key",
        vkey,
        "--witness-key",
        wvkey,
    ]);
    assert_eq!(code, 0, "{said}");

    // The same checkpoint, proofs and tiles, checked independently.
    let mut checkpoints = Object::new();
    checkpoints.insert(size.to_string().as_str(), new.clone().into());
    let field = |doc: &str, k: &str| {
        parse(doc.as_bytes())
            .unwrap()
            .as_object()
            .unwrap()
            .get(k)
            .unwrap()
            .clone()
    };
    let mut case = Object::new();
    case.insert("export", p("export.jsonl").into());
    case.insert("vkey", vkey.clone().into());
    case.insert("witness_vkeys", Value::Array(vec![wvkey.clone().into()]));
    case.insert("checkpoints", Value::Object(checkpoints));
    case.insert(
        "inclusion",
        Value::Array(vec![Value::Array(vec![
            int(seq),
            int(size),
            field(&proof, "proof"),
        ])]),
    );
    case.insert(
        "consistency",
        Value::Array(vec![Value::Array(vec![
            int(old_size),
            int(size),
            field(&cons, "proof"),
        ])]),
    );
    let mut tiles = Object::new();
    let tile_path = format!("0/000.p/{size}");
    let (code, tile) = g.get(&format!("/log/tile/{tile_path}"));
    assert_eq!(code, 200);
    tiles.insert(tile_path.as_str(), b64(&tile).into());
    case.insert("tiles", Value::Object(tiles));
    case.insert("tile_size", int(size));
    let said = independent_check(w, Value::Object(case));
    assert!(said.starts_with("ok: 1 checkpoints"), "{said}");
}

/// An export cut by one entry, and one rewritten and re-signed with the
/// gateway's own key, are caught against the checkpoint. Returns the cut's
/// length and the rewritten export.
fn a_cut_and_a_rewrite_are_caught(s: &Cosigned) -> (usize, Vec<u8>) {
    let (g, w, full) = (&s.g, s.w(), s.full());
    let p = |n: &str| s.p(n);
    let export = &s.export;
    // 1. Cut by one entry: a valid chain, but shorter than the checkpoint.
    let cut_len = export.len()
        - 1
        - export[..export.len() - 1]
            .iter()
            .rev()
            .position(|b| *b == b'\n')
            .unwrap();
    std::fs::write(w.join("cut.jsonl"), &export[..cut_len]).unwrap();
    let mut cut = full;
    let cut_path = p("cut.jsonl");
    cut[1] = &cut_path;
    let (code, said) = verify(&cut);
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("cut off"), "{said}");
    // Without the checkpoint the cut is a valid chain: that is the gap.
    let (code, _) = verify(&["ledger", &cut_path, "--keys", &p("jwks.json")]);
    assert_eq!(code, 0);

    // 2. One entry changed, everything after re-hashed and re-signed with
    // the gateway's own key: every signature holds, the tree does not.
    let gateway_key = Ed25519Signer::load(&g.data().join("gateway.jwk")).unwrap();
    let changed = rewrite(export, 4, &gateway_key, |r| {
        r.insert("issued_at", "2026-01-01T00:00:00Z".into());
    });
    std::fs::write(w.join("rewritten.jsonl"), &changed).unwrap();
    let rewritten = p("rewritten.jsonl");
    let (code, said) = verify(&["ledger", &rewritten, "--keys", &p("jwks.json")]);
    assert_eq!(code, 0, "the rewrite is a valid chain on its own: {said}");
    let mut rw = full;
    rw[1] = &rewritten;
    let (code, said) = verify(&rw);
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("hash to root"), "{said}");
    (cut_len, changed)
}

/// With the log's level-0 tiles, a rewrite and a deletion re-chained after
/// it (which needs no key) are named at the first seq where they part from
/// the history the checkpoint commits to; tiles that do not hash to its
/// root are not believed.
fn the_log_tiles_name_the_first_seq_where_histories_part(s: &Cosigned, changed: &[u8]) {
    let (g, w, full) = (&s.g, s.w(), s.full());
    let tiles = w.join("tiles");
    let mut k = 0;
    while k * 256 < s.size {
        let width = (s.size - k * 256).min(256);
        let name = format!(
            "0/{k:03}{}",
            if width < 256 {
                format!(".p/{width}")
            } else {
                String::new()
            }
        );
        let (code, tile) = g.get(&format!("/log/tile/{name}"));
        assert_eq!(code, 200, "{name}");
        std::fs::create_dir_all(tiles.join(&name).parent().unwrap()).unwrap();
        std::fs::write(tiles.join(&name), tile).unwrap();
        k += 1;
    }
    // Entry 3 deleted, the chain rebuilt after it with the receipts and
    // signatures as they were.
    let mut lines: Vec<Vec<u8>> = s
        .export
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    lines.remove(2);
    let mut prev = tollgate_protocol::HashAlg::Sha256.zero();
    let mut deleted = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let e = LedgerEntry::from_value(parse(l).unwrap()).unwrap();
        let n = LedgerEntry::seal(
            i as u64 + 1,
            prev,
            e.appended_at.clone(),
            e.receipt().clone(),
            e.signature.clone(),
        );
        prev = n.hash;
        deleted.extend_from_slice(&n.to_canonical());
        deleted.push(b'\n');
    }
    let tile_dir = tiles.display().to_string();
    for (name, bytes, seq) in [
        ("rewritten.jsonl", changed, 4),
        ("deleted.jsonl", &deleted[..], 3),
    ] {
        std::fs::write(w.join(name), bytes).unwrap();
        let path = s.p(name);
        let mut args = full.to_vec();
        args[1] = &path;
        args.extend(["--tiles", &tile_dir]);
        let (code, said) = verify(&args);
        assert_eq!(code, 1, "{said}");
        assert!(
            said.contains(&format!("the histories differ from seq {seq} on")),
            "{name}: {said}"
        );
        assert!(
            said.starts_with(&format!("invalid: seq {seq}: ")),
            "{name}: {said}"
        );
    }
    // Tiles of another history are not believed.
    let first = tiles.join(format!(
        "0/000{}",
        if s.size < 256 {
            format!(".p/{}", s.size)
        } else {
            String::new()
        }
    ));
    let mut bytes = std::fs::read(&first).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&first, bytes).unwrap();
    let path = s.p("rewritten.jsonl");
    let mut args = full.to_vec();
    args[1] = &path;
    args.extend(["--tiles", &tile_dir]);
    let (code, said) = verify(&args);
    assert_eq!(code, 1, "{said}");
    assert!(
        said.contains("do not hash to the checkpoint's root"),
        "{said}"
    );
}

/// A fork (the rewritten history's checkpoint of the same size, signed
/// with the gateway's own checkpoint key) is caught by the verifier.
/// Returns the fork, the checkpoint key and its verifier key.
fn a_fork_is_caught_by_the_verifier(
    s: &Cosigned,
    changed: &[u8],
) -> (String, Ed25519Signer, VerifierKey) {
    let (g, w, full) = (&s.g, s.w(), s.full());
    let p = |n: &str| s.p(n);
    let vkey = &s.vkey;
    let rewritten = p("rewritten.jsonl");
    let ckey = Ed25519Signer::load(&g.data().join("checkpoint.jwk")).unwrap();
    let vk = VerifierKey::parse(vkey).unwrap();
    assert_eq!(vk.kind, NOTE_ED25519);
    let fork = signed_checkpoint(changed, None, &ckey, &vk);
    std::fs::write(w.join("fork.cp"), &fork).unwrap();
    // Signed by the right key, it checks out alone and against its own
    // history...
    let mut forked = full;
    forked[1] = &rewritten;
    let fork_path = p("fork.cp");
    forked[5] = &fork_path;
    let (code, said) = verify(&forked[..8]);
    assert_eq!(code, 0, "{said}");
    // ...but beside the published checkpoint it is a fork,
    let (code, said) = verify(&[
        "consistency",
        &p("new.cp"),
        &fork_path,
        "--checkpoint-key",
        vkey,
    ]);
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("forked"), "{said}");
    // and it lacks the witness's cosignature.
    let mut fork_quorum = full;
    fork_quorum[1] = &rewritten;
    fork_quorum[5] = &fork_path;
    let (code, said) = verify(&fork_quorum);
    assert_eq!(code, 1, "{said}");
    assert!(said.contains("witness.test/w1"), "{said}");
    (fork, ckey, vk)
}

/// The witness refuses to cosign the fork, says why, and still does after
/// a SIGKILL and a restart; it refuses the cut history's checkpoint and a
/// made-up proof to the grown fork.
fn the_witness_refuses_the_fork_even_after_a_restart(
    s: &mut Cosigned,
    (fork, ckey, vk): &(String, Ed25519Signer, VerifierKey),
    cut_len: usize,
    changed: &[u8],
) {
    let (size, export) = (s.size, &s.export);
    let add = format!("{}/add-checkpoint", s.witness.url);
    let (code, said) = post(&add, &format!("old {size}\n\n{fork}"));
    assert_eq!(code, 409, "{said}");
    assert!(said.contains("forked"), "{said}");
    let _ = s.witness.child.kill();
    let _ = s.witness.child.wait();
    let addr = s.witness.url.trim_start_matches("http://").to_owned();
    s.witness = start_witness(&s.wkey_file, &s.vkey, &s.state, &addr);
    let (code, said) = post(&add, &format!("old {size}\n\n{fork}"));
    assert_eq!(code, 409, "after a restart: {said}");
    assert!(said.contains("forked"), "{said}");
    // An old size it did not cosign last is answered with the one it did.
    let (code, said) = post(&add, &format!("old 0\n\n{fork}"));
    assert_eq!((code, said.trim()), (409, size.to_string().as_str()));

    // The cut history's checkpoint (one entry fewer, signed by the same
    // key): the ledger would have shrunk, which the witness refuses.
    let cut_cp = signed_checkpoint(&export[..cut_len], None, ckey, vk);
    let (code, said) = post(&add, &format!("old {size}\n\n{cut_cp}"));
    assert_eq!(code, 400, "{said}");
    assert!(said.contains("larger than the checkpoint's"), "{said}");

    // The fork grown by one entry, with a proof from the fork's own tree:
    // not consistent with what the witness cosigned.
    let grown = signed_checkpoint(changed, Some(b"one more"), ckey, vk);
    // No proof can lead from the root the witness holds to the fork's; a
    // made-up one is refused as any would be.
    let (code, said) = post(
        &add,
        &format!("old {size}\n{}\n\n{grown}", hash_b64(&[7; 32])),
    );
    assert_eq!(code, 422, "{said}");
}

/// The gateway goes on: new entries, a new checkpoint the restarted witness
/// cosigns.
fn the_gateway_goes_on_and_the_restarted_witness_cosigns(s: &Cosigned) {
    let (g, w, agent) = (&s.g, s.w(), &s.agent);
    let p = |n: &str| s.p(n);
    let (vkey, wvkey) = (&s.vkey, &s.wvkey);
    submit(g, agent, 11, 3);
    let latest = settled_checkpoint_signed(g, 2);
    std::fs::write(w.join("latest.cp"), &latest).unwrap();
    let export = get_text(g, "/v1/ledger/export");
    std::fs::write(w.join("export2.jsonl"), &export).unwrap();
    let (code, said) = verify(&[
        "ledger",
        &p("export2.jsonl"),
        "--keys",
        &p("jwks.json"),
        "--checkpoint",
        &p("latest.cp"),
        "--checkpoint-key",
        vkey,
        "--witness-key",
        wvkey,
    ]);
    assert_eq!(code, 0, "{said}");
}

#[test]
fn a_cut_a_rewrite_and_a_fork_are_caught_by_the_verifier_and_the_witness() {
    let mut s = cosigned_gateway_and_witness();
    the_whole_export_verifies_and_bad_arguments_are_refused(&s);
    the_proofs_verify_and_check_out_independently(&s);
    let (cut_len, changed) = a_cut_and_a_rewrite_are_caught(&s);
    the_log_tiles_name_the_first_seq_where_histories_part(&s, &changed);
    let fork = a_fork_is_caught_by_the_verifier(&s, &changed);
    the_witness_refuses_the_fork_even_after_a_restart(&mut s, &fork, cut_len, &changed);
    the_gateway_goes_on_and_the_restarted_witness_cosigns(&s);
}

#[test]
fn the_log_endpoints_refuse_bad_queries_with_a_problem_and_a_down_witness_costs_its_cosignature_only()
 {
    let tmp = tempfile::tempdir().unwrap();
    let (_, wvkey) = witness_key(tmp.path());
    // Nothing listens there.
    let down = format!("{wvkey} http://127.0.0.1:9");
    let g = Gateway::start_with(
        tempfile::tempdir().unwrap(),
        |_| {},
        &["--checkpoint-interval-ms", "20", "--witness", &down],
    );
    submit(&g, &g.agent(), 0, 2);
    let cp = settled_checkpoint(&g);
    let size = g.head_seq();
    assert!(cp.starts_with("tollgate/"), "{cp}");
    let note = Note::parse(cp.as_bytes()).unwrap();
    assert_eq!(
        note.signatures.len(),
        1,
        "only the log's own signature: {cp}"
    );
    // Operators see it: a metric and a log record (written just after
    // the checkpoint is).
    let patience = std::time::Duration::from_secs(30);
    tollgate_tests::wait_until("the missed cosignature counted", patience, || {
        metric(&g, "tollgate_witness_cosignatures_missed_total").is_some_and(|n| n >= 1)
    });
    tollgate_tests::wait_until("the checkpoint's size in the metrics", patience, || {
        metric(&g, "tollgate_checkpoint_size") == Some(size as u64)
    });
    tollgate_tests::wait_until("the log record", patience, || {
        std::fs::read_to_string(g.dir.path().join("gateway.log"))
            .unwrap()
            .contains("checkpoint_not_cosigned")
    });
    for (path, code, want) in [
        ("/v1/proofs/inclusion?seq=0", 400, "seq=0"),
        ("/v1/proofs/inclusion", 400, "seq is required"),
        ("/v1/proofs/inclusion?seq=1&seq=2", 400, "given twice"),
        ("/v1/proofs/inclusion?seq=x", 400, "decimal"),
        ("/v1/proofs/inclusion?seq=1&size=999999", 404, "tree covers"),
        ("/v1/proofs/consistency?from=3&to=2", 400, "larger than"),
        (
            "/v1/proofs/consistency?from=1&what=2",
            400,
            "unknown query parameter",
        ),
        ("/log/tile/0/001", 404, "not in the tree"),
        ("/log/tile/0/01", 404, "not a tile path"),
        ("/log/tile/entries/000", 404, "entry bundles"),
    ] {
        let (got, body) = g.get(path);
        let body = String::from_utf8_lossy(&body);
        assert_eq!(got, code, "{path}: {body}");
        assert!(body.contains(want), "{path}: {body}");
        assert!(
            body.contains("\"type\""),
            "{path}: not a problem document: {body}"
        );
    }
    let (code, _) = g.get(&format!("/v1/proofs/inclusion?seq={size}"));
    assert_eq!(code, 200);

    // The origin was chosen when the ledger was made: another is refused
    // at start, as is a witness setting that is not one.
    // Stopped, its data folder kept.
    let mut g = g;
    let _ = g.child.kill();
    let _ = g.child.wait();
    let kept = std::mem::replace(&mut g.dir, tempfile::tempdir().unwrap());
    drop(g);
    let data = kept.path().join("data");
    let ftp = format!("{wvkey} ftp://witness.example/");
    for (args, want) in [
        (
            vec!["--origin", "other.example/log"],
            "chosen at its creation",
        ),
        (vec!["--witness", "not-a-key"], "a verifier key and a URL"),
        (vec!["--witness", &ftp], "not an http(s) URL"),
    ] {
        let mut child = Command::new(bin("tollgate"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // It must stop by itself; a gateway that started anyway is a failure.
        let started = std::time::Instant::now();
        while child.try_wait().unwrap().is_none() {
            if started.elapsed() > std::time::Duration::from_secs(30) {
                let _ = child.kill();
                panic!("{args:?}: the gateway started");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

/// Found by the API fuzz run: a proof asked for a tree larger than 2^63
/// entries overflowed the proof's index arithmetic and closed the
/// connection without an answer. A size beyond the stored tree is refused
/// first, as any size beyond it is.
#[test]
fn regression_proofs_of_trees_beyond_the_stored_one_are_refused_not_dropped() {
    let g = Gateway::start();
    for path in [
        "/v1/proofs/consistency?from=1&to=9223372036854775810",
        "/v1/proofs/consistency?from=2&to=18446744073709551615",
        "/v1/proofs/inclusion?seq=1&size=9223372036854775810",
    ] {
        let (code, body) = g.get(path);
        let text = String::from_utf8_lossy(&body);
        assert_eq!(code, 404, "{path}: {text}");
        assert!(
            text.contains("urn:tollgate:problem:not-found"),
            "{path}: {text}"
        );
    }
    assert_eq!(g.get("/healthz").0, 200);
}
