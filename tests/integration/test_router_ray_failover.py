"""Failover between two real Ray Serve sites: one is killed under load, no request fails.

Each site is its own Ray cluster (``ray start --head``) running soberana's runtime with a scripted
model, deployed through the dashboard REST API from the config soberana renders. The router
spreads a bounded load over both; once the first site has answered its share, every process of
that cluster is killed with SIGKILL at once, as if its machine died. Every request must still
succeed, on the survivor from then on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from soberana.operator.core.api import ModelDeploymentSpec
from soberana.operator.core.placement import Deployment
from soberana.operator.core.render import SiteApplication, render_serve_config
from soberana.operator.devenv.raysites import RaySite, start_ray_site
from soberana.operator.devenv.tinymodels import SCRIPTED_FEATURES, make_scripted_model
from soberana.serving.router.app import Router, RouterSettings
from soberana.serving.router.table import table_from_routes
from tests.local_serve import LocalServe
from tests.router_sites import running_router

WORKERS = 8
REQUESTS_PER_WORKER = 100
KILL_AFTER = 150  # answers from the victim before it is killed
RUN_DEADLINE_S = 300


@pytest.fixture(scope="module")
def ray_sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, RaySite]]:
    root = tmp_path_factory.mktemp("ray-sites")
    uri = make_scripted_model(root / "scorer").as_uri()
    spec = ModelDeploymentSpec.model_validate(
        {"model": {"uri": uri, "format": "torchscript"}, "resources": {"cpus": 0.5}}
    )
    sites: dict[str, RaySite] = {}
    try:
        for name, ports in (("rt-br1", (21000, 21499)), ("rt-br2", (21500, 21999))):
            site = sites[name] = start_ray_site(name, root, worker_ports=ports)
            config = render_serve_config(
                name, [SiteApplication(Deployment("ml", "scorer", spec), 1)]
            )
            LocalServe(site.dashboard_url, site.serve_url, site.token).apply(config)
        yield sites
    finally:
        for site in sites.values():
            site.stop()


async def test_killing_one_of_two_loaded_ray_sites_fails_no_request(
    ray_sites: dict[str, RaySite],
) -> None:
    victim, survivor = ray_sites
    router = Router(RouterSettings(region="br-southeast"))
    router.set_table(
        table_from_routes(
            {
                "sites": [
                    {"name": name, "url": site.serve_url, "jurisdiction": "BR",
                     "latencyMs": {"br-southeast": 5}}
                    for name, site in ray_sites.items()
                ],
                "models": [{"name": "ml/scorer", "sites": list(ray_sites)}],
            }
        )
    )  # fmt: skip
    body = {"inputs": [[1.0] * SCRIPTED_FEATURES]}
    served: list[str] = []
    failures: list[str] = []
    killed_at: list[int] = []

    async def worker(http: aiohttp.ClientSession, url: str) -> None:
        for _ in range(REQUESTS_PER_WORKER):
            try:
                async with http.post(f"{url}/models/ml/scorer/predict", json=body) as response:
                    reply: Any = await response.json(content_type=None)
                    if response.status != 200:
                        failures.append(f"{response.status}: {reply}")
                        continue
                    served.append(response.headers["X-Soberana-Site"])
            except aiohttp.ClientError as error:
                failures.append(repr(error))
            if not killed_at and served.count(victim) >= KILL_AFTER:
                ray_sites[victim].kill()
                killed_at.append(len(served))

    async with (
        running_router(router) as url,
        aiohttp.ClientSession() as http,
        asyncio.timeout(RUN_DEADLINE_S),
    ):
        await asyncio.gather(*(worker(http, url) for _ in range(WORKERS)))

    assert failures == []
    assert killed_at, "the victim never got its share of the load"
    assert len(served) == WORKERS * REQUESTS_PER_WORKER
    assert {victim, survivor} <= set(served[: killed_at[0]])
    assert set(served[killed_at[0] + WORKERS :]) == {survivor}
