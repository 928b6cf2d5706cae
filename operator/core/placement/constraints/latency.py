"""Latency SLO: every traffic region must be served by a site in reach (listed in the site's
``latencyMs``) within ``latencySLOms``. Screening rejects the sites that reach no region in time;
a placement must cover every region."""

from __future__ import annotations

import math
from collections.abc import Hashable

import numpy as np

from soberana.operator.core.api import ModelDeploymentSpec
from soberana.operator.core.placement.constraints.base import (
    Assignment,
    Check,
    Columns,
    Constraint,
    Fallen,
    Pairs,
    Placement,
    Program,
    Rejection,
    Usable,
    signature,
)
from soberana.operator.core.placement.world import Site

LATENCY = Check("latency")

_EXAMPLES = 3


class Latency(Constraint):
    checks = (LATENCY,)

    def screen(self, pairs: Pairs) -> None:
        specs, sites = pairs.specs, pairs.sites
        regions: dict[str, int] = {}
        entry_region = [
            regions.setdefault(source.region, len(regions))
            for spec in specs
            for source in spec.traffic
        ]
        latency = np.full((len(sites), len(regions)), np.inf)
        for row, site in enumerate(sites):
            for region, ms in site.spec.latency_ms.items():
                column = regions.get(region)
                if column is not None:
                    latency[row, column] = ms
        lengths = np.array([len(spec.traffic) for spec in specs], dtype=np.int64)
        traffic_start = np.concatenate(([0], np.cumsum(lengths)))
        slo = np.array(
            [spec.latency_slo_ms if spec.latency_slo_ms is not None else math.inf for spec in specs]
        )
        trips = np.ascontiguousarray(latency[:, entry_region].T)
        trips[trips > np.repeat(slo, lengths)[:, None]] = np.inf
        unreached = np.zeros((len(specs), len(sites)), dtype=np.bool_)
        some = np.flatnonzero(lengths)
        if some.size:
            unreached[some] = ~np.logical_or.reduceat(
                np.isfinite(trips), traffic_start[some], axis=0
            )
        pairs.traffic_start, pairs.trips = traffic_start, trips
        pairs.reject(
            pairs.rejections.by_pair(
                pairs.passed & unreached,
                signature([_key(spec) for spec in specs]),
                lambda deployment, site: Rejection(LATENCY, _line(specs[deployment], sites[site])),
            )
        )

    def admits(self, placement: Placement, assignment: Assignment) -> bool:
        return math.isfinite(placement.latency(assignment))

    def program(self, program: Program, placement: Placement, columns: Columns) -> None:
        """Each region's traffic shares ``a`` (in [0, 1], one per option in reach) add up to
        ``placed``, and go only to used options; their cost is the latency term of the objective,
        exact at the optimum (each region then goes to its nearest used option)."""
        for region, weight in enumerate(placement.weights):
            shares = []
            for reachable in np.flatnonzero(np.isfinite(placement.reach[region])):
                trip = float(placement.reach[region, reachable])
                cost = placement.latency_weight * float(weight) * trip
                a = program.column(cost, 0, 1, integral=False)
                program.row([(a, 1.0), (columns.used[reachable], -1.0)], -np.inf, 0.0)
                shares.append((a, 1.0))
            program.row([*shares, (columns.placed, -1.0)], 0.0, 0.0)

    def unplaced(self, fallen: Fallen) -> str:
        scope, examples = fallen.scope, fallen.examples
        return f"no available site{scope} reaches any traffic region in time ({examples})"

    def shortfall(self, usable: Usable) -> str | None:
        placement = usable.placement
        slo = placement.spec.latency_slo_ms
        for region, source in enumerate(placement.spec.traffic):
            if not np.isfinite(placement.reach[region, usable.options]).any():
                within = (
                    f"within latencySLOms {slo}"
                    if slo is not None
                    else "(none lists it in latencyMs)"
                )
                return (
                    f"no {usable.qualifier}{usable.scope} reaches {source.region} {within}"
                    f"{_full_or_nearest(usable, region)}"
                )
        return None


def _key(spec: ModelDeploymentSpec) -> Hashable:
    """What the latency line of a site depends on, besides the site."""
    regions = tuple(source.region for source in spec.traffic[:4])
    return regions, len(spec.traffic) > 4, spec.latency_slo_ms


def _line(spec: ModelDeploymentSpec, site: Site) -> str:
    described = []
    for source in spec.traffic[:4]:
        ms = site.spec.latency_ms.get(source.region)
        described.append(f"{source.region} {'unreachable' if ms is None else f'{ms} ms'}")
    if len(spec.traffic) > 4:
        described.append("...")
    if spec.latency_slo_ms is None:
        return f"latency: reaches no traffic region ({', '.join(described)})"
    return (
        f"latency: no traffic region within latencySLOms {spec.latency_slo_ms} "
        f"({', '.join(described)})"
    )


def _full_or_nearest(usable: Usable, region: int) -> str:
    """The sites in reach of ``region`` that are full or, if none is, the nearest usable one."""
    placement, sites = usable.placement, usable.sites
    in_reach = np.flatnonzero(np.isfinite(placement.reach[region]))
    full = sorted(
        {
            (float(placement.reach[region, option]), sites[placement.site[option]].name)
            for option in in_reach
        }
    )
    if full:
        described = ", ".join(f"{site} at {ms:.0f} ms" for ms, site in full[:_EXAMPLES])
        return f" ({described}: no free {'cores' if placement.cpu_only else 'GPUs'})"
    name = placement.spec.traffic[region].region
    candidates = set(placement.site[usable.options].tolist())
    trips = [
        (site.spec.latency_ms[name], site.name)
        for number, site in enumerate(sites)
        if number in candidates and name in site.spec.latency_ms
    ]
    if not trips:
        return ""
    ms, nearest = min(trips)
    return f" (nearest: {nearest} at {ms} ms)"
