"""Failover under load: ``soberana router`` in front of two site processes, one of them killed.

Both sites serve the model and share the load; once one of them has served its share of a
bounded run, it is killed with SIGKILL, connections and in-flight requests included. Every
request must still succeed, and once the killed site's last requests are settled every answer
comes from the survivor.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import yaml

from soberana.operator.devenv.controlplane import free_port

MODEL = "ml/chat"
WORKERS = 16
REQUESTS = 3000
KILL_AFTER = 600  # answers from the victim before it is killed
RUN_DEADLINE_S = 120


def start(*command: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)


async def wait_until_answers(url: str, deadline_s: float = 60) -> None:
    async with asyncio.timeout(deadline_s), aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(url) as response:
                    if response.status < 500:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)


async def test_killing_one_of_two_loaded_sites_fails_no_request(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    ports = {"br1": free_port(), "br2": free_port()}
    for name, port in ports.items():
        processes.append(
            start(sys.executable, "-m", "tests.router_sites", "--port", str(port), "--name", name)
        )
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        yaml.safe_dump(
            {
                "sites": [
                    {"name": name, "url": f"http://127.0.0.1:{port}", "jurisdiction": "BR",
                     "latencyMs": {"br-southeast": 5}}
                    for name, port in ports.items()
                ],
                "models": [{"name": MODEL, "sites": list(ports)}],
            }
        )
    )  # fmt: skip
    router_port = free_port()
    processes.append(
        start(sys.executable, "-m", "soberana.operator.cli", "router", "--routes", str(routes),
              "--port", str(router_port), "--region", "br-southeast")
    )  # fmt: skip
    router = f"http://127.0.0.1:{router_port}"
    await wait_until_answers(router + "/readyz")
    for port in ports.values():
        await wait_until_answers(f"http://127.0.0.1:{port}/{MODEL}/v1/models")

    served: list[str] = []  # the site of each answer, in the order answers came
    failures: list[str] = []
    killed_at: list[int] = []  # len(served) when the victim died
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}

    async def worker(http: aiohttp.ClientSession, count: int) -> None:
        for _ in range(count):
            try:
                async with http.post(router + "/v1/chat/completions", json=body) as response:
                    reply = await response.json(content_type=None)
                    if response.status != 200:
                        failures.append(f"{response.status}: {reply}")
                        continue
                    served.append(response.headers["X-Soberana-Site"])
            except aiohttp.ClientError as error:
                failures.append(repr(error))
            if not killed_at and served.count("br1") >= KILL_AFTER:
                os.killpg(processes[0].pid, signal.SIGKILL)  # br1, and nothing else
                killed_at.append(len(served))

    connector = aiohttp.TCPConnector(limit=WORKERS)
    async with asyncio.timeout(RUN_DEADLINE_S), aiohttp.ClientSession(connector=connector) as http:
        await asyncio.gather(*(worker(http, REQUESTS // WORKERS) for _ in range(WORKERS)))

    assert failures == []
    assert killed_at, "the victim never got its share of the load"
    assert len(served) == REQUESTS // WORKERS * WORKERS
    before, after = served[: killed_at[0]], served[killed_at[0] + WORKERS :]
    assert {"br1", "br2"} <= set(before)  # both sites shared the load
    assert set(after) == {"br2"}  # past the requests in flight at the kill, only the survivor
    assert len(after) > REQUESTS // 4
    async with aiohttp.ClientSession() as http, http.get(router + "/metrics") as response:
        metrics = await response.text()
    retried = 'soberana_router_retries_total{model="ml/chat",reason="connection_error",site="br1"}'
    assert retried in metrics  # the kill did cut requests that the router then moved
