"""Explanations: one line per site a deployment does not use, one reason per unplaced deployment.

Both are computed from the final solution, the same way for either solver. "Free" GPUs for a
deployment are the pool's GPUs (or cores and memory, for a CPU pool) minus what every *other*
placed deployment uses there.

The reason for an unplaced deployment is the first of these that holds, from the most basic to the
most combined, so that it names what a person has to change: no site passes a screening check
(jurisdiction, selector, health, GPU model, memory and count, CPU pool, cores and memory, latency,
budget; see
:mod:`~soberana.operator.core.placement.constraints`); a traffic region no eligible site reaches;
fewer eligible sites than ``minSites``; the cheapest eligible placement over budget; then the same
questions over free GPUs only (not enough room, a region without a site with room, too few sites
with room, over budget on free GPUs); and finally that no combination meets everything at once.

An :class:`Explainer` serves every deployment of one problem: site names, rejection lines and pool
descriptions are gathered once, and a deployment's lines are its screening lines (shared strings)
with those of its eligible sites written over them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from soberana.operator.core.placement.arrays import IntArray
from soberana.operator.core.placement.constraints import (
    CHECKS,
    CONSTRAINTS,
    ORDER,
    Assignment,
    Fallen,
    Usable,
    cpu,
    gpu,
)
from soberana.operator.core.placement.pools import gib
from soberana.operator.core.placement.problem import Demand, Problem
from soberana.operator.core.placement.world import Site

_EXAMPLES = 3


class Explainer:
    """The explanations of one problem's deployments."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        self._names = [site.name for site in problem.sites]
        # a site's screening line by rejection index; PASSED (-1) finds a placeholder
        self._lines = [rejection.line for rejection in problem.rejections] + [""]
        self._models = [pool.gpu_model for pool in problem.pools]
        self._pool_gpus = problem.capacity.tolist()
        self._pools = len(problem.pools)
        self._hourly = [pool.hourly_cost for pool in problem.pools]
        self._latency = [site.spec.latency_ms for site in problem.sites]

    def placed(self, demand: Demand, assignment: Assignment, free: IntArray) -> dict[str, str]:
        """Why each site outside ``assignment`` was not used; ``free`` excludes ``demand``."""
        chosen = {int(demand.site[option]) for option, _ in assignment}
        kept_note = (
            "; the running placement stays unless a move gains over "
            f"{self.problem.move_threshold:.0%}"
            if assignment == demand.current
            else ""
        )
        reference = _Reference.of(demand, assignment)
        pools, prices, gpus = demand.pool.tolist(), demand.price.tolist(), free.tolist()
        lines = self._screened(demand)
        for site, start, end, room in _eligible_sites(demand, free):
            name = self._names[site]
            if site in chosen:
                del lines[name]
            elif room == 0:
                lines[name] = self._capacity_line(demand, pools[start:end], gpus)
            else:
                here = pools[min(range(start, end), key=prices.__getitem__)]
                line, better_somehow = self._compare(reference, here, site)
                lines[name] = line + (kept_note if better_somehow else "")
        return lines

    def unplaced(self, demand: Demand, free: IntArray) -> tuple[str, dict[str, str]]:
        """The reason ``demand`` is not placed, and one line per site."""
        lines = self._screened(demand)
        pools, gpus = demand.pool.tolist(), free.tolist()
        for site, start, end, room in _eligible_sites(demand, free):
            lines[self._names[site]] = (
                self._capacity_line(demand, pools[start:end], gpus)
                if room == 0
                else f"eligible: room for {room} of {demand.replicas} replicas"
            )
        problem = self.problem
        reason = (
            _screening_reason(problem, demand)
            or _eligible_reason(problem, demand)
            or _free_capacity_reason(problem, demand, free)
            or "no combination of eligible sites with free GPUs meets the latency SLO, minSites "
            "and budget together"
        )
        return reason, lines

    def _screened(self, demand: Demand) -> dict[str, str]:
        """Every site's screening line, in site order (a placeholder where it passed)."""
        lines = map(self._lines.__getitem__, demand.rejected.tolist())
        return dict(zip(self._names, lines, strict=True))

    def _capacity_line(self, demand: Demand, pools: list[int], free: list[int]) -> str:
        if demand.cpu_only:  # the site's CPU pool
            (pool,) = pools
            cores = (free[pool], self._pool_gpus[pool])
            return cpu.capacity_line(demand, cores, self._memory(pool, free))
        return gpu.capacity_line(
            demand, [(self._models[pool], free[pool], self._pool_gpus[pool]) for pool in pools]
        )

    def _memory(self, pool: int, free: list[int]) -> tuple[int, int]:
        """The CPU pool's free and total memory steps."""
        return free[self._pools + pool], self._pool_gpus[self._pools + pool]

    def _compare(self, reference: _Reference, here: int, site: int) -> tuple[str, bool]:
        """A line comparing ``site``, whose cheapest usable pool is ``here``, with the placement,
        and whether the site is better somehow."""
        hourly = self._hourly[here]
        here_parts = [f"{hourly:.2f}/{reference.unit}-h {self._models[here]}"]
        better_somehow = hourly < reference.gpu_price
        latency = self._latency[site]
        for name, nearest in reference.regions:
            ms = latency.get(name)
            better_somehow |= ms is not None and ms < nearest
            here_parts.append(f"{name} {'unreachable' if ms is None else f'{ms} ms'}")
        return (
            f"not chosen ({reference.strategy}): here {', '.join(here_parts)}; "
            f"chosen {reference.chosen}",
            better_somehow,
        )


def _eligible_sites(demand: Demand, free: IntArray) -> Iterator[tuple[int, int, int, int]]:
    """Each eligible site of ``demand`` (options are grouped by site): its number, the range of
    its options and its room, the replicas its roomiest usable pool could take now."""
    if not demand.pool.size:
        return
    site = demand.site
    starts = np.flatnonzero(np.r_[True, site[1:] != site[:-1]])
    room = demand.room(free)
    room[demand.keep_only] = 0
    yield from zip(
        site[starts].tolist(),
        starts.tolist(),
        [*starts[1:].tolist(), int(site.size)],
        np.maximum.reduceat(room, starts).tolist(),
        strict=True,
    )


def _screening_reason(problem: Problem, demand: Demand) -> str | None:
    """The check at which the last site fell, if every site fell at one."""
    if not problem.sites:
        return "no InferenceSite exists"
    if demand.pool.size:
        return None
    rejections = [problem.rejections[index] for index in demand.rejected.tolist()]
    check = max((rejection.check for rejection in rejections), key=ORDER.__getitem__)
    fallen = [
        site
        for site, rejection in zip(problem.sites, rejections, strict=True)
        if rejection.check == check
    ]
    return CHECKS[check].unplaced(
        Fallen(
            placement=demand,
            check=check,
            sites=problem.sites,
            rejections=rejections,
            examples=_examples(problem, demand, fallen),
            scope=_scope(demand),
        )
    )


def _eligible_reason(problem: Problem, demand: Demand) -> str | None:
    """What the eligible sites cannot do together, whatever other deployments use."""
    room = demand.room(problem.capacity)
    return _set_reason(problem, demand, room, qualifier="eligible site", scope=_scope(demand))


def _free_capacity_reason(problem: Problem, demand: Demand, free: IntArray) -> str | None:
    """What the eligible sites cannot do with the GPUs other deployments left free."""
    room = demand.room(free)
    room[demand.keep_only] = 0
    scope = _scope(demand)
    eligible = list(_eligible_sites(demand, free))
    total = sum(site_room for _, _, _, site_room in eligible)
    if total < demand.replicas and demand.cpu_only:
        details = ", ".join(
            f"{problem.sites[site].name}: {int(free[pool])} cores, "
            f"{gib(int(free[demand.pools + pool]))} GiB free"
            for site, start, _, _ in eligible[: 2 * _EXAMPLES]
            for pool in demand.pool[start : start + 1].tolist()
        )
        more = ", ..." if len(eligible) > 2 * _EXAMPLES else ""
        return cpu.room_line(demand, total, details + more, scope)
    if total < demand.replicas:
        details = ", ".join(
            f"{problem.sites[site].name}: "
            + ", ".join(
                f"{int(free[pool])} free {problem.pools[pool].gpu_model}"
                for pool in demand.pool[start:end].tolist()
            )
            for site, start, end, _ in eligible[: 2 * _EXAMPLES]
        )
        more = ", ..." if len(eligible) > 2 * _EXAMPLES else ""
        return gpu.room_line(demand, total, details + more, scope)
    qualifier = "eligible site with free " + ("cores" if demand.cpu_only else "GPUs")
    return _set_reason(problem, demand, room, qualifier=qualifier, scope=scope)


def _set_reason(
    problem: Problem, demand: Demand, room: IntArray, *, qualifier: str, scope: str
) -> str | None:
    """What the options with ``room`` cannot do together (coverage, minSites, budget), or None
    when they can."""
    usable = Usable(
        placement=demand,
        sites=problem.sites,
        options=np.flatnonzero(room > 0),
        room=room,
        qualifier=qualifier,
        scope=scope,
    )
    return next(
        (reason for constraint in CONSTRAINTS if (reason := constraint.shortfall(usable))), None
    )


@dataclass(frozen=True)
class _Reference:
    """What a deployment's chosen placement offers, for comparing other sites with it."""

    gpu_price: float  # average hourly price of one GPU (or core) of the placement
    regions: tuple[tuple[str, float], ...]  # the busiest traffic regions, RTT to nearest chosen
    strategy: str
    chosen: str  # the placement's side of a comparison line
    unit: str  # GPU, or core

    @classmethod
    def of(cls, demand: Demand, assignment: Assignment) -> _Reference:
        chosen = [option for option, _ in assignment]
        traffic = demand.spec.traffic
        busiest = sorted(range(len(traffic)), key=lambda region: -traffic[region].weight)[:2]
        gpu_price = demand.cost(assignment) / (demand.replicas * demand.gpus)
        regions = tuple(
            (traffic[region].region, float(demand.reach[region, chosen].min()))
            for region in busiest
        )
        unit = "core" if demand.cpu_only else "GPU"
        return cls(
            gpu_price=gpu_price,
            regions=regions,
            strategy=demand.spec.placement.strategy.value,
            chosen=", ".join(
                [f"{gpu_price:.2f}/{unit}-h", *(f"{name} {ms:.0f} ms" for name, ms in regions)]
            ),
            unit=unit,
        )


def _examples(problem: Problem, demand: Demand, sites: Sequence[Site]) -> str:
    number = {site.name: index for index, site in enumerate(problem.sites)}
    shown = []
    for site in sites[:_EXAMPLES]:
        rejection = problem.rejection(demand, number[site.name])
        line = rejection.line if rejection is not None else ""
        shown.append(f"{site.name}: {line.partition(': ')[2] or 'yes'}")
    if len(sites) > _EXAMPLES:
        shown.append(f"{len(sites) - _EXAMPLES} more")
    return "; ".join(shown)


def _scope(demand: Demand) -> str:
    residency = demand.spec.residency
    if residency is None or not (residency.allowed_jurisdictions or residency.denied_jurisdictions):
        return ""
    return f" {residency.describe()}"
