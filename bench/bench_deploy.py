"""Deploy latency: ``kubectl apply`` to first inference through soberana, against Ray's own PUT.

On one real local Ray site, in one run and side by side:

* **ray**: ``PUT /api/serve/applications/`` of the very config soberana renders, then poll the
  Serve URL until ``/predict`` answers 200;
* **soberana**: ``kubectl apply`` of a ModelDeployment on a real API server, with the site's
  InferenceSite in place and the operator running, then poll the same way.

The Ray runs come first: once an InferenceSite names the cluster, the operator owns its whole
Serve config and removes applications it did not place.

Each path deploys a fresh application (a new name) and the application is removed between runs.
Prints both medians and their ratio (target <= 1.2); asserts nothing.

    python -m bench.bench_deploy [--runs 3]
"""

from __future__ import annotations

import argparse
import base64
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from soberana.operator.core.api import ModelDeploymentSpec
from soberana.operator.core.crds import custom_resource_definitions
from soberana.operator.core.placement.world import Deployment
from soberana.operator.core.render import SiteApplication, render_serve_config
from soberana.operator.devenv.binaries import ensure_all
from soberana.operator.devenv.controlplane import ControlPlane, wait_for
from soberana.operator.devenv.raysites import RaySite, start_ray_site
from soberana.operator.devenv.tinymodels import SCRIPTED_FEATURES, make_scripted_model
from tests.httpjson import call

NAMESPACE = "bench"


def spec(model: Path) -> dict[str, Any]:
    return {
        "model": {"uri": f"file://{model}", "format": "torchscript"},
        "replicas": 1,
        "resources": {"gpus": 1, "cpus": 0.5},
        "traffic": [{"region": "br-southeast", "weight": 1}],
    }


def apply(kubectl: list[str], documents: list[dict[str, Any]]) -> None:
    subprocess.run(
        [*kubectl, "apply", "-f", "-"],
        input=yaml.safe_dump_all(documents),
        text=True,
        check=True,
        capture_output=True,
    )


def first_inference(site: RaySite, name: str, started: float) -> float:
    body = {"inputs": [[0.5] * SCRIPTED_FEATURES]}

    def answers() -> bool:
        try:
            return (
                call("POST", f"{site.serve_url}/{NAMESPACE}/{name}/predict", body, timeout=5).status
                == 200
            )
        except OSError:
            return False

    wait_for(answers, timeout=300, interval=0.1, what=f"{name} to answer")
    return time.monotonic() - started


def empty(site: RaySite) -> None:
    call(
        "PUT",
        f"{site.dashboard_url}/api/serve/applications/",
        {"applications": []},
        headers=site.auth,
    )
    wait_for(
        lambda: (
            not call("GET", f"{site.dashboard_url}/api/serve/applications/", headers=site.auth)
            .json()
            .get("applications")
        ),
        timeout=300,
        interval=0.5,
        what="the site to be empty",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    options = parser.parse_args()
    binaries = ensure_all()
    with tempfile.TemporaryDirectory(prefix="soberana-bench-deploy-") as tmp:
        work = Path(tmp)
        model = make_scripted_model(work / "model")
        plane = ControlPlane(work / "cp", progress=lambda _: None)
        kubeconfig = plane.up(
            binaries=binaries, die_with_parent=True, crds=custom_resource_definitions()
        )
        kubectl = [str(binaries.kubectl), f"--kubeconfig={kubeconfig}"]
        site = start_ray_site("bench-deploy", work, worker_ports=(21000, 21499))
        operator = None
        try:
            ray_times, soberana_times = [], []
            # Ray first, while no InferenceSite names this cluster: once the operator owns the
            # site's config it would (rightly) remove an application it did not place
            for run in range(options.runs):
                name = f"direct-{run}"
                config = render_serve_config(
                    "local",
                    [
                        SiteApplication(
                            Deployment(
                                NAMESPACE, name, ModelDeploymentSpec.model_validate(spec(model))
                            ),
                            1,
                        )
                    ],
                )
                started = time.monotonic()
                reply = call(
                    "PUT",
                    f"{site.dashboard_url}/api/serve/applications/",
                    config,
                    headers=site.auth,
                )
                if reply.status != 200:
                    raise RuntimeError(f"Ray refused the config: {reply.status} {reply.body!r}")
                ray_times.append(first_inference(site, name, started))
                empty(site)

                print(f"run {run}: ray PUT {ray_times[-1]:.2f}s")
            apply(
                kubectl,
                [
                    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
                    {
                        "apiVersion": "v1",
                        "kind": "Secret",
                        "metadata": {"name": "ray", "namespace": NAMESPACE},
                        "data": {"token": base64.b64encode(site.token.encode()).decode()},
                    },
                    {
                        "apiVersion": "soberana.io/v1alpha1",
                        "kind": "InferenceSite",
                        "metadata": {"name": "local"},
                        "spec": {
                            "tier": "onprem",
                            "region": "br-southeast",
                            "jurisdiction": "BR",
                            "gpus": [{"model": "L4", "count": 2, "memoryGiB": 24, "hourlyCost": 1}],
                            "latencyMs": {"br-southeast": 1},
                            "backend": {
                                "ray": {
                                    "dashboardURL": site.dashboard_url,
                                    "serveURL": site.serve_url,
                                    "tokenSecretRef": {"name": "ray", "key": "token"},
                                }
                            },
                        },
                    },
                ],
            )
            with (work / "operator.log").open("ab") as log:
                operator = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "soberana.operator.cli",
                        "operator",
                        "--kubeconfig",
                        str(kubeconfig),
                        "--secrets-namespace",
                        NAMESPACE,
                        "--debounce",
                        "0.1",
                        "--probe-interval",
                        "1",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            for run in range(options.runs):
                name = f"via-soberana-{run}"
                started = time.monotonic()
                apply(
                    kubectl,
                    [
                        {
                            "apiVersion": "soberana.io/v1alpha1",
                            "kind": "ModelDeployment",
                            "metadata": {"name": name, "namespace": NAMESPACE},
                            "spec": spec(model),
                        }
                    ],
                )
                soberana_times.append(first_inference(site, name, started))
                subprocess.run(
                    [*kubectl, "delete", "mdep", name, "-n", NAMESPACE, "--timeout=300s"],
                    check=True,
                    capture_output=True,
                )
                empty(site)
                print(f"run {run}: kubectl apply via soberana {soberana_times[-1]:.2f}s")
            ray_median, ours = statistics.median(ray_times), statistics.median(soberana_times)
            print(
                f"median to first inference: ray PUT {ray_median:.2f}s, kubectl apply via soberana "
                f"{ours:.2f}s, ratio {ours / ray_median:.2f} (target <= 1.2)"
            )
        finally:
            if operator is not None:
                operator.terminate()
                operator.wait(timeout=60)
            site.stop()
            plane.down(quiet=True)
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )


if __name__ == "__main__":
    main()
