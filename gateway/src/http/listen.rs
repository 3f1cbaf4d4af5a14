//! The accept loop, for HTTP and HTTPS alike: what a slow or hostile
//! client can hold is bounded.
//!
//! - At most [`Connections::max`] connections are served at once. When
//!   all are taken, a newcomer takes the slot of the connection doing
//!   nothing the longest (closing, idle, or still sending its header; see
//!   [`super::slots`]); only while every connection has a request in
//!   progress do new ones wait in the kernel's backlog.
//! - A TLS handshake must finish within [`Connections::handshake`].
//! - A request's header must arrive within [`Connections::header`] of the
//!   moment the server starts waiting for it — which is also how long an
//!   idle keep-alive connection stays open.
//! - A request body must arrive within its route's body timeout (the
//!   handlers apply it).
//! - A failed accept (out of descriptors, say) backs off, doubling from
//!   10 ms to 1 s, instead of spinning.
//! - A connection closes gracefully ("lingering close", as nginx does):
//!   after the last answer is written the server sends FIN, then reads and
//!   discards whatever the client still sends, until the client closes,
//!   is silent for [`crate::limits::LINGER_IDLE_MS`] or
//!   [`crate::limits::LINGER_TOTAL_MS`] have passed. Closing a socket with
//!   unread bytes in it makes the kernel send a reset, and a reset can
//!   destroy an answer the client has not read yet: a 401 or 413 written
//!   before a large body was read would reach a client that sends its
//!   whole body before reading (Python's `urllib`, most scripts) as
//!   "connection reset" instead. A client that trickles bytes holds its
//!   connection slot no longer than the total bound.

use std::sync::Arc;
use std::time::Duration;

use tollgate_ledger::Ledger;

use super::slots::{AnswerBody, ReceivedBody, Slot, Slots, Tracked};
use super::{App, Peer, router};

/// Bounds on connections.
#[derive(Clone, Copy, Debug)]
pub struct Connections {
    /// Most connections served at once.
    pub max: usize,
    /// Time to receive a request's header (and idle keep-alive time).
    pub header: Duration,
    /// Time to finish a TLS handshake.
    pub handshake: Duration,
}

impl Default for Connections {
    fn default() -> Self {
        use crate::limits::{
            DEFAULT_HANDSHAKE_TIMEOUT_MS, DEFAULT_HEADER_TIMEOUT_MS, DEFAULT_MAX_CONNECTIONS,
        };
        Self {
            max: DEFAULT_MAX_CONNECTIONS,
            header: Duration::from_millis(DEFAULT_HEADER_TIMEOUT_MS),
            handshake: Duration::from_millis(DEFAULT_HANDSHAKE_TIMEOUT_MS),
        }
    }
}

impl Connections {
    /// These bounds fitted to the process's file descriptor limit: the
    /// soft limit is raised to the hard one where the system allows, and
    /// [`Connections::max`] lowered to what the limit leaves after
    /// [`crate::limits::RESERVED_DESCRIPTORS`] (a listener that accepts
    /// more connections than it has descriptors for fails every accept and
    /// every outbound call alike). Returns the fitted bounds and the
    /// descriptor limit; refuses a limit that leaves fewer than
    /// [`crate::limits::MIN_CONNECTIONS`].
    pub fn fit_to_descriptors(self) -> Result<(Self, Option<u64>), crate::Error> {
        use crate::limits::{MIN_CONNECTIONS, RESERVED_DESCRIPTORS};
        use rustix::process::{Resource, getrlimit, setrlimit};
        let mut limit = getrlimit(Resource::Nofile);
        if let (Some(soft), hard) = (limit.current, limit.maximum) {
            let want = hard.unwrap_or(u64::MAX).min(1 << 20);
            if want > soft {
                let raised = rustix::process::Rlimit {
                    current: Some(want),
                    maximum: hard,
                };
                if setrlimit(Resource::Nofile, raised).is_ok() {
                    limit = getrlimit(Resource::Nofile);
                }
            }
        }
        let Some(soft) = limit.current else {
            return Ok((self, None));
        };
        let room = usize::try_from(soft.saturating_sub(RESERVED_DESCRIPTORS)).unwrap_or(usize::MAX);
        if room < MIN_CONNECTIONS {
            return Err(crate::Error::Config(format!(
                "the file descriptor limit ({soft}) leaves room for {room} connections once {RESERVED_DESCRIPTORS} are kept for the ledger and outbound calls; at least {MIN_CONNECTIONS} are needed: raise it (ulimit -n)"
            )));
        }
        Ok((
            Self {
                max: self.max.min(room),
                ..self
            },
            Some(soft),
        ))
    }
}

/// Serves `app` on `listener` (HTTPS when `tls` is given) until `shutdown`
/// resolves, then stops gracefully:
///
/// 1. *drain*: the engine is told to stop (long-polls answer now,
///    background loops end) and every new request is answered `503
///    shutting-down` with `Retry-After` and `Connection: close`, while the
///    requests already in progress run to their answers; this lasts until
///    none is left and none has arrived for
///    [`crate::limits::SHUTDOWN_QUIET_MS`], or
///    [`crate::limits::SHUTDOWN_DRAIN_MS`] have passed;
/// 2. *close*: the listener closes, and every open connection is closed
///    once its current answer is written, within
///    [`crate::limits::SHUTDOWN_CLOSE_MS`].
///
/// The engine's own tasks are waited for by the caller
/// ([`crate::engine::Gateway::stopped`]).
pub async fn serve<L: Ledger>(
    app: Arc<App<L>>,
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: Connections,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use crate::limits::{SHUTDOWN_CLOSE_MS, SHUTDOWN_DRAIN_MS, SHUTDOWN_QUIET_MS};
    let router = router(app.clone());
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let slots = Slots::new(limits.max);
    let _ = app.slots.0.set(slots.clone());
    let closing = tokio_util::sync::CancellationToken::new();
    let mut backoff = Duration::from_millis(10);
    let spawn = |(tcp, peer, slot): (tokio::net::TcpStream, std::net::SocketAddr, Slot)| {
        let router = router.clone();
        let acceptor = acceptor.clone();
        // Closes this connection gracefully: on a stop, or when a cut found
        // it protected (it ends after the answer in progress).
        let stop = closing.child_token();
        tokio::spawn(async move {
            let activity = slot.activity.clone();
            // Each request marks its connection's phase (slots module doc)
            // and carries the peer's address.
            let phases = activity.clone();
            let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
                let a = phases.clone();
                let open = a.request(hyper::body::Body::is_end_stream(req.body()));
                req.extensions_mut().insert(Peer(peer.ip()));
                let req = req.map(|b| axum::body::Body::new(ReceivedBody::new(b, open.clone())));
                let answer = tower::ServiceExt::oneshot(router.clone(), req);
                async move {
                    let r = answer.await?;
                    open.answering();
                    Ok::<_, std::convert::Infallible>(r.map(|b| AnswerBody::new(b, a, open)))
                }
            });

            let tcp = Tracked::new(tcp, activity.clone());
            let served = async {
                match acceptor {
                    None => {
                        let http = protocols(&limits, None);
                        let (lent, back) = Lent::new(tcp);
                        let conn =
                            http.serve_connection(hyper_util::rt::TokioIo::new(lent), service);
                        until_closed(conn, &stop).await;
                        activity.closing();
                        if let Ok(mut tcp) = back.await {
                            linger(&mut tcp).await;
                        }
                    }
                    Some(acceptor) => {
                        let Ok(Ok(stream)) =
                            tokio::time::timeout(limits.handshake, acceptor.accept(tcp)).await
                        else {
                            return;
                        };
                        // Over TLS, the protocol ALPN settled and no other.
                        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
                        let http = protocols(&limits, Some(h2));
                        let (lent, back) = Lent::new(stream);
                        let conn =
                            http.serve_connection(hyper_util::rt::TokioIo::new(lent), service);
                        until_closed(conn, &stop).await;
                        activity.closing();
                        if let Ok(mut stream) = back.await {
                            linger(&mut stream).await;
                        }
                    }
                }
            };
            let mut served = std::pin::pin!(served);
            let mut watch = tokio::time::interval(Duration::from_millis(500));
            let mut cut_seen = false;
            loop {
                tokio::select! {
                    () = &mut served => break,
                    () = slot.cut.cancelled(), if !cut_seen => {
                        cut_seen = true;
                        // Chosen to make room. Dropped where it stands if it
                        // still may be; a request that became whole
                        // meanwhile is answered first, then it closes.
                        if slot.activity.cuttable() {
                            break;
                        }
                        stop.cancel();
                    }
                    _ = watch.tick() => {
                        // A reader that stopped reading cannot hold the
                        // connection and its buffers.
                        if slot.activity.send_stalled(crate::limits::SEND_TIMEOUT_MS) {
                            break;
                        }
                    }
                }
            }
            drop(slot);
        });
    };
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            c = accept(&listener, &slots, &mut backoff) => spawn(c),
        }
    }
    // Drain: new connections are still accepted, and their requests told
    // 503 (a refusal with an answer beats a reset), until every request in
    // progress has its answer.
    app.drain.begin();
    app.gateway.stop();
    let deadline = tokio::time::sleep(Duration::from_millis(SHUTDOWN_DRAIN_MS));
    let mut deadline = std::pin::pin!(deadline);
    loop {
        tokio::select! {
            () = &mut deadline => break,
            () = app.drain.quiet(Duration::from_millis(SHUTDOWN_QUIET_MS)) => break,
            c = accept(&listener, &slots, &mut backoff) => spawn(c),
        }
    }
    // Close: no new connections; open ones end after their current answer.
    // Connections the kernel already queued are taken (and answered 503)
    // first: closing a listener with a queue resets them.
    while let Some(Ok((tcp, peer))) = futures_util::FutureExt::now_or_never(listener.accept()) {
        let Some(slot) = slots.try_take(peer.ip()) else {
            break;
        };
        let _ = tcp.set_nodelay(true);
        spawn((tcp, peer, slot));
    }
    drop(listener);
    closing.cancel();
    let _ = tokio::time::timeout(Duration::from_millis(SHUTDOWN_CLOSE_MS), async {
        while slots.held() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    Ok(())
}

/// The next connection, with its slot. A failed accept (out of
/// descriptors, say) backs off, doubling from 10 ms to 1 s, instead of
/// spinning.
async fn accept(
    listener: &tokio::net::TcpListener,
    slots: &Arc<Slots>,
    backoff: &mut Duration,
) -> (tokio::net::TcpStream, std::net::SocketAddr, Slot) {
    loop {
        // Accepts only when a slot can be had, so that a listener whose
        // every connection is at work leaves newcomers in the backlog; the
        // slot is taken after the accept, so that nobody is cut for a
        // connection that has not come.
        slots.ready().await;
        match listener.accept().await {
            Ok((tcp, peer)) => {
                *backoff = Duration::from_millis(10);
                let _ = tcp.set_nodelay(true);
                let slot = match slots.try_take(peer.ip()) {
                    Some(slot) => slot,
                    // An address that already holds connections, in a
                    // listener with none to spare for it, is told at once
                    // rather than queued ahead of everyone else.
                    None if slots.held_by(peer.ip()) >= 2 => {
                        refuse_busy(&tcp);
                        slots.refused_one();
                        continue;
                    }
                    None => slots.take(peer.ip()).await,
                };
                return (tcp, peer, slot);
            }
            Err(_) => {
                tokio::time::sleep(*backoff).await;
                *backoff = (*backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Answers a connection the listener has no room for, without reading it:
/// `503 too-many-connections` with `Retry-After: 1`, then it is closed.
fn refuse_busy(tcp: &tokio::net::TcpStream) {
    const BODY: &str = concat!(
        "{\"detail\":\"every connection slot is taken and this address already holds connections; use one of them, or retry after Retry-After\",",
        "\"status\":503,\"title\":\"Too many connections\",",
        "\"type\":\"urn:tollgate:problem:too-many-connections\"}\n"
    );
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tcp.try_write(answer.as_bytes());
}

/// The protocols a connection is served with. In cleartext (`alpn_h2`
/// `None`): HTTP/1.1, or HTTP/2 when the client opens with its preface
/// (h2c with prior knowledge). Over TLS, what ALPN settled: HTTP/2 for
/// `h2`, HTTP/1.1 otherwise (`http/1.1`, or no ALPN).
///
/// - HTTP/1.1: the header must arrive within [`Connections::header`].
/// - HTTP/2: at most [`crate::limits::H2_MAX_STREAMS`] requests at once
///   per connection, headers of at most
///   [`crate::limits::H2_MAX_HEADER_BYTES`]; a peer that stops answering
///   pings for [`crate::limits::H2_KEEPALIVE_MS`] is dropped; hyper's own
///   bounds on streams reset early (the "rapid reset" attack) apply.
fn protocols(
    limits: &Connections,
    alpn_h2: Option<bool>,
) -> hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor> {
    use crate::limits::{H2_KEEPALIVE_MS, H2_MAX_HEADER_BYTES, H2_MAX_STREAMS};
    let mut http =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    http.http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header);
    http.http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_header_list_size(H2_MAX_HEADER_BYTES)
        .keep_alive_interval(Duration::from_millis(H2_KEEPALIVE_MS))
        .keep_alive_timeout(Duration::from_millis(H2_KEEPALIVE_MS));
    match alpn_h2 {
        None => http,
        Some(true) => http.http2_only(),
        Some(false) => http.http1_only(),
    }
}

/// Serves one connection until it ends, or until `closing`: then it ends
/// after the answer in progress (an idle keep-alive connection at once;
/// an HTTP/2 connection after its open streams, with GOAWAY).
async fn until_closed<I, S, B>(
    conn: hyper_util::server::conn::auto::Connection<'_, I, S, hyper_util::rt::TokioExecutor>,
    closing: &tokio_util::sync::CancellationToken,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = hyper::Response<B>,
        > + Send,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        () = closing.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// A stream lent to a connection, which must own what it serves: handed
/// back when the connection drops it, so that the listener can close it
/// gracefully ([`linger`]).
struct Lent<S> {
    inner: Option<S>,
    back: Option<tokio::sync::oneshot::Sender<S>>,
}

impl<S> Lent<S> {
    fn new(inner: S) -> (Self, tokio::sync::oneshot::Receiver<S>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (
            Self {
                inner: Some(inner),
                back: Some(tx),
            },
            rx,
        )
    }

    fn stream(&mut self) -> std::io::Result<std::pin::Pin<&mut S>>
    where
        S: Unpin,
    {
        self.inner
            .as_mut()
            .map(std::pin::Pin::new)
            .ok_or_else(|| std::io::Error::other("the stream was handed back"))
    }
}

impl<S> Drop for Lent<S> {
    fn drop(&mut self) {
        if let (Some(s), Some(back)) = (self.inner.take(), self.back.take()) {
            let _ = back.send(s);
        }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Lent<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.stream() {
            Ok(s) => s.poll_read(cx, buf),
            Err(e) => std::task::Poll::Ready(Err(e)),
        }
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Lent<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.stream() {
            Ok(s) => s.poll_write(cx, buf),
            Err(e) => std::task::Poll::Ready(Err(e)),
        }
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.stream() {
            Ok(s) => s.poll_write_vectored(cx, bufs),
            Err(e) => std::task::Poll::Ready(Err(e)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner
            .as_ref()
            .is_some_and(tokio::io::AsyncWrite::is_write_vectored)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.stream() {
            Ok(s) => s.poll_flush(cx),
            Err(e) => std::task::Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.stream() {
            Ok(s) => s.poll_shutdown(cx),
            Err(e) => std::task::Poll::Ready(Err(e)),
        }
    }
}

/// Closes a connection gracefully: FIN after everything written, then
/// reads and discards what the client still sends, within the linger
/// bounds (module doc).
async fn linger<S>(stream: &mut S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use crate::limits::{LINGER_IDLE_MS, LINGER_TOTAL_MS};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Flushes what is left and sends FIN (a TLS stream sends close_notify
    // first). An error here means the peer is gone: nothing to wait for.
    if stream.shutdown().await.is_err() {
        return;
    }
    let drain = async {
        let mut sink = vec![0u8; 64 * 1024];
        let idle = Duration::from_millis(LINGER_IDLE_MS);
        // Ends at the client's FIN (0), an error, or silence.
        while let Ok(Ok(n)) = tokio::time::timeout(idle, stream.read(&mut sink)).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(LINGER_TOTAL_MS), drain).await;
}
