//! A KMS emulator for one test: the moto server (PyPI `moto[server]`,
//! installed by `scripts/test.sh` into the tests' virtual environment) on
//! a free loopback port, stopped when dropped, and its keys made through
//! boto3 as an operator would with the AWS CLI.

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
    /// Starts the emulator and waits until it answers.
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(python())
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start moto with {}: {e}", python()));
        let moto = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
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
