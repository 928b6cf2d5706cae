"""The constraint model: every screening check has a world where it alone rejects the one site, its
rejection line starts with the check's name, and the deployment's reason is its constraint's."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from soberana.operator.core.placement import Allocation, PlacementOptions, Site, World, place
from soberana.operator.core.placement.constraints import CHECKS, Check
from soberana.operator.core.placement.constraints.budget import Budget
from soberana.operator.core.placement.constraints.health import Health
from soberana.operator.core.placement.constraints.latency import Latency
from soberana.operator.core.placement.constraints.spread import Spread
from soberana.operator.core.placement.problem import Demand, build_problem
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


def test_every_check_has_a_case() -> None:
    assert sorted(check.name for check in CHECKS) == sorted(CASES)


@pytest.mark.parametrize("check", list(CHECKS), ids=lambda check: check.name)
def test_a_check_alone_rejects_the_site_and_gives_the_reason(check: Check) -> None:
    site_keywords, spec, reason = CASES[check.name]
    only: Site = site("s1", **site_keywords)
    plan = place(world([only], [deployment("d", **spec)]))
    result = plan.deployments["ml/d"]
    assert not result.placed
    assert result.rejected["s1"].startswith(f"{check.name}: "), result.rejected
    assert result.reason is not None and reason in result.reason, result.reason


def only_demand(scene: World, running: tuple[Allocation, ...] = ()) -> Demand:
    current = {"ml/d": running} if running else {}
    (demand,) = build_problem(scene, current, PlacementOptions()).demands
    return demand


TWO_REGIONS = [site("a", latency={"r1": 10}), site("b", latency={"r2": 10})]
BOTH = [{"region": "r1"}, {"region": "r2"}]


def test_each_whole_placement_constraint_checks_a_placement() -> None:
    # options: 0 is site a's L4 pool (reaches r1), 1 is site b's (reaches r2)
    spread = only_demand(world(TWO_REGIONS, [deployment("d", replicas=2, traffic=BOTH)]))
    assert Spread().admits(spread, ((0, 1), (1, 1)))
    assert not Spread().admits(spread, ((0, 1),))  # one replica short
    assert not Spread().admits(spread, ((0, 2), (1, 0)))  # a pool without a replica
    assert not Latency().admits(spread, ((0, 2),))  # r2 uncovered
    assert Latency().admits(spread, ((0, 1), (1, 1)))
    spreading = only_demand(
        world(TWO_REGIONS, [deployment("d", replicas=2, placement={"minSites": 2})])
    )
    assert not Spread().admits(spreading, ((0, 2),))
    capped = replace(spread, budget=1.5)  # two L4 replicas cost 2.0/h
    assert Budget().admits(spread, ((0, 1), (1, 1)))
    assert not Budget().admits(capped, ((0, 1), (1, 1)))
    assert not capped.admits(((0, 1), (1, 1)))


def test_a_cordoned_pool_is_only_for_keeping_the_running_placement() -> None:
    cordoned = [site("a", cordoned=True), site("b")]
    running = (Allocation(site="a", gpu_model="L4", replicas=1),)
    demand = only_demand(world(cordoned, [deployment("d", replicas=1)]), running)
    assert demand.current == ((0, 1),)
    assert Health().admits(demand, ((0, 1),))
    assert not Health().admits(demand, ((0, 1), (1, 0)))
    assert Health().admits(demand, ((1, 1),))
