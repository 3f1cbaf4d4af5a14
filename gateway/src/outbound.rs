//! Outbound HTTP: how the gateway calls other systems (upstream commits,
//! resource lookups, witnesses, webhook endpoints).
//!
//! Invariants: every status is an answer, never an error; redirects are
//! not followed (a 3xx is the answer, so only the configured URL is ever
//! called); one timeout bounds the whole call, connection included. A
//! call that may act on the other side ([`deliver`]) tells a request that
//! never left from one that may have arrived without an answer, and reads
//! at most its limit of an answer's body without refusing the answer.
//!
//! A call made on someone else's behalf (a webhook endpoint, whose URL an
//! admin registers) goes through [`guarded_agent`]: its name is resolved
//! once per connection, every address it resolves to is checked against
//! [`addresses`], and the connection is made only to those checked
//! addresses, so a name cannot resolve to a public address for the check
//! and to a private one for the connection (DNS rebinding). The calls the
//! operator configures (upstreams, resource lookups, witnesses) reach the
//! operator's own network by design and are not restricted.

mod addresses;

use std::net::SocketAddr;
use std::time::Duration;

pub use addresses::Refusal;
pub(crate) use addresses::refusal;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

/// A client for calls bounded by `timeout`, naming itself `user_agent`.
pub(crate) fn agent(timeout: Duration, user_agent: &str) -> ureq::Agent {
    config(timeout, user_agent).into()
}

fn config(timeout: Duration, user_agent: &str) -> ureq::config::Config {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .max_redirects_will_error(false)
        .timeout_global(Some(timeout))
        .user_agent(user_agent)
        .build()
}

/// [`agent`], connecting only to public addresses unless `allow_private`:
/// a name resolving to any refused address is not called at all, and the
/// call fails with an I/O error holding a [`Refused`] ([`refused`] finds
/// it).
pub(crate) fn guarded_agent(
    timeout: Duration,
    user_agent: &str,
    allow_private: bool,
) -> ureq::Agent {
    ureq::Agent::with_parts(
        config(timeout, user_agent),
        DefaultConnector::default(),
        Guard { allow_private },
    )
}

/// A call refused because its host resolves to an address the gateway
/// must not call.
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves to {why}")]
pub struct Refused {
    host: String,
    why: Refusal,
}

/// The [`Refused`] inside a failed call, if that is why it failed.
pub(crate) fn refused(e: &ureq::Error) -> Option<&Refused> {
    match e {
        ureq::Error::Io(io) => io.get_ref()?.downcast_ref::<Refused>(),
        _ => None,
    }
}

/// Resolves as ureq does, then checks every address (the connection is
/// made only to the addresses returned here).
#[derive(Debug)]
struct Guard {
    allow_private: bool,
}

impl Resolver for Guard {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let addrs = DefaultResolver::default().resolve(uri, config, timeout)?;
        // A proxy the operator configured is the operator's to trust; with
        // one, the target's name is resolved by the proxy.
        let is_proxy = config
            .proxy()
            .is_some_and(|p| Some(p.host()) == uri.host() && Some(p.port()) == uri.port_u16());
        if self.allow_private || is_proxy {
            return Ok(addrs);
        }
        check(uri.host().unwrap_or_default(), &addrs)?;
        Ok(addrs)
    }
}

/// Checks every address `host` resolved to.
pub(crate) fn check(host: &str, addrs: &[SocketAddr]) -> Result<(), ureq::Error> {
    match addrs.iter().find_map(|a| refusal(a.ip())) {
        None => Ok(()),
        Some(why) => Err(ureq::Error::Io(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            Refused {
                host: host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned(),
                why,
            },
        ))),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A name resolving to loopback is never connected to: the listener
    /// sees no connection, and the error says why.
    #[test]
    fn the_guarded_client_connects_only_to_addresses_it_checked() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        for url in [
            format!("http://localhost:{port}/hook"),
            format!("http://127.0.0.1:{port}/hook"),
            format!("http://[::ffff:127.0.0.1]:{port}/hook"),
        ] {
            let agent = guarded_agent(Duration::from_secs(5), "test", false);
            let e = agent.post(&url).send(&b"{}"[..]).unwrap_err();
            let r = refused(&e).unwrap_or_else(|| panic!("{url}: {e}"));
            assert!(r.to_string().contains("loopback"), "{r}");
            assert_eq!(
                listener.accept().map(|_| ()).unwrap_err().kind(),
                std::io::ErrorKind::WouldBlock,
                "{url} was connected to"
            );
        }
        // Allowed, it connects (and the listener never answers: the
        // connection is what matters).
        let agent = guarded_agent(Duration::from_millis(300), "test", true);
        let url = format!("http://127.0.0.1:{port}/hook");
        let e = agent.post(&url).send(&b"{}"[..]).unwrap_err();
        assert!(refused(&e).is_none(), "{e}");
        assert!(listener.accept().is_ok(), "no connection was made");
    }
}
