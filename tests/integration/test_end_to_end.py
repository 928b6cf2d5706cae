"""End to end: a real API server, the operator, and two real Ray clusters as two sites.

A ModelDeployment is placed, deployed through each site's dashboard REST API, serves real
inference at the site's Serve URL, moves when its site breaks, and is removed when deleted.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from soberana.operator.devenv.controlplane import wait_for
from soberana.operator.devenv.raysites import RaySite, start_ray_site
from soberana.operator.devenv.tinymodels import SCRIPTED_FEATURES, make_scripted_model
from tests.httpjson import call
from tests.integration.operator_process import OperatorProcess
from tests.kube import Cluster

LABEL = "test.soberana.io/e2e"


@pytest.fixture(scope="module")
def ray_sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, RaySite]]:
    root = tmp_path_factory.mktemp("ray-sites")
    sites: dict[str, RaySite] = {}
    try:
        sites["a"] = start_ray_site("e2e-a", root, worker_ports=(20000, 20499))
        sites["b"] = start_ray_site("e2e-b", root, worker_ports=(20500, 20999))
        yield sites
    finally:
        for site in sites.values():
            site.stop()


def inference_site(
    name: str, ray: RaySite, *, cost: float, run: str, secret: str
) -> dict[str, Any]:
    return {
        "apiVersion": "soberana.io/v1alpha1",
        "kind": "InferenceSite",
        "metadata": {"name": name, "labels": {LABEL: run}},
        "spec": {
            "tier": "onprem",
            "region": "br-southeast",
            "jurisdiction": "BR",
            "currency": "USD",
            "gpus": [{"model": "L4", "count": 2, "memoryGiB": 24, "hourlyCost": cost}],
            "latencyMs": {"br-southeast": 5},
            "backend": {
                "ray": {
                    "dashboardURL": ray.dashboard_url,
                    "serveURL": ray.serve_url,
                    "tokenSecretRef": {"name": secret, "key": "token"},
                }
            },
        },
    }


def applications(site: RaySite) -> dict[str, Any]:
    reply = call("GET", f"{site.dashboard_url}/api/serve/applications/", headers=site.auth)
    assert reply.status == 200, reply.body
    return dict(reply.json().get("applications") or {})


def predict(site: RaySite, namespace: str, name: str) -> Any:
    body = {"inputs": [[0.5] * SCRIPTED_FEATURES, [1.0] * SCRIPTED_FEATURES]}
    return call("POST", f"{site.serve_url}/{namespace}/{name}/predict", body, timeout=30)


def status(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    return dict(cluster.get("mdep", name, namespace).get("status") or {})


def test_deploy_serve_fail_over_and_delete(
    cluster: Cluster, namespace: str, ray_sites: dict[str, RaySite], tmp_path: Path
) -> None:
    model = make_scripted_model(tmp_path / "model")
    for key, site in ray_sites.items():
        token = base64.b64encode(site.token.encode()).decode()
        cluster.apply(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": f"ray-token-{key}"},
                "data": {"token": token},
            },
            namespace=namespace,
        )
    names = {"a": f"{namespace}-a", "b": f"{namespace}-b"}
    cluster.apply(
        inference_site(names["a"], ray_sites["a"], cost=1.0, run=namespace, secret="ray-token-a"),
        inference_site(names["b"], ray_sites["b"], cost=3.0, run=namespace, secret="ray-token-b"),
    )
    operator = OperatorProcess(
        cluster.kubeconfig,
        tmp_path / "operator.log",
        "--secrets-namespace",
        namespace,
        "--probe-interval",
        "1",
        "--unhealthy-after",
        "3",
    )
    operator.start()
    try:
        cluster.apply(
            {
                "apiVersion": "soberana.io/v1alpha1",
                "kind": "ModelDeployment",
                "metadata": {"name": "scorer"},
                "spec": {
                    "model": {"uri": f"file://{model}", "format": "torchscript"},
                    "replicas": 1,
                    "resources": {"gpus": 1, "gpuModels": ["L4"], "cpus": 0.5},
                    "traffic": [{"region": "br-southeast", "weight": 1}],
                    "residency": {"allowedJurisdictions": ["BR"]},
                    "placement": {
                        "strategy": "cost",
                        "siteSelector": {"matchLabels": {LABEL: namespace}},
                    },
                },
            },
            namespace=namespace,
        )
        app = f"{namespace}-scorer"

        def available_on(site: str) -> bool:
            current = status(cluster, namespace, "scorer")
            placements = current.get("placements") or []
            conditions = {c["type"]: c["status"] for c in current.get("conditions") or []}
            return (
                [p["site"] for p in placements] == [site]
                and placements[0]["state"] == "Running"
                and conditions.get("Available") == "True"
            )

        wait_for(
            lambda: available_on(names["a"]),
            timeout=300,
            interval=1,
            what="scorer Available on site a",
        )
        assert applications(ray_sites["a"])[app]["status"] == "RUNNING"
        reply = predict(ray_sites["a"], namespace, "scorer")
        assert reply.status == 200, reply.body
        outputs = reply.json()["outputs"]
        assert len(outputs) == 2
        site_a = cluster.get("isite", names["a"])["status"]
        conditions = {c["type"]: c for c in site_a["conditions"]}
        assert conditions["Reachable"]["status"] == "True"

        # break site a: after the grace period the deployment runs on site b, and serves there
        ray_sites["a"].stop()
        wait_for(
            lambda: available_on(names["b"]), timeout=300, interval=1, what="scorer moved to site b"
        )
        assert predict(ray_sites["b"], namespace, "scorer").status == 200
        site_a = cluster.get("isite", names["a"])["status"]
        conditions = {c["type"]: c for c in site_a["conditions"]}
        assert conditions["Reachable"]["status"] == "False"
        assert conditions["Ready"]["status"] == "False"

        # delete: the application leaves site b before the finalizer is released
        cluster.kubectl("delete", "mdep", "scorer", "-n", namespace, "--timeout=120s")
        assert app not in applications(ray_sites["b"])
    finally:
        operator.stop()
        print(f"---- operator log ----\n{operator.log.read_text()[-10000:]}")
        cluster.kubectl("delete", "isite", *names.values(), "--wait=false", check=False)
