"""What the gateway refuses, as exceptions: each RFC 9457 problem document
becomes a `ProblemError`, of the subclass for its type when an agent has
something to do about it."""

from __future__ import annotations

from typing import Any

PROBLEM_PREFIX = "urn:tollgate:problem:"


class TollgateError(Exception):
    """Anything this package raises."""


class Unreachable(TollgateError):
    """No answer from the gateway before the client gave up (the last
    transport error is the cause). The same intent may be submitted again
    (`intent_id`, with the same `envelope_dir`): it is decided once."""

    intent_id: str | None = None


class ProblemError(TollgateError):
    """The gateway refused a request with a problem document."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        self.type: str = str(problem.get("type", ""))
        self.slug: str = self.type.removeprefix(PROBLEM_PREFIX)
        self.title: str = str(problem.get("title", ""))
        self.detail: str = str(problem.get("detail", ""))
        self.pointer: str | None = problem.get("pointer")
        super().__init__(f"{status} {self.slug}: {self.detail}")


class InvalidIntent(ProblemError):
    """The intent or its params do not fit the protocol or the action's
    schema: fix the intent."""


class BadSignature(ProblemError):
    """The signature does not verify with the delegation's agent key."""


class DelegationRefused(ProblemError):
    """The delegation is unknown, revoked, expired, not yet valid, for
    another agent or not trusted."""


class ClockSkew(ProblemError):
    """`issued_at` is too far from the gateway's clock: check this
    machine's clock."""


class IdempotencyConflict(ProblemError):
    """This intent id was used before with other bytes: an intent id is
    used once, ever."""


class Unauthorized(ProblemError):
    """A bearer token is needed (the read token) or was wrong."""


_BY_SLUG: dict[str, type[ProblemError]] = {
    "invalid-intent": InvalidIntent,
    "invalid-params": InvalidIntent,
    "unknown-action": InvalidIntent,
    "not-an-integer": InvalidIntent,
    "invalid-confidence": InvalidIntent,
    "unrepresentable-param": InvalidIntent,
    "malformed-json": InvalidIntent,
    "bad-signature": BadSignature,
    "unknown-delegation": DelegationRefused,
    "revoked-delegation": DelegationRefused,
    "expired-delegation": DelegationRefused,
    "delegation-not-valid-now": DelegationRefused,
    "wrong-agent": DelegationRefused,
    "untrusted-delegation": DelegationRefused,
    "clock-skew": ClockSkew,
    "idempotency-conflict": IdempotencyConflict,
    "unauthorized": Unauthorized,
}


def problem_error(status: int, problem: dict[str, Any]) -> ProblemError:
    """The exception for a problem document."""
    slug = str(problem.get("type", "")).removeprefix(PROBLEM_PREFIX)
    return _BY_SLUG.get(slug, ProblemError)(status, problem)
