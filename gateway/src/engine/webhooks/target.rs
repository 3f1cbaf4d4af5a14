//! Where a webhook may be sent: an `http` or `https` URL with a host,
//! whose every address is public. Every block of the IANA special-purpose
//! address registries (loopback, private, link-local, shared, benchmarking,
//! documentation, …), multicast, and IPv6 addresses embedding a refused
//! IPv4 address are refused unless the gateway is told to allow them
//! (`--webhook-allow-private`), so that an endpoint cannot turn the gateway
//! against the network it runs in (SSRF). The check runs at registration
//! here, and on every connection of a delivery in the sending client
//! itself, which connects only to the addresses it checked.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs as _};

/// Longest endpoint URL, bytes.
pub const MAX_URL: usize = 2048;

/// Why a URL is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Not an absolute http(s) URL with a host.
    #[error("{0}")]
    NotAUrl(String),
    /// It resolves to an address the gateway must not call.
    #[error("{0}")]
    Private(String),
}

/// Whether `ip` is an address on the public internet (no row of the
/// special-purpose address registries; see the gateway's `outbound`
/// module).
pub fn is_public(ip: IpAddr) -> bool {
    crate::outbound::refusal(ip).is_none()
}

/// The URL's host and port, if it is an absolute `http` or `https` URL
/// with a host and no credentials.
pub fn host_port(url: &str) -> Result<(String, u16), TargetError> {
    if url.len() > MAX_URL {
        return Err(TargetError::NotAUrl(format!(
            "the URL is longer than {MAX_URL} bytes"
        )));
    }
    let uri: ureq::http::Uri = url
        .parse()
        .map_err(|e| TargetError::NotAUrl(format!("{url:?} is not a URL: {e}")))?;
    let port = match uri.scheme_str() {
        Some("https") => 443,
        Some("http") => 80,
        _ => {
            return Err(TargetError::NotAUrl(format!(
                "{url:?}: a webhook URL is http:// or https://"
            )));
        }
    };
    let authority = uri
        .authority()
        .ok_or_else(|| TargetError::NotAUrl(format!("{url:?} has no host")))?;
    if authority.as_str().contains('@') {
        return Err(TargetError::NotAUrl(format!(
            "{url:?}: credentials in a webhook URL are refused (the signature authenticates)"
        )));
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.is_empty() {
        return Err(TargetError::NotAUrl(format!("{url:?} has no host")));
    }
    Ok((host.to_owned(), authority.port_u16().unwrap_or(port)))
}

/// Checks that `url` may be called: its form, and unless `allow_private`,
/// that every address its host resolves to is public.
pub fn check(url: &str, allow_private: bool) -> Result<(), TargetError> {
    let (host, port) = host_port(url)?;
    if allow_private {
        return Ok(());
    }
    let addrs: Vec<SocketAddr> = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| TargetError::NotAUrl(format!("cannot resolve {host}: {e}")))?
        .collect();
    if addrs.is_empty() {
        return Err(TargetError::NotAUrl(format!(
            "{host} resolves to no address"
        )));
    }
    crate::outbound::check(&host, &addrs).map_err(|e| {
        let why = crate::outbound::refused(&e).map_or_else(|| e.to_string(), ToString::to_string);
        TargetError::Private(format!(
            "{why}; the gateway calls only public addresses unless started with --webhook-allow-private"
        ))
    })
}

/// [`check`] off the async runtime's threads: a name lookup may block.
pub async fn check_async(url: &str, allow_private: bool) -> Result<(), TargetError> {
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || check(&url, allow_private))
        .await
        .unwrap_or_else(|e| Err(TargetError::NotAUrl(format!("the check was aborted: {e}"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_reserved_ranges_are_refused_and_public_ones_pass() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "2001:db8::1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn urls_are_checked_before_any_lookup() {
        for (url, says) in [
            ("ftp://example.com/x", "http:// or https://"),
            ("not a url", "is not a URL"),
            ("https://user:pw@example.com/", "credentials"),
            ("/relative", "http:// or https://"),
        ] {
            let e = check(url, false).unwrap_err().to_string();
            assert!(e.contains(says), "{url}: {e}");
        }
        let e = check("http://127.0.0.1:9/hook", false).unwrap_err();
        assert!(matches!(e, TargetError::Private(_)), "{e}");
        assert!(check("http://127.0.0.1:9/hook", true).is_ok());
        assert!(check("http://[::1]:9/hook", false).is_err());
        assert_eq!(
            host_port("https://h.example:8443/x").unwrap(),
            ("h.example".into(), 8443)
        );
    }
}
