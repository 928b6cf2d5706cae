"""OpenTelemetry tracing: one span per request, and W3C trace context passed on to the site.

Every request gets a server span, a child of the client's ``traceparent`` when it sent one,
carrying the routing decision (candidates, exclusions, chosen site and why, retries). Its
context goes to the site in ``traceparent``/``tracestate``, so the site's spans join the trace.
Spans are recorded only when something consumes them (an OTLP/HTTP endpoint, or a span processor
given in code); otherwise each request still gets a span id of its own, so that trace context
flows to the sites, at almost no cost: no tracer runs, nothing is recorded or exported, and the
incoming headers are parsed only when they carry a ``traceparent``.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

SERVICE_NAME = "soberana-router"
TRACE_HEADERS = frozenset({b"traceparent", b"tracestate"})
"""The headers (lowercase) that :meth:`Telemetry.outgoing_headers` writes."""


class Telemetry:
    def __init__(self, provider: TracerProvider | None) -> None:
        """Record spans through ``provider``; with None, only pass trace context on."""
        self._provider = provider
        self._tracer = provider.get_tracer("soberana.serving.router") if provider else None
        self._propagator = TraceContextTextMapPropagator()
        self._ids = RandomIdGenerator()

    def start_request_span(self, name: str, incoming: Mapping[str, str]) -> trace.Span:
        """A server span for one request, continuing the trace of ``incoming`` headers.

        Check ``span.is_recording()`` before computing attributes: unrecorded spans drop them.
        """
        if self._tracer is not None:
            parent = self._propagator.extract(incoming)
            return self._tracer.start_span(name, context=parent, kind=trace.SpanKind.SERVER)
        remote = trace.INVALID_SPAN_CONTEXT
        if "traceparent" in incoming:
            remote = trace.get_current_span(self._propagator.extract(incoming)).get_span_context()
        return trace.NonRecordingSpan(
            trace.SpanContext(
                trace_id=remote.trace_id if remote.is_valid else self._ids.generate_trace_id(),
                span_id=self._ids.generate_span_id(),
                is_remote=False,
                trace_flags=remote.trace_flags,
                trace_state=remote.trace_state,
            )
        )

    @staticmethod
    def outgoing_headers(span: trace.Span) -> list[tuple[str, str]]:
        """The headers that carry ``span``'s context to the site: W3C ``traceparent``
        (version 00) and, when the trace has one, ``tracestate``."""
        context = span.get_span_context()
        parent = f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
        if context.trace_state:
            return [("traceparent", parent), ("tracestate", context.trace_state.to_header())]
        return [("traceparent", parent)]

    def shutdown(self) -> None:
        """Flush and stop the exporters."""
        if self._provider is not None:
            self._provider.shutdown()


def make_telemetry(
    otlp_endpoint: str | None = None, processors: tuple[SpanProcessor, ...] = ()
) -> Telemetry:
    """Tracing that exports to ``otlp_endpoint`` (an OTLP/HTTP traces URL) and ``processors``."""
    if not otlp_endpoint and not processors:
        return Telemetry(None)
    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint)))
    for processor in processors:
        provider.add_span_processor(processor)
    return Telemetry(provider)
