#!/usr/bin/env python3
"""An agent's tool behind Tollgate, with the Python SDK (`pip install
./sdk/python`): the tool runs only when the gateway says `pass`; a block
or an escalation comes back as an exception carrying the reasons, for the
agent (or its model) to read.

    agent.py --url http://127.0.0.1:8080 --key tollgate-data/demo/agent.jwk

`tollgate.governed` keeps the function's name, docstring and signature, so
it stacks under an agent framework's own tool decorator: with LangChain,
`langchain_core.tools.tool(refund_order)` makes a tool whose schema comes
from that signature, and whose calls go through the gateway.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import tollgate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default=os.environ.get("TOLLGATE_URL", "http://127.0.0.1:8080"))
    ap.add_argument("--key", required=True, help="the agent's key (a JWK file)")
    ap.add_argument("--agent", default="agent-demo")
    ap.add_argument("--delegation", default="dlg_demo")
    args = ap.parse_args()
    client = tollgate.Client(
        args.url,
        agent=args.agent,
        delegation=args.delegation,
        key=tollgate.AgentKey.load(args.key),
    )

    @tollgate.governed(client, action="orders.refund", resource="order:{order_id}")
    def refund_order(order_id: str, amount_minor: int, currency: str = "EUR") -> str:
        """Refund part or all of a paid order, in minor units of its currency."""
        # The real work would go here; it runs only once the gateway passed it.
        return f"refunded {amount_minor} {currency} on {order_id}"

    run: Any = refund_order
    try:
        from langchain_core.tools import tool  # type: ignore[import-not-found,unused-ignore]

        run = tool(refund_order)
    except ImportError:
        pass

    for order_id, amount in [("o-1001", 2500), ("o-1003", 2500), ("o-1002", 99_900)]:
        call: dict[str, Any] = {"order_id": order_id, "amount_minor": amount}
        try:
            said = run.invoke(call) if hasattr(run, "invoke") else run(**call)
            print(f"ran: {said}")
        except tollgate.Blocked as e:
            print(f"blocked: {e}")
        except tollgate.Escalated as e:
            print(f"escalated: {e}")
    client.close()


if __name__ == "__main__":
    main()
