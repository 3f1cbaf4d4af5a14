"""`tollgate.governed`: a tool function runs only on `pass` (or once
reviewers approve, when asked to wait), never on a block or a pending
escalation; its name, docstring and signature stay what frameworks read."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from typing import Any

import pytest
from conftest import Gateway

import tollgate


def test_a_tool_runs_only_when_the_gateway_lets_it(gateway: Gateway) -> None:
    ran: list[tuple[str, int]] = []
    with gateway.client() as c:

        def refund(order_id: str, amount_minor: int, currency: str = "EUR") -> str:
            """Refund an order."""
            ran.append((order_id, amount_minor))
            return f"refunded {amount_minor} on {order_id}"

        tool = tollgate.governed(c, action="orders.refund", resource="order:{order_id}")(refund)
        assert tool.__name__ == "refund" and tool.__doc__ == "Refund an order."
        assert inspect.signature(tool) == inspect.signature(refund)

        assert tool("o-1001", 1200) == "refunded 1200 on o-1001"
        assert ran == [("o-1001", 1200)]
        with pytest.raises(tollgate.Blocked) as blocked:
            tool("o-1003", 1200)
        assert blocked.value.receipt.verdict == "block" and "o-1003" in str(blocked.value)
        with pytest.raises(tollgate.Escalated) as escalated:
            tool("o-1002", amount_minor=99_900)
        assert escalated.value.receipt.outcome == "pending_approval"
        assert ran == [("o-1001", 1200)], "a blocked or escalated call ran"


def test_a_tool_that_waits_runs_once_a_reviewer_approves(gateway: Gateway) -> None:
    reviewer_key = tollgate.AgentKey.load(gateway.data / "demo" / "reviewer.jwk")
    gateway.register_reviewer("rev-demo", reviewer_key)
    ran: list[int] = []
    with gateway.client() as c:

        @tollgate.governed(c, action="orders.refund", resource="order:{order_id}", wait=60)
        def refund(order_id: str, amount_minor: int, currency: str = "EUR") -> int:
            ran.append(amount_minor)
            return amount_minor

        reviewer = tollgate.Reviewer(reviewer_key, "rev-demo", c)
        before = {a["id"] for a in reviewer.pending()}

        def approve_when_pending() -> None:
            # The approval the call below opens: the one pending that was
            # not before it.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                for a in reviewer.pending():
                    if a["id"] not in before:
                        reviewer.approve(a["id"], "verified")
                        return
                time.sleep(0.1)

        approver = threading.Thread(target=approve_when_pending)
        approver.start()
        assert refund("o-1002", 88_800) == 88_800
        approver.join()
        reviewer.close()
    assert ran == [88_800]


def test_a_coroutine_tool_is_governed_by_the_async_client(gateway: Gateway) -> None:
    async def run() -> tuple[Any, Any]:
        async with tollgate.AsyncClient(
            gateway.url, agent="agent-demo", delegation="dlg_demo", key=gateway.agent_key()
        ) as c:

            @tollgate.governed(c, action="orders.refund", resource="order:{order_id}")
            async def refund(order_id: str, amount_minor: int, currency: str = "EUR") -> str:
                return "done"

            ok = await refund("o-1001", 50)
            try:
                await refund("o-1003", 50)
            except tollgate.Blocked as e:
                return ok, e.receipt.verdict
            return ok, None

    assert asyncio.run(run()) == ("done", "block")
