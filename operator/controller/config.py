"""Settings of a running operator, with the defaults ``soberana operator`` uses."""

from __future__ import annotations

from dataclasses import dataclass, field

from soberana.operator.core.placement import Solver
from soberana.operator.core.placement.options import PlacementOptions


@dataclass(frozen=True)
class OperatorConfig:
    """How the operator reconciles.

    ``debounce_s``: after a change, wait this long for more changes before re-planning, so that a
    burst (``kubectl apply -f dir/``, an operator restart) costs one plan, not one per object.
    ``solver``: ``fast`` (heuristic) or ``optimal`` (MILP).
    ``write_concurrency``: status and finalizer patches in flight at once.
    ``deploy``: apply Serve configs to sites and watch them; False places only (a dry run that
    still writes statuses), and every site counts as healthy.
    ``probe_interval_s``: how often each site is looked at.
    ``unhealthy_after_s``: how long a site may stay unreachable before its deployments move.
    ``secrets_namespace``: where the Secrets that sites refer to live (the operator's namespace).
    """

    solver: Solver = "fast"
    debounce_s: float = 0.5
    write_concurrency: int = 16
    deploy: bool = True
    probe_interval_s: float = 5.0
    unhealthy_after_s: float = 30.0
    secrets_namespace: str = "default"
    placement: PlacementOptions = field(default_factory=PlacementOptions)

    def __post_init__(self) -> None:
        if self.solver not in ("fast", "optimal"):
            raise ValueError(f"solver must be fast or optimal, not {self.solver!r}")
        if self.debounce_s < 0 or self.write_concurrency < 1:
            raise ValueError("debounce_s >= 0 and write_concurrency >= 1")
        if self.probe_interval_s <= 0 or self.unhealthy_after_s < 0:
            raise ValueError("probe_interval_s > 0 and unhealthy_after_s >= 0")
