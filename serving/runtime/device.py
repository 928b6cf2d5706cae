"""Where a replica computes: the GPU Ray assigned to it when there is one, the CPU otherwise."""

from __future__ import annotations

import torch


def select_device() -> torch.device:
    """The replica's GPU when CUDA sees one (Ray exposes only the replica's own), else the CPU."""
    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")


def device_fault(device: torch.device) -> str | None:
    """Why ``device`` can no longer compute, or None when it works.

    A CUDA error such as an illegal memory access breaks the replica's CUDA context for good;
    synchronising surfaces it. The CPU has no such state.
    """
    if device.type != "cuda":
        return None
    try:
        torch.cuda.synchronize(device)
    except RuntimeError as error:
        return f"{device} failed: {error}"
    return None


def check_device(device: torch.device) -> None:
    """Raise RuntimeError when ``device`` can no longer compute (see :func:`device_fault`)."""
    fault = device_fault(device)
    if fault is not None:
        raise RuntimeError(fault)
