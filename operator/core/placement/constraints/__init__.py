"""The hard constraints, each defined once: its screen, its check of a placement, its explanations.

:data:`CONSTRAINTS` lists them in the order screening runs their checks (the first check a
(deployment, site) pair fails gives the site's rejection line) and explanations ask them (the
first constraint that names a problem gives the reason). Shared capacity (GPUs, cores, CPU-pool
memory) is not per deployment: the resource constraints screen whether one replica fits in a pool,
and the solvers count what all replicas take (``problem.Demand.room``).

Adding a hard constraint touches its own module, :data:`CONSTRAINTS` and its test. CPU
capacity (:mod:`.cpu`) shows every facet:

1. ``checks``: ``Check("CPU pool")``, ``Check("cpus")``, ``Check("memory")``; their names start
   the sites' rejection lines, and their place in :data:`CONSTRAINTS` orders them.
2. ``screen(pairs)``: marks in ``pairs.fits`` the pools a replica fits in (deployments x pools, in
   one numpy expression) and, with ``pairs.rejections.by_pair``, rejects the pairs still passing
   whose site has no such pool, with the first check that site fails and one line for people.
   Later constraints and the solvers only see what passed.
3. ``admits(placement, assignment)``: the check of one placement, for a constraint over the
   placement as a whole (CPU capacity has none: shared capacity is counted by the solvers).
4. ``unplaced(fallen)``: the reason of a deployment every site of which fell at one of its checks;
   ``shortfall(usable)`` (coverage, minSites and budget have one) what the sites with room cannot
   do together.

A check of one (deployment, site) pair needs nothing else: the solvers only ever see the options
that passed screening, and ``Demand.admits`` (the solvers' final check, and whether a running
placement may be kept) asks every constraint. A constraint over several pools of one placement
(like budget or spread) is also written into the solvers' vectorised forms: its module offers the
helper they call (:func:`.budget.within` in the candidate table, :func:`.budget.limit` for the
MILP's row, :func:`.spread.rows_admit`), and :mod:`..search` and :mod:`..optimal` model it. Shared
capacity (GPUs, cores, CPU-pool memory) stays in ``problem.Demand.room`` and the solvers.
"""

from soberana.operator.core.placement.constraints.base import (
    PASSED,
    Assignment,
    Check,
    Constraint,
    Fallen,
    Pairs,
    Placement,
    Rejection,
    Rejections,
    Usable,
)
from soberana.operator.core.placement.constraints.budget import Budget
from soberana.operator.core.placement.constraints.cpu import Cpus
from soberana.operator.core.placement.constraints.gpu import Gpus
from soberana.operator.core.placement.constraints.health import Health
from soberana.operator.core.placement.constraints.latency import Latency
from soberana.operator.core.placement.constraints.residency import Residency
from soberana.operator.core.placement.constraints.selector import Selector
from soberana.operator.core.placement.constraints.spread import Spread

CONSTRAINTS: tuple[Constraint, ...] = (
    Residency(),
    Selector(),
    Health(),
    Gpus(),
    Cpus(),
    Latency(),
    Spread(),
    Budget(),
)
"""Every hard constraint, in screening and explanation order."""

CHECKS: dict[Check, Constraint] = {
    check: constraint for constraint in CONSTRAINTS for check in constraint.checks
}
"""Every screening check, in the order the checks run, with its constraint."""

ORDER: dict[Check, int] = {check: number for number, check in enumerate(CHECKS)}
"""Each check's place in :data:`CHECKS`."""

__all__ = [
    "CHECKS",
    "CONSTRAINTS",
    "ORDER",
    "PASSED",
    "Assignment",
    "Check",
    "Constraint",
    "Fallen",
    "Pairs",
    "Placement",
    "Rejection",
    "Rejections",
    "Usable",
]
