"""Tollgate for Python: agents sign and submit intents, reviewers approve
escalated ones, with the protocol's bytes (RFC 8785 canonical JSON,
domain-tagged Ed25519 or ES256 signatures) and the gateway's retry rules.

    import tollgate
    client = tollgate.Client(url, agent="agent-demo", delegation="dlg_demo",
                             key=tollgate.AgentKey.load("agent.jwk"))
    receipt = client.submit("orders.refund", "order:o-1001",
                            {"amount_minor": 2500, "currency": "EUR"})
"""

from .client import AsyncClient, Client, Reviewer
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
from .keys import AgentKey, thumbprint
from .receipt import Receipt, Rule

__version__ = "0.1.0"

__all__ = [
    "AgentKey",
    "AsyncClient",
    "BadSignature",
    "Client",
    "ClockSkew",
    "DelegationRefused",
    "IdempotencyConflict",
    "InvalidIntent",
    "ProblemError",
    "Receipt",
    "Reviewer",
    "Rule",
    "TollgateError",
    "Unauthorized",
    "Unreachable",
    "thumbprint",
]
