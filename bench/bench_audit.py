"""The router's audit log: added latency with auditing on against off, and memory under load.

Reuses bench_router's backend, processes and load generator. Three paths to one fast backend,
interleaved in time as bench_router does them:

- direct: client -> backend
- router: ``soberana router`` with auditing off
- audited: ``soberana router --audit-dir ... --audit-signing-key ...`` (defaults: fail closed,
  segments of 64 MiB or 5 min, fsync every second)

Then the audited router alone under ``--rss-seconds`` of load (open loop at ``--rate``, then
back to back), its RSS sampled every second. Afterwards its log is verified and its request
records counted against the requests sent. Prints; asserts nothing.

    python bench/bench_audit.py
    python bench/bench_audit.py --rate 1000 --seconds 10 --rss-seconds 60
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
import bench_router as br


@contextmanager
def _router(backend: int, workdir: Path, audit: Path | None) -> Iterator[tuple[int, int]]:
    port = br._free_port()
    routes = workdir / f"routes-{port}.yaml"
    routes.write_text(
        yaml.safe_dump(
            {
                "sites": [{"name": "site", "url": f"http://127.0.0.1:{backend}",
                           "jurisdiction": "BR", "latencyMs": {"bench": 5}}],
                "models": [{"name": "bench/echo", "sites": ["site"],
                            "residency": {"allowedJurisdictions": ["BR"]}}],
            }
        )
    )  # fmt: skip
    command = [sys.executable, "-m", "soberana.operator.cli", "router", "--routes", str(routes),
               "--port", str(port), "--region", "bench"]  # fmt: skip
    if audit is not None:
        command += ["--audit-dir", str(audit / "logs"), "--audit-signing-key",
                    str(audit / "key.pem"), "--audit-log-name", "bench"]  # fmt: skip
    with br._process(*command, port=port) as process:
        yield port, process.pid


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _soberana(*arguments: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "soberana.operator.cli", *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def _overhead(options: argparse.Namespace, workdir: Path, audit: Path) -> None:
    path = br.MODEL_PATH + "/v1/chat/completions"
    with ExitStack() as stack:
        backend, _ = stack.enter_context(br._backend("site"))
        plain, plain_pid = stack.enter_context(_router(backend, workdir, None))
        audited, audited_pid = stack.enter_context(_router(backend, workdir, audit))
        targets = [
            br.Target("direct", backend, path),
            br.Target("router", plain, "/v1/chat/completions", plain_pid),
            br.Target("audited", audited, "/v1/chat/completions", audited_pid),
        ]
        rounds = max(1, round(options.seconds / options.slice))
        measured = br._load(
            "side-by-side",
            json.dumps([asdict(target) for target in targets]),
            options.rate,
            options.slice,
            rounds,
            options.connections,
        )
    results = [br.PathResult.of(t.name, measured[t.name], t.pid != 0) for t in targets]
    direct, off, on = results
    print(
        f"\nlatency at {options.rate:.0f} req/s (open loop), throughput with "
        f"{options.connections} connections; {rounds} interleaved rounds of {options.slice:g}s "
        f"per path and measurement:"
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
    print(
        f"auditing on vs off: p50 {on.p50_ms - off.p50_ms:+.3f} ms, p99 "
        f"{on.p99_ms - off.p99_ms:+.3f} ms, throughput {on.rps / off.rps:.2f}x, CPU "
        f"{(on.cpu_us or 0) - (off.cpu_us or 0):+.0f} us/request; failed: {on.failed} audited, "
        f"{off.failed} not"
    )


def _memory(options: argparse.Namespace, workdir: Path, audit: Path) -> None:
    logs = audit / "logs"
    samples: list[tuple[float, float]] = []
    with ExitStack() as stack:
        backend, _ = stack.enter_context(br._backend("site"))
        audited, pid = stack.enter_context(_router(backend, workdir, audit))
        target = br.Target("audited", audited, "/v1/chat/completions", pid)
        stop = threading.Event()

        def sample() -> None:
            started = time.monotonic()
            while not stop.wait(1.0):
                samples.append((time.monotonic() - started, _rss_mib(pid)))

        sampler = threading.Thread(target=sample, daemon=True)
        rss_before = _rss_mib(pid)
        sampler.start()
        half = options.rss_seconds / 2  # open loop for half, back to back for the other half
        measured = br._load(
            "side-by-side", json.dumps([asdict(target)]), options.rate, half, 1,
            options.connections,
        )  # fmt: skip
        stop.set()
        sampler.join()
    answered = measured["audited"]["answered"] + len(measured["audited"]["latency_ms"])
    failed = measured["audited"]["failed"]
    rss = [mib for _, mib in samples]
    quarter = max(1, len(rss) // 4)
    print(
        f"\naudited router under {options.rss_seconds:.0f}s of load ({half:.0f}s at "
        f"{options.rate:.0f} req/s, {half:.0f}s back to back on {options.connections} "
        f"connections): {answered} requests (warm-up excluded), {failed} failed; RSS before "
        f"{rss_before:.0f} MiB, after the first quarter {max(rss[:quarter]):.0f} MiB, peak "
        f"{max(rss):.0f} MiB, last quarter {min(rss[-quarter:]):.0f}-{max(rss[-quarter:]):.0f} MiB"
    )
    print("RSS every 5 s (MiB): " + " ".join(f"{mib:.0f}" for t, mib in samples if int(t) % 5 == 0))
    verified = _soberana("audit", "verify", str(logs), "--public-key", str(audit / "key.pub"))
    report = _soberana("audit", "report", str(logs), "-o", "json")
    document = json.loads(report.stdout)
    segments = len(list(logs.glob("*.jsonl")))
    size = sum(path.stat().st_size for path in logs.glob("*.jsonl"))
    print(
        f"audit log: verify exit {verified.returncode} ({verified.stdout.splitlines()[0]}); "
        f"{document['requests']} request records in {segments} segments, "
        f"{size / document['requests']:.0f} bytes a record; outside restrictions "
        f"{document['outside_restrictions']['count']}, lost {document['lost_records']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="open-loop requests/s")
    parser.add_argument("--seconds", type=float, default=5.0, help="per path and measurement")
    parser.add_argument("--slice", type=float, default=1.0, help="seconds a path runs in turn")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rss-seconds", type=float, default=60.0, help="load for the RSS run")
    options = parser.parse_args()
    print(f"{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"load average before: {br._load_average()}")
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as workdir:
        for name in ("overhead", "memory"):
            audit = Path(workdir) / f"audit-{name}"
            audit.mkdir()
            keys = _soberana("audit", "keygen", "--private-key", str(audit / "key.pem"),
                             "--public-key", str(audit / "key.pub"))  # fmt: skip
            if keys.returncode != 0:
                raise RuntimeError(keys.stderr)
        _overhead(options, Path(workdir), Path(workdir) / "audit-overhead")
        _memory(options, Path(workdir), Path(workdir) / "audit-memory")
    print(f"load average after: {br._load_average()}")


if __name__ == "__main__":
    main()
