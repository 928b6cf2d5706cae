"""CPU capacity: a CPU-only replica (``resources.gpus: 0``) needs the site's CPU pool
(``spec.cpus``) with at least ``resources.cpus`` cores and ``resources.memoryGiB`` of memory.
Screened pool by pool; the cores and memory themselves are shared capacity, which the solvers
count (``Demand.room``: memory in steps of 1/``MEMORY_STEPS`` GiB)."""

from __future__ import annotations

import numpy as np

from soberana.operator.core.api import InferenceSiteSpec, ModelDeploymentSpec
from soberana.operator.core.placement.constraints.base import (
    Check,
    Constraint,
    Fallen,
    Pairs,
    Placement,
    Rejection,
    signature,
)
from soberana.operator.core.placement.constraints.gpu import counted
from soberana.operator.core.placement.pools import gib, replica_memory, replica_units

CPU_POOL = Check("CPU pool")
CPU_COUNT = Check("cpus")
CPU_MEMORY = Check("memory")


class Cpus(Constraint):
    checks = (CPU_POOL, CPU_COUNT, CPU_MEMORY)

    def screen(self, pairs: Pairs) -> None:
        specs, pools = pairs.specs, pairs.pools
        cpu = np.array([spec.resources.cpu_only for spec in specs], dtype=np.bool_)
        cores = np.array([replica_units(spec) for spec in specs], dtype=np.int64)
        memory = np.array([replica_memory(spec) for spec in specs], dtype=np.int64)
        fits = (
            cpu[:, None]
            & np.array([pool.cpu for pool in pools], dtype=np.bool_)
            & (np.array([pool.gpus for pool in pools], dtype=np.int64) >= cores[:, None])
            & (np.array([pool.memory_steps for pool in pools], dtype=np.int64) >= memory[:, None])
        )
        pairs.fits |= fits
        pairs.reject(
            pairs.rejections.by_pair(
                pairs.passed & cpu[:, None] & ~pairs.any_by_site(fits),
                signature(list(zip(cores.tolist(), memory.tolist(), strict=True))),
                lambda deployment, site: _rejection(specs[deployment], pairs.sites[site].spec),
            )
        )

    def unplaced(self, fallen: Fallen) -> str:
        placement, scope, examples = fallen.placement, fallen.scope, fallen.examples
        if fallen.check == CPU_POOL:
            return (
                f"no available site{scope} has a CPU pool (spec.cpus) for CPU-only replicas "
                f"({examples})"
            )
        if fallen.check == CPU_COUNT:
            return (
                f"no available site{scope} has the {placement.gpus} cores a replica needs in its "
                f"CPU pool ({examples})"
            )
        return (
            f"no available site{scope} has the {gib(placement.memory)} GiB a replica needs "
            f"in its CPU pool ({examples})"
        )


def _rejection(spec: ModelDeploymentSpec, site: InferenceSiteSpec) -> Rejection:
    """The first of the checks that a site fails for a CPU-only replica."""
    if site.cpus is None:
        return Rejection(
            CPU_POOL, "CPU pool: the site has no spec.cpus; a CPU-only replica needs one"
        )
    cpus = replica_units(spec)
    if site.cpus.count < cpus:
        return Rejection(
            CPU_COUNT, f"cpus: needs {cpus} per replica, the site has {site.cpus.count}"
        )
    return Rejection(
        CPU_MEMORY,
        f"memory: needs {spec.resources.memory_gib or 0:g} GiB per replica, the site's CPU "
        f"pool has {site.cpus.memory_gib:g} GiB",
    )


def capacity_line(placement: Placement, cores: tuple[int, int], memory: tuple[int, int]) -> str:
    """Why a CPU pool, with (free, total) cores and memory steps, has no room for a replica."""
    free, total = cores
    if free < placement.gpus:
        return f"cpus: needs {placement.gpus}, {free} of {total} free"
    free, total = memory
    return f"memory: needs {gib(placement.memory)} GiB, {gib(free)} of {gib(total)} GiB free"


def room_line(placement: Placement, total: int, details: str, scope: str) -> str:
    """Why the sites' free cores and memory hold only ``total`` of the replicas (``details``: by
    site)."""
    return (
        f"needs {counted(placement.replicas, 'replica')} x {counted(placement.gpus, 'core')} "
        f"and {gib(placement.memory)} GiB{scope}, but eligible sites have room for {total} "
        f"({details})"
    )
