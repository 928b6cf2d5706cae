"""HTTP/1.1 to the sites over kept-alive connections, lean enough for the router's hot path.

:class:`Upstreams` keeps the idle connections to each site's base URL and sends one request at
a time on each: request line, headers and body in one write; the response parsed by httptools
(llhttp, the parser of Node.js) as it arrives. :meth:`Upstreams.send` returns an
:class:`UpstreamResponse` once its status line and headers are in; its body is then read whole
(:meth:`~UpstreamResponse.read`) or as it arrives (:meth:`~UpstreamResponse.chunks`), reading
from the site pausing while a slow consumer leaves more than ``_HIGH_WATER`` bytes queued.
A connection goes back to the pool when its response is complete and both ends allow keep-alive
(and is not reused after ``keepalive_s`` idle); it is closed when its response is abandoned
unfinished (:meth:`~UpstreamResponse.close`).

Failures raise :class:`UpstreamError` (the site cannot be reached, the connection breaks, or the
answer is not valid HTTP) or :class:`TimeoutError` (connecting takes over ``connect_timeout_s``,
or the site stays silent for ``response_timeout_s`` before its headers or within its body).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import cast
from urllib.parse import urlsplit

import httptools

_HIGH_WATER = 256 * 1024  # queued body bytes that pause reading from the site


class UpstreamError(Exception):
    """The site could not be reached, its connection broke, or it did not answer in HTTP."""


class Upstreams:
    """Kept-alive HTTP/1.1 connections to every site endpoint, and requests over them."""

    def __init__(
        self,
        connect_timeout_s: float,
        response_timeout_s: float,
        # idle connections are dropped before the 5 s after which uvicorn and Node.js close
        # theirs by default (Ray Serve's proxy waits 90 s), so none is used as the site closes it
        keepalive_s: float = 4.0,
        max_idle_per_endpoint: int = 100,
    ) -> None:
        self._connect_timeout_s = connect_timeout_s
        self._response_timeout_s = response_timeout_s
        self._keepalive_s = keepalive_s
        self._max_idle = max_idle_per_endpoint
        self._endpoints: dict[str, _Endpoint] = {}
        self._tls: ssl.SSLContext | None = None

    async def send(
        self, base_url: str, method: str, target: str, headers: bytes, body: bytes
    ) -> UpstreamResponse:
        """Send a request to ``base_url`` + ``target`` (path and query, percent-encoded);
        ``headers`` are complete header lines without Host and Content-Length."""
        endpoint = self._endpoints.get(base_url) or self._endpoint(base_url)
        connection = endpoint.idle_connection() or await self._connect(endpoint)
        response = connection.send(
            b"%s %s%s HTTP/1.1\r\nHost: %s\r\n%s%s\r\n%s"
            % (
                method.encode("ascii"),
                endpoint.base_path,
                target.encode("utf-8", "surrogateescape"),
                endpoint.authority,
                headers,
                b"Content-Length: %d\r\n" % len(body) if body or method in _WITH_BODY else b"",
                body,
            ),
            head_request=method == "HEAD",
        )
        try:
            await response.started()
        except BaseException:
            response.close()
            raise
        return response

    def close(self) -> None:
        """Close every idle connection (those in use close when their response ends)."""
        for endpoint in self._endpoints.values():
            endpoint.close_idle()

    def _endpoint(self, base_url: str) -> _Endpoint:
        parts = urlsplit(base_url)
        try:
            port = parts.port
        except ValueError:
            port = None
        if parts.scheme not in ("http", "https") or not parts.hostname or port == 0:
            raise UpstreamError(f"{base_url!r} is not a usable http:// or https:// URL")
        tls = None
        if parts.scheme == "https":
            tls = self._tls = self._tls or ssl.create_default_context()
        endpoint = _Endpoint(
            host=parts.hostname,
            port=port or (443 if tls else 80),
            authority=parts.netloc.rpartition("@")[2].encode("idna"),
            base_path=parts.path.rstrip("/").encode("utf-8"),
            tls=tls,
            keepalive_s=self._keepalive_s,
            max_idle=self._max_idle,
        )
        self._endpoints[base_url] = endpoint
        return endpoint

    async def _connect(self, endpoint: _Endpoint) -> _Connection:
        loop = asyncio.get_running_loop()
        where = endpoint.authority.decode()
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                _, connection = await loop.create_connection(
                    lambda: _Connection(endpoint, self._response_timeout_s),
                    endpoint.host,
                    endpoint.port,
                    ssl=endpoint.tls,
                )
        except TimeoutError as error:  # an OSError too, but it stays a timeout
            took = f"connecting to {where} took over {self._connect_timeout_s:g}s"
            raise TimeoutError(took) from error
        except OSError as error:
            raise UpstreamError(f"cannot connect to {where}: {error.strerror or error}") from error
        return connection


_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})  # methods that always say Content-Length


class _Endpoint:
    """Where a site's requests go, and the connections to it that are idle, newest last."""

    def __init__(
        self,
        host: str,
        port: int,
        authority: bytes,
        base_path: bytes,
        tls: ssl.SSLContext | None,
        keepalive_s: float,
        max_idle: int,
    ) -> None:
        self.host = host
        self.port = port
        self.authority = authority
        self.base_path = base_path
        self.tls = tls
        self._keepalive_s = keepalive_s
        self._max_idle = max_idle
        self._idle: list[_Connection] = []

    def idle_connection(self) -> _Connection | None:
        """The most recently used idle connection that is still open, if any."""
        while self._idle:
            connection = self._idle.pop()
            if connection.closed:
                continue
            if time.monotonic() - connection.idle_since > self._keepalive_s:
                connection.close()
                continue
            return connection
        return None

    def release(self, connection: _Connection) -> None:
        if len(self._idle) < self._max_idle:
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
        else:
            connection.close()

    def close_idle(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()


class _Connection(asyncio.Protocol):
    """One connection to a site, carrying one request at a time; httptools calls the ``on_*``
    methods as it parses the response."""

    def __init__(self, endpoint: _Endpoint, response_timeout_s: float) -> None:
        self._endpoint = endpoint
        self._timeout_s = response_timeout_s
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._response: UpstreamResponse | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._interim = False  # parsing a 1xx response, which the final one follows
        self._paused = False
        self._heard_at = 0.0  # when the site last sent anything
        self._watchdog: asyncio.TimerHandle | None = None
        self.idle_since = 0.0
        self.closed = False

    def send(self, request: bytes, *, head_request: bool) -> UpstreamResponse:
        assert self._transport is not None and self._response is None
        self._response = response = UpstreamResponse(self, self._loop, head_request)
        self._heard_at = self._loop.time()
        self._watchdog = self._loop.call_at(self._heard_at + self._timeout_s, self._check_silence)
        self._transport.write(request)
        return response

    def close(self) -> None:
        """Close the connection; a response still arriving on it fails."""
        if not self.closed and self._transport is not None:
            self._transport.abort()  # connection_lost follows, and settles the response

    def pause_reading(self) -> None:
        if not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._paused and not self.closed and self._transport is not None:
            self._paused = False
            self._heard_at = self._loop.time()  # silence while paused is not the site's
            self._transport.resume_reading()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._heard_at = self._loop.time()
        if self._response is None:  # the site speaks out of turn: trust nothing more from it
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as error:
            # an upgrade was never asked for: Upgrade and Connection are not passed on
            self._fail(UpstreamError(f"invalid HTTP response: {error!r}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        response = self._response
        if response is None:
            return
        if exc is None and response.status and response.until_close:
            self._finish(reuse=False)  # a body delimited by the end of the connection
        else:
            what = "before its response" if not response.status else "within its response"
            cause = f": {exc}" if exc else ""
            self._fail(UpstreamError(f"the site closed the connection {what}{cause}"))

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        headers, self._headers = self._headers, []
        status = self._parser.get_status_code()
        response = self._response
        if status < 200:  # 100 Continue, 103 Early Hints: the final response follows
            self._interim = True
        elif response is not None:
            response.start(status, headers)
            if response.head_request:  # no body follows, whatever the headers say
                self._finish(reuse=False)

    def on_body(self, body: bytes) -> None:
        if self._response is not None:
            self._response.feed(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
        elif self._response is not None:
            self._finish(reuse=self._parser.should_keep_alive())

    def _finish(self, *, reuse: bool) -> None:
        response, self._response = self._response, None
        assert response is not None
        self._stop_watchdog()
        self.resume_reading()
        response.finish()
        if reuse and not self.closed:
            self._endpoint.release(self)
        else:
            self.close()

    def _fail(self, error: Exception) -> None:
        response, self._response = self._response, None
        self._stop_watchdog()
        self.close()
        if response is not None:
            response.fail(error)

    def _check_silence(self) -> None:
        self._watchdog = None
        if self._response is None:
            return
        now = self._loop.time()
        if self._paused:
            self._heard_at = now
        if now - self._heard_at >= self._timeout_s:
            self._fail(TimeoutError(f"the site was silent for {self._timeout_s:g}s"))
        else:
            self._watchdog = self._loop.call_at(
                self._heard_at + self._timeout_s, self._check_silence
            )

    def _stop_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None


class UpstreamResponse:
    """A site's response: status and headers as sent, then its body as it arrives."""

    def __init__(
        self, connection: _Connection, loop: asyncio.AbstractEventLoop, head_request: bool
    ) -> None:
        self.status = 0  # 0 until the headers are in
        self.headers: list[tuple[bytes, bytes]] = []  # names and values as the site sent them
        self.content_length: int | None = None
        self.media_type = b""  # Content-Type without parameters, lowercase
        self.until_close = False  # the body ends with the connection
        self.head_request = head_request
        self._connection: _Connection | None = connection  # None once complete or failed
        self._loop = loop
        self._pieces: deque[bytes] = deque()
        self._queued = 0
        self._whole = False  # read() wants it all: never pause the site
        self._complete = False
        self._error: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None

    async def started(self) -> None:
        """Wait for the status line and headers."""
        while not self.status:
            await self._wait()

    async def read(self) -> bytes:
        """The whole body."""
        self._whole = True
        if self._connection is not None:
            self._connection.resume_reading()
        while not self._complete:
            await self._wait()
        body = b"".join(self._pieces)
        self._pieces.clear()
        return body

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as the site sends it: each piece as it arrives, or what arrived since the
        consumer last asked, in one piece."""
        while True:
            if self._pieces:
                piece = self._pieces.popleft() if len(self._pieces) == 1 else b"".join(self._pieces)
                self._pieces.clear()
                self._queued = 0
                if self._connection is not None:
                    self._connection.resume_reading()
                yield piece
            elif self._complete:
                return
            else:
                await self._wait()

    def close(self) -> None:
        """Done with the response: an unfinished one closes its connection."""
        if self._connection is not None:
            self._connection.close()

    # fed by the connection

    def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.headers = headers
        chunked = False
        for name, value in headers:
            lowered = name.lower()
            if lowered == b"content-length":
                self.content_length = int(value)  # llhttp has checked it
            elif lowered == b"content-type":
                self.media_type = value.partition(b";")[0].strip().lower()
            elif lowered == b"transfer-encoding":
                chunked = chunked or b"chunked" in value.lower()
        self.until_close = self.content_length is None and not chunked and status not in (204, 304)
        self.status = status
        self._wake()

    def feed(self, piece: bytes) -> None:
        self._pieces.append(piece)
        self._queued += len(piece)
        if self._queued > _HIGH_WATER and not self._whole and self._connection is not None:
            self._connection.pause_reading()
        self._wake()

    def finish(self) -> None:
        self._connection = None
        self._complete = True
        self._wake()

    def fail(self, error: Exception) -> None:
        self._connection = None
        self._error = error
        self._wake()

    async def _wait(self) -> None:
        if self._error is not None:
            raise self._error
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
