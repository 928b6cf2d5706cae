"""Compose the status the operator writes, from a plan and what the sites report.

Pure functions, in the manner of KubeRay's status builders: given the previous status, the new plan
and the observed state of each site's Serve applications, return the complete new status. The
operator compares it with what is stored and writes only a real difference, so that a status is
written once per change and ``lastTransitionTime`` moves only when a condition's status does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from soberana.operator.core.api import (
    Condition,
    ConditionStatus,
    InferenceSiteStatus,
    ModelDeploymentStatus,
    PlacementState,
    PlacementStatus,
)
from soberana.operator.core.placement.plan import DeploymentPlan, SiteUsage

PLACED = "Placed"
AVAILABLE = "Available"
DEGRADED = "Degraded"
REACHABLE = "Reachable"
READY = "Ready"


@dataclass(frozen=True)
class Observation:
    """What one site reports about one deployment's application there."""

    state: PlacementState
    ready_replicas: int
    message: str = ""


def merge_conditions(
    previous: Sequence[Condition], updates: Iterable[Condition]
) -> list[Condition]:
    """Replace conditions by type, keeping ``lastTransitionTime`` when the status did not change."""
    merged = {condition.type: condition for condition in previous}
    for update in updates:
        old = merged.get(update.type)
        keep_time = old is not None and old.status == update.status
        merged[update.type] = (
            update.model_copy(update={"last_transition_time": old.last_transition_time})
            if old is not None and keep_time
            else update
        )
    return sorted(merged.values(), key=lambda condition: condition.type)


@dataclass(frozen=True)
class _Stamp:
    """Makes conditions that all carry one generation and one transition time."""

    generation: int | None
    now: datetime

    def __call__(self, kind: str, status: ConditionStatus, reason: str, message: str) -> Condition:
        return Condition(
            type=kind,
            status=status,
            reason=reason,
            message=message,
            observed_generation=self.generation,
            last_transition_time=self.now,
        )


def deployment_status(
    plan: DeploymentPlan,
    *,
    previous: ModelDeploymentStatus | None,
    generation: int | None,
    observed: Mapping[str, Observation],
    now: datetime,
) -> ModelDeploymentStatus:
    """The whole status of one ModelDeployment after ``plan``, given the sites' observations.

    ``observed`` maps a site name to what that site reports for this deployment; a site missing
    from it has not reported yet, so its replicas are Pending and availability is Unknown.
    """
    placements = [
        PlacementStatus(
            site=entry.site,
            gpu_model=entry.gpu_model,
            replicas=entry.replicas,
            ready_replicas=min(observed[entry.site].ready_replicas, entry.replicas)
            if entry.site in observed
            else 0,
            hourly_cost=round(entry.hourly_cost, 6),
            regions=list(entry.regions),
            state=observed[entry.site].state if entry.site in observed else PlacementState.PENDING,
        )
        for entry in plan.placements
    ]
    desired = sum(p.replicas for p in placements)
    ready = sum(p.ready_replicas for p in placements)
    stamp = _Stamp(generation, now)

    if plan.placed:
        sites = ", ".join(f"{p.site} x{p.replicas}" for p in placements)
        placed = stamp(PLACED, ConditionStatus.TRUE, "Placed", f"placed on {sites}")
    else:
        placed = stamp(
            PLACED,
            ConditionStatus.FALSE,
            "Unplaceable",
            plan.reason or "no placement meets every hard constraint",
        )
    available, degraded = _availability(placements, observed, stamp)

    return ModelDeploymentStatus(
        placements=placements,
        hourly_cost=round(plan.hourly_cost, 6),
        sites=",".join(p.site for p in placements),
        ready=f"{ready}/{desired}" if plan.placed else "",
        conditions=merge_conditions(
            previous.conditions if previous else [], [placed, available, degraded]
        ),
        explanation=dict(sorted(plan.rejected.items())),
        observed_generation=generation,
    )


def _availability(
    placements: Sequence[PlacementStatus],
    observed: Mapping[str, Observation],
    stamp: _Stamp,
) -> tuple[Condition, Condition]:
    desired = sum(p.replicas for p in placements)
    ready = sum(p.ready_replicas for p in placements)
    if not placements:
        return (
            stamp(AVAILABLE, ConditionStatus.FALSE, "NotPlaced", "nothing is placed"),
            stamp(DEGRADED, ConditionStatus.FALSE, "NotPlaced", "nothing is placed"),
        )
    failed = [p for p in placements if p.state is PlacementState.FAILED]
    unreported = [p.site for p in placements if p.site not in observed]
    problems = "; ".join(f"{p.site}: {observed[p.site].message or p.state.value}" for p in failed)
    if ready > 0:
        available = stamp(
            AVAILABLE, ConditionStatus.TRUE, "ReplicasReady", f"{ready}/{desired} replicas ready"
        )
    elif unreported and not failed:
        available = stamp(
            AVAILABLE,
            ConditionStatus.UNKNOWN,
            "AwaitingSites",
            f"waiting for {', '.join(unreported)} to report",
        )
    else:
        available = stamp(
            AVAILABLE,
            ConditionStatus.FALSE,
            "NoReplicaReady",
            problems or f"0/{desired} replicas ready",
        )
    if failed:
        degraded = stamp(DEGRADED, ConditionStatus.TRUE, "SiteFailed", problems)
    elif 0 < ready < desired:
        degraded = stamp(
            DEGRADED,
            ConditionStatus.TRUE,
            "ReplicasNotReady",
            f"{desired - ready} of {desired} replicas not ready",
        )
    else:
        degraded = stamp(DEGRADED, ConditionStatus.FALSE, "AsPlanned", "no replica is failing")
    return available, degraded


@dataclass(frozen=True)
class SiteCheck:
    """What the operator last found when it looked at a site."""

    reachable: bool | None  # None: not looked at yet
    message: str
    healthy: bool  # False once the site has been unreachable for longer than the grace period
    foreign_applications: tuple[str, ...] = ()
    pending_cleanup: tuple[str, ...] = ()  # applications of deleted deployments still there


def site_conditions(
    check: SiteCheck | None, *, cordoned: bool
) -> list[tuple[str, ConditionStatus, str, str]]:
    """(type, status, reason, message) of the Reachable and Ready conditions."""
    if check is None:
        return [
            (READY, ConditionStatus.TRUE, "PlacementOnly", "the operator places without deploying"),
        ]
    notes = []
    if check.foreign_applications:
        notes.append(
            "applications not managed by soberana (left alone): "
            + ", ".join(check.foreign_applications)
        )
    if check.pending_cleanup:
        notes.append("to remove once reachable: " + ", ".join(check.pending_cleanup))
    suffix = "; " + "; ".join(notes) if notes else ""
    if check.reachable is None:
        reachable = (REACHABLE, ConditionStatus.UNKNOWN, "NotProbedYet", "not looked at yet")
    elif check.reachable:
        reachable = (
            REACHABLE,
            ConditionStatus.TRUE,
            "Reachable",
            (check.message or "reachable") + suffix,
        )
    else:
        reachable = (REACHABLE, ConditionStatus.FALSE, "Unreachable", check.message + suffix)
    if not check.healthy:
        ready = (
            READY,
            ConditionStatus.FALSE,
            "Unreachable",
            "unreachable for longer than the grace period; deployments are placed elsewhere",
        )
    elif cordoned:
        ready = (READY, ConditionStatus.TRUE, "Cordoned", "cordoned: nothing new is placed here")
    else:
        ready = (READY, ConditionStatus.TRUE, "Ready", "deployments may be placed here")
    return [reachable, ready]


def site_status(
    usage: SiteUsage,
    *,
    previous: InferenceSiteStatus | None,
    generation: int | None,
    check: SiteCheck | None,
    cordoned: bool,
    now: datetime,
    warnings: Sequence[str] = (),
) -> InferenceSiteStatus:
    """A site's status: what is allocated there, and whether it can be reached and used.

    ``warnings`` (what the rendered config could not express there) end the Ready message.
    """
    stamp = _Stamp(generation, now)
    base = previous or InferenceSiteStatus()
    parts = site_conditions(check, cordoned=cordoned)
    if warnings:
        kind, state, reason, message = parts[-1]
        parts[-1] = (kind, state, reason, "; ".join([message, *warnings]))
    conditions = [stamp(*part) for part in parts]
    if check is not None and check.reachable is None:
        # not looked at yet (a restart or a takeover): what the last look found still stands
        conditions = [
            c
            for c in conditions
            if c.type != REACHABLE or not any(old.type == REACHABLE for old in base.conditions)
        ]
    return base.model_copy(
        update={
            "gpus_allocated": usage.gpus_allocated,
            "gpus_total": usage.gpus_total,
            "gpu_usage": f"{usage.gpus_allocated}/{usage.gpus_total}",
            "cpus_allocated": usage.cpus_allocated,
            "cpus_total": usage.cpus_total,
            "cpu_usage": f"{usage.cpus_allocated}/{usage.cpus_total}",
            "memory_gib_allocated": round(usage.memory_gib_allocated, 6),
            "deployments": usage.deployments,
            "hourly_cost": round(usage.hourly_cost, 6),
            "observed_generation": generation,
            "conditions": merge_conditions(base.conditions, conditions),
        }
    )


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The RFC 7386 JSON merge patch that turns ``old`` into ``new`` (removed keys become null)."""
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        previous = old.get(key)
        if isinstance(value, Mapping) and isinstance(previous, Mapping):
            nested = merge_patch(previous, value)
            if nested:
                patch[key] = nested
        elif key not in old or previous != value:
            patch[key] = value
    return patch
