"""vLLM on CPUs: soberana (router -> Ray Serve LLM -> vLLM) against vLLM's own OpenAI server.

One run, same model (SmolLM2-135M-Instruct from the cached vLLM environment, see
``soberana.operator.devenv.vllmenv``), same engine arguments, same cores:

- (a) vLLM's own server, ``vllm.entrypoints.openai.api_server``, from the vLLM environment;
- (b) the app soberana renders for a CPU-only ``engine: vllm`` ModelDeployment, deployed to a
  local Ray site running from that environment, reached through ``soberana router``.

For 1, 4, 8 and 16 concurrent streams, each stream asks for ``--rounds`` chat completions of
``--tokens`` new tokens (``ignore_eos``), streamed; generated tokens per second (usage counts,
over the wall time of the level) and the median time to the first token. Both servers run at
once; each level runs ``--repeats`` times on each path in alternating order, the best run of
each path counts, and the ratios (b)/(a) are printed.

    python -m bench.bench_vllm                     # from the repository root
    python -m bench.bench_vllm --streams 1 8 --rounds 1

On a GPU machine (bench/gpu_check.sh), ``--gpu MODEL`` serves both paths on one GPU (a
``gpus: 1`` deployment placed on that GPU model), and ``--python``/``--model`` name an
environment with the CUDA build of vLLM and the model directory. ``--vllm-url`` and
``--soberana-url`` measure servers that already run. Prints results and asserts nothing.
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
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai

from soberana.operator.core.api import CPU_POOL, ModelDeploymentSpec
from soberana.operator.core.placement import Deployment
from soberana.operator.core.render import SiteApplication, render_serve_config
from soberana.operator.devenv.controlplane import free_port, wait_for
from soberana.operator.devenv.raysites import start_ray_site
from soberana.operator.devenv.vllmenv import ensure_env

NAMESPACE, NAME = "bench", "chat"
MODEL = f"{NAMESPACE}/{NAME}"
REGION = "br-southeast"
ENGINE_ARGS: dict[str, Any] = {"max_model_len": 2048}
GPU_MEMORY_SHARE = 0.4  # both servers share the one GPU
CPUS, MEMORY_GIB = 2, 4
PROMPT = "Write a short story about a robot who learns to paint."
VLLM, SOBERANA = "(a) vLLM", "(b) soberana"


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


async def _one(client: openai.AsyncOpenAI, tokens: int) -> tuple[int, float]:
    """One streamed chat completion: (completion tokens, seconds to the first token)."""
    started = time.perf_counter()
    first: float | None = None
    used = 0
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    async for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - started
        if chunk.usage is not None:
            used = chunk.usage.completion_tokens
    return used, first if first is not None else time.perf_counter() - started


async def measure(base_url: str, streams: int, rounds: int, tokens: int) -> Level:
    """``streams`` concurrent clients, ``rounds`` completions each."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=600)
    try:
        await _one(client, 8)  # warm: connections, and the engine's first request
        results: list[tuple[int, float]] = []

        async def stream() -> None:
            for _ in range(rounds):
                results.append(await _one(client, tokens))

        started = time.perf_counter()
        await asyncio.gather(*(stream() for _ in range(streams)))
        seconds = time.perf_counter() - started
    finally:
        await client.close()
    return Level(streams, sum(r[0] for r in results), seconds, [r[1] * 1000 for r in results])


def run_levels(urls: dict[str, str], options: argparse.Namespace) -> dict[str, dict[int, Level]]:
    """Each level on every path in turn, ``--repeats`` times in alternating order, so that both
    see the same machine load; the best run of each path counts (the least disturbed)."""
    levels: dict[str, dict[int, Level]] = {label: {} for label in urls}
    for streams in options.streams:
        for repeat in range(options.repeats):
            order = list(urls) if repeat % 2 == 0 else list(urls)[::-1]
            for label in order:
                level = asyncio.run(measure(urls[label], streams, options.rounds, options.tokens))
                print(
                    f"  {label:13} {streams:2} streams: {level.tokens_per_s:7.1f} tokens/s, "
                    f"TTFT median {level.ttft_median_ms:7.1f} ms ({level.tokens} tokens, "
                    f"{level.seconds:.1f} s; load average {os.getloadavg()[0]:.1f})",
                    flush=True,
                )
                best = levels[label].get(streams)
                if best is None or level.tokens_per_s > best.tokens_per_s:
                    levels[label][streams] = level
    return levels


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
class Setup:
    """Where vLLM runs: its environment's interpreter, the model, and the GPU model if any."""

    python: Path
    model: Path
    gpu: str | None

    @property
    def root(self) -> Path:
        return self.python.parents[2]


@contextmanager
def vllm_server(setup: Setup, work: Path) -> Iterator[str]:
    """(a) vLLM's own OpenAI server on the model, with the engine args soberana renders."""
    port = free_port()
    argv = [
        str(setup.python),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(setup.model),
        "--served-model-name",
        MODEL,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-model-len",
        str(ENGINE_ARGS["max_model_len"]),
    ]
    if setup.gpu is None:  # what soberana renders for a CPU-only replica of MEMORY_GIB
        argv += ["--kv-cache-memory-bytes", str(MEMORY_GIB * 1024**3 // 2)]
    else:
        argv += ["--gpu-memory-utilization", str(GPU_MEMORY_SHARE)]
    with _process(argv, work / "vllm-server.log", setup.root):
        _wait_http(f"http://127.0.0.1:{port}/health", "vLLM's server", 900)
        yield f"http://127.0.0.1:{port}/v1"


@contextmanager
def soberana_path(setup: Setup, work: Path) -> Iterator[str]:
    """(b) the rendered app on a Ray site from the vLLM env, behind ``soberana router``."""
    resources: dict[str, Any] = {"gpus": 0, "cpus": CPUS, "memoryGiB": MEMORY_GIB}
    args = dict(ENGINE_ARGS)
    if setup.gpu is not None:
        resources = {"gpus": 1, "cpus": CPUS}
        args["gpu_memory_utilization"] = GPU_MEMORY_SHARE
    spec = ModelDeploymentSpec.model_validate(
        {
            "model": {"uri": f"file://{setup.model}"},
            "engine": {"name": "vllm", "args": args},
            "resources": resources,
            "traffic": [{"region": REGION}],
        }
    )
    pool = setup.gpu if setup.gpu is not None else CPU_POOL
    application = SiteApplication(Deployment(NAMESPACE, NAME, spec), 1, (pool,))
    config = render_serve_config("bench", [application])
    # on a GPU machine Ray detects the GPU and labels the node with its accelerator type
    site = start_ray_site(
        "bench-vllm",
        work,
        worker_ports=(24000, 24499),
        num_gpus=0 if setup.gpu is None else 1,
        num_cpus=CPUS if setup.gpu is None else CPUS + 2,
        accelerators=(),
        python=setup.python,
    )
    try:
        request = urllib.request.Request(
            f"{site.dashboard_url}/api/serve/applications/",
            data=json.dumps(config).encode(),
            method="PUT",
            headers={**site.auth, "Content-Type": "application/json"},
        )
        urllib.request.urlopen(request, timeout=60).close()

        def running() -> bool:
            status = urllib.request.Request(
                f"{site.dashboard_url}/api/serve/applications/", headers=site.auth
            )
            with urllib.request.urlopen(status, timeout=10) as response:
                apps = json.load(response)["applications"]
            state = apps.get(f"{NAMESPACE}-{NAME}", {}).get("status")
            if state == "DEPLOY_FAILED":
                raise RuntimeError(apps[f"{NAMESPACE}-{NAME}"].get("message", "")[:2000])
            return bool(state == "RUNNING")

        wait_for(running, timeout=900, interval=2, what="the vLLM app on the Ray site")
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
                    "models": [{"name": MODEL, "sites": ["bench"]}],
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


def report(vllm: dict[int, Level], soberana: dict[int, Level]) -> None:
    print("\nstreams | (a) vLLM tok/s | (b) soberana tok/s | (b)/(a) | TTFT (a) ms | TTFT (b) ms")
    for streams in sorted(vllm):
        a, b = vllm[streams], soberana[streams]
        print(
            f"{streams:7} | {a.tokens_per_s:14.1f} | {b.tokens_per_s:18.1f} | "
            f"{b.tokens_per_s / a.tokens_per_s:7.2f} | {a.ttft_median_ms:11.1f} | "
            f"{b.ttft_median_ms:11.1f}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--rounds", type=int, default=2, help="completions per stream")
    parser.add_argument("--tokens", type=int, default=128, help="new tokens per completion")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each level and path")
    parser.add_argument("--vllm-url", help="(a) already running: its /v1 base URL")
    parser.add_argument("--soberana-url", help="(b) already running: the router's /v1 base URL")
    parser.add_argument("--gpu", help="serve on this machine's GPU, of this model (e.g. H100)")
    parser.add_argument("--python", type=Path, help="the vLLM environment's python")
    parser.add_argument("--model", type=Path, help="the transformers model directory")
    options = parser.parse_args()
    print(
        f"{time.strftime('%Y-%m-%d')} {platform.machine()} {os.cpu_count()} cores; "
        f"{options.tokens} new tokens, {options.rounds} completions per stream",
        flush=True,
    )
    if options.python is not None and options.model is not None:
        setup = Setup(options.python, options.model, options.gpu)
    else:
        env = ensure_env()
        setup = Setup(env.python, env.model, options.gpu)
    print(f"model {setup.model}; vLLM from {setup.python}; GPU: {setup.gpu or 'none'}")
    with tempfile.TemporaryDirectory(prefix="bench-vllm-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        urls = {
            VLLM: options.vllm_url or stack.enter_context(vllm_server(setup, work)),
            SOBERANA: options.soberana_url or stack.enter_context(soberana_path(setup, work)),
        }
        levels = run_levels(urls, options)
    report(levels[VLLM], levels[SOBERANA])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
