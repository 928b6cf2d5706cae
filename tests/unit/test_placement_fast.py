"""The fast solver's parts on a crowded world: candidate rows, GPU prices, and the result.

The world is random but seeded: 25 sites in four jurisdictions with one or two GPU pools each, and
100 deployments with residency, latency SLOs, budgets, minSites and every strategy, wanting about
85 % of the GPUs.
"""

from __future__ import annotations

import random
from functools import cache
from typing import Any

import numpy as np

from soberana.operator.core.api import CPU_POOL
from soberana.operator.core.placement import Change, PlacementOptions, World, place
from soberana.operator.core.placement.candidates import build
from soberana.operator.core.placement.problem import Problem, build_problem
from soberana.operator.core.placement.relaxation import relax
from soberana.operator.core.placement.search import best_assignment
from tests.unit.builders import cpu_only, deployment, hard_constraint_violations, site, world

JURISDICTIONS = ["BR", "CL", "PE", "AR"]
REGIONS = [f"{code.lower()}-{side}" for code in JURISDICTIONS for side in "ab"]
GPUS = {"T4": (16, 0.35), "L4": (24, 0.8), "A100": (80, 3.0)}


@cache
def crowded(deployments: int = 100, sites: int = 25, utilisation: float = 0.85) -> World:
    rng = random.Random(7)
    where = {region: (rng.uniform(0, 100), rng.uniform(0, 100)) for region in REGIONS}
    wanted: list[Any] = []
    for _ in range(deployments):
        replicas = rng.choice([1, 1, 2, 2, 3, 4])
        spec: dict[str, Any] = {
            "replicas": replicas,
            "resources": {"gpus": rng.choice([1, 1, 2])},
            "traffic": [
                {"region": region, "weight": rng.randint(1, 5)}
                for region in rng.sample(REGIONS, rng.randint(1, 3))
            ],
            "placement": {
                "strategy": rng.choice(["cost", "latency", "balanced"]),
                "minSites": rng.choice([1, 1, min(2, replicas)]),
            },
        }
        if rng.random() < 0.4:
            spec["resources"]["gpuModels"] = rng.sample(sorted(GPUS), 2)
        if rng.random() < 0.5:
            spec["latencySLOms"] = rng.choice([90, 120])
        if rng.random() < 0.5:
            spec["residency"] = {"allowedJurisdictions": rng.sample(JURISDICTIONS, 3)}
        if rng.random() < 0.3:
            spec["budget"] = {"maxHourlyCost": round(replicas * rng.uniform(1.5, 8.0), 2)}
        wanted.append(spec)
    gpus_wanted = sum(spec["replicas"] * spec["resources"]["gpus"] for spec in wanted)
    layouts = []
    for _ in range(sites):
        x, y = rng.uniform(0, 100), rng.uniform(0, 100)
        models = rng.sample(sorted(GPUS), rng.choice([1, 2]))
        layouts.append(
            (
                rng.choice(JURISDICTIONS),
                [(model, rng.randint(4, 16), GPUS[model]) for model in models],
                {
                    region: round(2 + 1.5 * np.hypot(x - rx, y - ry))
                    for region, (rx, ry) in where.items()
                    if np.hypot(x - rx, y - ry) < 70
                },
            )
        )
    scale = (
        gpus_wanted / utilisation / sum(count for _, pools, _ in layouts for _, count, _ in pools)
    )
    return world(
        [
            site(
                f"s{index:02d}",
                jurisdiction,
                gpus=[
                    (
                        model,
                        max(1, round(count * scale)),
                        memory,
                        round(price * rng.uniform(0.8, 1.25), 2),
                    )
                    for model, count, (memory, price) in pools
                ],
                latency=latency,
            )
            for index, (jurisdiction, pools, latency) in enumerate(layouts)
        ],
        [deployment(f"d{index:03d}", **spec) for index, spec in enumerate(wanted)],
    )


def crowded_problem() -> Problem:
    return build_problem(crowded(), {}, PlacementOptions())


def test_candidate_rows_are_compliant_placements_with_exact_objectives() -> None:
    problem = crowded_problem()
    table = build(problem)
    scored = table.score(problem.capacity)
    valid = np.flatnonzero(np.isfinite(scored.value))
    assert valid.size > 0
    objectives = table.objective(scored.members[valid], scored.counts[valid])
    for row, objective in zip(valid.tolist(), objectives.tolist(), strict=True):
        demand = table.demands[int(scored.owner[row])]
        assignment = table.assignment(scored.members[row], scored.counts[row])
        assert demand.admits(assignment), (demand.key, assignment)
        assert abs(objective - demand.objective(assignment)) <= 1e-9 * max(1.0, objective)
        # the row's value counts the core's latency only, so it never undercuts the objective
        assert scored.value[row] >= objective - 1e-9


def test_each_deployment_best_row_on_empty_pools_is_as_good_as_a_local_search() -> None:
    problem = crowded_problem()
    table = build(problem)
    scored = table.score(problem.capacity)
    best = table.best(scored)[:, 0]
    for owner, demand in enumerate(table.demands):
        searched = best_assignment(demand, problem.capacity)
        if searched is None:
            continue
        assert best[owner] >= 0, demand.key
        row = int(best[owner])
        found = demand.objective(table.assignment(scored.members[row], scored.counts[row]))
        assert found <= demand.objective(searched) * 1.02 + 1e-9, demand.key


def test_prices_are_zero_when_gpus_are_plenty_and_positive_where_they_are_short() -> None:
    for utilisation, contested in ((0.02, False), (0.85, True)):
        problem = build_problem(crowded(utilisation=utilisation), {}, PlacementOptions())
        table = build(problem)
        scored = table.score(problem.capacity)
        first = table.best(scored, 5)
        ideals = {
            table.demands[owner].key: table.assignment(scored.members[row], scored.counts[row])
            for owner, row in enumerate(first[:, 0].tolist())
            if row >= 0
        }
        seed = {} if contested else ideals  # all fit on empty pools when GPUs are plenty
        prices = relax(problem, table, np.zeros(len(table.demands)), seed, scored, first)
        assert bool((prices.tolls > 1e-9).any()) is contested
        if not contested:  # every deployment whole, at its best on empty pools
            assert prices.whole == set(ideals)
            assert {key: support[0][0] for key, support in prices.support.items()} == ideals


def test_fast_is_close_to_optimal_on_a_crowded_world() -> None:
    scene = crowded()
    fast, optimal = place(scene), place(scene, solver="optimal")
    assert hard_constraint_violations(scene, fast) == []
    fast_placed = {key for key, plan in fast.deployments.items() if plan.placed}
    optimal_placed = {key for key, plan in optimal.deployments.items() if plan.placed}
    assert fast_placed == optimal_placed
    assert optimal.objective <= fast.objective <= optimal.objective * 1.03


def test_replanning_a_crowded_world_keeps_every_placement() -> None:
    scene = crowded()
    first = place(scene)
    second = place(scene, first.current)
    assert hard_constraint_violations(scene, second, first.current) == []
    assert all(second.deployments[key].change is Change.UNCHANGED for key in first.current)


@cache
def crowded_mixed() -> World:
    """The crowded world with every third site a CPU-only edge box (cores and memory at about
    85 % of demand) and a fifth of the deployments CPU-only."""
    base, rng = crowded(), random.Random(11)
    deployments = []
    for entry in base.deployments:
        spec = entry.spec.model_dump(by_alias=True, exclude_none=True, mode="json")
        if rng.random() < 0.2:
            cpus = rng.choice([1, 2, 4])
            spec["resources"] = cpu_only(cpus, cpus * rng.choice([1.0, 2.0, 3.0]))
            spec.pop("budget", None)
        deployments.append(deployment(entry.name, entry.namespace, **spec))
    cores_wanted = sum(
        d.spec.reserved_replicas * d.spec.resources.cpus
        for d in deployments
        if d.spec.resources.cpu_only
    )
    edge = base.sites[2::3]
    cores = max(4, round(cores_wanted / 0.85 / len(edge)))
    sites = [
        site(
            entry.name,
            entry.spec.jurisdiction,
            cpus=(cores, 2.0 * cores, round(0.03 * rng.uniform(0.8, 1.25), 3)),
            latency=dict(entry.spec.latency_ms),
        )
        if entry in edge
        else entry
        for entry in base.sites
    ]
    return world(sites, deployments)


def test_fast_is_close_to_optimal_on_a_crowded_mixed_world() -> None:
    scene = crowded_mixed()
    fast, optimal = place(scene), place(scene, solver="optimal")
    assert hard_constraint_violations(scene, fast) == []
    assert hard_constraint_violations(scene, optimal) == []
    cpu_placed = [
        key
        for key, plan in fast.deployments.items()
        if plan.placed and plan.placements[0].gpu_model == CPU_POOL
    ]
    assert len(cpu_placed) >= 5
    fast_placed = {key for key, plan in fast.deployments.items() if plan.placed}
    optimal_placed = {key for key, plan in optimal.deployments.items() if plan.placed}
    assert fast_placed <= optimal_placed
    if fast_placed == optimal_placed:
        assert optimal.objective <= fast.objective <= optimal.objective * 1.03


def test_cores_and_memory_are_priced_where_they_are_short() -> None:
    problem = build_problem(crowded_mixed(), {}, PlacementOptions())
    table = build(problem)
    penalties = np.zeros(len(table.demands))
    scored = table.score(problem.capacity)
    first = table.best(scored, 5)
    prices = relax(problem, table, penalties, {}, scored, first)
    pools = len(problem.pools)
    cpu = np.array([pool.cpu for pool in problem.pools])
    assert prices.tolls.size == problem.capacity.size == 2 * pools
    assert not prices.tolls[pools:][~cpu].any()  # GPU pools have no memory to price
    assert (prices.tolls[:pools][cpu] > 0).any() or (prices.tolls[pools:][cpu] > 0).any()
