"""Agent and reviewer keys: JWK files as `tollgate keygen` writes them
(Ed25519, or P-256 for ES256), RFC 7638 thumbprints as key ids, and
signature objects over domain-tagged messages (spec §2)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Union

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from ._wire import b64u, b64u_decode, canonical, signed_message

_Private = Union[Ed25519PrivateKey, ec.EllipticCurvePrivateKey]  # noqa: UP007 (a runtime alias)


def thumbprint(jwk: dict[str, Any]) -> str:
    """The RFC 7638 thumbprint of a public JWK: its `kid` (spec §2.1)."""
    if jwk.get("kty") == "OKP":
        members = {k: jwk[k] for k in ("crv", "kty", "x")}
    elif jwk.get("kty") == "EC":
        members = {k: jwk[k] for k in ("crv", "kty", "x", "y")}
    else:
        raise ValueError(f"unsupported key type {jwk.get('kty')!r}")
    return b64u(hashlib.sha256(canonical(members)).digest())


class AgentKey:
    """A private signing key: an agent's (it signs intents) or a
    reviewer's (it signs approval decisions)."""

    def __init__(self, private: _Private) -> None:
        self._private = private
        self.public_jwk: dict[str, Any] = _public_jwk(private)
        self.kid: str = self.public_jwk["kid"]
        self.alg: str = self.public_jwk["alg"]

    @classmethod
    def generate(cls) -> AgentKey:
        """A new Ed25519 key."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_jwk(cls, jwk: dict[str, Any]) -> AgentKey:
        """The key of a private JWK (`d` present)."""
        if "d" not in jwk:
            raise ValueError('a private JWK (with "d") is needed to sign')
        if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519":
            return cls(Ed25519PrivateKey.from_private_bytes(b64u_decode(jwk["d"])))
        if jwk.get("kty") == "EC" and jwk.get("crv") == "P-256":
            d = int.from_bytes(b64u_decode(jwk["d"]), "big")
            return cls(ec.derive_private_key(d, ec.SECP256R1()))
        raise ValueError(f"unsupported key {jwk.get('kty')!r}/{jwk.get('crv')!r}")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> AgentKey:
        """The key in a JWK file (`tollgate keygen`, `tollgate init --demo`)."""
        return cls.from_jwk(json.loads(Path(path).read_text()))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes the private JWK, readable by its owner only."""
        jwk = dict(self.public_jwk)
        if isinstance(self._private, Ed25519PrivateKey):
            from cryptography.hazmat.primitives import serialization

            raw = self._private.private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
            jwk["d"] = b64u(raw)
        else:
            jwk["d"] = b64u(self._private.private_numbers().private_value.to_bytes(32, "big"))
        fd = os.open(os.fspath(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(jwk, f, sort_keys=True)

    def sign(self, domain: str, payload: Any) -> dict[str, str]:
        """The signature object `{alg, kid, sig}` over `payload` in `domain`."""
        message = signed_message(domain, payload)
        if isinstance(self._private, Ed25519PrivateKey):
            sig = self._private.sign(message)
        else:
            r, s = decode_dss_signature(self._private.sign(message, ec.ECDSA(hashes.SHA256())))
            sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return {"alg": self.alg, "kid": self.kid, "sig": b64u(sig)}

    def envelope(self, domain: str, payload: Any) -> dict[str, Any]:
        """`{"payload", "signature"}` (spec §3.1)."""
        return {"payload": payload, "signature": self.sign(domain, payload)}


def _public_jwk(private: _Private) -> dict[str, Any]:
    if isinstance(private, Ed25519PrivateKey):
        from cryptography.hazmat.primitives import serialization

        x = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        jwk: dict[str, Any] = {"kty": "OKP", "crv": "Ed25519", "x": b64u(x), "alg": "EdDSA"}
    else:
        numbers = private.public_key().public_numbers()
        jwk = {
            "kty": "EC",
            "crv": "P-256",
            "x": b64u(numbers.x.to_bytes(32, "big")),
            "y": b64u(numbers.y.to_bytes(32, "big")),
            "alg": "ES256",
        }
    jwk["kid"] = thumbprint(jwk)
    jwk["use"] = "sig"
    return jwk


__all__ = ["AgentKey", "InvalidSignature", "thumbprint"]
