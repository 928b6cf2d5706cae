"""Leader takeover: how long placement stops when the operator leader dies, and on a rolling update.

    python -m bench.bench_takeover [--rounds 5]

Two ``soberana operator --leader-elect --placement-only`` processes against a local API server.
Each round stops the current leader (SIGKILL: a node dies; SIGTERM: a rolling update, where the
leader releases the Lease), applies a new ModelDeployment at once, and times from the signal to
(1) the Lease showing the other replica and (2) the new deployment Placed. The stopped replica is
started again as the next standby. The chart's lease timing (values.yaml) and controller-runtime's
defaults (15 s / 10 s / 2 s) run side by side. Times are polled every 0.1 s with kubectl.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from soberana.operator.controller.config import JITTER
from soberana.operator.core.crds import custom_resource_definitions
from soberana.operator.devenv.binaries import ensure_all
from soberana.operator.devenv.controlplane import ControlPlane, wait_for

ROOT = Path(__file__).resolve().parent.parent
CHART_TIMING: dict[str, float] = yaml.safe_load((ROOT / "charts/soberana/values.yaml").read_text())[
    "operator"
]["leaderElection"]
DEFAULTS: dict[str, float] = {
    "leaseDurationSeconds": 15,
    "renewDeadlineSeconds": 10,
    "retryPeriodSeconds": 2,
}
NAMESPACE = "bench"
LEASE = "soberana-operator"


class Kube:
    def __init__(self, kubectl: Path, kubeconfig: Path) -> None:
        self.base = [str(kubectl), f"--kubeconfig={kubeconfig}"]

    def run(self, *args: str, input: str | None = None) -> str:
        done = subprocess.run(
            [*self.base, *args], input=input, capture_output=True, text=True, check=False
        )
        if done.returncode != 0 and "NotFound" not in done.stderr:
            raise RuntimeError(done.stderr)
        return done.stdout

    def apply(self, *documents: dict[str, Any]) -> None:
        self.run("apply", "-f", "-", input=yaml.safe_dump_all(documents))

    def holder_and_placed(self, name: str) -> tuple[str, bool]:
        out = self.run("get", f"lease/{LEASE}", f"mdep/{name}", "-n", NAMESPACE, "-o=json")
        items = json.loads(out)["items"] if out else []
        holder, placed = "", False
        for item in items:
            if item["kind"] == "Lease":
                holder = item["spec"].get("holderIdentity") or ""
            else:
                conditions = (item.get("status") or {}).get("conditions", [])
                placed = any(c["type"] == "Placed" and c["status"] == "True" for c in conditions)
        return holder, placed


def deployment(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "soberana.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "model": {"uri": "file:///models/tiny", "format": "torchscript"},
            "traffic": [{"region": "br-southeast"}],
        },
    }


SITE = {
    "apiVersion": "soberana.io/v1alpha1",
    "kind": "InferenceSite",
    "metadata": {"name": "bench-br"},
    "spec": {
        "tier": "cloud",
        "region": "br-southeast",
        "jurisdiction": "BR",
        "gpus": [{"model": "L4", "count": 64, "memoryGiB": 24, "hourlyCost": 1.0}],
        "latencyMs": {"br-southeast": 5},
        "backend": {
            "ray": {"dashboardURL": "http://127.0.0.1:9", "serveURL": "http://127.0.0.1:9"}
        },
    },
}


def start(
    kubeconfig: Path, identity: str, timing: dict[str, float], log: Path
) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable, "-m", "soberana.operator.cli", "operator",
                f"--kubeconfig={kubeconfig}", "--placement-only", "--debounce=0.5",
                f"--secrets-namespace={NAMESPACE}", "--leader-elect",
                f"--leader-elect-identity={identity}",
                f"--leader-elect-lease-duration={timing['leaseDurationSeconds']}",
                f"--leader-elect-renew-deadline={timing['renewDeadlineSeconds']}",
                f"--leader-elect-retry-period={timing['retryPeriodSeconds']}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip


def waiting(log: Path, starts: int) -> bool:
    """Whether the ``starts``-th process logging to ``log`` waits for the Lease."""
    return log.read_text().count("waiting for the Lease") == starts


def measure(
    kube: Kube, kubeconfig: Path, work: Path, label: str, timing: dict[str, float], rounds: int,
    how: signal.Signals,
) -> None:  # fmt: skip
    # a fresh Lease for every series
    kube.run("delete", "lease", LEASE, "-n", NAMESPACE, "--ignore-not-found")
    replicas = {
        name: start(kubeconfig, name, timing, work / f"{label}-{how.name}-{name}.log")
        for name in (f"{label}-a", f"{label}-b")
    }
    starts = dict.fromkeys(replicas, 1)
    takeovers, placements = [], []
    try:
        for round_ in range(rounds):
            wait_for(
                lambda: kube.holder_and_placed("none")[0] in replicas,
                timeout=120, interval=0.2, what="a leader",
            )  # fmt: skip
            leader = kube.holder_and_placed("none")[0]
            standby = next(name for name in replicas if name != leader)
            # the standby (maybe restarted by the last round) must be waiting before the leader
            # goes, and must have read the Lease at least once
            log = work / f"{label}-{how.name}-{standby}.log"
            wait_for(
                functools.partial(waiting, log, starts[standby]),
                timeout=120, interval=0.2, what="the standby to wait",
            )  # fmt: skip
            time.sleep(timing["retryPeriodSeconds"] * JITTER)
            name = f"{label}-{how.name.lower()}-{round_}"
            replicas[leader].send_signal(how)
            stopped = time.monotonic()
            kube.apply(deployment(name))
            took_over = placed_at = None
            while placed_at is None and time.monotonic() - stopped < 120:
                holder, placed = kube.holder_and_placed(name)
                now = time.monotonic() - stopped
                if took_over is None and holder in replicas and holder != leader:
                    took_over = now
                if placed:
                    placed_at = now
                time.sleep(0.1)
            replicas[leader].wait(timeout=60)
            replicas[leader] = start(
                kubeconfig, leader, timing, work / f"{label}-{how.name}-{leader}.log"
            )
            starts[leader] += 1
            if took_over is None or placed_at is None:
                print(f"  {label} {how.name} round {round_}: no takeover within 120 s")
                continue
            takeovers.append(took_over)
            placements.append(placed_at)
    finally:
        for process in replicas.values():
            process.send_signal(signal.SIGTERM)
        for process in replicas.values():
            process.wait(timeout=60)
    if not placements:
        return
    print(
        f"{label:>9} ({timing['leaseDurationSeconds']:g}/{timing['renewDeadlineSeconds']:g}/"
        f"{timing['retryPeriodSeconds']:g} s) {how.name:7}: Lease taken after "
        f"median {statistics.median(takeovers):5.1f} s (max {max(takeovers):5.1f}); new "
        f"deployment Placed after median {statistics.median(placements):5.1f} s "
        f"(max {max(placements):5.1f}); rounds: " + ", ".join(f"{p:.1f}" for p in placements)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    binaries = ensure_all()
    with tempfile.TemporaryDirectory(prefix="soberana-bench-") as tmp:
        work = Path(tmp)
        plane = ControlPlane(work / "cp", progress=lambda _: None)
        kubeconfig = plane.up(
            binaries=binaries, die_with_parent=True, crds=custom_resource_definitions()
        )
        try:
            kube = Kube(binaries.kubectl, kubeconfig)
            kube.run("create", "namespace", NAMESPACE)
            kube.apply(SITE)
            print(f"{options.rounds} rounds each; from the signal to the leader (s)")
            for label, timing in (("chart", CHART_TIMING), ("defaults", DEFAULTS)):
                for how in (signal.SIGKILL, signal.SIGTERM):
                    measure(kube, kubeconfig, work, label, timing, options.rounds, how)
        finally:
            plane.down(quiet=True)


if __name__ == "__main__":
    main()
