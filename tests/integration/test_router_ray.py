"""The router in front of a real Ray Serve site running soberana's runtime with a tiny model.

The Brazilian site is a local Ray cluster with a random tiny GPT-2 deployed from the config
soberana renders; a decoy site in the United States (a small local server that records what it
gets) is in the table too, nearer to the client, but outside the model's residency. The official
``openai`` client talks to the router unchanged, streaming included; no request ever reaches the
decoy.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import openai
import pytest

from soberana.operator.core.api import ModelDeploymentSpec
from soberana.operator.core.placement import Deployment
from soberana.operator.core.render import SiteApplication, render_serve_config, route_prefix
from soberana.operator.devenv.tinymodels import make_language_model
from soberana.serving.router.app import Router, RouterSettings
from soberana.serving.router.table import table_from_routes
from tests.httpjson import call, events
from tests.local_serve import LocalServe, local_serve
from tests.router_sites import FakeSite, running_router, serving

MODEL = "ml/chat"


@pytest.fixture(scope="module")
def ray_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServe]:
    uri = make_language_model(tmp_path_factory.mktemp("models") / "chat").as_uri()
    spec = ModelDeploymentSpec.model_validate(
        {"model": {"uri": uri, "format": "transformers"}, "resources": {"cpus": 1}}
    )
    config = render_serve_config("br1", [SiteApplication(Deployment("ml", "chat", spec), 1)])
    with local_serve() as site:
        site.apply(config)
        yield site


@dataclass
class Routed:
    url: str
    decoy: FakeSite


@pytest.fixture(scope="module")
def routed(ray_site: LocalServe) -> Iterator[Routed]:
    """The router and the decoy, on an event loop of their own, for synchronous clients."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    decoy = FakeSite("us1")
    stack = AsyncExitStack()

    async def start() -> str:
        decoy_url = await stack.enter_async_context(serving(decoy.app()))
        router = Router(RouterSettings(region="br-southeast"))
        router.set_table(
            table_from_routes(
                {
                    "sites": [
                        {"name": "br1", "url": ray_site.serve_url, "jurisdiction": "BR",
                         "latencyMs": {"br-southeast": 5}},
                        {"name": "us1", "url": decoy_url, "jurisdiction": "US",
                         "latencyMs": {"br-southeast": 1}},
                    ],
                    "models": [
                        {"name": MODEL, "residency": {"allowedJurisdictions": ["BR", "CL"]},
                         "sites": ["br1", "us1"]}
                    ],
                }
            )
        )  # fmt: skip
        return await stack.enter_async_context(running_router(router))

    try:
        url = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=60)
        yield Routed(url, decoy)
    finally:
        asyncio.run_coroutine_threadsafe(stack.aclose(), loop).result(timeout=60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


@pytest.fixture
def client(routed: Routed) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{routed.url}/v1", api_key="unused", max_retries=0) as client:
        yield client


CHAT: dict[str, Any] = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "Where is the data processed?"}],
    "max_tokens": 8,
    "temperature": 0,
}


def test_the_openai_client_chats_through_the_router(
    client: openai.OpenAI, ray_site: LocalServe, routed: Routed
) -> None:
    through_router = client.chat.completions.create(**CHAT)
    direct = call(
        "POST", f"{ray_site.serve_url}{route_prefix('ml', 'chat')}/v1/chat/completions", CHAT
    ).json()
    assert through_router.model == MODEL
    assert through_router.choices[0].message.content == direct["choices"][0]["message"]["content"]
    assert [model.id for model in client.models.list()] == [MODEL]
    assert routed.decoy.received == []


def test_a_streamed_chat_passes_through_event_by_event(
    client: openai.OpenAI, ray_site: LocalServe, routed: Routed
) -> None:
    direct_url = f"{ray_site.serve_url}{route_prefix('ml', 'chat')}/v1/chat/completions"
    direct = [event for event in events(direct_url, {**CHAT, "stream": True}) if event != "[DONE]"]
    stream = client.chat.completions.create(**CHAT, stream=True)
    pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
    assert len(pieces) > 1
    whole = client.chat.completions.create(**CHAT).choices[0].message.content
    assert "".join(pieces) == whole
    assert len(pieces) == len(direct)  # the router neither merged nor split events
    assert routed.decoy.received == []


def test_completions_with_any_residency_header_never_leave_the_allowed_jurisdictions(
    client: openai.OpenAI, routed: Routed
) -> None:
    headers = ["BR", "CL", "US", "BR,US", "CL,US", "DE", None]
    served = refused = 0
    for residency, region in itertools.product(headers, ["br-southeast", "us-east", None]):
        extra = {"X-Soberana-Residency": residency} if residency else {}
        if region:
            extra["X-Soberana-Region"] = region
        try:
            completion = client.completions.create(
                model=MODEL, prompt="Ray Serve", max_tokens=2, extra_headers=extra
            )
            assert completion.model == MODEL
            served += 1
        except openai.InternalServerError as error:
            assert error.code == "no_compliant_site"
            assert residency is not None and "BR" not in residency
            refused += 1
    assert served and refused
    assert routed.decoy.received == []
