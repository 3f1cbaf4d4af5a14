"""Verifying a ledger export offline (spec §1, §2, §4 and §5), written
from docs/spec.md alone: it shares no code with the gateway or its Rust
verifier. Canonical JSON is the `rfc8785` package's, signatures the
`cryptography` package's, hashes `hashlib`'s (and `blake3`'s, for a ledger
chained with BLAKE3, when that package is installed).

For every line: it is the canonical form of its entry; `seq` counts from 1
without a gap; `prev` is the previous entry's hash (the first's is the
algorithm's zero); `hash` is the algorithm over the chain tag, a line feed
and the entry without `hash`; `receipt_id` is `rcpt_` and the first 16
bytes of SHA-256 over the receipt-id tag, a line feed and the receipt
without `receipt_id`; the signature verifies over the receipt tag, a line
feed and the canonical receipt, by the key of the JWK Set whose `kid` it
names, within the key's `nbf`/`exp` window around the receipt's
`issued_at`; and the receipt rules of §5.4 checks 10 to 14 (appended_at
in order, outcome per verdict, issued_at per kind, one decision per agent
and intent id, approvals and executions following what they name).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import os
import re
from dataclasses import dataclass
from typing import Any, Union

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature


# spec §1.4: binary values are base64url without padding.
def b64u_decode(text: str) -> bytes:
    if not isinstance(text, str) or not _B64U.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError(f"{text!r} is not unpadded base64url")
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    # No non-zero trailing bits: the text is the one encoding of its bytes.
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != text:
        raise ValueError(f"{text!r} is not the canonical base64url of its bytes")
    return raw


_B64U = re.compile(r"[A-Za-z0-9_-]*")
# spec §1.5: RFC 3339 in UTC, seconds, up to nine fraction digits, Z.
_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?Z")


def timestamp(value: Any, what: str) -> str | None:
    """Why `value` is not a timestamp as spec §1.5 restricts them."""
    if not isinstance(value, str) or not _TIMESTAMP.fullmatch(value):
        return f"{what} {value!r} is not an RFC 3339 UTC timestamp (spec §1.5)"
    try:
        unix_seconds(value)
    except ValueError:
        return f"{what} {value!r} is not a date and time"
    return None


# spec §1.6: a hash value is "<alg>:<64 lowercase hex>", sha256 or blake3.
def digest(alg: str, data: bytes) -> str:
    if alg == "sha256":
        return "sha256:" + hashlib.sha256(data).hexdigest()
    if alg == "blake3":
        try:
            import blake3  # type: ignore[import-not-found,unused-ignore]
        except ImportError as e:
            raise ValueError("a ledger chained with blake3 needs the blake3 package") from e
        return "blake3:" + str(blake3.blake3(data).hexdigest())
    raise ValueError(f"unknown hash algorithm {alg}")


def unix_seconds(ts: str) -> int:
    # spec §1.5: RFC 3339, UTC, "Z", optional fraction; a leap second (:60)
    # is the same instant as the start of the next second. spec §2.1: whole
    # seconds are what a key's window is compared with.
    whole = ts.split(".")[0].rstrip("Z")
    leap = whole.endswith(":60")
    if leap:
        whole = whole[:-2] + "59"
    t = datetime.datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S")
    return int(t.replace(tzinfo=datetime.timezone.utc).timestamp()) + (1 if leap else 0)


# spec §2.1: a JWK Set of Ed25519 (OKP) and P-256 (EC) keys, each named by
# its kid, with an optional nbf/exp window.
_Key = tuple[str, Any, int | None, int | None]


def load_keys(jwks: dict[str, Any]) -> dict[str, _Key]:
    keys: dict[str, _Key] = {}
    for k in jwks["keys"]:
        if k["kty"] == "OKP" and k["crv"] == "Ed25519":
            public: Any = ed25519.Ed25519PublicKey.from_public_bytes(b64u_decode(k["x"]))
            alg = "EdDSA"
        elif k["kty"] == "EC" and k["crv"] == "P-256":
            x = int.from_bytes(b64u_decode(k["x"]), "big")
            y = int.from_bytes(b64u_decode(k["y"]), "big")
            public = ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
            alg = "ES256"
        else:
            raise ValueError(f"unsupported key {k.get('kid')}")
        keys[k["kid"]] = (alg, public, k.get("nbf"), k.get("exp"))
    return keys


def verify_signature(
    keys: dict[str, _Key], signature: dict[str, Any], receipt: dict[str, Any]
) -> str | None:
    if not isinstance(signature, dict) or set(signature) != {"alg", "kid", "sig"}:
        return "the signature is not exactly {alg, kid, sig} (spec §2.2)"
    kid = signature["kid"]
    if kid not in keys:
        return f"no key {kid} in the key set"
    alg, public, nbf, exp = keys[kid]
    if signature["alg"] != alg:
        return f"signature says {signature['alg']}, key {kid} signs {alg}"
    # spec §2.1: nbf inclusive, exp exclusive, against the receipt's issued_at.
    at = unix_seconds(receipt["issued_at"])
    if (nbf is not None and at < nbf) or (exp is not None and at >= exp):
        return f"key {kid} does not sign receipts issued at {receipt['issued_at']}"
    # spec §2.3: the domain tag, a line feed, the canonical receipt (§1.3).
    message = b"tollgate.receipt.v1\n" + rfc8785.dumps(receipt)
    sig = b64u_decode(signature["sig"])
    if len(sig) != 64:
        return f"the signature has {len(sig)} bytes, not 64 (spec §2.2)"
    try:
        if alg == "EdDSA":
            public.verify(sig, message)
        else:
            # spec §2.2: ES256's sig is the 64-byte r||s, not DER.
            der = encode_dss_signature(
                int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
            )
            public.verify(der, message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return f"the signature by {kid} does not verify"
    return None


MEMBERS = {"seq", "prev", "appended_at", "receipt", "signature", "hash"}

# spec §4.2: the outcome statuses each kind allows; §4.5 and §5.4 check 11:
# the statuses a decision's verdict allows.
STATUSES = {
    "decision": {"committed", "failed", "unknown", "not_executed", "pending_approval"},
    "approval": {"pending_approval", "approved", "denied", "expired"},
    "execution": {"committed", "failed", "unknown", "not_executed"},
    "reconciliation": {"committed", "failed"},
    "registry": {"committed"},
    "event": {"committed"},
    "lease": {"granted", "waiting", "died", "paused", "extended", "released", "expired"},
}
BY_VERDICT = {
    "pass": {"committed", "failed", "unknown"},
    "block": {"not_executed"},
    "escalate": {"pending_approval"},
}


def instant(ts: str) -> tuple[int, int]:
    # spec §1.5: compared as instants (a fraction of up to nine digits).
    whole, _, frac = ts.rstrip("Z").partition(".")
    return unix_seconds(whole + "Z"), int((frac + "000000000")[:9])


class Rules:
    """spec §5.4 checks 10 to 14, in ledger order."""

    def __init__(self) -> None:
        self.last_appended: tuple[int, str] | None = None
        self.decided: dict[tuple[str, str], int] = {}
        self.events: dict[tuple[str, str], int] = {}
        self.escalations: dict[str, str] = {}
        self.approvals: dict[str, str] = {}
        self.unknown: set[str] = set()

    def check(self, seq: int, entry: dict[str, Any]) -> str | None:
        r = entry["receipt"]
        kind, status = r["kind"], r["outcome"]["status"]
        if self.last_appended and instant(entry["appended_at"]) < instant(self.last_appended[1]):
            return f"appended_at {entry['appended_at']} is earlier than entry {self.last_appended[0]}'s"
        if status not in STATUSES.get(kind, set()):
            return f"a {kind} receipt with outcome {status}"
        if status == "unknown":
            self.unknown.add(r["receipt_id"])
        if kind == "decision":
            intent = r["subject"]["payload"]
            verdict = r["decision"]["verdict"]
            if status not in BY_VERDICT[verdict]:
                return f"verdict {verdict} with outcome {status}"
            if r["issued_at"] != intent["issued_at"]:
                return f"issued_at {r['issued_at']} is not the intent's {intent['issued_at']}"
            pair = (intent["agent"], intent["intent_id"])
            if pair in self.decided:
                return f"{pair} was decided at seq {self.decided[pair]} already"
            self.decided[pair] = seq
            if status == "pending_approval":
                deadline = r["outcome"]["review"]["deadline"]
                why = timestamp(deadline, "review.deadline")
                if why:
                    return why
                self.escalations[r["receipt_id"]] = deadline
        elif kind == "approval":
            if len(r["refs"]) != 1 or r["refs"][0] not in self.escalations:
                return f"refs {r['refs']} name no earlier escalation"
            if "payload" in r["subject"]:
                if r["issued_at"] != r["subject"]["payload"]["issued_at"]:
                    return "issued_at is not the approval decision's"
            elif status != "expired" or not (
                instant(r["issued_at"])
                == instant(r["subject"]["expired_at"])
                == instant(self.escalations[r["refs"][0]])
            ):
                return "an expiry not issued at its approval's deadline"
            self.approvals[r["receipt_id"]] = r["issued_at"]
        elif kind == "event":
            # spec §4.2, §5.4 checks 12 and 13: issued at its event's time,
            # and (source, event_id) applied once.
            event = r["subject"]["payload"]
            if r["issued_at"] != event["issued_at"]:
                return f"issued_at {r['issued_at']} is not the event's {event['issued_at']}"
            pair = (event["source"], event["event_id"])
            if pair in self.events:
                return f"event {pair} was applied at seq {self.events[pair]} already"
            self.events[pair] = seq
        elif kind == "lease":
            # spec §4.2, §5.4 check 12: issued at its request's issued_at,
            # its expiry's expired_at or its grant's granted_at, the same
            # text; it refs nothing.
            subject = r["subject"]
            if "payload" in subject:
                stated = subject["payload"]["issued_at"]
            elif "expired_at" in subject:
                stated = subject["expired_at"]
                if status != "expired":
                    return f"a lease expiry with outcome {status}"
            else:
                stated = subject["granted_at"]
                if status != "granted":
                    return f"a waiting request's grant with outcome {status}"
            if r["issued_at"] != stated:
                return f"issued_at {r['issued_at']} is not its subject's {stated}"
            if r["refs"]:
                return "a lease receipt refs nothing"
        elif kind == "reconciliation":
            # spec §4.2: it ends one earlier unknown outcome, once.
            if len(r["refs"]) != 1 or r["refs"][0] not in self.unknown:
                return f"refs {r['refs']} name no earlier unknown outcome left to reconcile"
            self.unknown.discard(r["refs"][0])
        elif kind == "execution":
            refs = r["refs"]
            if not refs or refs[0] not in self.escalations or refs[-1] not in self.approvals:
                return f"refs {refs} name no earlier escalation and approval"
            if instant(r["issued_at"]) != instant(self.approvals[refs[-1]]):
                return "issued_at is not the completing approval's"
        self.last_appended = (seq, entry["appended_at"])
        return None


def check(lines: list[bytes], keys: dict[str, _Key]) -> tuple[int | None, Any, str | None]:
    """`(None, entries, head)` when every line holds, else `(seq, why, None)`
    for the first line that does not."""
    prev: str | None = None
    seq = 0
    rules = Rules()
    for raw in lines:
        seq += 1
        # spec §5.3: every line, the last included, ends with a line feed.
        if not raw.endswith(b"\n"):
            return seq, "the line is cut off (no line feed)", None
        line = raw[:-1]
        try:
            entry = json.loads(line)
            # spec §1.3 and §5.4 step 2: the line is its entry's canonical bytes.
            canonical = isinstance(entry, dict) and rfc8785.dumps(entry) == line
        except (ValueError, RecursionError, rfc8785.CanonicalizationError) as e:
            return seq, f"the line is not I-JSON (spec §1.1): {type(e).__name__} {e}", None
        if not canonical:
            return seq, "the line is not its entry's canonical form", None
        # spec §5.1, §5.4 step 3: exactly the six members.
        if set(entry) != MEMBERS:
            return seq, f"the entry's members are {sorted(entry)}", None
        try:
            why = _check_entry(seq, entry, prev, keys, rules)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, RecursionError) as e:
            why = f"the entry is not shaped as spec §5.1 says: {type(e).__name__} {e}"
        if why:
            return seq, why, None
        prev = entry["hash"]
    if seq == 0:
        # spec §5.3: an export holds at least the ledger's first entry.
        return 1, "the export is empty", None
    return None, seq, prev


def _check_entry(
    seq: int,
    entry: dict[str, Any],
    prev: str | None,
    keys: dict[str, _Key],
    rules: Rules,
) -> str | None:
    # spec §5.4 step 4: seq is the line number (an integer, not a boolean).
    if type(entry["seq"]) is not int or entry["seq"] != seq:
        return f"seq is {entry['seq']!r}"
    # spec §1.5, §5.1: appended_at is a timestamp; §4.1: the receipt's
    # type and issued_at.
    receipt = entry["receipt"]
    why = timestamp(entry["appended_at"], "appended_at") or timestamp(
        receipt.get("issued_at"), "the receipt's issued_at"
    )
    if why:
        return why
    if receipt.get("type") != "tollgate.receipt/v1":
        return f"the receipt's type is {receipt.get('type')!r}, not tollgate.receipt/v1"
    # spec §5.1, §5.4 step 5: prev links to the previous hash; the
    # first entry's is H(0), the algorithm with 64 zero digits.
    alg = entry["prev"].split(":")[0]
    expected_prev = prev if prev is not None else alg + ":" + "0" * 64
    if entry["prev"] != expected_prev:
        return f"prev is {entry['prev']}, not {expected_prev}"
    # spec §5.2: H(n) over the chain tag, a line feed and the
    # canonical entry without its hash member.
    rest = {k: v for k, v in entry.items() if k != "hash"}
    computed = digest(alg, b"tollgate.chain.v1\n" + rfc8785.dumps(rest))
    if entry["hash"] != computed:
        return f"hash is {entry['hash']}, computed {computed}"
    return receipt_problem(entry, keys) or rules.check(seq, entry)


def receipt_problem(entry: dict[str, Any], keys: dict[str, _Key]) -> str | None:
    """What is wrong with an entry's receipt on its own: its id and its
    signature (spec §4.4, §5.4 steps 8 and 9); `None` when both hold."""
    # spec §4.4: rcpt_ and 32 hex digits of SHA-256 over the
    # receipt-id tag, a line feed and the receipt without receipt_id.
    receipt = entry["receipt"]
    body = {k: v for k, v in receipt.items() if k != "receipt_id"}
    rid = (
        "rcpt_" + hashlib.sha256(b"tollgate.receipt-id.v1\n" + rfc8785.dumps(body)).hexdigest()[:32]
    )
    if receipt["receipt_id"] != rid:
        return f"receipt_id is {receipt['receipt_id']}, computed {rid}"
    # spec §5.4 steps 8 and 9: a known key that admits issued_at, a
    # signature that verifies.
    return verify_signature(keys, entry["signature"], receipt)


@dataclass(frozen=True)
class Report:
    """What a verification found."""

    valid: bool
    """Whether everything checked holds."""
    entries: int
    """Entries read (up to the first bad one)."""
    head: str | None = None
    """The last entry's chain hash, when valid."""
    first_bad_seq: int | None = None
    """The first entry that fails."""
    reason: str | None = None
    """Why it fails."""

    def __str__(self) -> str:
        if self.valid:
            return f"valid: {self.entries} entries, head {self.head}"
        if self.first_bad_seq is None:
            return f"invalid: {self.reason}"
        return f"invalid at seq {self.first_bad_seq}: {self.reason}"


_Source = Union[str, "os.PathLike[str]", bytes]


def _jwks(jwks: _Source | dict[str, Any]) -> dict[str, Any]:
    if isinstance(jwks, dict):
        return jwks
    if isinstance(jwks, bytes):
        value: dict[str, Any] = json.loads(jwks)
        return value
    with open(jwks, "rb") as f:
        loaded: dict[str, Any] = json.load(f)
    return loaded


def verify_export(
    export: _Source,
    jwks: _Source | dict[str, Any],
    *,
    head: str | None = None,
    checkpoint: str | None = None,
    checkpoint_key: str | None = None,
) -> Report:
    """Verifies a ledger export (a path, or its bytes) with the gateway's
    key set (a path, bytes, or the parsed JWK Set), line by line (spec
    §5.4 checks 1 to 14); with `head`, a chain hash obtained independently
    that the export must end at; with `checkpoint` (a signed note) and
    `checkpoint_key` (the gateway's checkpoint verifier key), a checkpoint
    whose signature must verify and whose tree and head the export must
    hold (spec §6.7): this shows entries cut from the end, or deleted and
    the chain rebuilt, which the export alone cannot."""
    if isinstance(export, bytes):
        lines = export.splitlines(keepends=True)
    else:
        with open(export, "rb") as f:
            lines = f.read().splitlines(keepends=True)
    try:
        keys = load_keys(_jwks(jwks))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return Report(False, 0, None, None, f"the key set: {type(e).__name__} {e}")
    failed, what, last = check(lines, keys)
    if failed is not None:
        return Report(False, failed - 1, None, failed, str(what))
    # spec §5.4: a head obtained independently must be the export's last.
    if head is not None and last != head:
        return Report(
            False, int(what), None, None, f"the export ends at {last}, not at the head {head}"
        )
    if checkpoint is not None:
        if checkpoint_key is None:
            raise ValueError("a checkpoint is checked with the gateway's checkpoint key")
        from .checkpoints import CheckpointError, export_matches, verify_checkpoint

        try:
            why = export_matches(
                [line.rstrip(b"\n") for line in lines],
                verify_checkpoint(checkpoint, checkpoint_key),
            )
        except (CheckpointError, ValueError) as e:
            why = f"the checkpoint does not verify: {e}"
        if why:
            return Report(False, int(what), None, None, why)
    return Report(True, int(what), last)


def verify_receipt(entry: bytes | dict[str, Any], jwks: _Source | dict[str, Any]) -> Report:
    """Verifies one ledger entry's receipt on its own: its receipt id and
    its signature by a key of the gateway's key set (spec §4.4, §5.4
    steps 8 and 9). The chain needs the export (`verify_export`)."""
    try:
        value = json.loads(entry) if isinstance(entry, bytes) else entry
    except (ValueError, RecursionError) as e:
        return Report(False, 0, None, None, f"the entry is not JSON: {e}")
    seq = value.get("seq") if isinstance(value, dict) else None
    try:
        why = receipt_problem(value, load_keys(_jwks(jwks)))
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as e:
        why = f"the entry is not shaped as spec §5.1 says: {type(e).__name__} {e}"
    if why:
        return Report(False, 0, None, seq if type(seq) is int else None, why)
    return Report(True, 1, value.get("hash"))
