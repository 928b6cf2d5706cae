"""The router against a hostile client and a misbehaving site (issue 12, findings 1 to 8).

Requests go over raw sockets where a well-behaved client library would not send them (or would
normalise them first). Every wait is bounded by a deadline: a router that waits for a body it
should not read, or for a site that never answers, fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from soberana.serving.router.app import Router, RouterSettings, serving_router
from soberana.serving.router.auth import api_keys_from_document
from soberana.serving.router.forward import ForwardSettings
from soberana.serving.router.table import table_from_routes
from tests.router_sites import FakeSite, serving

MODEL = "ml/chat"
KEY_A = "sk-tenant-a-0123456789"
KEY_B = "sk-tenant-b-0123456789"
DEADLINE_S = 10.0  # for answers that must come at once; the router's own timeouts are far longer


@dataclass
class Setup:
    port: int
    router: Router
    sites: dict[str, FakeSite]
    connections: Callable[[], int]  # client connections the router holds

    async def exchange(self, data: bytes) -> bytes:
        """Send ``data`` on a new connection; the first response that comes back, whole."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(data)
            async with asyncio.timeout(DEADLINE_S):
                return await read_response(reader)
        finally:
            writer.close()

    def hits(self, site: str) -> int:
        return len(self.sites[site].received)


async def read_response(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    length = next(
        (int(x.partition(b":")[2]) for x in lines if x.startswith(b"content-length:")), None
    )
    if length is not None:
        return head + await reader.readexactly(length)
    if b"transfer-encoding: chunked" not in lines:
        return head + await reader.read()
    body = b""
    while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
        body += (await reader.readexactly(size + 2))[:-2]
    await reader.readuntil(b"\r\n")
    return head + body


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def body_of(answer: bytes) -> Any:
    return json.loads(answer.partition(b"\r\n\r\n")[2])


def post(path: str, body: bytes, key: str | None = KEY_A, length: int | None = None) -> bytes:
    auth = b"Authorization: Bearer %s\r\n" % key.encode() if key else b""
    return (
        b"POST %s HTTP/1.1\r\nHost: router\r\nContent-Type: application/json\r\n%s"
        b"Content-Length: %d\r\n\r\n%s"
        % (path.encode(), auth, len(body) if length is None else length, body)
    )


def chat(model: str = MODEL) -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode()


def routes(urls: dict[str, str]) -> dict[str, Any]:
    return {
        "sites": [
            {"name": "br1", "url": urls["br1"], "jurisdiction": "BR",
             "latencyMs": {"br-southeast": 5}},
            {"name": "scl1", "url": urls["scl1"], "jurisdiction": "CL",
             "latencyMs": {"br-southeast": 60}},
        ],
        "models": [
            {"name": MODEL, "sites": ["br1", "scl1"]},
            {"name": "ml/other", "sites": ["br1", "scl1"]},
            {"name": "ml/br-only", "residency": {"allowedJurisdictions": ["BR"]},
             "sites": ["br1"]},
        ],
    }  # fmt: skip


@asynccontextmanager
async def router_for(
    sites: dict[str, str], settings: RouterSettings, keys: bool = True
) -> AsyncIterator[tuple[Router, int, Callable[[], int]]]:
    router = Router(settings)
    router.set_table(table_from_routes(routes(sites)))
    if keys:
        router.set_api_keys(
            api_keys_from_document(
                {"keys": [{"tenant": "a", "key": KEY_A}, {"tenant": "b", "key": KEY_B}]}
            )
        )
    async with serving_router(router, "127.0.0.1", 0, shutdown_timeout_s=0.5) as server:
        yield router, server.port, lambda: len(server.connections)


@pytest.fixture
async def setup(request: pytest.FixtureRequest) -> AsyncIterator[Setup]:
    """The router in front of two fake sites; ``indirect`` parametrisation sets its settings
    (RouterSettings' fields, ``forward`` those of ForwardSettings)."""
    fields = dict(getattr(request, "param", {}))
    forward = ForwardSettings(**fields.pop("forward", {}))
    settings = RouterSettings(region="br-southeast", forward=forward, **fields)
    sites = {name: FakeSite(name) for name in ("br1", "scl1")}
    async with AsyncExitStack() as stack:
        urls = {
            name: await stack.enter_async_context(serving(site.app()))
            for name, site in sites.items()
        }
        router, port, connections = await stack.enter_async_context(router_for(urls, settings))
        yield Setup(port, router, sites, connections)


async def until(condition: Callable[[], bool], what: str) -> None:
    async with asyncio.timeout(DEADLINE_S):
        while not condition():
            await asyncio.sleep(0.01)
    assert condition(), what


# 1. the key and the model are checked at the head; bodies are capped; connections are freed


@pytest.mark.parametrize(
    ("path", "key", "status"),
    [
        ("/v1/chat/completions", None, 401),
        ("/v1/chat/completions", "sk-wrong-0123456789", 401),
        ("/models/ml/chat/predict", None, 401),
        ("/models/ml/unknown/predict", KEY_A, 404),
    ],
)
async def test_a_request_without_a_key_or_a_model_is_refused_before_its_body(
    setup: Setup, path: str, key: str | None, status: int
) -> None:
    """The head announces 60 MiB and only 1 KiB follows: the answer comes anyway."""
    answer = await setup.exchange(post(path, b"x" * 1024, key, length=60 * 1024 * 1024))
    assert status_of(answer) == status
    assert setup.hits("br1") + setup.hits("scl1") == 0


@pytest.mark.parametrize(
    ("path", "limit"),
    [("/v1/chat/completions", 16 * 1024 * 1024), ("/models/ml/chat/predict", 32 * 1024 * 1024)],
)
async def test_each_endpoint_caps_its_body(setup: Setup, path: str, limit: int) -> None:
    answer = await setup.exchange(post(path, b"{}", length=limit + 1))
    assert status_of(answer) == 413
    assert b"Connection: close" in answer


async def test_a_closed_connection_leaves_nothing_alive_without_the_cycle_collector(
    setup: Setup,
) -> None:
    """The router freezes its startup objects and a full collection rarely runs: whatever a
    connection holds must be freed by reference counting alone once it closes."""

    def alive() -> int:
        return sum(type(o).__name__ in ("_ClientConnection", "Request") for o in gc.get_objects())

    body = b"x" * (1024 * 1024)
    await setup.exchange(post("/v1/chat/completions", chat()))  # warm: the site's connection
    await until(lambda: setup.connections() == 0, "the first client connection closed")
    gc.collect()
    before = alive()
    gc.disable()
    try:
        for key in (None, KEY_A, KEY_A):
            await setup.exchange(post("/v1/chat/completions", body, key))
        for _ in range(5):
            answer = await setup.exchange(post("/v1/chat/completions", chat()))
            assert status_of(answer) == 200
        await until(lambda: setup.connections() == 0, "every client connection closed")
        assert alive() == before, [
            (type(o).__name__, [type(r).__name__ for r in gc.get_referrers(o)])
            for o in gc.get_objects()
            if type(o).__name__ in ("_ClientConnection", "Request")
        ]
    finally:
        gc.enable()


# 2. a site's connection is reused only at a clean message boundary


@asynccontextmanager
async def lying_site(extra: bytes, later: bool) -> AsyncIterator[str]:
    """Answers each request with its number; the first answer is followed by ``extra``, in the
    same write or ``later``, while the router's connection to it waits in the pool."""
    answered = 0

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal answered
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        await reader.readexactly(int(line.partition(b":")[2]))
                answered += 1
                body = b'{"answer": %d}' % answered
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )
                if answered == 1:
                    if later:
                        await writer.drain()
                        await asyncio.sleep(0.1)
                    writer.write(extra)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(connection, "127.0.0.1", 0)
    async with server:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


@pytest.mark.parametrize("later", [False, True], ids=["same-write", "while-pooled"])
@pytest.mark.parametrize(
    "extra",
    [b'HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\n{"answer": "x"}', b"HTTP/1.1 200 OK\r\n"],
    ids=["whole-response", "partial-head"],
)
async def test_a_site_writing_past_its_response_never_corrupts_the_next_one(
    extra: bytes, later: bool
) -> None:
    async with (
        lying_site(extra, later) as url,
        router_for({"br1": url, "scl1": url}, RouterSettings(), keys=False) as (_, port, _n),
    ):
        setup = Setup(port, Router(RouterSettings()), {}, lambda: 0)
        first = await setup.exchange(post("/models/ml/chat/predict", b"{}", None))
        assert body_of(first) == {"answer": 1}
        await asyncio.sleep(0.2)  # let the stray bytes, when later, arrive while pooled
        second = await setup.exchange(post("/models/ml/chat/predict", b"{}", None))
        assert (status_of(second), body_of(second)) == (200, {"answer": 2})


# 3. no dot-segments, no disguised dots or slashes


@pytest.mark.parametrize(
    "rest",
    [
        "/../../ml/br-only/predict",
        "/%2e%2e/%2E%2E/ml/br-only/predict",
        "/..%2f..%2fml/br-only/predict",
        "/..\\..\\ml/br-only/predict",
        "/.%2e/x",
        "/./predict",
        "/a%2fb",
        "/a%5cb",
        "/..",
    ],
)
async def test_dot_segments_and_encoded_separators_are_refused(setup: Setup, rest: str) -> None:
    answer = await setup.exchange(post(f"/models/ml/chat{rest}", b"{}"))
    assert status_of(answer) == 400
    assert body_of(answer)["error"]["code"] == "invalid_path"
    assert setup.hits("br1") + setup.hits("scl1") == 0


async def test_dots_within_a_segment_pass(setup: Setup) -> None:
    answer = await setup.exchange(post("/models/ml/chat/files/v1.2..3/a.txt?x=..", b"{}"))
    assert status_of(answer) == 200
    assert setup.sites["br1"].received[0].path == "/ml/chat/files/v1.2..3/a.txt"


# 4. only the site's own health opens its breaker


@pytest.mark.parametrize(
    "setup",
    [{"failure_threshold": 2, "open_for_s": 60, "forward": {"response_timeout_s": 0.2}}],
    indirect=True,
)
async def test_a_tenants_failing_requests_never_open_the_breaker_for_others(setup: Setup) -> None:
    br1 = setup.sites["br1"]
    br1.failing_paths["broken"] = 500
    br1.silent_paths.add("slow")
    for path in ("broken", "slow") * 3:  # tenant a: 500s and timeouts on its own path
        answer = await setup.exchange(post(f"/models/ml/chat/{path}", b"{}", KEY_A))
        assert status_of(answer) in (500, 504)
    answer = await setup.exchange(post("/v1/chat/completions", chat("ml/other"), KEY_B))
    assert (status_of(answer), b"X-Soberana-Site: br1" in answer) == (200, True)
    assert setup.router.health["br1"].breaker.consecutive_failures == 0


# 5. a client that leaves takes its request with it; an overall deadline bounds retries


async def test_a_client_that_leaves_cancels_its_request_at_the_site(setup: Setup) -> None:
    setup.sites["br1"].silent_paths.add("slow")
    _, writer = await asyncio.open_connection("127.0.0.1", setup.port)
    writer.write(post("/models/ml/chat/slow", b"{}"))
    await until(lambda: setup.hits("br1") == 1, "the site has the request")
    writer.transport.abort()
    await until(lambda: setup.router.health["br1"].in_flight == 0, "the router let go of it")
    assert setup.hits("scl1") == 0  # and did not send it elsewhere


@pytest.mark.parametrize("setup", [{"forward": {"request_timeout_s": 0.3}}], indirect=True)
async def test_the_request_deadline_bounds_every_attempt(setup: Setup) -> None:
    for site in setup.sites.values():
        site.silent_paths.add("slow")
    answer = await setup.exchange(b"GET /models/ml/chat/slow HTTP/1.1\r\nHost: r\r\n"
                                  b"Authorization: Bearer %s\r\n\r\n" % KEY_A.encode())  # fmt: skip
    assert (status_of(answer), body_of(answer)["error"]["code"]) == (504, "deadline_exceeded")


# 6. malformed input gets a clean 4xx and no traceback


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET http://[::1 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET http://[::1]/healthz HTTP/1.1\r\nHost: x\r\n\r\n", 200),
        (b"GET /healthz HTTP/1.1\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.0\r\n\r\n", 200),
        (b"GET /healthz\r\n\r\n", 400),
        (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 405),
        (b"TRACE / HTTP/1.1\r\nHost: x\r\n\r\n", 405),
        (post("/v1/chat/completions", b'{"model": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"), 400),
    ],
    ids=[
        "bad-url",
        "absolute-form",
        "no-host",
        "two-hosts",
        "http-1.0-without-host",
        "http-0.9",
        "connect",
        "trace",
        "nested-json",
    ],
)
async def test_malformed_requests_get_a_clean_4xx(
    setup: Setup, caplog: pytest.LogCaptureFixture, request_bytes: bytes, status: int
) -> None:
    with caplog.at_level(logging.WARNING):
        answer = await setup.exchange(request_bytes)
    assert status_of(answer) == status
    assert not [record for record in caplog.records if record.exc_info], caplog.text


# 7. a site's own X-Soberana-* headers are not relayed; its head is bounded


async def test_a_sites_soberana_headers_are_stripped(setup: Setup) -> None:
    setup.sites["br1"].headers.update({"X-Soberana-Site": "evil", "X-Soberana-Residency": "US"})
    answer = await setup.exchange(post("/v1/chat/completions", chat()))
    head = answer.partition(b"\r\n\r\n")[0].lower()
    assert head.count(b"x-soberana-") == 1
    assert b"x-soberana-site: br1" in head


async def test_a_site_with_an_oversized_head_is_a_failed_site() -> None:
    async def huge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nX-Big: " + b"x" * (1024 * 1024) + b"\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(huge, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    async with server, router_for({"br1": url, "scl1": url}, RouterSettings(), keys=False) as r:
        setup = Setup(r[1], r[0], {}, r[2])
        answer = await setup.exchange(b"GET /models/ml/chat/x HTTP/1.1\r\nHost: r\r\n\r\n")
        assert status_of(answer) == 503
        assert len(answer) < 64 * 1024


# 8. a head must arrive in time; client connections are bounded


@pytest.mark.parametrize("setup", [{"header_timeout_s": 0.3}], indirect=True)
async def test_a_head_that_dawdles_gets_408(setup: Setup) -> None:
    answer = await setup.exchange(b"GET /healthz HTTP/1.1\r\nHo")
    assert status_of(answer) == 408
    answer = await setup.exchange(b"")  # a connection that never sends anything
    assert status_of(answer) == 408


@pytest.mark.parametrize("setup", [{"max_connections": 2}], indirect=True)
async def test_connections_over_the_limit_get_503(setup: Setup) -> None:
    held = [await asyncio.open_connection("127.0.0.1", setup.port) for _ in range(2)]
    try:
        await until(lambda: setup.connections() == 2, "both connections taken")
        answer = await setup.exchange(b"GET /healthz HTTP/1.1\r\nHost: r\r\n\r\n")
        assert status_of(answer) == 503
    finally:
        for _, writer in held:
            writer.close()
    await until(lambda: setup.connections() == 0, "the held connections closed")
    answer = await setup.exchange(b"GET /healthz HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n")
    assert status_of(answer) == 200


async def test_a_5xx_too_large_to_buffer_is_passed_on_without_its_body() -> None:
    async def failing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"x" * 65536
        for _ in range(64):  # 4 MiB, more than the router buffers
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(failing, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    async with server, router_for({"br1": url, "scl1": url}, RouterSettings(), keys=False) as r:
        setup = Setup(r[1], r[0], {}, r[2])
        answer = await setup.exchange(post("/models/ml/br-only/x", b"{}", None))
        assert status_of(answer) == 500
        assert len(answer) < 64 * 1024
