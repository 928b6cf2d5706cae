"""Prometheus metrics of the router, served on ``/metrics``.

Counters and histograms are updated per request, through children looked up once for each
set of label values (``metrics.requests(model, site, outcome).inc()``); the per-site gauges
(breaker state, requests in flight, observed latency) and the table's size are read from the
live state at scrape time, so they are never stale. Each router owns its registry, so several
can run in one process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from soberana.serving.router.breaker import BreakerState
from soberana.serving.router.health import HealthBook
from soberana.serving.router.table import RoutingTable

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_ADDED_LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)  # fmt: skip


class RouterMetrics:
    def __init__(
        self,
        health: HealthBook,
        table: Callable[[], RoutingTable],
        clock: Callable[[], float],
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = _Children(
            Counter(
                "soberana_router_requests",
                "Requests answered, by model, serving site and outcome.",
                ["model", "site", "outcome"],
                registry=self.registry,
            )
        )
        self.retries = _Children(
            Counter(
                "soberana_router_retries",
                "Attempts that failed before any byte reached the client and moved on, by "
                "model, failed site and reason.",
                ["model", "site", "reason"],
                registry=self.registry,
            )
        )
        self.added_latency = Histogram(
            "soberana_router_added_latency_seconds",
            "Time the router adds before the response starts: everything but the serving "
            "site's own time to its response headers (failed attempts count as added).",
            buckets=_ADDED_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.upstream_latency = _Children(
            Histogram(
                "soberana_router_upstream_latency_seconds",
                "Time from sending a request to a site to its response headers, by site.",
                ["site"],
                registry=self.registry,
            )
        )
        self.registry.register(_LiveState(health, table, clock))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


_Metric = TypeVar("_Metric", Counter, Histogram)


class _Children(Generic[_Metric]):
    """A labelled metric's children by label values, each looked up in the metric only once
    (``labels()`` validates and locks on every call). Label values are bounded by the routing
    table, as the metric's own children are."""

    def __init__(self, metric: _Metric) -> None:
        self._metric: _Metric = metric
        self._children: dict[tuple[str, ...], _Metric] = {}

    def __call__(self, *values: str) -> _Metric:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


class _LiveState(Collector):
    def __init__(
        self,
        health: HealthBook,
        table: Callable[[], RoutingTable],
        clock: Callable[[], float],
    ) -> None:
        self._health = health
        self._table = table
        self._clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = self._clock()
        breaker = GaugeMetricFamily(
            "soberana_router_circuit_breaker_state",
            "1 for the state each site's circuit breaker is in, 0 for the others.",
            labels=["site", "state"],
        )
        in_flight = GaugeMetricFamily(
            "soberana_router_in_flight_requests",
            "Requests sent to each site and not yet answered.",
            labels=["site"],
        )
        latency = GaugeMetricFamily(
            "soberana_router_site_latency_ewma_seconds",
            "Moving average of each site's time to response headers, as the policy sees it.",
            labels=["site"],
        )
        for site, health in self._health:
            current = health.breaker.state(now)
            for state in BreakerState:
                breaker.add_metric([site, state.value], 1.0 if state is current else 0.0)
            in_flight.add_metric([site], float(health.in_flight))
            if health.latency_ewma_ms is not None:
                latency.add_metric([site], health.latency_ewma_ms / 1000)
        table = self._table()
        yield breaker
        yield in_flight
        yield latency
        yield GaugeMetricFamily(
            "soberana_router_table_models", "Models in the routing table.", len(table.models)
        )
        yield GaugeMetricFamily(
            "soberana_router_table_sites", "Sites in the routing table.", len(table.sites)
        )
