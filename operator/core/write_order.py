"""The order of ModelDeployment status writes: a crash between two never over-commits a pool.

Readers of ``status.placements`` (the router's table, ``kubectl get mdep``, dashboards, the next
operator after a restart) add the replicas each deployment claims on a site's GPU or CPU pool. A
new plan is within capacity and so was the old one, but a pass that dies half-way through its
writes can leave some statuses from each: a deployment granted a pool's GPUs before another
released them shows that pool over capacity until the next pass.

So every pass writes in two phases: first every status that only releases (shrinks, moves away,
unplaced), then the ones that grant. A deployment that both releases and grants (a move) whose
release another's grant waits for first gets an intermediate status that keeps only what both
plans share (the smaller count on every pool), and its final status in the second phase. At any
point, each pool's claimed total is at most the larger of its old and new totals.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Pool = tuple[str, str]
"""A site's pool: (site name, GPU model or the CPU pool's name)."""


def claims(placements: Iterable[Mapping[str, Any]]) -> dict[Pool, int]:
    """Replicas claimed on each pool by ``status.placements`` (JSON, as stored)."""
    claimed: dict[Pool, int] = {}
    for entry in placements:
        pool = (str(entry.get("site", "")), str(entry.get("gpuModel", "")))
        claimed[pool] = claimed.get(pool, 0) + int(entry.get("replicas", 0))
    return claimed


@dataclass
class WriteOrder:
    """Which statuses to write in which phase: ``keys`` of the deployments being written."""

    releases: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> intermediate
    first: list[str] = field(default_factory=list)  # final statuses that grant nothing
    then: list[str] = field(default_factory=list)  # final statuses that grant


def order_writes(
    previous: Mapping[str, Mapping[str, Any]], new: Mapping[str, Mapping[str, Any]]
) -> WriteOrder:
    """Phase the writes of ``new`` statuses over ``previous`` ones (both status JSON, by key)."""
    granted: dict[str, set[Pool]] = {}
    released: dict[str, set[Pool]] = {}
    for key, status in new.items():
        before = claims(previous.get(key, {}).get("placements", []))
        after = claims(status.get("placements", []))
        granted[key] = {pool for pool, count in after.items() if count > before.get(pool, 0)}
        released[key] = {pool for pool, count in before.items() if count > after.get(pool, 0)}
    granting: dict[Pool, set[str]] = {}
    for key, pools in granted.items():
        for pool in pools:
            granting.setdefault(pool, set()).add(key)
    order = WriteOrder()
    for key in new:
        if not granted[key]:
            order.first.append(key)
            continue
        order.then.append(key)
        if any(granting.get(pool, set()) - {key} for pool in released[key]):
            order.releases[key] = shared_only(previous.get(key, {}), new[key])
    return order


def shared_only(previous: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """``previous`` with its placements cut to what ``new`` keeps on each pool: a pure release."""
    keep = claims(new.get("placements", []))
    placements = []
    for entry in previous.get("placements", []):
        pool = (str(entry.get("site", "")), str(entry.get("gpuModel", "")))
        replicas = int(entry.get("replicas", 0))
        kept = min(replicas, keep.get(pool, 0))
        keep[pool] = keep.get(pool, 0) - kept
        if kept <= 0:
            continue
        cut = dict(entry)
        cut["replicas"] = kept
        if "readyReplicas" in cut:
            cut["readyReplicas"] = min(int(cut["readyReplicas"]), kept)
        if "hourlyCost" in cut and replicas:
            cut["hourlyCost"] = round(float(cut["hourlyCost"]) * kept / replicas, 6)
        placements.append(cut)
    intermediate = dict(previous)
    intermediate["placements"] = placements
    intermediate["hourlyCost"] = round(sum(float(p.get("hourlyCost", 0)) for p in placements), 6)
    intermediate["sites"] = ",".join(str(p["site"]) for p in placements)
    return intermediate
