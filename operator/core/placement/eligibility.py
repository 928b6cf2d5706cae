"""Screening: the hard constraints that depend on one deployment and one site alone.

For each (deployment, site) pair the checks of :data:`~.constraints.CONSTRAINTS` run in order
(jurisdiction, selector, unhealthy, cordoned, GPU model, memory and count or, for a CPU-only
replica, CPU pool, cores and memory, latency, budget), and the first one that fails is the site's
rejection line for that deployment. A site that passes offers every pool a replica fits in: GPU
pools for GPU replicas, the site's CPU pool (named ``CPU_POOL``) for CPU-only ones. Constraints
that depend on several sites or deployments (shared capacity, coverage of every traffic region,
``minSites``, the budget of a whole placement) are the solvers' business.

:func:`screen` runs every check on every pair at once, as numpy arrays over deployments x sites
(and x pools, x traffic entries). Each distinct rejection line is made once and shared by every
pair it describes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from soberana.operator.core.placement.arrays import BoolArray, FloatArray, IntArray, RejectionArray
from soberana.operator.core.placement.constraints import CONSTRAINTS, Pairs, Rejection
from soberana.operator.core.placement.constraints.health import cordoned
from soberana.operator.core.placement.pools import Pool, site_pools
from soberana.operator.core.placement.world import Deployment, Site


@dataclass(frozen=True, eq=False)
class Screening:
    """The verdict on every (deployment, site) pair, in the order of the deployments and sites
    given to :func:`screen`.

    ``pools`` lists each site's pools (GPU pools by model, then the CPU pool), sites in order
    (``pool_site`` gives each one's site). ``rejected[d, s]`` indexes ``rejections`` (the distinct
    rejections), or is ``PASSED``; ``cordoned`` is the index of the cordoned rejection. ``fits[d,
    p]`` says whether pool p may hold replicas of deployment d: a replica fits in it and its site
    passes. Deployment d's traffic entries are rows ``traffic_start[d]`` to ``traffic_start[d +
    1]`` of ``trips``, the round-trip time from each site, ``inf`` when unreachable or beyond the
    latency SLO.
    """

    pools: tuple[Pool, ...]
    pool_site: IntArray
    rejections: tuple[Rejection, ...]
    rejected: RejectionArray
    cordoned: int
    fits: BoolArray
    traffic_start: IntArray
    trips: FloatArray


def screen(
    deployments: Sequence[Deployment], sites: Sequence[Site], runs_there: BoolArray
) -> Screening:
    """Run every check on every pair; ``runs_there`` (deployments x sites) marks the sites where a
    deployment has replicas running now."""
    by_site = [site_pools(site) for site in sites]
    pools = tuple(pool for pools_here in by_site for pool in pools_here)
    pool_site = np.repeat(np.arange(len(sites)), [len(pools_here) for pools_here in by_site])
    pairs = Pairs(
        specs=[deployment.spec for deployment in deployments],
        sites=sites,
        pools=pools,
        pool_site=pool_site,
        pool_start=np.searchsorted(pool_site, np.arange(len(sites))),
        runs_there=runs_there,
    )
    for constraint in CONSTRAINTS:
        constraint.screen(pairs)
    return Screening(
        pools=pools,
        pool_site=pool_site,
        rejections=tuple(pairs.rejections.made),
        rejected=pairs.rejected,
        cordoned=cordoned(pairs.rejections),
        fits=pairs.fits & pairs.passed[:, pool_site],
        traffic_start=pairs.traffic_start,
        trips=pairs.trips,
    )
