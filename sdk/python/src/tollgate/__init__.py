"""Tollgate for Python: agents sign and submit intents, reviewers approve
escalated ones, with the protocol's bytes (RFC 8785 canonical JSON,
domain-tagged Ed25519 or ES256 signatures) and the gateway's retry rules.

    import tollgate
    client = tollgate.Client(url, agent="agent-demo", delegation="dlg_demo",
                             key=tollgate.AgentKey.load("agent.jwk"))
    receipt = client.submit("orders.refund", "order:o-1001",
                            {"amount_minor": 2500, "currency": "EUR"})
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from . import webhooks
    from .checkpoints import Checkpoint, CheckpointError, verify_checkpoint, verify_inclusion
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
    from .tools import Blocked, Escalated, Indeterminate, NotPassed, governed
    from .verify import Report, verify_export, verify_receipt

__version__ = "0.1.0"

# Each name loads its module on first use (PEP 562): an auditor who only
# verifies needs neither httpx nor rfc8785 for checkpoints.
_WHERE = {
    "AgentKey": "keys",
    "AsyncClient": "client",
    "BadSignature": "errors",
    "Blocked": "tools",
    "Checkpoint": "checkpoints",
    "CheckpointError": "checkpoints",
    "Client": "client",
    "ClockSkew": "errors",
    "DelegationRefused": "errors",
    "Escalated": "tools",
    "Indeterminate": "tools",
    "IdempotencyConflict": "errors",
    "InvalidIntent": "errors",
    "NotPassed": "tools",
    "ProblemError": "errors",
    "Receipt": "receipt",
    "Report": "verify",
    "Reviewer": "client",
    "Rule": "receipt",
    "TollgateError": "errors",
    "Unauthorized": "errors",
    "Unreachable": "errors",
    "governed": "tools",
    "thumbprint": "keys",
    "verify_checkpoint": "checkpoints",
    "verify_export": "verify",
    "verify_inclusion": "checkpoints",
    "verify_receipt": "verify",
}


def __getattr__(name: str) -> Any:
    if name == "webhooks":
        return importlib.import_module(".webhooks", __name__)
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module 'tollgate' has no attribute {name!r}")


__all__ = [
    "AgentKey",
    "AsyncClient",
    "BadSignature",
    "Blocked",
    "Checkpoint",
    "CheckpointError",
    "Client",
    "ClockSkew",
    "DelegationRefused",
    "Escalated",
    "IdempotencyConflict",
    "Indeterminate",
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
    "verify_checkpoint",
    "verify_export",
    "verify_inclusion",
    "verify_receipt",
    "webhooks",
]
