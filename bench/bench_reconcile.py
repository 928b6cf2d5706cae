"""The operator at scale on a real API server: 1,000 ModelDeployments in 20 namespaces.

Starts its own local control plane, creates the synthetic world of bench_placement.py (100 sites,
1,000 deployments, ~85 % GPU demand) as real objects, then:

1. starts ``soberana operator --placement-only`` and measures the time until every deployment has
   a status (Placed True or False) and the operator's peak RSS;
2. restarts the operator and measures the time until its first full pass, checking that the pass
   wrote nothing and that no placement changed.

Prints the figures; asserts nothing (measurements, not tests). Runs in a few minutes:

    python bench/bench_reconcile.py [--deployments 1000 --sites 100]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_placement import synthetic_world

from soberana.operator.core.crds import custom_resource_definitions
from soberana.operator.core.placement import World
from soberana.operator.devenv.binaries import ensure_all
from soberana.operator.devenv.controlplane import ControlPlane, wait_for

PASS = re.compile(
    r"reconciled: (\d+)/(\d+) deployments placed, (\d+) status writes, .* (\d+) finalizer writes"
)


def manifests(world: World) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    for namespace in sorted({d.namespace for d in world.deployments}):
        objects.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    for site in world.sites:
        objects.append(
            {
                "apiVersion": "soberana.io/v1alpha1",
                "kind": "InferenceSite",
                "metadata": {"name": site.name, "labels": dict(site.labels)},
                "spec": site.spec.model_dump(mode="json", by_alias=True, exclude_none=True),
            }
        )
    for deployment in world.deployments:
        objects.append(
            {
                "apiVersion": "soberana.io/v1alpha1",
                "kind": "ModelDeployment",
                "metadata": {"name": deployment.name, "namespace": deployment.namespace},
                "spec": deployment.spec.model_dump(mode="json", by_alias=True, exclude_none=True),
            }
        )
    return objects


def statuses(kubectl: list[str]) -> dict[str, dict[str, Any]]:
    listed = subprocess.run(
        [*kubectl, "get", "mdep", "-A", "-o", "json"], capture_output=True, text=True, check=True
    )
    return {
        f"{item['metadata']['namespace']}/{item['metadata']['name']}": item.get("status") or {}
        for item in json.loads(listed.stdout)["items"]
    }


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_operator(kubeconfig: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "soberana.operator.cli",
                "operator",
                "--kubeconfig",
                str(kubeconfig),
                "--placement-only",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def first_pass(log: Path, since: int) -> tuple[int, int, int] | None:
    """(placed, deployments, writes of any kind) of the first pass logged after ``since``."""
    match = PASS.search(log.read_text()[since:])
    return (int(match[1]), int(match[2]), int(match[3]) + int(match[4])) if match else None


def last_pass_writes(log: Path) -> int | None:
    passes = PASS.findall(log.read_text())
    return int(passes[-1][2]) + int(passes[-1][3]) if passes else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deployments", type=int, default=1000)
    parser.add_argument("--sites", type=int, default=100)
    parser.add_argument("--seed", type=int, default=7)
    options = parser.parse_args()

    world = synthetic_world(options.deployments, options.sites, 0.85, options.seed)
    binaries = ensure_all()
    with tempfile.TemporaryDirectory(prefix="soberana-bench-") as tmp:
        work = Path(tmp)
        plane = ControlPlane(work / "cp", progress=lambda _: None)
        kubeconfig = plane.up(
            binaries=binaries, die_with_parent=True, crds=custom_resource_definitions()
        )
        kubectl = [str(binaries.kubectl), f"--kubeconfig={kubeconfig}"]
        try:
            created = time.monotonic()
            subprocess.run(
                [*kubectl, "apply", "--server-side", "-f", "-"],
                input=yaml.safe_dump_all(manifests(world)),
                text=True,
                check=True,
                capture_output=True,
            )
            print(
                f"created {len(world.sites)} sites and {len(world.deployments)} deployments "
                f"in {time.monotonic() - created:.1f}s"
            )

            log = work / "operator.log"
            started = time.monotonic()
            operator = start_operator(kubeconfig, log)
            wait_for(
                lambda: (
                    sum(1 for s in statuses(kubectl).values() if s.get("conditions"))
                    == len(world.deployments)
                ),
                timeout=600,
                interval=2,
                what="every deployment to have a status",
            )
            to_all = time.monotonic() - started
            rss = peak_rss_mb(operator.pid)
            wait_for(
                lambda: last_pass_writes(log) == 0,
                timeout=600,
                interval=1,
                what="a pass that writes nothing",
            )
            settled = time.monotonic() - started
            before = statuses(kubectl)
            placed = sum(
                1
                for s in before.values()
                for c in s["conditions"]
                if c["type"] == "Placed" and c["status"] == "True"
            )
            print(
                f"cold start: every deployment has a status {to_all:.1f}s after operator start "
                f"(target <= 60 s); {placed} Placed, {len(before) - placed} unplaceable; "
                f"peak RSS {rss:.0f} MB (target < 300 MB); settled (a pass that writes nothing) "
                f"after {settled:.1f}s"
            )

            operator.send_signal(signal.SIGTERM)
            operator.wait(timeout=60)
            offset = len(log.read_text())
            restarted = time.monotonic()
            operator = start_operator(kubeconfig, log)
            wait_for(
                lambda: first_pass(log, offset) is not None,
                timeout=600,
                interval=0.5,
                what="the restarted operator's first pass",
            )
            back = time.monotonic() - restarted
            pass_placed, total, writes = first_pass(log, offset) or (0, 0, 0)
            after = statuses(kubectl)
            moved = sum(
                1 for key in before if before[key].get("placements") != after[key].get("placements")
            )
            print(
                f"restart: first full pass {back:.1f}s after start (target <= 60 s): "
                f"{pass_placed}/{total} placed, {writes} writes (status and finalizer), "
                f"{moved} placements changed (target 0); "
                f"peak RSS {peak_rss_mb(operator.pid):.0f} MB"
            )
            operator.send_signal(signal.SIGTERM)
            operator.wait(timeout=60)
        finally:
            plane.down(quiet=True)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )


if __name__ == "__main__":
    main()
