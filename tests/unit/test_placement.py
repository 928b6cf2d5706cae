"""The placement engine on small worlds built to show one rule each."""

from __future__ import annotations

import json
import random

import pytest

from soberana.operator.core.api import CPU_POOL
from soberana.operator.core.placement import (
    Allocation,
    Change,
    PlacementOptions,
    Plan,
    World,
    place,
)
from tests.unit.builders import (
    cpu_only,
    deployment,
    hard_constraint_violations,
    site,
    world,
)

SOLVERS = ["fast", "optimal"]


def sites_of(plan: Plan, key: str) -> dict[str, int]:
    return {entry.site: entry.replicas for entry in plan.deployments[key].placements}


def checked(scene: World, solver: str = "fast", **kwargs: object) -> Plan:
    plan = place(scene, solver=solver, **kwargs)  # type: ignore[arg-type]
    assert hard_constraint_violations(scene, plan, kwargs.get("current")) == []  # type: ignore[arg-type]
    return plan


@pytest.mark.parametrize("solver", SOLVERS)
def test_residency_is_never_traded_for_cost(solver: str) -> None:
    scene = world(
        [site("us1", "US", gpus=[("L4", 8, 24, 0.1)]), site("br1", "BR", gpus=[("L4", 8, 24, 5)])],
        [deployment("chat", replicas=2, residency={"allowedJurisdictions": ["BR"]})],
    )
    plan = checked(scene, solver)
    assert sites_of(plan, "ml/chat") == {"br1": 2}
    assert plan.deployments["ml/chat"].rejected == {
        "us1": "jurisdiction: US is not in allowedJurisdictions [BR]"
    }


def test_denied_jurisdiction_and_unplaced_reason() -> None:
    scene = world(
        [site("us1", "US"), site("us2", "US")],
        [deployment("chat", residency={"deniedJurisdictions": ["US"]})],
    )
    result = checked(scene).deployments["ml/chat"]
    assert not result.placed
    assert result.reason == "no site outside denied jurisdictions [US] (sites are in US)"
    assert result.rejected["us1"] == "jurisdiction: US is in deniedJurisdictions"


def test_site_selector() -> None:
    scene = world(
        [
            site("a", labels={"provider": "aws"}, gpus=[("L4", 4, 24, 2.0)]),
            site("b", labels={"provider": "gcp"}, gpus=[("L4", 4, 24, 1.0)]),
        ],
        [
            deployment(
                "chat",
                placement={
                    "siteSelector": {
                        "matchExpressions": [
                            {"key": "provider", "operator": "NotIn", "values": ["gcp"]}
                        ]
                    }
                },
            )
        ],
    )
    plan = checked(scene)
    assert sites_of(plan, "ml/chat") == {"a": 1}
    assert plan.deployments["ml/chat"].rejected["b"] == "selector: label provider=gcp is excluded"


@pytest.mark.parametrize("solver", SOLVERS)
def test_cordoned_site_drains_to_a_compliant_alternative(solver: str) -> None:
    scene = world(
        [site("cheap", cordoned=True, gpus=[("L4", 4, 24, 0.1)]), site("dear")],
        [deployment("old"), deployment("new")],
    )
    current = {"ml/old": [Allocation(site="cheap", gpu_model="L4", replicas=1)]}
    plan = checked(scene, solver, current=current)
    assert sites_of(plan, "ml/old") == {"dear": 1}, "a cordoned site is drained, though cheaper"
    assert plan.deployments["ml/old"].change is Change.MOVED
    assert sites_of(plan, "ml/new") == {"dear": 1}
    assert plan.deployments["ml/new"].rejected["cheap"] == "cordoned: the site takes nothing new"


@pytest.mark.parametrize("solver", SOLVERS)
def test_cordoned_site_keeps_what_cannot_move(solver: str) -> None:
    scene = world(
        [site("only", cordoned=True, gpus=[("L4", 4, 24, 0.1)]), site("us", jurisdiction="US")],
        [
            deployment("old", residency={"allowedJurisdictions": ["BR"]}),
            deployment("new", residency={"allowedJurisdictions": ["BR"]}),
        ],
    )
    current = {"ml/old": [Allocation(site="only", gpu_model="L4", replicas=1)]}
    plan = checked(scene, solver, current=current)
    assert sites_of(plan, "ml/old") == {"only": 1}, "nowhere compliant to go: it keeps running"
    assert plan.deployments["ml/old"].change is Change.UNCHANGED
    assert not plan.deployments["ml/new"].placed


@pytest.mark.parametrize("solver", SOLVERS)
def test_unhealthy_site_is_left(solver: str) -> None:
    scene = world(
        [site("down", healthy=False, gpus=[("L4", 4, 24, 0.1)]), site("up")],
        [deployment("chat", replicas=2)],
    )
    current = {"ml/chat": [Allocation(site="down", gpu_model="L4", replicas=2)]}
    plan = checked(scene, solver, current=current)
    assert sites_of(plan, "ml/chat") == {"up": 2}
    assert plan.deployments["ml/chat"].change is Change.MOVED
    assert plan.deployments["ml/chat"].rejected["down"] == "unhealthy: the site is not Ready"


def test_gpu_model_memory_and_count_fit() -> None:
    scene = world(
        [
            site("t4", gpus=[("T4", 8, 16, 0.3)]),
            site("small", gpus=[("L4", 8, 24, 0.5)]),
            site("a100-pair", gpus=[("A100", 1, 80, 2.0)]),
            site("a100", gpus=[("A100", 8, 80, 3.0)]),
        ],
        [
            deployment(
                "big",
                resources={"gpus": 2, "gpuModels": ["L4", "A100"], "gpuMemoryGiB": 40},
            )
        ],
    )
    result = checked(scene).deployments["ml/big"]
    assert [entry.site for entry in result.placements] == ["a100"]
    assert result.rejected == {
        "t4": "GPU model: has T4; resources.gpuModels allows L4, A100",
        "small": "GPU memory: has L4 24 GiB; a replica needs 40 GiB per GPU",
        "a100-pair": "GPU count: has 1 A100; a replica needs 2 GPUs of one model",
    }


@pytest.mark.parametrize("solver", SOLVERS)
def test_capacity_is_shared_in_contention_order(solver: str) -> None:
    scene = world(
        [site("only", gpus=[("L4", 4, 24, 1.0)])],
        [deployment("a-small", replicas=1), deployment("b-large", replicas=4)],
    )
    plan = checked(scene, solver)
    assert sites_of(plan, "ml/b-large") == {"only": 4}
    small = plan.deployments["ml/a-small"]
    assert not small.placed
    assert small.reason == (
        "needs 1 replica x 1 any-model GPU, but eligible sites have room for 0 (only: 0 free L4)"
    )
    assert small.rejected == {"only": "capacity: 0 of 4 L4 GPUs free; a replica needs 1"}


def test_running_deployments_are_not_evicted_for_new_ones() -> None:
    scene = world(
        [site("only", gpus=[("L4", 4, 24, 1.0)])],
        [deployment("small", replicas=1), deployment("large", replicas=4)],
    )
    current = {"ml/small": [Allocation(site="only", gpu_model="L4", replicas=1)]}
    plan = checked(scene, current=current)
    assert plan.deployments["ml/small"].change is Change.UNCHANGED
    assert not plan.deployments["ml/large"].placed


@pytest.mark.parametrize("solver", SOLVERS)
def test_deployments_with_fewer_eligible_sites_come_first(solver: str) -> None:
    scene = world(
        [
            site("cheap", labels={"zone": "x"}, gpus=[("L4", 1, 24, 0.5)]),
            site("dear", gpus=[("L4", 1, 24, 2.0)]),
        ],
        [
            deployment("a-flexible", placement={"strategy": "cost"}),
            deployment("b-pinned", placement={"siteSelector": {"matchLabels": {"zone": "x"}}}),
        ],
    )
    plan = checked(scene, solver)
    assert sites_of(plan, "ml/b-pinned") == {"cheap": 1}
    assert sites_of(plan, "ml/a-flexible") == {"dear": 1}


def test_unplaced_capacity_reason_has_numbers() -> None:
    scene = world(
        [site("br1", "BR", gpus=[("L4", 2, 24, 1.0)]), site("us1", "US")],
        [deployment("chat", replicas=3, residency={"allowedJurisdictions": ["BR"]})],
    )
    assert checked(scene).deployments["ml/chat"].reason == (
        "needs 3 replicas x 1 any-model GPU in allowed jurisdictions [BR], but eligible sites "
        "have room for 2 (br1: 2 free L4)"
    )


def test_a_region_missing_from_latency_is_out_of_reach() -> None:
    scene = world(
        [site("near", latency={"r1": 5}), site("far", latency={"r2": 5})],
        [deployment("chat", traffic=[{"region": "r1"}, {"region": "r2"}], latencySLOms=50)],
    )
    plan = checked(scene)
    assert sites_of(plan, "ml/chat") == {"far": 1} or not plan.deployments["ml/chat"].placed
    scene = world(
        [site("near", latency={"r1": 5}), site("far", latency={"r1": 80})],
        [deployment("chat", traffic=[{"region": "r1"}, {"region": "r2"}], latencySLOms=50)],
    )
    result = checked(scene).deployments["ml/chat"]
    assert result.reason == "no eligible site reaches r2 within latencySLOms 50"
    assert result.rejected["far"] == (
        "latency: no traffic region within latencySLOms 50 (r1 80 ms, r2 unreachable)"
    )


@pytest.mark.parametrize("solver", SOLVERS)
def test_every_traffic_region_gets_a_site_within_the_slo(solver: str) -> None:
    scene = world(
        [
            site("north", latency={"n": 5, "s": 90}, gpus=[("L4", 4, 24, 1.0)]),
            site("south", latency={"n": 90, "s": 5}, gpus=[("L4", 4, 24, 1.0)]),
        ],
        [
            deployment(
                "chat",
                replicas=2,
                traffic=[{"region": "n", "weight": 3}, {"region": "s"}],
                latencySLOms=50,
                placement={"strategy": "cost"},
            )
        ],
    )
    result = checked(scene, solver).deployments["ml/chat"]
    assert {entry.site: entry.regions for entry in result.placements} == {
        "north": ("n",),
        "south": ("s",),
    }


@pytest.mark.parametrize("solver", SOLVERS)
def test_budget_is_hard(solver: str) -> None:
    scene = world(
        [site("a", gpus=[("L4", 8, 24, 1.5)])],
        [deployment("chat", replicas=2, budget={"maxHourlyCost": 2.0})],
    )
    result = checked(scene, solver).deployments["ml/chat"]
    assert not result.placed
    assert result.reason == (
        "the cheapest placement costs 3.00/h (using a), over budget.maxHourlyCost 2.00"
    )


@pytest.mark.parametrize("solver", SOLVERS)
def test_min_sites_spreads_and_places_whole(solver: str) -> None:
    scene = world(
        [site("a", gpus=[("L4", 8, 24, 1.0)]), site("b", gpus=[("L4", 8, 24, 2.0)])],
        [deployment("chat", replicas=5, placement={"minSites": 2, "strategy": "cost"})],
    )
    plan = checked(scene, solver)
    assert sites_of(plan, "ml/chat") == {"a": 4, "b": 1}
    assert plan.deployments["ml/chat"].hourly_cost == pytest.approx(6.0)


def test_placed_whole_or_not_at_all() -> None:
    scene = world([site("a"), site("b")], [deployment("chat", replicas=9)])
    result = checked(scene).deployments["ml/chat"]
    assert not result.placed and result.placements == ()
    assert "room for 8" in (result.reason or "")


def test_autoscaling_reserves_max_replicas() -> None:
    scene = world(
        [site("a", gpus=[("L4", 3, 24, 1.0)])],
        [deployment("chat", autoscaling={"minReplicas": 1, "maxReplicas": 4})],
    )
    assert "room for 3" in (checked(scene).deployments["ml/chat"].reason or "")


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [("cost", "cheap-far"), ("latency", "dear-near"), ("balanced", "dear-near")],
)
def test_strategies(strategy: str, expected: str) -> None:
    scene = world(
        [
            site("cheap-far", gpus=[("L4", 4, 24, 1.0)], latency={"r1": 80}),
            site("dear-near", gpus=[("L4", 4, 24, 1.2)], latency={"r1": 5}),
        ],
        [deployment("chat", placement={"strategy": strategy})],
    )
    assert list(sites_of(checked(scene), "ml/chat")) == [expected]


def test_not_chosen_line_compares_with_the_chosen_placement() -> None:
    scene = world(
        [
            site("cheap-far", gpus=[("L4", 4, 24, 1.0)], latency={"r1": 80}),
            site("dear-near", gpus=[("L4", 4, 24, 1.2)], latency={"r1": 5}),
        ],
        [deployment("chat", placement={"strategy": "latency"})],
    )
    assert checked(scene).deployments["ml/chat"].rejected == {
        "cheap-far": (
            "not chosen (latency): here 1.00/GPU-h L4, r1 80 ms; chosen 1.20/GPU-h, r1 5 ms"
        )
    }


def test_ties_break_by_site_name() -> None:
    scene = world([site("b"), site("a"), site("c")], [deployment("chat")])
    assert list(sites_of(checked(scene), "ml/chat")) == ["a"]


def test_a_running_placement_moves_only_for_a_gain_above_the_threshold() -> None:
    slightly_cheaper = world(
        [site("old", gpus=[("L4", 4, 24, 1.0)]), site("new", gpus=[("L4", 4, 24, 0.95)])],
        [deployment("chat", placement={"strategy": "cost"})],
    )
    current = {"ml/chat": [Allocation(site="old", gpu_model="L4", replicas=1)]}
    plan = checked(slightly_cheaper, current=current)
    assert plan.deployments["ml/chat"].change is Change.UNCHANGED
    assert plan.deployments["ml/chat"].rejected["new"] == (
        "not chosen (cost): here 0.95/GPU-h L4, r1 10 ms; chosen 1.00/GPU-h, r1 10 ms; the "
        "running placement stays unless a move gains over 10%"
    )
    eager = PlacementOptions(move_threshold=0.0)
    assert (
        checked(slightly_cheaper, current=current, options=eager).deployments["ml/chat"].change
        is Change.MOVED
    )
    much_cheaper = world(
        [site("old", gpus=[("L4", 4, 24, 1.0)]), site("new", gpus=[("L4", 4, 24, 0.5)])],
        [deployment("chat", placement={"strategy": "cost"})],
    )
    for solver in SOLVERS:
        moved = checked(much_cheaper, solver, current=current).deployments["ml/chat"]
        assert moved.change is Change.MOVED


@pytest.mark.parametrize("solver", SOLVERS)
def test_replanning_a_plan_changes_nothing(solver: str) -> None:
    scene = latam_like()
    first = checked(scene, solver)
    second = checked(scene, solver, current=first.current)
    assert {key: plan.change for key, plan in second.deployments.items()} == {
        key: Change.UNCHANGED for key in first.current
    } | {key: Change.UNPLACED for key, plan in first.deployments.items() if not plan.placed}
    assert {key: plan.placements for key, plan in second.deployments.items()} == {
        key: plan.placements for key, plan in first.deployments.items()
    }


@pytest.mark.parametrize("solver", SOLVERS)
def test_input_order_does_not_matter(solver: str) -> None:
    scene = latam_like()
    shuffled = list(scene.sites), list(scene.deployments)
    random.Random(7).shuffle(shuffled[0])
    random.Random(8).shuffle(shuffled[1])
    again = World(sites=tuple(shuffled[0]), deployments=tuple(shuffled[1]))
    assert json.dumps(place(again, solver=solver).to_json()) == json.dumps(  # type: ignore[arg-type]
        place(scene, solver=solver).to_json()  # type: ignore[arg-type]
    )


def test_optimal_improves_on_fast_where_greedy_order_hurts() -> None:
    scene = latam_like()
    fast, optimal = place(scene), place(scene, solver="optimal")
    assert {key for key, plan in optimal.deployments.items() if plan.placed} >= {
        key for key, plan in fast.deployments.items() if plan.placed
    }
    assert optimal.objective <= fast.objective + 1e-9
    assert optimal.solver == "optimal"


def test_json_shape() -> None:
    plan = checked(latam_like())
    document = plan.to_json()
    assert set(document) == {"deployments", "sites"}
    for entry in document["deployments"].values():
        assert set(entry) == {"placed", "placements", "hourlyCost", "reason", "rejected"}
        assert isinstance(entry["hourlyCost"], float)
        for placement in entry["placements"]:
            assert set(placement) == {"site", "pool", "replicas", "hourlyCost", "regions"}
    for usage in document["sites"].values():
        assert set(usage) == {
            "gpusAllocated",
            "gpusTotal",
            "cpusAllocated",
            "cpusTotal",
            "memoryGiBAllocated",
            "memoryGiBTotal",
        }
    json.dumps(document)


def test_world_refuses_duplicate_names() -> None:
    with pytest.raises(ValueError, match="site a appears more than once"):
        world([site("a"), site("a")], [])


def test_mixed_currencies_are_warned_about() -> None:
    euro = site("eu")
    euro = type(euro)(
        name="eu", spec=euro.spec.model_copy(update={"currency": "EUR"}), labels={}, healthy=True
    )
    plan = place(world([site("us"), euro], []))
    assert plan.warnings == (
        "sites price GPUs in several currencies (EUR, USD); placement compares hourlyCost as "
        "plain numbers",
    )


def latam_like() -> World:
    """A few sites and deployments that compete for capacity."""
    latency = {"br": 5, "cl": 60, "pe": 70}
    return world(
        [
            site("br1", "BR", gpus=[("L4", 2, 24, 0.8)], latency=latency),
            site("br2", "BR", gpus=[("L4", 8, 24, 0.9), ("A100", 2, 80, 3.0)], latency=latency),
            site("cl1", "CL", gpus=[("L4", 4, 24, 0.85)], latency={"br": 55, "cl": 3, "pe": 45}),
            site("pe1", "PE", gpus=[("T4", 2, 16, 0.4)], latency={"pe": 4, "cl": 46}),
            site("us1", "US", gpus=[("A100", 16, 80, 1.5)], latency={"br": 120, "cl": 110}),
        ],
        [
            deployment(
                "chat",
                replicas=3,
                resources={"gpuModels": ["L4"]},
                traffic=[{"region": "br", "weight": 3}, {"region": "cl"}],
                latencySLOms=60,
                residency={"allowedJurisdictions": ["BR", "CL"]},
                placement={"minSites": 2},
            ),
            deployment(
                "big",
                replicas=2,
                resources={"gpuMemoryGiB": 40},
                traffic=[{"region": "br"}],
                residency={"allowedJurisdictions": ["BR"]},
            ),
            deployment(
                "any", replicas=4, traffic=[{"region": "br"}], placement={"strategy": "cost"}
            ),
            deployment("peru", replicas=2, traffic=[{"region": "pe"}], latencySLOms=20),
            deployment(
                "huge", replicas=20, resources={"gpuModels": ["L4"]}, traffic=[{"region": "br"}]
            ),
            deployment("tight", replicas=2, budget={"maxHourlyCost": 1.0}),
        ],
    )


def test_optimal_keeps_a_running_placement_on_one_pool_of_a_cordoned_site() -> None:
    cordoned = site("old", gpus=[("L4", 1, 24, 1.0), ("A100", 1, 80, 3.0)], cordoned=True)
    running = {"ml/chat": (Allocation(site="old", gpu_model="L4", replicas=1),)}
    for solver in ("fast", "optimal"):
        plan = place(world([cordoned], [deployment("chat", replicas=1)]), running, solver=solver)
        assert plan.deployments["ml/chat"].change is Change.UNCHANGED, solver


@pytest.mark.parametrize("solver", SOLVERS)
def test_cpu_only_replicas_use_the_cpu_pool_and_are_priced_per_core(solver: str) -> None:
    scene = world(
        [
            site("gpu", gpus=[("L4", 8, 24, 0.5)]),
            site("edge", cpus=(16, 32, 0.03)),
            site("both", gpus=[("L4", 8, 24, 0.5)], cpus=(8, 16, 0.05), latency={"r1": 40}),
        ],
        [
            deployment("slm", replicas=2, resources=cpu_only(cpus=4, memory_gib=2)),
            deployment("llm", replicas=1),
        ],
    )
    plan = checked(scene, solver)
    slm = plan.deployments["ml/slm"]
    assert [(p.site, p.gpu_model, p.replicas) for p in slm.placements] == [("edge", CPU_POOL, 2)]
    assert slm.hourly_cost == pytest.approx(2 * 4 * 0.03)
    assert slm.rejected["gpu"] == (
        "CPU pool: the site has no spec.cpus; a CPU-only replica needs one"
    )
    llm = plan.deployments["ml/llm"]
    assert {p.gpu_model for p in llm.placements} == {"L4"}
    assert llm.rejected["edge"] == (
        "GPU model: the site has no GPUs, only a CPU pool (a CPU-only replica has "
        "resources.gpus: 0)"
    )
    edge = plan.sites["edge"]
    assert (edge.cpus_allocated, edge.cpus_total, edge.gpus_total) == (8, 16, 0)
    assert edge.memory_gib_allocated == pytest.approx(4)
    assert plan.sites["both"].cpus_total == 8
    document = plan.to_json()
    assert document["sites"]["edge"]["cpusAllocated"] == 8
    assert document["deployments"]["ml/slm"]["placements"][0]["pool"] == CPU_POOL


@pytest.mark.parametrize("solver", SOLVERS)
def test_cpu_cores_are_shared_capacity_and_explained(solver: str) -> None:
    scene = world(
        [site("edge-a", cpus=(16, 64, 0.03)), site("edge-b", cpus=(16, 64, 0.04))],
        [
            deployment("big", replicas=1, resources=cpu_only(cpus=14, memory_gib=8)),
            deployment("small", replicas=1, resources=cpu_only(cpus=4, memory_gib=8)),
        ],
    )
    plan = checked(scene, solver)
    assert sites_of(plan, "ml/big") == {"edge-a": 1}
    assert sites_of(plan, "ml/small") == {"edge-b": 1}
    assert plan.deployments["ml/small"].rejected["edge-a"] == "cpus: needs 4, 2 of 16 free"


@pytest.mark.parametrize("solver", SOLVERS)
def test_cpu_pool_memory_is_shared_capacity_and_explained(solver: str) -> None:
    scene = world(
        [site("edge-a", cpus=(16, 8, 0.03)), site("edge-b", cpus=(16, 8, 0.04))],
        [deployment("slm", replicas=2, resources=cpu_only(cpus=1, memory_gib=6))],
    )
    plan = checked(scene, solver)
    assert sites_of(plan, "ml/slm") == {"edge-a": 1, "edge-b": 1}
    crowded = world(
        [site("edge-a", cpus=(16, 8, 0.03))],
        [
            deployment("first", replicas=1, resources=cpu_only(cpus=1, memory_gib=6)),
            deployment("second", replicas=1, resources=cpu_only(cpus=1, memory_gib=4)),
        ],
    )
    plan = checked(crowded, solver)
    placed = [key for key, entry in plan.deployments.items() if entry.placed]
    (left,) = [key for key in plan.deployments if key not in placed]
    entry = plan.deployments[left]
    needs = "6" if left == "ml/first" else "4"
    free = "4" if left == "ml/first" else "2"
    assert entry.rejected["edge-a"] == f"memory: needs {needs} GiB, {free} of 8 GiB free"
    assert entry.reason is not None and "GiB" in entry.reason


def test_cpu_only_deployment_without_cpu_capacity_says_so() -> None:
    scene = world(
        [site("gpu-a"), site("gpu-b")],
        [deployment("slm", resources=cpu_only())],
    )
    result = checked(scene).deployments["ml/slm"]
    assert not result.placed
    assert result.reason is not None and result.reason.startswith(
        "no available site has a CPU pool (spec.cpus) for CPU-only replicas"
    )
    small = world([site("edge", cpus=(2, 64, 0.1))], [deployment("slm", resources=cpu_only(4))])
    result = checked(small).deployments["ml/slm"]
    assert result.rejected["edge"] == "cpus: needs 4 per replica, the site has 2"
    assert result.reason is not None and "4 cores" in result.reason


@pytest.mark.parametrize("solver", SOLVERS)
def test_running_cpu_placement_is_kept(solver: str) -> None:
    scene = world(
        [site("edge-a", cpus=(8, 16, 0.05)), site("edge-b", cpus=(8, 16, 0.048))],
        [deployment("slm", replicas=2, resources=cpu_only())],
    )
    current = {"ml/slm": (Allocation("edge-a", CPU_POOL, 2),)}
    plan = checked(scene, solver, current=current)
    assert sites_of(plan, "ml/slm") == {"edge-a": 2}
    assert plan.deployments["ml/slm"].change is Change.UNCHANGED
