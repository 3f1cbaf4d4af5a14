//! A KMS emulator for one test: the moto server (PyPI `moto[server]`,
//! installed by `scripts/test.sh` into the tests' virtual environment) on
//! a loopback port it chooses, stopped when dropped, and its keys made
//! through boto3 as an operator would with the AWS CLI.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::python;

/// A running emulator.
pub struct Moto {
    child: Child,
    /// Its endpoint URL.
    pub url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The environment a KMS client of the emulator needs.
pub const REGION: &str = "us-east-1";

impl Moto {
    /// Starts the emulator on port 0 (it takes a free one and says which:
    /// no other process can take it first) and waits until it answers.
    pub fn start() -> Self {
        let mut child = Command::new(python())
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start moto with {}: {e}", python()));
        // Its log (on stderr) names the address: " * Running on http://…".
        // Read on a thread, which keeps reading so it never blocks on a
        // full pipe.
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut said = Vec::new();
        let url = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                let _ = child.kill();
                let _ = child.wait();
                panic!("moto did not say where it listens: {}", said.join("\n"));
            };
            if let Some(at) = line.find("http://127.0.0.1:") {
                let url: String = line[at..]
                    .chars()
                    .take_while(|c| !c.is_whitespace() && *c != '\u{1b}')
                    .collect();
                break url.trim_end_matches('/').to_owned();
            }
            said.push(line);
        };
        let moto = Self { child, url };
        let addr = moto.url.trim_start_matches("http://").to_owned();
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "moto did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    /// The AWS environment variables that point a client at it.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.url.clone()),
            ("AWS_REGION", REGION.into()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ]
    }

    /// Creates a signing key of `spec` (e.g. `ECC_NIST_P256`); its id.
    pub fn create_key(&self, spec: &str) -> String {
        let script = format!(
            "import boto3\nc = boto3.client('kms', endpoint_url='{}', region_name='{REGION}', aws_access_key_id='testing', aws_secret_access_key='testing')\nprint(c.create_key(KeySpec='{spec}', KeyUsage='SIGN_VERIFY')['KeyMetadata']['KeyId'])",
            self.url
        );
        let out = Command::new(python())
            .args(["-c", &script])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }
}
