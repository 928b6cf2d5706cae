"""Randomised: no request ever reaches a site outside its allowed jurisdictions, over HTTP.

Hypothesis draws routing tables (which sites each model lists, the model's residency), sites
that fail (5xx or dropped connections), API keys bound to jurisdictions, and batches of requests
with residency and region headers. Each batch goes through a real router to six local sites,
one per jurisdiction or two; every site records the requests it got. At least 1,000 requests in
all are checked against a residency oracle written independently of the router's policy.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Coroutine, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from soberana.serving.router.app import Router, RouterSettings
from soberana.serving.router.auth import api_keys_from_document
from soberana.serving.router.forward import ForwardSettings
from soberana.serving.router.table import table_from_routes
from tests.router_sites import FakeSite, running_router, serving

SITES = {"br1": "BR", "br2": "BR", "scl1": "CL", "us1": "US", "fra1": "DE", "ar1": "AR"}
JURISDICTIONS = sorted(set(SITES.values()) | {"MX"})
REGIONS = ["br-southeast", "cl-central", "us-east"]
KEYS = {"sk-tenant-bound-000000": ["BR", "CL"], "sk-tenant-free-0000000": None}
EXAMPLES = 100
REQUESTS_PER_EXAMPLE = (10, 20)
T = TypeVar("T")


class Harness:
    """Six fake sites served from an event loop in a thread, for synchronous hypothesis tests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.sites = {name: FakeSite(name) for name in SITES}
        self.urls: dict[str, str] = {}
        self._stack = AsyncExitStack()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.run(self._start())

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=120)

    async def _start(self) -> None:
        for name, site in self.sites.items():
            self.urls[name] = await self._stack.enter_async_context(serving(site.app()))

    def close(self) -> None:
        self.run(self._stack.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    harness = Harness()
    try:
        yield harness
    finally:
        harness.close()


@dataclass(frozen=True)
class Model:
    name: str
    allowed: frozenset[str]
    denied: frozenset[str]
    sites: tuple[str, ...]


@dataclass(frozen=True)
class Request:
    model: int  # index into the scenario's models; len(models) asks for an unknown model
    residency: frozenset[str] | None
    region: str | None
    key: str | None


@dataclass(frozen=True)
class Scenario:
    models: tuple[Model, ...]
    latency: dict[str, dict[str, int]]
    failing: dict[str, str]  # site -> "5xx" | "drop"
    keys_required: bool
    requests: tuple[Request, ...]


codes = st.frozensets(st.sampled_from(JURISDICTIONS))


@st.composite
def models(draw: st.DrawFn, index: int) -> Model:
    allowed = draw(codes)
    denied = draw(codes) - allowed
    listed = draw(st.lists(st.sampled_from([*SITES, "ghost"]), unique=True, max_size=7))
    return Model(f"ns/model-{index}", allowed, denied, tuple(listed))


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    model_list = tuple(draw(models(index)) for index in range(draw(st.integers(1, 3))))
    keys_required = draw(st.booleans())
    requests = draw(
        st.lists(
            st.builds(
                Request,
                model=st.integers(0, len(model_list)),
                residency=st.one_of(st.none(), codes.filter(bool)),
                region=st.one_of(st.none(), st.sampled_from(REGIONS)),
                key=st.sampled_from(list(KEYS)) if keys_required else st.none(),
            ),
            min_size=REQUESTS_PER_EXAMPLE[0],
            max_size=REQUESTS_PER_EXAMPLE[1],
        )
    )
    return Scenario(
        models=model_list,
        latency={
            site: draw(st.dictionaries(st.sampled_from(REGIONS), st.integers(0, 300)))
            for site in SITES
        },
        failing=draw(
            st.dictionaries(st.sampled_from(list(SITES)), st.sampled_from(["5xx", "drop"]))
        ),
        keys_required=keys_required,
        requests=tuple(requests),
    )


def may_process(site: str, model: Model, request: Request) -> bool:
    """The oracle: may ``request`` for ``model`` be processed at ``site``?"""
    jurisdiction = SITES.get(site)
    if jurisdiction is None or jurisdiction in model.denied:
        return False
    if model.allowed and jurisdiction not in model.allowed:
        return False
    if request.residency is not None and jurisdiction not in request.residency:
        return False
    bound = KEYS[request.key] if request.key is not None else None
    return bound is None or jurisdiction in bound


def routes(scenario: Scenario, urls: dict[str, str]) -> dict[str, Any]:
    return {
        "sites": [
            {"name": name, "url": urls[name], "jurisdiction": jurisdiction,
             "latencyMs": scenario.latency[name]}
            for name, jurisdiction in SITES.items()
        ],
        "models": [
            {"name": model.name, "sites": list(model.sites),
             "residency": {"allowedJurisdictions": sorted(model.allowed),
                           "deniedJurisdictions": sorted(model.denied)}}
            for model in scenario.models
        ],
    }  # fmt: skip


async def run_scenario(harness: Harness, scenario: Scenario) -> int:
    for name, site in harness.sites.items():
        site.failing_status = 503 if scenario.failing.get(name) == "5xx" else None
        site.drop_connections = scenario.failing.get(name) == "drop"
        site.received.clear()
    settings = RouterSettings(region="br-southeast", forward=ForwardSettings(max_attempts=8))
    router = Router(settings)
    router.set_table(table_from_routes(routes(scenario, harness.urls)))
    if scenario.keys_required:
        router.set_api_keys(
            api_keys_from_document(
                {"keys": [{"tenant": key[:9], "key": key, "residency": bound}
                          for key, bound in KEYS.items()]}
            )
        )  # fmt: skip
    async with running_router(router) as url, aiohttp.ClientSession() as http:
        for request in scenario.requests:
            await check_one(harness, scenario, request, url, http)
    return len(scenario.requests)


async def check_one(
    harness: Harness, scenario: Scenario, request: Request, url: str, http: aiohttp.ClientSession
) -> None:
    known = request.model < len(scenario.models)
    model = (
        scenario.models[request.model]
        if known
        else Model("ns/unknown", frozenset(), frozenset(), ())
    )
    request_id = uuid.uuid4().hex
    headers = {"X-Request-Id": request_id}
    if request.residency is not None:
        headers["X-Soberana-Residency"] = ",".join(sorted(request.residency))
    if request.region is not None:
        headers["X-Soberana-Region"] = request.region
    if request.key is not None:
        headers["Authorization"] = f"Bearer {request.key}"
    body = {"model": model.name, "messages": [{"role": "user", "content": "hi"}]}
    async with http.post(f"{url}/v1/chat/completions", json=body, headers=headers) as response:
        status = response.status
        served_by = response.headers.get("X-Soberana-Site")
        reply = await response.json(content_type=None)

    reached = {
        name
        for name, site in harness.sites.items()
        for received in site.received
        if received.headers.get("X-Request-Id") == request_id
    }
    assert all(may_process(site, model, request) for site in reached), (reached, model, request)

    healthy_compliant = [
        site
        for site in model.sites
        if may_process(site, model, request) and site not in scenario.failing
    ]
    if not known:
        assert status == 404
    elif healthy_compliant:
        assert status == 200, reply
        assert served_by in healthy_compliant
    elif not any(may_process(site, model, request) for site in model.sites):
        assert status == 503
        assert reply["error"]["code"] == "no_compliant_site"
        assert not reached
    else:
        assert status in (500, 503), reply


def test_no_request_ever_reaches_a_site_outside_its_allowed_jurisdictions(
    harness: Harness,
) -> None:
    checked: list[int] = []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(scenarios())
    def each(scenario: Scenario) -> None:
        checked.append(harness.run(run_scenario(harness, scenario)))

    each()
    assert sum(checked) >= 1000
