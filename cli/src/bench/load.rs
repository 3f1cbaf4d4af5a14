//! The load generator of `tollgate bench`: many clients on one thread.
//!
//! Each client sends its requests one after another and times each from
//! the moment it is handed to the connection to the last byte of its
//! answer. Over HTTP/1.1 each client has a keep-alive connection of its
//! own; over HTTP/2 the clients share a few connections, a stream per
//! request. A connection that fails or that the server closes (a `503`
//! while draining, say) is opened again for the client's next request.
//! Over https the server's certificate is checked against the public
//! roots, or against `TOLLGATE_CA_CERT` when it is set, as `tollgate`'s
//! other commands do; ALPN asks for the protocol chosen.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};

use crate::error::CliError;

/// The HTTP version the load is sent with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1, a connection per client.
    Http1,
    /// HTTP/2: cleartext with prior knowledge, or h2 by ALPN over TLS.
    Http2,
}

/// One request of the load: a POST of `body` as JSON, or a GET.
#[derive(Clone, Debug)]
pub struct Request {
    /// The path and query.
    pub path: String,
    /// The body of a POST; `None` for a GET.
    pub body: Option<Bytes>,
}

/// What a load measured.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Answers `200`.
    pub ok: u64,
    /// Other answers, and requests without an answer.
    pub bad: u64,
    /// Every request's latency, microseconds, sorted.
    pub latencies_us: Vec<u64>,
    /// Seconds from the first request to the last answer.
    pub wall: f64,
    /// With `keep`: every `200` answer's body.
    pub answers: Vec<Bytes>,
    /// How many of each other status came (0: no answer).
    pub statuses: std::collections::BTreeMap<u16, u64>,
}

impl Outcome {
    /// The answers other than `200`, by status: `409 ×3, no answer ×1`.
    pub fn errors(&self) -> String {
        self.statuses
            .iter()
            .map(|(status, n)| match status {
                0 => format!("no answer ×{n}"),
                s => format!("{s} ×{n}"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Where the load goes.
struct Endpoint {
    host: String,
    port: u16,
    /// `scheme://authority`, for HTTP/2's absolute request targets.
    origin: String,
    /// `host:port`, for HTTP/1.1's `Host`.
    authority: String,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls_pki_types::ServerName<'static>,
    )>,
    /// `Authorization` of reads: the read token (`TOLLGATE_READ_TOKEN`).
    read_token: Option<String>,
}

impl Endpoint {
    fn new(url: &str, protocol: Protocol) -> Result<Self, CliError> {
        let bad = |why: &str| CliError::Usage(format!("--url {url}: {why}"));
        let uri: hyper::Uri = url.parse().map_err(|_| bad("not a URL"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad("the load generator speaks http:// and https://")),
        };
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        let host = authority.host().trim_matches(['[', ']']).to_owned();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            let name = rustls_pki_types::ServerName::try_from(host.clone())
                .map_err(|e| bad(&e.to_string()))?;
            Some((tls_connector(protocol)?, name))
        } else {
            None
        };
        Ok(Self {
            read_token: std::env::var("TOLLGATE_READ_TOKEN")
                .ok()
                .map(|t| format!("Bearer {t}")),
            origin: format!("{}://{authority}", if https { "https" } else { "http" }),
            authority: authority.to_string(),
            host,
            port,
            tls,
        })
    }

    /// A new connection, its handshakes done.
    async fn connect(&self, protocol: Protocol) -> Result<Sender, String> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => handshake(hyper_util::rt::TokioIo::new(tcp), protocol).await,
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| e.to_string())?;
                handshake(hyper_util::rt::TokioIo::new(tls), protocol).await
            }
        }
    }

    fn request(
        &self,
        protocol: Protocol,
        r: Request,
    ) -> Result<hyper::Request<Full<Bytes>>, String> {
        let b = hyper::Request::builder();
        let b = match protocol {
            Protocol::Http1 => b
                .uri(r.path.as_str())
                .header(hyper::header::HOST, &self.authority),
            Protocol::Http2 => b.uri(format!("{}{}", self.origin, r.path)),
        };
        match r.body {
            Some(body) => b
                .method(hyper::Method::POST)
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .body(Full::new(body)),
            None => match &self.read_token {
                Some(t) => b.header(hyper::header::AUTHORIZATION, t),
                None => b,
            }
            .method(hyper::Method::GET)
            .body(Full::new(Bytes::new())),
        }
        .map_err(|e| e.to_string())
    }
}

/// rustls over ring, the public roots and `TOLLGATE_CA_CERT`, ALPN for
/// `protocol`.
fn tls_connector(protocol: Protocol) -> Result<tokio_rustls::TlsConnector, CliError> {
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Ok(path) = std::env::var("TOLLGATE_CA_CERT") {
        let certs = rustls_pki_types::CertificateDer::pem_file_iter(&path)
            .map_err(|e| CliError::Usage(format!("TOLLGATE_CA_CERT {path}: {e}")))?;
        for cert in certs {
            let cert =
                cert.map_err(|e| CliError::Usage(format!("TOLLGATE_CA_CERT {path}: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| CliError::Usage(format!("TOLLGATE_CA_CERT {path}: {e}")))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CliError::Usage(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![match protocol {
        Protocol::Http1 => b"http/1.1".to_vec(),
        Protocol::Http2 => b"h2".to_vec(),
    }];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// A connection's sending half; its driving half runs as a task.
enum Sender {
    Http1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    /// One of the streams of a connection that others may share.
    Http2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

async fn handshake<I>(io: I, protocol: Protocol) -> Result<Sender, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    match protocol {
        Protocol::Http1 => {
            let (send, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            Ok(Sender::Http1(send))
        }
        Protocol::Http2 => {
            let (send, conn) =
                hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                    .await
                    .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            Ok(Sender::Http2(send))
        }
    }
}

impl Sender {
    /// Sends `req` and reads its whole answer: the status and the body.
    async fn send(&mut self, req: hyper::Request<Full<Bytes>>) -> Result<(u16, Bytes), String> {
        let answer = match self {
            Self::Http1(send) => {
                send.ready().await.map_err(|e| e.to_string())?;
                send.send_request(req).await
            }
            Self::Http2(send) => {
                send.ready().await.map_err(|e| e.to_string())?;
                send.send_request(req).await
            }
        }
        .map_err(|e| e.to_string())?;
        let status = answer.status().as_u16();
        let body = answer
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    }
}

/// How the load is run.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// The HTTP version.
    pub protocol: Protocol,
    /// Clients sending at once.
    pub clients: usize,
    /// HTTP/2 connections the clients share (at least one per gateway).
    pub connections: usize,
    /// How long the load lasts.
    pub duration: Duration,
    /// Keep every `200` answer's body.
    pub keep: bool,
}

/// Runs `shape.clients` clients against `urls` (client `c` loads
/// `urls[c % len]`) on one thread until `shape.duration` passes or `next`
/// has no more; request `i` is `next(i)`.
pub fn run(
    urls: &[String],
    shape: Shape,
    next: impl Fn(usize) -> Option<Request> + Sync,
) -> Result<Outcome, CliError> {
    let endpoints = urls
        .iter()
        .map(|u| Endpoint::new(u, shape.protocol))
        .collect::<Result<Vec<_>, _>>()?;
    if endpoints.is_empty() {
        return Err(CliError::Usage("--url: give at least one gateway".into()));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Usage(format!("the load generator: {e}")))?;
    runtime.block_on(async {
        // HTTP/2's shared connections, opened before the clock starts.
        let mut shared = Vec::new();
        if shape.protocol == Protocol::Http2 {
            for k in 0..shape.connections.max(endpoints.len()) {
                let e = &endpoints[k % endpoints.len()];
                let s = e.connect(shape.protocol).await.map_err(|why| {
                    CliError::Usage(format!("{}: HTTP/2 connection refused: {why}", e.origin))
                })?;
                shared.push((k % endpoints.len(), s));
            }
        }
        let next_index = AtomicUsize::new(0);
        let start = Instant::now();
        let clients = (0..shape.clients.max(1)).map(|c| {
            let (at, sender) = match shape.protocol {
                Protocol::Http1 => (c % endpoints.len(), None),
                Protocol::Http2 => {
                    let (at, s) = &shared[c % shared.len()];
                    let s = match s {
                        Sender::Http2(s) => Some(Sender::Http2(s.clone())),
                        Sender::Http1(_) => None,
                    };
                    (*at, s)
                }
            };
            client(&endpoints[at], sender, shape, start, &next_index, &next)
        });
        let per = futures_util::future::join_all(clients).await;
        let wall = start.elapsed().as_secs_f64();
        let mut out = Outcome {
            wall,
            ..Outcome::default()
        };
        for p in per {
            out.ok += p.ok;
            out.bad += p.bad;
            out.latencies_us.extend(p.latencies_us);
            out.answers.extend(p.answers);
            for (status, n) in p.statuses {
                *out.statuses.entry(status).or_insert(0) += n;
            }
        }
        out.latencies_us.sort_unstable();
        Ok(out)
    })
}

/// One client: requests one after another until the time is up.
async fn client(
    endpoint: &Endpoint,
    mut sender: Option<Sender>,
    shape: Shape,
    start: Instant,
    next_index: &AtomicUsize,
    next: &(impl Fn(usize) -> Option<Request> + Sync),
) -> Outcome {
    let mut out = Outcome::default();
    while start.elapsed() < shape.duration {
        let Some(r) = next(next_index.fetch_add(1, Ordering::Relaxed)) else {
            break;
        };
        let t = Instant::now();
        if sender.is_none() {
            sender = endpoint.connect(shape.protocol).await.ok();
        }
        let answer = match (&mut sender, endpoint.request(shape.protocol, r)) {
            (Some(s), Ok(req)) => s.send(req).await.ok(),
            _ => None,
        };
        out.latencies_us
            .push(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX));
        match answer {
            Some((200, body)) => {
                out.ok += 1;
                if shape.keep {
                    out.answers.push(body);
                }
            }
            Some((status, _)) => {
                out.bad += 1;
                *out.statuses.entry(status).or_insert(0) += 1;
            }
            None => {
                out.bad += 1;
                *out.statuses.entry(0).or_insert(0) += 1;
                // Opened again for the next request; a gateway that is
                // away is not hammered meanwhile.
                if sender.take().is_none() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
    out
}
