//! Webhooks: every receipt's events, delivered to the endpoints an
//! administrator registered, signed (Standard Webhooks), at least once,
//! never lost.
//!
//! The events are written by the ledger's one writer in the transaction
//! of the receipt that causes them (the outbox, `tollgate_ledger::
//! event_types`). Each enabled endpoint has a delivery worker that reads
//! the outbox after the endpoint's cursor, page by page (memory stays
//! bounded however far behind it is), sends each event whose type the
//! endpoint subscribed to, retries on the schedule, and moves the cursor
//! in the ledger store once the event is delivered or has failed for good.
//! In order per endpoint, unless it opted into parallel delivery.
//!
//! At least once: the cursor moves after the delivery, so a crash between
//! the two sends the event again, with the same `webhook-id`
//! (`evt_<number>`); consumers dedupe on it. Never lost: the outbox is
//! durable with its receipt, and the cursor only passes an event once it
//! was delivered or its last retry failed (then it stays visible as
//! failed, and can be redelivered).
//!
//! Endpoints never influence a decision. Every change to the endpoint set
//! (added, enabled, disabled, by an administrator or by delivery, a key
//! rotated) is a `registry` receipt (spec §4.3, `webhook.*`), appended in
//! the transaction that changes the endpoint table, so that the ledger
//! tells who receives its events; a receipt never holds a secret, only its
//! hash (`v1`) or the public key (`v1a`). Delivery state (cursors,
//! attempts) is not recorded.

mod deliver;
pub mod sign;
pub mod target;

use std::time::Duration;

use tollgate_ledger::{
    AttemptRow, EVENT_TYPES, EndpointRow, Ledger, OutboxEvent, RegistryChange, WebhookOp,
};
use tollgate_protocol::{
    Object, Value, WebhookEndpoint, WebhookEndpoints, canonical, parse, webhook_secret_hash,
};

use self::sign::SigningKey;
use super::{RegistryError, Webhooks};

/// The settings member marking an endpoint whose registration is a
/// `webhook.add` receipt.
const RECORDED: &str = "recorded";

/// What a `registry` receipt records of a signing key: the hash of a
/// symmetric secret, or the public key.
fn key_member(o: &mut Object, key: &SigningKey) {
    if key.scheme() == "v1a" {
        o.insert("public_key", key.verifying_text().into());
    } else {
        o.insert("secret_hash", webhook_secret_hash(&key.to_text()).into());
    }
}

/// `{id}`, a webhook change's object.
fn id_object(id: &str) -> Object {
    let mut o = Object::new();
    o.insert("id", id.into());
    o
}

/// The `webhook.add` object of an endpoint (never its secret).
fn add_object(id: &str, config: &Object, key: &SigningKey) -> Value {
    let mut o = id_object(id);
    for k in ["url", "events", "scheme", "parallel", "include_receipt"] {
        if let Some(v) = config.get(k) {
            o.insert(k, v.clone());
        }
    }
    key_member(&mut o, key);
    Value::Object(o)
}

/// The endpoint set as the ledger's receipts recorded it: the stored
/// endpoints whose registration is a receipt.
fn recorded_set(rows: &[EndpointRow]) -> Result<WebhookEndpoints, WebhookError> {
    let mut set = WebhookEndpoints::default();
    for row in rows {
        let config = parse(&row.config).map_err(internal)?;
        let Some(o) = config.as_object() else {
            return Err(internal("stored endpoint config"));
        };
        if o.get(RECORDED) == Some(&Value::Bool(true)) {
            set.insert(
                row.id.clone(),
                WebhookEndpoint {
                    scheme: o
                        .get("scheme")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    enabled: row.enabled,
                },
            );
        }
    }
    Ok(set)
}

pub use deliver::event_body;

/// Webhook delivery's own state: nothing outside this module opens it.
pub(in crate::engine) struct State {
    /// How webhooks are delivered.
    settings: WebhookSettings,
    /// Woken when an endpoint is added, enabled or disabled, or a
    /// redelivery is asked for.
    changed: tokio::sync::Notify,
}

impl State {
    pub(in crate::engine) fn new(settings: WebhookSettings) -> Self {
        Self {
            settings,
            changed: tokio::sync::Notify::new(),
        }
    }

    /// Wakes the deliverers (a stopping gateway ends them).
    pub(in crate::engine) fn wake(&self) {
        self.changed.notify_waiters();
    }
}

/// How webhooks are delivered.
#[derive(Clone, Debug)]
pub struct WebhookSettings {
    /// Whether endpoints may resolve to loopback, private or link-local
    /// addresses.
    pub allow_private: bool,
    /// The delay before each attempt: the first is the first attempt's
    /// (normally zero); one attempt per element.
    pub schedule: Vec<Duration>,
    /// Timeout of one attempt.
    pub timeout: Duration,
    /// How often an idle worker looks for new events.
    pub poll: Duration,
    /// How long a rotated-out secret still signs, seconds.
    pub rotation_overlap_seconds: i64,
    /// Niceness of the sending threads, 0 (as decisions) to 19.
    pub niceness: u8,
}

/// The retry schedule of the Standard Webhooks specification: at once,
/// then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h and 24 h later
/// (about three days in all).
pub const DEFAULT_SCHEDULE_SECONDS: &[u64] = &[
    0, 5, 300, 1_800, 7_200, 18_000, 36_000, 50_400, 72_000, 86_400,
];

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            allow_private: false,
            schedule: DEFAULT_SCHEDULE_SECONDS
                .iter()
                .map(|s| Duration::from_secs(*s))
                .collect(),
            timeout: Duration::from_millis(crate::limits::DEFAULT_WEBHOOK_TIMEOUT_MS),
            poll: Duration::from_millis(crate::limits::WEBHOOK_POLL_MS),
            rotation_overlap_seconds: crate::limits::WEBHOOK_ROTATION_OVERLAP_SECONDS,
            niceness: crate::limits::DEFAULT_WEBHOOK_NICENESS,
        }
    }
}

/// Why a webhook request was refused. Nothing is changed for any of these.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The URL is not an http(s) URL with a host.
    #[error("{0}")]
    InvalidUrl(String),
    /// The URL resolves to an address the gateway must not call.
    #[error("{0}")]
    PrivateAddress(String),
    /// An event type that does not exist.
    #[error("{0}")]
    UnknownEventType(String),
    /// A secret of the wrong form or length, or of another scheme.
    #[error("{0}")]
    InvalidSecret(String),
    /// The request's members are wrong.
    #[error("{0}")]
    InvalidRequest(String),
    /// No endpoint has this id.
    #[error("no webhook endpoint {0:?}")]
    UnknownEndpoint(String),
    /// No event has this id.
    #[error("no event {0:?} in the outbox")]
    UnknownEvent(String),
    /// The gateway could not complete the request.
    #[error("{0}")]
    Internal(String),
}

fn internal(e: impl std::fmt::Display) -> WebhookError {
    WebhookError::Internal(e.to_string())
}

/// A new endpoint, as an administrator asks for it.
#[derive(Clone, Debug, Default)]
pub struct NewEndpoint {
    /// Where to POST events.
    pub url: String,
    /// Event types or patterns (`approval.*`, `*`).
    pub events: Vec<String>,
    /// `v1` (HMAC-SHA256, the default) or `v1a` (Ed25519).
    pub scheme: Option<String>,
    /// The signing secret (`whsec_…` / `whsk_…`); made if absent.
    pub secret: Option<String>,
    /// Deliver several events at once, out of order.
    pub parallel: bool,
    /// Include the whole receipt in each event (up to
    /// [`crate::limits::MAX_EVENT_RECEIPT`] bytes).
    pub include_receipt: bool,
}

/// An endpoint as stored: its settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Its id.
    pub id: String,
    /// Its URL.
    pub url: String,
    /// Its event types or patterns.
    pub events: Vec<String>,
    /// `v1` or `v1a`.
    pub scheme: String,
    /// Whether it takes events out of order.
    pub parallel: bool,
    /// Whether events carry the whole receipt.
    pub include_receipt: bool,
    /// Whether it receives events.
    pub enabled: bool,
    /// Why not.
    pub disabled_reason: Option<String>,
    /// The last event handled in order.
    pub cursor: u64,
    /// What consumers verify with, when it is public (`whpk_…`).
    pub public_key: Option<String>,
    /// The first event it was registered to receive.
    pub first_event: u64,
}

impl Endpoint {
    /// Whether the endpoint subscribed to `event_type`.
    pub fn wants(&self, event_type: &str) -> bool {
        self.events.iter().any(|p| pattern_matches(p, event_type))
    }

    /// The JSON answer (never a secret).
    pub fn to_value(&self) -> Value {
        let mut o = Object::new();
        o.insert("id", self.id.as_str().into());
        o.insert("url", self.url.as_str().into());
        o.insert(
            "events",
            Value::Array(self.events.iter().map(|e| e.as_str().into()).collect()),
        );
        o.insert("scheme", self.scheme.as_str().into());
        o.insert("parallel", self.parallel.into());
        o.insert("include_receipt", self.include_receipt.into());
        o.insert("enabled", self.enabled.into());
        if let Some(r) = &self.disabled_reason {
            o.insert("disabled_reason", r.as_str().into());
        }
        o.insert(
            "cursor",
            Value::integer(self.cursor as i64).unwrap_or(Value::Null),
        );
        o.insert(
            "first_event",
            Value::integer(self.first_event as i64).unwrap_or(Value::Null),
        );
        if let Some(k) = &self.public_key {
            o.insert("public_key", k.as_str().into());
        }
        Value::Object(o)
    }
}

fn pattern_matches(pattern: &str, event_type: &str) -> bool {
    pattern == "*"
        || pattern == event_type
        || pattern.strip_suffix(".*").is_some_and(|p| {
            event_type
                .strip_prefix(p)
                .is_some_and(|r| r.starts_with('.'))
        })
}

fn check_pattern(p: &str) -> Result<(), WebhookError> {
    let known = p == "*"
        || EVENT_TYPES.contains(&p)
        || p.strip_suffix(".*").is_some_and(|prefix| {
            !prefix.contains('*') && EVENT_TYPES.iter().any(|t| pattern_matches(p, t))
        });
    if known {
        Ok(())
    } else {
        Err(WebhookError::UnknownEventType(format!(
            "{p:?} is not an event type nor a pattern of them (`*`, `approval.*`); the types are {}",
            EVENT_TYPES.join(", ")
        )))
    }
}

/// A stored secret, newest last; an older one signs until `until`.
#[derive(Clone, Debug)]
pub(crate) struct Secret {
    pub key: SigningKey,
    pub until: Option<i64>,
}

fn secrets_value(secrets: &[Secret]) -> Vec<u8> {
    let items = secrets.iter().map(|s| {
        let mut o = Object::new();
        o.insert("secret", s.key.to_text().into());
        o.insert(
            "until",
            s.until.and_then(Value::integer).unwrap_or(Value::Null),
        );
        Value::Object(o)
    });
    canonical(&Value::Array(items.collect()))
}

pub(crate) fn secrets_of(row: &EndpointRow) -> Result<Vec<Secret>, WebhookError> {
    let v = parse(&row.secrets).map_err(internal)?;
    let Value::Array(items) = v else {
        return Err(internal("stored secrets are not a list"));
    };
    items
        .iter()
        .map(|i| {
            let o = i.as_object().ok_or_else(|| internal("stored secret"))?;
            let text = o.get("secret").and_then(Value::as_str).unwrap_or_default();
            Ok(Secret {
                key: SigningKey::parse(text).map_err(internal)?,
                until: o.get("until").and_then(Value::as_safe_integer),
            })
        })
        .collect()
}

pub(crate) fn endpoint_of(row: &EndpointRow) -> Result<Endpoint, WebhookError> {
    let config = parse(&row.config).map_err(internal)?;
    let o = config
        .as_object()
        .ok_or_else(|| internal("stored endpoint config"))?;
    let s = |k: &str| {
        o.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let b = |k: &str| o.get(k) == Some(&Value::Bool(true));
    let events = match o.get("events") {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    let public_key = secrets_of(row)?
        .last()
        .filter(|s| s.key.scheme() == "v1a")
        .map(|s| s.key.verifying_text());
    Ok(Endpoint {
        id: row.id.clone(),
        url: s("url"),
        events,
        scheme: s("scheme"),
        parallel: b("parallel"),
        include_receipt: b("include_receipt"),
        enabled: row.enabled,
        disabled_reason: row.disabled_reason.clone(),
        cursor: row.cursor,
        public_key,
        first_event: o
            .get("first_event")
            .and_then(Value::as_safe_integer)
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(1),
    })
}

/// One event as an endpoint saw it: its delivery state and attempts.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The event.
    pub event: OutboxEvent,
    /// `delivered`, `failed` or `pending`.
    pub state: &'static str,
    /// Its attempts, in order.
    pub attempts: Vec<AttemptRow>,
}

impl Delivery {
    /// The JSON answer.
    pub fn to_value(&self) -> Value {
        let mut o = Object::new();
        o.insert("webhook_id", format!("evt_{}", self.event.id).into());
        o.insert("type", self.event.event_type.as_str().into());
        o.insert(
            "seq",
            Value::integer(self.event.seq as i64).unwrap_or(Value::Null),
        );
        o.insert("state", self.state.into());
        let attempts = self.attempts.iter().map(|a| {
            let mut ao = Object::new();
            ao.insert("n", Value::integer(i64::from(a.n)).unwrap_or(Value::Null));
            ao.insert("at", a.at.as_str().into());
            ao.insert(
                "status",
                a.status.map_or(Value::Null, |s| {
                    Value::integer(i64::from(s)).unwrap_or(Value::Null)
                }),
            );
            if let Some(e) = &a.error {
                ao.insert("error", e.as_str().into());
            }
            ao.insert("outcome", a.outcome.as_str().into());
            Value::Object(ao)
        });
        o.insert("attempts", Value::Array(attempts.collect()));
        Value::Object(o)
    }
}

/// What to send again.
#[derive(Clone, Debug)]
pub enum Redeliver {
    /// One event, by its `webhook-id` (`evt_N`).
    Event(String),
    /// Every event about ledger entry `seq` or a later one.
    FromSeq(u64),
}

fn event_number(id: &str) -> Option<u64> {
    id.strip_prefix("evt_")?.parse().ok()
}

fn random_id() -> Result<String, WebhookError> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).map_err(|e| internal(format!("no randomness: {e}")))?;
    Ok(format!(
        "wh_{}",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    ))
}

impl<L: Ledger> Webhooks<'_, L> {
    async fn endpoint_row(&self, id: &str) -> Result<EndpointRow, WebhookError> {
        self.ledger
            .webhook_endpoints()
            .await
            .map_err(internal)?
            .into_iter()
            .find(|r| r.id == id)
            .ok_or_else(|| WebhookError::UnknownEndpoint(id.to_owned()))
    }

    /// Records endpoint changes as `registry` receipts, the store changing
    /// the endpoint table in their transaction. `plan` makes the changes
    /// from the endpoints as stored, under the registry lock; each is
    /// checked against the recorded endpoint set (the rule re-decision
    /// applies). No change is no receipt. Retried if another instance
    /// changed the registries meanwhile.
    async fn record_endpoints<T>(
        &self,
        mut plan: impl FnMut(&[EndpointRow]) -> Result<(Vec<(RegistryChange, Value)>, T), WebhookError>,
    ) -> Result<T, WebhookError> {
        let mut last = String::new();
        for _ in 0..super::intents::MAX_ATTEMPTS {
            let _lock = self.registry_state.lock.lock().await;
            let view = self.view();
            let rows = self.ledger.webhook_endpoints().await.map_err(internal)?;
            let (changes, out) = plan(&rows)?;
            if changes.is_empty() {
                return Ok(out);
            }
            let mut set = recorded_set(&rows)?;
            for (change, object) in &changes {
                if let Some(kind) = change.kind() {
                    set.apply(kind, object).map_err(internal)?;
                }
            }
            let policy = view.domains.versions();
            match self.registry().record_all(&view, changes, &policy).await {
                Ok(seq) => {
                    let mut next = (*view).clone();
                    next.registry_seq = seq;
                    self.set_view(next);
                    self.webhook_state.changed.notify_waiters();
                    return Ok(out);
                }
                Err(RegistryError::Contended(why)) => last = why,
                Err(e) => return Err(internal(e)),
            }
        }
        Err(internal(format!(
            "the registries kept changing under the endpoint change: {last}"
        )))
    }

    /// Records, once, the endpoints stored before endpoint changes were
    /// receipts: a `webhook.add` for each (and a `webhook.disable` if it is
    /// disabled), so that later changes to them follow a recorded one.
    pub async fn adopt_webhooks(&self) -> Result<(), WebhookError> {
        self.record_endpoints(|rows| {
            let mut changes = Vec::new();
            for row in rows {
                let config = parse(&row.config).map_err(internal)?;
                let Some(mut o) = config.as_object().cloned() else {
                    return Err(internal("stored endpoint config"));
                };
                if o.get(RECORDED) == Some(&Value::Bool(true)) {
                    continue;
                }
                let Some(key) = secrets_of(row)?.pop().map(|s| s.key) else {
                    return Err(internal("a stored endpoint without a secret"));
                };
                let object = add_object(&row.id, &o, &key);
                o.insert(RECORDED, true.into());
                changes.push((
                    RegistryChange::WebhookAdopt {
                        id: row.id.clone(),
                        config: canonical(&Value::Object(o)),
                    },
                    object,
                ));
                if !row.enabled {
                    let reason = row
                        .disabled_reason
                        .clone()
                        .filter(|r| !r.is_empty())
                        .unwrap_or_else(|| "disabled".to_owned());
                    let mut d = id_object(&row.id);
                    d.insert("reason", reason.as_str().into());
                    changes.push((
                        RegistryChange::WebhookDisable {
                            id: row.id.clone(),
                            reason,
                        },
                        Value::Object(d),
                    ));
                }
            }
            Ok((changes, ()))
        })
        .await
    }

    /// Registers an endpoint; it receives the events written from its
    /// `webhook.add` receipt on. Returns it and the secret a consumer
    /// verifies with (`whsec_…`, shown once) or the public key (`whpk_…`).
    pub async fn add_webhook(&self, new: NewEndpoint) -> Result<(Endpoint, String), WebhookError> {
        target::check_async(&new.url, self.webhook_state.settings.allow_private)
            .await
            .map_err(|e| match e {
                target::TargetError::NotAUrl(m) => WebhookError::InvalidUrl(m),
                target::TargetError::Private(m) => WebhookError::PrivateAddress(m),
            })?;
        if new.events.is_empty() {
            return Err(WebhookError::UnknownEventType(format!(
                "name at least one event type or pattern; the types are {}",
                EVENT_TYPES.join(", ")
            )));
        }
        for e in &new.events {
            check_pattern(e)?;
        }
        let key = match (&new.secret, new.scheme.as_deref()) {
            (Some(text), scheme) => {
                let key = SigningKey::parse(text)
                    .map_err(|e| WebhookError::InvalidSecret(e.to_string()))?;
                if let Some(s) = scheme
                    && s != key.scheme()
                {
                    return Err(WebhookError::InvalidSecret(format!(
                        "a {} secret was given for scheme {s}",
                        key.scheme()
                    )));
                }
                key
            }
            (None, scheme) => SigningKey::generate(scheme.unwrap_or("v1"))
                .map_err(|e| WebhookError::InvalidSecret(e.to_string()))?,
        };
        let id = random_id()?;
        let mut config = Object::new();
        config.insert("url", new.url.as_str().into());
        config.insert(
            "events",
            Value::Array(new.events.iter().map(|e| e.as_str().into()).collect()),
        );
        config.insert("scheme", key.scheme().into());
        config.insert("parallel", new.parallel.into());
        config.insert("include_receipt", new.include_receipt.into());
        config.insert("created_at", self.clock.now().as_str().into());
        config.insert(RECORDED, true.into());
        let cursor = self.ledger.outbox_last().await.map_err(internal)?;
        config.insert(
            "first_event",
            Value::integer(i64::try_from(cursor + 1).unwrap_or(i64::MAX)).unwrap_or(Value::Null),
        );
        let shown = key.verifying_text();
        let object = add_object(&id, &config, &key);
        let secrets = secrets_value(&[Secret { key, until: None }]);
        let config = canonical(&Value::Object(config));
        self.record_endpoints(|_| {
            let change = RegistryChange::WebhookAdd {
                id: id.clone(),
                config: config.clone(),
                secrets: secrets.clone(),
                cursor,
            };
            Ok((vec![(change, object.clone())], ()))
        })
        .await?;
        let row = self.endpoint_row(&id).await?;
        Ok((endpoint_of(&row)?, shown))
    }

    /// Every endpoint.
    pub async fn list(&self) -> Result<Vec<Endpoint>, WebhookError> {
        self.ledger
            .webhook_endpoints()
            .await
            .map_err(internal)?
            .iter()
            .map(endpoint_of)
            .collect()
    }

    /// Enables or disables an endpoint (by an administrator). Already so
    /// records nothing.
    pub async fn set_webhook_enabled(
        &self,
        id: &str,
        enabled: bool,
    ) -> Result<Endpoint, WebhookError> {
        let reason = (!enabled).then(|| "disabled by an administrator".to_owned());
        self.set_enabled(id, enabled, reason).await?;
        endpoint_of(&self.endpoint_row(id).await?)
    }

    /// Enables an endpoint, or disables it for `reason`, as a
    /// `webhook.enable` / `webhook.disable` receipt.
    pub(crate) async fn set_enabled(
        &self,
        id: &str,
        enabled: bool,
        reason: Option<String>,
    ) -> Result<(), WebhookError> {
        self.record_endpoints(|rows| {
            let row = rows
                .iter()
                .find(|r| r.id == id)
                .ok_or_else(|| WebhookError::UnknownEndpoint(id.to_owned()))?;
            if row.enabled == enabled {
                return Ok((Vec::new(), ()));
            }
            let mut o = id_object(id);
            let change = if enabled {
                RegistryChange::WebhookEnable { id: id.to_owned() }
            } else {
                let reason = reason
                    .clone()
                    .filter(|r| !r.is_empty())
                    .unwrap_or_else(|| "disabled".to_owned());
                o.insert("reason", reason.as_str().into());
                RegistryChange::WebhookDisable {
                    id: id.to_owned(),
                    reason,
                }
            };
            Ok((vec![(change, Value::Object(o))], ()))
        })
        .await
    }

    /// A new signing secret for an endpoint; the ones before it keep
    /// signing (beside it) for the rotation overlap, so consumers can
    /// switch without missing a delivery. Returns what consumers verify
    /// with.
    pub async fn rotate_webhook(&self, id: &str) -> Result<String, WebhookError> {
        let scheme = endpoint_of(&self.endpoint_row(id).await?)?.scheme;
        let key = SigningKey::generate(&scheme)
            .map_err(|e| WebhookError::InvalidSecret(e.to_string()))?;
        let shown = key.verifying_text();
        let now = self.clock.now().unix_seconds();
        let until = now + self.webhook_state.settings.rotation_overlap_seconds;
        self.record_endpoints(|rows| {
            let row = rows
                .iter()
                .find(|r| r.id == id)
                .ok_or_else(|| WebhookError::UnknownEndpoint(id.to_owned()))?;
            let mut secrets: Vec<Secret> = secrets_of(row)?
                .into_iter()
                .filter(|s| s.until.is_none_or(|u| u > now))
                .map(|s| Secret {
                    until: Some(s.until.map_or(until, |u| u.min(until))),
                    ..s
                })
                .collect();
            secrets.push(Secret {
                key: key.clone(),
                until: None,
            });
            let mut o = id_object(id);
            key_member(&mut o, &key);
            let change = RegistryChange::WebhookRotate {
                id: id.to_owned(),
                secrets: secrets_value(&secrets),
            };
            Ok((vec![(change, Value::Object(o))], ()))
        })
        .await?;
        Ok(shown)
    }

    /// Sends events again: one, or every one from a ledger seq on.
    /// Returns how many events that is for this endpoint.
    pub async fn redeliver_webhook(&self, id: &str, what: Redeliver) -> Result<u64, WebhookError> {
        let row = self.endpoint_row(id).await?;
        let endpoint = endpoint_of(&row)?;
        match what {
            Redeliver::Event(evt) => {
                let n =
                    event_number(&evt).ok_or_else(|| WebhookError::UnknownEvent(evt.clone()))?;
                let e = self
                    .ledger
                    .outbox_event(n)
                    .await
                    .map_err(internal)?
                    .filter(|e| endpoint.wants(&e.event_type))
                    .ok_or(WebhookError::UnknownEvent(evt))?;
                self.ledger
                    .webhook_write(vec![WebhookOp::Redeliver {
                        endpoint: id.to_owned(),
                        event: e.id,
                    }])
                    .await
                    .map_err(internal)?;
                self.webhook_state.changed.notify_waiters();
                Ok(1)
            }
            Redeliver::FromSeq(seq) => {
                let first = self.ledger.outbox_first_from(seq).await.map_err(internal)?;
                let Some(first) = first else {
                    return Ok(0);
                };
                let cursor = first - 1;
                // Count what will be sent, page by page.
                let mut count = 0;
                let mut after = cursor;
                loop {
                    let page = self
                        .ledger
                        .outbox_after(after, 1024)
                        .await
                        .map_err(internal)?;
                    count += page
                        .iter()
                        .filter(|e| endpoint.wants(&e.event_type))
                        .count() as u64;
                    match page.last() {
                        Some(e) if page.len() == 1024 => after = e.id,
                        _ => break,
                    }
                }
                self.ledger
                    .webhook_write(vec![WebhookOp::SetCursor {
                        id: id.to_owned(),
                        cursor,
                    }])
                    .await
                    .map_err(internal)?;
                self.webhook_state.changed.notify_waiters();
                Ok(count)
            }
        }
    }

    /// The events for an endpoint from event `from` on (up to `limit`),
    /// with their state and attempts.
    pub async fn webhook_deliveries(
        &self,
        id: &str,
        from: Option<u64>,
        limit: u32,
    ) -> Result<Vec<Delivery>, WebhookError> {
        let row = self.endpoint_row(id).await?;
        let endpoint = endpoint_of(&row)?;
        let mut out = Vec::new();
        // By default, from the endpoint's first event.
        let mut after = match from {
            Some(f) => f.saturating_sub(1),
            None => endpoint.first_event.saturating_sub(1),
        };
        while out.len() < limit as usize {
            let page = self
                .ledger
                .outbox_after(after, 1024)
                .await
                .map_err(internal)?;
            let Some(last) = page.last() else { break };
            after = last.id;
            let full = page.len() == 1024;
            let wanted: Vec<OutboxEvent> = page
                .into_iter()
                .filter(|e| endpoint.wants(&e.event_type))
                .collect();
            let attempts = match wanted.first() {
                Some(first) => self
                    .ledger
                    .webhook_attempts(id, first.id, 10_000)
                    .await
                    .map_err(internal)?,
                None => Vec::new(),
            };
            for e in wanted {
                if out.len() >= limit as usize {
                    break;
                }
                let mine: Vec<AttemptRow> = attempts
                    .iter()
                    .filter(|a| a.event == e.id)
                    .cloned()
                    .collect();
                let state = match mine.last().map(|a| a.outcome.as_str()) {
                    Some("delivered") => "delivered",
                    Some("failed") if e.id <= row.cursor => "failed",
                    _ => "pending",
                };
                out.push(Delivery {
                    event: e,
                    state,
                    attempts: mine,
                });
            }
            if !full {
                break;
            }
        }
        Ok(out)
    }

    /// Starts delivering: one worker per enabled endpoint, started and
    /// stopped as endpoints are added, enabled and disabled, for as long as
    /// the gateway lives.
    pub fn spawn_webhooks(&self) {
        deliver::spawn_supervisor(self);
    }

    /// The webhook settings.
    pub fn webhook_settings(&self) -> &WebhookSettings {
        &self.webhook_state.settings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_types_by_whole_segments() {
        assert!(pattern_matches("*", "approval.opened"));
        assert!(pattern_matches("approval.*", "approval.opened"));
        assert!(!pattern_matches("approval.*", "approvals.opened"));
        assert!(!pattern_matches("approval.opened", "approval.decided"));
        for ok in ["*", "approval.*", "commit.failed", "registry.changed"] {
            assert!(check_pattern(ok).is_ok(), "{ok}");
        }
        for bad in [
            "approval",
            "nothing.*",
            "decision.passed.x",
            "*.passed",
            "a*",
        ] {
            assert!(check_pattern(bad).is_err(), "{bad}");
        }
    }
}
