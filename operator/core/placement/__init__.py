"""The placement engine: where every model runs, why not elsewhere, deterministic and pure.

Call :func:`place` with a :class:`World` (and what runs now); it returns a :class:`Plan`.
"""

from soberana.operator.core.placement.engine import DEFAULT_OPTIONS, Solver, place
from soberana.operator.core.placement.options import PlacementOptions
from soberana.operator.core.placement.plan import (
    Change,
    DeploymentPlan,
    Plan,
    SitePlacement,
    SiteUsage,
)
from soberana.operator.core.placement.world import (
    Allocation,
    Current,
    Deployment,
    Site,
    World,
    current_allocations,
)

__all__ = [
    "DEFAULT_OPTIONS",
    "Allocation",
    "Change",
    "Current",
    "Deployment",
    "DeploymentPlan",
    "PlacementOptions",
    "Plan",
    "Site",
    "SitePlacement",
    "SiteUsage",
    "Solver",
    "World",
    "current_allocations",
    "place",
]
