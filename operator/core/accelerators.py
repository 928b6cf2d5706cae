"""Ray's name for a site's GPU model: what ``accelerator_type`` a replica placed on it asks for.

``spec.gpus[].model`` is free text (``A100-80GB``, ``NVIDIA L4``, ``h100``). Ray labels a node
with ``accelerator_type:<name>`` for the GPU it detects, from a fixed list
(``ray.util.accelerators``); a replica that asks for that accelerator type only starts on such a
node. :func:`ray_accelerator_type` maps a model to that name, or None when Ray has no name for it
(the caller reports it; nothing is silently dropped).
"""

from __future__ import annotations

import re

RAY_ACCELERATOR_TYPES: frozenset[str] = frozenset(
    {
        "V100", "P100", "T4", "P4", "K80", "A10G", "L4", "L40S", "A100", "H100", "H200",
        "H20", "B200", "B300", "GB200", "GB300", "RTX-PRO-6000", "A100-40G", "A100-80G",
        "Intel-GPU-Max-1550", "Intel-GPU-Max-1100", "Intel-GAUDI",
        "AMD-Instinct-MI100", "AMD-Instinct-MI250X", "AMD-Instinct-MI250X-MI250",
        "AMD-Instinct-MI210", "AMD-Instinct-MI300A", "AMD-Instinct-MI300X-OAM",
        "AMD-Instinct-MI300X-HF", "AMD-Instinct-MI308X", "AMD-Instinct-MI325X-OAM",
        "AMD-Instinct-MI350X-OAM", "AMD-Instinct-MI355X-OAM",
        "TPU-V2", "TPU-V3", "TPU-V4", "TPU-V5P", "TPU-V5LITEPOD", "TPU-V6E", "TPU-V7X",
    }
)  # fmt: skip
"""The GPU accelerator names of ``ray.util.accelerators`` in Ray 2.60.0."""

# names sites use for the same GPU, after upper-casing and dropping vendor words and sizes
_ALIASES: dict[str, str] = {
    "A10": "A10G",
    "L40": "L40S",
    "RTXPRO6000": "RTX-PRO-6000",
    "MI100": "AMD-Instinct-MI100",
    "MI210": "AMD-Instinct-MI210",
    "MI250": "AMD-Instinct-MI250X-MI250",
    "MI250X": "AMD-Instinct-MI250X",
    "MI300A": "AMD-Instinct-MI300A",
    "MI300X": "AMD-Instinct-MI300X-OAM",
    "MI308X": "AMD-Instinct-MI308X",
    "MI325X": "AMD-Instinct-MI325X-OAM",
    "MI350X": "AMD-Instinct-MI350X-OAM",
    "MI355X": "AMD-Instinct-MI355X-OAM",
    "GAUDI": "Intel-GAUDI",
}
_BY_UPPER = {name.upper(): name for name in RAY_ACCELERATOR_TYPES}
_VENDOR = re.compile(r"^(NVIDIA|TESLA|AMD|INSTINCT|INTEL|GOOGLE|GEFORCE)[\s_-]+")
# memory sizes and board variants that Ray's auto-detected label leaves out
_SUFFIX = re.compile(r"[\s_-]*(\d+\s*G(I?B)?|PCIE|SXM\d?|NVL|HBM\d?E?)$")


def ray_accelerator_type(gpu_model: str) -> str | None:
    """Ray's accelerator name for ``gpu_model`` (``A100-80GB`` -> ``A100``), or None."""
    name = gpu_model.strip().upper()
    while (shorter := _VENDOR.sub("", name)) != name:
        name = shorter
    if name in _BY_UPPER and name not in ("A100-40G", "A100-80G"):
        return _BY_UPPER[name]
    while (shorter := _SUFFIX.sub("", name)) != name:
        name = shorter
    if name in _BY_UPPER:
        return _BY_UPPER[name]
    compact = re.sub(r"[\s_-]", "", name)
    if compact in _ALIASES:
        return _ALIASES[compact]
    return _BY_UPPER.get(compact)
