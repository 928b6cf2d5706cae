"""Candidate placements of every deployment, as rows of one table scored in bulk with numpy.

A placement's latency depends only on its set of sites, its cost on how the replicas spread. So a
row holds a *core*: one to three pools at distinct sites that together reach every traffic region,
each of them strictly the nearest chosen site for some region. Cores of two and three pools are
formed from each region's nearest pools and its best pools by one replica's cost plus that region's
latency, so that a far but cheap pool can serve a region too.

Scoring a row under *tolls* (an extra objective per unit of each entry of the problem's capacity:
a GPU or core of a pool, a memory step of a CPU pool) and *room* (replicas that fit in each pool)
completes the core with the cheapest pools at other sites when it has fewer sites than
``minSites``, or else with one pool elsewhere cheaper than its own to hold the bulk of the
replicas; then one replica goes to each pool and the rest to the cheapest pools with room. A row's
value is its objective plus the tolls of the GPUs it takes, counting the latency of the core alone
(a completing pool can only shorten it); :meth:`Candidates.objective` is exact.

Tolls and less room only make a row dearer (but for corner cases where small pools change how
replicas spill), so the solver scores again only the rows whose value on empty pools without tolls
could beat what it has.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from soberana.operator.core.placement.arrays import (
    AnyIntArray,
    BoolArray,
    FloatArray,
    IntArray,
    SmallIntArray,
)
from soberana.operator.core.placement.constraints import Assignment, budget, spread
from soberana.operator.core.placement.problem import Demand, Problem

CORE = 3
"""The most pools in a core."""

_NEAREST = {2: 8, 3: 4}
"""By core size: how many pools of each region (nearest, and best by cost plus latency) join."""

_CHUNK = 8192
"""Rows completed at once when scoring: bounds the memory of the intermediate arrays."""


@dataclass(frozen=True, eq=False)
class Scored:
    """Rows of the table scored once: each row's value (inf if it cannot be placed), its pools
    (table options, -1 padded) and replicas per pool."""

    rows: IntArray
    owner: SmallIntArray
    value: FloatArray
    members: SmallIntArray
    counts: SmallIntArray


@dataclass(frozen=True, eq=False)
class Candidates:
    """The rows of every deployment with options, and the per-option data that scores them.

    The options of all deployments are laid end to end (``owner`` says whose, ``local`` which of
    its own); index -1 is a sentinel option that never fits, used to pad rows. Rows are grouped by
    owner, in owner order.
    """

    demands: tuple[Demand, ...]
    option_start: IntArray  # first option of each owner, and the end
    owner: IntArray
    local: IntArray
    pool: IntArray
    site: IntArray
    unit: FloatArray  # the objective of one replica's cost: cost_weight * price
    price: FloatArray
    gpus: IntArray  # units per replica: GPUs, or cores
    memory: IntArray  # memory steps per replica (CPU-only deployments), 0 elsewhere
    pools: int  # pools of the problem: memory entries of capacity and tolls start here
    usable: BoolArray  # False for keep-only options: only the running placement uses them
    trips: FloatArray  # options x regions: round trips, inf out of reach, 0 for padding
    group_start: IntArray  # first option of each (owner, site) group, and the end
    owner_groups: IntArray  # first group of each owner, and the end
    row_owner: SmallIntArray
    row_start: IntArray  # first row of each owner, and the end
    core: SmallIntArray  # rows x CORE, -1 padded
    core_site: SmallIntArray  # rows x CORE, -2 padded
    size: SmallIntArray  # pools in the core
    mandatory: SmallIntArray  # pools to add for minSites
    extra_width: int  # the most pools a row may add
    latency: FloatArray  # the core's latency term of the objective
    replicas: IntArray  # by owner
    min_sites: IntArray
    budget: FloatArray
    weights: FloatArray  # owners x regions, 0 for padding
    latency_weight: FloatArray

    @property
    def rows(self) -> int:
        return int(self.row_owner.size)

    @property
    def width(self) -> int:
        """The most pools in a scored row."""
        return CORE + self.extra_width

    def rows_of(self, owners: IntArray) -> IntArray:
        """The rows of ``owners`` (sorted), in order."""
        return ranges(self.row_start[owners], self.row_start[owners + 1])

    def score(
        self,
        free: IntArray,
        tolls: FloatArray | None = None,
        own: IntArray | None = None,
        rows: IntArray | None = None,
    ) -> Scored:
        """Complete, spread and value ``rows`` (sorted; every row when None) on ``free`` capacity
        (units, then memory, by pool), plus ``own`` units per option (those its deployment holds
        there), under ``tolls`` (objective per unit of each entry of ``free``)."""
        if rows is None:
            rows = np.arange(self.rows)
            owners = np.arange(len(self.demands))
            options = np.arange(self.owner.size - 1)
        else:
            owners = np.unique(self.row_owner[rows])
            options = ranges(self.option_start[owners], self.option_start[owners + 1])
        room = np.zeros(self.owner.size, dtype=np.int64)
        gpus = free[self.pool[options]] if own is None else free[self.pool[options]] + own[options]
        room[options] = np.minimum(gpus // self.gpus[options], self.replicas[self.owner[options]])
        memory = self.memory[options]
        counted = np.flatnonzero(memory)
        if counted.size:
            counted = options[counted]
            held = 0 if own is None else own[counted] // self.gpus[counted] * self.memory[counted]
            steps = free[self.pools + self.pool[counted]] + held
            room[counted] = np.minimum(room[counted], steps // self.memory[counted])
        unit = np.full(self.owner.size, np.inf)
        values = self.unit[options]
        if tolls is not None:
            values = values + self.gpus[options] * tolls[self.pool[options]]
            if counted.size:
                values = values + memory * tolls[self.pools + self.pool[options]]
        unit[options] = np.where((room[options] > 0) & self.usable[options], values, np.inf)
        cheapest = self._cheapest(unit, self.extra_width + CORE, owners)
        parts = [
            self._complete(rows[start : start + _CHUNK], owners, cheapest, unit, room)
            for start in range(0, max(rows.size, 1), _CHUNK)
        ]
        return Scored(
            rows=rows,
            owner=self.row_owner[rows],
            value=np.concatenate([value for value, _, _ in parts]),
            members=np.concatenate([members for _, members, _ in parts]),
            counts=np.concatenate([counts for _, _, counts in parts]),
        )

    def _complete(
        self, rows: IntArray, owners: IntArray, cheapest: IntArray, unit: FloatArray, room: IntArray
    ) -> tuple[FloatArray, SmallIntArray, SmallIntArray]:
        """:meth:`score` for a slice of its rows: their values, pools and replicas per pool, given
        the ``cheapest`` options of each of ``owners`` and each option's ``unit`` value and
        ``room``."""
        candidate = cheapest[np.searchsorted(owners, self.row_owner[rows])]
        core, size, owner = self.core[rows], self.size[rows], self.row_owner[rows]
        replicas, mandatory = self.replicas[owner], self.mandatory[rows]
        clash = (self.site[candidate][:, :, None] == self.core_site[rows][:, None, :]).any(axis=2)
        free_slot = ~clash & (candidate >= 0)
        rank = np.cumsum(free_slot, axis=1)
        core_values = unit[core]
        first_free = np.where(free_slot & (rank == 1), unit[candidate], np.inf).min(axis=1)
        bulk = (mandatory == 0) & (size < replicas) & (first_free < core_values.min(axis=1))
        wanted = np.where(mandatory > 0, mandatory, bulk)
        extras = np.full((rows.size, self.extra_width), -1, dtype=np.int32)
        every = np.arange(rows.size)
        for slot in range(self.extra_width):
            hit = free_slot & (rank == slot + 1)
            found = candidate[every, np.argmax(hit, axis=1)]
            extras[:, slot] = np.where(hit.any(axis=1) & (slot < wanted), found, -1)
        members = np.concatenate([core, extras], axis=1)
        values = np.concatenate([core_values, unit[extras]], axis=1)
        counts, rest = _spread(members, values, room, replicas)
        present = members >= 0
        value = (counts * np.where(present, values, 0.0)).sum(axis=1)
        money = (counts * self.price[members]).sum(axis=1)
        valid = (
            spread.rows_admit(rest, present.sum(axis=1), self.min_sites[owner])
            & budget.within(money, self.budget[owner])
            & np.isfinite(value)
        )
        return np.where(valid, value + self.latency[rows], np.inf), members, counts

    def _cheapest(self, unit: FloatArray, count: int, owners: IntArray) -> IntArray:
        """The ``count`` cheapest options at distinct sites of each of ``owners`` (sorted), -1
        padded: one row per owner."""
        groups = ranges(self.owner_groups[owners], self.owner_groups[owners + 1])
        top = np.full((owners.size, count), -1, dtype=np.int64)
        if not groups.size:
            return top
        group_size = self.group_start[groups + 1] - self.group_start[groups]
        options = ranges(self.group_start[groups], self.group_start[groups + 1])
        values = unit[options]
        starts = np.cumsum(group_size) - group_size
        group_value = np.minimum.reduceat(values, starts)
        at_least = values == np.repeat(group_value, group_size)
        group_best = options[
            np.minimum.reduceat(np.where(at_least, np.arange(values.size), values.size), starts)
        ]
        per_owner = self.owner_groups[owners + 1] - self.owner_groups[owners]
        owner_start = np.cumsum(per_owner) - per_owner
        every = np.arange(groups.size)
        for rank in range(count):
            least = np.minimum.reduceat(group_value, owner_start)
            at_least = group_value == np.repeat(least, per_owner)
            chosen = np.minimum.reduceat(np.where(at_least, every, groups.size), owner_start)
            found = np.isfinite(least)
            top[found, rank] = group_best[chosen[found]]
            group_value[chosen[found]] = np.inf
        return top

    def best(self, scored: Scored, count: int = 1) -> IntArray:
        """Each owner's ``count`` best valid rows, as indices into ``scored`` (-1 where fewer)."""
        order = np.lexsort((scored.value, scored.owner))
        owners = scored.owner[order]
        rank = np.arange(order.size) - np.searchsorted(owners, owners)
        keep = (rank < count) & np.isfinite(scored.value[order])
        chosen = np.full((len(self.demands), count), -1, dtype=np.int64)
        chosen[owners[keep], rank[keep]] = order[keep]
        return chosen

    def assignment(self, members: AnyIntArray, counts: AnyIntArray) -> Assignment:
        """One row's (or column's) pools and replicas as a deployment's assignment."""
        pairs = [
            (int(self.local[member]), int(count))
            for member, count in zip(members.tolist(), counts.tolist(), strict=True)
            if member >= 0
        ]
        return tuple(sorted(pairs))

    def objective(self, members: AnyIntArray, counts: AnyIntArray) -> FloatArray:
        """The exact objective of rows of pools (table options, -1 padded) and replicas."""
        present = members >= 0
        owner = self.owner[np.where(present, members, -1).max(axis=1)]
        cost = (counts * np.where(present, self.unit[members], 0.0)).sum(axis=1)
        trips = np.where(present[:, :, None], self.trips[members], np.inf).min(axis=1)
        trips[self.weights[owner] == 0] = 0.0
        latency = (self.weights[owner] * trips).sum(axis=1) * self.latency_weight[owner]
        objective: FloatArray = cost + latency
        return objective

    def as_row(self, owner: int, assignment: Assignment, width: int) -> tuple[IntArray, IntArray]:
        """An assignment of ``owner`` as table options and replicas, ``width`` wide."""
        members = np.full(width, -1, dtype=np.int64)
        counts = np.zeros(width, dtype=np.int64)
        start = int(self.option_start[owner])
        for slot, (option, replicas) in enumerate(assignment):
            members[slot], counts[slot] = start + option, replicas
        return members, counts


def _spread(
    members: SmallIntArray, values: FloatArray, room: IntArray, replicas: IntArray
) -> tuple[SmallIntArray, IntArray]:
    """One replica per pool, the rest to the cheapest pools with room: counts, and replicas left
    over (more than zero where the rows' pools are too small)."""
    present = members >= 0
    counts = present.astype(np.int32)
    rest = replicas - counts.sum(axis=1)
    every = np.arange(members.shape[0])
    cheapest = np.argmin(values, axis=1)
    extra = np.clip(room[members[every, cheapest]] - 1, 0, rest)
    counts[every, cheapest] += extra
    rest = rest - extra
    spill = np.flatnonzero(rest > 0)  # the cheapest pool is too small: fill the next ones
    if spill.size:
        order = np.argsort(values[spill], axis=1, kind="stable")
        left = rest[spill]
        for rank in range(1, members.shape[1]):
            column = order[:, rank]
            member = members[spill, column]
            extra = np.clip(np.where(member >= 0, room[member] - 1, 0), 0, left)
            counts[spill, column] += extra
            left = left - extra
        rest[spill] = left
    return counts, rest


def build(problem: Problem) -> Candidates:
    """The table of every deployment of ``problem`` that has options."""
    demands = tuple(demand for demand in problem.demands if demand.pool.size)
    sizes = np.array([demand.pool.size for demand in demands], dtype=np.int64)
    option_start = np.concatenate(([0], np.cumsum(sizes)))
    owner = np.repeat(np.arange(len(demands)), sizes)
    regions = max((demand.weights.size for demand in demands), default=0)
    weights = np.zeros((len(demands), max(regions, 1)))
    trips = np.zeros((int(option_start[-1]), max(regions, 1)))
    for index, demand in enumerate(demands):
        weights[index, : demand.weights.size] = demand.weights
        trips[option_start[index] : option_start[index + 1], : demand.weights.size] = demand.reach.T
    usable: BoolArray = ~np.concatenate([np.zeros(0, np.bool_), *(d.keep_only for d in demands)])
    site: IntArray = np.concatenate([np.zeros(0, np.int64), *(d.site for d in demands)])
    price: FloatArray = np.concatenate([np.zeros(0), *(d.price for d in demands)])
    replicas = np.array([demand.replicas for demand in demands], dtype=np.int64)
    min_sites = np.array([demand.min_sites for demand in demands], dtype=np.int64)
    latency_weight = np.array([demand.latency_weight for demand in demands])
    region_count = np.array([demand.weights.size for demand in demands], dtype=np.int64)
    unit = np.array([demand.cost_weight for demand in demands])[owner] * price
    cores, latency = _cores(
        _Options(owner, trips, usable, site, unit, weights, latency_weight),
        replicas=replicas,
        region_count=region_count,
    )
    order = np.argsort(owner[cores[:, 0]], kind="stable")
    core, latency = cores[order].astype(np.int32), latency[order]
    del cores
    row_owner = owner[core[:, 0]].astype(np.int32)
    size = (core >= 0).sum(axis=1, dtype=np.int32)
    mandatory = np.maximum(min_sites[row_owner] - size, 0).astype(np.int32)
    group_first = np.ones(owner.size, dtype=bool)
    group_first[1:] = (owner[1:] != owner[:-1]) | (site[1:] != site[:-1])
    group_start = np.flatnonzero(group_first)
    return Candidates(
        demands=demands,
        option_start=option_start,
        owner=np.append(owner, -1),
        local=np.append(np.arange(owner.size) - option_start[owner], -1),
        pool=np.concatenate([*(d.pool for d in demands), [0]]),
        site=np.append(site, -2),
        unit=np.append(unit, np.inf),
        price=np.append(price, 0.0),
        gpus=np.append(np.repeat([demand.gpus for demand in demands], sizes), 1),
        memory=np.append(np.repeat([demand.memory for demand in demands], sizes), 0).astype(
            np.int64
        ),
        pools=len(problem.pools),
        usable=np.append(usable, False),
        trips=np.vstack([trips, np.full((1, trips.shape[1]), np.inf)]),
        group_start=np.append(group_start, owner.size),
        owner_groups=np.searchsorted(owner[group_start], np.arange(len(demands) + 1)),
        row_owner=row_owner,
        row_start=np.searchsorted(row_owner, np.arange(len(demands) + 1)),
        core=core,
        core_site=np.append(site, -2).astype(np.int32)[core],
        size=size,
        mandatory=mandatory,
        extra_width=max(int(mandatory.max(initial=0)), 1),
        latency=latency,
        replicas=replicas,
        min_sites=min_sites,
        budget=np.array([demand.budget for demand in demands]),
        weights=weights,
        latency_weight=latency_weight,
    )


@dataclass(frozen=True)
class _Options:
    owner: IntArray
    trips: FloatArray
    usable: BoolArray
    site: IntArray
    unit: FloatArray
    weights: FloatArray
    latency_weight: FloatArray


def _cores(
    options: _Options, *, replicas: IntArray, region_count: IntArray
) -> tuple[IntArray, FloatArray]:
    """Every core (rows x CORE, -1 padded) with its latency term, in no particular order."""
    owner, trips = options.owner, options.trips
    found = [np.flatnonzero(options.usable)[:, None]]
    rank = np.full(owner.size, owner.size)  # each option's best rank in any region's lists
    for region in range(trips.shape[1]):
        reach = np.where(options.usable & (region < region_count[owner]), trips[:, region], np.inf)
        weight = options.latency_weight[owner] * options.weights[owner, region]
        reachable = np.isfinite(reach)
        served = np.where(
            reachable, options.unit + weight * np.where(reachable, reach, 0.0), np.inf
        )
        for key in (reach, served):
            rank = np.minimum(rank, _ranked_within(owner, key))
    for size, nearest in _NEAREST.items():
        eligible = (rank < nearest) & (replicas[owner] >= size) & (region_count[owner] >= size)
        found.append(_combinations(np.flatnonzero(eligible), owner, size))
    cores, latency = [], []
    for combinations in found:
        kept, value = _useful(combinations, options)
        padded = np.full((kept.shape[0], CORE), -1, dtype=np.int64)
        padded[:, : kept.shape[1]] = kept
        cores.append(padded)
        latency.append(options.latency_weight[owner[kept[:, 0]]] * value)
    return np.concatenate(cores), np.concatenate(latency)


def _ranked_within(owner: IntArray, key: FloatArray) -> IntArray:
    """Each option's rank by ``key`` among its owner's options; past every rank where inf."""
    order = np.lexsort((key, owner))
    rank = np.empty(owner.size, dtype=np.int64)
    rank[order] = np.arange(owner.size) - np.searchsorted(owner[order], owner[order])
    rank[~np.isfinite(key)] = owner.size
    return rank


def _combinations(members: IntArray, owner: IntArray, size: int) -> IntArray:
    """Every ``size``-subset of ``members`` (sorted options) within one owner, in order."""
    combinations = members[:, None]
    member_owner = owner[members]
    for _ in range(size - 1):
        last = combinations[:, -1]
        after = np.searchsorted(members, last) + 1
        end = np.searchsorted(member_owner, owner[last], side="right")
        following = members[ranges(after, end)][:, None]
        combinations = np.concatenate(
            [np.repeat(combinations, np.maximum(end - after, 0), axis=0), following], axis=1
        )
    return combinations


def _useful(combinations: IntArray, options: _Options) -> tuple[IntArray, FloatArray]:
    """The combinations at distinct sites that reach every region, each member strictly the
    nearest for some region (without it a region is unreached or further); their latency."""
    size = combinations.shape[1]
    keep = np.ones(combinations.shape[0], dtype=bool)
    for a in range(size):
        for b in range(a + 1, size):
            keep &= options.site[combinations[:, a]] != options.site[combinations[:, b]]
    combinations = combinations[keep]
    reach = [options.trips[combinations[:, member]] for member in range(size)]
    nearest = functools.reduce(np.minimum, reach)
    useful = np.isfinite(nearest).all(axis=1)
    weight = options.weights[options.owner[combinations[:, 0]]]
    for member in range(size if size > 1 else 0):
        others = functools.reduce(np.minimum, reach[:member] + reach[member + 1 :])
        needed = (reach[member] < others) & ((weight > 0) | ~np.isfinite(others))
        useful &= needed.any(axis=1)
    latency: FloatArray = (weight[useful] * nearest[useful]).sum(axis=1)
    return combinations[useful], latency


def ranges(starts: IntArray, ends: IntArray) -> IntArray:
    """The ranges ``starts[i]:ends[i]``, end to end."""
    lengths = np.maximum(ends - starts, 0)
    offsets = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    joined: IntArray = np.repeat(starts, lengths) + offsets
    return joined
