//! A real HTTP/1.1 upstream on loopback for `http` commit targets, and
//! the bundle edit that points the refunds action at it.

use std::path::Path;
use std::process::Command;

/// Requests as received: each one's head (as sent) and body.
pub type Recorded = std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>;

/// What the test upstream does with a request.
#[derive(Clone, Copy, Debug)]
pub enum Behaviour {
    /// Answer with this status.
    Answer(u16),
    /// Answer 200 after this long.
    Stall(std::time::Duration),
    /// SIGKILL this process first (the gateway), then answer 200.
    KillFirst(u32),
    /// Answer 200 with a body of this many bytes.
    Large(usize),
    /// Act on a key's first request and answer 200 after this long; a
    /// request that repeats a key waits for the first to finish and
    /// answers 200 without acting again (an idempotent target).
    StallFirst(std::time::Duration),
}

/// A real HTTP/1.1 upstream on loopback that records the Idempotency-Key
/// of every request.
pub struct Upstream {
    /// Its URL.
    pub url: String,
    /// The Idempotency-Key of every request, in order.
    pub keys: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// What it does with the next request.
    pub behaviour: std::sync::Arc<std::sync::Mutex<Behaviour>>,
    /// Every request's head (as sent) and body, in order.
    pub requests: Recorded,
    /// The keys it acted on: each key once, when first seen.
    pub acted: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Upstream {
    /// Starts it on a free loopback port.
    pub fn start() -> Self {
        use std::io::{Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/refunds", listener.local_addr().unwrap());
        let keys = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let r = requests.clone();
        let behaviour = std::sync::Arc::new(std::sync::Mutex::new(Behaviour::Answer(200)));
        let (k, b) = (keys.clone(), behaviour.clone());
        let acted = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let answered = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (a, d) = (acted.clone(), answered.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let (k, b, r, a, d) = (k.clone(), b.clone(), r.clone(), a.clone(), d.clone());
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let head_end = loop {
                        let Ok(n) = stream.read(&mut chunk) else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                    let header = |name: &str| {
                        head.lines().find_map(|l| {
                            l.strip_prefix(&format!("{name}: "))
                                .map(|v| v.trim().to_owned())
                        })
                    };
                    let len: usize = header("content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    while buf.len() < head_end + len {
                        let Ok(n) = stream.read(&mut chunk) else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let key = header("idempotency-key").unwrap_or_default();
                    k.lock().unwrap().push(key.clone());
                    let first = {
                        let mut acted = a.lock().unwrap();
                        let first = !acted.contains(&key);
                        if first {
                            acted.push(key.clone());
                        }
                        first
                    };
                    r.lock().unwrap().push((
                        String::from_utf8_lossy(&buf[..head_end]).into_owned(),
                        buf[head_end..head_end + len].to_vec(),
                    ));
                    let behaviour = *b.lock().unwrap();
                    let mut body = None;
                    let status = match behaviour {
                        Behaviour::Large(n) => {
                            body = Some("x".repeat(n));
                            200
                        }
                        Behaviour::StallFirst(d) if first => {
                            std::thread::sleep(d);
                            200
                        }
                        Behaviour::StallFirst(_) => {
                            while !d.lock().unwrap().contains(&key) {
                                std::thread::sleep(std::time::Duration::from_millis(20));
                            }
                            200
                        }
                        Behaviour::Answer(s) => s,
                        Behaviour::Stall(d) => {
                            std::thread::sleep(d);
                            200
                        }
                        Behaviour::KillFirst(pid) => {
                            Command::new("kill")
                                .args(["-9", &pid.to_string()])
                                .status()
                                .unwrap();
                            *b.lock().unwrap() = Behaviour::Answer(200);
                            200
                        }
                    };
                    let body = body
                        .unwrap_or_else(|| format!("{{\"refund\":\"done\",\"status\":{status}}}"));
                    if first {
                        d.lock().unwrap().push(key);
                    }
                    let _ = write!(
                        stream,
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
        });
        Upstream {
            url,
            keys,
            behaviour,
            requests,
            acted,
        }
    }

    /// The hash of its answer with `status`.
    pub fn answer_hash(status: u16) -> String {
        let body = format!("{{\"refund\":\"done\",\"status\":{status}}}");
        tollgate_protocol::HashAlg::Sha256
            .digest(&[body.as_bytes()])
            .to_string()
    }
}

/// The refunds policy's `bundle.toml` (`toml`) committing to an `http`
/// target. A model governs actions committed at target `none` only: its
/// orders are then resources whose attributes the registry keeps.
pub fn at_http_target(toml: &str) -> String {
    let toml = match toml.find("# Orders as a state machine") {
        Some(i) => &toml[..i],
        None => toml,
    };
    toml.replace(
        "approval = \"by_rule\"",
        "approval = \"by_rule\"\ntarget = \"http\"",
    )
}

/// Makes the refunds bundle of `data` commit to an `http` target.
pub fn with_http_target(data: &Path) {
    let p = data.join("policies/refunds/bundle.toml");
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, at_http_target(&text)).unwrap();
}
