"""Router overhead and failover on loopback: direct, through soberana's router, through nginx.

One fast backend process answers like a site (a fixed OpenAI-style JSON body, keep-alive). The
same load generator, a separate process speaking raw HTTP/1.1 over keep-alive connections, then
measures three paths to it side by side:

- direct: client -> backend
- router: client -> ``soberana router`` (one process, uvloop) -> backend
- nginx:  client -> nginx (one worker, plain reverse proxy with upstream keep-alive) -> backend
  (skipped, saying so, when nginx is not installed: ``apt-get install -y nginx``)

For each: latency p50/p99 at a fixed open-loop rate (measured from each request's scheduled
send time, so queueing counts), and the most requests per second with a fixed number of
connections. Added latency is the path's percentile minus the direct one.

Failover: the router in front of two backends at a fixed rate; one is killed with SIGKILL.
Reported: failed requests, and the time from the kill until every answer comes from the
survivor. Every phase is bounded in requests and time. Prints; asserts nothing.

    python bench/bench_router.py
    python bench/bench_router.py --rate 1000 --seconds 5 --connections 32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import uvloop
import yaml

MODEL_PATH = "/bench/echo"  # the route prefix of model bench/echo on a site
ANSWER = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": "bench/echo",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
        ],
    }
).encode()
REQUEST_BODY = json.dumps(
    {"model": "bench/echo", "messages": [{"role": "user", "content": "hi"}]}
).encode()


# --- the backend: a minimal keep-alive HTTP/1.1 server -------------------------------------


class _Backend(asyncio.Protocol):
    def __init__(self, site: bytes) -> None:
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._reply = (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Site: " + site + b"\r\n"
            b"Content-Length: " + str(len(ANSWER)).encode() + b"\r\n\r\n" + ANSWER
        )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (message := _message_length(self._buffer)) is not None:
            del self._buffer[:message]
            assert self._transport is not None
            self._transport.write(self._reply)


def _message_length(buffer: bytearray) -> int | None:
    """Length of the first complete HTTP message in ``buffer`` (by Content-Length), or None."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    total = end + 4 + int(_header(bytes(buffer[:end]).lower(), b"content-length") or 0)
    return total if len(buffer) >= total else None


def _header(head: bytes, name: bytes) -> bytes | None:
    """The value of header ``name`` (lowercase) in a lowercased message head, or None."""
    start = head.find(b"\r\n" + name + b":")
    if start < 0:
        return None
    start += len(name) + 3
    end = head.find(b"\r\n", start)
    return head[start : end if end >= 0 else len(head)].strip()


async def _serve_backend(port: int, name: str) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Backend(name.encode()), "127.0.0.1", port)
    async with server:
        print("ready", flush=True)
        await server.serve_forever()


# --- the load generator: raw HTTP/1.1 over keep-alive connections ---------------------------


class _Client(asyncio.Protocol):
    def __init__(self) -> None:
        self._buffer = bytearray()
        self._waiter: asyncio.Future[tuple[int, str]] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        length = _message_length(self._buffer)
        if length is None or self._waiter is None or self._waiter.done():
            return
        head = bytes(self._buffer[: self._buffer.find(b"\r\n\r\n")]).lower()
        del self._buffer[:length]
        site = _header(head, b"x-soberana-site") or b""
        self._waiter.set_result((int(head[9:12]), site.decode()))
        self._waiter = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError("connection lost"))

    async def send(self, payload: bytes) -> tuple[int, str]:
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(payload)
        return await self._waiter


def _request(path: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(REQUEST_BODY)}\r\n\r\n"
    ).encode() + REQUEST_BODY


async def _connect(port: int) -> _Client:
    _, client = await asyncio.get_running_loop().create_connection(_Client, "127.0.0.1", port)
    return client


async def _open_loop(
    port: int, path: str, rate: float, seconds: float, connections: int, kill: tuple[int, float]
) -> dict[str, Any]:
    """``rate`` requests a second for ``seconds``; latency counts from the scheduled send."""
    idle: asyncio.Queue[_Client] = asyncio.Queue()
    for _ in range(connections):
        idle.put_nowait(await _connect(port))
    payload = _request(path)
    records: list[tuple[float, float, int, str]] = []  # scheduled, done, status, site
    start = time.perf_counter() + 0.05
    kill_pid, kill_at = kill

    async def one(scheduled: float) -> None:
        client = await idle.get()
        try:
            status, site = await client.send(payload)
        except ConnectionError:
            status, site = 0, ""
            client = await _connect(port)
        records.append((scheduled - start, time.perf_counter() - start, status, site))
        idle.put_nowait(client)

    tasks = []
    for index in range(int(rate * seconds)):
        scheduled = start + index / rate
        if kill_pid and index == int(rate * kill_at):
            os.kill(kill_pid, signal.SIGKILL)
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled)))
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=seconds + 30)
    return {"records": records}


async def _closed_loop(port: int, path: str, seconds: float, connections: int) -> dict[str, Any]:
    """Each connection sends back to back for ``seconds``; how many answers came."""
    payload = _request(path)
    clients = [await _connect(port) for _ in range(connections)]
    deadline = time.perf_counter() + seconds
    answered = failed = 0

    async def loop(client: _Client) -> None:
        nonlocal answered, failed
        while time.perf_counter() < deadline:
            try:
                status, _ = await client.send(payload)
            except ConnectionError:
                status, client = 0, await _connect(port)
            if status == 200:
                answered += 1
            else:
                failed += 1

    started = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(loop(c) for c in clients)), timeout=seconds + 30)
    elapsed = time.perf_counter() - started
    return {"rps": answered / elapsed, "seconds": elapsed, "failed": failed}


# --- the orchestration ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_for_port(port: int, process: subprocess.Popen[bytes], deadline_s: float = 60) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {deadline_s}s")


@contextmanager
def _process(*command: str, port: int) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_for_port(port, process)
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


@contextmanager
def _backend(name: str) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = _free_port()
    with _process(sys.executable, __file__, "backend", str(port), name, port=port) as process:
        yield port, process


@contextmanager
def _router(backends: dict[str, int], workdir: Path) -> Iterator[tuple[int, int]]:
    """The router in front of ``backends``, nearest first for clients in region ``bench``."""
    routes = workdir / "routes.yaml"
    routes.write_text(
        yaml.safe_dump(
            {
                "sites": [
                    {
                        "name": name,
                        "url": f"http://127.0.0.1:{port}",
                        "jurisdiction": "BR",
                        "latencyMs": {"bench": 5 * (index + 1)},
                    }
                    for index, (name, port) in enumerate(backends.items())
                ],
                "models": [{"name": "bench/echo", "sites": list(backends)}],
            }
        )
    )
    port = _free_port()
    command = [sys.executable, "-m", "soberana.operator.cli", "router", "--routes", str(routes),
               "--port", str(port), "--region", "bench"]  # fmt: skip
    with _process(*command, port=port) as process:
        yield port, process.pid


_NGINX_CONFIG = """
worker_processes 1;
master_process off;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;  # as many requests per client connection as the router allows
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream backend {{ server 127.0.0.1:{backend}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


@contextmanager
def _nginx(backend: int, workdir: Path) -> Iterator[tuple[int, int] | None]:
    binary = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if binary is None:
        yield None
        return
    port = _free_port()
    config = workdir / "nginx.conf"
    config.write_text(_NGINX_CONFIG.format(dir=workdir, backend=backend, port=port))
    with _process(binary, "-p", str(workdir), "-c", str(config), port=port) as process:
        yield port, process.pid


def _load(mode: str, *arguments: object) -> dict[str, Any]:
    """Run the load generator in a process of its own; its result, from a file it writes."""
    with tempfile.NamedTemporaryFile(suffix=".json") as result:
        command = [sys.executable, __file__, mode, result.name, *map(str, arguments)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"load generator failed:\n{done.stderr[-3000:]}")
        loaded: dict[str, Any] = json.loads(Path(result.name).read_text())
        return loaded


@dataclass
class PathResult:
    name: str
    p50_ms: float
    p99_ms: float
    failed: int
    rps: float
    cpu_us: float | None  # the proxy's CPU time per request, user and system


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _measure(
    name: str, port: int, path: str, options: argparse.Namespace, proxy_pid: int | None = None
) -> PathResult:
    _load("open", port, path, options.rate, 1.0, options.connections, 0, 0)  # warm up
    records = _load("open", port, path, options.rate, options.seconds, options.connections, 0, 0)[
        "records"
    ]
    latencies = sorted((done - scheduled) * 1000 for scheduled, done, _, _ in records)
    quantiles = statistics.quantiles(latencies, n=100, method="inclusive")
    cpu_before = _cpu_seconds(proxy_pid) if proxy_pid else 0.0
    closed = _load("closed", port, path, options.seconds, options.connections)
    cpu_us = None
    if proxy_pid:
        answered = closed["rps"] * closed["seconds"]
        cpu_us = (_cpu_seconds(proxy_pid) - cpu_before) / answered * 1e6
    failed = sum(1 for *_, status, _ in records if status != 200) + closed["failed"]
    return PathResult(name, quantiles[49], quantiles[98], failed, closed["rps"], cpu_us)


def _overhead(options: argparse.Namespace, workdir: Path) -> None:
    results: list[PathResult] = []
    with _backend("site") as (backend, _):
        results.append(_measure("direct", backend, MODEL_PATH + "/v1/chat/completions", options))
        with _router({"site": backend}, workdir) as (router, router_pid):
            path = "/v1/chat/completions"
            results.append(_measure("router", router, path, options, router_pid))
        with _nginx(backend, workdir) as nginx:
            if nginx is None:
                print("nginx: not installed, skipped (apt-get install -y nginx)")
            else:
                path = MODEL_PATH + "/v1/chat/completions"
                results.append(_measure("nginx", nginx[0], path, options, nginx[1]))
    direct = results[0]
    print(
        f"\nlatency at {options.rate:.0f} req/s for {options.seconds:.0f}s (open loop), "
        f"throughput with {options.connections} connections:"
    )
    print(f"{'path':8} {'p50 ms':>8} {'p99 ms':>8} {'+p50 ms':>8} {'+p99 ms':>8} "
          f"{'req/s':>8} {'failed':>7} {'proxy CPU us/req':>17}")  # fmt: skip
    for result in results:
        cpu = "-" if result.cpu_us is None else f"{result.cpu_us:.0f}"
        print(
            f"{result.name:8} {result.p50_ms:8.3f} {result.p99_ms:8.3f} "
            f"{result.p50_ms - direct.p50_ms:8.3f} {result.p99_ms - direct.p99_ms:8.3f} "
            f"{result.rps:8.0f} {result.failed:7d} {cpu:>17}"
        )
    by_name = {result.name: result for result in results}
    if "nginx" in by_name:
        routed, proxied = by_name["router"], by_name["nginx"]
        added = [(r.p50_ms - direct.p50_ms, r.p99_ms - direct.p99_ms) for r in (routed, proxied)]
        print(
            f"router/nginx: throughput {routed.rps / proxied.rps:.2f}x; added latency, router vs "
            f"nginx: p50 {added[0][0]:.3f} vs {added[1][0]:.3f} ms, "
            f"p99 {added[0][1]:.3f} vs {added[1][1]:.3f} ms"
        )


def _failover(options: argparse.Namespace, workdir: Path) -> None:
    """The nearest site, carrying all the traffic, dies; the other must take over at once."""
    rate, seconds, kill_at = options.failover_rate, 6.0, 2.0
    with (
        _backend("victim") as (victim, victim_process),
        _backend("survivor") as (survivor, _),
        _router({"victim": victim, "survivor": survivor}, workdir) as (router, _),
    ):
        _load("open", router, "/v1/chat/completions", rate, 1.0, 32, 0, 0)  # warm up
        records = _load(
            "open", router, "/v1/chat/completions", rate, seconds, 32,
            victim_process.pid, kill_at,
        )["records"]  # fmt: skip
        with urllib.request.urlopen(f"http://127.0.0.1:{router}/metrics", timeout=10) as page:
            metrics = page.read().decode()
    retried = sum(
        float(line.rpartition(" ")[2])
        for line in metrics.splitlines()
        if line.startswith("soberana_router_retries_total{") and 'site="victim"' in line
    )
    failed = sum(1 for *_, status, _ in records if status != 200)
    before = [site for scheduled, _, _, site in records if scheduled < kill_at]
    after_kill = [(done, site) for _, done, _, site in records if done >= kill_at]
    first_survivor = min((done for done, site in after_kill if site == "survivor"), default=kill_at)
    last_victim = max((done for done, site in after_kill if site == "victim"), default=kill_at)
    worst = max((done - sent) * 1000 for sent, done, _, _ in records if sent >= kill_at - 0.1)
    print(
        f"\nfailover at {rate:.0f} req/s; the nearest site (the victim) is killed at "
        f"{kill_at:.1f}s of {seconds:.0f}s: {len(records)} requests, {failed} failed; "
        f"the victim served {before.count('victim')} of {len(before)} before the kill; "
        f"first answer from the survivor {(first_survivor - kill_at) * 1000:.1f} ms and last "
        f"from the victim {(last_victim - kill_at) * 1000:.1f} ms after the kill; "
        f"{retried:.0f} attempts on the dead victim were retried; slowest request around the "
        f"kill {worst:.1f} ms"
    )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("backend", "open", "closed"):
        _role(sys.argv[1], sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="open-loop requests/s")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each phase")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--failover-rate", type=float, default=500.0)
    options = parser.parse_args()
    print(f"{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="bench-router-") as workdir:
        _overhead(options, Path(workdir))
        _failover(options, Path(workdir))
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def _role(role: str, arguments: list[str]) -> None:
    if role == "backend":
        uvloop.run(_serve_backend(int(arguments[0]), arguments[1]))
        return
    output, port, path, *rest = arguments
    if role == "open":
        rate, seconds, connections, kill_pid, kill_at = rest
        kill = (int(kill_pid), float(kill_at))
        coroutine = _open_loop(int(port), path, float(rate), float(seconds), int(connections), kill)
    else:
        seconds, connections = rest
        coroutine = _closed_loop(int(port), path, float(seconds), int(connections))
    Path(output).write_text(json.dumps(uvloop.run(coroutine)))


if __name__ == "__main__":
    main()
