//! The Tollgate wire contract, in code: the Tollgate protocol, version 1.6
//! (`docs/spec.md`; section numbers below are its).
//!
//! Scope:
//! - strict I-JSON parsing (§1.1): duplicate names at any depth, invalid
//!   UTF-8, lone surrogates, nesting limits, numbers outside the double
//!   range and integer literals that would not survive a round trip are
//!   refused with the problem and its JSON Pointer ([`parse`]);
//! - RFC 8785 canonical bytes behind one function ([`canonical`]);
//! - hash values (§1.6), base64url (§1.4), timestamps (§1.5);
//! - JWKs, RFC 7638 thumbprints, JWK Sets, and EdDSA / ES256 signature
//!   checks over domain-tagged messages (§2);
//! - the wire types: intent envelopes and approval decisions with the
//!   intent hash that binds them (§3), receipts (§4), ledger entries
//!   (§5), and the line-by-line ledger verification of §5.4 (the chain,
//!   and with [`ChainVerifier::with_receipt_rules`] the receipt rules an
//!   export alone can show broken);
//! - receipts as typed documents ([`Receipt`]: the kinds, the outcome each
//!   may state, `refs` and decision `inputs`, §4.1–§4.2) and the
//!   [`Verdict`] they carry;
//! - checkpoints (§6): the RFC 6962 tree, inclusion and consistency
//!   proof checks, C2SP signed notes, checkpoints and witness
//!   cosignatures ([`checkpoint`]);
//! - the [`Clock`] trait that the edges read time through (this crate
//!   never reads a clock itself).
//!
//! What it deliberately does not do: no I/O, no async, no clock, no
//! randomness, no signing (that needs private keys: `tollgate-signer`).
//! An auditor can read this crate alone and know what a valid ledger is.
//!
//! Invariants: a [`Value`] never holds NaN, infinities or duplicate member
//! names, and its objects are always in RFC 8785 member order, so
//! [`canonical`] is a plain walk; every hash and signature in the protocol
//! is computed over the output of [`canonical`] (or
//! [`json::write_object_except`], its member-skipping form).

#![forbid(unsafe_code)]

mod approval;
pub mod build;
pub mod checkpoint;
mod encoding;
mod error;
mod event;
pub mod json;
mod keys;
mod lease;
mod members;
mod receipt;
mod registry;
mod rules;
mod verify;
pub mod webauthn;
mod wire;

pub use approval::{
    APPROVAL_TYPE, ApprovalDecision, ApprovalEnvelope, ApprovalProof, ApprovalVerdict,
    INTENT_HASH_TAG, MAX_REASON_CHARS, approval_payload, intent_hash, is_receipt_id,
};
pub use encoding::{HashAlg, HashValue, Timestamp, b64, b64_decode, hex};
pub use error::{Error, JsonProblem};
pub use event::{EVENT_TYPE, Event, EventEnvelope, event_payload};
pub use json::{
    MAX_DEPTH, MemberSpan, NestedSpan, Object, Value, canonical, member_span, members, parse,
    parse_canonical, parse_with_depth, validate_canonical, validate_canonical_spans,
    without_member,
};
pub use keys::{
    Alg, Domain, Jwk, KeySet, PreparedSignature, PublicKey, Signature, signed_message,
    signed_message_canonical, verify_many,
};
pub use lease::{
    LEASE_TYPE, LeaseEnvelope, LeaseOp, LeaseRequest, MAX_LEASE_TRIPLES, MAX_LEASE_TTL_SECONDS,
    is_resource_pattern, lease_payload,
};
pub use receipt::{
    Clock, Inputs, Outcome, OutcomeNotAllowed, Receipt, ReceiptKind, Status, Verdict,
};
pub use registry::{
    Change, PolicyDomains, RegistrySubject, WebhookEndpoint, WebhookEndpoints, policy_name,
    webhook_secret_hash,
};
pub use verify::{ChainVerifier, Failure, verify_entry, verify_signed_receipt};
pub use wire::{
    CHAIN_TAG, INTENT_TYPE, Intent, IntentEnvelope, LedgerEntry, MAX_INTENT_DEPTH, RECEIPT_ID_TAG,
    RECEIPT_TYPE, ReceiptInfo, SealedReceipt, check_receipt, check_receipt_canonical, entry_hash,
    is_action, is_identifier, is_resource, receipt_id, seal_receipt,
};
