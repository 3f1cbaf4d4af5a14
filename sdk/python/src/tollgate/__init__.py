"""Tollgate for Python: agents sign and submit intents, reviewers approve
escalated ones, with the protocol's bytes (RFC 8785 canonical JSON,
domain-tagged Ed25519 or ES256 signatures) and the gateway's retry rules.

    import tollgate
    client = tollgate.Client(url, agent="agent-demo", delegation="dlg_demo",
                             key=tollgate.AgentKey.load("agent.jwk"))
    receipt = client.submit("orders.refund", "order:o-1001",
                            {"amount_minor": 2500, "currency": "EUR"})
"""

from typing import TYPE_CHECKING, Any

from . import webhooks
from .errors import (
    BadSignature,
    ClockSkew,
    DelegationRefused,
    IdempotencyConflict,
    InvalidIntent,
    ProblemError,
    TollgateError,
    Unauthorized,
    Unreachable,
)
from .governed import Blocked, Escalated, NotPassed, governed
from .keys import AgentKey, thumbprint
from .receipt import Receipt, Rule
from .verify import Report, verify_export, verify_receipt

if TYPE_CHECKING:
    from .client import AsyncClient, Client, Reviewer

__version__ = "0.1.0"

_CLIENTS = ("AsyncClient", "Client", "Reviewer")


def __getattr__(name: str) -> Any:
    # The clients (and httpx) load on first use: an auditor who only
    # verifies needs neither.
    if name in _CLIENTS:
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module 'tollgate' has no attribute {name!r}")


__all__ = [
    "AgentKey",
    "AsyncClient",
    "BadSignature",
    "Blocked",
    "Client",
    "ClockSkew",
    "DelegationRefused",
    "Escalated",
    "IdempotencyConflict",
    "InvalidIntent",
    "NotPassed",
    "ProblemError",
    "Receipt",
    "Report",
    "Reviewer",
    "Rule",
    "TollgateError",
    "Unauthorized",
    "Unreachable",
    "governed",
    "thumbprint",
    "verify_export",
    "verify_receipt",
    "webhooks",
]
