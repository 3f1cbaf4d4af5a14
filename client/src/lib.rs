//! A typed client of the Tollgate gateway's HTTP API: submit intents, read
//! receipts, the head, the export and the key set, and every registry
//! (admin) call. The `tollgate` command, the tour, the load bench and the
//! black-box tests use it; agent SDKs build on it.
//!
//! Scope: transport and the API's shapes. It signs nothing (an intent
//! arrives already signed) and interprets no receipt beyond parsing it.
//! Every call answers an [`Answer`] whatever the status, so that callers
//! can examine problem documents; [`Answer::ok`] turns a non-2xx answer
//! into [`Error::Problem`].
//!
//! TLS: `https://` URLs trust the usual public roots, or only the PEM
//! certificate named by `TOLLGATE_CA_CERT` when it is set (a gateway with
//! a private CA or a self-signed certificate).

#![forbid(unsafe_code)]

use tollgate_protocol::{Value, parse};

/// Largest answer body read, bytes (an export can be large).
pub const MAX_ANSWER: u64 = 1 << 34;

/// Errors of `tollgate-client`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The gateway could not be reached, or the answer could not be read.
    #[error("{url}: {message}")]
    Transport {
        /// The URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The gateway answered with a status other than 2xx.
    #[error("HTTP {status}: {body}")]
    Problem {
        /// The status.
        status: u16,
        /// The body (a problem document), as text.
        body: String,
    },
    /// A 2xx answer that is not the JSON expected.
    #[error("{url}: answer is not JSON: {message}")]
    NotJson {
        /// The URL.
        url: String,
        /// The parser's message.
        message: String,
    },
}

/// One answer of the gateway.
#[derive(Clone, Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: String,
    /// Whether `Idempotent-Replayed` was set.
    pub replayed: bool,
    /// `Retry-After`, if set.
    pub retry_after: Option<String>,
    /// `X-Request-Id`, if set.
    pub request_id: Option<String>,
    /// The body.
    pub body: Vec<u8>,
}

impl Answer {
    /// The answer if its status is 2xx, else [`Error::Problem`].
    pub fn ok(self) -> Result<Self, Error> {
        if (200..300).contains(&self.status) {
            Ok(self)
        } else {
            Err(Error::Problem {
                status: self.status,
                body: String::from_utf8_lossy(&self.body).trim_end().to_owned(),
            })
        }
    }

    /// The body parsed as strict I-JSON.
    pub fn json(&self) -> Result<Value, Error> {
        parse(&self.body).map_err(|e| Error::NotJson {
            url: String::new(),
            message: e.to_string(),
        })
    }

    /// The body as text, without its final newline.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).trim_end().to_owned()
    }

    /// The problem type's name (after `urn:tollgate:problem:`), if the
    /// body is a problem document.
    pub fn problem_type(&self) -> Option<String> {
        let v = parse(&self.body).ok()?;
        v.as_object()?
            .get("type")?
            .as_str()?
            .strip_prefix("urn:tollgate:problem:")
            .map(str::to_owned)
    }
}

/// A client of one gateway.
#[derive(Clone, Debug)]
pub struct Client {
    base: String,
    agent: ureq::Agent,
    admin_token: Option<String>,
    read_token: Option<String>,
}

impl Client {
    /// A client of the gateway at `url` (e.g. `http://127.0.0.1:8080`).
    pub fn new(url: &str) -> Self {
        let mut config = ureq::Agent::config_builder().http_status_as_error(false);
        if let Ok(path) = std::env::var("TOLLGATE_CA_CERT")
            && let Ok(pem) = std::fs::read(&path)
            && let Ok(cert) = ureq::tls::Certificate::from_pem(&pem)
        {
            config = config.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&[cert]))
                    .build(),
            );
        }
        Self {
            base: url.trim_end_matches('/').to_owned(),
            agent: config.build().into(),
            admin_token: None,
            read_token: std::env::var("TOLLGATE_READ_TOKEN").ok(),
        }
    }

    /// The same client, sending `token` as the administrator's bearer
    /// token on admin calls.
    pub fn with_admin_token(mut self, token: &str) -> Self {
        self.admin_token = Some(token.trim().to_owned());
        self
    }

    /// The same client, sending `token` as the bearer token on reads of
    /// the ledger and receipts (a gateway started with `--read-token`).
    /// By default it is `TOLLGATE_READ_TOKEN`, if set.
    pub fn with_read_token(mut self, token: &str) -> Self {
        self.read_token = Some(token.trim().to_owned());
        self
    }

    /// The gateway's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn read(
        url: &str,
        resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Answer, Error> {
        let transport = |e: ureq::Error| Error::Transport {
            url: url.to_owned(),
            message: e.to_string(),
        };
        let mut resp = resp.map_err(transport)?;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let status = resp.status().as_u16();
        let content_type = header("content-type").unwrap_or_default();
        let replayed = header("idempotent-replayed").is_some();
        let retry_after = header("retry-after");
        let request_id = header("x-request-id");
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_vec()
            .map_err(transport)?;
        Ok(Answer {
            status,
            content_type,
            replayed,
            retry_after,
            request_id,
            body,
        })
    }

    /// `GET path`, with the admin token if `admin`, else the read token
    /// if there is one.
    pub fn get(&self, path: &str, admin: bool) -> Result<Answer, Error> {
        let url = self.url(path);
        let mut req = self.agent.get(&url);
        let token = if admin {
            &self.admin_token
        } else {
            &self.read_token
        };
        if let Some(t) = token {
            req = req.header("authorization", &format!("Bearer {t}"));
        }
        Self::read(&url, req.call())
    }

    /// `POST path` with a JSON body and extra headers, with the admin token
    /// if `admin`.
    pub fn post(
        &self,
        path: &str,
        body: &[u8],
        headers: &[(&str, &str)],
        admin: bool,
    ) -> Result<Answer, Error> {
        let url = self.url(path);
        let mut req = self
            .agent
            .post(&url)
            .header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if admin && let Some(t) = &self.admin_token {
            req = req.header("authorization", &format!("Bearer {t}"));
        }
        Self::read(&url, req.send(body))
    }

    /// `POST /v1/intents` with a signed intent envelope's bytes and an
    /// optional `Idempotency-Key`. A 200 answer's body is the ledger
    /// entry of the receipt.
    pub fn submit(&self, envelope: &[u8], idempotency_key: Option<&str>) -> Result<Answer, Error> {
        let headers: Vec<(&str, &str)> = idempotency_key
            .map(|k| ("idempotency-key", k))
            .into_iter()
            .collect();
        self.post("/v1/intents", envelope, &headers, false)
    }

    /// `POST /v1/events` with a signed event envelope.
    pub fn send_event(&self, envelope: &[u8]) -> Result<Answer, Error> {
        self.post("/v1/events", envelope, &[], false)
    }

    /// `POST /v1/leases` with a signed lease request envelope (any `op`):
    /// a 200 answer's body is the ledger entry of its `lease` receipt.
    pub fn send_lease(&self, envelope: &[u8]) -> Result<Answer, Error> {
        self.post("/v1/leases", envelope, &[], false)
    }

    /// `GET /v1/leases/{id}`, waiting up to `wait` seconds while it waits.
    pub fn lease(&self, id: &str, wait: u64) -> Result<Answer, Error> {
        self.get(&format!("/v1/leases/{id}?wait={wait}"), false)
    }

    /// `GET /v1/leases`, by agent and/or resource pattern.
    pub fn leases(&self, agent: Option<&str>, resource: Option<&str>) -> Result<Answer, Error> {
        let q: Vec<String> = agent
            .map(|a| format!("agent={a}"))
            .into_iter()
            .chain(resource.map(|r| format!("resource={r}")))
            .collect();
        self.get(&format!("/v1/leases?{}", q.join("&")), false)
    }

    /// `POST /v1/admin/leases/pause` (or `resume`) with `{"agent"}` or
    /// `{"resource"}`.
    pub fn pause_leases(&self, body: &[u8], pause: bool) -> Result<Answer, Error> {
        let what = if pause { "pause" } else { "resume" };
        self.post(&format!("/v1/admin/leases/{what}"), body, &[], true)
    }

    /// `POST /v1/admin/sources` with an event source object.
    pub fn register_source(&self, source: &[u8]) -> Result<Answer, Error> {
        self.post("/v1/admin/sources", source, &[], true)
    }

    /// `POST /v1/admin/sources/{id}/revoke`.
    pub fn revoke_source(&self, id: &str) -> Result<Answer, Error> {
        self.post(&format!("/v1/admin/sources/{id}/revoke"), b"", &[], true)
    }

    /// `GET /v1/admin/sources`.
    pub fn sources(&self) -> Result<Answer, Error> {
        self.get("/v1/admin/sources", true)
    }

    /// `GET /v1/receipts/{id}`.
    pub fn receipt(&self, receipt_id: &str) -> Result<Answer, Error> {
        self.get(&format!("/v1/receipts/{receipt_id}"), false)
    }

    /// `GET /v1/approvals`, with `status` if given.
    pub fn approvals(&self, status: Option<&str>) -> Result<Answer, Error> {
        match status {
            Some(s) => self.get(&format!("/v1/approvals?status={s}"), false),
            None => self.get("/v1/approvals", false),
        }
    }

    /// `GET /v1/approvals/{id}`: the approval, with its intent.
    pub fn approval(&self, id: &str) -> Result<Answer, Error> {
        self.get(&format!("/v1/approvals/{id}"), false)
    }

    /// `POST /v1/approvals/{id}/decisions` with a signed approval
    /// decision's bytes.
    pub fn decide_approval(&self, id: &str, decision: &[u8]) -> Result<Answer, Error> {
        self.post(
            &format!("/v1/approvals/{id}/decisions"),
            decision,
            &[],
            false,
        )
    }

    /// `GET /v1/intents/{agent}/{intent_id}`, waiting up to `wait` seconds
    /// for a pending intent.
    pub fn intent_state(&self, agent: &str, intent_id: &str, wait: u64) -> Result<Answer, Error> {
        self.get(
            &format!("/v1/intents/{agent}/{intent_id}?wait={wait}"),
            false,
        )
    }

    /// `POST /v1/admin/webhooks` with an endpoint's settings.
    pub fn add_webhook(&self, body: &[u8]) -> Result<Answer, Error> {
        self.post("/v1/admin/webhooks", body, &[], true)
    }

    /// `GET /v1/admin/webhooks`.
    pub fn webhooks(&self) -> Result<Answer, Error> {
        self.get("/v1/admin/webhooks", true)
    }

    /// `POST /v1/admin/webhooks/{id}/{action}` (`enable`, `disable`,
    /// `rotate`, or `redeliver` with a body).
    pub fn webhook_action(&self, id: &str, action: &str, body: &[u8]) -> Result<Answer, Error> {
        self.post(
            &format!("/v1/admin/webhooks/{id}/{action}"),
            body,
            &[],
            true,
        )
    }

    /// `GET /v1/admin/webhooks/{id}/deliveries?from=&limit=`; without
    /// `from`, from the endpoint's first event.
    pub fn webhook_deliveries(
        &self,
        id: &str,
        from: Option<&str>,
        limit: u32,
    ) -> Result<Answer, Error> {
        let from = from.map_or(String::new(), |f| format!("from={f}&"));
        self.get(
            &format!("/v1/admin/webhooks/{id}/deliveries?{from}limit={limit}"),
            true,
        )
    }

    /// `GET /v1/ledger/head`: `(seq, hash)`.
    pub fn head(&self) -> Result<(u64, String), Error> {
        let url = self.url("/v1/ledger/head");
        let v = self.get("/v1/ledger/head", false)?.ok()?.json()?;
        let o = v.as_object();
        let seq = o
            .and_then(|o| o.get("seq"))
            .and_then(Value::as_safe_integer)
            .and_then(|s| u64::try_from(s).ok());
        let hash = o.and_then(|o| o.get("hash")).and_then(Value::as_str);
        match (seq, hash) {
            (Some(s), Some(h)) => Ok((s, h.to_owned())),
            _ => Err(Error::NotJson {
                url,
                message: "expected {\"seq\", \"hash\"}".into(),
            }),
        }
    }

    /// `GET /v1/ledger/export`: the JSON Lines export.
    pub fn export(&self) -> Result<Vec<u8>, Error> {
        Ok(self.get("/v1/ledger/export", false)?.ok()?.body)
    }

    /// `GET /.well-known/jwks.json`: the key set document.
    pub fn jwks(&self) -> Result<Vec<u8>, Error> {
        Ok(self.get("/.well-known/jwks.json", false)?.ok()?.body)
    }

    /// `POST /v1/admin/delegations` with a token envelope.
    pub fn register_delegation(&self, envelope: &[u8]) -> Result<Answer, Error> {
        self.post("/v1/admin/delegations", envelope, &[], true)
    }

    /// `POST /v1/admin/delegations/{id}/revoke`.
    pub fn revoke_delegation(&self, id: &str) -> Result<Answer, Error> {
        self.post(
            &format!("/v1/admin/delegations/{id}/revoke"),
            b"",
            &[],
            true,
        )
    }

    /// `GET /v1/admin/delegations`.
    pub fn delegations(&self) -> Result<Answer, Error> {
        self.get("/v1/admin/delegations", true)
    }

    /// `POST /v1/admin/reviewers` with a reviewer object.
    pub fn register_reviewer(&self, reviewer: &[u8]) -> Result<Answer, Error> {
        self.post("/v1/admin/reviewers", reviewer, &[], true)
    }

    /// `POST /v1/admin/reviewers/invite`: a one-time enrollment link.
    pub fn invite_reviewer(&self, invite: &[u8]) -> Result<Answer, Error> {
        self.post("/v1/admin/reviewers/invite", invite, &[], true)
    }

    /// `POST /v1/admin/reviewers/{id}/revoke`.
    pub fn revoke_reviewer(&self, id: &str) -> Result<Answer, Error> {
        self.post(&format!("/v1/admin/reviewers/{id}/revoke"), b"", &[], true)
    }

    /// `GET /v1/admin/reviewers`.
    pub fn reviewers(&self) -> Result<Answer, Error> {
        self.get("/v1/admin/reviewers", true)
    }

    /// `POST /v1/admin/issuers` with an issuer's public JWK.
    pub fn register_issuer(&self, jwk: &[u8]) -> Result<Answer, Error> {
        self.post("/v1/admin/issuers", jwk, &[], true)
    }

    /// `POST /v1/admin/issuers/{kid}/revoke`.
    pub fn revoke_issuer(&self, kid: &str) -> Result<Answer, Error> {
        self.post(&format!("/v1/admin/issuers/{kid}/revoke"), b"", &[], true)
    }

    /// `GET /v1/admin/issuers`.
    pub fn issuers(&self) -> Result<Answer, Error> {
        self.get("/v1/admin/issuers", true)
    }

    /// `POST /v1/admin/resources` with `{"resource", "attributes"}`.
    pub fn put_resource(&self, body: &[u8]) -> Result<Answer, Error> {
        self.post("/v1/admin/resources", body, &[], true)
    }

    /// `GET /v1/entities/{type}/{id}` of `resource` (`type:id`).
    pub fn entity(&self, resource: &str) -> Result<Answer, Error> {
        let (ty, id) = resource.split_once(':').unwrap_or((resource, ""));
        self.get(&format!("/v1/entities/{ty}/{id}"), false)
    }

    /// `GET /v1/entities/{type}/{id}/history` of `resource`.
    pub fn entity_history(&self, resource: &str) -> Result<Answer, Error> {
        let (ty, id) = resource.split_once(':').unwrap_or((resource, ""));
        self.get(&format!("/v1/entities/{ty}/{id}/history"), false)
    }

    /// `GET /v1/admin/resources`.
    pub fn resources(&self) -> Result<Answer, Error> {
        self.get("/v1/admin/resources", true)
    }

    /// `POST /v1/admin/policies` with `{"files": {path: text}}`.
    pub fn publish_policy(&self, body: &[u8]) -> Result<Answer, Error> {
        self.post("/v1/admin/policies", body, &[], true)
    }

    /// `POST /v1/admin/policies/activate`: `version` in force for its
    /// bundle name (`force`: even if it strands pending work).
    pub fn activate_policy(&self, version: &str) -> Result<Answer, Error> {
        self.policy_change("activate", "version", version, false)
    }

    /// [`Client::activate_policy`] with `force`.
    pub fn activate_policy_forced(&self, version: &str, force: bool) -> Result<Answer, Error> {
        self.policy_change("activate", "version", version, force)
    }

    /// `POST /v1/admin/policies/rollback`: bundle `name` (empty: the one
    /// bundle in force) back to its version before.
    pub fn rollback_policy(&self, name: &str, force: bool) -> Result<Answer, Error> {
        self.policy_change("rollback", "name", name, force)
    }

    /// `POST /v1/admin/policies/deactivate`: nothing in force for bundle
    /// `name`.
    pub fn deactivate_policy(&self, name: &str, force: bool) -> Result<Answer, Error> {
        self.policy_change("deactivate", "name", name, force)
    }

    fn policy_change(
        &self,
        what: &str,
        key: &str,
        value: &str,
        force: bool,
    ) -> Result<Answer, Error> {
        let mut o = tollgate_protocol::Object::new();
        if !value.is_empty() {
            o.insert(key, value.into());
        }
        if force {
            o.insert("force", true.into());
        }
        self.post(
            &format!("/v1/admin/policies/{what}"),
            Value::Object(o).to_string().as_bytes(),
            &[],
            true,
        )
    }

    /// `GET /v1/admin/policies`.
    pub fn policies(&self) -> Result<Answer, Error> {
        self.get("/v1/admin/policies", true)
    }
}
