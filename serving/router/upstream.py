"""HTTP/1.1 to the sites over kept-alive connections: aiohttp's client, held to the router's terms.

:class:`Upstreams` wraps one :class:`aiohttp.ClientSession` for all sites. :meth:`Upstreams.send`
returns an :class:`UpstreamResponse` once the site's status line and headers are in; its body is
then read whole (:meth:`~UpstreamResponse.read`) or as it arrives
(:meth:`~UpstreamResponse.chunks`, aiohttp pausing the socket while a slow consumer lags). A
connection goes back to the pool when its response is complete and both ends allow keep-alive;
one that received anything while idle in the pool (a site writing more than its response) is
closed, never used again, so that stray bytes are never read as the next request's response.
Idle connections are dropped after ``keepalive_s``. The request target goes out exactly as
received (percent-encoding untouched), with the client's headers and no others but Host and the
framing.

Failures raise :class:`UpstreamError`, whose ``reached`` says whether the request may have reached
the site (False: connecting failed), or :class:`TimeoutError` (connecting takes over
``connect_timeout_s``, an UpstreamError that did not reach the site; or the site stays silent for
``response_timeout_s`` before its headers or within its body). A site's response head is bounded:
lines of ``max_header_line_bytes`` at most, ``max_headers`` of them.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp.client_proto import ResponseHandler
from yarl import URL

_URLS_KEPT = 4096  # parsed request URLs kept: an OpenAI endpoint's is the same for every request
_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")  # never added


class UpstreamError(Exception):
    """The site could not be reached, its connection broke, or it did not answer in HTTP."""

    def __init__(self, message: str, *, reached: bool = True) -> None:
        super().__init__(message)
        self.reached = reached  # False: the request never left the router


class _StrictResponseHandler(ResponseHandler):
    """aiohttp's connection protocol, closed for good once it receives bytes that no request
    asked for.

    aiohttp parses whatever a pooled connection receives while idle, and would hand a complete
    stray response to the next request as its own. A partial one left after a response in the
    same read is dropped when the next request starts a new parser; one that arrives while the
    connection is idle closes it here.
    """

    _final: Any = None  # the final response's payload, once its head is parsed
    _answered = True  # no request waits on this connection

    def set_response_params(self, **params: Any) -> None:
        self._final = None
        self._answered = False
        super().set_response_params(**params)

    def feed_data(self, data: Any, size: int = 0) -> None:
        message, payload = data
        if not 100 <= message.code < 200:  # 1xx are interim: the final response follows
            self._final = payload
        super().feed_data(data, size)

    def data_received(self, data: bytes) -> None:
        if self._answered and data:
            self.force_close()
            if self.transport is not None:
                self.transport.close()
            return
        super().data_received(data)
        if self._final is not None and self._final.is_eof():
            self._answered = True


class Upstreams:
    """Kept-alive HTTP/1.1 connections to every site endpoint, and requests over them."""

    def __init__(
        self,
        connect_timeout_s: float,
        response_timeout_s: float,
        # idle connections are dropped before the 5 s after which uvicorn and Node.js close
        # theirs by default (Ray Serve's proxy waits 90 s), so none is used as the site closes it
        keepalive_s: float = 4.0,
        max_header_line_bytes: int = 8190,
        max_headers: int = 100,
    ) -> None:
        self._connect_timeout_s = connect_timeout_s
        self._response_timeout_s = response_timeout_s
        self._keepalive_s = keepalive_s
        self._max_line = max_header_line_bytes
        self._max_headers = max_headers
        self._session: aiohttp.ClientSession | None = None
        self._bases: dict[str, str] = {}
        self._authority: dict[str, str] = {}  # host:port, for messages
        self._urls: dict[str, URL] = {}  # the most recent targets, parsed

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=0,  # the router bounds its clients; sites bound their own queues
            keepalive_timeout=self._keepalive_s,
            enable_cleanup_closed=False,
        )
        # aiohttp makes each connection's protocol with this factory
        connector._factory = functools.partial(  # type: ignore[assignment]
            _StrictResponseHandler, loop=asyncio.get_running_loop()
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=None, connect=self._connect_timeout_s, sock_read=self._response_timeout_s
            ),
            auto_decompress=False,
            skip_auto_headers=_AUTO_HEADERS,
            max_line_size=self._max_line,
            max_field_size=self._max_line,
            max_headers=self._max_headers,
            cookie_jar=aiohttp.DummyCookieJar(),
            raise_for_status=False,
        )
        return self._session

    async def send(
        self,
        base_url: str,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes,
    ) -> UpstreamResponse:
        """Send a request to ``base_url`` + ``target`` (path and query, percent-encoded as
        received); ``headers`` without Host and Content-Length."""
        base = self._bases.get(base_url) or self._base(base_url)
        session = self._session or self._open()
        where = self._authority[base_url]
        try:
            url = self._urls.get(base + target) or self._url(base + target)
            response = await session.request(
                method,
                url,
                headers=headers,
                data=body or None,
                allow_redirects=False,
                compress=False,
            )
        except aiohttp.ConnectionTimeoutError as error:
            took = f"connecting to {where} took over {self._connect_timeout_s:g}s"
            raise UpstreamError(took, reached=False) from error
        except aiohttp.SocketTimeoutError as error:
            raise TimeoutError(f"the site was silent for {self._response_timeout_s:g}s") from error
        except aiohttp.ClientConnectorError as error:
            cause = error.os_error.strerror or error.os_error
            raise UpstreamError(f"cannot connect to {where}: {cause}", reached=False) from error
        except aiohttp.ServerDisconnectedError as error:
            raise UpstreamError("the site closed the connection before its response") from error
        except aiohttp.ClientResponseError as error:
            raise UpstreamError(f"invalid HTTP response: {error.message}") from error
        except (aiohttp.ClientError, ValueError) as error:
            raise UpstreamError(f"the request to {where} failed: {error!r}") from error
        return UpstreamResponse(response, self._response_timeout_s)

    async def close(self) -> None:
        """Close every connection."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _url(self, url: str) -> URL:
        if len(self._urls) >= _URLS_KEPT:
            self._urls.clear()
        parsed = self._urls[url] = URL(url, encoded=True)  # sent as received: never re-quoted
        return parsed

    def _base(self, base_url: str) -> str:
        try:
            url = URL(base_url)
            usable = url.scheme in ("http", "https") and bool(url.host) and url.port != 0
        except ValueError:
            usable = False
        if not usable:
            raise UpstreamError(
                f"{base_url!r} is not a usable http:// or https:// URL", reached=False
            )
        self._authority[base_url] = f"{url.host}:{url.port}"
        base = self._bases[base_url] = base_url.rstrip("/")
        return base


class UpstreamResponse:
    """A site's response: status and headers as sent, then its body as it arrives."""

    __slots__ = ("_response", "_timeout_s", "content_length", "headers", "media_type", "status")

    def __init__(self, response: aiohttp.ClientResponse, timeout_s: float) -> None:
        self._response = response
        self._timeout_s = timeout_s
        self.status = response.status
        self.headers: tuple[tuple[bytes, bytes], ...] = response.raw_headers
        self.content_length = response.content_length
        media_type = response.headers.get("Content-Type", "")
        self.media_type = media_type.partition(";")[0].strip().lower().encode("latin-1")

    async def read(self) -> bytes:
        """The whole body."""
        try:
            return await self._response.read()
        except Exception as error:
            raise self._failure(error) from error

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as the site sends it: what arrived since the consumer last asked."""
        content = self._response.content
        while True:
            try:
                piece = await content.readany()
            except Exception as error:
                raise self._failure(error) from error
            if not piece:
                return
            yield piece

    def close(self) -> None:
        """Done with the response: an unfinished one closes its connection."""
        response = self._response
        if response.connection is None:  # complete: its connection is back in the pool
            return
        if response.content.is_eof():
            response.release()
        else:
            response.close()

    def _failure(self, error: Exception) -> Exception:
        if isinstance(error, TimeoutError):  # aiohttp's SocketTimeoutError is one
            return TimeoutError(f"the site was silent for {self._timeout_s:g}s")
        if isinstance(error, aiohttp.ClientPayloadError | aiohttp.ServerDisconnectedError):
            return UpstreamError(f"the site closed the connection within its response: {error}")
        return UpstreamError(f"the site's response failed: {error!r}")
