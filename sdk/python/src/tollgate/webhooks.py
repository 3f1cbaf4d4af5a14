"""Verifying the gateway's webhook deliveries, as Standard Webhooks
defines them: `webhook-id`, `webhook-timestamp` and `webhook-signature`
headers; `v1` signatures are HMAC-SHA256 with the endpoint's `whsec_`
secret, `v1a` signatures Ed25519 with its `whpk_` public key, both over
`{id}.{timestamp}.{body}`. Several signatures may be sent (a key
rotation); one that verifies is enough."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import time
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .errors import TollgateError

# Seconds since the epoch, ASCII digits (not any Unicode digit).
_SECONDS = re.compile(r"[0-9]{1,12}")

#: How far a delivery's timestamp may be from this machine's clock.
DEFAULT_TOLERANCE = 300


class WebhookVerificationError(TollgateError):
    """A delivery that does not verify: its reason says which check."""


def _header(headers: Mapping[str, str], name: str) -> str:
    for k, v in headers.items():
        if k.lower() == name:
            return v
    raise WebhookVerificationError(f"no {name} header")


def verify(
    body: bytes,
    headers: Mapping[str, str],
    *,
    secret: str | None = None,
    public_key: str | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> dict[str, Any]:
    """Checks a delivery (its raw body and headers) with the endpoint's
    `secret` (`whsec_…`, scheme `v1`) or `public_key` (`whpk_…`, scheme
    `v1a`); returns the event, parsed. Raises `WebhookVerificationError`
    for a missing header, a timestamp more than `tolerance` seconds from
    now, or no signature of the scheme that verifies."""
    if (secret is None) == (public_key is None):
        raise ValueError("give either secret (v1) or public_key (v1a)")
    if not (tolerance >= 0):  # NaN included
        raise ValueError(f"tolerance {tolerance!r}: seconds, 0 or more")
    if secret is not None:
        scheme = "v1"
        if not secret.startswith("whsec_"):
            raise ValueError("a v1 secret is whsec_ and base64")
        try:
            key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        except (binascii.Error, ValueError) as e:
            raise ValueError("a v1 secret is whsec_ and base64") from e
        if len(key) < 24:
            raise ValueError(f"a v1 secret has 24 to 64 bytes; this one has {len(key)}")

        def good(sig: bytes) -> bool:
            expected = hmac.new(key, content, hashlib.sha256).digest()
            return hmac.compare_digest(sig, expected)

    else:
        scheme = "v1a"
        assert public_key is not None
        if not public_key.startswith("whpk_"):
            raise ValueError("a v1a public key is whpk_ and base64")
        try:
            verifier = Ed25519PublicKey.from_public_bytes(
                base64.b64decode(public_key.removeprefix("whpk_"), validate=True)
            )
        except (binascii.Error, ValueError) as e:
            raise ValueError("a v1a public key is whpk_ and the base64 of 32 bytes") from e

        def good(sig: bytes) -> bool:
            try:
                verifier.verify(sig, content)
                return True
            except InvalidSignature:
                return False

    msg_id = _header(headers, "webhook-id")
    timestamp = _header(headers, "webhook-timestamp")
    signatures = _header(headers, "webhook-signature")
    if not msg_id or "." in msg_id:
        raise WebhookVerificationError(f"webhook-id {msg_id!r} is not an id")
    if not _SECONDS.fullmatch(timestamp):
        raise WebhookVerificationError(f"webhook-timestamp {timestamp!r} is not seconds")
    clock = time.time() if now is None else now
    if abs(clock - int(timestamp)) > tolerance:
        raise WebhookVerificationError(
            f"webhook-timestamp {timestamp} is more than {tolerance} s from now"
        )
    content = f"{msg_id}.{timestamp}.".encode() + body
    for part in signatures.split(" "):
        version, _, text = part.partition(",")
        if version != scheme:
            continue
        try:
            sig = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            continue
        if good(sig):
            try:
                event = json.loads(body)
            except (ValueError, RecursionError) as e:
                raise WebhookVerificationError(f"the signed body is not JSON: {e}") from e
            if not isinstance(event, dict):
                raise WebhookVerificationError("the signed body is not a JSON object")
            return event
    raise WebhookVerificationError(f"no {scheme} signature verifies")
