"""Tunable knobs of the placement engine, with the defaults the operator uses."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PlacementOptions:
    """How placement trades stability, normalisation and solver effort.

    ``move_threshold``: a running deployment whose placement is still compliant moves only when the
    best alternative's objective is lower by more than this fraction of the current one (0.1: more
    than 10 % better). 0 moves on any strict gain.

    ``latency_floor_ms`` and ``cost_floor``: the smallest best-possible latency and cost used to
    normalise objectives (see :mod:`soberana.operator.core.placement.problem`), so that a 0 ms edge
    site or a free on-premises GPU does not make every other option infinitely worse.

    ``time_limit_s`` and ``mip_rel_gap``: limits for the ``optimal`` solver's MILP. When the time
    limit stops it, the result is the better of what it found and the ``fast`` solution, and may
    then differ between runs.
    """

    move_threshold: float = 0.10
    latency_floor_ms: float = 5.0
    cost_floor: float = 0.01
    time_limit_s: float | None = 120.0
    mip_rel_gap: float = 1e-4

    def __post_init__(self) -> None:
        if not 0 <= self.move_threshold < 1:
            raise ValueError("move_threshold must be in [0, 1)")
        if self.latency_floor_ms <= 0 or self.cost_floor <= 0:
            raise ValueError("latency_floor_ms and cost_floor must be positive")
