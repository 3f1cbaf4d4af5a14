//! Outbound HTTP: how the gateway calls other systems (upstream commits,
//! resource lookups, witnesses, webhook endpoints).
//!
//! Invariants: every status is an answer, never an error; redirects are
//! not followed (a 3xx is the answer, so only the configured URL is ever
//! called); one timeout bounds the whole call, connection included.

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
