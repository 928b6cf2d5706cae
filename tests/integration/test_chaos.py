"""Chaos: the operator is SIGKILLed at random points while deployments and sites change.

A real API server, two real Ray clusters as sites (BR and CL, two GPUs each) and the operator as a
real process. A seeded sequence of steps creates, edits and deletes ModelDeployments and cordons
and uncordons sites; after most steps the operator is killed with SIGKILL after a random delay and
started again. Meanwhile a watcher checks that no deleted ModelDeployment disappears while a site
still lists its Serve application. Once the operator has settled, the test checks that no pool is
over capacity, no placement breaks residency, and every site runs exactly the applications that the
statuses place there (no orphan, none missing).

Reproduce a run with ``SOBERANA_CHAOS_SEED=<seed> pytest tests/integration/test_chaos.py``; the
seed and every step are printed.
"""

from __future__ import annotations

import base64
import json
import os
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from soberana.operator.devenv.controlplane import wait_for
from soberana.operator.devenv.raysites import RaySite, start_ray_site
from soberana.operator.devenv.tinymodels import make_scripted_model
from tests.httpjson import call
from tests.integration.operator_process import OperatorProcess
from tests.kube import Cluster

LABEL = "test.soberana.io/chaos"
SEED = int(os.environ.get("SOBERANA_CHAOS_SEED", "20261205"))
STEPS = 8
GPUS_PER_SITE = 2
JURISDICTIONS = {"br": "BR", "cl": "CL"}


@pytest.fixture(scope="module")
def ray_sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, RaySite]]:
    root = tmp_path_factory.mktemp("chaos-sites")
    sites: dict[str, RaySite] = {}
    try:
        sites["br"] = start_ray_site(
            "chaos-br", root, worker_ports=(21000, 21499), num_gpus=GPUS_PER_SITE
        )
        sites["cl"] = start_ray_site(
            "chaos-cl", root, worker_ports=(21500, 21999), num_gpus=GPUS_PER_SITE
        )
        yield sites
    finally:
        for site in sites.values():
            site.stop()


def applications(site: RaySite) -> dict[str, Any]:
    reply = call("GET", f"{site.dashboard_url}/api/serve/applications/", headers=site.auth)
    assert reply.status == 200, reply.body
    return dict(reply.json().get("applications") or {})


class Chaos:
    """The world under test, the seeded steps, and the checks."""

    def __init__(
        self,
        cluster: Cluster,
        namespace: str,
        ray_sites: dict[str, RaySite],
        operator: OperatorProcess,
        model: Path,
    ) -> None:
        self.cluster, self.namespace, self.ray_sites = cluster, namespace, ray_sites
        self.operator, self.model = operator, model
        self.rng = random.Random(SEED)
        self.site_names = {key: f"{namespace}-{key}" for key in ray_sites}
        self.live: dict[str, list[str]] = {}  # deployment name -> allowed jurisdictions
        self.deleted: set[str] = set()
        self.next_id = 0
        self.violations: list[str] = []
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch_deletions, daemon=True)

    # ------------------------------------------------------------------ world

    def sites(self) -> list[dict[str, Any]]:
        return [
            {
                "apiVersion": "soberana.io/v1alpha1",
                "kind": "InferenceSite",
                "metadata": {"name": self.site_names[key], "labels": {LABEL: self.namespace}},
                "spec": {
                    "tier": "onprem",
                    "region": "br-southeast",
                    "jurisdiction": JURISDICTIONS[key],
                    "currency": "USD",
                    "gpus": [
                        {"model": "L4", "count": GPUS_PER_SITE, "memoryGiB": 24, "hourlyCost": 1.0}
                    ],
                    "latencyMs": {"br-southeast": 5 if key == "br" else 40},
                    "backend": {
                        "ray": {
                            "dashboardURL": ray.dashboard_url,
                            "serveURL": ray.serve_url,
                            "tokenSecretRef": {"name": f"ray-token-{key}", "key": "token"},
                        }
                    },
                },
            }
            for key, ray in self.ray_sites.items()
        ]

    def deployment(self, name: str, allowed: list[str], replicas: int) -> dict[str, Any]:
        return {
            "apiVersion": "soberana.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": name},
            "spec": {
                "model": {"uri": f"file://{self.model}", "format": "torchscript"},
                "replicas": replicas,
                "resources": {"gpus": 1, "cpus": 0.1},
                "traffic": [{"region": "br-southeast", "weight": 1}],
                "residency": {"allowedJurisdictions": allowed},
                "placement": {"siteSelector": {"matchLabels": {LABEL: self.namespace}}},
            },
        }

    # ------------------------------------------------------------------ steps

    def step(self, number: int) -> None:
        actions = ["create", "edit", "delete", "cordon"] if self.live else ["create"]
        if len(self.live) < 2:
            actions.append("create")
        action = self.rng.choice(actions)
        if action == "create":
            name = f"d{self.next_id}"
            self.next_id += 1
            allowed = self.rng.choice([["BR"], ["CL"], ["BR", "CL"]])
            self.live[name] = allowed
            replicas = self.rng.randint(1, 2)
            detail = f"create {name} allowed={allowed} replicas={replicas}"
            self.cluster.apply(self.deployment(name, allowed, replicas), namespace=self.namespace)
        elif action == "edit":
            name = self.rng.choice(sorted(self.live))
            allowed = self.rng.choice([["BR"], ["CL"], ["BR", "CL"]])
            replicas = self.rng.randint(1, 2)
            self.live[name] = allowed
            detail = f"edit {name} allowed={allowed} replicas={replicas}"
            self.cluster.apply(self.deployment(name, allowed, replicas), namespace=self.namespace)
        elif action == "delete":
            name = self.rng.choice(sorted(self.live))
            del self.live[name]
            self.deleted.add(name)
            detail = f"delete {name}"
            self.cluster.kubectl("delete", "mdep", name, "-n", self.namespace, "--wait=false")
        else:
            key = self.rng.choice(sorted(self.site_names))
            cordoned = self.rng.random() < 0.5
            detail = f"cordon {key}={cordoned}"
            self.cluster.kubectl(
                "patch",
                "isite",
                self.site_names[key],
                "--type=merge",
                "-p",
                f'{{"spec": {{"cordoned": {str(cordoned).lower()}}}}}',
            )
        kill_after = self.rng.uniform(0.0, 3.0) if self.rng.random() < 0.75 else None
        print(f"step {number}: {detail}; SIGKILL after {kill_after}")
        if kill_after is not None:
            self._stop.wait(kill_after)
            assert self.operator.process is not None
            self.operator.process.kill()
            self.operator.process.wait(timeout=30)
            self.operator.start()
        else:
            self._stop.wait(self.rng.uniform(1.0, 3.0))

    # ------------------------------------------------------------------ checks

    def start_watching(self) -> None:
        self._watcher.start()

    def stop_watching(self) -> None:
        self._stop.set()
        self._watcher.join(timeout=30)

    def _watch_deletions(self) -> None:
        """A deleted deployment may disappear only once no site lists its application."""
        gone: set[str] = set()
        while not self._stop.wait(0.3):
            for name in sorted(self.deleted - gone):
                found = self.cluster.kubectl(
                    "get", "mdep", name, "-n", self.namespace, "-o", "name", check=False
                )
                if found.returncode == 0:
                    continue
                gone.add(name)
                app = f"{self.namespace}-{name}"
                for key, site in self.ray_sites.items():
                    listed = applications(site)
                    if app in listed:
                        self.violations.append(
                            f"{name} disappeared while site {key} lists {app} "
                            f"({listed[app].get('status')})"
                        )

    def statuses(self) -> dict[str, dict[str, Any]]:
        listed = self.cluster.kubectl("get", "mdep", "-n", self.namespace, "-o", "json").stdout
        items = json.loads(listed)["items"]
        return {item["metadata"]["name"]: item for item in items}

    def settled(self) -> bool:
        objects = self.statuses()
        if set(objects) != set(self.live):
            return False  # a deleted one still waits for its finalizer, or a watch lags
        expected: dict[str, set[str]] = {key: set() for key in self.ray_sites}
        by_site = {name: key for key, name in self.site_names.items()}
        for name, obj in objects.items():
            status = obj.get("status") or {}
            if status.get("observedGeneration") != obj["metadata"]["generation"]:
                return False
            for placement in status.get("placements") or []:
                if placement.get("state") != "Running":
                    return False
                expected[by_site[placement["site"]]].add(f"{self.namespace}-{name}")
        for key, site in self.ray_sites.items():
            apps = applications(site)
            ours = {name for name in apps if name.startswith(f"{self.namespace}-")}
            if ours != expected[key]:
                return False
            if any(apps[name].get("status") != "RUNNING" for name in ours):
                return False
        return True

    def check_invariants(self) -> None:
        claimed: dict[str, int] = {}
        for name, obj in self.statuses().items():
            allowed = obj["spec"]["residency"]["allowedJurisdictions"]
            for placement in obj["status"].get("placements") or []:
                key = {v: k for k, v in self.site_names.items()}[placement["site"]]
                assert JURISDICTIONS[key] in allowed, f"{name} runs in {key}, allowed {allowed}"
                claimed[key] = claimed.get(key, 0) + placement["replicas"]
        for key, count in claimed.items():
            assert count <= GPUS_PER_SITE, f"site {key} has {count} of {GPUS_PER_SITE} GPUs claimed"
        assert self.violations == []


def test_sigkill_during_rollouts_leaves_a_consistent_world(
    cluster: Cluster, namespace: str, ray_sites: dict[str, RaySite], tmp_path: Path
) -> None:
    print(f"chaos seed {SEED} (SOBERANA_CHAOS_SEED reproduces it)")
    model = make_scripted_model(tmp_path / "model")
    for key, site in ray_sites.items():
        cluster.apply(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": f"ray-token-{key}"},
                "data": {"token": base64.b64encode(site.token.encode()).decode()},
            },
            namespace=namespace,
        )
    operator = OperatorProcess(
        cluster.kubeconfig,
        tmp_path / "operator.log",
        "--secrets-namespace",
        namespace,
        "--probe-interval",
        "1",
        "--unhealthy-after",
        "20",
    )
    chaos = Chaos(cluster, namespace, ray_sites, operator, model)
    cluster.apply(*chaos.sites())
    operator.start()
    chaos.start_watching()
    try:
        for number in range(STEPS):
            chaos.step(number)
        wait_for(chaos.settled, timeout=300, interval=1, what="the world to settle")
        chaos.check_invariants()

        for name in sorted(chaos.live):
            cluster.kubectl("delete", "mdep", name, "-n", namespace, "--wait=false")
            chaos.deleted.add(name)
        chaos.live.clear()
        wait_for(lambda: chaos.statuses() == {}, timeout=180, interval=1, what="deletions")
        for key, site in ray_sites.items():
            left = [name for name in applications(site) if name.startswith(f"{namespace}-")]
            assert left == [], f"site {key} still runs {left}"
        chaos.stop_watching()
        assert chaos.violations == []
    finally:
        chaos.stop_watching()
        operator.stop()
        print(f"---- operator log ----\n{operator.log.read_text()[-8000:]}")
        cluster.kubectl("delete", "isite", *chaos.site_names.values(), "--wait=false", check=False)
