//! The gateway as agents use it: the real `tollgate serve` process on a
//! free loopback port, real HTTP, a real SQLite ledger. What the black-box
//! tests of the gateway share.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use tollgate_gateway::demo;
use tollgate_protocol::build::TokenPayload;
use tollgate_protocol::{Domain, KeySet, Object, Timestamp, Value, canonical, parse};
use tollgate_signer::Ed25519Signer;

use crate::{assert_export_verifies_with, bin, verify_cmd};

/// A running `tollgate serve` on a fresh data folder.
pub struct Gateway {
    /// The process.
    pub child: Child,
    /// Its base URL.
    pub url: String,
    /// Holds the data folder (`data/`) and the log.
    pub dir: tempfile::TempDir,
    /// Ledger entries written by the first start's import of the seed
    /// material (registry receipts), before any request.
    pub seeded: i64,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    /// Starts on a fresh data folder.
    pub fn start() -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), |_| {})
    }

    /// Starts on a fresh data folder; `prepare` may add files to it first
    /// (after the demo material is made by a first, short start).
    pub fn start_in(dir: tempfile::TempDir, prepare: impl FnOnce(&Path)) -> Self {
        Self::start_with(dir, prepare, &[])
    }

    /// [`Gateway::start_in`] with more `serve` arguments.
    pub fn start_with(dir: tempfile::TempDir, prepare: impl FnOnce(&Path), args: &[&str]) -> Self {
        let data = dir.path().join("data");
        if !data.exists() {
            init_demo(&data);
        }
        prepare(&data);
        let (child, url) = Self::spawn(&data, args);
        let mut g = Gateway {
            child,
            url,
            dir,
            seeded: 0,
        };
        // (Over HTTPS the test's client would need the test CA; those
        // tests count nothing.)
        if g.url.starts_with("http://") {
            g.seeded = g.head_seq();
        }
        g
    }

    /// Spawns `tollgate serve` on `data` and waits until it listens.
    pub fn spawn(data: &Path, args: &[&str]) -> (Child, String) {
        Self::spawn_env(data, args, &[])
    }

    /// [`Gateway::spawn`] with more environment variables.
    pub fn spawn_env(data: &Path, args: &[&str], env: &[(&str, String)]) -> (Child, String) {
        let (child, url, _) = Self::spawn_in(Command::new(bin("tollgate")), data, args, env);
        (child, url)
    }

    /// [`Gateway::spawn`] listening on `listen` (`127.0.0.1:PORT`), so
    /// that a gateway killed can come back where its clients look for it.
    pub fn spawn_at(data: &Path, listen: &str, args: &[&str]) -> (Child, String) {
        let (child, url, _) =
            Self::spawn_listening(Command::new(bin("tollgate")), data, listen, args, &[]);
        (child, url)
    }

    /// Starts on a fresh demo data folder with `args`, the process under a
    /// file descriptor limit of `nofile` (soft and hard, as `ulimit -n`
    /// sets it); also returns what it printed before it listened.
    pub fn start_with_nofile(nofile: u32, args: &[&str]) -> (Self, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        init_demo(&data);
        let mut sh = Command::new("sh");
        sh.arg("-c")
            .arg(format!("ulimit -n {nofile} && exec \"$0\" \"$@\""))
            .arg(bin("tollgate"));
        let (child, url, printed) = Self::spawn_in(sh, &data, args, &[]);
        let mut g = Gateway {
            child,
            url,
            dir,
            seeded: 0,
        };
        g.seeded = g.head_seq();
        (g, printed)
    }

    /// Runs `command serve` on `data` and waits until it listens; returns
    /// the process, its URL and the lines it printed before.
    fn spawn_in(
        command: Command,
        data: &Path,
        args: &[&str],
        env: &[(&str, String)],
    ) -> (Child, String, Vec<String>) {
        Self::spawn_listening(command, data, "127.0.0.1:0", args, env)
    }

    fn spawn_listening(
        mut command: Command,
        data: &Path,
        listen: &str,
        args: &[&str],
        env: &[(&str, String)],
    ) -> (Child, String, Vec<String>) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.with_file_name("gateway.log"))
            .unwrap();
        let mut child = command
            .args(["serve", "--listen", listen, "--data-dir"])
            .arg(data)
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut printed = Vec::new();
        let url = loop {
            let line = lines
                .next()
                .expect("gateway exited before listening")
                .unwrap();
            if let Some(addr) = line.strip_prefix("listening on ") {
                break addr.to_owned();
            }
            printed.push(line);
        };
        // Keep draining stdout so the gateway never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        (child, url, printed)
    }

    /// Kills the process and starts a new one on the same data folder.
    pub fn restart(self) -> Self {
        self.restart_with(&[])
    }

    /// Kills the process (SIGKILL) and starts a new one on the same data
    /// folder with `args`.
    pub fn restart_with(mut self, args: &[&str]) -> Self {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        let seeded = self.seeded;
        drop(self);
        let mut g = Gateway::start_with(dir, |_| {}, args);
        g.seeded = seeded;
        g
    }

    /// `tollgate bench --count COUNT --write-intents FILE`: signed intents
    /// of the demo agent, one per line; what it printed.
    pub fn write_intents(&self, count: usize, file: &Path) -> String {
        let out = std::process::Command::new(crate::bin("tollgate"))
            .args(["bench", "--count", &count.to_string(), "--write-intents"])
            .arg(file)
            .arg("--data-dir")
            .arg(self.data())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The data folder.
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The demo agent's key.
    pub fn agent(&self) -> Ed25519Signer {
        Ed25519Signer::load(&self.data().join("demo/agent.jwk")).unwrap()
    }

    /// Posts `body` to `/v1/intents`: status, content type, body, and
    /// whether it was a replay.
    pub fn post_raw(
        &self,
        content_type: &str,
        body: &[u8],
        key: Option<&str>,
    ) -> (u16, String, Vec<u8>, bool) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut req = agent
            .post(&format!("{}/v1/intents", self.url))
            .header("content-type", content_type);
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        let mut resp = req.send(body).unwrap();
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let replayed = resp.headers().get("idempotent-replayed").is_some();
        let body = resp
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .unwrap();
        (status, ct, body, replayed)
    }

    /// `GET path`: status and body. Sent with the admin token, which also
    /// opens the ledger and receipts of a gateway with a read token.
    pub fn get(&self, path: &str) -> (u16, Vec<u8>) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let token = std::fs::read_to_string(self.data().join("admin.token")).unwrap_or_default();
        let mut resp = agent
            .get(&format!("{}{path}", self.url))
            .header("authorization", &format!("Bearer {}", token.trim()))
            .call()
            .unwrap();
        let status = resp.status().as_u16();
        (
            status,
            resp.body_mut()
                .with_config()
                .limit(64 << 20)
                .read_to_vec()
                .unwrap(),
        )
    }

    /// Entries appended since the seed import.
    pub fn written(&self) -> i64 {
        self.head_seq() - self.seeded
    }

    /// A client of this gateway that holds the admin token.
    pub fn admin(&self) -> tollgate_client::Client {
        let token = std::fs::read_to_string(self.data().join("admin.token")).unwrap();
        tollgate_client::Client::new(&self.url).with_admin_token(&token)
    }

    /// A delegation token envelope by the demo issuer: refunds of any
    /// order for `agent` holding `agent_key` (a public JWK); `edit` may
    /// change the payload before it is signed.
    pub fn delegation(
        &self,
        id: &str,
        agent: &str,
        agent_key: Value,
        edit: impl FnOnce(&mut Object),
    ) -> Vec<u8> {
        let issuer = Ed25519Signer::load(&self.data().join("demo/issuer.jwk")).unwrap();
        let mut p = TokenPayload::new(
            id,
            demo::ISSUER,
            agent,
            agent_key,
            "2020-01-01T00:00:00Z",
            "2100-01-01T00:00:00Z",
        )
        .actions(&[demo::ACTION])
        .resources(&["order:*"])
        .into_value()
        .as_object()
        .unwrap()
        .clone();
        edit(&mut p);
        canonical(&issuer.envelope(Domain::Delegation, Value::Object(p)))
    }

    /// Publishes a version of the demo's refunds policy (its files in
    /// this gateway's data folder) with `edit` applied to its files (path
    /// to text) and `version` in its manifest, without activating it;
    /// returns the version published.
    pub fn publish_refunds_variant(
        &self,
        version: &str,
        edit: impl FnOnce(&mut std::collections::BTreeMap<String, String>),
    ) -> String {
        let mut files =
            tollgate_policies::Bundle::read_files(&self.data().join("policies/refunds")).unwrap();
        let toml = files.get_mut("bundle.toml").unwrap();
        *toml = toml.replacen(
            "version = \"1.0.0\"",
            &format!("version = \"{version}\""),
            1,
        );
        edit(&mut files);
        let mut fo = Object::new();
        for (k, v) in files {
            fo.insert(k, v.into());
        }
        let mut o = Object::new();
        o.insert("files", fo.into());
        let published = self
            .admin()
            .publish_policy(&canonical(&Value::Object(o)))
            .unwrap()
            .ok()
            .unwrap()
            .json()
            .unwrap();
        published
            .as_object()
            .and_then(|o| o.get("published"))
            .and_then(Value::as_str)
            .unwrap()
            .to_owned()
    }

    /// [`Gateway::publish_refunds_variant`], then activated; returns the
    /// version now in force.
    pub fn activate_refunds_variant(
        &self,
        version: &str,
        edit: impl FnOnce(&mut std::collections::BTreeMap<String, String>),
    ) -> String {
        let full = self.publish_refunds_variant(version, edit);
        let a = self.admin().activate_policy(&full).unwrap();
        assert_eq!(a.status, 200, "{}", a.text());
        full
    }

    /// The export verifies and re-decides offline, from the receipts
    /// alone (`tollgate-verify ledger --redecide`, exit 0).
    pub fn assert_export_redecides(&self) {
        self.assert_export_redecides_with(&[]);
    }

    /// [`Gateway::assert_export_redecides`] with more `tollgate-verify
    /// ledger` arguments (a gateway run with `--max-skew-seconds N` is
    /// verified with the same).
    pub fn assert_export_redecides_with(&self, extra: &[&str]) {
        let (_, export) = self.get("/v1/ledger/export");
        let (_, jwks) = self.get("/.well-known/jwks.json");
        assert_export_verifies_with(&export, &jwks, extra);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("export.jsonl"), &export).unwrap();
        std::fs::write(dir.path().join("jwks.json"), &jwks).unwrap();
        let (export_path, jwks_path) = (
            dir.path().join("export.jsonl"),
            dir.path().join("jwks.json"),
        );
        let mut args = vec![
            "ledger",
            export_path.to_str().unwrap(),
            "--keys",
            jwks_path.to_str().unwrap(),
            "--redecide",
        ];
        args.extend_from_slice(extra);
        let out = verify_cmd(&args);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("decisions re-decided, each byte for byte the same"),
            "{text}"
        );
    }

    /// The ledger head's seq.
    pub fn head_seq(&self) -> i64 {
        let (_, body) = self.get("/v1/ledger/head");
        parse(&body)
            .unwrap()
            .as_object()
            .unwrap()
            .get("seq")
            .unwrap()
            .as_safe_integer()
            .unwrap()
    }
}

/// Makes a demo data folder at `data` with `tollgate init --demo`: the
/// seed material a first `serve` imports.
pub fn init_demo(data: &Path) {
    let out = Command::new(bin("tollgate"))
        .args(["init", "--demo", "--data-dir"])
        .arg(data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// The current time at second precision.
pub fn now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    Timestamp::from_unix(d.as_secs() as i64, 0)
        .as_str()
        .to_owned()
}

/// A signed intent envelope's bytes.
pub fn intent(
    signer: &Ed25519Signer,
    id: &str,
    resource: &str,
    amount: i64,
    edit: impl FnOnce(&mut Object),
) -> Vec<u8> {
    let mut p = demo::intent(id, resource, amount)
        .member("issued_at", now())
        .into_value()
        .as_object()
        .unwrap()
        .clone();
    edit(&mut p);
    let payload = Value::Object(p);
    let mut env = Object::new();
    env.insert(
        "signature",
        signer.sign_now(Domain::Intent, &payload).to_value(),
    );
    env.insert("payload", payload);
    canonical(&Value::Object(env))
}

/// The verdict of a ledger entry's receipt.
pub fn verdict_of(entry: &[u8]) -> String {
    let e = parse(entry).unwrap();
    let r = e
        .as_object()
        .unwrap()
        .get("receipt")
        .unwrap()
        .as_object()
        .unwrap();
    r.get("decision")
        .unwrap()
        .as_object()
        .unwrap()
        .get("verdict")
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned()
}

/// The gateway's key set.
pub fn keys(g: &Gateway) -> KeySet {
    KeySet::parse(&g.get("/.well-known/jwks.json").1).unwrap()
}

/// The outcome of a ledger entry's receipt.
pub fn outcome_of(entry: &[u8]) -> Object {
    let e = parse(entry).unwrap();
    e.as_object()
        .unwrap()
        .get("receipt")
        .unwrap()
        .as_object()
        .unwrap()
        .get("outcome")
        .unwrap()
        .as_object()
        .unwrap()
        .clone()
}

/// The member at `path` of a ledger entry's receipt, e.g.
/// `receipt_member(entry, &["decision", "verdict"])`.
pub fn receipt_member(entry: &[u8], path: &[&str]) -> Value {
    let e = parse(entry).unwrap();
    let mut v = e.as_object().unwrap().get("receipt").unwrap().clone();
    for k in path {
        v = v
            .as_object()
            .and_then(|o| o.get(k))
            .unwrap_or_else(|| panic!("no {k} in {v}"))
            .clone();
    }
    v
}

/// The problem type of a problem document, without its
/// `urn:tollgate:problem:` prefix.
pub fn problem_slug(body: &[u8]) -> String {
    let v = parse(body).unwrap();
    v.as_object()
        .unwrap()
        .get("type")
        .unwrap()
        .as_str()
        .unwrap()
        .trim_start_matches("urn:tollgate:problem:")
        .to_owned()
}

/// Intents the gateway at `url` answered 200, from its metrics (0 if it
/// does not answer).
pub fn answered(url: &str, token: &str) -> u64 {
    let Ok(a) = tollgate_client::Client::new(url)
        .with_admin_token(token)
        .get("/metrics", true)
    else {
        return 0;
    };
    a.text()
        .lines()
        .find_map(|l| {
            l.strip_prefix("tollgate_http_requests_total{route=\"intents\",status=\"200\"} ")?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// The `receipt_id` of a ledger entry's receipt.
pub fn receipt_id(line: &[u8]) -> String {
    let v = tollgate_protocol::parse(line).unwrap();
    v.as_object()
        .and_then(|o| o.get("receipt"))
        .and_then(Value::as_object)
        .and_then(|r| r.get("receipt_id"))
        .and_then(Value::as_str)
        .unwrap()
        .to_owned()
}
