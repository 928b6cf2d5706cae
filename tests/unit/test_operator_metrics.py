"""The operator's metric families (names, labels, the state gauges read from watched objects) and
the leader gate in front of every write, which counts what it lets through."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from soberana.operator.backends.base import BackendError, ServeConfig, SiteReport
from soberana.operator.controller.handlers import GatedBackend, GatedWriter
from soberana.operator.controller.kube import ObjectRef
from soberana.operator.controller.metrics import Objects, OperatorMetrics


def conditions(*pairs: tuple[str, str]) -> dict[str, Any]:
    return {"conditions": [{"type": kind, "status": status} for kind, status in pairs]}


def samples(metrics: OperatorMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.exposition().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_counters_and_histograms_follow_prometheus_conventions() -> None:
    metrics = OperatorMetrics()
    metrics.reconcile_duration.observe(0.3)
    metrics.reconciles.labels("success").inc()
    metrics.solve_duration.labels("fast").observe(0.02)
    metrics.status_writes.labels("modeldeployments").inc(3)
    metrics.events.labels("Normal", "Placed").inc()
    metrics.serve_applies.labels("sp1").inc()
    metrics.serve_apply_failures.labels("sp2").inc()
    metrics.leader.labels("soberana-operator").set(1)
    seen = samples(metrics)
    assert seen["soberana_reconcile_duration_seconds_count", ()] == 1
    assert seen["soberana_reconcile_duration_seconds_bucket", (("le", "0.5"),)] == 1
    assert seen["soberana_reconcile_total", (("result", "success"),)] == 1
    assert seen["soberana_placement_solve_duration_seconds_sum", (("solver", "fast"),)] == 0.02
    assert seen["soberana_status_writes_total", (("resource", "modeldeployments"),)] == 3
    assert seen["soberana_events_total", (("reason", "Placed"), ("type", "Normal"))] == 1
    assert seen["soberana_serve_config_applies_total", (("site", "sp1"),)] == 1
    assert seen["soberana_serve_config_apply_failures_total", (("site", "sp2"),)] == 1
    assert seen["soberana_leader_election_master_status", (("name", "soberana-operator"),)] == 1


def test_state_gauges_count_conditions_and_tolerate_odd_objects() -> None:
    sites = [
        {
            "metadata": {"name": "sp1"},
            "status": conditions(("Reachable", "True"), ("Ready", "True")),
        },
        {"metadata": {"name": "fra"}, "status": conditions(("Reachable", "False"))},
        {"metadata": {"name": "odd"}, "status": {"conditions": "not a list"}},
    ]
    deployments: list[dict[str, Any]] = [
        {
            "metadata": {"name": "a"},
            "status": conditions(("Placed", "True"), ("Available", "True")),
        },
        {"metadata": {"name": "b"}, "status": conditions(("Placed", "False"))},
        {"metadata": {"name": "c"}},  # not reconciled yet
        {"metadata": {"name": "d"}, "status": {"conditions": [{"type": "Placed", "status": 7}]}},
    ]
    objects: Objects = (sites, deployments)
    seen = samples(OperatorMetrics(lambda: objects))

    def deployments_with(condition: str, status: str) -> float:
        return seen["soberana_deployments", (("condition", condition), ("status", status))]

    assert deployments_with("Placed", "True") == 1
    assert deployments_with("Placed", "False") == 1
    assert deployments_with("Placed", "Unknown") == 2  # no status, and an odd one
    assert deployments_with("Available", "True") == 1
    assert deployments_with("Available", "Unknown") == 3

    def site(name: str, condition: str, status: str) -> float:
        labels = (("condition", condition), ("site", name), ("status", status))
        return seen["soberana_site_condition", labels]

    assert site("sp1", "Ready", "True") == 1 and site("sp1", "Ready", "False") == 0
    assert site("fra", "Reachable", "False") == 1 and site("fra", "Reachable", "True") == 0
    assert site("fra", "Ready", "Unknown") == 1
    assert site("odd", "Reachable", "Unknown") == 1


def test_state_gauges_are_left_out_while_not_leading() -> None:
    seen = samples(OperatorMetrics(lambda: None))
    assert not [
        name for name, _ in seen if name in {"soberana_deployments", "soberana_site_condition"}
    ]


class _Writes:
    """Records what reaches the API writer (a stand-in for KubeWriter's three calls)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def patch_status(self, ref: ObjectRef, patch: Mapping[str, Any]) -> bool:
        self.calls.append(f"status {ref.name}")
        return True

    async def patch_finalizers(
        self, ref: ObjectRef, finalizers: list[str], resource_version: str
    ) -> bool:
        self.calls.append(f"finalizers {ref.name}")
        return True

    async def post_event(self, ref: ObjectRef, *, warning: bool, reason: str, message: str) -> None:
        self.calls.append(f"event {reason}")


class _Site:
    """A site backend that accepts or refuses configs (the SiteBackend protocol, in memory)."""

    def __init__(self, refuse: bool) -> None:
        self.refuse, self.applied = refuse, 0

    async def apply(self, config: ServeConfig) -> None:
        if self.refuse:
            raise BackendError("HTTP 500 from the dashboard")
        self.applied += 1

    async def observe(self) -> SiteReport:
        return SiteReport()

    async def close(self) -> None:
        pass


REF = ObjectRef("ModelDeployment", "modeldeployments", "chat", "ml", "uid-1")


async def test_writes_pass_the_leader_gate_only_while_it_is_open_and_are_counted() -> None:
    metrics, inner, leading = OperatorMetrics(), _Writes(), [True]
    writer = GatedWriter(inner, lambda: leading[0], metrics)
    assert await writer.patch_status(REF, {"phase": "x"})
    assert await writer.patch_finalizers(REF, ["soberana.io/finalizer"], "7")
    await writer.post_event(REF, warning=False, reason="Placed", message="placed")
    leading[0] = False  # the Lease is lost between two writes of one pass
    assert not await writer.patch_status(REF, {"phase": "y"})
    assert not await writer.patch_finalizers(REF, [], "8")
    await writer.post_event(REF, warning=True, reason="Unplaceable", message="no")
    assert inner.calls == ["status chat", "finalizers chat", "event Placed"]
    seen = samples(metrics)
    assert seen["soberana_status_writes_total", (("resource", "modeldeployments"),)] == 1
    assert seen["soberana_finalizer_writes_total", ()] == 1
    assert seen["soberana_events_total", (("reason", "Placed"), ("type", "Normal"))] == 1
    assert ("soberana_events_total", (("reason", "Unplaceable"), ("type", "Warning"))) not in seen
    for kind in ("status", "finalizers", "event"):
        assert seen["soberana_writes_refused_total", (("kind", kind),)] == 1


async def test_serve_config_applies_are_gated_and_counted_per_site() -> None:
    metrics, leading = OperatorMetrics(), [True]
    good, bad = _Site(refuse=False), _Site(refuse=True)
    sp1 = GatedBackend("sp1", good, lambda: leading[0], metrics)
    sp2 = GatedBackend("sp2", bad, lambda: leading[0], metrics)
    await sp1.apply({"applications": []})
    with pytest.raises(BackendError, match="HTTP 500"):
        await sp2.apply({"applications": []})
    leading[0] = False
    with pytest.raises(BackendError, match="not the leader"):
        await sp1.apply({"applications": []})
    assert good.applied == 1
    seen = samples(metrics)
    assert seen["soberana_serve_config_applies_total", (("site", "sp1"),)] == 1
    assert seen["soberana_serve_config_apply_failures_total", (("site", "sp2"),)] == 1
    assert ("soberana_serve_config_applies_total", (("site", "sp2"),)) not in seen
    assert seen["soberana_writes_refused_total", (("kind", "serve_config"),)] == 1
