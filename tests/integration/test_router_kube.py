"""The routing table from a real API server: the router follows statuses and specs as they change.

InferenceSites point at two local fake sites; the ModelDeployment's status is written with
``kubectl patch --subresource=status``, as the operator writes it. Every change must reach the
running router through its watches, without a restart.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client

from soberana.operator.kubeconfig import load_configuration
from soberana.serving.router.app import Router, RouterSettings
from soberana.serving.router.kube import ClusterTableSource
from tests.kube import Cluster
from tests.router_sites import FakeSite, running_router, serving

DEADLINE_S = 30


@dataclass
class Setup:
    url: str
    http: aiohttp.ClientSession
    sites: dict[str, str]  # InferenceSite name by jurisdiction
    namespace: str

    async def ask(self) -> tuple[int, str, dict[str, Any]]:
        body = {"model": f"{self.namespace}/chat", "prompt": "hi"}
        async with self.http.post(self.url + "/v1/completions", json=body) as response:
            reply = await response.json(content_type=None)
            return response.status, response.headers.get("X-Soberana-Site", ""), reply


def inference_site(name: str, jurisdiction: str, serve_url: str) -> dict[str, Any]:
    return {
        "apiVersion": "soberana.io/v1alpha1",
        "kind": "InferenceSite",
        "metadata": {"name": name},
        "spec": {
            "tier": "cloud",
            "region": "br-southeast",
            "jurisdiction": jurisdiction,
            "gpus": [{"model": "L4", "count": 2, "memoryGiB": 24, "hourlyCost": 1.0}],
            "latencyMs": {"br-southeast": 5},
            "backend": {"ray": {"dashboardURL": "http://127.0.0.1:1", "serveURL": serve_url}},
        },
    }


def model_deployment(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "soberana.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "chat", "namespace": namespace},
        "spec": {
            "model": {"uri": "file:///models/chat"},
            "residency": {"allowedJurisdictions": ["BR", "CL"]},
        },
    }


def place(cluster: Cluster, namespace: str, site: str, state: str = "Running") -> None:
    placement = {
        "site": site,
        "gpuModel": "L4",
        "replicas": 1,
        "readyReplicas": 1 if state == "Running" else 0,
        "hourlyCost": 1.0,
        "state": state,
    }
    status = {"status": {"placements": [placement]}}
    cluster.kubectl(
        "patch", "mdep", "chat", f"--namespace={namespace}", "--subresource=status",
        "--type=merge", "-p", json.dumps(status),
    )  # fmt: skip


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    try:
        async with asyncio.timeout(DEADLINE_S):
            while not await check():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"not within {DEADLINE_S}s: {what}") from None


@pytest.fixture
async def setup(cluster: Cluster, namespace: str) -> AsyncIterator[Setup]:
    names = {"BR": f"{namespace}-br"[:63], "CL": f"{namespace}-cl"[:63]}
    async with AsyncExitStack() as stack:
        urls = {
            code: await stack.enter_async_context(serving(FakeSite(name).app()))
            for code, name in names.items()
        }
        cluster.apply(*(inference_site(names[code], code, urls[code]) for code in names))
        stack.callback(
            cluster.kubectl, "delete", "isite", *names.values(), "--wait=false", check=False
        )
        cluster.apply(model_deployment(namespace))

        api = client.ApiClient(await load_configuration(str(cluster.kubeconfig)))
        stack.push_async_callback(api.close)
        router = Router(RouterSettings(region="br-southeast"))
        source = ClusterTableSource(api, router.set_table)
        url = await stack.enter_async_context(running_router(router, (source.run,)))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        yield Setup(url, http, names, namespace)


async def test_the_router_follows_statuses_and_site_specs_without_restarting(
    cluster: Cluster, setup: Setup
) -> None:
    async def refused_as_unplaced() -> bool:
        status, _, reply = await setup.ask()
        return status == 503 and "is not placed on any site" in reply["error"]["message"]

    await until(refused_as_unplaced, "the new ModelDeployment is in the table, placed nowhere")

    place(cluster, setup.namespace, setup.sites["BR"], state="Deploying")

    async def not_ready() -> bool:
        status, _, reply = await setup.ask()
        return status == 503 and "placement is Deploying" in reply["error"]["message"]

    await until(not_ready, "a Deploying placement with no ready replica is excluded")

    def served_by(site: str) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            status, served, _ = await setup.ask()
            return status == 200 and served == site

        return check

    place(cluster, setup.namespace, setup.sites["BR"])
    await until(served_by(setup.sites["BR"]), "requests go to the Running placement")

    place(cluster, setup.namespace, setup.sites["CL"])
    await until(served_by(setup.sites["CL"]), "requests follow the placement's move")

    cluster.kubectl(
        "patch", "isite", setup.sites["CL"], "--type=merge",
        "-p", json.dumps({"spec": {"jurisdiction": "US"}}),
    )  # fmt: skip

    async def refused_by_residency() -> bool:
        status, _, reply = await setup.ask()
        return status == 503 and "US is not in allowedJurisdictions [BR, CL]" in str(reply)

    await until(refused_by_residency, "a site that moved out of the residency is never used")

    cluster.kubectl("delete", "mdep", "chat", f"--namespace={setup.namespace}")

    async def unknown() -> bool:
        return (await setup.ask())[0] == 404

    await until(unknown, "a deleted ModelDeployment leaves the table")
