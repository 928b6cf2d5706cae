"""Prometheus metrics of the operator, served on ``--metrics-port`` at ``/metrics``.

Counters and histograms are updated where things happen (a pass, a solve, a write, an Event, a
Serve config applied); the state gauges (deployments by condition, each site's conditions) are
read from the watched objects at scrape time, and only by the leader, so that summing over the
replicas never counts an object twice. Names follow prometheus_client's conventions (counters end
in ``_total``, durations in ``_seconds``) and controller-runtime's where one fits
(``soberana_leader_election_master_status``, ``soberana_reconcile_total{result}``). Each operator
owns its registry, so several can run in one process. docs/operations.md lists every metric.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STATUSES = ("True", "False", "Unknown")
DEPLOYMENT_CONDITIONS = ("Placed", "Available")
SITE_CONDITIONS = ("Reachable", "Ready")

Objects = tuple[Iterable[Mapping[str, Any]], Iterable[Mapping[str, Any]]]
"""(sites, deployments) as watched: raw objects with their statuses."""

_PASS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class OperatorMetrics:
    """The operator's metric families, in a registry of their own."""

    def __init__(self, objects: Callable[[], Objects | None] = lambda: None) -> None:
        """``objects``: what the state gauges count; None while this replica is not leading."""
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.reconcile_duration = Histogram(
            "soberana_reconcile_duration_seconds",
            "Time of one reconciliation pass: snapshot, placement, status and finalizer writes.",
            buckets=_PASS_BUCKETS,
            registry=registry,
        )
        self.reconciles = Counter(
            "soberana_reconcile",
            "Reconciliation passes, by result (success or error).",
            ["result"],
            registry=registry,
        )
        self.solve_duration = Histogram(
            "soberana_placement_solve_duration_seconds",
            "Time the placement engine took to plan the whole world, by solver.",
            ["solver"],
            buckets=_PASS_BUCKETS,
            registry=registry,
        )
        self.status_writes = Counter(
            "soberana_status_writes",
            "Status patches written, by resource (inferencesites, modeldeployments).",
            ["resource"],
            registry=registry,
        )
        self.finalizer_writes = Counter(
            "soberana_finalizer_writes",
            "Finalizer patches written on ModelDeployments.",
            registry=registry,
        )
        self.events = Counter(
            "soberana_events",
            "Kubernetes Events posted, by type (Normal, Warning) and reason.",
            ["type", "reason"],
            registry=registry,
        )
        self.serve_applies = Counter(
            "soberana_serve_config_applies",
            "Serve configs a site accepted, by site.",
            ["site"],
            registry=registry,
        )
        self.serve_apply_failures = Counter(
            "soberana_serve_config_apply_failures",
            "Serve configs a site refused or could not be sent, by site.",
            ["site"],
            registry=registry,
        )
        self.writes_refused = Counter(
            "soberana_writes_refused",
            "Writes not made because this replica did not hold the leader Lease at that moment.",
            ["kind"],
            registry=registry,
        )
        self.leader = Gauge(
            "soberana_leader_election_master_status",
            "1 while this replica is the leader (always 1 without --leader-elect), else 0.",
            ["name"],
            registry=registry,
        )
        registry.register(_ObjectState(objects))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    async def serve(self, host: str, port: int) -> web.AppRunner:
        """Serve ``/metrics`` on the running event loop (where the watched objects live)."""

        async def metrics(_: web.Request) -> web.Response:
            return web.Response(body=self.exposition(), headers={"Content-Type": CONTENT_TYPE})

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        return runner


def _conditions(raw: Mapping[str, Any]) -> dict[str, str]:
    """A raw object's conditions as {type: status}; odd entries are skipped, never fatal."""
    status = raw.get("status")
    conditions = status.get("conditions") if isinstance(status, Mapping) else None
    found: dict[str, str] = {}
    for condition in conditions if isinstance(conditions, list) else []:
        if isinstance(condition, Mapping) and isinstance(condition.get("type"), str):
            value = condition.get("status")
            found[condition["type"]] = value if value in STATUSES else "Unknown"
    return found


class _ObjectState(Collector):
    """Deployments by condition and each site's conditions, counted at scrape time."""

    def __init__(self, objects: Callable[[], Objects | None]) -> None:
        self._objects = objects

    def describe(self) -> Iterator[Metric]:
        return iter(())  # the families appear only on the leader

    def collect(self) -> Iterator[Metric]:
        objects = self._objects()
        if objects is None:
            return
        sites, deployments = objects
        deployment_family = GaugeMetricFamily(
            "soberana_deployments",
            "ModelDeployments by condition type and status (a missing condition counts as "
            "Unknown); only the leader exports it.",
            labels=["condition", "status"],
        )
        tally: Tally[tuple[str, str]] = Tally()
        kinds = set(DEPLOYMENT_CONDITIONS)
        found = [_conditions(raw) for raw in deployments]
        for conditions in found:
            kinds |= conditions.keys()
        for conditions in found:
            for kind in kinds:
                tally[kind, conditions.get(kind, "Unknown")] += 1
        for kind in sorted(kinds):
            for value in STATUSES:
                deployment_family.add_metric([kind, value], tally[kind, value])
        yield deployment_family

        site_family = GaugeMetricFamily(
            "soberana_site_condition",
            "1 for the status each InferenceSite's condition has, 0 for the others (as "
            "kube-state-metrics' kube_node_status_condition); only the leader exports it.",
            labels=["site", "condition", "status"],
        )
        for raw in sites:
            name = str(raw.get("metadata", {}).get("name", ""))
            conditions = _conditions(raw)
            for kind in sorted(set(SITE_CONDITIONS) | conditions.keys()):
                current = conditions.get(kind, "Unknown")
                for value in STATUSES:
                    site_family.add_metric([name, kind, value], 1.0 if value == current else 0.0)
        yield site_family
