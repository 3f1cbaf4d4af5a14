"""`tollgate.verify_export` (written from the spec, sharing no code with the
Rust verifier) against `tollgate-verify` on the same exports: a gateway's,
and each of a set of tampered copies. Both must agree on valid or not and
on the first bad entry."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import rfc8785
from conftest import REPO, Gateway

import tollgate


def rust_verifier(export: Path, keys: Path) -> tuple[bool, int | None]:
    binary = os.environ.get(
        "TOLLGATE_VERIFY_BIN", str(REPO / "target" / "debug" / "tollgate-verify")
    )
    out = subprocess.run(
        [binary, "ledger", str(export), "--keys", str(keys), "--json"],
        check=False,
        capture_output=True,
        text=True,
    )
    report = json.loads(out.stdout)
    if out.returncode == 0:
        return True, None
    return False, report.get("seq")


def tampered(lines: list[bytes]) -> dict[str, list[bytes]]:
    """Copies of an export, each changed in one way (none re-signed)."""

    def edit(i: int, change: Callable[[dict[str, Any]], None]) -> list[bytes]:
        copy = list(lines)
        entry = json.loads(copy[i])
        change(entry)
        copy[i] = rfc8785.dumps(entry) + b"\n"
        return copy

    def amount(e: dict[str, Any]) -> None:
        e["receipt"]["subject"]["payload"]["params"]["amount_minor"] += 1

    last = len(lines) - 1
    return {
        "a changed amount": edit(last, amount),
        "a changed appended_at": edit(2, lambda e: e.update(appended_at="2000-01-01T00:00:00Z")),
        "a dropped line": lines[:3] + lines[4:],
        "two lines swapped": lines[:2] + [lines[3], lines[2]] + lines[4:],
        "a duplicated line": lines[:3] + [lines[2]] + lines[3:],
        "the last line cut": lines[:-1] + [lines[-1][:-1]],
        "whitespace in a line": lines[:1] + [lines[1].replace(b",", b", ", 1)] + lines[2:],
    }


@pytest.fixture(scope="module")
def export(gateway: Gateway, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    with gateway.client() as c:
        c.submit("orders.refund", "order:o-1001", {"amount_minor": 700, "currency": "EUR"})
        c.submit("orders.refund", "order:o-1003", {"amount_minor": 700, "currency": "EUR"})
        c.submit("orders.refund", "order:o-1002", {"amount_minor": 99_900, "currency": "EUR"})
    folder = tmp_path_factory.mktemp("export")
    path = folder / "export.jsonl"
    path.write_bytes(gateway.export())
    keys = folder / "jwks.json"
    keys.write_bytes(httpx.get(gateway.url + "/.well-known/jwks.json").content)
    return path, keys


def test_a_gateways_export_verifies_with_both(gateway: Gateway, export: tuple[Path, Path]) -> None:
    path, keys = export
    report = tollgate.verify_export(path, keys)
    assert report.valid, report
    assert report.entries == len(path.read_bytes().splitlines())
    assert rust_verifier(path, keys) == (True, None)
    head = httpx.get(gateway.url + "/v1/ledger/head").json()
    # The head then may have moved on: an export of now ends at it.
    now = gateway.export()
    assert tollgate.verify_export(now, keys, head=head["hash"]).valid
    cut = b"".join(now.splitlines(keepends=True)[:-1])
    late = tollgate.verify_export(cut, keys, head=head["hash"])
    assert not late.valid and "not at the head" in str(late.reason)


def test_each_tampering_is_found_at_the_same_entry_by_both(
    export: tuple[Path, Path], tmp_path: Path
) -> None:
    path, keys = export
    lines = path.read_bytes().splitlines(keepends=True)
    for name, copy in tampered(lines).items():
        changed = tmp_path / "changed.jsonl"
        changed.write_bytes(b"".join(copy))
        report = tollgate.verify_export(changed, keys)
        assert not report.valid, name
        assert rust_verifier(changed, keys) == (False, report.first_bad_seq), (name, report)


def test_one_receipt_verifies_on_its_own(export: tuple[Path, Path]) -> None:
    path, keys = export
    line = path.read_bytes().splitlines()[-1]
    assert tollgate.verify_receipt(line, keys).valid
    entry = json.loads(line)
    entry["receipt"]["outcome"]["status"] = "committed"
    report = tollgate.verify_receipt(entry, keys)
    assert not report.valid and "receipt_id" in str(report.reason)


def test_a_checkpoint_shows_a_cut_export_and_proves_inclusion(
    gateway: Gateway, export: tuple[Path, Path]
) -> None:
    _, keys = export
    deadline = time.monotonic() + 30
    while True:
        r = httpx.get(gateway.url + "/log/checkpoint")
        if r.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert r.status_code == 200, r.text
    note = r.text
    key = httpx.get(gateway.url + "/.well-known/tollgate-checkpoint-key").text.strip()
    cp = tollgate.verify_checkpoint(note, key)
    now = gateway.export()
    assert tollgate.verify_export(now, keys, checkpoint=note, checkpoint_key=key).valid
    lines = now.splitlines(keepends=True)
    cut = b"".join(lines[: cp.size - 1])
    report = tollgate.verify_export(cut, keys, checkpoint=note, checkpoint_key=key)
    assert not report.valid and "cut" in str(report.reason), report
    forged = note.replace(f"\n{cp.size}\n", f"\n{cp.size + 1}\n", 1)
    with pytest.raises(tollgate.CheckpointError):
        tollgate.verify_checkpoint(forged, key)
    proof = httpx.get(f"{gateway.url}/v1/proofs/inclusion?seq=1&size={cp.size}").json()
    first = lines[0].rstrip(b"\n")
    assert tollgate.verify_inclusion(first, 1, proof["proof"], cp)
    assert not tollgate.verify_inclusion(lines[1].rstrip(b"\n"), 1, proof["proof"], cp)


def test_a_tour_export_verifies_with_both(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    # The tour against a gateway of its own: every kind of receipt.
    from conftest import start

    for g in start(tmp_path_factory):
        out = subprocess.run(
            [
                os.environ.get("TOLLGATE_BIN", str(REPO / "target" / "debug" / "tollgate")),
                "tour",
                "--url",
                g.url,
                "--data-dir",
                str(g.data),
            ],
            check=False,
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        path = tmp_path / "tour.jsonl"
        path.write_bytes(g.export())
        keys = tmp_path / "jwks.json"
        keys.write_bytes(httpx.get(g.url + "/.well-known/jwks.json").content)
        report = tollgate.verify_export(path, keys)
        assert report.valid, report
        assert rust_verifier(path, keys) == (True, None)
        kinds = {json.loads(line)["receipt"]["kind"] for line in path.read_bytes().splitlines()}
        assert {"decision", "approval", "execution", "registry", "event", "lease"} <= kinds
