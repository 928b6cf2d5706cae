"""Send a request to the decision's candidates in turn until one answers, and relay its answer.

An attempt moves on to the next candidate, at most ``max_attempts`` in all and as long as nothing
has reached the client, when the site could not be reached, its connection broke before its
response, or it answered 503; after another 5xx, or ``response_timeout_s`` of silence, only when
the method is idempotent, since the site may have done the work. ``request_timeout_s`` bounds
every attempt together, until a response begins. Each attempt feeds the site's health: requests
in flight, latency to the response headers, and its breaker, which counts only what shows the site
itself unhealthy (it could not be reached, its connection broke; a 5xx only on the breaker's
probe), so that one tenant's failing requests never close a site to another's.

A response of known length up to ``buffer_limit`` is read whole before the client sees a byte, so
a site that dies halfway through it is retried too. Anything else (Server-Sent Events, chunked or
large bodies) is relayed chunk by chunk as it arrives; if the site fails after the first chunk
went out, the client's connection is aborted rather than ended, so that the truncation shows.
A site's own ``X-Soberana-*`` headers are never relayed. Requests go out over kept-alive
connections (:mod:`.upstream`).
"""

from __future__ import annotations

import asyncio
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
_OWN_PREFIX = b"x-soberana-"  # the router's own headers: a site's are never relayed

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
"""Methods whose attempts may be sent again after they reached a site (RFC 9110, 9.2.2)."""


@dataclass(frozen=True)
class Outbound:
    """The request as it goes to a site: the path after the model's prefix, headers and body."""

    method: str
    path: str  # with its query string, percent-encoded as received
    headers: list[tuple[str, str]]  # without Host and Content-Length
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
    deadline_exceeded: bool = False  # request_timeout_s passed before a response began
    timed_out: bool = False  # the last site tried was silent for response_timeout_s


@dataclass(frozen=True)
class ForwardSettings:
    max_attempts: int = 3
    connect_timeout_s: float = 1.0
    response_timeout_s: float = 60.0  # a site silent this long, before or within its answer
    request_timeout_s: float = 300.0  # until a response begins, every attempt included
    buffer_limit_bytes: int = 1024 * 1024
    max_response_header_line_bytes: int = 8190  # a site's status line or one header line
    max_response_headers: int = 100


class Forwarder:
    def __init__(
        self,
        health: HealthBook,
        metrics: RouterMetrics,
        clock: Callable[[], float],
        settings: ForwardSettings,
    ) -> None:
        self._upstreams = Upstreams(
            settings.connect_timeout_s,
            settings.response_timeout_s,
            max_header_line_bytes=settings.max_response_header_line_bytes,
            max_headers=settings.max_response_headers,
        )
        self._health = health
        self._metrics = metrics
        self._clock = clock
        self._settings = settings

    async def close(self) -> None:
        """Close the connections to the sites."""
        await self._upstreams.close()

    async def forward(self, client: Request, decision: Decision, outbound: Outbound) -> Forwarded:
        result = Forwarded()
        try:
            async with asyncio.timeout(self._settings.request_timeout_s):
                started = await self._attempts(decision, outbound, result)
        except TimeoutError:  # the deadline's own: each attempt's are caught within
            result.deadline_exceeded = True
            result.response = None
            return result
        if started is not None:  # relayed as it comes: only silence bounds it now
            assert result.site is not None
            try:
                result.response = await self._streamed(client, started, result.site, result)
            finally:
                started.close()
        return result

    async def _attempts(
        self, decision: Decision, outbound: Outbound, result: Forwarded
    ) -> UpstreamResponse | None:
        """Try the candidates in turn; a response to stream, or None (result.response says
        what the client gets)."""
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
            answer, retry = await self._attempt(decision, candidate, outbound, result)
            if isinstance(answer, UpstreamResponse):
                return answer
            if answer is not None:
                result.response = answer
                return None
            if not retry:
                break
        # every attempt failed; if the last site answered a 5xx, pass that answer on
        result.response = result.server_error
        if result.server_error is not None:
            result.answered_by = result.tried[-1]
        return None

    async def _attempt(
        self,
        decision: Decision,
        candidate: Candidate,
        outbound: Outbound,
        result: Forwarded,
    ) -> tuple[Response | UpstreamResponse | None, bool]:
        """One try at one site: its buffered answer, or its response to stream, or None when it
        failed, with whether another site may be tried."""
        site = candidate.site
        assert site.url is not None
        health = self._health[site.name]
        idempotent = outbound.method in IDEMPOTENT
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
            keep = False
            try:
                waited = self._clock() - started
                self._metrics.upstream_latency(site.name).observe(waited)
                if upstream.status >= 500:
                    result.server_error = (
                        await self._buffered(upstream, site.name)
                        if self._fits_buffer(upstream)  # else never held whole: its status only
                        else Response(upstream.status, ((SITE_HEADER, site.name.encode()),))
                    )
                    # the site answered: its connection is sound, whatever the request did;
                    # only the breaker's probe tells of the site itself
                    if probe:
                        health.breaker.on_failure(self._clock(), probe=True)
                    else:
                        health.breaker.on_success()
                    settled = True
                    result.timed_out = False
                    self._failed(decision, site.name, "server_error", result)
                    result.failures.append(Exclusion(site.name, f"answered {upstream.status}"))
                    return None, idempotent or upstream.status == 503
                if self._fits_buffer(upstream):
                    response = await self._buffered(upstream, site.name)
                    self._succeed(health, waited, result, site.name)
                    settled = True
                    return response, False
                self._succeed(health, waited, result, site.name)
                settled = True
                keep = True
                return upstream, False
            finally:
                if not keep:
                    upstream.close()
        except UpstreamError as error:  # the site or its connection failed
            settled = True
            result.timed_out = False
            health.breaker.on_failure(self._clock(), probe=probe)
            self._failed(decision, site.name, "connection_error", result)
            result.failures.append(Exclusion(site.name, str(error)))
            return None, True
        except TimeoutError as error:  # slow for this request: the request may be why
            settled = True
            result.timed_out = True
            health.breaker.on_abandoned(probe=probe)
            self._failed(decision, site.name, "timeout", result)
            result.failures.append(Exclusion(site.name, _describe(error)))
            return None, idempotent
        finally:
            health.in_flight -= 1
            if not settled:  # cancelled: the client left, or the deadline passed
                health.breaker.on_abandoned(probe=probe)

    def _failed(self, decision: Decision, site: str, kind: str, result: Forwarded) -> None:
        self._metrics.retries(decision.model.key, site, kind).inc()

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
        except (UpstreamError, TimeoutError) as error:
            raise _SiteFailedError(_describe(error)) from error
        yield chunk


class _SiteFailedError(Exception):
    """The site failed after its response had started."""


def _response_headers(upstream: UpstreamResponse, site: str) -> list[tuple[bytes, bytes]]:
    headers = []
    for name, value in upstream.headers:
        lowered = name.lower()
        if lowered not in _NOT_RELAYED and not lowered.startswith(_OWN_PREFIX):
            headers.append((name, value))
    headers.append((SITE_HEADER, site.encode()))
    return headers


def _describe(error: Exception) -> str:
    if isinstance(error, TimeoutError):
        return f"timed out: {error}" if str(error) else "timed out"
    return str(error)
