//! HTTPS with a test CA, and the plain-HTTP non-loopback refusal.

use std::path::{Path, PathBuf};
use std::process::Command;

use tollgate_tests::bin;
use tollgate_tests::gateway::{Gateway, verdict_of};

/// A test CA and a leaf certificate for localhost / 127.0.0.1 it signed.
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("openssl is needed for the TLS test");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=Tollgate test CA",
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=localhost",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "leaf.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("leaf.pem"),
        dir.join("leaf.key"),
    )
}

/// A demo gateway serving HTTPS with a leaf of a test CA made in `dir`;
/// the CA's certificate.
pub(crate) fn https_gateway(dir: &Path) -> (Gateway, PathBuf) {
    let (ca, cert, key) = certificates(dir);
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
    (g, ca)
}

#[test]
fn https_with_the_given_certificate() {
    let certs = tempfile::tempdir().unwrap();
    let (g, ca) = https_gateway(certs.path());
    assert!(g.url.starts_with("https://127.0.0.1:"), "{}", g.url);
    let out = Command::new(bin("tollgate"))
        .args(["submit", "--url", &g.url, "--key"])
        .arg(g.data().join("demo/agent.jwk"))
        .arg(g.data().join("demo/intent.json"))
        .env("TOLLGATE_CA_CERT", &ca)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(verdict_of(&out.stdout), "pass");
    // Without the CA, the client refuses the certificate.
    let out = Command::new(bin("tollgate"))
        .args(["submit", "--url", &g.url, "--key"])
        .arg(g.data().join("demo/agent.jwk"))
        .arg(g.data().join("demo/intent.json"))
        .env_remove("TOLLGATE_CA_CERT")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid peer certificate"));
    // Plain HTTP to the TLS port gets no answer.
    let plain = g.url.replace("https://", "http://");
    let a: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    assert!(a.get(&format!("{plain}/healthz")).call().is_err());
}

#[test]
fn a_non_loopback_address_without_tls_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin("tollgate"))
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .starts_with("refusing to listen on 0.0.0.0:0 without TLS")
    );
}
