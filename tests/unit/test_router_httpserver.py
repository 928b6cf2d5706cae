"""The router's HTTP/1.1 server, spoken to in raw bytes: framing, keep-alive, limits, streams."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from soberana.serving.router.httpserver import (
    Answer,
    HttpServer,
    Request,
    Response,
    json_response,
)

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def echo(request: Request) -> Answer:
    """Says what it received, in the body and in headers."""
    return Response(
        200,
        ((b"X-Method", request.method.encode()), (b"X-Target", request.target.encode())),
        request.body,
    )


@asynccontextmanager
async def server(
    handler: Callable[[Request], Awaitable[Answer]] = echo, **limits: float
) -> AsyncIterator[tuple[HttpServer, Callable[[], Awaitable[Streams]]]]:
    serving = HttpServer(
        handler,
        max_body_bytes=int(limits.get("max_body_bytes", 1024)),
        max_head_bytes=int(limits.get("max_head_bytes", 4096)),
        keepalive_s=limits.get("keepalive_s", 75.0),
    )
    await serving.start("127.0.0.1", 0)
    opened: list[asyncio.StreamWriter] = []

    async def connect() -> Streams:
        reader, writer = await asyncio.open_connection("127.0.0.1", serving.port)
        opened.append(writer)
        return reader, writer

    try:
        yield serving, connect
    finally:
        for writer in opened:
            writer.close()
        await serving.close(1.0)


async def response(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes]:
    """Status line, headers (lowercase names) and body (by Content-Length or chunked)."""
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).decode()
    status, *lines = head.split("\r\n")[:-2]
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        body = b""
        while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        await reader.readexactly(2)
    else:
        body = b""
    return status, headers, body


def post(target: str, body: bytes, extra: str = "") -> bytes:
    return (
        f"POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


async def test_requests_on_one_connection_pipelined_or_not_are_answered_in_order() -> None:
    async with server() as (_, connect):
        reader, writer = await connect()
        writer.write(post("/a?q=1", b"one"))
        status, headers, body = await response(reader)
        assert (status, body, headers["x-target"]) == ("HTTP/1.1 200 OK", b"one", "/a?q=1")
        assert headers["content-length"] == "3"
        assert "date" in headers
        assert "connection" not in headers
        writer.write(post("/b", b"two") + post("/c", b"three"))
        assert [(await response(reader))[2] for _ in range(2)] == [b"two", b"three"]


async def test_a_target_in_absolute_form_is_taken_as_its_path_and_query() -> None:
    async with server() as (_, connect):
        reader, writer = await connect()
        writer.write(b"GET http://router:8080/v1/models?x=1 HTTP/1.1\r\nHost: router\r\n\r\n")
        assert (await response(reader))[1]["x-target"] == "/v1/models?x=1"


async def test_http_1_0_closes_unless_asked_to_keep_alive() -> None:
    async with server() as (_, connect):
        reader, writer = await connect()
        writer.write(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert (await response(reader))[1]["connection"] == "keep-alive"
        writer.write(b"GET / HTTP/1.0\r\n\r\n")
        assert (await response(reader))[1]["connection"] == "close"
        assert await asyncio.wait_for(reader.read(), 5) == b""


async def test_head_gets_the_headers_without_the_body() -> None:
    async def fixed(request: Request) -> Answer:
        return json_response({"hello": "world"})

    async with server(fixed) as (_, connect):
        reader, writer = await connect()
        writer.write(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert b"Content-Length: 18\r\n" in head
        assert (await response(reader))[2] == b'{"hello": "world"}'  # the next answer follows


async def test_expect_100_continue_is_answered_before_the_body_is_sent() -> None:
    async with server() as (_, connect):
        reader, writer = await connect()
        writer.write(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
        )
        assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == (
            b"HTTP/1.1 100 Continue\r\n\r\n"
        )
        writer.write(b"body")
        assert (await response(reader))[2] == b"body"


async def test_a_chunked_request_body_reaches_the_handler_whole() -> None:
    async with server() as (_, connect):
        reader, writer = await connect()
        writer.write(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        )
        assert (await response(reader))[2] == b"abcde"


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (post("/", b"x" * 2000), "HTTP/1.1 413 Request Entity Too Large"),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"400\r\n" + b"x" * 1024 + b"\r\n" + b"400\r\n" + b"x" * 1024 + b"\r\n",
            "HTTP/1.1 413 Request Entity Too Large",
        ),
        (b"GET / HTTP/1.1\r\n" + b"X-Big: " + b"y" * 8000 + b"\r\n\r\n",
         "HTTP/1.1 431 Request Header Fields Too Large"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", "HTTP/1.1 400 Bad Request"),
        (b"NOT HTTP\r\n\r\n", "HTTP/1.1 400 Bad Request"),
    ],
)  # fmt: skip
async def test_requests_over_the_limits_or_malformed_are_refused_and_the_connection_closed(
    request_bytes: bytes, status: str
) -> None:
    async with server() as (_, connect):
        reader, writer = await connect()
        writer.write(request_bytes)
        assert (await response(reader))[0] == status
        assert await asyncio.wait_for(reader.read(), 5) == b""


async def test_a_streamed_answer_is_chunked_and_the_connection_stays_open() -> None:
    release = asyncio.Event()

    async def streaming(request: Request) -> Answer:
        stream = request.stream(200, ((b"Content-Type", b"text/event-stream"),))
        await stream.write(b"data: 1\n\n")
        await release.wait()
        await stream.write(b"data: 2\n\n")
        stream.end()
        return stream

    async with server(streaming) as (_, connect):
        reader, writer = await connect()
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert b"Transfer-Encoding: chunked\r\n" in head
        assert await asyncio.wait_for(reader.readuntil(b"\n\n\r\n"), 5) == b"9\r\ndata: 1\n\n\r\n"
        release.set()  # the first piece arrived before the second was written
        assert await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 5) == (
            b"9\r\ndata: 2\n\n\r\n0\r\n\r\n"
        )
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        release.clear()
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)


async def test_a_stream_to_an_http_1_0_client_ends_with_the_connection() -> None:
    async def streaming(request: Request) -> Answer:
        stream = request.stream(200, ())
        await stream.write(b"abc")
        stream.end()
        return stream

    async with server(streaming) as (_, connect):
        reader, writer = await connect()
        writer.write(b"GET / HTTP/1.0\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 5)
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"Connection: close\r\n" in answer
        assert answer.endswith(b"\r\n\r\nabc")


async def test_an_aborted_stream_shows_truncated_and_a_failing_handler_answers_500() -> None:
    async def failing(request: Request) -> Answer:
        if request.path == "/stream":
            stream = request.stream(200, ())
            await stream.write(b"partial")
        raise RuntimeError("the handler fails")

    async with server(failing) as (_, connect):
        reader, writer = await connect()
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await response(reader))[0] == "HTTP/1.1 500 Internal Server Error"
        writer.write(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 5)
        assert answer.endswith(b"7\r\npartial\r\n")  # no terminating chunk: truncated


async def test_a_client_that_leaves_cancels_the_work_done_for_it() -> None:
    outcome: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    async def streaming(request: Request) -> Answer:
        stream = request.stream(200, ())
        try:
            for _ in range(1000):
                await stream.write(b"x" * 65536)
                await asyncio.sleep(0.001)
        except (ConnectionResetError, asyncio.CancelledError) as error:
            outcome.set_result(error)
            raise
        outcome.set_result(None)
        stream.end()
        return stream

    async with server(streaming) as (_, connect):
        reader, writer = await connect()
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
        writer.transport.abort()
        assert isinstance(await asyncio.wait_for(outcome, 10), asyncio.CancelledError)


async def test_an_idle_connection_is_closed_after_the_keepalive_time() -> None:
    async with server(keepalive_s=0.2) as (_, connect):
        reader, writer = await connect()
        writer.write(post("/", b"x"))
        await response(reader)
        assert await asyncio.wait_for(reader.read(), 5) == b""


async def test_closing_lets_the_request_being_answered_finish() -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def slow(request: Request) -> Answer:
        started.set()
        await release.wait()
        return Response(200, body=b"finished")

    async with server(slow) as (serving, connect):
        reader, writer = await connect()
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.wait_for(started.wait(), 5)
        closing = asyncio.create_task(serving.close(5.0))
        await asyncio.sleep(0.05)
        release.set()
        _, headers, body = await response(reader)
        assert (body, headers["connection"]) == (b"finished", "close")
        await asyncio.wait_for(closing, 5)


async def test_an_upgrade_is_not_taken_the_request_is_answered_and_the_connection_closed() -> None:
    async with server() as (_, connect):
        reader, writer = await connect()
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
        status, headers, _ = await response(reader)
        assert (status, headers["connection"]) == ("HTTP/1.1 200 OK", "close")
        assert await asyncio.wait_for(reader.read(), 5) == b""
