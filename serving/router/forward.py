"""Send a request to the decision's candidates in turn until one answers, and relay its answer.

An attempt fails on a connection error, a timeout or a 5xx status; the next candidate is then
tried, at most ``max_attempts`` in all, as long as nothing has reached the client. Each attempt
feeds the site's health: requests in flight, latency to the response headers, and its breaker.

A response of known length up to ``buffer_limit`` is read whole before the client sees a byte, so
a site that dies halfway through it is retried too. Anything else (Server-Sent Events, chunked or
large bodies) is relayed chunk by chunk as it arrives; if the site fails after the first chunk
went out, the client's connection is aborted rather than ended, so that the truncation shows.
Requests go out over kept-alive connections (:mod:`.upstream`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from soberana.serving.router.health import HealthBook, SiteHealth
from soberana.serving.router.httpserver import Answer, Request, Response, ResponseStream
from soberana.serving.router.metrics import RouterMetrics
from soberana.serving.router.policy import Candidate, Decision, Exclusion
from soberana.serving.router.upstream import UpstreamError, UpstreamResponse, Upstreams

log = logging.getLogger(__name__)

SITE_HEADER = b"X-Soberana-Site"
"""Response header naming the site that served the request."""

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
    }
)
"""Headers (lowercase) that describe one connection, not the message: never passed on."""

_NOT_RELAYED = HOP_BY_HOP | {b"date"}  # the router's server dates its own answers

_RETRIABLE = (UpstreamError, TimeoutError)


@dataclass(frozen=True)
class Outbound:
    """The request as it goes to a site: the path after the model's prefix, headers and body."""

    method: str
    path: str  # with its query string, percent-encoded as received
    headers: bytes  # header lines as sent, without Host and Content-Length
    body: bytes


@dataclass
class Forwarded:
    """What came of a request: the response the client got (None: no site answered)."""

    response: Answer | None = None
    site: str | None = None  # the site that served it
    answered_by: str | None = None  # the site whose answer the client got (a 5xx passed on too)
    tried: list[str] = field(default_factory=list)  # every site the request was sent to
    upstream_wait_s: float = 0.0  # the serving site's time to its response headers
    failures: list[Exclusion] = field(default_factory=list)
    aborted: bool = False  # the site failed after the response had started
    server_error: Response | None = None  # the last 5xx answer of a site


@dataclass(frozen=True)
class ForwardSettings:
    max_attempts: int = 3
    connect_timeout_s: float = 1.0
    response_timeout_s: float = 60.0
    buffer_limit_bytes: int = 1024 * 1024


class Forwarder:
    def __init__(
        self,
        health: HealthBook,
        metrics: RouterMetrics,
        clock: Callable[[], float],
        settings: ForwardSettings,
    ) -> None:
        self._upstreams = Upstreams(settings.connect_timeout_s, settings.response_timeout_s)
        self._health = health
        self._metrics = metrics
        self._clock = clock
        self._settings = settings

    def close(self) -> None:
        """Close the idle connections to the sites."""
        self._upstreams.close()

    async def forward(self, client: Request, decision: Decision, outbound: Outbound) -> Forwarded:
        result = Forwarded()
        attempts = 0
        for candidate in decision.candidates:
            if attempts == self._settings.max_attempts:
                break
            refusal = self._health[candidate.site.name].breaker.refusal(self._clock())
            if refusal is not None:  # opened by other requests since the decision
                result.failures.append(Exclusion(candidate.site.name, refusal))
                continue
            attempts += 1
            result.tried.append(candidate.site.name)
            result.response = await self._attempt(client, decision, candidate, outbound, result)
            if result.response is not None:
                return result
        # every attempt failed; if the last site answered a 5xx, pass that answer on
        result.response = result.server_error
        if result.server_error is not None:
            result.answered_by = result.tried[-1]
        return result

    async def _attempt(
        self,
        client: Request,
        decision: Decision,
        candidate: Candidate,
        outbound: Outbound,
        result: Forwarded,
    ) -> Answer | None:
        """One try at one site: the response the client got, or None when the site failed."""
        site = candidate.site
        assert site.url is not None
        health = self._health[site.name]
        started = self._clock()
        probe = health.breaker.on_attempt(started)
        health.in_flight += 1
        settled = False
        try:
            upstream = await self._upstreams.send(
                site.url,
                outbound.method,
                decision.model.path_prefix + outbound.path,
                outbound.headers,
                outbound.body,
            )
            try:
                waited = self._clock() - started
                self._metrics.upstream_latency(site.name).observe(waited)
                if upstream.status >= 500:
                    result.server_error = await self._buffered(upstream, site.name)
                    raise _ServerError(f"answered {upstream.status}")
                if self._fits_buffer(upstream):
                    response = await self._buffered(upstream, site.name)
                    self._succeed(health, waited, result, site.name)
                    settled = True
                    return response
                self._succeed(health, waited, result, site.name)
                settled = True
                return await self._streamed(client, upstream, site.name, result)
            finally:
                upstream.close()
        except (*_RETRIABLE, _ServerError) as error:
            settled = True
            health.breaker.on_failure(self._clock(), probe=probe)
            kind = _kind(error)
            self._metrics.retries(decision.model.key, site.name, kind).inc()
            result.failures.append(Exclusion(site.name, _describe(error)))
            return None
        finally:
            health.in_flight -= 1
            if not settled:  # cancelled: the client went away before the site answered
                health.breaker.on_abandoned(probe=probe)

    def _succeed(self, health: SiteHealth, waited: float, result: Forwarded, site: str) -> None:
        health.observe_latency(waited * 1000)
        health.breaker.on_success()
        result.site = result.answered_by = site
        result.upstream_wait_s = waited

    def _fits_buffer(self, upstream: UpstreamResponse) -> bool:
        length = upstream.content_length
        return (
            length is not None
            and length <= self._settings.buffer_limit_bytes
            and upstream.media_type != b"text/event-stream"
        )

    async def _buffered(self, upstream: UpstreamResponse, site: str) -> Response:
        body = await upstream.read()
        return Response(upstream.status, _response_headers(upstream, site), body)

    async def _streamed(
        self, client: Request, upstream: UpstreamResponse, site: str, result: Forwarded
    ) -> ResponseStream:
        response = client.stream(upstream.status, _response_headers(upstream, site))
        try:
            async for chunk in _arriving(upstream):
                await response.write(chunk)
            response.end()
        except _SiteFailedError as error:
            log.warning("site %s failed mid-response: %s", site, error)
            result.aborted = True
            response.abort()
        except ConnectionResetError:  # the client went away: stop reading the site
            upstream.close()
        return response


async def _arriving(upstream: UpstreamResponse) -> AsyncIterator[bytes]:
    """The site's body, chunk by chunk as it arrives; the site failing raises _SiteFailedError,
    so that it is never mistaken for the client going away."""
    chunks = upstream.chunks().__aiter__()
    while True:
        try:
            chunk = await chunks.__anext__()
        except StopAsyncIteration:
            return
        except _RETRIABLE as error:
            raise _SiteFailedError(_describe(error)) from error
        yield chunk


class _SiteFailedError(Exception):
    """The site failed after its response had started."""


class _ServerError(Exception):
    """The site answered with a 5xx status."""


def _response_headers(upstream: UpstreamResponse, site: str) -> list[tuple[bytes, bytes]]:
    headers = [header for header in upstream.headers if header[0].lower() not in _NOT_RELAYED]
    headers.append((SITE_HEADER, site.encode()))
    return headers


def _kind(error: Exception) -> str:
    """A short, bounded name for what went wrong, for metric labels."""
    if isinstance(error, _ServerError):
        return "server_error"
    if isinstance(error, TimeoutError):
        return "timeout"
    return "connection_error"


def _describe(error: Exception) -> str:
    if isinstance(error, TimeoutError):
        return f"timed out: {error}" if str(error) else "timed out"
    return str(error)
