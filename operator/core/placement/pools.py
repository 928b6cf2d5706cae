"""Pools, the capacity deployments share: a site's GPUs of one model, or its CPU cores and memory.

A CPU pool's memory is counted in steps of 1/``MEMORY_STEPS`` GiB: a replica's memory rounded up,
the pool's down.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from soberana.operator.core.api import CPU_POOL, ModelDeploymentSpec
from soberana.operator.core.placement.world import Site

MEMORY_STEPS = 16
"""Steps per GiB in which CPU pools count memory (64 MiB each)."""

ROUNDING = 1e-9
"""Absolute slack when GiB are rounded to memory steps, so that float noise never costs a step."""


def replica_units(spec: ModelDeploymentSpec) -> int:
    """What one replica takes from its pool: GPUs, or cores for a CPU-only replica."""
    resources = spec.resources
    return resources.gpus if resources.gpus else math.ceil(resources.cpus)


def replica_memory(spec: ModelDeploymentSpec) -> int:
    """The memory steps one replica takes from a CPU pool (0 for a GPU replica: not counted)."""
    resources = spec.resources
    if resources.gpus or resources.memory_gib is None:
        return 0
    return math.ceil(resources.memory_gib * MEMORY_STEPS - ROUNDING)


@dataclass(frozen=True)
class Pool:
    """The GPUs of one model at one site, or its CPU cores, shared by every deployment."""

    site: str
    gpu_model: str  # CPU_POOL for the CPU pool
    gpus: int  # GPUs, or the CPU pool's cores
    memory_gib: float  # per GPU, or the CPU pool's memory in total
    hourly_cost: float  # per GPU, or per core

    @property
    def cpu(self) -> bool:
        return self.gpu_model == CPU_POOL

    @property
    def memory_steps(self) -> int:
        """The CPU pool's memory in steps of 1/MEMORY_STEPS GiB (0 for a GPU pool)."""
        return math.floor(self.memory_gib * MEMORY_STEPS + ROUNDING) if self.cpu else 0


def site_pools(site: Site) -> list[Pool]:
    """A site's pools: its GPU pools by model, then its CPU pool."""
    pools = [
        Pool(
            site=site.name,
            gpu_model=gpu.model,
            gpus=gpu.count,
            memory_gib=gpu.memory_gib,
            hourly_cost=gpu.hourly_cost,
        )
        for gpu in sorted(site.spec.gpus, key=lambda gpu: gpu.model)
    ]
    if site.spec.cpus is not None:
        cpus = site.spec.cpus
        pools.append(Pool(site.name, CPU_POOL, cpus.count, cpus.memory_gib, cpus.hourly_cost))
    return pools


def gib(steps: int) -> str:
    """Memory steps in GiB, as people write them: 8, 0.5."""
    return f"{steps / MEMORY_STEPS:g}"
