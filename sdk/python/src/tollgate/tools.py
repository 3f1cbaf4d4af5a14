"""`governed`: a decorator that puts a tool function (as agent frameworks
define tools) behind the gateway. Each call becomes a signed intent built
from the call's arguments; the function runs only when the gateway says
`pass` (or, when asked to wait, once reviewers approved it), and raises
`Blocked` or `Escalated` otherwise, carrying the receipt and its reasons.

    @tollgate.governed(client, action="orders.refund", resource="order:{order_id}")
    def refund(order_id: str, amount_minor: int, currency: str) -> str:
        ...

The wrapper keeps the function's name, docstring and signature
(`functools.wraps`), which is what frameworks read to describe a tool to a
model, so it stacks under their own decorators (`@tool`, `@function_tool`).
"""

from __future__ import annotations

import functools
import inspect
import string
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from .errors import TollgateError
from .receipt import Receipt

if TYPE_CHECKING:
    from .client import AsyncClient, Client

F = TypeVar("F", bound=Callable[..., Any])


class NotPassed(TollgateError):
    """The gateway did not let the call run; `receipt` says why."""

    def __init__(self, receipt: Receipt, what: str) -> None:
        self.receipt = receipt
        reasons = "; ".join(f"{r.id}: {r.reason}" for r in receipt.rules if r.effect != "pass")
        super().__init__(f"{what} ({receipt.receipt_id}){': ' + reasons if reasons else ''}")


class Blocked(NotPassed):
    """Blocked by a rule or a score, or denied or expired in review."""


class Indeterminate(NotPassed):
    """Passed and sent to its target, whose answer is not known yet (outcome
    `unknown`): the target may have acted. The gateway settles it with the
    target (`client.wait(receipt.intent_id)`); the tool does not run."""


class Escalated(NotPassed):
    """Waiting for reviewers (and the caller did not ask to wait, or the
    wait ran out)."""


def _intent(
    fn: Callable[..., Any],
    resource: str | Callable[..., str],
    params: Callable[..., dict[str, Any]] | None,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> tuple[str, dict[str, Any]]:
    bound = inspect.signature(fn).bind(*args, **kwargs)
    bound.apply_defaults()
    arguments = dict(bound.arguments)
    if callable(resource):
        name, named = resource(*args, **kwargs), set()
    else:
        name = resource.format(**arguments)
        named = {field for _, field, _, _ in string.Formatter().parse(resource) if field}
    if params:
        return name, params(*args, **kwargs)
    # The arguments the resource names are the resource, not params.
    return name, {k: v for k, v in arguments.items() if k not in named}


def _settled(receipt: Receipt) -> None:
    # A pass, or an escalation whose quorum completed (its execution),
    # committed; an unknown outcome may have acted at the target already.
    allowed = receipt.verdict == "pass" or receipt.kind == "execution"
    if allowed and receipt.outcome == "committed":
        return
    if allowed and receipt.outcome == "unknown":
        raise Indeterminate(receipt, "sent to its target, whose answer is not known")
    if receipt.outcome in ("pending_approval",):
        raise Escalated(receipt, "waiting for reviewers")
    raise Blocked(receipt, f"not run: {receipt.outcome.replace('_', ' ')}")


def governed(
    client: Client | AsyncClient,
    *,
    action: str,
    resource: str | Callable[..., str],
    params: Callable[..., dict[str, Any]] | None = None,
    wait: float | None = None,
) -> Callable[[F], F]:
    """Governs a tool function. `resource` is a template filled with the
    call's arguments (`"order:{order_id}"`) or a function of them; the
    intent's params are the call's other arguments (those the template
    does not name) unless `params` builds them.
    With `wait` (seconds), an escalated call waits for reviewers and runs
    once approved. Works for plain functions with a `Client` and for
    coroutine functions with an `AsyncClient`."""

    def decorate(fn: F) -> F:
        if inspect.iscoroutinefunction(fn):
            async_client = cast("AsyncClient", client)

            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                name, p = _intent(fn, resource, params, args, kwargs)
                receipt = await async_client.submit(action, name, p)
                if receipt.outcome == "pending_approval" and wait:
                    receipt = await async_client.wait(receipt.intent_id, timeout=wait)
                _settled(receipt)
                return await cast(Callable[..., Awaitable[Any]], fn)(*args, **kwargs)

            return cast(F, run_async)

        sync_client = cast("Client", client)

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            name, p = _intent(fn, resource, params, args, kwargs)
            receipt = sync_client.submit(action, name, p)
            if receipt.outcome == "pending_approval" and wait:
                receipt = sync_client.wait(receipt.intent_id, timeout=wait)
            _settled(receipt)
            return fn(*args, **kwargs)

        return cast(F, run)

    return decorate
