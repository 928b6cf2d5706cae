"""Placement at scale: the fast heuristic against the optimal MILP on one synthetic world.

The default world has 1,000 deployments over 100 sites in 10 jurisdictions and 20 user regions,
with site capacity scaled so the deployments' GPU demand is about 85 % of it. Deployments mix
residency, latency SLOs, budgets, GPU model and memory needs, minSites and all three strategies.
Prints both solvers' times (wall and CPU; for ``fast`` the median of a few runs, the first of which
also pays one-time costs), how many deployments each placed and the objective gap, side by side,
and where ``fast``'s time goes: building the problem (screening every deployment
against every site), the solver itself, and the plan with its explanations; and the peak memory
tracemalloc sees during one ``fast`` place() (numpy's arrays included). Asserts nothing
(these are measurements, not tests).

``--world mixed`` turns a third of the sites into CPU-only edge boxes (a CPU pool of cores and
memory, priced per core-hour) and about a fifth of the deployments into CPU-only ones (``gpus:
0``, cores and memory per replica), each kind of capacity scaled to the same utilisation. The GPU
world is drawn exactly as before; the mixed one changes it with a random generator of its own.

    python bench/bench_placement.py                       # the full comparison
    python bench/bench_placement.py --world mixed         # with CPU-only sites and deployments
    python bench/bench_placement.py --deployments 200 --sites 40 --time-limit 60
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import random
import time
import tracemalloc
from dataclasses import dataclass
from typing import Any

from soberana.operator.core.api import InferenceSiteSpec, ModelDeploymentSpec
from soberana.operator.core.placement import Deployment, PlacementOptions, Plan, Site, World, place
from soberana.operator.core.placement.fast import solve_fast
from soberana.operator.core.placement.problem import build_problem

# (jurisdiction, market): deployments of one market keep their traffic and residency inside it
COUNTRIES = [
    ("BR", "latam"),
    ("CL", "latam"),
    ("PE", "latam"),
    ("AR", "latam"),
    ("CO", "latam"),
    ("MX", "latam"),
    ("US", "north"),
    ("CA", "north"),
    ("DE", "europe"),
    ("FR", "europe"),
]
# model: (memory GiB, typical price per GPU-hour)
GPUS = {"T4": (16, 0.35), "L4": (24, 0.8), "A100": (80, 3.0), "H100": (80, 4.5)}
CORE_PRICE = 0.03  # typical price per core-hour of an edge box
CPU_SHARE = 0.2  # of the deployments, CPU-only in the mixed world


def synthetic_world(
    deployments: int, sites: int, utilisation: float, seed: int, *, mixed: bool = False
) -> World:
    """A reproducible world whose demand is ``utilisation`` of its capacity; ``mixed``: a third
    of the sites CPU-only edge boxes and some deployments CPU-only (GPUs and cores each at
    ``utilisation``)."""
    rng = random.Random(seed)
    regions = {
        f"{code.lower()}-{side}": (code, market, rng.uniform(0, 100), rng.uniform(0, 100))
        for code, market in COUNTRIES
        for side in ("a", "b")
    }
    demand = [_deployment(rng, index, regions) for index in range(deployments)]
    layouts = [_site_layout(rng, index, regions) for index in range(sites)]
    if mixed:
        edge = random.Random(f"mixed-{seed}")
        demand = [_cpu_only(edge, d) if edge.random() < CPU_SHARE else d for d in demand]
        for layout in layouts[2::3]:
            layout.pools = []
            layout.cores = edge.randint(16, 64)
            layout.memory_per_core = edge.choice([2.0, 3.0, 4.0])
            layout.core_price = round(CORE_PRICE * edge.uniform(0.7, 1.4), 3)
    gpus_needed = sum(d.spec.reserved_replicas * d.spec.resources.gpus for d in demand)
    raw_capacity = sum(count for layout in layouts for _, count, _ in layout.pools)
    scale = gpus_needed / utilisation / raw_capacity
    cores_needed = sum(
        d.spec.reserved_replicas * d.spec.resources.cpus
        for d in demand
        if not d.spec.resources.gpus
    )
    raw_cores = sum(layout.cores for layout in layouts)
    core_scale = cores_needed / utilisation / raw_cores if raw_cores else 0.0
    return World(
        sites=tuple(layout.build(scale, core_scale) for layout in layouts),
        deployments=tuple(demand),
    )


def _cpu_only(rng: random.Random, deployment: Deployment) -> Deployment:
    """``deployment`` with CPU-only replicas: a few cores and some memory each, its budget (if
    any) at core prices."""
    spec = deployment.spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    cpus = rng.choice([1, 2, 2, 4, 8])
    spec["resources"] = {"gpus": 0, "cpus": cpus, "memoryGiB": cpus * rng.choice([0.5, 1, 2, 3])}
    if "budget" in spec:
        peak = deployment.spec.reserved_replicas * cpus * CORE_PRICE
        spec["budget"] = {"maxHourlyCost": round(peak * rng.uniform(1.0, 6.0), 3)}
    return Deployment(
        namespace=deployment.namespace,
        name=deployment.name,
        spec=ModelDeploymentSpec.model_validate(spec),
    )


@dataclass
class _SiteLayout:
    name: str
    region: str
    jurisdiction: str
    pools: list[tuple[str, int, float]]  # model, relative count, price
    latency: dict[str, int]
    provider: str
    cores: int = 0  # relative cores of a CPU-only edge box (mixed world)
    memory_per_core: float = 0.0
    core_price: float = 0.0

    def build(self, scale: float, core_scale: float = 0.0) -> Site:
        body: dict[str, Any] = {
            "tier": "cloud" if self.pools else "edge",
            "region": self.region,
            "jurisdiction": self.jurisdiction,
            "gpus": [
                {
                    "model": model,
                    "count": max(1, round(count * scale)),
                    "memoryGiB": GPUS[model][0],
                    "hourlyCost": price,
                }
                for model, count, price in self.pools
            ],
            "latencyMs": self.latency,
            "backend": {"ray": {"dashboardURL": "http://h:8265", "serveURL": "http://h:8000"}},
        }
        if self.cores:
            cores = max(8, round(self.cores * core_scale))
            body["cpus"] = {
                "count": cores,
                "memoryGiB": cores * self.memory_per_core,
                "hourlyCost": self.core_price,
            }
        spec = InferenceSiteSpec.model_validate(body)
        return Site(name=self.name, spec=spec, labels={"provider": self.provider})


def _site_layout(rng: random.Random, index: int, regions: dict[str, Any]) -> _SiteLayout:
    region = rng.choice(sorted(regions))
    code, _, x, y = regions[region]
    models = rng.sample(sorted(GPUS), rng.choice([1, 1, 2]))
    pools = [
        (model, rng.randint(4, 32), round(GPUS[model][1] * rng.uniform(0.8, 1.25), 2))
        for model in models
    ]
    latency = {}
    for other, (_, _, ox, oy) in regions.items():
        distance = math.dist((x, y), (ox, oy))
        if distance < 70:
            latency[other] = round(2 + distance * 1.5 + rng.uniform(0, 5))
    return _SiteLayout(
        name=f"site-{index:03d}",
        region=region,
        jurisdiction=code,
        pools=pools,
        latency=latency,
        provider=rng.choice(["aws", "gcp", "onprem"]),
    )


def _deployment(rng: random.Random, index: int, regions: dict[str, Any]) -> Deployment:
    market = rng.choice(["latam", "latam", "north", "europe"])
    local = sorted(region for region, (_, m, _, _) in regions.items() if m == market)
    countries = sorted({regions[region][0] for region in local})
    replicas = rng.choice([1, 1, 2, 2, 3, 4])
    gpus = rng.choice([1, 1, 1, 2])
    spec: dict[str, Any] = {
        "model": {"uri": f"s3://models/m{index}"},
        "resources": {"gpus": gpus},
        "traffic": [
            {"region": region, "weight": rng.randint(1, 5)}
            for region in rng.sample(local, rng.randint(1, min(3, len(local))))
        ],
        "placement": {
            "strategy": rng.choice(["cost", "latency", "balanced"]),
            "minSites": rng.choice([1, 1, 1, min(2, replicas)]),
        },
    }
    if rng.random() < 0.7:
        spec["replicas"] = replicas
    else:
        spec["autoscaling"] = {"minReplicas": 1, "maxReplicas": replicas}
    if rng.random() < 0.4:
        spec["resources"]["gpuModels"] = rng.sample(sorted(GPUS), 2)
    if rng.random() < 0.3:
        spec["resources"]["gpuMemoryGiB"] = rng.choice([16, 24, 40])
    if rng.random() < 0.5:
        spec["latencySLOms"] = rng.choice([60, 90, 120])
    residency = rng.random()
    if residency < 0.5:
        spec["residency"] = {
            "allowedJurisdictions": rng.sample(countries, rng.randint(1, len(countries)))
        }
    elif residency < 0.6:
        spec["residency"] = {"deniedJurisdictions": ["US"]}
    if rng.random() < 0.3:
        spec["budget"] = {"maxHourlyCost": round(replicas * gpus * rng.uniform(1.0, 6.0), 2)}
    return Deployment(
        namespace=f"team-{index % 20}",
        name=f"model-{index:04d}",
        spec=ModelDeploymentSpec.model_validate(spec),
    )


@dataclass
class _Run:
    plan: Plan
    seconds: float
    cpu_seconds: float

    @property
    def placed(self) -> set[str]:
        return {key for key, result in self.plan.deployments.items() if result.placed}


def _timed(world: World, solver: str, options: PlacementOptions) -> _Run:
    started, cpu_started = time.perf_counter(), time.process_time()
    plan = place(world, solver="optimal" if solver == "optimal" else "fast", options=options)
    return _Run(
        plan=plan,
        seconds=time.perf_counter() - started,
        cpu_seconds=time.process_time() - cpu_started,
    )


def _common_objective(world: World, options: PlacementOptions, run: _Run, keys: set[str]) -> float:
    """The run's objective restricted to ``keys`` (stability penalties play no part here)."""
    problem = build_problem(world, {}, options)
    demands = {demand.key: demand for demand in problem.demands}
    total = 0.0
    for key in keys:
        demand = demands[key]
        pools = (problem.pools[pool] for pool in demand.pool.tolist())
        index = {(pool.site, pool.gpu_model): number for number, pool in enumerate(pools)}
        assignment = tuple(
            sorted(
                (index[(p.site, p.gpu_model)], p.replicas)
                for p in run.plan.deployments[key].placements
            )
        )
        total += demand.objective(assignment)
    return total


def _fast_parts(world: World, options: PlacementOptions) -> dict[str, tuple[float, float]]:
    """(wall, CPU) seconds of building the problem and of the fast solver alone."""
    parts = {}
    started, cpu_started = time.perf_counter(), time.process_time()
    problem = build_problem(world, {}, options)
    parts["problem build"] = (time.perf_counter() - started, time.process_time() - cpu_started)
    started, cpu_started = time.perf_counter(), time.process_time()
    solve_fast(problem)
    parts["fast solver alone"] = (time.perf_counter() - started, time.process_time() - cpu_started)
    return parts


def _peak_memory(world: World, options: PlacementOptions) -> float:
    """Peak memory traced by tracemalloc (numpy's arrays included) during one place(), MiB."""
    tracemalloc.start()
    try:
        place(world, options=options)
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deployments", type=int, default=1000)
    parser.add_argument("--sites", type=int, default=100)
    parser.add_argument("--utilisation", type=float, default=0.85)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--time-limit", type=float, default=600.0, help="MILP limit, seconds")
    parser.add_argument("--repeat", type=int, default=3, help="fast runs; the median is shown")
    parser.add_argument("--skip-optimal", action="store_true")
    parser.add_argument(
        "--world",
        choices=["gpu", "mixed"],
        default="gpu",
        help="mixed: a third of the sites CPU-only edge boxes, some deployments CPU-only",
    )
    args = parser.parse_args()

    started = time.perf_counter()
    world = synthetic_world(
        args.deployments, args.sites, args.utilisation, args.seed, mixed=args.world == "mixed"
    )
    capacity = sum(site.spec.gpus_total for site in world.sites)
    demand = sum(d.spec.reserved_replicas * d.spec.resources.gpus for d in world.deployments)
    print(
        f"machine: {platform.machine()}, python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
    )
    print(
        f"world: {len(world.deployments)} deployments x {len(world.sites)} sites, "
        f"{demand} GPUs wanted of {capacity} ({demand / capacity:.0%}), "
        f"built in {time.perf_counter() - started:.1f}s"
    )
    cpu_only = [d for d in world.deployments if not d.spec.resources.gpus]
    if cpu_only:
        cores = sum(site.spec.cpus_total for site in world.sites)
        wanted = sum(d.spec.reserved_replicas * d.spec.resources.cpus for d in cpu_only)
        edge = sum(not site.spec.gpus for site in world.sites)
        print(
            f"mixed: {edge} CPU-only sites, {len(cpu_only)} CPU-only deployments, "
            f"{wanted:.0f} cores wanted of {cores} ({wanted / cores:.0%})"
        )
    options = PlacementOptions(time_limit_s=args.time_limit)
    repeats = [_timed(world, "fast", options) for _ in range(args.repeat)]
    fast = sorted(repeats, key=lambda run: run.seconds)[len(repeats) // 2]
    parts = _fast_parts(world, options)
    peak = _peak_memory(world, options)
    runs = {"fast": fast}
    if not args.skip_optimal:
        runs["optimal"] = _timed(world, "optimal", options)
    print(f"\n{'':24}" + "".join(f"{name:>14}" for name in runs))
    rows = {
        "wall time (s)": [f"{run.seconds:.2f}" for run in runs.values()],
        "CPU time (s)": [f"{run.cpu_seconds:.2f}" for run in runs.values()],
        "deployments placed": [str(len(run.placed)) for run in runs.values()],
        "GPUs allocated": [
            str(sum(usage.gpus_allocated for usage in run.plan.sites.values()))
            for run in runs.values()
        ],
        "cores allocated": [
            str(sum(usage.cpus_allocated for usage in run.plan.sites.values()))
            for run in runs.values()
        ],
        "hourly cost": [
            f"{sum(r.hourly_cost for r in run.plan.deployments.values()):.2f}"
            for run in runs.values()
        ],
        "objective": [f"{run.plan.objective:.3f}" for run in runs.values()],
    }
    for label, values in rows.items():
        print(f"{label:24}" + "".join(f"{value:>14}" for value in values))
    parts["plan (the rest)"] = (
        fast.seconds - sum(wall for wall, _ in parts.values()),
        fast.cpu_seconds - sum(cpu for _, cpu in parts.values()),
    )
    print("\nfast by parts, measured again (wall / CPU s; the rest is place()'s time minus them):")
    for label, (wall, cpu) in parts.items():
        print(f"  {label:22}{wall:8.2f}{cpu:8.2f}")
    print(
        "fast place() runs (wall / CPU s): "
        + ", ".join(f"{run.seconds:.2f} / {run.cpu_seconds:.2f}" for run in repeats)
        + f"; load average now {os.getloadavg()[0]:.2f}"
    )
    print(f"fast place() peak traced memory (tracemalloc): {peak:.1f} MiB")
    if "optimal" in runs:
        common = fast.placed & runs["optimal"].placed
        fast_value = _common_objective(world, options, fast, common)
        optimal_value = _common_objective(world, options, runs["optimal"], common)
        print(
            f"\nobjective over the {len(common)} deployments both placed: fast {fast_value:.3f}, "
            f"optimal {optimal_value:.3f}, gap {(fast_value - optimal_value) / optimal_value:+.2%}"
        )


if __name__ == "__main__":
    main()
