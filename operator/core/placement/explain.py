"""Explanations: one line per site a deployment does not use, one reason per unplaced deployment.

Both are computed from the final solution, the same way for either solver. "Free" GPUs for a
deployment are the pool's GPUs minus what every *other* placed deployment uses there.

The reason for an unplaced deployment is the first of these that holds, from the most basic to the
most combined, so that it names what a person has to change: no site passes a screening check
(jurisdiction, selector, health, GPU model, memory and count, latency, budget; see
:mod:`~soberana.operator.core.placement.eligibility`); a traffic region no eligible site reaches;
fewer eligible sites than ``minSites``; the cheapest eligible placement over budget; then the same
questions over free GPUs only (not enough room, a region without a site with room, too few sites
with room, over budget on free GPUs); and finally that no combination meets everything at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from soberana.operator.core.placement.eligibility import Check
from soberana.operator.core.placement.problem import Assignment, Demand, IntArray, Problem
from soberana.operator.core.placement.world import Site

_EXAMPLES = 3


def explain_placed(
    problem: Problem, demand: Demand, assignment: Assignment, free: IntArray
) -> dict[str, str]:
    """Why each site outside ``assignment`` was not used; ``free`` excludes ``demand`` itself."""
    chosen = {demand.options[option].site for option, _ in assignment}
    kept_note = (
        f"; the running placement stays unless a move gains over {problem.move_threshold:.0%}"
        if assignment == demand.current
        else ""
    )
    reference = _Reference.of(demand, assignment)
    lines: dict[str, str] = {}
    for site in problem.sites:
        if site.name in chosen:
            continue
        if site.name in demand.rejections:
            lines[site.name] = demand.rejections[site.name].line
        elif _room(demand, free, site.name) == 0:
            lines[site.name] = _capacity_line(demand, free, site.name)
        else:
            line, better_somehow = reference.compare(demand, site)
            lines[site.name] = line + (kept_note if better_somehow else "")
    return lines


def explain_unplaced(
    problem: Problem, demand: Demand, free: IntArray
) -> tuple[str, dict[str, str]]:
    """The reason ``demand`` is not placed, and one line per site."""
    lines: dict[str, str] = {}
    for site in problem.sites:
        if site.name in demand.rejections:
            lines[site.name] = demand.rejections[site.name].line
        elif (room := _room(demand, free, site.name)) == 0:
            lines[site.name] = _capacity_line(demand, free, site.name)
        else:
            lines[site.name] = f"eligible: room for {room} of {demand.replicas} replicas"
    reason = (
        _screening_reason(problem, demand)
        or _eligible_reason(problem, demand)
        or _free_capacity_reason(problem, demand, free)
        or "no combination of eligible sites with free GPUs meets the latency SLO, minSites "
        "and budget together"
    )
    return reason, lines


def _screening_reason(problem: Problem, demand: Demand) -> str | None:
    """The check at which the last site fell, if every site fell at one."""
    if not problem.sites:
        return "no InferenceSite exists"
    if demand.options:
        return None
    spec, scope = demand.spec, _scope(demand)
    rejections = demand.rejections
    for check in Check:
        fallen = [site for site in problem.sites if rejections[site.name].check == check]
        survivors = [site for site in problem.sites if rejections[site.name].check > check]
        if survivors or not fallen:
            continue
        examples = _examples(demand, fallen)
        match check:
            case Check.JURISDICTION:
                where = sorted({site.spec.jurisdiction for site in problem.sites})
                return f"no site{scope} (sites are in {', '.join(where)})"
            case Check.SELECTOR:
                selector = spec.placement.site_selector
                described = selector.describe() if selector is not None else ""
                return f"no site{scope} matches placement.siteSelector {described} ({examples})"
            case Check.UNHEALTHY | Check.CORDONED:
                down = ", ".join(
                    f"{site.name} {rejections[site.name].line.partition(':')[0]}"
                    for site in problem.sites
                    if rejections[site.name].check in (Check.UNHEALTHY, Check.CORDONED)
                )
                return f"every matching site{scope} is unhealthy or cordoned ({down})"
            case Check.GPU_MODEL:
                models = ", ".join(spec.resources.gpu_models)
                return f"no available site{scope} has GPU model {models} ({examples})"
            case Check.GPU_MEMORY:
                return (
                    f"no available site{scope} has {_models(demand)} GPUs with "
                    f"{spec.resources.gpu_memory_gib} GiB ({examples})"
                )
            case Check.GPU_COUNT:
                return (
                    f"no available site{scope} has {spec.resources.gpus} {_models(demand)} GPUs "
                    f"in one pool for a replica ({examples})"
                )
            case Check.LATENCY:
                return f"no available site{scope} reaches any traffic region in time ({examples})"
            case Check.BUDGET:
                cheapest = min(fallen, key=lambda site: rejections[site.name].least_cost or 0.0)
                least = rejections[cheapest.name].least_cost or 0.0
                return (
                    f"the cheapest placement{scope} costs {least:.2f}/h (using {cheapest.name}), "
                    f"over budget.maxHourlyCost {demand.budget:.2f}"
                )
    return None


def _eligible_reason(problem: Problem, demand: Demand) -> str | None:
    """What the eligible sites cannot do together, whatever other deployments use."""
    pool_gpus = np.array([option.pool_gpus for option in demand.options], dtype=np.int64)
    room = np.minimum(pool_gpus // demand.gpus, demand.replicas)
    return _set_reason(problem, demand, room, qualifier="eligible site", scope=_scope(demand))


def _free_capacity_reason(problem: Problem, demand: Demand, free: IntArray) -> str | None:
    """What the eligible sites cannot do with the GPUs other deployments left free."""
    room = np.minimum(free[demand.pool] // demand.gpus, demand.replicas)
    room[demand.keep_only] = 0
    scope = _scope(demand)
    by_site = {
        site.name: _room(demand, free, site.name) for site in _eligible_sites(problem, demand)
    }
    total = sum(by_site.values())
    if total < demand.replicas:
        details = ", ".join(
            _free_pools(demand, free, site) for site in list(by_site)[: 2 * _EXAMPLES]
        )
        more = ", ..." if len(by_site) > 2 * _EXAMPLES else ""
        return (
            f"needs {_counted(demand.replicas, 'replica')} x "
            f"{_counted(demand.gpus, _models(demand) + ' GPU')}{scope}, but eligible sites have "
            f"room for {total} ({details}{more})"
        )
    return _set_reason(problem, demand, room, qualifier="eligible site with free GPUs", scope=scope)


def _set_reason(
    problem: Problem, demand: Demand, room: IntArray, *, qualifier: str, scope: str
) -> str | None:
    """Coverage, minSites and budget over the options with ``room``, or None when they hold."""
    usable = np.flatnonzero(room > 0)
    slo = demand.spec.latency_slo_ms
    for region, source in enumerate(demand.spec.traffic):
        if not np.isfinite(demand.reach[region, usable]).any():
            within = (
                f"within latencySLOms {slo}" if slo is not None else "(none lists it in latencyMs)"
            )
            return (
                f"no {qualifier}{scope} reaches {source.region} {within}"
                f"{_full_or_nearest(problem, demand, region, usable)}"
            )
    sites = sorted({demand.options[option].site for option in usable})
    if len(sites) < demand.min_sites:
        return (
            f"placement.minSites is {demand.min_sites} but only {len(sites)} {qualifier}s{scope} "
            f"({', '.join(sites) or 'none'})"
        )
    cheapest = _cheapest_cost(demand, usable, room)
    if cheapest > demand.budget * (1 + 1e-9):
        return (
            f"the cheapest placement on {qualifier}s{scope} costs {cheapest:.2f}/h, over "
            f"budget.maxHourlyCost {demand.budget:.2f}"
        )
    return None


def _cheapest_cost(demand: Demand, usable: IntArray, room: IntArray) -> float:
    """A lower bound on cost: the minSites cheapest sites once, the rest on the cheapest room."""
    by_price = sorted(usable.tolist(), key=lambda option: (demand.price[option], option))
    cost, placed, sites = 0.0, 0, set[str]()
    for option in by_price:
        site = demand.options[option].site
        if site not in sites and len(sites) < demand.min_sites:
            sites.add(site)
            cost += float(demand.price[option])
            placed += 1
    for option in by_price:
        extra = min(int(room[option]) - 1, demand.replicas - placed)
        cost += extra * float(demand.price[option])
        placed += extra
    return cost


@dataclass(frozen=True)
class _Reference:
    """What a deployment's chosen placement offers, for comparing other sites with it."""

    gpu_price: float  # average hourly price of one GPU of the placement
    regions: tuple[tuple[str, float], ...]  # the busiest traffic regions, RTT to nearest chosen

    @classmethod
    def of(cls, demand: Demand, assignment: Assignment) -> _Reference:
        chosen = [option for option, _ in assignment]
        traffic = demand.spec.traffic
        busiest = sorted(range(len(traffic)), key=lambda region: -traffic[region].weight)[:2]
        return cls(
            gpu_price=demand.cost(assignment) / (demand.replicas * demand.gpus),
            regions=tuple(
                (traffic[region].region, float(demand.reach[region, chosen].min()))
                for region in busiest
            ),
        )

    def compare(self, demand: Demand, site: Site) -> tuple[str, bool]:
        """A line comparing ``site`` with the placement, and whether the site is better somehow."""
        here = min(
            (demand.options[index] for index in demand.by_site[site.name]),
            key=lambda option: option.replica_cost,
        )
        here_parts = [f"{here.gpu_hourly_cost:.2f}/GPU-h {here.gpu_model}"]
        chosen_parts = [f"{self.gpu_price:.2f}/GPU-h"]
        better_somehow = here.gpu_hourly_cost < self.gpu_price
        for name, nearest in self.regions:
            ms = site.spec.latency_ms.get(name)
            better_somehow |= ms is not None and ms < nearest
            here_parts.append(f"{name} {'unreachable' if ms is None else f'{ms} ms'}")
            chosen_parts.append(f"{name} {nearest:.0f} ms")
        strategy = demand.spec.placement.strategy.value
        here_text, chosen_text = ", ".join(here_parts), ", ".join(chosen_parts)
        return f"not chosen ({strategy}): here {here_text}; chosen {chosen_text}", better_somehow


def _capacity_line(demand: Demand, free: IntArray, site: str) -> str:
    pools = [
        f"{int(free[demand.pool[index]])} of {demand.options[index].pool_gpus} "
        f"{demand.options[index].gpu_model}"
        for index in demand.by_site[site]
    ]
    return f"capacity: {' and '.join(pools)} GPUs free; a replica needs {demand.gpus}"


def _room(demand: Demand, free: IntArray, site: str) -> int:
    """Replicas the site could take now, on its roomiest usable pool."""
    return max(
        (
            min(int(free[demand.pool[index]]) // demand.gpus, demand.replicas)
            for index in demand.by_site.get(site, ())
            if not demand.keep_only[index]
        ),
        default=0,
    )


def _free_pools(demand: Demand, free: IntArray, site: str) -> str:
    pools = [
        f"{int(free[demand.pool[index]])} free {demand.options[index].gpu_model}"
        for index in demand.by_site[site]
    ]
    return f"{site}: {', '.join(pools)}"


def _full_or_nearest(problem: Problem, demand: Demand, region: int, usable: IntArray) -> str:
    """The sites in reach of ``region`` that are full or, if none is, the nearest usable one."""
    in_reach = np.flatnonzero(np.isfinite(demand.reach[region]))
    full = sorted(
        {(float(demand.reach[region, option]), demand.options[option].site) for option in in_reach}
    )
    if full:
        described = ", ".join(f"{site} at {ms:.0f} ms" for ms, site in full[:_EXAMPLES])
        return f" ({described}: no free GPUs)"
    name = demand.spec.traffic[region].region
    candidates = {demand.options[option].site for option in usable}
    trips = [
        (site.spec.latency_ms[name], site.name)
        for site in problem.sites
        if site.name in candidates and name in site.spec.latency_ms
    ]
    if not trips:
        return ""
    ms, nearest = min(trips)
    return f" (nearest: {nearest} at {ms} ms)"


def _eligible_sites(problem: Problem, demand: Demand) -> list[Site]:
    return [site for site in problem.sites if site.name not in demand.rejections]


def _examples(demand: Demand, sites: Sequence[Site]) -> str:
    shown = [
        f"{site.name}: {demand.rejections[site.name].line.partition(': ')[2] or 'yes'}"
        for site in sites[:_EXAMPLES]
    ]
    if len(sites) > _EXAMPLES:
        shown.append(f"{len(sites) - _EXAMPLES} more")
    return "; ".join(shown)


def _counted(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _models(demand: Demand) -> str:
    return "/".join(demand.spec.resources.gpu_models) or "any-model"


def _scope(demand: Demand) -> str:
    residency = demand.spec.residency
    if residency is None or not (residency.allowed_jurisdictions or residency.denied_jurisdictions):
        return ""
    return f" {residency.describe()}"
