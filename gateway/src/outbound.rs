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
