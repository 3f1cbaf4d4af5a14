"""A real `tollgate serve` per test module: a fresh demo data folder on
loopback, the binary from `TOLLGATE_BIN` (the workspace's debug build by
default)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import tollgate

REPO = Path(__file__).resolve().parents[3]


def tollgate_bin() -> str:
    return os.environ.get("TOLLGATE_BIN", str(REPO / "target" / "debug" / "tollgate"))


class Gateway:
    def __init__(self, data: Path, process: subprocess.Popen[str], url: str) -> None:
        self.data = data
        self.process = process
        self.url = url

    @property
    def admin_token(self) -> str:
        return (self.data / "admin.token").read_text().strip()

    def agent_key(self) -> tollgate.AgentKey:
        return tollgate.AgentKey.load(self.data / "demo" / "agent.jwk")

    def client(self, envelope_dir: Path | None = None) -> tollgate.Client:
        return tollgate.Client(
            self.url,
            agent="agent-demo",
            delegation="dlg_demo",
            key=self.agent_key(),
            envelope_dir=envelope_dir,
        )

    def register_reviewer(self, reviewer_id: str, key: tollgate.AgentKey) -> None:
        body = {
            "id": reviewer_id,
            "key": {k: v for k, v in key.public_jwk.items()},
            "roles": ["approver"],
            "actions": ["orders.refund"],
        }
        r = httpx.post(
            self.url + "/v1/admin/reviewers",
            content=json.dumps(body),
            headers={
                "content-type": "application/json",
                "authorization": f"Bearer {self.admin_token}",
            },
        )
        assert r.status_code in (200, 201), r.text

    def export(self) -> bytes:
        return httpx.get(self.url + "/v1/ledger/export").content


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    yield from start(tmp_path_factory)


@pytest.fixture(scope="module")
def short_skew_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway that takes intents issued at most one second from its clock."""
    yield from start(tmp_path_factory, "--max-skew-seconds", "1")


def start(tmp_path_factory: pytest.TempPathFactory, *args: str) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("gateway")
    data = root / "data"
    subprocess.run(
        [tollgate_bin(), "init", "--demo", "--data-dir", str(data)], check=True, capture_output=True
    )
    log = open(root / "gateway.log", "a")  # noqa: SIM115 (open while the gateway runs)
    process = subprocess.Popen(
        [
            tollgate_bin(),
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            str(data),
            # Webhook tests deliver to a consumer on loopback.
            "--webhook-allow-private",
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    assert process.stdout is not None
    url = None
    for line in process.stdout:
        if line.startswith("listening on "):
            url = line.removeprefix("listening on ").strip()
            break
    assert url, "the gateway exited before listening"
    # Keep reading so the gateway never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in process.stdout or []], daemon=True).start()
    yield Gateway(data, process, url)
    process.kill()
    process.wait()
    log.close()
