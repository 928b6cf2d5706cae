"""The router's HTTP service: endpoints, callers and scopes, and the wiring around the policy.

Endpoints:

- ``POST /v1/chat/completions``, ``POST /v1/completions``: OpenAI-compatible; the body's
  ``"model": "<namespace>/<name>"`` picks the model; streamed answers pass through as they come.
- ``GET /v1/models``: the models in the routing table, in OpenAI's list shape.
- ``GET|POST /models/<namespace>/<name>/<path>``: any other API of a model, such as ``/predict``.
- ``/healthz`` (the process runs), ``/readyz`` (a routing table is loaded), ``/metrics``.

Each request is scoped by its caller (an API key, when keys are configured), its residency
(``X-Soberana-Residency: BR,CL``, narrowed further by the key's) and its client region
(``X-Soberana-Region``, else the router's own); :func:`~soberana.serving.router.policy.decide`
turns that into candidates, and :class:`~soberana.serving.router.forward.Forwarder` tries them.
:func:`serving_router` runs it all on the HTTP server of :mod:`.httpserver`. The API key, the model
of a ``/models/...`` request and its path are checked once the head is in, before the body is
read; each endpoint caps its body. Once a routed request is finished, :attr:`Router.on_outcome`
(when set) gets its :class:`RequestOutcome`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace

from soberana.operator.core.api import NamespacedName, Residency
from soberana.serving.router.auth import ApiKeys, Caller
from soberana.serving.router.breaker import CircuitBreaker
from soberana.serving.router.errors import error_response
from soberana.serving.router.forward import (
    HOP_BY_HOP,
    Forwarded,
    Forwarder,
    ForwardSettings,
    Outbound,
)
from soberana.serving.router.health import HealthBook
from soberana.serving.router.httpserver import (
    Answer,
    Headers,
    HttpServer,
    Request,
    Response,
    ResponseStream,
    json_response,
)
from soberana.serving.router.metrics import CONTENT_TYPE, RouterMetrics
from soberana.serving.router.policy import Decision, RequestScope, Restriction, decide
from soberana.serving.router.table import MODEL_KEY, RoutingTable
from soberana.serving.router.telemetry import TRACE_HEADERS, Telemetry, make_telemetry

log = logging.getLogger(__name__)

RESIDENCY_HEADER = "X-Soberana-Residency"
REGION_HEADER = "X-Soberana-Region"
_RESIDENCY = RESIDENCY_HEADER.lower()  # how the server's request headers name them
_REGION = REGION_HEADER.lower()

_NOT_PASSED_ON = HOP_BY_HOP | TRACE_HEADERS  # the router sends its own trace context
_NOT_PASSED_ON_WITH_KEYS = _NOT_PASSED_ON | {b"authorization"}

_JURISDICTION = re.compile(r"^[A-Z]{2}$")
REGION_ID = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_MODEL_KEY = re.compile(MODEL_KEY)


@dataclass(frozen=True)
class RequestOutcome:
    """What came of one routed request, once it is finished (its last byte sent, or refused).

    Never the API key, the prompt or the completion: the tenant stands for the caller, and sizes
    for the content.
    """

    request_id: str  # the client's X-Request-Id when it sent one, else generated
    received_at: float  # wall-clock seconds since the epoch
    tenant: str | None  # the API key's tenant; None without API keys or before one is known
    model: str | None  # "<namespace>/<name>" as the request named it, when it did
    client_region: str | None
    model_residency: Residency | None  # the model's own residency, once the model is known
    restrictions: tuple[Restriction, ...]  # from the residency header and the API key
    site: str | None  # the site whose answer the client got
    site_jurisdiction: str | None
    tried: tuple[str, ...]  # every site a request was sent to, in order
    status: int  # the status code the client got
    refusal: str | None  # the router's error code when it answered itself, such as
    # "no_compliant_site" or "invalid_api_key"
    request_bytes: int  # the request body's size
    response_bytes: int  # the response body's size as sent to the client


OutcomeHook = Callable[[RequestOutcome], None]
"""Called with every routed request's outcome; it must not block (queue, then return)."""

Admission = Callable[[], str | None]
"""Asked before each routed request: why the router must refuse it now (503), or None. The
audit log uses it to fail closed while its records cannot be written."""


@dataclass(frozen=True)
class RouterSettings:
    region: str | None = None  # the client region of requests that name none
    forward: ForwardSettings = field(default_factory=ForwardSettings)
    failure_threshold: int = 3  # consecutive failures that open a site's breaker
    open_for_s: float = 1.0  # how long a breaker stays open before its first probe
    max_model_api_body_bytes: int = 32 * 1024 * 1024  # to a model's other APIs (/models/...)
    max_openai_body_bytes: int = 16 * 1024 * 1024  # a chat or text completion request
    max_connections: int = 2048  # client connections; more are answered 503 and closed
    header_timeout_s: float = 10.0  # to receive a request's head
    keepalive_s: float = 75.0  # an idle client connection is closed after this


class Router:
    """The live state of one router: its table, keys, what it saw of each site, and metrics."""

    def __init__(
        self,
        settings: RouterSettings,
        telemetry: Telemetry | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_outcome: OutcomeHook | None = None,
        admission: Admission | None = None,
    ) -> None:
        self.settings = settings
        self.on_outcome = on_outcome
        self.admission = admission
        self.telemetry = telemetry or make_telemetry()
        self.clock = clock
        self.table = RoutingTable()
        self.api_keys: ApiKeys | None = None
        self.has_table = False
        self.health = HealthBook(
            lambda: CircuitBreaker(settings.failure_threshold, settings.open_for_s)
        )
        self.metrics = RouterMetrics(self.health, lambda: self.table, clock)

    def set_table(self, table: RoutingTable) -> None:
        self.table = table
        self.has_table = True
        self.health.keep_only(set(table.sites))

    def set_api_keys(self, keys: ApiKeys) -> None:
        self.api_keys = keys


Background = Callable[[], Awaitable[None]]
"""A task that runs as long as the application, such as a routing table source."""


@asynccontextmanager
async def serving_router(
    router: Router,
    host: str,
    port: int,
    background: Sequence[Background] = (),
    shutdown_timeout_s: float = 10.0,
) -> AsyncIterator[HttpServer]:
    """Serve ``router`` on ``host``:``port`` (0: any free port) while the context lasts;
    ``background`` tasks run as long. On the way out, requests being answered get
    ``shutdown_timeout_s`` to finish."""
    settings = router.settings
    forwarder = Forwarder(router.health, router.metrics, router.clock, settings.forward)
    endpoints = _Endpoints(router, forwarder)
    server = HttpServer(
        endpoints.answer,
        head_check=endpoints.head_check,
        max_body_bytes=_SMALL_BODY_BYTES,
        keepalive_s=settings.keepalive_s,
        header_timeout_s=settings.header_timeout_s,
        max_connections=settings.max_connections,
    )
    tasks = [asyncio.create_task(_logged(task)) for task in background]
    try:
        await server.start(host, port)
        yield server
    finally:
        await server.close(shutdown_timeout_s)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await forwarder.close()
        await asyncio.to_thread(router.telemetry.shutdown)  # flushes over the network


async def _logged(task: Background) -> None:
    try:
        await task()
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("a background task of the router stopped")
        raise


class _RefusedError(Exception):
    """A request the router answers itself, with an error response."""

    def __init__(
        self,
        outcome: str,
        status: int,
        code: str,
        message: str,
        *,
        param: str | None = None,
        headers: Headers = (),
    ) -> None:
        self.response = error_response(status, code, message, param=param, headers=headers)
        self.outcome = outcome  # the metric label
        self.code = code


_MODEL_API = "/models/"
_SMALL_BODY_BYTES = 64 * 1024  # endpoints that take no body, and unknown ones
_UNSAFE_PATH = re.compile(r"(^|/)\.\.?(/|$)|%2[ef]|%5c|\\", re.IGNORECASE)
"""Dot-segments, and dots, slashes and backslashes in disguise: a site or a proxy in front of it
that normalises the path would serve another model than the one residency was decided for."""


class _Endpoints:
    def __init__(self, router: Router, forwarder: Forwarder) -> None:
        self.router = router
        self.forwarder = forwarder
        self._fixed: dict[str, tuple[str, Callable[[Request], Awaitable[Answer]]]] = {
            "/v1/chat/completions": ("POST", self.openai),
            "/v1/completions": ("POST", self.openai),
            "/v1/models": ("GET", self.models),
            "/healthz": ("GET", self.healthz),
            "/readyz": ("GET", self.readyz),
            "/metrics": ("GET", self.metrics),
        }

    def head_check(self, request: Request) -> Response | int:
        """Before a request's body is read: refuse it (a routed request without a valid API
        key, to an unknown model, or to an unsafe path), or say how large its body may be."""
        path = request.path
        fixed = self._fixed.get(path)
        settings = self.router.settings
        if fixed is not None:
            if fixed[0] != "POST" or request.method != "POST":
                return _SMALL_BODY_BYTES
            refused = self._check_head(request, None, None)
            return refused or settings.max_openai_body_bytes
        model = _model_api(path)
        if model is None:
            return _SMALL_BODY_BYTES
        refused = self._check_head(request, model, path[len(_MODEL_API) + len(model) :])
        return refused or settings.max_model_api_body_bytes

    def _check_head(
        self, request: Request, model_key: str | None, rest: str | None
    ) -> Response | None:
        caller: Caller | None = None
        try:
            caller = request.context = self._caller(request)
            if model_key is not None:
                if rest is not None and _UNSAFE_PATH.search(rest):
                    raise _RefusedError(
                        "bad_request",
                        400,
                        "invalid_path",
                        "the path after the model may not hold dot-segments ('.', '..') or "
                        "encoded dots, slashes or backslashes",
                    )
                router = self.router
                if router.has_table and router.table.models.get(self._model_key(model_key)) is None:
                    raise _unknown_model(model_key)
            return None
        except _RefusedError as refused:
            self._refused(request, refused, model_key, caller)
            return refused.response

    def _refused(
        self,
        request: Request,
        refused: _RefusedError,
        model_key: str | None,
        caller: Caller | None,
    ) -> None:
        """Count and report a request refused at its head."""
        router = self.router
        router.metrics.requests("", "", refused.outcome).inc()
        if router.on_outcome is not None:
            response = refused.response
            router.on_outcome(
                _outcome_of(request, model_key, caller, None, None, None, response, refused.code)
            )

    async def answer(self, request: Request) -> Answer:
        """The endpoint at the request's path, or 404 (405 for another method)."""
        fixed = self._fixed.get(request.path)
        if fixed is not None:
            method, endpoint = fixed
            if request.method == method or (method == "GET" and request.method == "HEAD"):
                return await endpoint(request)
            return error_response(
                405,
                "method_not_allowed",
                f"{request.path} takes {method}",
                headers=((b"Allow", method.encode()),),
            )
        model = _model_api(request.path)
        if model is not None:
            return await self.model_api(request, model)
        return error_response(404, "not_found", f"the router has no endpoint {request.path}")

    async def openai(self, request: Request) -> Answer:
        return await self._route(request, request.path, request.body, request.target, None)

    async def model_api(self, request: Request, model_key: str) -> Answer:
        path = request.target[len(_MODEL_API) + len(model_key) :]
        route = "/models/{namespace}/{name}/{path}"
        return await self._route(request, route, request.body, path, model_key)

    async def models(self, request: Request) -> Response:
        try:
            self._caller(request)
        except _RefusedError as refused:
            return refused.response
        data = [
            {"id": key, "object": "model", "created": 0, "owned_by": "soberana"}
            for key in sorted(self.router.table.models)
        ]
        return json_response({"object": "list", "data": data})

    async def healthz(self, request: Request) -> Response:
        return json_response({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        if not self.router.has_table:
            return json_response({"status": "no routing table loaded yet"}, status=503)
        table = self.router.table
        return json_response(
            {"status": "ok", "models": len(table.models), "sites": len(table.sites)}
        )

    async def metrics(self, request: Request) -> Response:
        return Response(
            200, ((b"Content-Type", CONTENT_TYPE.encode()),), self.router.metrics.exposition()
        )

    async def _route(
        self, request: Request, route: str, body: bytes, path: str, model_key: str | None
    ) -> Answer:
        router = self.router
        received = router.clock()
        span = router.telemetry.start_request_span(f"{request.method} {route}", request.headers)
        model = site = ""  # metric labels: only models in the table, to bound their number
        caller: Caller | None = None
        scope: RequestScope | None = None
        decision: Decision | None = None
        forwarded: Forwarded | None = None
        refusal: str | None = None
        response: Answer
        try:
            try:
                if router.admission is not None and (closed := router.admission()) is not None:
                    raise _RefusedError("audit_unavailable", 503, "audit_unavailable", closed)
                caller = request.context  # the head check's
                if caller is None and router.api_keys is not None:
                    caller = self._caller(request)
                if model_key is None:  # an OpenAI request names it in its body
                    model_key = _model_of(body)
                if caller is not None:
                    span.set_attribute("soberana.tenant", caller.tenant)
                scope = self._scope(request, caller)
                decision = self._decide(self._model_key(model_key), scope, span)
                model = decision.model.key
                outbound = self._outbound(request, body, path, span)
                forwarded = await self.forwarder.forward(request, decision, outbound)
                site = forwarded.site or ""
                response, outcome = self._answer(decision, forwarded, span)
                if forwarded.response is None:
                    refusal = outcome
                if forwarded.site is not None:
                    added = router.clock() - received - forwarded.upstream_wait_s
                    router.metrics.added_latency.observe(added)
            except _RefusedError as refused:
                response, outcome, refusal = refused.response, refused.outcome, refused.code
            except asyncio.CancelledError:  # the client left: its connection is gone
                router.metrics.requests(model, site, "client_closed").inc()
                if router.on_outcome is not None:
                    gone = Response(499)  # nginx's "client closed request"; nothing was sent
                    router.on_outcome(
                        _outcome_of(
                            request,
                            model_key,
                            caller,
                            scope,
                            decision,
                            forwarded,
                            gone,
                            "client_closed_request",
                        )
                    )
                raise
            span.set_attributes(
                {"http.response.status_code": response.status, "soberana.outcome": outcome}
            )
        finally:
            span.end()
        router.metrics.requests(model, site, outcome).inc()
        if router.on_outcome is not None:
            router.on_outcome(
                _outcome_of(
                    request, model_key, caller, scope, decision, forwarded, response, refusal
                )
            )
        return response

    def _caller(self, request: Request) -> Caller | None:
        keys = self.router.api_keys
        if keys is None:
            return None
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        caller = keys.identify(presented.strip()) if scheme.lower() == "bearer" else None
        if caller is None:
            raise _RefusedError(
                "unauthorized",
                401,
                "invalid_api_key",
                "a valid API key is required: send it as 'Authorization: Bearer <key>'",
                headers=((b"WWW-Authenticate", b"Bearer"),),
            )
        return caller

    def _scope(self, request: Request, caller: Caller | None) -> RequestScope:
        restrictions: list[Restriction] = []
        header = request.headers.get(_RESIDENCY)
        if header is not None:
            codes = [code.strip().upper() for code in header.split(",") if code.strip()]
            if not codes or not all(_JURISDICTION.match(code) for code in codes):
                raise _RefusedError(
                    "bad_request",
                    400,
                    "invalid_residency",
                    f"{RESIDENCY_HEADER} must list ISO 3166-1 alpha-2 codes separated by "
                    f"commas, such as 'BR,CL'; got {header[:100]!r}",
                    param=RESIDENCY_HEADER,
                )
            restrictions.append(Restriction(frozenset(codes), RESIDENCY_HEADER))
        if caller is not None and caller.residency is not None:
            restrictions.append(
                Restriction(caller.residency, f"the API key of tenant {caller.tenant}")
            )
        region = request.headers.get(_REGION)
        if region is None:
            region = self.router.settings.region  # soberana router checks its --region
        elif not REGION_ID.match(region):
            raise _RefusedError(
                "bad_request",
                400,
                "invalid_region",
                f"{REGION_HEADER} must be a region id such as 'br-southeast'; got {region[:100]!r}",
                param=REGION_HEADER,
            )
        return RequestScope(region=region, restrictions=tuple(restrictions))

    def _model_key(self, model_key: str | None) -> str:
        if model_key is None or not _MODEL_KEY.match(model_key):
            raise _RefusedError(
                "bad_request",
                400,
                "invalid_model",
                'the request must name its model as "<namespace>/<name>" in "model"',
                param="model",
            )
        return model_key

    def _decide(self, model_key: str, scope: RequestScope, span: trace.Span) -> Decision:
        router = self.router
        if not router.has_table:
            raise _RefusedError(
                "not_ready",
                503,
                "not_ready",
                "the router has not loaded its routing table",
            )
        model = router.table.models.get(model_key)
        if model is None:
            raise _unknown_model(model_key)
        decision = decide(router.table, model, scope, router.health, router.clock())
        if span.is_recording():
            span.set_attributes(
                {
                    "soberana.model": model_key,
                    "soberana.client_region": scope.region or "",
                    "soberana.candidates": [c.site.name for c in decision.candidates],
                    "soberana.excluded": [str(exclusion) for exclusion in decision.exclusions],
                }
            )
        if not decision.candidates:
            raise _RefusedError(
                "no_compliant_site",
                503,
                "no_compliant_site",
                decision.refusal(),
            )
        return decision

    def _outbound(self, request: Request, body: bytes, path: str, span: trace.Span) -> Outbound:
        # with API keys, Authorization holds the router's key, not the site's
        dropped = _NOT_PASSED_ON_WITH_KEYS if self.router.api_keys else _NOT_PASSED_ON
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in request.raw_headers
            if name.lower() not in dropped
        ]
        headers += self.router.telemetry.outgoing_headers(span)
        return Outbound(request.method, path, headers, body)

    def _answer(
        self, decision: Decision, forwarded: Forwarded, span: trace.Span
    ) -> tuple[Answer, str]:
        if span.is_recording():
            self._record_outcome(decision, forwarded, span)
        if forwarded.response is not None:
            outcome = "aborted" if forwarded.aborted else _outcome(forwarded.response.status)
            return forwarded.response, outcome
        reasons = "; ".join(str(x) for x in (*decision.exclusions, *forwarded.failures))
        if forwarded.deadline_exceeded:
            timeout = self.router.settings.forward.request_timeout_s
            message = (
                f"no site answered model {decision.model.key} within the router's request "
                f"timeout of {timeout:g}s" + (f": {reasons}" if reasons else "")
            )
            return error_response(504, "deadline_exceeded", message), "deadline_exceeded"
        if forwarded.timed_out:
            message = f"no site answered model {decision.model.key} in time: {reasons}"
            return error_response(504, "site_timeout", message), "site_timeout"
        message = f"no compliant site could serve model {decision.model.key}: {reasons}"
        return error_response(503, "no_compliant_site", message), "no_compliant_site"

    def _record_outcome(self, decision: Decision, forwarded: Forwarded, span: trace.Span) -> None:
        span.set_attribute("soberana.retries", len(forwarded.failures))
        if forwarded.failures:
            span.set_attribute("soberana.failures", [str(f) for f in forwarded.failures])
        if forwarded.site is not None:
            chosen = next(c for c in decision.candidates if c.site.name == forwarded.site)
            span.set_attributes(
                {"soberana.site": forwarded.site, "soberana.reason": chosen.reason()}
            )


def _outcome(status: int) -> str:
    if status < 400:
        return "ok"
    return "client_error" if status < 500 else "server_error"


def _outcome_of(
    request: Request,
    model_key: str | None,
    caller: Caller | None,
    scope: RequestScope | None,
    decision: Decision | None,
    forwarded: Forwarded | None,
    response: Answer,
    refusal: str | None,
) -> RequestOutcome:
    served = forwarded.answered_by if forwarded is not None else None
    jurisdiction = None
    if served is not None and decision is not None:
        jurisdiction = next(
            (c.site.jurisdiction for c in decision.candidates if c.site.name == served), None
        )
    return RequestOutcome(
        request_id=request.headers.get("x-request-id") or uuid.uuid4().hex,
        received_at=request.received_at,
        tenant=caller.tenant if caller is not None else None,
        model=model_key,
        client_region=scope.region if scope is not None else None,
        model_residency=decision.model.residency if decision is not None else None,
        restrictions=scope.restrictions if scope is not None else (),
        site=served,
        site_jurisdiction=jurisdiction,
        tried=tuple(forwarded.tried) if forwarded is not None else (),
        status=response.status,
        refusal=refusal,
        request_bytes=len(request.body),
        response_bytes=response.body_bytes
        if isinstance(response, ResponseStream)
        else len(response.body),
    )


def _unknown_model(model_key: str) -> _RefusedError:
    return _RefusedError(
        "model_not_found",
        404,
        "model_not_found",
        f"model {model_key} is not in the routing table",
        param="model",
    )


def _model_api(path: str) -> str | None:
    """``<namespace>/<name>`` of a path ``/models/<namespace>/<name>/<path>``, else None."""
    if not path.startswith(_MODEL_API):
        return None
    namespace, _, rest = path[len(_MODEL_API) :].partition("/")
    name, slash, _ = rest.partition("/")
    return str(NamespacedName(namespace, name)) if namespace and name and slash else None


def _model_of(body: bytes) -> str | None:
    try:
        document: Any = json.loads(body)
    except ValueError:
        return None
    except RecursionError:
        raise _RefusedError(
            "bad_request", 400, "invalid_body", "the request's JSON is nested too deeply"
        ) from None
    model = document.get("model") if isinstance(document, dict) else None
    return model if isinstance(model, str) else None
