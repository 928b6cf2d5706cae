"""Health and cordons: nothing goes to a site that is not Ready; a cordoned site takes nothing new,
and replicas running there stay only as they are (its pools are *keep-only* options, usable only by
keeping the running placement whole)."""

from __future__ import annotations

import numpy as np

from soberana.operator.core.placement.constraints.base import (
    Assignment,
    Check,
    Constraint,
    Fallen,
    Pairs,
    Placement,
    Rejection,
    Rejections,
)

UNHEALTHY = Check("unhealthy")
CORDONED = Check("cordoned")


def cordoned(rejections: Rejections) -> int:
    """The index of the cordoned rejection in ``rejections``."""
    return rejections.of(
        CORDONED, lambda: Rejection(CORDONED, "cordoned: the site takes nothing new")
    )


class Health(Constraint):
    checks = (UNHEALTHY, CORDONED)

    def screen(self, pairs: Pairs) -> None:
        unhealthy = np.array([not site.healthy for site in pairs.sites], dtype=np.bool_)
        down = pairs.rejections.of(
            UNHEALTHY, lambda: Rejection(UNHEALTHY, "unhealthy: the site is not Ready")
        )
        pairs.rejected[pairs.passed & unhealthy] = down
        cordons = np.array([site.spec.cordoned for site in pairs.sites], dtype=np.bool_)
        pairs.rejected[pairs.passed & cordons & ~pairs.runs_there] = cordoned(pairs.rejections)

    def admits(self, placement: Placement, assignment: Assignment) -> bool:
        options = [option for option, _ in assignment]
        return not placement.keep_only[options].any() or assignment == placement.current

    def unplaced(self, fallen: Fallen) -> str:
        down = ", ".join(
            f"{site.name} {rejection.check.name}"
            for site, rejection in zip(fallen.sites, fallen.rejections, strict=True)
            if rejection.check in self.checks
        )
        return f"every matching site{fallen.scope} is unhealthy or cordoned ({down})"
