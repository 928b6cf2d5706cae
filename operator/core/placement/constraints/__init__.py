"""The hard constraints, each defined once: its screen, its check of a placement, its explanations.

:data:`CONSTRAINTS` lists them in the order screening runs their checks (the first check a
(deployment, site) pair fails gives the site's rejection line) and the explanations ask them (the
first constraint that names a problem gives the reason).

Adding a hard constraint touches its own module, :data:`CONSTRAINTS` (and :data:`PROGRAMS` if it
has MILP rows) and its tests (with a case in ``tests/unit/test_placement_constraints.py`` for each
new check). CPU capacity (:mod:`.cpu`) shows the facets of a constraint on one (deployment, site)
pair:

1. ``checks``: ``Check("CPU pool")``, ``Check("cpus")``, ``Check("memory")``; their names start
   the sites' rejection lines, and their place in :data:`CONSTRAINTS` orders them.
2. ``screen(pairs)``: marks in ``pairs.fits`` the pools a replica fits in (deployments x pools, in
   one numpy expression) and, with ``pairs.rejections.by_pair``, rejects the pairs still passing
   whose site has no such pool, with the first check that site fails and one line for people.
   Later constraints and the solvers only ever see the options that passed.
3. ``unplaced(fallen)``: the reason of a deployment every site of which fell at one of its checks.

That is all such a constraint needs. A constraint over a whole placement (several pools of one
deployment: :mod:`.spread`, :mod:`.latency` coverage, :mod:`.budget`) also has ``admits``
(``Demand.admits``, the solvers' final check and whether a running placement may be kept, asks
every constraint), ``program`` (its rows in the ``optimal`` solver's MILP) and ``shortfall`` (what
the sites with room cannot do together). The ``fast`` solver's vectorised candidate table and its
local search call its module's helpers (:func:`.budget.within`, :func:`.budget.overrun`,
:func:`.spread.rows_admit`), so a new one of these also touches ``candidates.py`` and
``search.py``. Shared capacity (GPUs, cores, CPU-pool memory, summed over every deployment) is not
a per-deployment constraint: the resource constraints screen whether one replica fits in a pool,
and ``problem.Demand.room`` and the solvers count what all replicas take.
"""

from soberana.operator.core.placement.constraints.base import (
    PASSED,
    Assignment,
    Check,
    Columns,
    Constraint,
    Fallen,
    Pairs,
    Placement,
    Program,
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

_SPREAD, _LATENCY, _BUDGET = Spread(), Latency(), Budget()

CONSTRAINTS: tuple[Constraint, ...] = (
    Residency(),
    Selector(),
    Health(),
    Gpus(),
    Cpus(),
    _LATENCY,
    _SPREAD,
    _BUDGET,
)
"""Every hard constraint, in screening and explanation order."""

PROGRAMS: tuple[Constraint, ...] = (_SPREAD, _LATENCY, _BUDGET)
"""The constraints with rows in the MILP, in the order the rows are written (another order can
make HiGHS pick another of several equally good solutions)."""

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
    "PROGRAMS",
    "Assignment",
    "Check",
    "Columns",
    "Constraint",
    "Fallen",
    "Pairs",
    "Placement",
    "Program",
    "Rejection",
    "Rejections",
    "Usable",
]
