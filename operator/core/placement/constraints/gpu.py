"""GPUs: a GPU replica (``resources.gpus`` of one model) needs a GPU pool of a model in
``resources.gpuModels`` (any, when empty), with ``resources.gpuMemoryGiB`` per GPU and at least
``resources.gpus`` GPUs. Screened pool by pool; the GPUs themselves are shared capacity, which the
solvers count (``Demand.room``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from soberana.operator.core.api import GpuPool, ModelDeploymentSpec
from soberana.operator.core.placement.constraints.base import (
    Check,
    Constraint,
    Fallen,
    Pairs,
    Placement,
    Rejection,
    signature,
)

GPU_MODEL = Check("GPU model")
GPU_MEMORY = Check("GPU memory")
GPU_COUNT = Check("GPU count")


class Gpus(Constraint):
    checks = (GPU_MODEL, GPU_MEMORY, GPU_COUNT)

    def screen(self, pairs: Pairs) -> None:
        specs, pools = pairs.specs, pairs.pools
        gpu = np.array([not spec.resources.cpu_only for spec in specs], dtype=np.bool_)
        models = {model: index for index, model in enumerate(sorted({p.gpu_model for p in pools}))}
        wanted = np.repeat(gpu[:, None], len(models), axis=1)
        for deployment, spec in enumerate(specs):
            if spec.resources.gpu_models:
                wanted[deployment] = False
                wanted[
                    deployment, [models[m] for m in spec.resources.gpu_models if m in models]
                ] = True
        memory = np.array([spec.resources.gpu_memory_gib or 0 for spec in specs], dtype=np.int64)
        count = np.array([spec.resources.gpus for spec in specs], dtype=np.int64)
        per_gpu = np.array([0 if pool.cpu else pool.memory_gib for pool in pools], dtype=np.float64)
        fits = (
            wanted[:, [models[pool.gpu_model] for pool in pools]]
            & ~np.array([pool.cpu for pool in pools], dtype=np.bool_)
            & (per_gpu >= memory[:, None])
            & (np.array([pool.gpus for pool in pools], dtype=np.int64) >= count[:, None])
        )
        pairs.fits |= fits
        needs = signature(
            [
                (
                    tuple(spec.resources.gpu_models),
                    spec.resources.gpu_memory_gib,
                    spec.resources.gpus,
                )
                for spec in specs
            ]
        )
        pairs.reject(
            pairs.rejections.by_pair(
                pairs.passed & gpu[:, None] & ~pairs.any_by_site(fits),
                needs,
                lambda deployment, site: _rejection(specs[deployment], pairs.sites[site].spec.gpus),
            )
        )

    def unplaced(self, fallen: Fallen) -> str:
        spec, scope, examples = fallen.placement.spec, fallen.scope, fallen.examples
        models = _models(fallen.placement)
        if fallen.check == GPU_MODEL:
            wanted = ", ".join(spec.resources.gpu_models)
            return f"no available site{scope} has GPU model {wanted} ({examples})"
        if fallen.check == GPU_MEMORY:
            return (
                f"no available site{scope} has {models} GPUs with "
                f"{spec.resources.gpu_memory_gib} GiB ({examples})"
            )
        return (
            f"no available site{scope} has {spec.resources.gpus} {models} GPUs "
            f"in one pool for a replica ({examples})"
        )


def _rejection(spec: ModelDeploymentSpec, pools: Sequence[GpuPool]) -> Rejection:
    """The first of the checks that a site with no pool a GPU replica fits in fails."""
    wanted = spec.resources.gpu_models
    by_model = [pool for pool in pools if not wanted or pool.model in wanted]
    if not pools:
        return Rejection(
            GPU_MODEL,
            "GPU model: the site has no GPUs, only a CPU pool (a CPU-only replica has "
            "resources.gpus: 0)",
        )
    if not by_model:
        has = ", ".join(pool.model for pool in pools)
        return Rejection(
            GPU_MODEL, f"GPU model: has {has}; resources.gpuModels allows {', '.join(wanted)}"
        )
    memory = spec.resources.gpu_memory_gib
    by_memory = [pool for pool in by_model if memory is None or pool.memory_gib >= memory]
    if not by_memory:
        has = ", ".join(f"{pool.model} {pool.memory_gib} GiB" for pool in by_model)
        return Rejection(GPU_MEMORY, f"GPU memory: has {has}; a replica needs {memory} GiB per GPU")
    gpus = spec.resources.gpus
    has = ", ".join(f"{pool.count} {pool.model}" for pool in by_memory)
    return Rejection(GPU_COUNT, f"GPU count: has {has}; a replica needs {gpus} GPUs of one model")


def _models(placement: Placement) -> str:
    return "/".join(placement.spec.resources.gpu_models) or "any-model"


def capacity_line(placement: Placement, pools: Sequence[tuple[str, int, int]]) -> str:
    """Why a site's GPU pools, (model, free, total) each, have no room for a replica."""
    described = " and ".join(f"{free} of {total} {model}" for model, free, total in pools)
    return f"capacity: {described} GPUs free; a replica needs {placement.gpus}"


def room_line(placement: Placement, total: int, details: str, scope: str) -> str:
    """Why the sites' free GPUs hold only ``total`` of the replicas (``details``: by site)."""
    return (
        f"needs {counted(placement.replicas, 'replica')} x "
        f"{counted(placement.gpus, _models(placement) + ' GPU')}{scope}, but eligible sites have "
        f"room for {total} ({details})"
    )


def counted(count: int, noun: str) -> str:
    """``count`` and ``noun``, plural unless one."""
    return f"{count} {noun}{'' if count == 1 else 's'}"
