"""Properties of both solvers over random worlds (hypothesis).

Each property holds over GPU worlds and over mixed ones, where some sites are CPU-only edge boxes
(or have a CPU pool too) and some deployments CPU-only. No plan ever breaks a hard constraint;
``optimal`` places at least what ``fast`` places and, when it places the same deployments, has an
objective at most as high; the same input gives the same plan; re-planning a plan as the running
state keeps every placement where it is.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from soberana.operator.core.placement import Change, World, place
from tests.unit.builders import cpu_only, deployment, hard_constraint_violations, site

REGIONS = ["r0", "r1", "r2", "r3"]
JURISDICTIONS = ["BR", "CL", "PE", "US"]
GPU_MODELS = [("L4", 24), ("A100", 80), ("T4", 16)]

FEW = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
MIXED = settings(FEW, max_examples=40)


@st.composite
def sites(draw: st.DrawFn, index: int, mixed: bool = False) -> Any:
    models = draw(st.lists(st.sampled_from(GPU_MODELS), min_size=1, max_size=2, unique=True))
    gpus = [
        (model, draw(st.integers(0, 6)), memory, draw(st.integers(0, 40)) / 10)
        for model, memory in models
    ]
    reached = draw(st.lists(st.sampled_from(REGIONS), max_size=4, unique=True))
    cpus = None
    if mixed:
        kind = draw(st.sampled_from(["gpu", "cpu", "cpu", "both"]))
        if kind != "gpu":
            cpus = (
                draw(st.integers(1, 16)),
                draw(st.integers(1, 32)) / 2,
                draw(st.integers(0, 8)) / 100,
            )
        if kind == "cpu":
            gpus = []
    return site(
        f"s{index}",
        draw(st.sampled_from(JURISDICTIONS)),
        gpus=gpus,
        cpus=cpus,
        latency={region: draw(st.integers(0, 150)) for region in reached},
        labels={"tier": draw(st.sampled_from(["a", "b"]))},
        cordoned=draw(st.integers(0, 4)) == 0,
        healthy=draw(st.integers(0, 6)) > 0,
    )


@st.composite
def deployments(draw: st.DrawFn, index: int, mixed: bool = False) -> Any:
    replicas = draw(st.integers(1, 4))
    spec: dict[str, Any] = {
        "resources": {
            "gpus": draw(st.integers(1, 2)),
            "gpuModels": draw(
                st.lists(st.sampled_from([m for m, _ in GPU_MODELS]), max_size=2, unique=True)
            ),
        },
        "traffic": [
            {"region": region, "weight": draw(st.integers(1, 5))}
            for region in draw(st.lists(st.sampled_from(REGIONS), max_size=3, unique=True))
        ],
        "placement": {
            "strategy": draw(st.sampled_from(["cost", "latency", "balanced"])),
            "minSites": draw(st.integers(1, min(replicas, 3))),
        },
    }
    if draw(st.booleans()):
        spec["replicas"] = replicas
    else:
        spec["autoscaling"] = {"minReplicas": 1, "maxReplicas": replicas}
    if draw(st.booleans()):
        spec["resources"]["gpuMemoryGiB"] = draw(st.sampled_from([16, 24, 40]))
    if draw(st.booleans()):
        slo = draw(st.integers(20, 150))
        if spec["traffic"]:  # an SLO needs traffic regions
            spec["latencySLOms"] = slo
    residency = draw(st.sampled_from(["none", "allowed", "denied"]))
    if residency != "none":
        codes = draw(st.lists(st.sampled_from(JURISDICTIONS), min_size=1, max_size=3, unique=True))
        spec["residency"] = {f"{residency}Jurisdictions": codes}
    if draw(st.booleans()):
        spec["budget"] = {"maxHourlyCost": draw(st.integers(1, 200)) / 10}
    if draw(st.integers(0, 3)) == 0:
        spec["placement"]["siteSelector"] = {"matchLabels": {"tier": "a"}}
    if mixed and draw(st.booleans()):
        spec["resources"] = cpu_only(draw(st.integers(1, 6)), draw(st.integers(1, 12)) / 2)
    return deployment(f"d{index}", **spec)


@st.composite
def worlds(draw: st.DrawFn, mixed: bool = False) -> World:
    site_count = draw(st.integers(1, 6))
    deployment_count = draw(st.integers(1, 6))
    return World(
        sites=tuple(draw(sites(index, mixed)) for index in range(site_count)),
        deployments=tuple(draw(deployments(index, mixed)) for index in range(deployment_count)),
    )


@FEW
@given(worlds())
def test_no_plan_breaks_a_hard_constraint(world: World) -> None:
    _no_plan_breaks_a_hard_constraint(world)


@MIXED
@given(worlds(mixed=True))
def test_no_plan_breaks_a_hard_constraint_in_mixed_worlds(world: World) -> None:
    _no_plan_breaks_a_hard_constraint(world)


def _no_plan_breaks_a_hard_constraint(world: World) -> None:
    for solver in ("fast", "optimal"):
        plan = place(world, solver=solver)
        assert hard_constraint_violations(world, plan) == [], solver


@FEW
@given(worlds())
def test_optimal_is_never_worse_than_fast(world: World) -> None:
    _optimal_is_never_worse_than_fast(world)


@MIXED
@given(worlds(mixed=True))
def test_optimal_is_never_worse_than_fast_in_mixed_worlds(world: World) -> None:
    _optimal_is_never_worse_than_fast(world)


def _optimal_is_never_worse_than_fast(world: World) -> None:
    fast, optimal = place(world), place(world, solver="optimal")
    fast_placed = {key for key, plan in fast.deployments.items() if plan.placed}
    optimal_placed = {key for key, plan in optimal.deployments.items() if plan.placed}
    assert optimal_placed >= fast_placed
    if optimal_placed == fast_placed:
        assert optimal.objective <= fast.objective + 1e-9 * max(1.0, fast.objective)


@FEW
@given(worlds())
def test_same_input_same_plan(world: World) -> None:
    _same_input_same_plan(world)


@MIXED
@given(worlds(mixed=True))
def test_same_input_same_plan_in_mixed_worlds(world: World) -> None:
    _same_input_same_plan(world)


def _same_input_same_plan(world: World) -> None:
    reordered = World(sites=world.sites[::-1], deployments=world.deployments[::-1])
    for solver in ("fast", "optimal"):
        first = place(world, solver=solver)
        assert place(world, solver=solver).to_json() == first.to_json()
        assert place(reordered, solver=solver).to_json() == first.to_json()


@FEW
@given(worlds())
def test_replanning_keeps_every_placement(world: World) -> None:
    _replanning_keeps_every_placement(world)


@MIXED
@given(worlds(mixed=True))
def test_replanning_keeps_every_placement_in_mixed_worlds(world: World) -> None:
    _replanning_keeps_every_placement(world)


def _replanning_keeps_every_placement(world: World) -> None:
    for solver in ("fast", "optimal"):
        first = place(world, solver=solver)
        second = place(world, first.current, solver=solver)
        assert hard_constraint_violations(world, second, first.current) == []
        for key in first.current:
            assert second.deployments[key].change is Change.UNCHANGED, (solver, key)


@FEW
@given(worlds(), st.data())
def test_losing_sites_never_breaks_a_constraint(world: World, data: st.DataObject) -> None:
    _losing_sites_never_breaks_a_constraint(world, data)


@MIXED
@given(worlds(mixed=True), st.data())
def test_losing_sites_never_breaks_a_constraint_in_mixed_worlds(
    world: World, data: st.DataObject
) -> None:
    _losing_sites_never_breaks_a_constraint(world, data)


def _losing_sites_never_breaks_a_constraint(world: World, data: st.DataObject) -> None:
    first = place(world)
    lost = data.draw(st.sets(st.sampled_from([site.name for site in world.sites])))
    degraded = World(
        sites=tuple(
            type(site)(name=site.name, spec=site.spec, labels=site.labels, healthy=False)
            if site.name in lost
            else site
            for site in world.sites
        ),
        deployments=world.deployments,
    )
    for solver in ("fast", "optimal"):
        plan = place(degraded, first.current, solver=solver)
        assert hard_constraint_violations(degraded, plan, first.current) == [], solver
