"""Agents submit signed intents and wait for escalated ones; reviewers
approve or deny. Synchronous (`Client`) and asynchronous (`AsyncClient`)
with the same methods and the same retries."""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import re
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from ._wire import (
    APPROVAL_DOMAIN,
    APPROVAL_TYPE,
    INTENT_DOMAIN,
    INTENT_TYPE,
    canonical,
    intent_hash,
    now,
)
from .errors import (
    IdempotencyConflict,
    ProblemError,
    TollgateError,
    Unreachable,
    problem_error,
)
from .keys import AgentKey
from .receipt import Receipt

if TYPE_CHECKING:
    from typing_extensions import Self

#: The longest wait the gateway grants one long-poll (seconds).
MAX_WAIT = 60
#: Statuses after which nothing more happens to an intent.
_PENDING = ("pending_approval", "unknown")


def _retry_after(headers: httpx.Headers, default: float = 1.0) -> float:
    """The pause a `Retry-After` (seconds) asks for, between 0.1 and 60 s
    (never a busy loop), with up to 20 % jitter."""
    try:
        asked = float(headers.get("retry-after", default))
    except ValueError:
        asked = default
    if math.isnan(asked):
        asked = default
    return min(max(asked, 0.1), 60.0) * (1 + random.random() / 5)


def _problem(resp: httpx.Response) -> ProblemError:
    try:
        body = resp.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {"type": "", "title": resp.reason_phrase, "detail": resp.text[:500]}
    return problem_error(resp.status_code, body)


def _retryable(resp: httpx.Response) -> bool:
    """What the gateway says to send again: `409 in-flight` (the same
    intent is being decided now), `503` and `429`."""
    if resp.status_code in (429, 503):
        return True
    if resp.status_code == 409:
        try:
            body = resp.json()
        except ValueError:
            return False
        return isinstance(body, dict) and str(body.get("type", "")).endswith(":in-flight")
    return False


_IDENTIFIER = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def _identifier(what: str, value: str) -> str:
    """`value` if it is a protocol identifier (spec §3.2) that is also a
    safe file name (not `.` or `..`); else `ValueError`."""
    if not _IDENTIFIER.fullmatch(value) or set(value) == {"."}:
        raise ValueError(f"{what} {value!r} is not 1–128 of [A-Za-z0-9._:-]")
    return value


def _receipt_id(value: str) -> str:
    if not re.fullmatch(r"rcpt_[0-9a-f]{32}", value):
        raise ValueError(f"{value!r} is not a receipt id (rcpt_ and 32 hex digits)")
    return value


class _Agent:
    """What both clients share: the intent, its envelope and where it is
    kept."""

    def __init__(
        self,
        url: str,
        *,
        agent: str,
        delegation: str,
        key: AgentKey,
        envelope_dir: str | os.PathLike[str] | None,
        read_token: str | None,
        give_up_after: float,
    ) -> None:
        self.url = url.rstrip("/")
        self.agent = _identifier("agent", agent)
        self.delegation = _identifier("delegation", delegation)
        self.key = key
        self.envelope_dir = None if envelope_dir is None else Path(envelope_dir)
        self.give_up_after = give_up_after
        self.headers = {"authorization": f"Bearer {read_token}"} if read_token else {}

    def payload(
        self,
        action: str,
        resource: str,
        params: dict[str, Any],
        intent_id: str,
        confidence_bp: int | None,
        trace: dict[str, str] | None,
    ) -> dict[str, Any]:
        p: dict[str, Any] = {
            "type": INTENT_TYPE,
            "intent_id": intent_id,
            "agent": self.agent,
            "delegation": self.delegation,
            "action": action,
            "resource": resource,
            "params": params,
            "issued_at": now(),
        }
        if confidence_bp is not None:
            p["decision"] = {"confidence_bp": confidence_bp}
        if trace:
            p["trace"] = dict(trace)
        return p

    def envelope_bytes(self, intent_id: str, make: Any) -> bytes:
        """The envelope's bytes: the kept ones for `intent_id` if there are,
        else new ones (`make()`), kept before they are sent. Two writers of
        one intent agree: the first file linked wins, and both send its
        bytes."""
        if self.envelope_dir is None:
            return bytes(make())
        folder = self.envelope_dir / self.agent
        path = folder / f"{intent_id}.json"
        if path.exists():
            return self.kept(path, make)
        folder.mkdir(parents=True, exist_ok=True)
        body = bytes(make())
        tmp = folder / f".{intent_id}.{uuid.uuid4().hex}.tmp"
        with open(tmp, "wb") as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            # Another writer kept its envelope first: send that one, if it
            # is the same intent.
            return self.kept(path, make)
        finally:
            tmp.unlink()
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return body

    @staticmethod
    def kept(path: Path, make: Any) -> bytes:
        """The envelope kept at `path`, if it is for the intent `make` would
        sign (the same agent, delegation, action, resource, params,
        decision and trace; `issued_at` and the signature may differ):
        sending it again gets the first answer. Another intent under the
        same id is refused here, as the gateway would refuse it."""
        body = path.read_bytes()
        try:
            kept = json.loads(body)["payload"]
        except (ValueError, KeyError, TypeError) as e:
            raise TollgateError(f"{path}: not a signed intent envelope ({e})") from e
        wanted = json.loads(make())["payload"]
        fields = ("agent", "delegation", "action", "resource", "params", "decision", "trace")
        differ = [f for f in fields if kept.get(f) != wanted.get(f)]
        if differ:
            raise IdempotencyConflict(
                409,
                {
                    "type": "urn:tollgate:problem:idempotency-conflict",
                    "title": "Idempotency key reused",
                    "detail": f"intent {kept.get('intent_id')} was kept in {path} for another "
                    f"intent (its {', '.join(differ)} differ); an intent id is used once",
                },
            )
        return body

    def intent_body(
        self,
        action: str,
        resource: str,
        params: dict[str, Any],
        intent_id: str | None,
        confidence_bp: int | None,
        trace: dict[str, str] | None,
    ) -> tuple[str, bytes]:
        iid = _identifier("intent_id", intent_id or f"i-{uuid.uuid4().hex}")

        def make() -> bytes:
            p = self.payload(action, resource, params, iid, confidence_bp, trace)
            return canonical(self.key.envelope(INTENT_DOMAIN, p))

        return iid, self.envelope_bytes(iid, make)


def _json(resp: httpx.Response) -> Any:
    """The answer's JSON, or `TollgateError` naming what came instead."""
    try:
        return resp.json()
    except ValueError as e:
        raise TollgateError(
            f"the gateway answered {resp.status_code} with a body that is not JSON: {e}"
        ) from e


def _answer(resp: httpx.Response) -> Receipt:
    entry = _json(resp)
    if not isinstance(entry, dict) or not isinstance(entry.get("receipt"), dict):
        raise TollgateError("the gateway's answer is not a ledger entry")
    return Receipt.from_entry(entry, resp.headers.get("idempotent-replayed") == "true")


class Client(_Agent):
    """An agent's client of one gateway.

    ``Client(url, agent=…, delegation=…, key=AgentKey.load(…))``. With
    ``envelope_dir``, each signed intent is kept there (``AGENT/ID.json``)
    before it is sent, so that submitting the same ``intent_id`` again, from
    this process or another, sends the same bytes."""

    def __init__(
        self,
        url: str,
        *,
        agent: str,
        delegation: str,
        key: AgentKey,
        envelope_dir: str | os.PathLike[str] | None = None,
        timeout: float = 30.0,
        read_token: str | None = None,
        give_up_after: float = 120.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(
            url,
            agent=agent,
            delegation=delegation,
            key=key,
            envelope_dir=envelope_dir,
            read_token=read_token,
            give_up_after=give_up_after,
        )
        self.http = httpx.Client(timeout=timeout, transport=transport)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _post(self, path: str, body: bytes) -> httpx.Response:
        deadline = time.monotonic() + self.give_up_after
        pause = 0.2
        while True:
            try:
                resp = self.http.post(
                    self.url + path, content=body, headers={"content-type": "application/json"}
                )
            except httpx.TransportError as e:
                if time.monotonic() >= deadline:
                    raise Unreachable(f"{self.url}: {e}") from e
                time.sleep(pause * (1 + random.random()))
                pause = min(pause * 2, 5.0)
                continue
            if _retryable(resp) and time.monotonic() < deadline:
                time.sleep(_retry_after(resp.headers))
                continue
            return resp

    def _get(self, path: str, timeout: float | None = None) -> httpx.Response:
        deadline = time.monotonic() + self.give_up_after
        while True:
            try:
                kwargs: dict[str, Any] = {"headers": self.headers}
                if timeout is not None:
                    kwargs["timeout"] = timeout
                resp = self.http.get(self.url + path, **kwargs)
            except httpx.TransportError as e:
                if time.monotonic() >= deadline:
                    raise Unreachable(f"{self.url}: {e}") from e
                time.sleep(0.5)
                continue
            if resp.status_code in (429, 503) and time.monotonic() < deadline:
                time.sleep(_retry_after(resp.headers))
                continue
            return resp

    def submit(
        self,
        action: str,
        resource: str,
        params: dict[str, Any],
        *,
        intent_id: str | None = None,
        confidence_bp: int | None = None,
        trace: dict[str, str] | None = None,
    ) -> Receipt:
        """Signs and submits an intent; its receipt once it is durable."""
        iid, body = self.intent_body(action, resource, params, intent_id, confidence_bp, trace)
        try:
            resp = self._post("/v1/intents", body)
        except Unreachable as e:
            e.intent_id = iid
            raise
        if resp.status_code != 200:
            raise _problem(resp)
        return _answer(resp)

    def state(self, intent_id: str, wait: int = 0) -> dict[str, Any]:
        """Where the intent stands (`GET /v1/intents/{agent}/{intent_id}`)."""
        path = f"/v1/intents/{self.agent}/{_identifier('intent_id', intent_id)}?wait={wait}"
        resp = self._get(path, timeout=wait + 30)
        if resp.status_code != 200:
            raise _problem(resp)
        value: dict[str, Any] = _json(resp)
        return value

    def receipt(self, receipt_id: str) -> Receipt:
        """The entry of a receipt (`GET /v1/receipts/{id}`)."""
        resp = self._get(f"/v1/receipts/{_receipt_id(receipt_id)}")
        if resp.status_code != 200:
            raise _problem(resp)
        return Receipt.from_entry(_json(resp))

    def wait(self, intent_id: str, timeout: float = 60.0) -> Receipt:
        """Waits (long-polls) until the escalated intent is decided or
        `timeout` passes; the last receipt of its story (the execution, or
        the approval receipt that denied it or expired)."""
        deadline = time.monotonic() + timeout
        while True:
            left = int(max(0, min(MAX_WAIT, deadline - time.monotonic())))
            state = self.state(intent_id, left)
            if state["status"] not in _PENDING or left == 0:
                return self.receipt(state["receipts"][-1])


class AsyncClient(_Agent):
    """`Client`, awaitable (``await client.submit(…)``)."""

    def __init__(
        self,
        url: str,
        *,
        agent: str,
        delegation: str,
        key: AgentKey,
        envelope_dir: str | os.PathLike[str] | None = None,
        timeout: float = 30.0,
        read_token: str | None = None,
        give_up_after: float = 120.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            url,
            agent=agent,
            delegation=delegation,
            key=key,
            envelope_dir=envelope_dir,
            read_token=read_token,
            give_up_after=give_up_after,
        )
        self.http = httpx.AsyncClient(timeout=timeout, transport=transport)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _post(self, path: str, body: bytes) -> httpx.Response:
        deadline = time.monotonic() + self.give_up_after
        pause = 0.2
        while True:
            try:
                resp = await self.http.post(
                    self.url + path, content=body, headers={"content-type": "application/json"}
                )
            except httpx.TransportError as e:
                if time.monotonic() >= deadline:
                    raise Unreachable(f"{self.url}: {e}") from e
                await asyncio.sleep(pause * (1 + random.random()))
                pause = min(pause * 2, 5.0)
                continue
            if _retryable(resp) and time.monotonic() < deadline:
                await asyncio.sleep(_retry_after(resp.headers))
                continue
            return resp

    async def _get(self, path: str, timeout: float | None = None) -> httpx.Response:
        deadline = time.monotonic() + self.give_up_after
        while True:
            try:
                kwargs: dict[str, Any] = {"headers": self.headers}
                if timeout is not None:
                    kwargs["timeout"] = timeout
                resp = await self.http.get(self.url + path, **kwargs)
            except httpx.TransportError as e:
                if time.monotonic() >= deadline:
                    raise Unreachable(f"{self.url}: {e}") from e
                await asyncio.sleep(0.5)
                continue
            if resp.status_code in (429, 503) and time.monotonic() < deadline:
                await asyncio.sleep(_retry_after(resp.headers))
                continue
            return resp

    async def submit(
        self,
        action: str,
        resource: str,
        params: dict[str, Any],
        *,
        intent_id: str | None = None,
        confidence_bp: int | None = None,
        trace: dict[str, str] | None = None,
    ) -> Receipt:
        """Signs and submits an intent; its receipt once it is durable."""
        iid, body = self.intent_body(action, resource, params, intent_id, confidence_bp, trace)
        try:
            resp = await self._post("/v1/intents", body)
        except Unreachable as e:
            e.intent_id = iid
            raise
        if resp.status_code != 200:
            raise _problem(resp)
        return _answer(resp)

    async def state(self, intent_id: str, wait: int = 0) -> dict[str, Any]:
        """Where the intent stands (`GET /v1/intents/{agent}/{intent_id}`)."""
        path = f"/v1/intents/{self.agent}/{_identifier('intent_id', intent_id)}?wait={wait}"
        resp = await self._get(path, timeout=wait + 30)
        if resp.status_code != 200:
            raise _problem(resp)
        value: dict[str, Any] = _json(resp)
        return value

    async def receipt(self, receipt_id: str) -> Receipt:
        """The entry of a receipt (`GET /v1/receipts/{id}`)."""
        resp = await self._get(f"/v1/receipts/{_receipt_id(receipt_id)}")
        if resp.status_code != 200:
            raise _problem(resp)
        return Receipt.from_entry(_json(resp))

    async def wait(self, intent_id: str, timeout: float = 60.0) -> Receipt:
        """Waits until the escalated intent is decided or `timeout` passes;
        the last receipt of its story."""
        deadline = time.monotonic() + timeout
        while True:
            left = int(max(0, min(MAX_WAIT, deadline - time.monotonic())))
            state = await self.state(intent_id, left)
            if state["status"] not in _PENDING or left == 0:
                return await self.receipt(state["receipts"][-1])


class Reviewer:
    """A reviewer with a key file: lists pending approvals and grants or
    denies them, signing here (the key never leaves this machine), after
    checking that the approval's intent hash is that of the intent the
    gateway shows."""

    def __init__(
        self,
        key: AgentKey,
        reviewer_id: str,
        client: str | Client | AsyncClient,
        *,
        read_token: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.key = key
        self.reviewer_id = reviewer_id
        self.url = (client if isinstance(client, str) else client.url).rstrip("/")
        self.headers = {"authorization": f"Bearer {read_token}"} if read_token else {}
        self.http = httpx.Client(timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def pending(self) -> list[dict[str, Any]]:
        """The approvals waiting for reviewers."""
        resp = self.http.get(
            self.url + "/v1/approvals?status=pending_approval", headers=self.headers
        )
        if resp.status_code != 200:
            raise _problem(resp)
        items: list[dict[str, Any]] = _json(resp)["approvals"]
        return items

    def approve(
        self, approval_id: str, reason: str, *, intent_hash: str | None = None
    ) -> dict[str, Any]:
        """Grants the approval; the approval after it. With `intent_hash`
        (from what the reviewer was shown, e.g. `pending()`), it signs only
        if the approval is still about exactly that intent."""
        return self._decide(approval_id, "grant", reason, intent_hash)

    def deny(
        self, approval_id: str, reason: str, *, intent_hash: str | None = None
    ) -> dict[str, Any]:
        """Denies the approval; the approval after it (`intent_hash` as
        for `approve`)."""
        return self._decide(approval_id, "deny", reason, intent_hash)

    def _decide(
        self, approval_id: str, verdict: str, reason: str, pinned: str | None
    ) -> dict[str, Any]:
        resp = self.http.get(
            f"{self.url}/v1/approvals/{_receipt_id(approval_id)}", headers=self.headers
        )
        if resp.status_code != 200:
            raise _problem(resp)
        approval = _json(resp)
        shown = intent_hash(approval["intent"])
        if shown != approval["intent_hash"]:
            raise TollgateError(
                f"approval {approval_id} names intent {approval['intent_hash']}, "
                f"and the intent shown hashes to {shown}: not signing"
            )
        if pinned is not None and pinned != shown:
            raise TollgateError(
                f"approval {approval_id} is about intent {shown}, not the {pinned} "
                "the reviewer was shown: not signing"
            )
        payload = {
            "type": APPROVAL_TYPE,
            "approval": approval_id,
            "intent_hash": approval["intent_hash"],
            "policy_version": approval["policy_version"],
            "reviewer": self.reviewer_id,
            "verdict": verdict,
            "reason": reason,
            "issued_at": now(),
        }
        body = canonical(self.key.envelope(APPROVAL_DOMAIN, payload))
        resp = self.http.post(
            f"{self.url}/v1/approvals/{approval_id}/decisions",
            content=body,
            headers={"content-type": "application/json"},
        )
        if resp.status_code != 201:
            raise _problem(resp)
        after: dict[str, Any] = _json(resp)["approval"]
        return after
