"""The repository's Python agent example, against a real gateway."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO, Gateway


def test_the_agent_example_runs_its_tool_only_on_pass(gateway: Gateway) -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "examples" / "python-agent" / "agent.py"),
            "--url",
            gateway.url,
            "--key",
            str(gateway.data / "demo" / "agent.jwk"),
        ],
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "sdk" / "python" / "src")},
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "ran: refunded 2500 EUR on o-1001", lines
    assert lines[1].startswith("blocked: not run: not executed"), lines
    assert lines[2].startswith("escalated: waiting for reviewers"), lines
    assert "999.00 EUR" in lines[2]
