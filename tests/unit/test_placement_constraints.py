"""The constraint model: every screening check has a world where it alone rejects the one site, its
rejection line starts with the check's name, and the deployment's reason is its constraint's."""

from __future__ import annotations

from typing import Any

import pytest

from soberana.operator.core.placement import Site, place
from soberana.operator.core.placement.constraints import CHECKS, CONSTRAINTS, Check
from tests.unit.builders import cpu_only, deployment, site, world

CPU_SITE: dict[str, Any] = {"cpus": (4, 16, 0.03)}

CASES: dict[str, tuple[dict[str, Any], dict[str, Any], str]] = {
    # check name: (site keywords, deployment spec, words of the reason)
    "jurisdiction": ({}, {"residency": {"allowedJurisdictions": ["CL"]}}, "sites are in BR"),
    "selector": ({}, {"placement": {"siteSelector": {"matchLabels": {"tier": "gold"}}}}, "matches"),
    "unhealthy": ({"healthy": False}, {}, "s1 unhealthy"),
    "cordoned": ({"cordoned": True}, {}, "s1 cordoned"),
    "GPU model": ({}, {"resources": {"gpuModels": ["A100"]}}, "GPU model A100"),
    "GPU memory": ({}, {"resources": {"gpuMemoryGiB": 40}}, "GPUs with 40 GiB"),
    "GPU count": ({}, {"resources": {"gpus": 8}}, "8 any-model GPUs in one pool"),
    "CPU pool": ({}, {"resources": cpu_only()}, "has a CPU pool"),
    "cpus": (CPU_SITE, {"resources": cpu_only(8)}, "the 8 cores a replica needs"),
    "memory": (CPU_SITE, {"resources": cpu_only(2, 32)}, "the 32 GiB a replica needs"),
    "latency": ({}, {"latencySLOms": 5}, "reaches any traffic region in time"),
    "budget": ({}, {"budget": {"maxHourlyCost": 0.5}}, "over budget.maxHourlyCost 0.50"),
}


def test_every_check_has_a_case_and_every_constraint_a_facet() -> None:
    assert sorted(check.name for check in CHECKS) == sorted(CASES)
    for constraint in CONSTRAINTS:
        facets = {"screen", "admits", "program", "shortfall"}
        assert any(name in type(constraint).__dict__ for name in facets), constraint


@pytest.mark.parametrize("check", list(CHECKS), ids=lambda check: check.name)
def test_a_check_alone_rejects_the_site_and_gives_the_reason(check: Check) -> None:
    site_keywords, spec, reason = CASES[check.name]
    only: Site = site("s1", **site_keywords)
    plan = place(world([only], [deployment("d", **spec)]))
    result = plan.deployments["ml/d"]
    assert not result.placed
    assert result.rejected["s1"].startswith(f"{check.name}: "), result.rejected
    assert result.reason is not None and reason in result.reason, result.reason
