"""Hostile and broken inputs, from an outside review: the verifiers refuse
(never crash on, never accept) what the spec refuses; the clients and the
decorator never run or resend what they should not."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import rfc8785
from conftest import Gateway

import tollgate
from tollgate import webhooks


@pytest.fixture(scope="module")
def ledger(gateway: Gateway) -> tuple[list[dict[str, Any]], dict[str, Any], tollgate.AgentKey]:
    with gateway.client() as c:
        c.submit("orders.refund", "order:o-1001", {"amount_minor": 11, "currency": "EUR"})
        c.submit("orders.refund", "order:o-1002", {"amount_minor": 99_900, "currency": "EUR"})
    entries = [json.loads(line) for line in gateway.export().splitlines()]
    jwks = httpx.get(gateway.url + "/.well-known/jwks.json").json()
    return entries, jwks, tollgate.AgentKey.load(gateway.data / "gateway.jwk")


def reseal(entries: list[dict[str, Any]], key: tollgate.AgentKey) -> bytes:
    """The export of `entries`, each receipt re-identified and re-signed
    with the gateway's own key and the chain rebuilt (spec §4.4, §5.2)."""
    out, prev = [], "sha256:" + "0" * 64
    for e in entries:
        r = dict(e["receipt"])
        r.pop("receipt_id", None)
        digest = hashlib.sha256(b"tollgate.receipt-id.v1\n" + rfc8785.dumps(r)).hexdigest()
        r["receipt_id"] = "rcpt_" + digest[:32]
        entry = {k: v for k, v in e.items() if k not in ("hash", "receipt", "signature", "prev")}
        entry.update(prev=prev, receipt=r, signature=key.sign("tollgate.receipt.v1", r))
        entry["hash"] = (
            "sha256:" + hashlib.sha256(b"tollgate.chain.v1\n" + rfc8785.dumps(entry)).hexdigest()
        )
        prev = entry["hash"]
        out.append(rfc8785.dumps(entry) + b"\n")
    return b"".join(out)


def test_the_resealed_export_is_valid_and_each_doctoring_is_refused(ledger: Any) -> None:
    entries, jwks, key = ledger
    assert tollgate.verify_export(reseal(entries, key), jwks).valid

    def doctored(i: int, change: Any) -> tollgate.Report:
        copy = json.loads(json.dumps(entries))
        change(copy[i])
        return tollgate.verify_export(reseal(copy, key), jwks)

    last = len(entries) - 1
    for name, i, change in [
        ("a loose appended_at", 0, lambda e: e.update(appended_at="yesterday")),
        ("a loose issued_at", last, lambda e: e["receipt"].update(issued_at="2026-12-7T10:00:00Z")),
        ("another receipt type", 0, lambda e: e["receipt"].update(type="tollgate.receipt/v2")),
        (
            "a loose deadline",
            last,
            lambda e: e["receipt"]["outcome"]["review"].update(deadline="whenever"),
        ),
    ]:
        report = doctored(i, change)
        assert not report.valid, name

    base = reseal(entries, key).splitlines(keepends=True)

    def line_changed(i: int, change: Any) -> bytes:
        e = json.loads(base[i])
        change(e)
        return b"".join(base[:i] + [rfc8785.dumps(e) + b"\n"] + base[i + 1 :])

    for name, export in [
        ("empty", b""),
        ("seq true", line_changed(0, lambda e: e.update(seq=True))),
        (
            "padded signature",
            line_changed(0, lambda e: e["signature"].update(sig=e["signature"]["sig"] + "==")),
        ),
        ("an extra signature member", line_changed(0, lambda e: e["signature"].update(x=1))),
    ]:
        assert not tollgate.verify_export(export, jwks).valid, name


@pytest.mark.parametrize(
    "line",
    [
        b'{"seq":123456789012345678901234567890}',
        b'{"seq":1e400}',
        b'{"a":"\\ud800"}',
        b"[" * 100_000 + b"]" * 100_000,
        b"\xff\xfe",
        b"garbage",
    ],
)
def test_garbage_is_reported_never_raised(ledger: Any, line: bytes) -> None:
    _, jwks, _ = ledger
    report = tollgate.verify_export(line + b"\n", jwks)
    assert not report.valid and report.first_bad_seq == 1
    assert not tollgate.verify_receipt(line, jwks).valid
    assert not tollgate.verify_export(b"{}\n", {"keys": [{"kty": "nope"}]}).valid


def test_malformed_checkpoints_and_proofs_are_checkpoint_errors() -> None:
    for key, note in [("garbage", "x\n\n— x AAAA\n"), ("a+b+", "x\n"), ("a+b+!!", "x\n")]:
        with pytest.raises(tollgate.CheckpointError):
            tollgate.verify_checkpoint(note, key)
    cp = tollgate.Checkpoint(2, b"\0" * 32, "sha256:" + "0" * 64, frozenset())
    with pytest.raises(tollgate.CheckpointError):
        tollgate.verify_inclusion(b"{}", 1, ["!!"], cp)
    assert not tollgate.verify_inclusion(b"{}", 1, [base64.b64encode(b"\0" * 31).decode()], cp)


def test_webhook_inputs_an_unauthenticated_sender_controls_are_refused() -> None:
    secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    for ts in ["²", "9" * 400, "٣٤٥", "-1", ""]:
        headers = {"webhook-id": "msg_1", "webhook-timestamp": ts, "webhook-signature": "v1,AA=="}
        with pytest.raises(webhooks.WebhookVerificationError):
            webhooks.verify(b"{}", headers, secret=secret)
    with pytest.raises(ValueError):
        webhooks.verify(b"{}", {}, secret="whsec_")
    with pytest.raises(ValueError):
        webhooks.verify(b"{}", {}, secret=secret, tolerance=float("nan"))


def mock_client(handler: Any, tmp_path: Path | None = None) -> tollgate.Client:
    return tollgate.Client(
        "http://gateway.invalid",
        agent="agent-demo",
        delegation="dlg_demo",
        key=tollgate.AgentKey.generate(),
        envelope_dir=tmp_path,
        transport=httpx.MockTransport(handler),
        give_up_after=1.0,
    )


def entry_with(verdict: str, status: str) -> dict[str, Any]:
    return {
        "seq": 1,
        "receipt": {
            "kind": "decision",
            "receipt_id": "rcpt_" + "0" * 32,
            "decision": {"verdict": verdict, "rules": []},
            "outcome": {"status": status},
            "subject": {"payload": {"intent_id": "i-1"}},
        },
    }


def test_the_tool_never_runs_on_an_unknown_outcome() -> None:
    ran = []
    with mock_client(lambda r: httpx.Response(200, json=entry_with("pass", "unknown"))) as c:

        @tollgate.governed(c, action="orders.refund", resource="order:{order_id}")
        def refund(order_id: str, amount_minor: int) -> None:
            ran.append(order_id)

        with pytest.raises(tollgate.Indeterminate):
            refund("o-1", 5)
    assert ran == []


def test_odd_answers_are_errors_of_the_package() -> None:
    problem = mock_client(lambda r: httpx.Response(409, json=["not", "a", "problem"]))
    with problem as c, pytest.raises(tollgate.ProblemError):
        c.submit("orders.refund", "order:o-1", {})
    html = mock_client(lambda r: httpx.Response(200, content=b"<html>"))
    with html as c, pytest.raises(tollgate.TollgateError, match="not JSON"):
        c.submit("orders.refund", "order:o-1", {})


def test_a_kept_envelope_is_sent_again_only_for_the_same_intent(
    gateway: Gateway, tmp_path: Path
) -> None:
    with gateway.client(envelope_dir=tmp_path) as c:
        c.submit(
            "orders.refund", "order:o-1001", {"amount_minor": 25, "currency": "EUR"}, intent_id="k1"
        )
        with pytest.raises(tollgate.IdempotencyConflict, match="resource, params"):
            c.submit(
                "orders.refund",
                "order:o-1003",
                {"amount_minor": 5, "currency": "EUR"},
                intent_id="k1",
            )


def test_a_reviewer_signs_only_the_intent_it_was_shown(gateway: Gateway) -> None:
    reviewer_key = tollgate.AgentKey.load(gateway.data / "demo" / "reviewer.jwk")
    gateway.register_reviewer("rev-demo", reviewer_key)
    with gateway.client() as c:
        r = c.submit("orders.refund", "order:o-1002", {"amount_minor": 99_900, "currency": "EUR"})
        reviewer = tollgate.Reviewer(reviewer_key, "rev-demo", c)
        with pytest.raises(tollgate.TollgateError, match="not signing"):
            reviewer.approve(r.receipt_id, "ok", intent_hash="sha256:" + "1" * 64)
        shown = next(a for a in reviewer.pending() if a["id"] == r.receipt_id)
        after = reviewer.deny(r.receipt_id, "no", intent_hash=shown["intent_hash"])
        assert after["status"] == "denied"
        reviewer.close()


def test_timestamps_read_as_the_spec_says() -> None:
    from tollgate.verify import instant, timestamp, unix_seconds

    assert unix_seconds("2016-12-31T23:59:60Z") == unix_seconds("2017-01-01T00:00:00Z")
    assert instant("2016-12-31T23:59:60.5Z") == instant("2017-01-01T00:00:00.5Z")
    assert timestamp("2016-12-31T23:59:60Z", "t") is None
    for bad in ["2026-12-7T10:00:00Z", "2026-12-07T10:00:00", "2026-12-07T10:00:00.1234567890Z"]:
        assert timestamp(bad, "t") is not None, bad
