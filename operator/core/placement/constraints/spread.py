"""Spread: a deployment is placed whole (all its reserved replicas, at least one in each pool it
uses), on at most one pool per site and on at least ``placement.minSites`` distinct sites."""

from __future__ import annotations

import numpy as np

from soberana.operator.core.placement.arrays import BoolArray, IntArray
from soberana.operator.core.placement.constraints.base import (
    Assignment,
    Columns,
    Constraint,
    Placement,
    Program,
    Usable,
)


class Spread(Constraint):
    def admits(self, placement: Placement, assignment: Assignment) -> bool:
        options = [option for option, _ in assignment]
        sites = placement.site[options]
        return (
            sum(replicas for _, replicas in assignment) == placement.replicas
            and all(replicas >= 1 for _, replicas in assignment)
            and len(set(sites.tolist())) == len(options) >= placement.min_sites
        )

    def program(self, program: Program, placement: Placement, columns: Columns) -> None:
        for site in np.unique(placement.site):
            same_site = np.flatnonzero(placement.site == site)
            if same_site.size > 1:
                program.row([(columns.used[o], 1.0) for o in same_site], -np.inf, 1.0)
        whole = [(x, 1.0) for x in columns.replicas]
        program.row([*whole, (columns.placed, -float(placement.replicas))], 0.0, 0.0)
        if placement.min_sites > 1:
            spread = [(z, 1.0) for z in columns.used]
            program.row([*spread, (columns.placed, -float(placement.min_sites))], 0, np.inf)

    def shortfall(self, usable: Usable) -> str | None:
        placement = usable.placement
        sites = [
            usable.sites[site].name for site in np.unique(placement.site[usable.options]).tolist()
        ]
        if len(sites) >= placement.min_sites:
            return None
        return (
            f"placement.minSites is {placement.min_sites} but only {len(sites)} "
            f"{usable.qualifier}s{usable.scope} ({', '.join(sites) or 'none'})"
        )


def rows_admit(left_over: IntArray, sites: IntArray, min_sites: IntArray) -> BoolArray:
    """:meth:`Spread.admits` for rows of the candidate table, whose pools are at distinct sites
    and hold at least one replica each by construction: no replica ``left_over`` and at least
    ``min_sites`` ``sites``."""
    admitted: BoolArray = (left_over == 0) & (sites >= min_sites)
    return admitted
