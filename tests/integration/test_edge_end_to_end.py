"""End to end at the edge: a CPU-only site serving a real GGUF chat model with llama.cpp.

A real API server, the operator, a real Ray cluster with no GPU as a CPU-only InferenceSite, and
``soberana router`` reading the cluster: a ``gguf`` ModelDeployment of SmolLM2 asking for
``{gpus: 0, cpus: 2, memoryGiB: 1}`` is applied with kubectl, placed on the site's CPU pool,
deployed, shown Available by ``kubectl get mdep``, and the official ``openai`` client streams a
chat completion from it through the router. What cannot be served gets a message naming the field.
"""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from soberana.operator.devenv.controlplane import free_port, wait_for
from soberana.operator.devenv.raysites import RaySite, start_ray_site
from soberana.operator.devenv.tinymodels import smollm2_gguf
from tests.httpjson import call
from tests.integration.operator_process import OperatorProcess
from tests.kube import Cluster

LABEL = "test.soberana.io/edge-e2e"
REGION = "pe-south"
CPU_COUNT = 2


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RaySite]:
    site = start_ray_site(
        "edge-e2e",
        tmp_path_factory.mktemp("ray-edge"),
        worker_ports=(21000, 21499),
        num_gpus=0,
        num_cpus=CPU_COUNT,
        accelerators=(),
    )
    try:
        yield site
    finally:
        site.stop()


def edge_site(name: str, ray: RaySite, run: str) -> dict[str, Any]:
    return {
        "apiVersion": "soberana.io/v1alpha1",
        "kind": "InferenceSite",
        "metadata": {"name": name, "labels": {LABEL: run}},
        "spec": {
            "tier": "edge",
            "region": REGION,
            "jurisdiction": "PE",
            "currency": "USD",
            "cpus": {"count": CPU_COUNT, "memoryGiB": 4, "hourlyCost": 0.02},
            "latencyMs": {REGION: 3},
            "backend": {
                "ray": {
                    "dashboardURL": ray.dashboard_url,
                    "serveURL": ray.serve_url,
                    "tokenSecretRef": {"name": "ray-token", "key": "token"},
                }
            },
        },
    }


def chat_deployment(name: str, run: str, uri: str, cpus: int = 2) -> dict[str, Any]:
    return {
        "apiVersion": "soberana.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": uri, "format": "gguf"},
            "engine": {"name": "llamacpp", "args": {"n_parallel": 4, "n_ctx": 2048}},
            "replicas": 1,
            "resources": {"gpus": 0, "cpus": cpus, "memoryGiB": 1},
            "traffic": [{"region": REGION, "weight": 1}],
            "residency": {"allowedJurisdictions": ["PE"]},
            "placement": {"strategy": "cost", "siteSelector": {"matchLabels": {LABEL: run}}},
        },
    }


def conditions(cluster: Cluster, namespace: str, name: str) -> dict[str, dict[str, Any]]:
    status = cluster.get("mdep", name, namespace).get("status") or {}
    return {c["type"]: c for c in status.get("conditions") or []}


def test_a_gguf_chat_model_on_a_cpu_only_site_streams_through_the_router(
    cluster: Cluster, namespace: str, edge: RaySite, tmp_path: Path
) -> None:
    token = base64.b64encode(edge.token.encode()).decode()
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "ray-token"},
            "data": {"token": token},
        },
        namespace=namespace,
    )
    site = f"{namespace}-edge"
    cluster.apply(edge_site(site, edge, namespace))
    operator = OperatorProcess(
        cluster.kubeconfig, tmp_path / "operator.log", "--secrets-namespace", namespace
    )
    operator.start()
    port = free_port()
    router = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("soberana")),
            "router",
            "--kubeconfig",
            str(cluster.kubeconfig),
            "--port",
            str(port),
            "--region",
            REGION,
        ],
        stdout=(tmp_path / "router.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        cluster.apply(
            chat_deployment("chat", namespace, smollm2_gguf().as_uri()), namespace=namespace
        )

        def available() -> bool:
            status = cluster.get("mdep", "chat", namespace).get("status") or {}
            placements = status.get("placements") or []
            return [(p["site"], p["gpuModel"]) for p in placements] == [
                (site, "cpu")
            ] and conditions(cluster, namespace, "chat").get("Available", {}).get(
                "status"
            ) == "True"

        wait_for(available, timeout=300, interval=1, what="chat Available on the edge site")
        table = cluster.kubectl("get", "mdep", "chat", "-n", namespace).stdout
        header, row = table.splitlines()[:2]
        assert dict(zip(header.split(), row.split(), strict=False))["AVAILABLE"] == "True", table

        def router_knows_it() -> bool:
            reply = call("GET", f"http://127.0.0.1:{port}/v1/models", timeout=5)
            ids = {model["id"] for model in reply.json().get("data", [])}
            return reply.status == 200 and f"{namespace}/chat" in ids

        wait_for(router_knows_it, timeout=60, interval=0.5, what="the router serving the model")
        client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=120
        )
        raw = client.chat.completions.with_raw_response.create(
            model=f"{namespace}/chat",
            messages=[
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "What is the capital of Peru?"},
            ],
            max_tokens=24,
            temperature=0,
            stream=True,
        )
        assert raw.headers.get("x-soberana-site") == site
        pieces = [chunk.choices[0].delta.content or "" for chunk in raw.parse() if chunk.choices]
        assert sum(1 for piece in pieces if piece) > 1
        assert "Lima" in "".join(pieces)

        # more cores than any selected site has: not placed, and the condition says why
        cluster.apply(
            chat_deployment("big", namespace, smollm2_gguf().as_uri(), cpus=CPU_COUNT * 8),
            namespace=namespace,
        )

        def refused() -> bool:
            placed = conditions(cluster, namespace, "big").get("Placed", {})
            return placed.get("status") == "False"

        wait_for(refused, timeout=60, interval=0.5, what="big refused placement")
        message = conditions(cluster, namespace, "big")["Placed"]["message"]
        assert f"{CPU_COUNT * 8} cores" in message, message
        assert "CPU pool" in message, message

        # a gguf model that is not a .gguf file is refused at the API, naming the field
        not_gguf = chat_deployment("notgguf", namespace, "file:///models/smollm2/")
        applied = cluster.kubectl(
            "apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(not_gguf), check=False
        )
        assert applied.returncode != 0
        assert "spec.model.uri" in applied.stderr, applied.stderr
    finally:
        # while the operator runs: it takes the applications down and releases the finalizers
        cluster.kubectl("delete", "mdep", "--all", "-n", namespace, "--timeout=90s", check=False)
        router.terminate()
        router.wait(timeout=30)
        operator.stop()
        print(f"---- operator log ----\n{operator.log.read_text()[-10000:]}")
        cluster.kubectl("delete", "isite", site, "--wait=false", check=False)
