"""The official ``openai`` client works against the router as it is, errors included."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import openai
import pytest

from soberana.serving.router.app import Router, RouterSettings
from soberana.serving.router.table import table_from_routes
from tests.router_sites import FakeSite, running_router, serving

MODEL = "ml/chat"


@pytest.fixture
async def client() -> AsyncIterator[openai.AsyncOpenAI]:
    router = Router(RouterSettings())
    async with AsyncExitStack() as stack:
        site = await stack.enter_async_context(serving(FakeSite("br1").app()))
        router.set_table(
            table_from_routes(
                {
                    "sites": [{"name": "br1", "url": site, "jurisdiction": "BR"}],
                    "models": [{"name": MODEL, "sites": ["br1"]}],
                }
            )
        )
        url = await stack.enter_async_context(running_router(router))
        openai_client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        stack.push_async_callback(openai_client.close)
        yield openai_client


async def test_chat_completions_plain_and_streamed(client: openai.AsyncOpenAI) -> None:
    answer = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.choices[0].message.content == "hello from br1"
    stream = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True
    )
    pieces = [chunk.choices[0].delta.content async for chunk in stream]
    assert pieces == ["br1-0 ", "br1-1 ", "br1-2 "]


async def test_completions_and_models(client: openai.AsyncOpenAI) -> None:
    completion = await client.completions.create(model=MODEL, prompt="hi")
    assert completion.choices[0].text == "hello from br1"
    assert [model.id async for model in client.models.list()] == [MODEL]


async def test_the_routers_errors_surface_as_the_clients_typed_errors(
    client: openai.AsyncOpenAI,
) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        await client.completions.create(model="ml/unknown", prompt="hi")
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.InternalServerError) as refused:
        await client.completions.create(
            model=MODEL, prompt="hi", extra_headers={"X-Soberana-Residency": "US"}
        )
    assert refused.value.status_code == 503
    assert refused.value.code == "no_compliant_site"
