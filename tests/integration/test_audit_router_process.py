"""``soberana router --audit-dir`` as a real process: its log verifies after a graceful stop and
after a SIGKILL (the next start seals what the crash left open), and the report counts every
request, none outside its restrictions."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

SOBERANA = [sys.executable, "-m", "soberana.operator.cli"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, f"{process.args!r} exited with {process.returncode}"
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port} after {timeout_s}s")


def wait_for_records(directory: Path, count: int, timeout_s: float = 30) -> None:
    """Until the newest segment holds ``count`` request records."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        newest = max(directory.glob("*.jsonl"))
        if newest.read_text().count('"kind":"request"') >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"{count} records not written after {timeout_s}s")


def post(url: str, residency: str) -> int:
    body = {"model": "ml/chat", "messages": [{"role": "user", "content": "hi"}]}
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "X-Soberana-Residency": residency},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


@contextmanager
def process(*command: str, port: int) -> Iterator[subprocess.Popen[bytes]]:
    started = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for_port(port, started)
        yield started
    finally:
        if started.poll() is None:
            started.kill()
            started.wait(timeout=10)


@pytest.fixture
def site() -> Iterator[int]:
    port = free_port()
    command = [sys.executable, "-m", "tests.router_sites", "--port", str(port), "--name", "br1"]
    with process(*command, port=port):
        yield port


def test_the_log_survives_stops_and_a_crash_and_reports_every_request(
    tmp_path: Path, site: int
) -> None:
    keys = subprocess.run(
        [*SOBERANA, "audit", "keygen", "--private-key", str(tmp_path / "k.pem"),
         "--public-key", str(tmp_path / "k.pub")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "key " in keys.stdout
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        yaml.safe_dump(
            {
                "sites": [
                    {"name": "br1", "url": f"http://127.0.0.1:{site}", "jurisdiction": "BR"},
                    {"name": "us1", "url": f"http://127.0.0.1:{site}", "jurisdiction": "US"},
                ],
                "models": [
                    {"name": "ml/chat", "residency": {"allowedJurisdictions": ["BR"]},
                     "sites": ["br1", "us1"]},
                ],
            }
        )
    )  # fmt: skip
    audit = tmp_path / "audit"
    sent = {"served": 0, "refused": 0}

    def run_router(requests: int, stop: signal.Signals) -> None:
        port = free_port()
        command = [*SOBERANA, "router", "--routes", str(routes), "--port", str(port),
                   "--audit-dir", str(audit), "--audit-signing-key", str(tmp_path / "k.pem"),
                   "--audit-log-name", "router-0"]  # fmt: skip
        with process(*command, port=port) as router:
            for index in range(requests):
                residency = "US" if index % 5 == 0 else "BR"  # every fifth: no compliant site
                status = post(f"http://127.0.0.1:{port}/v1/chat/completions", residency)
                sent["served" if status == 200 else "refused"] += 1
            if stop is signal.SIGKILL:  # once the records are in the file, as they soon are
                wait_for_records(audit, requests)
            os.kill(router.pid, stop)
            router.wait(timeout=30)

    run_router(40, signal.SIGTERM)
    run_router(25, signal.SIGKILL)
    run_router(10, signal.SIGTERM)

    verified = subprocess.run(
        [*SOBERANA, "audit", "verify", str(audit), "--public-key", str(tmp_path / "k.pub")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stdout
    assert "ok: log router-0: 3 segments (1 to 3)" in verified.stdout

    report = subprocess.run(
        [*SOBERANA, "audit", "report", str(audit), "-o", "json"], capture_output=True, text=True
    )
    assert report.returncode == 0, report.stdout
    document = json.loads(report.stdout)
    assert document["served"] == [
        {"model": "ml/chat", "jurisdiction": "BR", "region": "-", "requests": sent["served"]}
    ]
    assert document["refused"] == [
        {"model": "ml/chat", "reason": "no_compliant_site", "status": 503,
         "requests": sent["refused"]}
    ]  # fmt: skip
    assert document["outside_restrictions"]["count"] == 0
    second = (audit / "router-0-00000002.jsonl").read_text().splitlines()
    assert json.loads(second[-2])["kind"] == "recovered"  # sealed by the third start
