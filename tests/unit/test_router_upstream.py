"""The router's client to the sites, against scripted raw HTTP servers: framing, keep-alive,
timeouts, failures and flow control."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from soberana.operator.devenv.controlplane import free_port
from soberana.serving.router.upstream import UpstreamError, Upstreams

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Site:
    url: str
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)


@asynccontextmanager
async def site(script: Script) -> AsyncIterator[Site]:
    """A server that reads each request head and answers it as ``script`` says."""
    state = Site("")

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        head += await reader.readexactly(int(line.partition(b":")[2]))
                state.requests.append(head)
                await script(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(connection, "127.0.0.1", 0)
    state.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/base"
    async with server:
        yield state


def answering(*pieces: bytes, pause_s: float = 0.0) -> Script:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(pause_s)

    return script


OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


@pytest.fixture
async def upstreams() -> AsyncIterator[Upstreams]:
    pool = Upstreams(connect_timeout_s=1.0, response_timeout_s=0.5)
    yield pool
    await pool.close()


async def test_requests_reuse_a_kept_alive_connection(upstreams: Upstreams) -> None:
    async with site(answering(OK)) as served:
        for body in (b'{"n": 1}', b""):
            response = await upstreams.send(served.url, "POST", "/v1/x?q=1", [("X-A", "b")], body)
            assert (response.status, response.media_type, await response.read()) == (
                200,
                b"application/json",
                b"{}",
            )
        assert served.connections == 1
        first, second = served.requests
        assert first.startswith(b"POST /base/v1/x?q=1 HTTP/1.1\r\nHost: 127.0.0.1:")
        assert b"\r\nX-A: b\r\n" in first and b"\r\nContent-Length: 8\r\n" in first
        assert b"User-Agent" not in first and b"Accept" not in first  # nothing added
        assert first.endswith(b'{"n": 1}')
        assert second.endswith(b"Content-Length: 0\r\n\r\n")  # POST says so even without a body


async def test_a_connection_the_site_closes_is_not_reused(upstreams: Upstreams) -> None:
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    async with site(answering(closing)) as served:
        for _ in range(2):
            response = await upstreams.send(served.url, "GET", "/", [], b"")
            assert await response.read() == b"ok"
        assert served.connections == 2


async def test_chunked_and_close_delimited_bodies_are_read_whole(upstreams: Upstreams) -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    async with site(answering(chunked)) as served:
        response = await upstreams.send(served.url, "GET", "/", [], b"")
        assert (response.content_length, await response.read()) == (None, b"abcde")

    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.0 200 OK\r\n\r\nall of it")
        writer.close()

    async with site(until_close) as served:
        response = await upstreams.send(served.url, "GET", "/", [], b"")
        assert await response.read() == b"all of it"


async def test_an_event_stream_arrives_piece_by_piece(upstreams: Upstreams) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
    script = answering(
        head + b"Transfer-Encoding: chunked\r\n\r\n",
        b"7\r\ndata: 1\r\n",
        b"7\r\ndata: 2\r\n",
        b"0\r\n\r\n",
        pause_s=0.05,
    )
    async with site(script) as served:
        response = await upstreams.send(served.url, "POST", "/", [], b"{}")
        assert response.media_type == b"text/event-stream"
        assert [piece async for piece in response.chunks()] == [b"data: 1", b"data: 2"]


async def test_head_and_interim_responses(upstreams: Upstreams) -> None:
    async with site(answering(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")) as served:
        response = await upstreams.send(served.url, "HEAD", "/", [], b"")
        assert (response.content_length, await response.read()) == (100, b"")
    interim = b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK
    async with site(answering(interim)) as served:
        response = await upstreams.send(served.url, "GET", "/", [], b"")
        assert (response.status, await response.read()) == (200, b"{}")


async def test_a_silent_site_times_out_before_its_headers_and_within_its_body(
    upstreams: Upstreams,
) -> None:
    async with site(answering()) as served:
        with pytest.raises(TimeoutError, match=r"silent for 0\.5s"):
            await upstreams.send(served.url, "GET", "/", [], b"")
    partial = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"
    async with site(answering(partial, pause_s=5)) as served:
        response = await upstreams.send(served.url, "GET", "/", [], b"")
        with pytest.raises(TimeoutError):
            await response.read()


async def test_failures_are_upstream_errors_that_say_what_happened(upstreams: Upstreams) -> None:
    with pytest.raises(UpstreamError, match=r"cannot connect to 127\.0\.0\.1:"):
        await upstreams.send(f"http://127.0.0.1:{free_port()}", "GET", "/", [], b"")

    def hanging_up_after(answer: bytes) -> Script:
        async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(answer)
            writer.close()

        return script

    async with site(hanging_up_after(b"")) as served:
        with pytest.raises(UpstreamError, match="closed the connection before its response"):
            await upstreams.send(served.url, "GET", "/", [], b"")
    async with site(hanging_up_after(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab")) as served:
        response = await upstreams.send(served.url, "GET", "/", [], b"")
        with pytest.raises(UpstreamError, match="within its response"):
            await response.read()
    async with site(answering(b"SMTP ready\r\n\r\n")) as served:
        with pytest.raises(UpstreamError, match="invalid HTTP response"):
            await upstreams.send(served.url, "GET", "/", [], b"")


async def test_a_consumer_that_lags_pauses_reading_from_the_site(upstreams: Upstreams) -> None:
    megabyte = b"x" * (1024 * 1024)
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    pieces = [b"%x\r\n%s\r\n" % (len(megabyte), megabyte)] * 16
    async with site(answering(head, *pieces, b"0\r\n\r\n")) as served:
        response = await upstreams.send(served.url, "GET", "/", [], b"")
        await asyncio.sleep(0.3)  # the site writes as fast as it may; nobody reads
        queued = response._response.content.total_bytes
        assert queued < 2 * 1024 * 1024  # the rest waits in the sockets, or the site
        assert sum([len(piece) async for piece in response.chunks()]) == 16 * len(megabyte)


def lying(extra: bytes, *, later: bool) -> Script:
    """Answers each request with its number, the first followed by ``extra``: at once, in the
    same write, or ``later``, while the connection waits in the pool."""
    answered = 0

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal answered
        answered += 1
        body = b"answer %d" % answered
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        if answered == 1:
            if later:
                await writer.drain()
                await asyncio.sleep(0.1)
            writer.write(extra)
        await writer.drain()

    return script


@pytest.mark.parametrize("later", [False, True], ids=["same-write", "while-pooled"])
@pytest.mark.parametrize(
    "extra",
    [b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray", b"HTTP/1.1 20", b"garbage"],
    ids=["whole-response", "partial-head", "garbage"],
)
async def test_a_connection_with_bytes_past_its_response_is_never_reused(
    upstreams: Upstreams, extra: bytes, later: bool
) -> None:
    async with site(lying(extra, later=later)) as served:
        try:
            first = await upstreams.send(served.url, "GET", "/", [], b"")
            assert await first.read() == b"answer 1"
        except UpstreamError as error:  # garbage right after it: the response itself fails
            assert extra == b"garbage" and not later, error
        await asyncio.sleep(0.2)  # the extra bytes, when later, have arrived
        second = await upstreams.send(served.url, "GET", "/", [], b"")
        assert await asyncio.wait_for(second.read(), 5) == b"answer 2"
        if later or extra != b"HTTP/1.1 20":  # such a partial head is dropped, not trusted
            assert served.connections == 2
