"""The router over HTTP, against small local sites: routing, refusals, retries, streaming, auth.

Three fake sites (Brazil, Chile, United States) serve one model allowed in BR and CL only. A
fake clock drives the circuit breakers, so no test waits for a cooldown.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from soberana.serving.router.app import RequestOutcome, Router, RouterSettings
from soberana.serving.router.auth import api_keys_from_document
from soberana.serving.router.forward import ForwardSettings
from soberana.serving.router.table import table_from_routes
from soberana.serving.router.telemetry import make_telemetry
from tests.router_sites import FakeSite, running_router, serving

MODEL = "ml/chat"
CHAT = "/v1/chat/completions"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
INCOMING_TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Setup:
    url: str
    router: Router
    sites: dict[str, FakeSite]
    clock: FakeClock
    spans: InMemorySpanExporter
    http: aiohttp.ClientSession

    async def post(
        self, path: str, body: Any, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any], str]:
        async with self.http.post(self.url + path, json=body, headers=headers) as response:
            return (
                response.status,
                await response.json(content_type=None),
                response.headers.get("X-Soberana-Site", ""),
            )

    def hits(self, site: str) -> int:
        return len(self.sites[site].received)


def routes(urls: dict[str, str]) -> dict[str, Any]:
    return {
        "sites": [
            {"name": "br1", "url": urls["br1"], "jurisdiction": "BR",
             "latencyMs": {"br-southeast": 5, "cl-central": 60}},
            {"name": "scl1", "url": urls["scl1"], "jurisdiction": "CL",
             "latencyMs": {"br-southeast": 60, "cl-central": 4}},
            {"name": "us1", "url": urls["us1"], "jurisdiction": "US",
             "latencyMs": {"br-southeast": 1, "cl-central": 1}},
        ],
        "models": [
            {"name": MODEL, "residency": {"allowedJurisdictions": ["BR", "CL"]},
             "sites": ["br1", "scl1", "us1"]},
            {"name": "ml/only-us", "sites": ["us1"]},
        ],
    }  # fmt: skip


@pytest.fixture
async def setup(request: pytest.FixtureRequest) -> AsyncIterator[Setup]:
    """The router and three sites; ``indirect`` parametrisation sets the response timeout."""
    sites = {name: FakeSite(name) for name in ("br1", "scl1", "us1")}
    clock = FakeClock()
    spans = InMemorySpanExporter()
    settings = RouterSettings(
        region="br-southeast",
        forward=ForwardSettings(response_timeout_s=getattr(request, "param", 60.0)),
        failure_threshold=2,
        open_for_s=10.0,
    )
    router = Router(settings, make_telemetry(processors=(SimpleSpanProcessor(spans),)), clock)
    async with AsyncExitStack() as stack:
        urls = {
            name: await stack.enter_async_context(serving(site.app()))
            for name, site in sites.items()
        }
        router.set_table(table_from_routes(routes(urls)))
        url = await stack.enter_async_context(running_router(router))
        http = await stack.enter_async_context(aiohttp.ClientSession())
        yield Setup(url, router, sites, clock, spans, http)


def chat(model: str = MODEL, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}


async def test_a_request_goes_to_the_nearest_compliant_site_under_the_model_prefix(
    setup: Setup,
) -> None:
    status, body, site = await setup.post(CHAT, chat())
    assert (status, site) == (200, "br1")
    assert body["choices"][0]["message"]["content"] == "hello from br1"
    assert [r.path for r in setup.sites["br1"].received] == [f"/{MODEL}{CHAT}"]
    assert json.loads(setup.sites["br1"].received[0].body) == chat()
    assert setup.hits("us1") == 0  # nearest of all, but outside the model's residency


async def test_the_region_header_overrides_the_routers_region(setup: Setup) -> None:
    status, _, site = await setup.post(CHAT, chat(), {"X-Soberana-Region": "cl-central"})
    assert (status, site) == (200, "scl1")


async def test_the_residency_header_narrows_the_candidates(setup: Setup) -> None:
    status, _, site = await setup.post(CHAT, chat(), {"X-Soberana-Residency": "cl"})
    assert (status, site) == (200, "scl1")


async def test_no_compliant_site_is_a_503_naming_each_exclusion_and_nothing_is_forwarded(
    setup: Setup,
) -> None:
    status, body, _ = await setup.post(CHAT, chat(), {"X-Soberana-Residency": "US"})
    assert status == 503
    error = body["error"]
    assert error["code"] == "no_compliant_site"
    assert error["type"] == "server_error"
    message = error["message"]
    assert "us1: US is not in allowedJurisdictions [BR, CL] of the model" in message
    assert "br1: BR is outside [US] required by X-Soberana-Residency" in message
    assert "scl1: CL is outside [US] required by X-Soberana-Residency" in message
    assert sum(setup.hits(name) for name in setup.sites) == 0


async def test_an_unknown_model_is_a_404_in_the_same_shape(setup: Setup) -> None:
    status, body, _ = await setup.post(CHAT, chat("ml/nope"))
    assert status == 404
    assert body["error"]["code"] == "model_not_found"
    assert body["error"]["param"] == "model"


@pytest.mark.parametrize(
    ("body", "headers", "code"),
    [
        ({"messages": []}, {}, "invalid_model"),
        ({"model": "chat"}, {}, "invalid_model"),
        (chat(), {"X-Soberana-Residency": "Brazil"}, "invalid_residency"),
        (chat(), {"X-Soberana-Residency": " , "}, "invalid_residency"),
        (chat(), {"X-Soberana-Region": "Sao Paulo"}, "invalid_region"),
    ],
)
async def test_malformed_requests_are_400s_naming_the_problem(
    setup: Setup, body: dict[str, Any], headers: dict[str, str], code: str
) -> None:
    status, reply, _ = await setup.post(CHAT, body, headers)
    assert status == 400
    assert reply["error"]["code"] == code


async def test_a_5xx_is_retried_on_the_next_candidate(setup: Setup) -> None:
    setup.sites["br1"].failing_status = 503
    status, _, site = await setup.post(CHAT, chat())
    assert (status, site) == (200, "scl1")
    assert setup.hits("br1") == 1
    metrics = await (await setup.http.get(setup.url + "/metrics")).text()
    assert (
        'soberana_router_retries_total{model="ml/chat",reason="server_error",site="br1"} 1.0'
        in metrics
    )


async def test_a_dropped_connection_is_retried_on_the_next_candidate(setup: Setup) -> None:
    setup.sites["br1"].drop_connections = True
    status, _, site = await setup.post(CHAT, chat())
    assert (status, site) == (200, "scl1")


@pytest.mark.parametrize("setup", [0.5], indirect=True)
async def test_a_site_silent_past_the_response_timeout_is_retried_only_when_idempotent(
    setup: Setup,
) -> None:
    setup.sites["br1"].hold = asyncio.Event()  # never set
    async with setup.http.get(setup.url + "/models/ml/chat/predict") as response:
        assert (response.status, response.headers["X-Soberana-Site"]) == (200, "scl1")
    status, body, _ = await setup.post(CHAT, chat())  # may have been processed: not sent again
    assert (status, body["error"]["code"]) == (504, "site_timeout")
    assert "br1: timed out" in body["error"]["message"]
    assert setup.hits("scl1") == 1


async def test_a_500_to_a_post_is_passed_on_not_sent_again(setup: Setup) -> None:
    setup.sites["br1"].failing_status = 500
    status, body, site = await setup.post(CHAT, chat())
    assert (status, site, body) == (500, "br1", {"error": {"message": "failing"}})
    assert setup.hits("scl1") == 0
    async with setup.http.get(setup.url + "/models/ml/chat/predict") as response:
        assert (response.status, response.headers["X-Soberana-Site"]) == (200, "scl1")


async def test_when_every_site_answers_5xx_the_last_answer_is_passed_on(setup: Setup) -> None:
    setup.sites["br1"].failing_status = 503
    setup.sites["scl1"].failing_status = 502
    status, body, site = await setup.post(CHAT, chat())
    assert (status, site) == (502, "scl1")
    assert body == {"error": {"message": "failing"}}


async def test_when_every_site_fails_to_answer_the_503_says_what_each_did(setup: Setup) -> None:
    setup.sites["br1"].drop_connections = True
    setup.sites["scl1"].drop_connections = True
    status, body, _ = await setup.post(CHAT, chat())
    assert status == 503
    assert body["error"]["code"] == "no_compliant_site"
    assert "br1: the site closed the connection before its response" in body["error"]["message"]
    assert "us1: US is not in allowedJurisdictions" in body["error"]["message"]
    assert setup.hits("us1") == 0


async def test_the_breaker_opens_then_lets_one_probe_through_after_its_cooldown(
    setup: Setup,
) -> None:
    br1 = setup.sites["br1"]
    br1.drop_connections = True
    for _ in range(2):  # failure_threshold
        assert (await setup.post(CHAT, chat()))[2] == "scl1"
    assert setup.hits("br1") == 2
    assert (await setup.post(CHAT, chat()))[2] == "scl1"
    assert setup.hits("br1") == 2  # open: not even tried
    status, body, _ = await setup.post(CHAT, chat(), {"X-Soberana-Residency": "BR"})
    assert status == 503
    assert "br1: circuit open after 2 consecutive failures" in body["error"]["message"]

    setup.clock.now += 10.0  # cooldown over: half-open
    br1.drop_connections = False
    assert (await setup.post(CHAT, chat()))[2] == "br1"  # the probe succeeds: closed
    assert (await setup.post(CHAT, chat()))[2] == "br1"


async def test_a_failed_probe_opens_the_breaker_for_longer(setup: Setup) -> None:
    setup.sites["br1"].drop_connections = True
    for _ in range(2):
        await setup.post(CHAT, chat())
    setup.clock.now += 10.0
    assert (await setup.post(CHAT, chat()))[2] == "scl1"  # probe to br1 failed, then scl1
    assert setup.hits("br1") == 3
    setup.clock.now += 10.0  # the first cooldown again is not enough now
    assert (await setup.post(CHAT, chat()))[2] == "scl1"
    assert setup.hits("br1") == 3
    setup.clock.now += 10.0
    await setup.post(CHAT, chat())
    assert setup.hits("br1") == 4


async def test_streamed_chunks_reach_the_client_before_the_site_writes_the_next(
    setup: Setup,
) -> None:
    """Each chunk is released at the site only after the previous one came out of the router:
    a router that buffered anything would never let this test finish."""
    gate: asyncio.Queue[bool] = asyncio.Queue()
    setup.sites["br1"].gate = gate
    setup.sites["br1"].chunks = 5
    events: list[str] = []
    async with setup.http.post(setup.url + CHAT, json=chat(stream=True)) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        for index in range(5):
            gate.put_nowait(True)
            line = await asyncio.wait_for(_next_event(response), timeout=10)
            events.append(line)
            assert json.loads(line)["choices"][0]["delta"]["content"] == f"br1-{index} "
        assert await asyncio.wait_for(_next_event(response), timeout=10) == "[DONE]"


async def _next_event(response: aiohttp.ClientResponse) -> str:
    while True:
        line = (await response.content.readline()).decode().strip()
        if line.startswith("data: "):
            return line.removeprefix("data: ")


async def test_a_site_failing_mid_stream_aborts_the_clients_connection(setup: Setup) -> None:
    gate: asyncio.Queue[bool] = asyncio.Queue()
    setup.sites["br1"].gate = gate
    async with setup.http.post(setup.url + CHAT, json=chat(stream=True)) as response:
        gate.put_nowait(True)
        await asyncio.wait_for(_next_event(response), timeout=10)
        gate.put_nowait(False)  # the site dies after its first chunk
        with pytest.raises(aiohttp.ClientPayloadError):
            await asyncio.wait_for(response.read(), timeout=10)
    assert setup.hits("scl1") == 0  # bytes had reached the client: never retried


async def test_a_client_leaving_mid_stream_is_not_held_against_the_site(setup: Setup) -> None:
    gate: asyncio.Queue[bool] = asyncio.Queue()
    setup.sites["br1"].gate = gate
    setup.sites["br1"].chunks = 50
    async with setup.http.post(setup.url + CHAT, json=chat(stream=True)) as response:
        gate.put_nowait(True)
        await asyncio.wait_for(_next_event(response), timeout=10)
        response.connection.transport.abort()  # type: ignore[union-attr]
    health = setup.router.health["br1"]
    async with asyncio.timeout(10):
        while health.in_flight:  # the router notices when it next writes to the client
            gate.put_nowait(True)
            await asyncio.sleep(0.01)
    assert health.breaker.consecutive_failures == 0
    assert setup.hits("scl1") == 0


async def test_trace_context_goes_to_the_site_and_the_span_carries_the_decision(
    setup: Setup,
) -> None:
    await setup.post(CHAT, chat(), {"traceparent": INCOMING_TRACEPARENT})
    sent = setup.sites["br1"].received[0].headers["traceparent"]
    version, trace_id, span_id, _ = sent.split("-")
    assert (version, trace_id) == ("00", TRACE_ID)
    (span,) = setup.spans.get_finished_spans()
    assert span.context is not None
    assert f"{span.context.span_id:016x}" == span_id
    assert span.parent is not None
    assert f"{span.parent.span_id:016x}" == "00f067aa0ba902b7"
    attributes = dict(span.attributes or {})
    assert attributes["soberana.model"] == MODEL
    assert attributes["soberana.site"] == "br1"
    assert attributes["soberana.candidates"] == ("br1", "scl1")
    assert attributes["soberana.excluded"] == (
        "us1: US is not in allowedJurisdictions [BR, CL] of the model",
    )
    assert "rtt 5 ms" in str(attributes["soberana.reason"])
    assert attributes["soberana.retries"] == 0
    assert attributes["http.response.status_code"] == 200


async def test_api_keys_are_required_bind_residency_and_stay_with_the_router(
    setup: Setup,
) -> None:
    setup.router.set_api_keys(
        api_keys_from_document(
            {
                "keys": [
                    {"tenant": "acme", "key": "sk-acme-0123456789", "residency": ["CL"]},
                    {"tenant": "any", "key": "sk-any-0123456789abc"},
                ]
            }
        )
    )
    status, body, _ = await setup.post(CHAT, chat())
    assert (status, body["error"]["code"]) == (401, "invalid_api_key")
    wrong = {"Authorization": "Bearer sk-acme-0123456780"}
    assert (await setup.post(CHAT, chat(), wrong))[0] == 401

    acme = {"Authorization": "Bearer sk-acme-0123456789"}
    status, _, site = await setup.post(CHAT, chat(), acme)
    assert (status, site) == (200, "scl1")  # br1 is nearer, but the key binds CL
    assert "authorization" not in {h.lower() for h in setup.sites["scl1"].received[0].headers}
    status, body, _ = await setup.post(CHAT, chat(), {**acme, "X-Soberana-Residency": "BR"})
    assert status == 503  # a header narrows the key's residency, never widens it
    assert "the API key of tenant acme" in body["error"]["message"]
    assert "sk-acme" not in body["error"]["message"]

    anyone = {"Authorization": "Bearer sk-any-0123456789abc"}
    assert (await setup.post(CHAT, chat(), anyone))[2] == "br1"
    async with setup.http.get(setup.url + "/v1/models", headers=anyone) as models:
        assert models.status == 200
    async with setup.http.get(setup.url + "/v1/models") as models:
        assert models.status == 401


async def test_other_model_apis_pass_through_with_their_path_and_query(setup: Setup) -> None:
    async with setup.http.post(
        setup.url + f"/models/{MODEL}/predict?explain=1", json={"inputs": [[1.0]]}
    ) as response:
        assert response.status == 200
        assert response.headers["X-Soberana-Site"] == "br1"
    (received,) = setup.sites["br1"].received
    assert received.path == f"/{MODEL}/predict"
    assert json.loads(received.body) == {"inputs": [[1.0]]}


async def test_models_health_readiness_and_metrics(setup: Setup) -> None:
    async with setup.http.get(setup.url + "/v1/models") as response:
        listed = await response.json()
    assert listed["object"] == "list"
    assert [model["id"] for model in listed["data"]] == [MODEL, "ml/only-us"]
    async with setup.http.get(setup.url + "/healthz") as response:
        assert response.status == 200
    async with setup.http.get(setup.url + "/readyz") as response:
        assert (await response.json())["models"] == 2
    await setup.post(CHAT, chat())
    async with setup.http.get(setup.url + "/metrics") as response:
        text = await response.text()
    assert 'soberana_router_requests_total{model="ml/chat",outcome="ok",site="br1"} 1.0' in text
    assert "soberana_router_added_latency_seconds_count 1.0" in text
    assert 'soberana_router_circuit_breaker_state{site="br1",state="closed"} 1.0' in text
    assert "soberana_router_table_models 2.0" in text


async def test_readiness_waits_for_a_routing_table() -> None:
    router = Router(RouterSettings())
    async with running_router(router) as url, aiohttp.ClientSession() as http:
        async with http.get(url + "/readyz") as response:
            assert response.status == 503
        async with http.post(url + CHAT, json=chat()) as response:
            assert response.status == 503
            assert (await response.json())["error"]["code"] == "not_ready"


async def test_without_a_span_consumer_trace_context_still_reaches_the_site() -> None:
    site = FakeSite("br1")
    router = Router(RouterSettings())  # nothing records or exports spans
    async with serving(site.app()) as site_url, running_router(router) as url:
        router.set_table(
            table_from_routes(
                {
                    "sites": [{"name": "br1", "url": site_url, "jurisdiction": "BR"}],
                    "models": [{"name": MODEL, "sites": ["br1"]}],
                }
            )
        )
        async with aiohttp.ClientSession() as http:
            for headers in ({"traceparent": INCOMING_TRACEPARENT}, {}):
                async with http.post(url + CHAT, json=chat(), headers=headers) as response:
                    assert response.status == 200
    continued, started = (r.headers["traceparent"].split("-") for r in site.received)
    assert continued[1] == TRACE_ID
    assert continued[2] != "00f067aa0ba902b7"  # the router's own span id
    assert started[1] != TRACE_ID
    assert int(started[1], 16) and int(started[2], 16)


async def test_spans_go_to_an_otlp_endpoint_only_when_one_is_configured() -> None:
    exported: list[tuple[str, str]] = []

    async def collector(request: web.Request) -> web.Response:
        await request.read()
        exported.append((request.path, request.content_type))
        return web.Response()

    app = web.Application()
    app.router.add_post("/v1/traces", collector)
    site = FakeSite("br1")
    async with serving(app) as collector_url, serving(site.app()) as site_url:
        table = table_from_routes(
            {
                "sites": [{"name": "br1", "url": site_url, "jurisdiction": "BR"}],
                "models": [{"name": MODEL, "sites": ["br1"]}],
            }
        )
        for endpoint in (None, f"{collector_url}/v1/traces"):
            router = Router(RouterSettings(), make_telemetry(endpoint))
            router.set_table(table)
            async with (
                running_router(router) as url,
                aiohttp.ClientSession() as http,
                http.post(url + CHAT, json=chat()) as response,
            ):
                assert response.status == 200
            # leaving running_router shut the telemetry down, which flushes the exporter
            assert exported == (
                [] if endpoint is None else [("/v1/traces", "application/x-protobuf")]
            )


async def test_the_outcome_hook_sees_each_routed_request_without_its_key(setup: Setup) -> None:
    outcomes: list[RequestOutcome] = []
    setup.router.on_outcome = outcomes.append
    setup.router.set_api_keys(
        api_keys_from_document(
            {"keys": [{"tenant": "acme", "key": "sk-acme-s3cret-0123", "residency": ["BR"]}]}
        )
    )
    setup.sites["br1"].drop_connections = True
    auth = {"Authorization": "Bearer sk-acme-s3cret-0123", "X-Request-Id": "req-1"}
    status, _, _ = await setup.post(CHAT, chat(), auth)
    assert status == 503
    await setup.post(CHAT, chat(), {"Authorization": "Bearer wrong"})
    setup.sites["br1"].drop_connections = False
    await setup.post(CHAT, chat(), {**auth, "X-Soberana-Residency": "BR,CL"})

    refused, unauthorized, served = outcomes
    assert (refused.request_id, refused.tenant, refused.model) == ("req-1", "acme", MODEL)
    assert (refused.status, refused.refusal, refused.tried) == (503, "no_compliant_site", ("br1",))
    assert refused.site is None and refused.client_region == "br-southeast"
    assert [r.source for r in refused.restrictions] == ["the API key of tenant acme"]
    assert refused.model_residency is not None
    assert refused.model_residency.allowed_jurisdictions == ["BR", "CL"]
    assert (unauthorized.status, unauthorized.refusal, unauthorized.tenant) == (
        401, "invalid_api_key", None)  # fmt: skip
    assert (served.status, served.site, served.site_jurisdiction) == (200, "br1", "BR")
    assert [r.jurisdictions for r in served.restrictions] == [
        frozenset({"BR", "CL"}), frozenset({"BR"})]  # fmt: skip
    assert served.request_bytes == len(json.dumps(chat()))
    assert served.response_bytes > 0
    assert "sk-acme-s3cret-0123" not in repr(outcomes)
