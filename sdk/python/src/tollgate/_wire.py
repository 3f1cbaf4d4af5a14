"""Bytes as the protocol fixes them: base64url, canonical JSON (RFC 8785),
domain-tagged signed messages, timestamps and hash values (spec §1–§3)."""

from __future__ import annotations

import base64
import datetime
import hashlib
from typing import Any

import rfc8785

INTENT_TYPE = "tollgate.intent/v1"
APPROVAL_TYPE = "tollgate.approval/v1"
INTENT_DOMAIN = "tollgate.intent.v1"
APPROVAL_DOMAIN = "tollgate.approval.v1"
INTENT_HASH_TAG = "tollgate.intent-hash.v1"


def b64u(data: bytes) -> str:
    """Unpadded base64url (spec §1.4)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_decode(text: str) -> bytes:
    """Strict unpadded base64url: no padding, no whitespace."""
    if "=" in text or any(c.isspace() for c in text):
        raise ValueError("not unpadded base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def canonical(value: Any) -> bytes:
    """The RFC 8785 canonical bytes of a JSON value (spec §1.3)."""
    return rfc8785.dumps(value)


def signed_message(domain: str, payload: Any) -> bytes:
    """The domain tag, a line feed, the payload's canonical bytes (§2.3)."""
    return domain.encode("ascii") + b"\n" + canonical(payload)


def intent_hash(envelope: Any) -> str:
    """`sha256:` and the hex SHA-256 of the intent envelope's canonical
    bytes after the intent-hash tag (spec §3.3)."""
    digest = hashlib.sha256(INTENT_HASH_TAG.encode("ascii") + b"\n" + canonical(envelope))
    return "sha256:" + digest.hexdigest()


def now() -> str:
    """The current time as an RFC 3339 UTC timestamp, microseconds."""
    t = datetime.datetime.now(datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
