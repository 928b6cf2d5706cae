"""The placement engine's output: where each deployment runs, why not elsewhere, and site usage."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from soberana.operator.core.placement.world import Allocation

_COST_DECIMALS = 6


class Change(StrEnum):
    """How a deployment's placement relates to the one it had (for Events)."""

    PLACED = "placed"  # placed now, nothing ran before
    MOVED = "moved"  # placed now, differently from before
    UNCHANGED = "unchanged"  # placed now, exactly as before
    UNPLACED = "unplaced"  # not placed now


@dataclass(frozen=True)
class SitePlacement:
    """One site's share of a deployment."""

    site: str
    gpu_model: str  # CPU_POOL for CPU-only replicas
    replicas: int
    hourly_cost: float
    regions: tuple[str, ...]  # traffic regions for which this is the nearest chosen site


@dataclass(frozen=True)
class DeploymentPlan:
    """Where one deployment runs, or one reason why it cannot, and why other sites were not used."""

    key: str
    placements: tuple[SitePlacement, ...]
    reason: str | None  # set exactly when the deployment is not placed
    rejected: Mapping[str, str]  # site -> one line saying why it was not used
    change: Change

    @property
    def placed(self) -> bool:
        return bool(self.placements)

    @property
    def hourly_cost(self) -> float:
        return sum((placement.hourly_cost for placement in self.placements), 0.0)

    @property
    def allocations(self) -> tuple[Allocation, ...]:
        """The placement in the form :func:`place` accepts as ``current``."""
        return tuple(
            Allocation(site=entry.site, gpu_model=entry.gpu_model, replicas=entry.replicas)
            for entry in self.placements
        )


@dataclass(frozen=True)
class SiteUsage:
    """What a plan allocates at one site: GPUs, and cores and memory of its CPU pool."""

    gpus_allocated: int
    gpus_total: int
    hourly_cost: float
    deployments: int
    cpus_allocated: int = 0
    cpus_total: int = 0
    memory_gib_allocated: float = 0.0  # of the CPU pool, by CPU-only replicas
    memory_gib_total: float = 0.0  # of the CPU pool


@dataclass(frozen=True)
class Plan:
    """A placement decision for a whole world.

    ``objective`` is the sum, over placed deployments, of their normalised objectives plus the
    stability penalty of each running deployment that moved; lower is better, and it is comparable
    between solvers when the same deployments are placed.
    """

    deployments: Mapping[str, DeploymentPlan]
    sites: Mapping[str, SiteUsage]
    solver: str
    objective: float
    warnings: tuple[str, ...] = ()

    @property
    def current(self) -> dict[str, tuple[Allocation, ...]]:
        """The plan's placements in the form :func:`place` accepts as ``current``."""
        return {key: plan.allocations for key, plan in self.deployments.items() if plan.placed}

    def to_json(self) -> dict[str, Any]:
        """The documented JSON shape of ``soberana plan -o json``."""
        return {
            "deployments": {
                key: {
                    "placed": plan.placed,
                    "placements": [
                        {
                            "site": entry.site,
                            "pool": entry.gpu_model,
                            "replicas": entry.replicas,
                            "hourlyCost": round(entry.hourly_cost, _COST_DECIMALS),
                            "regions": list(entry.regions),
                        }
                        for entry in plan.placements
                    ],
                    "hourlyCost": round(plan.hourly_cost, _COST_DECIMALS),
                    "reason": plan.reason,
                    "rejected": dict(plan.rejected),
                }
                for key, plan in self.deployments.items()
            },
            "sites": {
                name: {
                    "gpusAllocated": usage.gpus_allocated,
                    "gpusTotal": usage.gpus_total,
                    "cpusAllocated": usage.cpus_allocated,
                    "cpusTotal": usage.cpus_total,
                    "memoryGiBAllocated": round(usage.memory_gib_allocated, _COST_DECIMALS),
                    "memoryGiBTotal": usage.memory_gib_total,
                }
                for name, usage in self.sites.items()
            },
        }
