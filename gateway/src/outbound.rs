//! Outbound HTTP: how the gateway calls other systems (upstream commits,
//! resource lookups, witnesses, webhook endpoints).
//!
//! Invariants: every status is an answer, never an error; redirects are
//! not followed (a 3xx is the answer, so only the configured URL is ever
//! called); one timeout bounds the whole call, connection included. A
//! call that may act on the other side ([`deliver`]) tells a request that
//! never left from one that may have arrived without an answer, and reads
//! at most its limit of an answer's body without refusing the answer.

use std::time::Duration;

/// A client for calls bounded by `timeout`, naming itself `user_agent`.
pub(crate) fn agent(timeout: Duration, user_agent: &str) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .max_redirects_will_error(false)
        .timeout_global(Some(timeout))
        .user_agent(user_agent)
        .build()
        .into()
}

/// One call on a blocking thread, within `timeout`: `send` makes the
/// request with the client it is given; the answer is its status and at
/// most `limit` bytes of its body. The outer error is a call that was
/// aborted (its task panicked or was cancelled).
pub(crate) async fn exchange(
    timeout: Duration,
    limit: u64,
    send: impl FnOnce(&ureq::Agent) -> Result<ureq::http::Response<ureq::Body>, ureq::Error>
    + Send
    + 'static,
) -> Result<Result<(u16, Vec<u8>), ureq::Error>, tokio::task::JoinError> {
    tokio::task::spawn_blocking(move || {
        let mut resp = send(&agent(timeout, "tollgate"))?;
        let status = resp.status().as_u16();
        let bytes = resp.body_mut().with_config().limit(limit).read_to_vec()?;
        Ok((status, bytes))
    })
    .await
}

/// What a call that may act on the other side came to.
#[derive(Debug)]
pub(crate) enum Delivery {
    /// It answered: its status, and at most `limit` bytes of its body
    /// (`complete` when that is the whole body).
    Answered {
        /// The HTTP status.
        status: u16,
        /// The body as read, at most the limit.
        body: Vec<u8>,
        /// Whether `body` is the whole body.
        complete: bool,
    },
    /// The request never left: the name did not resolve, the connection
    /// was refused or not made in time. The other side did nothing.
    NotSent(String),
    /// The request may have reached the other side, and no answer came
    /// (a timeout or a reset after connecting): whether it acted is not
    /// known.
    NoAnswer(String),
}

/// Whether `e` proves that no byte of the request reached the other side.
fn never_sent(e: &ureq::Error) -> bool {
    use std::io::ErrorKind;
    match e {
        ureq::Error::HostNotFound
        | ureq::Error::ConnectionFailed
        | ureq::Error::BadUri(_)
        | ureq::Error::Http(_)
        | ureq::Error::InvalidProxyUrl
        | ureq::Error::ConnectProxyFailed(_)
        | ureq::Error::RequireHttpsOnly(_)
        | ureq::Error::TlsRequired => true,
        ureq::Error::Timeout(t) => {
            matches!(t, ureq::Timeout::Resolve | ureq::Timeout::Connect)
        }
        ureq::Error::Io(io) => matches!(
            io.kind(),
            ErrorKind::ConnectionRefused
                | ErrorKind::AddrNotAvailable
                | ErrorKind::NetworkUnreachable
                | ErrorKind::HostUnreachable
        ),
        _ => false,
    }
}

/// [`exchange`] for a call that may act (an upstream commit): a status is
/// the answer whatever its body, of which at most `limit` bytes are read
/// and kept; an error is [`Delivery::NotSent`] only when the request
/// provably never left, else [`Delivery::NoAnswer`].
pub(crate) async fn deliver(
    timeout: Duration,
    limit: u64,
    send: impl FnOnce(&ureq::Agent) -> Result<ureq::http::Response<ureq::Body>, ureq::Error>
    + Send
    + 'static,
) -> Delivery {
    // Resolving and connecting get most of the timeout each, so that a
    // connection never made ends as such (nothing sent), not as the whole
    // call's timeout (which may have come after sending).
    let before_sending = timeout.saturating_mul(9) / 10;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .max_redirects_will_error(false)
        .timeout_global(Some(timeout))
        .timeout_resolve(Some(before_sending))
        .timeout_connect(Some(before_sending))
        .user_agent("tollgate")
        .build()
        .into();
    let call = tokio::task::spawn_blocking(move || {
        use std::io::Read as _;
        let mut resp = match send(&agent) {
            Ok(r) => r,
            Err(e) if never_sent(&e) => return Delivery::NotSent(e.to_string()),
            Err(e) => return Delivery::NoAnswer(e.to_string()),
        };
        let status = resp.status().as_u16();
        let mut body = Vec::new();
        // One byte past the limit tells a longer body from one of exactly
        // the limit; a body that breaks off is what was read of it.
        let read = resp
            .body_mut()
            .with_config()
            .limit(limit.saturating_add(1))
            .reader()
            .take(limit.saturating_add(1))
            .read_to_end(&mut body);
        let kept = usize::try_from(limit).unwrap_or(usize::MAX);
        let complete = read.is_ok() && body.len() <= kept;
        body.truncate(kept);
        Delivery::Answered {
            status,
            body,
            complete,
        }
    })
    .await;
    // The blocking task panicked or was cancelled: it may have sent.
    call.unwrap_or_else(|e| Delivery::NoAnswer(format!("the call was aborted: {e}")))
}
