"""Retries send the same bytes: after a connection dropped once the gateway
had decided, and after the clock-skew window has passed, the answer is the
first decision (replayed), never a second one."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx
from conftest import Gateway

import tollgate

REFUND = {"amount_minor": 500, "currency": "EUR"}


class DroppingProxy:
    """Forwards each connection to the gateway; on the first, it reads the
    gateway's answer and closes the client's connection instead of
    passing it on (a connection lost mid-answer)."""

    def __init__(self, target: str) -> None:
        host, port = target.removeprefix("http://").split(":")
        self.target = (host, int(port))
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.connections = 0
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(
                target=self.relay, args=(client, self.connections == 1), daemon=True
            ).start()

    @staticmethod
    def read_message(sock: socket.socket) -> bytes:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return head + b"\r\n\r\n" + body

    def relay(self, client: socket.socket, drop: bool) -> None:
        with client, socket.create_connection(self.target) as upstream:
            request = self.read_message(client)
            upstream.sendall(request)
            answer = self.read_message(upstream)
            if not drop:
                client.sendall(answer)

    def close(self) -> None:
        self.listener.close()


def decisions_of(gateway: Gateway, intent_id: str) -> int:
    export = httpx.get(gateway.url + "/v1/ledger/export").content.decode()
    return export.count(f'"intent_id":"{intent_id}"')


def test_a_connection_lost_after_the_decision_is_retried_and_answered_once(
    gateway: Gateway, tmp_path: Path
) -> None:
    proxy = DroppingProxy(gateway.url)
    with tollgate.Client(
        proxy.url,
        agent="agent-demo",
        delegation="dlg_demo",
        key=gateway.agent_key(),
        envelope_dir=tmp_path,
    ) as c:
        receipt = c.submit("orders.refund", "order:o-1001", REFUND, intent_id="sdk-dropped")
    proxy.close()
    assert proxy.connections >= 2
    assert receipt.replayed and receipt.verdict == "pass"
    assert decisions_of(gateway, "sdk-dropped") == 1


def test_the_same_bytes_after_the_skew_window_get_the_first_answer(
    short_skew_gateway: Gateway, tmp_path: Path
) -> None:
    with short_skew_gateway.client(envelope_dir=tmp_path) as c:
        first = c.submit("orders.refund", "order:o-1001", REFUND, intent_id="sdk-late")
        time.sleep(2.5)
        again = c.submit("orders.refund", "order:o-1001", REFUND, intent_id="sdk-late")
    assert again.replayed and again.receipt_id == first.receipt_id
    assert decisions_of(short_skew_gateway, "sdk-late") == 1
