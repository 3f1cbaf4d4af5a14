"""Checkpoints and proofs (spec §6): the RFC 6962 tree over an export's
lines, inclusion and consistency proofs, C2SP signed notes, checkpoints
and witness cosignatures, tlog-tiles paths. Written from RFC 6962 (section
2.1), RFC 9162 (sections 2.1.3.2 and 2.1.4.2), the C2SP signed-note,
tlog-checkpoint, tlog-cosignature and tlog-tiles specifications and
docs/spec.md section 6 alone: it shares no code with the gateway. Ed25519
is the `cryptography` package's."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .errors import TollgateError


class CheckpointError(TollgateError):
    """A checkpoint, a note or a verifier key that does not check."""


def fail(msg: str) -> NoReturn:
    raise CheckpointError(msg)


# spec §6.1: RFC 6962 section 2.1 with SHA-256, 0x00 for leaves, 0x01 for nodes.
def leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


class Tree:
    """MTH, PATH and PROOF from their definitions, memoized by range."""

    def __init__(self, leaves: list[bytes]) -> None:
        self.leaves = leaves
        self.memo: dict[tuple[int, int], bytes] = {}

    def mth(self, lo: int, hi: int) -> bytes:
        if hi - lo == 0:
            return hashlib.sha256(b"").digest()
        if hi - lo == 1:
            return leaf(self.leaves[lo])
        key = (lo, hi)
        if key not in self.memo:
            k = split(hi - lo)
            self.memo[key] = node(self.mth(lo, lo + k), self.mth(lo + k, hi))
        return self.memo[key]

    def path(self, m: int, lo: int, hi: int) -> list[bytes]:
        """PATH(m, D[lo:hi]), m relative to lo."""
        n = hi - lo
        if n <= 1:
            return []
        k = split(n)
        if m < k:
            return self.path(m, lo, lo + k) + [self.mth(lo + k, hi)]
        return self.path(m - k, lo + k, hi) + [self.mth(lo, lo + k)]

    def subproof(self, m: int, lo: int, hi: int, b: bool) -> list[bytes]:
        n = hi - lo
        if m == n:
            return [] if b else [self.mth(lo, hi)]
        k = split(n)
        if m <= k:
            return self.subproof(m, lo, lo + k, b) + [self.mth(lo + k, hi)]
        return self.subproof(m - k, lo + k, hi, False) + [self.mth(lo, lo + k)]

    def proof(self, m: int, n: int) -> list[bytes]:
        """PROOF(m, D[0:n]) for 0 < m < n."""
        return self.subproof(m, 0, n, True)


# spec §6.6, §6.7: RFC 9162 section 2.1.3.2 and 2.1.4.2, verification from a
# root alone; from size 0 anything is consistent, one size needs one root.
def inclusion_holds(
    index: int, size: int, leaf_hash: bytes, path: list[bytes], root: bytes
) -> bool:
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf_hash
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(m: int, n: int, old_root: bytes, new_root: bytes, path: list[bytes]) -> bool:
    if m == n:
        return not path and old_root == new_root
    if m == 0 or m > n:
        return m == 0 and not path
    if m & (m - 1) == 0:
        path = [old_root] + path
    if not path:
        return False
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node(c, fr)
            sr = node(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root


# spec §6.2: verifier keys name+id+base64(type || key), id the first 4 bytes
# of SHA-256(name || 0x0A || type || key); type 0x01 for the log, 0x04 for
# witnesses (spec §6.5). Standard base64 with padding.
def parse_vkey(vkey: str, want_type: int) -> tuple[str, bytes, Ed25519PublicKey]:
    name, key_id, key = vkey.split("+", 2)
    raw = base64.b64decode(key, validate=True)
    if raw[0] != want_type or len(raw) != 33:
        fail(f"verifier key {vkey}: type {raw[0]:#x}, want {want_type:#x}")
    computed = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]
    if computed.hex() != key_id:
        fail(f"verifier key {vkey}: id {key_id} is not {computed.hex()}")
    return name, computed, Ed25519PublicKey.from_public_bytes(raw[1:])


# spec §6.4: no control character but the line feed; the text ends at the
# last empty line; signature lines are U+2014, space, name, space, base64.
def open_note(note: str) -> tuple[str, list[tuple[str, bytes, bytes]]]:
    if any(ord(c) < 0x20 and c != "\n" for c in note):
        fail("control character in a note")
    cut = note.rfind("\n\n")
    if cut < 0 or not note.endswith("\n"):
        fail("note without a blank line or final newline")
    text, sigs = note[: cut + 1], note[cut + 2 :].rstrip("\n").split("\n")
    out = []
    for line in sigs:
        if not line.startswith("\u2014 "):
            fail(f"signature line {line!r}")
        name, b64 = line[2:].split(" ")
        raw = base64.b64decode(b64, validate=True)
        out.append((name, raw[:4], raw[4:]))
    return text, out


def check_checkpoint(
    note: str,
    log_key: tuple[str, bytes, Ed25519PublicKey],
    witness_keys: list[tuple[str, bytes, Ed25519PublicKey]],
) -> tuple[int, bytes, str, set[str]]:
    name, key_id, pub = log_key
    text, sigs = open_note(note)
    # spec §6.4: the log's signature is Ed25519 over the text bytes; a line
    # that names the key and does not verify rejects the note.
    signed = False
    for sname, sid, sig in sigs:
        if (sname, sid) == (name, key_id):
            try:
                pub.verify(sig, text.encode())
            except InvalidSignature:
                fail(f"log signature does not verify on {text!r}")
            signed = True
    if not signed:
        fail("checkpoint without the log's signature")
    # spec §6.5: a cosignature is 8 bytes of big-endian time, then Ed25519
    # over "cosignature/v1", the time line and the checkpoint text.
    cosigned = set()
    for wname, wid, wpub in witness_keys:
        for sname, sid, sig in sigs:
            if (sname, sid) != (wname, wid):
                continue
            ts = int.from_bytes(sig[:8], "big")
            msg = f"cosignature/v1\ntime {ts}\n".encode() + text.encode()
            try:
                wpub.verify(sig[8:], msg)
            except InvalidSignature:
                fail(f"cosignature of {wname} does not verify")
            cosigned.add(wname)
    # spec §6.3: origin (the log key's name, spec §6.4), size in decimal
    # without leading zeros, base64 root, exactly one tollgate-head line.
    lines = text.rstrip("\n").split("\n")
    if lines[0] != name:
        fail(f"origin {lines[0]!r} is not the key name {name!r}")
    size = int(lines[1])
    if str(size) != lines[1]:
        fail(f"size line {lines[1]!r}")
    root = base64.b64decode(lines[2], validate=True)
    heads = [l[len("tollgate-head ") :] for l in lines[3:] if l.startswith("tollgate-head ")]
    if len(heads) != 1:
        fail(f"checkpoint with {len(heads)} tollgate-head lines")
    return size, root, heads[0], cosigned


# spec §6.6: C2SP tlog-tiles paths, height 8, partial tiles as .p/<W>.
def tile_path(level: int, index: int, width: int) -> str:
    groups = f"{index % 1000:03d}"
    n = index
    while n >= 1000:
        n //= 1000
        groups = f"x{n % 1000:03d}/{groups}"
    return f"{level}/{groups}" + ("" if width == 256 else f".p/{width}")


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint whose signatures verified (spec §6.3 to §6.5)."""

    size: int
    """The number of entries it commits to."""
    root: bytes
    """The RFC 6962 root of the tree of those entries."""
    head: str
    """The chain hash of entry `size` (its `tollgate-head` line)."""
    cosigned: frozenset[str]
    """The witnesses among those given whose cosignature verified."""


def verify_checkpoint(
    note: str, checkpoint_key: str, witness_keys: Sequence[str] = ()
) -> Checkpoint:
    """Checks a checkpoint (the signed note of `GET /log/checkpoint`) with
    the gateway's checkpoint verifier key (`name+id+base64`,
    `GET /.well-known/tollgate-checkpoint-key`) and, given theirs, each
    witness's cosignature (spec §6.4, §6.5). Raises `CheckpointError`."""
    try:
        size, root, head, cosigned = check_checkpoint(
            note, parse_vkey(checkpoint_key, 0x01), [parse_vkey(w, 0x04) for w in witness_keys]
        )
    except CheckpointError:
        raise
    except (ValueError, IndexError, TypeError, AttributeError) as e:
        # Malformed keys, notes and base64: refused, never a crash.
        raise CheckpointError(f"malformed: {type(e).__name__} {e}") from e
    return Checkpoint(size, root, head, frozenset(cosigned))


def verify_inclusion(line: bytes, seq: int, proof: Sequence[str], checkpoint: Checkpoint) -> bool:
    """Whether entry `seq` (its export line, without the line feed) is in
    the tree `checkpoint` commits to, by `proof` (the base64 hashes of
    `GET /v1/proofs/inclusion`; spec §6.6, §6.7)."""
    try:
        path = [base64.b64decode(h, validate=True) for h in proof]
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"a proof hash is not base64: {e}") from e
    if seq < 1 or any(len(h) != 32 for h in path):
        return False
    return inclusion_holds(seq - 1, checkpoint.size, leaf(line), path, checkpoint.root)


def export_matches(lines: Sequence[bytes], checkpoint: Checkpoint) -> str | None:
    """What is wrong with an export (its lines, without line feeds) against
    a checkpoint: the first `size` lines must hash to its root, and entry
    `size`'s chain hash must be its head (spec §6.7). `None` when both
    hold."""
    if len(lines) < checkpoint.size:
        return (
            f"the export has {len(lines)} entries, and the checkpoint commits to "
            f"{checkpoint.size}: entries were cut"
        )
    if Tree(list(lines[: checkpoint.size])).mth(0, checkpoint.size) != checkpoint.root:
        return f"the first {checkpoint.size} entries do not hash to the checkpoint's root"
    if json.loads(lines[checkpoint.size - 1]).get("hash") != checkpoint.head:
        return f"entry {checkpoint.size}'s hash is not the checkpoint's head"
    return None
