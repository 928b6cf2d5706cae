"""Router overhead and failover on loopback: direct, through soberana's router, through nginx.

One fast backend process answers like a site (a fixed OpenAI-style JSON body, keep-alive). A load
generator, a separate process speaking raw HTTP/1.1 over keep-alive connections, measures three
paths to it side by side in one run:

- direct: client -> backend
- router: client -> ``soberana router`` (one process, uvloop) -> backend
- nginx:  client -> nginx (one worker, plain reverse proxy with upstream keep-alive) -> backend
  (skipped, saying so, when nginx is not installed: ``apt-get install -y nginx``)
- baseline, with ``--baseline CHECKOUT``: the router of another soberana checkout, such as the
  commit before a change (``git worktree add /tmp/before HEAD~1``), the same way
- bare-own and bare-uvicorn, with ``--servers``: two proxies that do no routing, forwarding every
  request with the router's upstream client (aiohttp's), one on the router's HTTP server, one on
  uvicorn (httptools protocol, uvloop, a bare ASGI app): what each server costs, side by side

The paths are interleaved in time: round after round, each path in turn gets a slice of
``--slice`` seconds (the order rotating every round) until each had ``--seconds`` in all, so a
change in the machine's load falls on every path alike.

Latency: each slice sends ``--rate`` requests a second on a fixed schedule (open loop: whether or
not earlier requests were answered). A request's latency runs from the moment the generator sent
it, any wait for a free connection included, to the last byte of its answer. How late the
generator sent against its schedule is reported apart (``lag``), so that its own timer jitter is
counted against no path. Added latency is a path's percentile minus the direct path's.

Throughput: the same rounds again, ``--connections`` connections each sending back to back; and
the proxy's CPU time per answered request (user and system, from ``/proc``).

Failover: the router in front of two backends at a fixed rate; one is killed with SIGKILL.
Reported: failed requests, and the time from the kill until every answer comes from the
survivor. Every phase is bounded in requests and time. Prints; asserts nothing.

    python bench/bench_router.py
    python bench/bench_router.py --rate 1000 --seconds 5 --slice 1 --connections 32
    python bench/bench_router.py --baseline /tmp/before
    python bench/bench_router.py --servers
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
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
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


# --- bare proxies: the router's HTTP server or uvicorn, with no routing ---------------------
# Each forwards every request to the backend with the router's upstream client and answers with
# what it got: the cost of the server alone, the one thing that differs between them.

_NOT_FORWARDED = frozenset({b"host", b"content-length", b"connection", b"transfer-encoding"})


async def _serve_bare_own(port: int, backend: int) -> None:
    from soberana.serving.router.httpserver import HttpServer, Request, Response
    from soberana.serving.router.upstream import Upstreams

    upstreams = Upstreams(connect_timeout_s=1.0, response_timeout_s=60.0)
    base = f"http://127.0.0.1:{backend}"

    async def handler(request: Request) -> Response:
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in request.raw_headers
            if name.lower() not in _NOT_FORWARDED
        ]
        upstream = await upstreams.send(base, request.method, request.target, headers, request.body)
        body = await upstream.read()
        relayed = [h for h in upstream.headers if h[0].lower() not in _NOT_FORWARDED]
        return Response(upstream.status, relayed, body)

    server = HttpServer(handler, max_body_bytes=1024 * 1024)
    await server.start("127.0.0.1", port)
    await asyncio.Event().wait()


def _serve_bare_uvicorn(port: int, backend: int) -> None:
    import uvicorn

    from soberana.serving.router.upstream import Upstreams

    upstreams = Upstreams(connect_timeout_s=1.0, response_timeout_s=60.0)
    base = f"http://127.0.0.1:{backend}"

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in scope["headers"]
            if name not in _NOT_FORWARDED
        ]
        target = scope["raw_path"].decode() + (
            "?" + scope["query_string"].decode() if scope["query_string"] else ""
        )
        upstream = await upstreams.send(base, scope["method"], target, headers, body)
        answer = await upstream.read()
        relayed = [h for h in upstream.headers if h[0].lower() != b"connection"]
        await send({"type": "http.response.start", "status": upstream.status, "headers": relayed})
        await send({"type": "http.response.body", "body": answer})

    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="off",
        access_log=False,
        timeout_keep_alive=75,  # as the router and nginx: the generator's connections idle
        server_header=False,
        log_level="warning",
    )
    uvicorn.Server(config).run()


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


@dataclass(frozen=True)
class Target:
    """A path to the backend: where to send, and the proxy's process (0 for none)."""

    name: str
    port: int
    path: str
    pid: int = 0


Record = tuple[float, float, float, int, str]  # scheduled, sent, done (s from start), status, site


async def _open_loop(
    target: Target,
    clients: list[_Client],
    rate: float,
    seconds: float,
    kill: tuple[int, float] = (0, 0.0),
) -> list[Record]:
    """``rate`` requests a second for ``seconds`` over ``clients``, on schedule whatever the
    answers; with ``kill``, SIGKILL that process that many seconds in."""
    idle: asyncio.Queue[_Client] = asyncio.Queue()
    for client in clients:
        idle.put_nowait(client)
    payload = _request(target.path)
    records: list[Record] = []
    start = time.perf_counter() + 0.01
    kill_pid, kill_at = kill

    async def one(scheduled: float) -> None:
        sent = time.perf_counter()
        client = await idle.get()
        try:
            status, site = await client.send(payload)
        except ConnectionError:
            status, site = 0, ""
            client = await _connect(target.port)
        done = time.perf_counter()
        records.append((scheduled - start, sent - start, done - start, status, site))
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
    clients[:] = [idle.get_nowait() for _ in range(idle.qsize())]
    return records


async def _closed_loop(target: Target, clients: list[_Client], seconds: float) -> tuple[int, int]:
    """Each client sends back to back for ``seconds``: (answered, failed)."""
    payload = _request(target.path)
    deadline = time.perf_counter() + seconds
    answered = failed = 0

    async def loop(index: int) -> None:
        nonlocal answered, failed
        while time.perf_counter() < deadline:
            try:
                status, _ = await clients[index].send(payload)
            except ConnectionError:
                status, clients[index] = 0, await _connect(target.port)
            if status == 200:
                answered += 1
            else:
                failed += 1

    await asyncio.wait_for(
        asyncio.gather(*(loop(index) for index in range(len(clients)))), timeout=seconds + 30
    )
    return answered, failed


async def _side_by_side(
    targets: list[Target], rate: float, slice_s: float, rounds: int, connections: int
) -> dict[str, dict[str, Any]]:
    """Every target in turn, round after round: open-loop latency, then closed-loop throughput."""
    clients = {t.name: [await _connect(t.port) for _ in range(connections)] for t in targets}
    results: dict[str, dict[str, Any]] = {
        t.name: {"latency_ms": [], "lag_ms": [], "failed": 0, "answered": 0, "seconds": 0.0,
                 "cpu_s": 0.0}
        for t in targets
    }  # fmt: skip

    def in_turn(round_: int) -> list[Target]:
        shift = round_ % len(targets)
        return targets[shift:] + targets[:shift]

    for target in targets:  # warm up: connections, caches, the proxies' upstream pools
        await _open_loop(target, clients[target.name], rate, min(slice_s, 1.0))
    for round_ in range(rounds):
        for target in in_turn(round_):
            result = results[target.name]
            for scheduled, sent, done, status, _ in await _open_loop(
                target, clients[target.name], rate, slice_s
            ):
                result["latency_ms"].append((done - sent) * 1000)
                result["lag_ms"].append((sent - scheduled) * 1000)
                result["failed"] += status != 200
    for round_ in range(rounds):
        for target in in_turn(round_):
            result = results[target.name]
            cpu_before = _cpu_seconds(target.pid) if target.pid else 0.0
            started = time.perf_counter()
            answered, failed = await _closed_loop(target, clients[target.name], slice_s)
            result["seconds"] += time.perf_counter() - started
            result["cpu_s"] += _cpu_seconds(target.pid) - cpu_before if target.pid else 0.0
            result["answered"] += answered
            result["failed"] += failed
    return results


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


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
def _process(
    *command: str, port: int, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, start_new_session=True, env=env)
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
def _router(
    backends: dict[str, int], workdir: Path, source: Path | None = None
) -> Iterator[tuple[int, int]]:
    """The router in front of ``backends``, nearest first for clients in region ``bench``;
    with ``source``, the router of that soberana checkout instead of this one."""
    port = _free_port()
    routes = workdir / f"routes-{port}.yaml"
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
    env = None
    if source is not None:  # its packages first on the path, ahead of the editable install's
        tree = workdir / "baseline" / "soberana"
        tree.mkdir(parents=True, exist_ok=True)
        for package in ("operator", "serving"):
            (tree / package).unlink(missing_ok=True)
            (tree / package).symlink_to(source.resolve() / package)
        env = {**os.environ, "PYTHONPATH": str(tree.parent)}
    command = [sys.executable, "-m", "soberana.operator.cli", "router", "--routes", str(routes),
               "--port", str(port), "--region", "bench"]  # fmt: skip
    with _process(*command, port=port, env=env) as process:
        yield port, process.pid


@contextmanager
def _bare(kind: str, backend: int) -> Iterator[tuple[int, int]]:
    """A bare proxy (``bare-own`` or ``bare-uvicorn``) in front of ``backend``."""
    port = _free_port()
    command = [sys.executable, __file__, kind, str(port), str(backend)]
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


def _load(role: str, *arguments: object) -> Any:
    """Run the load generator in a process of its own; its result, from a file it writes."""
    with tempfile.NamedTemporaryFile(suffix=".json") as result:
        command = [sys.executable, __file__, role, result.name, *map(str, arguments)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise RuntimeError(f"load generator failed:\n{done.stderr[-3000:]}")
        return json.loads(Path(result.name).read_text())


@dataclass(frozen=True)
class PathResult:
    name: str
    p50_ms: float
    p99_ms: float
    lag_p99_ms: float  # how late the generator sent, against its schedule
    failed: int
    rps: float
    cpu_us: float | None  # the proxy's CPU time per request, user and system

    @classmethod
    def of(cls, name: str, measured: dict[str, Any], proxied: bool) -> PathResult:
        latency = statistics.quantiles(measured["latency_ms"], n=100, method="inclusive")
        lag = statistics.quantiles(measured["lag_ms"], n=100, method="inclusive")
        answered = measured["answered"]
        return cls(
            name,
            latency[49],
            latency[98],
            lag[98],
            measured["failed"],
            answered / measured["seconds"],
            measured["cpu_s"] / answered * 1e6 if proxied and answered else None,
        )


def _overhead(options: argparse.Namespace, workdir: Path) -> None:
    path = MODEL_PATH + "/v1/chat/completions"
    with ExitStack() as stack:
        backend, _ = stack.enter_context(_backend("site"))
        router, router_pid = stack.enter_context(_router({"site": backend}, workdir))
        nginx = stack.enter_context(_nginx(backend, workdir))
        targets = [
            Target("direct", backend, path),
            Target("router", router, "/v1/chat/completions", router_pid),
        ]
        if options.servers:  # the server alone: ours or uvicorn's, both bare
            for kind in ("bare-own", "bare-uvicorn"):
                port, pid = stack.enter_context(_bare(kind, backend))
                targets.append(Target(kind, port, path, pid))
        if options.baseline is not None:
            baseline = _router({"site": backend}, workdir, options.baseline)
            port, pid = stack.enter_context(baseline)
            targets.append(Target("baseline", port, "/v1/chat/completions", pid))
        if nginx is None:
            print("nginx: not installed, skipped (apt-get install -y nginx)")
        else:
            targets.append(Target("nginx", nginx[0], path, nginx[1]))
        rounds = max(1, round(options.seconds / options.slice))
        measured = _load(
            "side-by-side",
            json.dumps([asdict(target) for target in targets]),
            options.rate,
            options.slice,
            rounds,
            options.connections,
        )
        print(f"load average after the overhead runs: {_load_average()}")
    results = [PathResult.of(t.name, measured[t.name], t.pid != 0) for t in targets]
    direct = results[0]
    print(
        f"\nlatency at {options.rate:.0f} req/s (open loop), throughput with "
        f"{options.connections} connections; {rounds} interleaved rounds of {options.slice:g}s "
        f"per path and measurement:"
    )
    print(f"{'path':12} {'p50 ms':>8} {'p99 ms':>8} {'+p50 ms':>8} {'+p99 ms':>8} "
          f"{'lag p99':>8} {'req/s':>8} {'failed':>7} {'proxy CPU us/req':>17}")  # fmt: skip
    for result in results:
        cpu = "-" if result.cpu_us is None else f"{result.cpu_us:.0f}"
        print(
            f"{result.name:12} {result.p50_ms:8.3f} {result.p99_ms:8.3f} "
            f"{result.p50_ms - direct.p50_ms:8.3f} {result.p99_ms - direct.p99_ms:8.3f} "
            f"{result.lag_p99_ms:8.3f} {result.rps:8.0f} {result.failed:7d} {cpu:>17}"
        )
    routed = results[1]
    for other in results[2:]:
        added = [(r.p50_ms - direct.p50_ms, r.p99_ms - direct.p99_ms) for r in (routed, other)]
        print(
            f"router/{other.name}: throughput {routed.rps / other.rps:.2f}x; added latency, "
            f"router vs {other.name}: p50 {added[0][0]:.3f} vs {added[1][0]:.3f} ms, "
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
        target = json.dumps(asdict(Target("router", router, "/v1/chat/completions")))
        records: list[Record] = _load(
            "failover", target, rate, seconds, victim_process.pid, kill_at
        )
        with urllib.request.urlopen(f"http://127.0.0.1:{router}/metrics", timeout=10) as page:
            metrics = page.read().decode()
    retried = sum(
        float(line.rpartition(" ")[2])
        for line in metrics.splitlines()
        if line.startswith("soberana_router_retries_total{") and 'site="victim"' in line
    )
    failed = sum(1 for *_, status, _ in records if status != 200)
    before = [site for scheduled, *_, site in records if scheduled < kill_at]
    after_kill = [(done, site) for _, _, done, _, site in records if done >= kill_at]
    first_survivor = min((done for done, site in after_kill if site == "survivor"), default=kill_at)
    last_victim = max((done for done, site in after_kill if site == "victim"), default=kill_at)
    worst = max(
        (done - scheduled) * 1000
        for scheduled, _, done, _, _ in records
        if scheduled >= kill_at - 0.1
    )
    print(
        f"\nfailover at {rate:.0f} req/s; the nearest site (the victim) is killed at "
        f"{kill_at:.1f}s of {seconds:.0f}s: {len(records)} requests, {failed} failed; "
        f"the victim served {before.count('victim')} of {len(before)} before the kill; "
        f"first answer from the survivor {(first_survivor - kill_at) * 1000:.1f} ms and last "
        f"from the victim {(last_victim - kill_at) * 1000:.1f} ms after the kill; "
        f"{retried:.0f} attempts on the dead victim were retried; slowest request around the "
        f"kill {worst:.1f} ms"
    )


def _load_average() -> str:
    return " ".join(f"{load:.2f}" for load in os.getloadavg())


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in (
        "backend",
        "side-by-side",
        "failover",
        "bare-own",
        "bare-uvicorn",
    ):
        _role(sys.argv[1], sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="open-loop requests/s")
    parser.add_argument("--seconds", type=float, default=5.0, help="per path and measurement")
    parser.add_argument("--slice", type=float, default=1.0, help="seconds a path runs in turn")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--failover-rate", type=float, default=500.0)
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="CHECKOUT",
        help="also measure the router of another soberana checkout (its root folder), as path "
        "'baseline': before and after a change, side by side in one run",
    )
    parser.add_argument(
        "--servers",
        action="store_true",
        help="also measure two bare proxies with no routing, the router's HTTP server and "
        "uvicorn (httptools, a bare ASGI app), both forwarding with the router's upstream client",
    )
    options = parser.parse_args()
    print(f"{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"load average before: {_load_average()}")
    with tempfile.TemporaryDirectory(prefix="bench-router-") as workdir:
        _overhead(options, Path(workdir))
        _failover(options, Path(workdir))
    print(f"load average after: {_load_average()}")


def _role(role: str, arguments: list[str]) -> None:
    if role == "backend":
        uvloop.run(_serve_backend(int(arguments[0]), arguments[1]))
        return
    if role == "bare-own":
        uvloop.run(_serve_bare_own(int(arguments[0]), int(arguments[1])))
        return
    if role == "bare-uvicorn":
        _serve_bare_uvicorn(int(arguments[0]), int(arguments[1]))
        return
    output, *rest = arguments
    result: Any
    if role == "side-by-side":
        targets, rate, slice_s, rounds, connections = rest
        result = uvloop.run(
            _side_by_side(
                [Target(**target) for target in json.loads(targets)],
                float(rate),
                float(slice_s),
                int(rounds),
                int(connections),
            )
        )
    else:
        target_json, rate, seconds, kill_pid, kill_at = rest
        target = Target(**json.loads(target_json))

        async def failover() -> list[Record]:
            clients = [await _connect(target.port) for _ in range(32)]
            await _open_loop(target, clients, float(rate), 1.0)  # warm up
            kill = (int(kill_pid), float(kill_at))
            return await _open_loop(target, clients, float(rate), float(seconds), kill)

        result = uvloop.run(failover())
    Path(output).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
