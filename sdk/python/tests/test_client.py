"""The SDK against a real gateway: verdicts, rules and reasons, replays,
racing submitters, refusals as typed errors, and an escalated intent
woken by a reviewer's signed approval."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import Gateway

import tollgate

EUR = "EUR"


def refund(amount: int) -> dict[str, object]:
    return {"amount_minor": amount, "currency": EUR}


def test_pass_block_and_escalate_with_their_rules(gateway: Gateway) -> None:
    with gateway.client() as c:
        small = c.submit("orders.refund", "order:o-1001", refund(2500))
        assert (small.kind, small.verdict, small.outcome) == ("decision", "pass", "committed")
        assert small.receipt_id.startswith("rcpt_") and not small.replayed
        blocked = c.submit("orders.refund", "order:o-1003", refund(2500))
        assert blocked.verdict == "block" and blocked.outcome == "not_executed"
        assert any(r.effect == "block" and r.reason for r in blocked.rules), blocked.rules
        large = c.submit("orders.refund", "order:o-1002", refund(99_900), confidence_bp=9000)
        assert large.verdict == "escalate" and large.outcome == "pending_approval"
        escalating = [r for r in large.rules if r.effect == "escalate"]
        assert escalating and "999.00 EUR" in escalating[0].reason, large.rules
        assert large.policy_version.startswith("refunds@")


def test_the_same_intent_again_is_the_stored_answer(gateway: Gateway, tmp_path: Path) -> None:
    with gateway.client(envelope_dir=tmp_path) as c:
        first = c.submit("orders.refund", "order:o-1001", refund(100), intent_id="sdk-replay")
        kept = (tmp_path / "agent-demo" / "sdk-replay.json").read_bytes()
        again = c.submit("orders.refund", "order:o-1001", refund(100), intent_id="sdk-replay")
    assert again.replayed and again.receipt_id == first.receipt_id
    assert again.entry == first.entry
    # Another process (another client) with the same folder sends the
    # same bytes.
    with gateway.client(envelope_dir=tmp_path) as other:
        third = other.submit("orders.refund", "order:o-1001", refund(100), intent_id="sdk-replay")
    assert third.receipt_id == first.receipt_id
    assert (tmp_path / "agent-demo" / "sdk-replay.json").read_bytes() == kept


def test_thirty_two_threads_submitting_one_intent_make_one_decision(
    gateway: Gateway, tmp_path: Path
) -> None:
    barrier = threading.Barrier(32)

    def submit(_: int) -> tollgate.Receipt:
        with gateway.client(envelope_dir=tmp_path) as c:
            barrier.wait()
            return c.submit("orders.refund", "order:o-1001", refund(200), intent_id="sdk-race")

    with ThreadPoolExecutor(32) as pool:
        receipts = list(pool.map(submit, range(32)))
    assert len({r.receipt_id for r in receipts}) == 1
    assert sum(not r.replayed for r in receipts) <= 1
    export = gateway.export().decode()
    assert export.count('"intent_id":"sdk-race"') == 1


def test_a_used_intent_id_with_other_bytes_is_a_typed_refusal(gateway: Gateway) -> None:
    with gateway.client() as c:
        c.submit("orders.refund", "order:o-1001", refund(300), intent_id="sdk-once")
        with pytest.raises(tollgate.IdempotencyConflict) as e:
            c.submit("orders.refund", "order:o-1001", refund(301), intent_id="sdk-once")
        assert e.value.status == 409 and e.value.slug == "idempotency-conflict"
    with tollgate.Client(
        gateway.url, agent="agent-demo", delegation="dlg_nope", key=gateway.agent_key()
    ) as c:
        with pytest.raises(tollgate.DelegationRefused) as d:
            c.submit("orders.refund", "order:o-1001", refund(300))
        assert d.value.slug == "unknown-delegation" and "dlg_nope" in d.value.detail
    with gateway.client() as c, pytest.raises(tollgate.InvalidIntent):
        c.submit("orders.refund", "order:o-1001", {"amount_minor": "lots"})
    # Another key than the delegation's agent key.
    with (
        tollgate.Client(
            gateway.url, agent="agent-demo", delegation="dlg_demo", key=tollgate.AgentKey.generate()
        ) as c,
        pytest.raises(tollgate.BadSignature),
    ):
        c.submit("orders.refund", "order:o-1001", refund(300))


def test_wait_is_woken_by_a_reviewers_signed_approval(gateway: Gateway) -> None:
    reviewer_key = tollgate.AgentKey.load(gateway.data / "demo" / "reviewer.jwk")
    gateway.register_reviewer("rev-demo", reviewer_key)
    with gateway.client() as c:
        large = c.submit("orders.refund", "order:o-1002", refund(99_900), intent_id="sdk-wait")
        assert large.outcome == "pending_approval"
        woken: list[tollgate.Receipt] = []
        waiter = threading.Thread(target=lambda: woken.append(c.wait("sdk-wait", timeout=60)))
        waiter.start()
        reviewer = tollgate.Reviewer(reviewer_key, "rev-demo", c)
        assert large.receipt_id in [a["id"] for a in reviewer.pending()]
        after = reviewer.approve(large.receipt_id, "checked with the customer")
        assert after["status"] == "approved"
        waiter.join(90)
        assert woken, "the wait did not return"
        final = woken[0]
        assert (final.kind, final.outcome) == ("execution", "committed")
        state = c.state("sdk-wait")
        assert state["approval"]["steps"][0]["reason"] == "checked with the customer"
        reviewer.close()


def test_the_async_client_submits_replays_and_waits_the_same(
    gateway: Gateway, tmp_path: Path
) -> None:
    async def run() -> tuple[tollgate.Receipt, tollgate.Receipt, tollgate.Receipt]:
        async with tollgate.AsyncClient(
            gateway.url,
            agent="agent-demo",
            delegation="dlg_demo",
            key=gateway.agent_key(),
            envelope_dir=tmp_path,
        ) as c:
            r = await c.submit("orders.refund", "order:o-1001", refund(400), intent_id="sdk-async")
            again = await c.submit(
                "orders.refund", "order:o-1001", refund(400), intent_id="sdk-async"
            )
            # A decided intent: wait answers at once with its receipt.
            waited = await c.wait("sdk-async", timeout=5)
            return r, again, waited

    first, second, waited = asyncio.run(run())
    assert first.verdict == "pass" and not first.replayed
    assert second.replayed and second.receipt_id == first.receipt_id
    assert waited.receipt_id == first.receipt_id


def test_ids_that_are_not_identifiers_are_refused_before_anything_is_written(
    gateway: Gateway, tmp_path: Path
) -> None:
    with gateway.client(envelope_dir=tmp_path) as c:
        for bad in ["..", "a/b", "x" * 129, "é"]:
            with pytest.raises(ValueError, match="intent_id"):
                c.submit("orders.refund", "order:o-1001", refund(1), intent_id=bad)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="agent"):
        tollgate.Client(gateway.url, agent="..", delegation="dlg_demo", key=gateway.agent_key())
    # A receipt reads as one line and its rules.
    with gateway.client() as c:
        told = str(c.submit("orders.refund", "order:o-1003", refund(1)))
    assert told.startswith("decision block not_executed rcpt_") and "\n  block " in told


def test_keys_round_trip_and_thumbprints_are_rfc7638(tmp_path: Path) -> None:
    key = tollgate.AgentKey.generate()
    key.save(tmp_path / "k.jwk")
    again = tollgate.AgentKey.load(tmp_path / "k.jwk")
    assert again.kid == key.kid == tollgate.thumbprint(key.public_jwk)
    # RFC 8037 appendix A.3's thumbprint.
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
    assert tollgate.thumbprint(jwk) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
