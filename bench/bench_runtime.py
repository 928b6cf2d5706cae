"""Model runtime throughput on a local Ray Serve: batching on and off, and the text API on CPU.

One run starts a local Ray cluster with Serve, makes the models on the spot, and deploys them
from configs soberana renders, through the dashboard REST API as a site receives them:

- the same scripted MLP twice, batched (``maxBatchSize`` 16) and unbatched (``maxBatchSize`` 1),
  once small (overhead-bound) and once wide (compute-bound); each pair is measured side by side
  under the same concurrent load, and the batched/unbatched throughput ratio is printed;
- the tiny random GPT-2: completions per second and generated tokens per second, one client and
  several, plus the time to the first streamed token.

Every replica reserves the same CPU share. Clients keep one HTTP connection per thread on
loopback; each measurement is a fixed number of requests. Prints results and asserts nothing.

    python -m bench.bench_runtime            # from the repository root (it reuses tests/)
    python -m bench.bench_runtime --requests 400 --clients 16
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from soberana.operator.core.api import ModelDeploymentSpec
from soberana.operator.core.placement import Deployment
from soberana.operator.core.render import SiteApplication, render_serve_config, route_prefix
from soberana.operator.devenv.tinymodels import (
    SCRIPTED_FEATURES,
    make_language_model,
    make_scripted_model,
)
from tests.local_serve import local_serve

NAMESPACE = "bench"
MAX_BATCH = 16
BATCH_WAIT_S = 0.01  # the spec's default
CPUS_PER_REPLICA = 0.4
MLP_WIDTHS = {"small": 16, "wide": 8192}


@dataclass(frozen=True)
class Load:
    """How many requests, from how many concurrent clients."""

    requests: int
    clients: int


@dataclass(frozen=True)
class Measured:
    requests: int
    seconds: float
    latencies_ms: list[float]

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds

    def percentile(self, share: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=600, help="per tensor measurement")
    parser.add_argument("--clients", type=int, default=32, help="concurrent tensor clients")
    parser.add_argument("--text-requests", type=int, default=40, help="per text measurement")
    parser.add_argument("--max-tokens", type=int, default=16)
    options = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, load average {_load()}"
    )
    with tempfile.TemporaryDirectory() as folder:
        applications = _applications(Path(folder))
        # every replica asks for one GPU, as rendered configs do: declare one each
        with local_serve(num_gpus=len(applications)) as site:
            started = time.monotonic()
            site.apply(render_serve_config("bench", applications))
            print(f"deployed {len(applications)} applications in {time.monotonic() - started:.1f}s")
            _run(site.serve_url, options)
    print(f"load average at the end: {_load()}")


def _run(serve_url: str, options: argparse.Namespace) -> None:
    for label in MLP_WIDTHS:
        _compare_batching(serve_url, label, Load(options.requests, options.clients))
    chat = serve_url + route_prefix(NAMESPACE, "chat")
    _text_throughput(chat, options.text_requests, options.max_tokens)


def _applications(folder: Path) -> list[SiteApplication]:
    applications = []
    for label, width in MLP_WIDTHS.items():
        uri = make_scripted_model(folder / label, hidden=width).as_uri()
        for batched in (True, False):
            serving = {
                "maxBatchSize": MAX_BATCH if batched else 1,
                "batchWaitTimeoutS": BATCH_WAIT_S if batched else 0,
                "maxOngoingRequests": 64,
            }
            spec = {
                "model": {"uri": uri, "format": "torchscript"},
                "resources": {"cpus": CPUS_PER_REPLICA},
                "serving": serving,
            }
            name = f"{label}-{'batched' if batched else 'unbatched'}"
            deployment = Deployment(NAMESPACE, name, ModelDeploymentSpec.model_validate(spec))
            applications.append(SiteApplication(deployment, replicas=1))
    text = {
        "model": {"uri": make_language_model(folder / "chat").as_uri(), "format": "transformers"},
        "resources": {"cpus": CPUS_PER_REPLICA},
    }
    chat = Deployment(NAMESPACE, "chat", ModelDeploymentSpec.model_validate(text))
    return [*applications, SiteApplication(chat, replicas=1)]


def _compare_batching(serve_url: str, label: str, load: Load) -> None:
    row = [[0.5] * SCRIPTED_FEATURES]
    results = {}
    for mode in ("batched", "unbatched"):
        url = f"{serve_url}{route_prefix(NAMESPACE, f'{label}-{mode}')}/predict"
        _measure(url, {"inputs": row}, Load(load.clients * 4, load.clients))  # warm up
        results[mode] = _measure(url, {"inputs": row}, load)
        stats = _get_json(url.removesuffix("/predict") + "/stats")
        mean = stats["requests"] / max(1, stats["batches"])
        _report(f"{label} MLP, {mode}", results[mode], f"mean batch {mean:.1f}")
    ratio = results["batched"].per_second / results["unbatched"].per_second
    print(f"  {label} MLP: batched / unbatched throughput = {ratio:.2f}x")


def _text_throughput(chat_url: str, requests: int, max_tokens: int) -> None:
    body = {"prompt": "The quick brown fox", "max_tokens": max_tokens, "temperature": 0}
    for clients in (1, 4):
        done = _measure(f"{chat_url}/v1/completions", body, Load(requests, clients))
        tokens = done.per_second * max_tokens
        _report(f"GPT-2 tiny, {clients} client(s)", done, f"<= {tokens:.0f} tokens/s")
    first_tokens = [_first_token_ms(chat_url, max_tokens) for _ in range(10)]
    print(f"  streamed: first token after {statistics.median(first_tokens):.1f} ms (median of 10)")


def _measure(url: str, body: dict[str, Any], load: Load) -> Measured:
    """Send ``load.requests`` POSTs of ``body`` from ``load.clients`` threads."""
    payload = json.dumps(body).encode()
    remaining = [load.requests]
    lock = threading.Lock()
    latencies: list[float] = []

    def take() -> bool:
        with lock:
            remaining[0] -= 1
            return remaining[0] >= 0

    def client() -> None:
        connection = _connect(url)
        try:
            while take():
                sent = time.perf_counter()
                status, _ = _post(connection, url, payload)
                if status != 200:
                    raise RuntimeError(f"{url} answered {status}")
                with lock:
                    latencies.append((time.perf_counter() - sent) * 1000)
        finally:
            connection.close()

    started = time.perf_counter()
    with ThreadPoolExecutor(load.clients) as pool:
        for future in [pool.submit(client) for _ in range(load.clients)]:
            future.result()
    return Measured(load.requests, time.perf_counter() - started, latencies)


def _first_token_ms(chat_url: str, max_tokens: int) -> float:
    """Milliseconds from sending a streamed completion to receiving its first chunk."""
    url = f"{chat_url}/v1/completions"
    body = {"prompt": "Ray Serve", "max_tokens": max_tokens, "temperature": 0, "stream": True}
    connection = _connect(url)
    try:
        sent = time.perf_counter()
        connection.request(
            "POST", urlsplit(url).path, json.dumps(body), {"Content-Type": "application/json"}
        )
        response = connection.getresponse()
        while line := response.readline():
            if line.startswith(b"data: {"):
                elapsed = (time.perf_counter() - sent) * 1000
                response.read()
                return elapsed
        raise RuntimeError("the stream carried no chunk")
    finally:
        connection.close()


def _connect(url: str) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    return http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=120)


def _post(connection: http.client.HTTPConnection, url: str, payload: bytes) -> tuple[int, bytes]:
    connection.request("POST", urlsplit(url).path, payload, {"Content-Type": "application/json"})
    response = connection.getresponse()
    return response.status, response.read()


def _get_json(url: str) -> dict[str, Any]:
    connection = _connect(url)
    try:
        connection.request("GET", urlsplit(url).path)
        answer: dict[str, Any] = json.loads(connection.getresponse().read())
        return answer
    finally:
        connection.close()


def _report(label: str, measured: Measured, extra: str) -> None:
    print(
        f"  {label:<26} {measured.per_second:8.1f} req/s   "
        f"p50 {measured.percentile(0.5):7.1f} ms   p99 {measured.percentile(0.99):7.1f} ms   "
        f"{extra}"
    )


def _load() -> str:
    return " ".join(f"{value:.1f}" for value in os.getloadavg())


if __name__ == "__main__":
    main()
