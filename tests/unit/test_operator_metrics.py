"""The operator's metric families: names, labels and the state gauges read from watched objects."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

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
    deployments = [
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
