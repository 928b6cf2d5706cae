"""The router's HTTP/1.1 server: lean enough for its hot path, strict where it must be.

Each client connection parses its requests with httptools (llhttp, the parser of Node.js) and
answers them in the order they came, pipelined ones included, each by a task that runs the
handler. Once a request's head is in, the ``head_check`` decides, before any of the body is read,
whether to refuse it (its answer goes out, its body is never read) or how large its body may be.
A request reaches the handler whole: head and body (``Expect: 100-continue`` is answered when the
connection is free to read it). The handler answers with a complete :class:`Response`, written in
one go with its Content-Length, or streams one: :meth:`Request.stream` sends the head and returns
a :class:`ResponseStream` whose pieces go out as they are written (chunked; or, to an HTTP/1.0
client, until the connection closes), waiting while the client reads slower than they come, until
the stream is ended, or aborted, which closes the connection so that the truncation shows. The
server adds ``Date`` and the framing headers itself. A client that closes its connection cancels
the handler answering it.

Connections are kept alive as HTTP/1.1 (or an HTTP/1.0 client that asks) allows, and closed after
``keepalive_s`` without a request; at most ``max_connections`` are held (more get 503). A head
must arrive within ``header_timeout_s`` (408). A malformed request (a bad target, no Host or two
in HTTP/1.1, no HTTP version) gets 400, CONNECT and TRACE 405, an oversized head 431 and an
oversized body 413, and its connection is closed, after a short linger that drops what the client
still sends, so that the answer is not lost to a reset. A handler that fails gets a 500 (or, once
it has started streaming, an aborted connection). Upgrades (``Connection: Upgrade``) are not
taken: such a request is answered as a plain one, and its connection closed. A lost connection
lets go of everything it held, so that reference counting alone frees it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import urlsplit

import httptools

log = logging.getLogger(__name__)

Headers = Iterable[tuple[bytes, bytes]]
"""Header names and values as they go on the wire, without framing headers or Date."""

_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}
_MAX_PENDING = 8  # pipelined requests read ahead of the one being answered
_JSON = ((b"Content-Type", b"application/json; charset=utf-8"),)


@dataclass(frozen=True, slots=True)
class Response:
    """A complete answer; the server adds Content-Length, Date and Connection."""

    status: int
    headers: Headers = ()
    body: bytes = b""


def json_response(document: Any, status: int = 200, headers: Headers = ()) -> Response:
    return Response(status, (*_JSON, *headers), json.dumps(document).encode())


class Request:
    """One request, head and body, as the client sent it."""

    __slots__ = (
        "_connection",
        "body",
        "body_limit",
        "context",
        "headers",
        "keep_alive",
        "method",
        "path",
        "raw_headers",
        "received_at",
        "refusal",
        "stream_started",
        "target",
        "version",
    )

    def __init__(
        self,
        connection: _ClientConnection,
        method: str,
        target: str,
        version: str,
        raw_headers: list[tuple[bytes, bytes]],
        headers: dict[str, str],
        keep_alive: bool,
    ) -> None:
        self._connection = connection
        self.method = method
        self.target = target  # path and query, percent-encoded as received
        self.path = target.partition("?")[0]
        self.version = version
        self.raw_headers = raw_headers
        self.headers: Mapping[str, str] = headers  # lowercase names; the first of repeated ones
        self.body = b""  # the whole body, once it is in
        self.keep_alive = keep_alive
        self.stream_started = False
        self.received_at = time.time()
        self.body_limit = 0  # the most body bytes taken, once admitted
        self.context: Any = None  # what the head check learned, for the handler
        self.refusal: Response | None = None  # the answer, when refused before its body

    def stream(self, status: int, headers: Headers) -> ResponseStream:
        """Send the head of a streamed answer; its body follows through the stream."""
        self.stream_started = True
        return self._connection.start_stream(self, status, headers)


class ResponseStream:
    """A streamed answer, after its head: write pieces, then end it, or abort it."""

    def __init__(
        self, connection: _ClientConnection, status: int, *, chunked: bool, head_only: bool
    ) -> None:
        self._connection = connection
        self.status = status
        self._chunked = chunked
        self._head_only = head_only
        self.finished = False
        self.body_bytes = 0  # written so far

    async def write(self, piece: bytes) -> None:
        """Send ``piece``; wait while the client lags. ConnectionResetError: the client left."""
        connection = self._connection
        if connection.closed:
            raise ConnectionResetError("the client closed its connection")
        if self._head_only or not piece:
            return
        self.body_bytes += len(piece)
        connection.write(b"%x\r\n%s\r\n" % (len(piece), piece) if self._chunked else piece)
        if connection.write_paused:
            await connection.drained()

    def end(self) -> None:
        """The body is complete."""
        self.finished = True
        if self._chunked and not self._head_only and not self._connection.closed:
            self._connection.write(b"0\r\n\r\n")

    def abort(self) -> None:
        """Close the connection without ending the body: the client sees it truncated."""
        self.finished = True
        self._connection.abort()


Answer = Response | ResponseStream
Handler = Callable[[Request], Awaitable[Answer]]
HeadCheck = Callable[[Request], Response | int]
"""Called with each request once its head is in, before its body is read: the answer that
refuses it (its body is then never read), or the most body bytes it may have."""


class HttpServer:
    """Listens, and serves every connection it accepts with ``handler``."""

    def __init__(
        self,
        handler: Handler,
        *,
        max_body_bytes: int,
        head_check: HeadCheck | None = None,
        max_head_bytes: int = 64 * 1024,
        keepalive_s: float = 75.0,
        header_timeout_s: float = 10.0,
        max_connections: int = 2048,
        linger_s: float = 2.0,
    ) -> None:
        self.handler = handler
        self.head_check = head_check
        self.max_body_bytes = max_body_bytes  # without a head check, for every request
        self.max_head_bytes = max_head_bytes
        self.keepalive_s = keepalive_s
        self.header_timeout_s = header_timeout_s
        self.max_connections = max_connections
        self.linger_s = linger_s
        self.connections: set[_ClientConnection] = set()
        self._server: asyncio.Server | None = None
        self._date = (0, b"")

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _ClientConnection(self), host, port, backlog=1024, reuse_address=True
        )

    async def close(self, timeout_s: float) -> None:
        """Stop listening, let the requests being answered finish for up to ``timeout_s``, then
        close every connection."""
        if self._server is None:
            return
        self._server.close()
        for connection in list(self.connections):
            connection.close_when_idle()
        deadline = time.monotonic() + timeout_s
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for connection in list(self.connections):
            connection.shut()
        await self._server.wait_closed()

    def date(self) -> bytes:
        """The Date header line, formatted once a second."""
        now = int(time.time())
        if now != self._date[0]:
            self._date = (now, b"Date: %s\r\n" % formatdate(now, usegmt=True).encode())
        return self._date[1]


class _RefusedError(Exception):
    """A request the connection answers itself, then closes."""

    def __init__(self, status: int, message: str, headers: Headers = ()) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers


_NOT_TAKEN = frozenset({b"CONNECT", b"TRACE"})  # a proxy's methods, and a reflection risk


class _ClientConnection(asyncio.Protocol):
    """One client's connection; httptools calls the ``on_*`` methods as it parses.

    Nothing refers back to the connection once it is lost (parser, timers and requests let go
    of it), so that it is freed at once, without waiting for the cycle collector.
    """

    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._loop = asyncio.get_running_loop()
        self._parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        # the request being parsed
        self._in_head = False
        self._head_bytes = 0
        self._head_deadline: float | None = None  # when the head being read is overdue
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._lookup: dict[str, str] = {}
        self._request: Request | None = None  # once its head is in
        self._body: list[bytes] = []
        self._body_bytes = 0
        # the requests read, and the one being answered
        self._pending: deque[Request] = deque()
        self._answering: asyncio.Task[None] | None = None
        self._reading_paused = False
        self._closing = False  # close once the request being answered is
        self._discarding = False  # what the client still sends is read and dropped
        self._last_active = self._loop.time()
        self._idle_timer: asyncio.TimerHandle | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        self._drain: asyncio.Future[None] | None = None
        self.write_paused = False
        self.closed = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        server = self._server
        if len(server.connections) >= server.max_connections:
            self._discarding = True
            self._parser = None
            self._write_refusal(503, "the router has too many connections; retry later")
            self._transport.close()
            return
        server.connections.add(self)
        self._head_deadline = self._loop.time() + server.header_timeout_s
        self._watch_head()
        self._wait_idle()

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:  # refused, or closing: what follows is dropped unread
            return
        try:
            parser.feed_data(data)
            if (
                self._in_head and self._parser is not None
            ):  # a head spans reads: bound what httptools holds of it meanwhile
                self._grow_head(len(data))
        except _RefusedError as refused:
            self._refuse(refused.status, str(refused), refused.headers)
        except httptools.HttpParserCallbackError as error:
            limit = error.__context__  # what the callback raised
            if isinstance(limit, _RefusedError):
                self._refuse(limit.status, str(limit), limit.headers)
            else:
                log.error("a request could not be parsed", exc_info=limit)
                self._refuse(400, "malformed request")
        except httptools.HttpParserUpgrade:
            self._closing = True  # the request is in; what follows is not HTTP/1.1 we take
            self._parser = None
            self._pause_reading()
        except httptools.HttpParserError as error:
            self._refuse(400, f"malformed request: {error}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._server.connections.discard(self)
        self._pending.clear()
        self._parser = None
        self._request = None
        self._body = []
        for timer in (self._idle_timer, self._head_timer):
            if timer is not None:
                timer.cancel()
        self._idle_timer = self._head_timer = None
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(ConnectionResetError("the client closed its connection"))
        if self._answering is not None and not self._answering.done():
            self._answering.cancel()  # the client left: so does the work done for it
        self._answering = None

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # httptools callbacks

    def on_message_begin(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        self._head_deadline = self._loop.time() + self._server.header_timeout_s
        if self._head_timer is None:
            self._watch_head()
        self._url = b""
        self._headers = []
        self._lookup = {}
        self._body = []
        self._body_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._grow_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))
        key = name.decode("latin-1").lower()
        if key == "host" and key in self._lookup:
            raise _RefusedError(400, "a request has one Host header, not several")
        self._lookup.setdefault(key, value.decode("latin-1"))
        self._grow_head(len(name) + len(value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_deadline = None
        parser = self._parser
        assert parser is not None
        method = parser.get_method()
        if method in _NOT_TAKEN:
            raise _RefusedError(405, f"{method.decode()} is not served here")
        version = parser.get_http_version()
        if version not in ("1.0", "1.1"):  # such as a request line without one (HTTP/0.9)
            raise _RefusedError(400, f"HTTP/{version} requests are not served here")
        if version == "1.1" and "host" not in self._lookup:
            raise _RefusedError(400, "an HTTP/1.1 request needs a Host header")
        request = Request(
            self,
            method.decode("ascii"),
            _target(self._url),
            version,
            self._headers,
            self._lookup,
            parser.should_keep_alive(),
        )
        head_check = self._server.head_check
        admitted = self._server.max_body_bytes if head_check is None else head_check(request)
        if isinstance(admitted, Response):
            request.refusal = admitted
            request.keep_alive = False
            self._take(request)
            self._parser = None  # its body is never read
            self._closing = self._discarding = True
            return
        request.body_limit = admitted
        length = self._lookup.get("content-length")
        if length is not None and int(length) > admitted:  # llhttp checked it
            raise _RefusedError(413, f"the request's body is over {admitted} bytes")
        self._request = request
        if (
            self._lookup.get("expect", "").lower() == "100-continue"
            and self._answering is None
            and version == "1.1"
        ):
            self.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        request = self._request
        if request is None:  # refused at its head: the rest of this read is dropped
            return
        self._body.append(body)
        self._body_bytes += len(body)
        if self._body_bytes > request.body_limit:
            raise _RefusedError(413, f"the request's body is over {request.body_limit} bytes")

    def on_message_complete(self) -> None:
        request, self._request = self._request, None
        if request is None:  # refused at its head
            return
        body, self._body = self._body, []
        request.body = body[0] if len(body) == 1 else b"".join(body)
        self._take(request)

    # answering

    def _take(self, request: Request) -> None:
        self._pending.append(request)
        if len(self._pending) >= _MAX_PENDING:
            self._pause_reading()
        if self._answering is None:
            self._answer_next()

    def _answer_next(self) -> None:
        if self._pending:
            request = self._pending.popleft()
            self._answering = self._loop.create_task(self._answer(request))
            if self._reading_paused and not self._closing and len(self._pending) < _MAX_PENDING:
                self._reading_paused = False
                assert self._transport is not None
                self._transport.resume_reading()
        else:
            self._answering = None
            self._wait_idle()

    async def _answer(self, request: Request) -> None:
        answer: Answer | None = request.refusal
        if answer is None:
            try:
                answer = await self._server.handler(request)
            except Exception:
                log.exception("answering %s %s failed", request.method, request.path)
                answer = None
        if self.closed:
            return
        if isinstance(answer, Response):
            self._write_response(request, answer)
        elif answer is None and not request.stream_started:
            self._write_response(request, Response(500, body=b"internal server error"))
        elif answer is None or not answer.finished:  # a stream left open: show it truncated
            self.abort()
            return
        if self._closing or not request.keep_alive:
            self._close_after_answer()
        else:
            self._answer_next()

    def start_stream(self, request: Request, status: int, headers: Headers) -> ResponseStream:
        chunked = request.version == "1.1"
        if not chunked:
            request.keep_alive = False  # the body ends with the connection
        framing = b"Transfer-Encoding: chunked\r\n" if chunked else b""
        if not self.closed:
            self.write(self._head(request, status, headers, framing))
        return ResponseStream(self, status, chunked=chunked, head_only=request.method == "HEAD")

    def _write_response(self, request: Request, response: Response) -> None:
        body = response.body
        length = b"Content-Length: %d\r\n" % len(body)
        head = self._head(request, response.status, response.headers, length)
        self.write(head if request.method == "HEAD" else head + body)

    def _head(self, request: Request, status: int, headers: Headers, framing: bytes) -> bytes:
        if self._closing or not request.keep_alive:
            connection = b"Connection: close\r\n"
        elif request.version == "1.0":
            connection = b"Connection: keep-alive\r\n"
        else:
            connection = b""
        return b"HTTP/1.1 %d %s\r\n%s%s%s%s\r\n" % (
            status,
            _REASONS.get(status, b""),
            b"".join(b"%s: %s\r\n" % header for header in headers),
            framing,
            self._server.date(),
            connection,
        )

    def _grow_head(self, size: int) -> None:
        """Count ``size`` more bytes of the head (a head spanning reads counts some twice)."""
        self._head_bytes += size
        if self._head_bytes > self._server.max_head_bytes:
            raise _RefusedError(431, "the request's head is too large")

    def _refuse(self, status: int, message: str, headers: Headers = ()) -> None:
        """Answer a request that cannot be taken once those before it are answered, then close
        the connection; nothing more the client sends is parsed."""
        self._parser = None
        self._closing = self._discarding = True
        self._in_head = False
        self._head_deadline = None
        self._request = None
        self._body = []
        if self.closed:
            return
        if self._answering is None and not self._pending:
            self._write_refusal(status, message, headers)
            self._close_after_answer()
        else:  # pipelined behind requests being answered: answered in turn
            request = Request(self, "GET", "/", "1.1", [], {}, keep_alive=False)
            request.refusal = Response(
                status, (*_TEXT, *headers), message.encode("utf-8", "replace")
            )
            self._take(request)

    def _write_refusal(self, status: int, message: str, headers: Headers = ()) -> None:
        body = message.encode("utf-8", "replace")
        self.write(
            b"HTTP/1.1 %d %s\r\n%s%sContent-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (
                status,
                _REASONS.get(status, b""),
                b"".join(b"%s: %s\r\n" % header for header in (*_TEXT, *headers)),
                self._server.date(),
                len(body),
                body,
            )
        )

    def _close_after_answer(self) -> None:
        """Close once the answer is out. When the client may still be sending what was not
        read, say we are done (FIN) and drop what comes for up to ``linger_s`` first, so that
        closing with unread data (a reset) does not destroy the answer before it is read."""
        transport = self._transport
        assert transport is not None
        if not self._discarding or not transport.can_write_eof():
            transport.close()
            return
        self._resume_reading()
        transport.write_eof()
        self._loop.call_later(self._server.linger_s, transport.close)

    # the connection

    def write(self, data: bytes) -> None:
        assert self._transport is not None
        self._transport.write(data)

    async def drained(self) -> None:
        """Wait until the client has taken what was written (ConnectionResetError: it left)."""
        self._drain = self._loop.create_future()
        try:
            await self._drain
        finally:
            self._drain = None

    def abort(self) -> None:
        """Close the connection at once, dropping what is unsent and the requests read."""
        self._closing = True
        self._pending.clear()
        if self._transport is not None and not self.closed:
            self._transport.abort()

    def close_when_idle(self) -> None:
        self._closing = True
        if self._answering is None and self._transport is not None:
            self._transport.close()

    def shut(self) -> None:
        """Abort the connection and the request being answered on it."""
        self.abort()
        if self._answering is not None:
            self._answering.cancel()

    def _pause_reading(self) -> None:
        if not self._reading_paused and not self.closed and self._transport is not None:
            self._reading_paused = True
            self._transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._reading_paused and not self.closed and self._transport is not None:
            self._reading_paused = False
            self._transport.resume_reading()

    def _watch_head(self) -> None:
        deadline = self._head_deadline
        if deadline is not None and not self.closed:
            self._head_timer = self._loop.call_at(deadline, self._check_head)

    def _check_head(self) -> None:
        """Refuse a head that takes over ``header_timeout_s`` to arrive (408)."""
        self._head_timer = None
        deadline = self._head_deadline
        if deadline is None or self.closed:
            return
        if self._loop.time() < deadline:
            self._watch_head()  # a later request's head: its own deadline
        else:
            self._refuse(408, "the request's head did not arrive in time")

    def _wait_idle(self) -> None:
        """Close the connection if no request comes within ``keepalive_s``."""
        self._last_active = self._loop.time()
        if self._idle_timer is None and not self.closed:
            self._idle_timer = self._loop.call_at(
                self._last_active + self._server.keepalive_s, self._check_idle
            )

    def _check_idle(self) -> None:
        self._idle_timer = None
        if self.closed or self._answering is not None:
            return  # answering: the timer starts again afterwards
        if self._loop.time() >= self._last_active + self._server.keepalive_s:
            assert self._transport is not None
            self._transport.close()
        else:
            self._idle_timer = self._loop.call_at(
                self._last_active + self._server.keepalive_s, self._check_idle
            )


_TEXT = ((b"Content-Type", b"text/plain; charset=utf-8"),)


def _target(url: bytes) -> str:
    """The request target as path and query, percent-encoded as received."""
    target = url.decode("utf-8", "surrogateescape")
    if target.startswith("/"):
        return target
    if target == "*" or not target:  # OPTIONS * (asterisk-form): the server itself
        return "*"
    try:  # absolute-form, as sent to proxies (RFC 9112, 3.2.2)
        parts = urlsplit(target)
    except ValueError as error:
        raise _RefusedError(400, f"malformed request target: {error}") from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise _RefusedError(400, "the request target is neither a path nor an http(s) URL")
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
