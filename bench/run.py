"""Run the benchmarks one after another (``make bench``), or only those named.

    python bench/run.py                      # all of them (tens of minutes on 2 cores)
    python bench/run.py placement router     # some of them

Each prints its own side-by-side figures; record them, with the date and machine, in
bench/RESULTS.md. Nothing here asserts: these are measurements, not tests.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = [
    "placement",
    "reconcile",
    "runtime",
    "deploy",
    "router",
    "audit",
    "llm",
    "vllm",
    "takeover",
]


def main() -> int:
    chosen = sys.argv[1:] or BENCHMARKS
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        print(f"unknown benchmarks {unknown}; choose from {BENCHMARKS}", file=sys.stderr)
        return 2
    failed = []
    for name in chosen:
        print(f"\n===== bench_{name} =====", flush=True)
        if subprocess.run([sys.executable, "-m", f"bench.bench_{name}"], cwd=ROOT).returncode:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
