//! Every problem the API answers (RFC 9457), in one enum: status, problem
//! type and title come from one `match` in [`ApiError::parts`].

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tollgate_pipeline::ShapeError;
use tollgate_protocol::{Object, Value, canonical};

use crate::engine::webhooks::WebhookError;
use crate::engine::{
    ApprovalError, AuthFailure, EventError, IntentError, LeaseError, RegistryError,
};
use crate::limits::IN_FLIGHT_RETRY_AFTER;

/// The prefix of every problem type.
pub const PROBLEM_PREFIX: &str = "urn:tollgate:problem:";

/// Every problem type the API can answer, with its title; the OpenAPI
/// document's `Problem.type` lists the same, and a test keeps them equal.
pub const PROBLEM_TYPES: &[(&str, &str)] = &[
    ("not-found", "Not found"),
    ("invalid-invite", "Enrollment link not valid"),
    ("invite-expired", "Enrollment link expired"),
    ("invite-used", "Enrollment link used"),
    ("passkey-refused", "Passkey refused"),
    ("unknown-passkey", "Unknown passkey"),
    ("csrf-refused", "Cross-site request refused"),
    ("reviewer-required", "A reviewer's session is required"),
    ("not-this-reviewer", "The decision names another reviewer"),
    ("method-not-allowed", "Method not allowed"),
    ("unsupported-media-type", "Unsupported media type"),
    ("payload-too-large", "Payload too large"),
    ("request-timeout", "Request body too slow"),
    ("malformed-json", "Malformed JSON"),
    ("invalid-intent", "Invalid intent"),
    ("clock-skew", "issued_at too far from the gateway's clock"),
    ("bad-signature", "Intent signature not valid"),
    ("unknown-delegation", "Unknown delegation"),
    ("revoked-delegation", "Delegation revoked"),
    (
        "delegation-not-valid-now",
        "Delegation not valid at issued_at",
    ),
    ("wrong-agent", "Delegation is for another agent"),
    ("untrusted-delegation", "Delegation not trusted"),
    ("invalid-idempotency-key", "Invalid Idempotency-Key"),
    (
        "idempotency-key-mismatch",
        "Idempotency-Key is not the intent id",
    ),
    ("in-flight", "Request in flight"),
    ("contended", "State changed concurrently"),
    ("resource-unavailable", "Resource attributes unavailable"),
    ("idempotency-conflict", "Idempotency key reused"),
    ("unknown-action", "Unknown action"),
    ("invalid-params", "Params do not fit the action's schema"),
    (
        "not-an-integer",
        "A param policy arithmetic reads is not an integer",
    ),
    ("invalid-confidence", "Invalid confidence"),
    (
        "unrepresentable-param",
        "A param cannot reach the rules as declared",
    ),
    ("unknown-receipt", "Unknown receipt"),
    ("unknown-entity", "Unknown entity"),
    ("invalid-query", "Invalid query"),
    ("not-ready", "Not ready"),
    ("shutting-down", "Gateway shutting down"),
    ("too-many-waits", "Too many waits from this address"),
    ("waits-full", "No room to wait"),
    ("reads-full", "No room to read"),
    ("too-many-connections", "Too many connections"),
    ("unauthorized", "Bearer token required"),
    ("invalid-delegation", "Invalid delegation token"),
    ("expired-delegation", "Delegation expired"),
    ("wider-than-parent", "Delegation wider than its parent"),
    ("delegation-exists", "Delegation id taken"),
    ("agent-key-bound", "Agent bound to another key"),
    ("invalid-issuer", "Invalid issuer key"),
    ("unknown-issuer", "Unknown issuer key"),
    ("revoked-issuer", "Issuer key revoked"),
    ("invalid-resource", "Invalid resource"),
    ("invalid-reviewer", "Invalid reviewer"),
    ("reviewer-is-agent", "An agent cannot be a reviewer"),
    ("unknown-reviewer", "Unknown reviewer"),
    ("revoked-reviewer", "Reviewer revoked"),
    ("reviewer-exists", "Reviewer id taken"),
    (
        "reviewer-key-registered",
        "Key registered to another reviewer",
    ),
    ("invalid-source", "Invalid event source"),
    ("unknown-source", "Unknown event source"),
    ("revoked-source", "Event source revoked"),
    ("source-exists", "Event source id taken"),
    ("invalid-event", "Invalid event"),
    ("event-bad-signature", "Event signature not valid"),
    ("event-not-allowed", "Event source may not send this event"),
    ("unmodelled-entity", "No policy in force models the entity"),
    (
        "unknown-entity-event",
        "The entity's model has no such event",
    ),
    (
        "illegal-transition",
        "Event not allowed in the entity's state",
    ),
    ("event-conflict", "Event id reused"),
    ("invalid-lease", "Invalid lease request"),
    ("lease-bad-signature", "Lease request signature not valid"),
    (
        "lease-not-allowed",
        "Delegation does not allow the lease request",
    ),
    ("unknown-lease", "Unknown lease"),
    ("not-lease-holder", "Lease held by another agent"),
    ("lease-exists", "Lease id taken"),
    ("lease-replay", "Lease request not newer than the last"),
    ("lease-pause-unchanged", "Already paused, or not paused"),
    ("invalid-bundle", "Invalid bundle"),
    ("invalid-request", "Invalid request"),
    ("unknown-policy", "Unknown policy version"),
    ("ambiguous-policy-version", "Ambiguous policy version"),
    ("missing-upstream", "No upstream for an http target"),
    ("nothing-to-roll-back", "Nothing to roll back"),
    ("policy-not-active", "Policy not active"),
    ("policy-overlap", "Policies overlap"),
    ("policy-in-use", "Policy in use"),
    ("entity-managed", "Entity managed by its model"),
    (
        "approval-before-escalation",
        "Approval dated before the escalation",
    ),
    ("invalid-approval-decision", "Invalid approval decision"),
    ("unknown-approval", "Unknown approval"),
    (
        "approval-id-mismatch",
        "The decision names another approval",
    ),
    ("approval-ended", "Approval already decided"),
    ("approval-expired", "Approval expired"),
    ("approval-executing", "Approval being executed"),
    (
        "approval-intent-mismatch",
        "The decision names another intent",
    ),
    (
        "approval-policy-mismatch",
        "The decision names another policy version",
    ),
    (
        "reviewer-is-issuer",
        "An issuer of the delegation cannot approve",
    ),
    ("reviewer-lacks-role", "Reviewer lacks the role"),
    (
        "reviewer-lacks-action",
        "Reviewer may not approve the action",
    ),
    (
        "approval-bad-signature",
        "Approval decision signature not valid",
    ),
    ("reviewer-already-decided", "Reviewer already decided"),
    ("approval-decision-reused", "Approval decision already used"),
    ("approval-conflict", "Approval changed concurrently"),
    ("unknown-intent", "Unknown intent"),
    ("invalid-webhook-url", "Invalid webhook URL"),
    (
        "webhook-private-address",
        "Webhook URL resolves to a private address",
    ),
    ("unknown-event-type", "Unknown event type"),
    ("invalid-webhook-secret", "Invalid webhook secret"),
    ("invalid-webhook-request", "Invalid webhook request"),
    ("unknown-webhook", "Unknown webhook endpoint"),
    ("unknown-event", "Unknown event"),
    ("ledger-unavailable", "Ledger unavailable"),
    ("internal", "Internal error"),
];

/// Why a request is answered with a problem document.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No route matches, or the registry API is not enabled.
    #[error("{0}")]
    NotFound(String),
    /// A body that is not `application/json`.
    #[error("the body must be application/json, not {0:?}")]
    UnsupportedMediaType(String),
    /// A body over the route's limit.
    #[error("a request body here may be at most {0} bytes")]
    PayloadTooLarge(usize),
    /// A body that did not arrive within the body timeout (milliseconds).
    #[error("the request body did not arrive within {0} ms")]
    RequestTimeout(u128),
    /// A body that is not strict I-JSON.
    #[error(transparent)]
    MalformedJson(tollgate_protocol::Error),
    /// An intent envelope of the wrong shape.
    #[error("{0}")]
    InvalidIntent(tollgate_protocol::Error),
    /// The engine refused the intent.
    #[error(transparent)]
    Intent(#[from] IntentError),
    /// The event envelope is malformed.
    #[error("{0}")]
    InvalidEvent(tollgate_protocol::Error),
    /// The engine refused the event (boxed: its refusals carry their
    /// values).
    #[error(transparent)]
    Event(Box<EventError>),
    /// The lease request envelope is malformed.
    #[error("{0}")]
    InvalidLease(tollgate_protocol::Error),
    /// The engine refused a lease request or change.
    #[error(transparent)]
    Lease(Box<LeaseError>),
    /// The engine refused a registry change.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// An approval decision envelope of the wrong shape.
    #[error("{0}")]
    InvalidApproval(tollgate_protocol::Error),
    /// The engine refused an approval decision, or found no approval or
    /// intent.
    #[error(transparent)]
    Approval(#[from] ApprovalError),
    /// The engine refused a webhook request.
    #[error(transparent)]
    Webhook(#[from] WebhookError),
    /// The console refused an enrollment, a sign-in or a request.
    #[error(transparent)]
    Console(super::console::ConsoleError),
    /// No receipt with this id.
    #[error("no receipt {0:?} in the ledger")]
    UnknownReceipt(String),
    /// No entity and no registered attributes for this resource.
    #[error("no resource {0} is known: no transition recorded and no attributes registered")]
    UnknownEntity(String),
    /// A query parameter that is unknown or out of range.
    #[error("{0}")]
    InvalidQuery(String),
    /// The ledger cannot commit now.
    #[error("{0}")]
    NotReady(String),
    /// The route exists, the method does not (its `Allow` header lists
    /// those that do).
    #[error("this resource does not take that method; the Allow header lists those it takes")]
    MethodNotAllowed,
    /// The gateway is stopping: requests already in progress finish, new
    /// ones are refused before anything is read or decided.
    #[error(
        "the gateway is shutting down: nothing was read or decided; send the request again (to another instance, or once this one is back)"
    )]
    ShuttingDown,
    /// The client's address already holds its share of long-polls.
    #[error(
        "this address already waits on {0} intents, the most one address may; ask without wait, or once one of those has answered"
    )]
    TooManyWaits(usize),
    /// The gateway already holds its total of long-polls.
    #[error(
        "the gateway already holds {0} waiting requests, the most it keeps; ask without wait, or again after Retry-After"
    )]
    WaitsFull(usize),
    /// The gateway already answers its most bulk reads at once.
    #[error(
        "the gateway already answers {0} ledger pages or exports at once, the most it does; read again after Retry-After"
    )]
    ReadsFull(usize),
    /// The client's address already holds its share of bulk reads.
    #[error(
        "this address already reads {0} ledger pages or exports at once, the most one address may; read again after Retry-After"
    )]
    AddressReadsFull(usize),
    /// The admin token is missing or wrong.
    #[error("the registry API takes the bearer token in DATA_DIR/admin.token")]
    Unauthorized,
    /// A read token is configured, and the request does not carry it.
    #[error(
        "the ledger and receipt API takes the read token given to the gateway (--read-token) as a bearer token"
    )]
    ReadUnauthorized,
    /// An admin request body of the wrong shape.
    #[error("{detail}")]
    InvalidRequest {
        /// What is wrong.
        detail: String,
        /// Where.
        pointer: &'static str,
    },
    /// The gateway could not complete the request; the cause is logged,
    /// never sent.
    #[error("{0}")]
    Internal(String),
}

impl From<LeaseError> for ApiError {
    fn from(e: LeaseError) -> Self {
        Self::Lease(Box::new(e))
    }
}

impl From<EventError> for ApiError {
    fn from(e: EventError) -> Self {
        Self::Event(Box::new(e))
    }
}

/// Set on a 500 response so that the log middleware can log the cause
/// with the request id.
#[derive(Clone, Debug)]
pub struct InternalCause(pub String);

impl ApiError {
    /// An internal error from any displayable cause.
    pub fn internal(e: impl std::fmt::Display) -> Self {
        Self::Internal(e.to_string())
    }

    /// Whether this is an internal error caused by the ledger's database
    /// being out of reach or out of room ([`tollgate_ledger::Error::Unavailable`],
    /// carried as text through the engine's errors): answered `503
    /// ledger-unavailable` with `Retry-After`, not 500.
    fn ledger_unavailable(&self) -> bool {
        self.to_string().contains(tollgate_ledger::UNAVAILABLE)
    }

    /// Status, problem type, detail and JSON Pointer.
    pub fn parts(&self) -> (StatusCode, &'static str, String, Option<String>) {
        use StatusCode as S;
        let detail = self.to_string();
        let (status, slug, pointer): (S, &str, Option<String>) = match self {
            Self::NotFound(_) => (S::NOT_FOUND, "not-found", None),
            Self::UnsupportedMediaType(_) => {
                (S::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type", None)
            }
            Self::PayloadTooLarge(_) => (S::PAYLOAD_TOO_LARGE, "payload-too-large", None),
            Self::RequestTimeout(_) => (S::REQUEST_TIMEOUT, "request-timeout", None),
            Self::MalformedJson(e) => (
                S::BAD_REQUEST,
                "malformed-json",
                e.pointer().map(str::to_owned),
            ),
            Self::InvalidIntent(e) => (
                S::UNPROCESSABLE_ENTITY,
                "invalid-intent",
                e.pointer().map(str::to_owned),
            ),
            Self::InvalidEvent(e) => (
                S::UNPROCESSABLE_ENTITY,
                "invalid-event",
                e.pointer().map(str::to_owned),
            ),
            Self::Event(e) => match &**e {
                EventError::ClockSkew(_) => (
                    S::UNPROCESSABLE_ENTITY,
                    "clock-skew",
                    Some("/payload/issued_at".into()),
                ),
                EventError::Source(r) => {
                    use tollgate_policies::source::Refusal as R;
                    let (status, slug) = match r {
                        R::UnknownSource(_) => (S::FORBIDDEN, "unknown-source"),
                        R::RevokedSource(_) => (S::FORBIDDEN, "revoked-source"),
                        R::BadSignature(_) => (S::UNAUTHORIZED, "event-bad-signature"),
                        R::NotAllowed { .. } => (S::FORBIDDEN, "event-not-allowed"),
                    };
                    (status, slug, Some("/payload/source".into()))
                }
                EventError::Unmodelled { .. } => (
                    S::UNPROCESSABLE_ENTITY,
                    "unmodelled-entity",
                    Some("/payload/resource".into()),
                ),
                EventError::UnknownEvent { .. } => (
                    S::UNPROCESSABLE_ENTITY,
                    "unknown-entity-event",
                    Some("/payload/event".into()),
                ),
                EventError::Illegal { .. } => (
                    S::CONFLICT,
                    "illegal-transition",
                    Some("/payload/event".into()),
                ),
                EventError::Conflict { .. } => (
                    S::CONFLICT,
                    "event-conflict",
                    Some("/payload/event_id".into()),
                ),
                EventError::Contended(_) => (S::SERVICE_UNAVAILABLE, "contended", None),
                EventError::Internal(_) => (S::INTERNAL_SERVER_ERROR, "internal", None),
            },
            Self::InvalidLease(e) => (
                S::UNPROCESSABLE_ENTITY,
                "invalid-lease",
                e.pointer().map(str::to_owned),
            ),
            Self::Lease(e) => match &**e {
                LeaseError::ClockSkew(_) => (
                    S::UNPROCESSABLE_ENTITY,
                    "clock-skew",
                    Some("/payload/issued_at".into()),
                ),
                LeaseError::Delegation(r) if r.id == "lease.signature" => {
                    (S::UNAUTHORIZED, "lease-bad-signature", None)
                }
                LeaseError::Delegation(_) => (
                    S::FORBIDDEN,
                    "lease-not-allowed",
                    Some("/payload/delegation".into()),
                ),
                LeaseError::Unknown(_) => (S::NOT_FOUND, "unknown-lease", None),
                LeaseError::NotHolder { .. } => (
                    S::FORBIDDEN,
                    "not-lease-holder",
                    Some("/payload/agent".into()),
                ),
                LeaseError::Taken(_) => {
                    (S::CONFLICT, "lease-exists", Some("/payload/lease".into()))
                }
                LeaseError::Replay { .. } => (
                    S::CONFLICT,
                    "lease-replay",
                    Some("/payload/issued_at".into()),
                ),
                LeaseError::Pause(_) => (S::CONFLICT, "lease-pause-unchanged", None),
                LeaseError::Contended(_) => (S::SERVICE_UNAVAILABLE, "contended", None),
                LeaseError::Internal(_) => (S::INTERNAL_SERVER_ERROR, "internal", None),
            },
            Self::Intent(e) => match e {
                IntentError::ClockSkew(_) => (
                    S::UNPROCESSABLE_ENTITY,
                    "clock-skew",
                    Some("/payload/issued_at".into()),
                ),
                IntentError::Unauthenticated { kind, .. } => {
                    let (status, slug) = match kind {
                        AuthFailure::BadSignature => (S::UNAUTHORIZED, "bad-signature"),
                        AuthFailure::UnknownDelegation => (S::FORBIDDEN, "unknown-delegation"),
                        AuthFailure::RevokedDelegation => (S::FORBIDDEN, "revoked-delegation"),
                        AuthFailure::NotValidNow => (S::FORBIDDEN, "delegation-not-valid-now"),
                        AuthFailure::WrongAgent => (S::FORBIDDEN, "wrong-agent"),
                        AuthFailure::UntrustedDelegation => (S::FORBIDDEN, "untrusted-delegation"),
                    };
                    (status, slug, Some("/payload/delegation".into()))
                }
                IntentError::InvalidIdempotencyKey => {
                    (S::BAD_REQUEST, "invalid-idempotency-key", None)
                }
                IntentError::IdempotencyKeyMismatch { .. } => {
                    (S::UNPROCESSABLE_ENTITY, "idempotency-key-mismatch", None)
                }
                IntentError::InFlight(_) => (S::CONFLICT, "in-flight", None),
                IntentError::IdempotencyConflict(_) => (S::CONFLICT, "idempotency-conflict", None),
                IntentError::Shape(s) => {
                    let slug = match s {
                        ShapeError::UnknownAction { .. } | ShapeError::Ungoverned { .. } => {
                            "unknown-action"
                        }
                        ShapeError::Params { .. } | ShapeError::NegativeAmount { .. } => {
                            "invalid-params"
                        }
                        ShapeError::NotAnInteger { .. } => "not-an-integer",
                        ShapeError::Confidence(_) => "invalid-confidence",
                        ShapeError::Unrepresentable(_) => "unrepresentable-param",
                    };
                    (S::UNPROCESSABLE_ENTITY, slug, Some(s.pointer().to_owned()))
                }
                IntentError::Contended(_) => (S::SERVICE_UNAVAILABLE, "contended", None),
                IntentError::ResourceUnavailable(_) => (
                    S::SERVICE_UNAVAILABLE,
                    "resource-unavailable",
                    Some("/payload/resource".into()),
                ),
                IntentError::Internal(_) => (S::INTERNAL_SERVER_ERROR, "internal", None),
            },
            Self::Registry(e) => match e {
                RegistryError::InvalidDelegation(_) => {
                    (S::UNPROCESSABLE_ENTITY, "invalid-delegation", None)
                }
                RegistryError::UntrustedDelegation(_) => (
                    S::UNPROCESSABLE_ENTITY,
                    "untrusted-delegation",
                    Some("/signature".into()),
                ),
                RegistryError::ExpiredDelegation { .. } => {
                    (S::UNPROCESSABLE_ENTITY, "expired-delegation", None)
                }
                RegistryError::WiderThanParent(_) => {
                    (S::UNPROCESSABLE_ENTITY, "wider-than-parent", None)
                }
                RegistryError::AgentKeyBound { .. } => (
                    S::CONFLICT,
                    "agent-key-bound",
                    Some("/payload/agent_key".into()),
                ),
                RegistryError::UnknownDelegation(_) => (S::NOT_FOUND, "unknown-delegation", None),
                RegistryError::RevokedDelegation(_) => (S::CONFLICT, "revoked-delegation", None),
                RegistryError::DelegationExists(_) => (S::CONFLICT, "delegation-exists", None),
                RegistryError::InvalidIssuer(_) => {
                    (S::UNPROCESSABLE_ENTITY, "invalid-issuer", None)
                }
                RegistryError::UnknownIssuer(_) => (S::NOT_FOUND, "unknown-issuer", None),
                RegistryError::RevokedIssuer(_) => (S::CONFLICT, "revoked-issuer", None),
                RegistryError::InvalidResource(_) => {
                    (S::UNPROCESSABLE_ENTITY, "invalid-resource", None)
                }
                RegistryError::InvalidReviewer(_) => {
                    (S::UNPROCESSABLE_ENTITY, "invalid-reviewer", None)
                }
                RegistryError::ReviewerIsAgent(_) => {
                    (S::UNPROCESSABLE_ENTITY, "reviewer-is-agent", None)
                }
                RegistryError::UnknownReviewer(_) => (S::NOT_FOUND, "unknown-reviewer", None),
                RegistryError::RevokedReviewer(_) => (S::CONFLICT, "revoked-reviewer", None),
                RegistryError::ReviewerExists(_) => (S::CONFLICT, "reviewer-exists", None),
                RegistryError::ReviewerKeyRegistered { .. } => {
                    (S::CONFLICT, "reviewer-key-registered", Some("/key".into()))
                }
                RegistryError::PasskeyRegistered { .. } => (
                    S::CONFLICT,
                    "reviewer-key-registered",
                    Some("/passkey/credential_id".into()),
                ),
                RegistryError::InvalidSource(_) => {
                    (S::UNPROCESSABLE_ENTITY, "invalid-source", None)
                }
                RegistryError::UnknownSource(_) => (S::NOT_FOUND, "unknown-source", None),
                RegistryError::RevokedSource(_) => (S::CONFLICT, "revoked-source", None),
                RegistryError::SourceExists(_) => (S::CONFLICT, "source-exists", None),
                RegistryError::ApprovalExecuting(_) => (S::CONFLICT, "approval-executing", None),
                RegistryError::InvalidBundle(_) => (
                    S::UNPROCESSABLE_ENTITY,
                    "invalid-bundle",
                    Some("/files".into()),
                ),
                RegistryError::UnknownPolicy(_) => {
                    (S::NOT_FOUND, "unknown-policy", Some("/version".into()))
                }
                RegistryError::AmbiguousPolicy(..) => (
                    S::CONFLICT,
                    "ambiguous-policy-version",
                    Some("/version".into()),
                ),
                RegistryError::MissingUpstream(_) => {
                    (S::UNPROCESSABLE_ENTITY, "missing-upstream", None)
                }
                RegistryError::NothingToRollBack(_) => (S::CONFLICT, "nothing-to-roll-back", None),
                RegistryError::NotActive(_) => (S::CONFLICT, "policy-not-active", None),
                RegistryError::EntityManaged { .. } => {
                    (S::CONFLICT, "entity-managed", Some("/resource".into()))
                }
                RegistryError::Overlap(_) => (S::CONFLICT, "policy-overlap", None),
                RegistryError::Stranded { .. } => (S::CONFLICT, "policy-in-use", None),
                RegistryError::Contended(_) => (S::SERVICE_UNAVAILABLE, "contended", None),
                RegistryError::Internal(_) => (S::INTERNAL_SERVER_ERROR, "internal", None),
            },
            Self::InvalidApproval(e) => (
                S::UNPROCESSABLE_ENTITY,
                "invalid-approval-decision",
                e.pointer().map(str::to_owned),
            ),
            Self::Approval(e) => {
                let p = |s: &str| Some(s.to_owned());
                match e {
                    ApprovalError::Unknown(_) => (S::NOT_FOUND, "unknown-approval", None),
                    ApprovalError::IdMismatch { .. } => (
                        S::UNPROCESSABLE_ENTITY,
                        "approval-id-mismatch",
                        p("/payload/approval"),
                    ),
                    ApprovalError::Ended { .. } => (S::CONFLICT, "approval-ended", None),
                    ApprovalError::Expired { .. } => (S::CONFLICT, "approval-expired", None),
                    ApprovalError::BeforeEscalation { .. } => (
                        S::UNPROCESSABLE_ENTITY,
                        "approval-before-escalation",
                        Some("/payload/issued_at".into()),
                    ),
                    ApprovalError::Executing(_) => (S::CONFLICT, "approval-executing", None),
                    ApprovalError::IntentMismatch { .. } => (
                        S::UNPROCESSABLE_ENTITY,
                        "approval-intent-mismatch",
                        p("/payload/intent_hash"),
                    ),
                    ApprovalError::PolicyMismatch { .. } => (
                        S::UNPROCESSABLE_ENTITY,
                        "approval-policy-mismatch",
                        p("/payload/policy_version"),
                    ),
                    ApprovalError::ClockSkew(_) => (
                        S::UNPROCESSABLE_ENTITY,
                        "clock-skew",
                        p("/payload/issued_at"),
                    ),
                    ApprovalError::UnknownReviewer(_) => {
                        (S::FORBIDDEN, "unknown-reviewer", p("/payload/reviewer"))
                    }
                    ApprovalError::RevokedReviewer(_) => {
                        (S::FORBIDDEN, "revoked-reviewer", p("/payload/reviewer"))
                    }
                    ApprovalError::ReviewerIsAgent(_) => {
                        (S::FORBIDDEN, "reviewer-is-agent", p("/payload/reviewer"))
                    }
                    ApprovalError::ReviewerIsIssuer(_) => {
                        (S::FORBIDDEN, "reviewer-is-issuer", p("/payload/reviewer"))
                    }
                    ApprovalError::LacksRole { .. } => {
                        (S::FORBIDDEN, "reviewer-lacks-role", p("/payload/reviewer"))
                    }
                    ApprovalError::LacksAction { .. } => (
                        S::FORBIDDEN,
                        "reviewer-lacks-action",
                        p("/payload/reviewer"),
                    ),
                    ApprovalError::BadSignature(_) => {
                        (S::UNAUTHORIZED, "approval-bad-signature", p("/signature"))
                    }
                    ApprovalError::AlreadyDecided { .. } => (
                        S::CONFLICT,
                        "reviewer-already-decided",
                        p("/payload/reviewer"),
                    ),
                    ApprovalError::KeyAlreadyDecided { .. } => {
                        (S::CONFLICT, "reviewer-already-decided", p("/signature/kid"))
                    }
                    ApprovalError::Reused { .. } => (S::CONFLICT, "approval-decision-reused", None),
                    ApprovalError::Conflict(_) => (S::CONFLICT, "approval-conflict", None),
                    ApprovalError::UnknownIntent { .. } => (S::NOT_FOUND, "unknown-intent", None),
                    ApprovalError::Contended(_) => (S::SERVICE_UNAVAILABLE, "contended", None),
                    ApprovalError::ResourceUnavailable(_) => {
                        (S::SERVICE_UNAVAILABLE, "resource-unavailable", None)
                    }
                    ApprovalError::Internal(_) => (S::INTERNAL_SERVER_ERROR, "internal", None),
                }
            }
            Self::Webhook(e) => match e {
                WebhookError::InvalidUrl(_) => (
                    S::UNPROCESSABLE_ENTITY,
                    "invalid-webhook-url",
                    Some("/url".into()),
                ),
                WebhookError::PrivateAddress(_) => (
                    S::UNPROCESSABLE_ENTITY,
                    "webhook-private-address",
                    Some("/url".into()),
                ),
                WebhookError::UnknownEventType(_) => (
                    S::UNPROCESSABLE_ENTITY,
                    "unknown-event-type",
                    Some("/events".into()),
                ),
                WebhookError::InvalidSecret(_) => (
                    S::UNPROCESSABLE_ENTITY,
                    "invalid-webhook-secret",
                    Some("/secret".into()),
                ),
                WebhookError::InvalidRequest(_) => {
                    (S::UNPROCESSABLE_ENTITY, "invalid-webhook-request", None)
                }
                WebhookError::UnknownEndpoint(_) => (S::NOT_FOUND, "unknown-webhook", None),
                WebhookError::UnknownEvent(_) => (S::NOT_FOUND, "unknown-event", None),
                WebhookError::Internal(_) => (S::INTERNAL_SERVER_ERROR, "internal", None),
            },
            Self::Console(e) => {
                use super::console::ConsoleError as C;
                match e {
                    C::InvalidInvite => (S::FORBIDDEN, "invalid-invite", None),
                    C::InviteExpired(_) => (S::GONE, "invite-expired", None),
                    C::InviteUsed(_) => (S::CONFLICT, "invite-used", None),
                    C::PasskeyRefused(_) => (S::UNPROCESSABLE_ENTITY, "passkey-refused", None),
                    C::UnknownPasskey => (S::UNAUTHORIZED, "unknown-passkey", None),
                    C::Forbidden(_) => (S::FORBIDDEN, "csrf-refused", None),
                    C::ReviewerRequired => (S::FORBIDDEN, "reviewer-required", None),
                    C::OtherReviewer { .. } => (
                        S::FORBIDDEN,
                        "not-this-reviewer",
                        Some("/payload/reviewer".into()),
                    ),
                }
            }
            Self::UnknownReceipt(_) => (S::NOT_FOUND, "unknown-receipt", None),
            Self::UnknownEntity(_) => (S::NOT_FOUND, "unknown-entity", None),
            Self::InvalidQuery(_) => (S::BAD_REQUEST, "invalid-query", None),
            Self::NotReady(_) => (S::SERVICE_UNAVAILABLE, "not-ready", None),
            Self::ShuttingDown => (S::SERVICE_UNAVAILABLE, "shutting-down", None),
            Self::TooManyWaits(_) => (S::TOO_MANY_REQUESTS, "too-many-waits", None),
            Self::WaitsFull(_) => (S::SERVICE_UNAVAILABLE, "waits-full", None),
            Self::ReadsFull(_) | Self::AddressReadsFull(_) => {
                (S::SERVICE_UNAVAILABLE, "reads-full", None)
            }
            Self::MethodNotAllowed => (S::METHOD_NOT_ALLOWED, "method-not-allowed", None),
            Self::Unauthorized | Self::ReadUnauthorized => (S::UNAUTHORIZED, "unauthorized", None),
            Self::InvalidRequest { pointer, .. } => (
                S::UNPROCESSABLE_ENTITY,
                "invalid-request",
                Some((*pointer).to_owned()),
            ),
            Self::Internal(_) => (S::INTERNAL_SERVER_ERROR, "internal", None),
        };
        if status == S::INTERNAL_SERVER_ERROR && self.ledger_unavailable() {
            return (
                S::SERVICE_UNAVAILABLE,
                "ledger-unavailable",
                "the ledger's database cannot be reached or has no room right now; send the same request again later (if it was recorded before the database went, the answer is its entry)".to_owned(),
                None,
            );
        }
        let detail = if status == S::INTERNAL_SERVER_ERROR {
            "the gateway could not complete the request; its log has the cause under this response's x-request-id".to_owned()
        } else {
            detail
        };
        (status, slug, detail, pointer)
    }
}

/// A bundle's problems as the `errors` member of an `invalid-bundle`
/// problem document: `[{"file", "line", "message"}]`, `file` left out
/// for a problem of the whole bundle and `line` where it is not known.
fn bundle_problems(problems: &[tollgate_policies::Problem]) -> Value {
    Value::Array(
        problems
            .iter()
            .map(|p| {
                let mut e = Object::new();
                if !p.file.is_empty() {
                    e.insert("file", p.file.clone().into());
                }
                if let Some(line) = p.line.and_then(|l| i64::try_from(l).ok()) {
                    e.insert("line", Value::integer(line).unwrap_or(Value::Null));
                }
                e.insert("message", p.message.clone().into());
                Value::Object(e)
            })
            .collect(),
    )
}

fn title(slug: &str) -> &'static str {
    PROBLEM_TYPES
        .iter()
        .find(|(s, _)| *s == slug)
        .map_or("Error", |(_, t)| t)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, slug, detail, pointer) = self.parts();
        let mut o = Object::new();
        o.insert("type", format!("{PROBLEM_PREFIX}{slug}").into());
        o.insert("title", title(slug).into());
        o.insert(
            "status",
            Value::integer(i64::from(status.as_u16())).unwrap_or(Value::Null),
        );
        o.insert("detail", detail.into());
        if let Some(p) = pointer {
            o.insert("pointer", p.into());
        }
        if let Self::Registry(RegistryError::InvalidBundle(problems)) = &self {
            o.insert("errors", bundle_problems(problems));
        }
        let mut body = canonical(&Value::Object(o));
        body.push(b'\n');
        let mut r = (
            status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body,
        )
            .into_response();
        if matches!(
            self,
            Self::Intent(
                IntentError::InFlight(_)
                    | IntentError::Contended(_)
                    | IntentError::ResourceUnavailable(_)
            ) | Self::Registry(RegistryError::Contended(_) | RegistryError::ApprovalExecuting(_))
                | Self::Approval(
                    ApprovalError::Executing(_)
                        | ApprovalError::Contended(_)
                        | ApprovalError::ResourceUnavailable(_)
                )
        ) {
            r.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(IN_FLIGHT_RETRY_AFTER),
            );
        }
        let contended = matches!(&self, Self::Event(e) if matches!(**e, EventError::Contended(_)))
            || matches!(&self, Self::Lease(e) if matches!(**e, LeaseError::Contended(_)));
        if contended {
            r.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(IN_FLIGHT_RETRY_AFTER),
            );
        }
        if status == StatusCode::SERVICE_UNAVAILABLE && self.ledger_unavailable() {
            r.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(crate::limits::LEDGER_RETRY_AFTER),
            );
        }
        if matches!(self, Self::TooManyWaits(_) | Self::WaitsFull(_)) {
            r.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(crate::limits::WAITS_RETRY_AFTER),
            );
        }
        if matches!(self, Self::ReadsFull(_) | Self::AddressReadsFull(_)) {
            r.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(crate::limits::BULK_RETRY_AFTER),
            );
        }
        if matches!(self, Self::ShuttingDown) {
            r.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(crate::limits::SHUTDOWN_RETRY_AFTER),
            );
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if status == StatusCode::INTERNAL_SERVER_ERROR || self.ledger_unavailable() {
            r.extensions_mut().insert(InternalCause(self.to_string()));
        }
        r
    }
}
