"""`tollgate.webhooks.verify`: the Standard Webhooks test vector, and real
deliveries from a gateway (v1 and v1a) verify while altered ones do not."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from conftest import Gateway

from tollgate import webhooks


def test_the_standard_webhooks_vector() -> None:
    # From the Standard Webhooks specification's libraries.
    headers = {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
    }
    body = b'{"test": 2432232314}'
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    assert webhooks.verify(body, headers, secret=secret, now=1614265330) == {"test": 2432232314}
    with pytest.raises(webhooks.WebhookVerificationError, match="timestamp"):
        webhooks.verify(body, headers, secret=secret, now=1614265330 + 301)
    with pytest.raises(webhooks.WebhookVerificationError, match="no v1 signature"):
        webhooks.verify(body + b" ", headers, secret=secret, now=1614265330)


class Sink:
    """An HTTP endpoint on loopback that keeps what it is sent."""

    def __init__(self) -> None:
        self.got: list[tuple[bytes, dict[str, str]]] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                sink.got.append((body, dict(self.headers.items())))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


def add_endpoint(gateway: Gateway, url: str, scheme: str) -> dict[str, Any]:
    r = httpx.post(
        gateway.url + "/v1/admin/webhooks",
        content=json.dumps({"url": url, "events": ["decision.*"], "scheme": scheme}),
        headers={
            "content-type": "application/json",
            "authorization": f"Bearer {gateway.admin_token}",
        },
    )
    assert r.status_code == 201, r.text
    answer: dict[str, Any] = r.json()
    return answer


@pytest.mark.parametrize("scheme", ["v1", "v1a"])
def test_real_deliveries_verify_and_altered_ones_do_not(gateway: Gateway, scheme: str) -> None:
    sink = Sink()
    endpoint = add_endpoint(gateway, sink.url, scheme)
    key = (
        {"secret": endpoint["secret"]} if scheme == "v1" else {"public_key": endpoint["public_key"]}
    )
    with gateway.client() as c:
        c.submit("orders.refund", "order:o-1001", {"amount_minor": 900, "currency": "EUR"})
    deadline = time.monotonic() + 30
    while not sink.got and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sink.got, "no delivery within 30 s"
    body, headers = sink.got[0]
    event = webhooks.verify(body, headers, **key)
    assert event["type"].startswith("decision.")
    with pytest.raises(webhooks.WebhookVerificationError):
        webhooks.verify(body.replace(b"decision", b"decisiom", 1), headers, **key)
    stale = dict(headers)
    stale["webhook-timestamp"] = str(int(headers["webhook-timestamp"]) - 3600)
    with pytest.raises(webhooks.WebhookVerificationError, match="timestamp"):
        webhooks.verify(body, stale, **key)
    sink.server.shutdown()
