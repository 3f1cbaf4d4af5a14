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

    def state_path(self, intent_id: str, wait: int) -> str:
        return f"/v1/intents/{self.agent}/{_identifier('intent_id', intent_id)}?wait={wait}"

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


class _Retry:
    """When to send a request again, the same for both clients: after a
    transport error (growing, jittered pauses) and after the answers
    `retryable` accepts (their `Retry-After`), until `give_up_after`
    seconds have passed."""

    def __init__(self, url: str, give_up_after: float) -> None:
        self.url = url
        self.deadline = time.monotonic() + give_up_after
        self.pause = 0.2

    def after_error(self, error: httpx.TransportError) -> float:
        """The pause before trying again, or `Unreachable` once it is time
        to give up."""
        if time.monotonic() >= self.deadline:
            raise Unreachable(f"{self.url}: {error}") from error
        pause = self.pause * (1 + random.random())
        self.pause = min(self.pause * 2, 5.0)
        return pause

    def after_answer(self, resp: httpx.Response, retryable: Any) -> float | None:
        """The pause before sending again, or `None`: the answer is final."""
        if retryable(resp) and time.monotonic() < self.deadline:
            return _retry_after(resp.headers)
        return None


def _busy(resp: httpx.Response) -> bool:
    """What a read retries: `503` and `429`."""
    return resp.status_code in (429, 503)


def _state(resp: httpx.Response) -> dict[str, Any]:
    if resp.status_code != 200:
        raise _problem(resp)
    value: dict[str, Any] = _json(resp)
    return value


def _entry(resp: httpx.Response) -> Receipt:
    if resp.status_code != 200:
        raise _problem(resp)
    return Receipt.from_entry(_json(resp))


def _submitted(resp: httpx.Response) -> Receipt:
    if resp.status_code != 200:
        raise _problem(resp)
    return _answer(resp)


def _settled(state: dict[str, Any], left: int) -> str | None:
    """The receipt to return from a wait, once the intent is decided or the
    time is up; `None` to ask again."""
    if state["status"] not in _PENDING or left == 0:
        return str(state["receipts"][-1])
    return None


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

    def _send(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        timeout: float | None = None,
        retryable: Any = _busy,
    ) -> httpx.Response:
        retry = _Retry(self.url, self.give_up_after)
        headers = dict(self.headers)
        if body is not None:
            headers["content-type"] = "application/json"
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        while True:
            try:
                resp = self.http.request(
                    method, self.url + path, content=body, headers=headers, **extra
                )
            except httpx.TransportError as e:
                time.sleep(retry.after_error(e))
                continue
            pause = retry.after_answer(resp, retryable)
            if pause is None:
                return resp
            time.sleep(pause)

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
            resp = self._send("POST", "/v1/intents", body=body, retryable=_retryable)
        except Unreachable as e:
            e.intent_id = iid
            raise
        return _submitted(resp)

    def state(self, intent_id: str, wait: int = 0) -> dict[str, Any]:
        """Where the intent stands (`GET /v1/intents/{agent}/{intent_id}`)."""
        return _state(self._send("GET", self.state_path(intent_id, wait), timeout=wait + 30))

    def receipt(self, receipt_id: str) -> Receipt:
        """The entry of a receipt (`GET /v1/receipts/{id}`)."""
        return _entry(self._send("GET", f"/v1/receipts/{_receipt_id(receipt_id)}"))

    def wait(self, intent_id: str, timeout: float = 60.0) -> Receipt:
        """Waits (long-polls) until the escalated intent is decided or
        `timeout` passes; the last receipt of its story (the execution, or
        the approval receipt that denied it or expired)."""
        deadline = time.monotonic() + timeout
        while True:
            left = int(max(0, min(MAX_WAIT, deadline - time.monotonic())))
            last = _settled(self.state(intent_id, left), left)
            if last is not None:
                return self.receipt(last)


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

    async def _send(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        timeout: float | None = None,
        retryable: Any = _busy,
    ) -> httpx.Response:
        retry = _Retry(self.url, self.give_up_after)
        headers = dict(self.headers)
        if body is not None:
            headers["content-type"] = "application/json"
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        while True:
            try:
                resp = await self.http.request(
                    method, self.url + path, content=body, headers=headers, **extra
                )
            except httpx.TransportError as e:
                await asyncio.sleep(retry.after_error(e))
                continue
            pause = retry.after_answer(resp, retryable)
            if pause is None:
                return resp
            await asyncio.sleep(pause)

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
            resp = await self._send("POST", "/v1/intents", body=body, retryable=_retryable)
        except Unreachable as e:
            e.intent_id = iid
            raise
        return _submitted(resp)

    async def state(self, intent_id: str, wait: int = 0) -> dict[str, Any]:
        """Where the intent stands (`GET /v1/intents/{agent}/{intent_id}`)."""
        resp = await self._send("GET", self.state_path(intent_id, wait), timeout=wait + 30)
        return _state(resp)

    async def receipt(self, receipt_id: str) -> Receipt:
        """The entry of a receipt (`GET /v1/receipts/{id}`)."""
        return _entry(await self._send("GET", f"/v1/receipts/{_receipt_id(receipt_id)}"))

    async def wait(self, intent_id: str, timeout: float = 60.0) -> Receipt:
        """Waits until the escalated intent is decided or `timeout` passes;
        the last receipt of its story."""
        deadline = time.monotonic() + timeout
        while True:
            left = int(max(0, min(MAX_WAIT, deadline - time.monotonic())))
            last = _settled(await self.state(intent_id, left), left)
            if last is not None:
                return await self.receipt(last)


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
