"""One level-based reconciliation for the whole world.

Every change to any InferenceSite or ModelDeployment marks the world dirty; after a short debounce
the reconciler snapshots Kopf's indexes, re-plans every deployment with the pure placement engine,
composes each object's status with the pure status builders and writes only what differs.

Every ModelDeployment carries the finalizer ``soberana.io/finalizer``, which the reconciler adds
and removes itself (Kopf runs no per-object handler that would patch each object on first sight).
An object being deleted is left out of the plan, which releases its capacity and removes its
application from the sites' Serve configs; its finalizer goes once no reachable site runs that
application any more, so ``kubectl delete`` returns when the model is really gone.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from soberana.operator.backends.base import BackendFactory
from soberana.operator.controller.config import OperatorConfig, PlacementChange
from soberana.operator.controller.kube import ObjectRef
from soberana.operator.controller.sites import SiteAgent, SiteFleet
from soberana.operator.controller.snapshot import (
    Invalid,
    RawObject,
    parse_deployments,
    parse_sites,
)
from soberana.operator.core.api import (
    GROUP,
    Condition,
    ConditionStatus,
    InferenceSite,
    InferenceSiteStatus,
    ModelDeployment,
    ModelDeploymentStatus,
    NamespacedName,
    PlacementState,
    object_key,
)
from soberana.operator.core.placement import World, current_allocations, place
from soberana.operator.core.placement.plan import Plan
from soberana.operator.core.render import (
    app_name,
    name_conflicts,
    render_site_configs,
    site_render_warnings,
)
from soberana.operator.core.status import (
    AVAILABLE,
    PLACED,
    Observation,
    SiteCheck,
    deployment_status,
    merge_conditions,
    merge_patch,
    site_status,
)
from soberana.operator.core.write_order import order_writes

log = logging.getLogger(__name__)

SITES = "inferencesites"
DEPLOYMENTS = "modeldeployments"
FINALIZER = f"{GROUP}/finalizer"
# how long a status we wrote is trusted over an index that does not show it yet (watch lag)
_WRITE_VISIBILITY_S = 30.0

Index = Mapping[Any, Iterable[RawObject]]
BackendProvider = Callable[[InferenceSite], tuple[str, BackendFactory]]
"""For a site: an identity of its backend settings (a new one restarts the agent), and a factory."""


class Writer(Protocol):
    async def patch_status(self, ref: ObjectRef, patch: Mapping[str, Any]) -> bool: ...

    async def patch_finalizers(
        self, ref: ObjectRef, finalizers: list[str], resource_version: str
    ) -> bool: ...

    async def post_event(
        self, ref: ObjectRef, *, warning: bool, reason: str, message: str
    ) -> None: ...


@dataclass
class ReconcileResult:
    """What one pass did: useful to tests, logs and benchmarks."""

    plan: Plan
    status_writes: int = 0
    finalizer_writes: int = 0
    events: list[tuple[str, str]] = field(default_factory=list)  # (object key, reason)
    solve_s: float | None = None  # time placement took; None when the last plan still held
    invalid: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _StatusUpdate:
    """A ModelDeployment's status before and after this pass."""

    key: str
    raw: RawObject
    previous: ModelDeploymentStatus | None
    previous_json: dict[str, Any]
    new: ModelDeploymentStatus
    new_json: dict[str, Any]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _key(raw: RawObject) -> str:
    metadata = raw["metadata"]
    return object_key(metadata.get("namespace"), str(metadata["name"]))


def _app_name(key: str) -> str:
    """The Serve application of the deployment ``namespace/name``."""
    ref = NamespacedName.parse(key)
    return app_name(ref.namespace, ref.name)


def _flatten(index: Index | None) -> list[RawObject]:
    if index is None:
        return []
    return [raw for key in sorted(index, key=str) for raw in index[key]]


def _json(status: InferenceSiteStatus | ModelDeploymentStatus) -> dict[str, Any]:
    dumped: dict[str, Any] = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    return dumped


class Reconciler:
    """Owns the world's plan and every status the operator writes."""

    def __init__(
        self,
        writer: Writer,
        config: OperatorConfig | None = None,
        clock: Callable[[], dt.datetime] = _utcnow,
        backends: BackendProvider | None = None,
    ) -> None:
        self.writer = writer
        self.config = config or OperatorConfig()
        self._backends = backends
        self.fleet = (
            SiteFleet(self.trigger, self.config.probe_interval_s)
            if backends is not None and self.config.deploy
            else None
        )
        self._clock = clock
        self._sites: Index | None = None
        self._deployments: Index | None = None
        self._dirty = asyncio.Event()
        # status JSON we wrote, by "<plural>/<key>", with when: trusted while the index lags
        self._written: dict[str, tuple[dict[str, Any], float]] = {}
        self.last_result: ReconcileResult | None = None
        self._last_inputs: list[Any] = []
        self._jurisdictions: dict[str, str] = {}  # of the sites, for placement evidence

    # ------------------------------------------------------------------ inputs

    def attach(self, sites: Index, deployments: Index) -> None:
        """Point at Kopf's live indexes (the same objects every time; attaching is idempotent)."""
        self._sites, self._deployments = sites, deployments

    def trigger(self) -> None:
        self._dirty.set()

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        """Reconcile whenever something changed, debounced; survive any single failure."""
        backoff = 1.0
        pause = self.config.debounce_s
        while True:
            await self._dirty.wait()
            # wait as long as the last pass took, so that planning never takes over the CPU
            # from the watch streams that feed it
            await asyncio.sleep(pause)
            self._dirty.clear()
            try:
                started = time.monotonic()
                await self.reconcile_once()
                pause = max(self.config.debounce_s, time.monotonic() - started)
                backoff = 1.0
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reconciliation failed; retrying in %.0fs", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 60.0)
                self._dirty.set()

    async def reconcile_once(self) -> ReconcileResult:
        raw_sites = _flatten(self._sites)
        raw_deployments = _flatten(self._deployments)
        inputs = self._inputs(raw_sites, raw_deployments)
        limit = asyncio.Semaphore(self.config.write_concurrency)
        if self.last_result is not None and inputs == self._last_inputs:
            # only metadata moved (finalizers, annotations): the last plan still holds
            result = ReconcileResult(plan=self.last_result.plan, invalid=self.last_result.invalid)
            await self._sync_finalizers(raw_deployments, self._agents(), limit, result)
            return result
        # what the last pass held goes before planning, which is the memory peak of a pass
        self.last_result = None
        self._forget_visible_writes(raw_sites, raw_deployments)
        deleting = {
            _key(raw) for raw in raw_deployments if raw["metadata"].get("deletionTimestamp")
        }
        active = [raw for raw in raw_deployments if _key(raw) not in deleting]
        sites, bad_sites = parse_sites(raw_sites)
        self._jurisdictions = {site.metadata.name: site.spec.jurisdiction for site in sites}
        deployments, bad_deployments = parse_deployments(active)
        raw_by_key = {_key(raw): raw for raw in [*raw_sites, *active]}

        agents = await self._sync_agents(sites)
        checks = {name: self._check(agent) for name, agent in agents.items()}
        world = World.from_resources(sites, deployments)
        world = World(
            sites=tuple(
                replace(site, healthy=site.healthy and checks[site.name].healthy)
                if site.name in checks
                else site
                for site in world.sites
            ),
            deployments=world.deployments,
        )
        current = current_allocations(deployments)
        solving = time.monotonic()
        plan = await asyncio.to_thread(
            place, world, current, solver=self.config.solver, options=self.config.placement
        )
        solve_s = time.monotonic() - solving
        self._deploy(plan, world, agents)
        observed = _observations(plan, agents, name_conflicts(world.deployments))
        unlooked = self._unlooked()
        result = ReconcileResult(
            plan=plan, invalid=[bad.key for bad in [*bad_sites, *bad_deployments]], solve_s=solve_s
        )
        now = self._clock()
        alive = {_key(raw) for raw in raw_deployments} - deleting
        checks = {
            name: replace(check, pending_cleanup=_leftovers(agents[name], alive))
            for name, check in checks.items()
        }

        updates = {
            update.key: update
            for update in (
                self._deployment_update(d, plan, raw_by_key, observed, unlooked, now)
                for d in deployments
            )
        }
        # releases before grants, so that no crash between writes over-commits a pool
        order = order_writes(
            {key: update.previous_json for key, update in updates.items()},
            {key: update.new_json for key, update in updates.items()},
        )
        jobs = [
            self._release_job(updates[key], status, result)
            for key, status in order.releases.items()
        ]
        jobs += [self._deployment_job(updates[key], result) for key in order.first]
        warnings = site_render_warnings(plan, world)
        jobs += [
            self._site_job(
                s,
                plan,
                raw_by_key,
                checks.get(s.metadata.name),
                now,
                result,
                [f"{key}: {why}" for key, why in warnings.get(s.metadata.name, [])],
            )
            for s in sites
        ]
        jobs += [self._invalid_job(bad, DEPLOYMENTS, now, result) for bad in bad_deployments]
        jobs += [self._invalid_job(bad, SITES, now, result) for bad in bad_sites]
        # finalizers first: their patches are guarded by the resourceVersion a status write bumps
        await self._sync_finalizers(raw_deployments, agents, limit, result)
        await _bounded(jobs, limit)
        await _bounded((self._deployment_job(updates[key], result) for key in order.then), limit)
        self.last_result = result
        self._last_inputs = inputs  # only now: a pass that failed is not skipped when retried
        placed = sum(1 for decision in plan.deployments.values() if decision.placed)
        log.info(
            "reconciled: %d/%d deployments placed, %d status writes, %d events, %d invalid, "
            "%d finalizer writes",
            placed,
            len(plan.deployments),
            result.status_writes,
            len(result.events),
            len(result.invalid),
            result.finalizer_writes,
        )
        return result

    def _inputs(self, raw_sites: list[RawObject], raw_deployments: list[RawObject]) -> list[Any]:
        """Everything a pass reads, to skip passes that could not change anything.

        The objects are kept as a digest: their statuses hold every explanation, and a copy of
        them all would stay in memory between passes.
        """
        digest = hashlib.sha256()
        for raw in [*raw_sites, *raw_deployments]:
            metadata = raw["metadata"]
            seen = [
                _key(raw),
                metadata.get("generation"),
                metadata.get("labels"),
                metadata.get("deletionTimestamp"),
                raw.get("status"),
            ]
            digest.update(json.dumps(seen, sort_keys=True, default=str).encode())
        agents = self._agents()
        return [
            digest.digest(),
            [(name, agent.health()) for name, agent in sorted(agents.items())],
        ]

    async def stop(self) -> None:
        if self.fleet is not None:
            await self.fleet.stop()

    # ------------------------------------------------------------------ sites

    def _unlooked(self) -> frozenset[str]:
        """Sites whose agent has not looked at them yet (just after a start or a takeover)."""
        return frozenset(
            name for name, agent in self._agents().items() if agent.health().reachable is None
        )

    def _agents(self) -> Mapping[str, SiteAgent]:
        return self.fleet.agents() if self.fleet is not None else {}

    async def _sync_agents(self, sites: Iterable[InferenceSite]) -> Mapping[str, SiteAgent]:
        if self.fleet is None or self._backends is None:
            return {}
        await self.fleet.sync({site.metadata.name: self._backends(site) for site in sites})
        return self.fleet.agents()

    def _check(self, agent: SiteAgent) -> SiteCheck:
        health = agent.health()
        report = health.report
        grace_left = self.config.unhealthy_after_s - health.unreachable_for_s
        if health.reachable is False and grace_left >= 0:
            # nothing else may change when the grace period ends: plan again then
            asyncio.get_running_loop().call_later(grace_left + 0.1, self.trigger)
        return SiteCheck(
            reachable=health.reachable,
            message=health.message,
            healthy=health.reachable is not False
            or health.unreachable_for_s <= self.config.unhealthy_after_s,
            foreign_applications=report.foreign if report is not None else (),
        )

    def _deploy(self, plan: Plan, world: World, agents: Mapping[str, SiteAgent]) -> None:
        if not agents:
            return
        configs = render_site_configs(plan, world)
        for name, agent in agents.items():
            agent.want(configs.get(name, {"applications": []}))

    # ------------------------------------------------------------------ finalizers

    async def _sync_finalizers(
        self,
        raw_deployments: Iterable[RawObject],
        agents: Mapping[str, SiteAgent],
        limit: asyncio.Semaphore,
        result: ReconcileResult,
    ) -> None:
        """Add the finalizer to live deployments; remove it from released deleted ones.

        A deleted deployment is released once no reachable site runs its Serve application, or
        once a live deployment claims the same application name (which then runs for that one).
        """
        raws = list(raw_deployments)
        claimed = {
            _app_name(_key(raw)) for raw in raws if not raw["metadata"].get("deletionTimestamp")
        }
        jobs = []
        for raw in raws:
            metadata = raw["metadata"]
            finalizers = list(metadata.get("finalizers") or [])
            key = _key(raw)
            if not metadata.get("deletionTimestamp"):
                if FINALIZER not in finalizers:
                    jobs.append(self._set_finalizers(raw, [*finalizers, FINALIZER], result))
            elif FINALIZER in finalizers and (
                _app_name(key) in claimed or not _still_running(key, agents)
            ):
                remaining = [name for name in finalizers if name != FINALIZER]
                jobs.append(self._set_finalizers(raw, remaining, result))
        await _bounded(jobs, limit)

    async def _set_finalizers(
        self, raw: RawObject, finalizers: list[str], result: ReconcileResult
    ) -> None:
        ref = ObjectRef.of(raw, DEPLOYMENTS)
        version = raw["metadata"].get("resourceVersion", "")
        if await self.writer.patch_finalizers(ref, finalizers, version):
            result.finalizer_writes += 1

    # ------------------------------------------------------------------ writes

    def _forget_visible_writes(
        self, raw_sites: Iterable[RawObject], raw_deployments: Iterable[RawObject]
    ) -> None:
        """Drop the statuses we wrote that the index now shows, or that are too old to trust."""
        stored = {f"{SITES}/{_key(raw)}": raw for raw in raw_sites}
        stored |= {f"{DEPLOYMENTS}/{_key(raw)}": raw for raw in raw_deployments}
        now = time.monotonic()
        for name, (status, when) in list(self._written.items()):
            raw = stored.get(name)
            if raw is None or raw.get("status") == status or now - when > _WRITE_VISIBILITY_S:
                del self._written[name]

    def _previous(self, plural: str, key: str, stored: dict[str, Any]) -> dict[str, Any]:
        """The status to compare with: the index's, unless we wrote one it does not show yet."""
        written = self._written.get(f"{plural}/{key}")
        if written is None:
            return stored
        status, when = written
        if stored == status or time.monotonic() - when > _WRITE_VISIBILITY_S:
            del self._written[f"{plural}/{key}"]
            return stored
        return status

    async def _write(
        self, plural: str, raw: RawObject, new: dict[str, Any], previous: dict[str, Any]
    ) -> bool:
        key = _key(raw)
        if new == previous:
            return False
        patch = merge_patch(previous, new)
        if not await self.writer.patch_status(ObjectRef.of(raw, plural), patch):
            return False
        self._written[f"{plural}/{key}"] = (new, time.monotonic())
        return True

    def _deployment_update(
        self,
        deployment: ModelDeployment,
        plan: Plan,
        raw_by_key: Mapping[str, RawObject],
        observed: Mapping[str, Mapping[str, Observation]],
        unlooked: frozenset[str],
        now: dt.datetime,
    ) -> _StatusUpdate:
        key = str(NamespacedName.of(deployment.metadata))
        raw = raw_by_key[key]
        previous_json = self._previous(DEPLOYMENTS, key, dict(raw.get("status") or {}))
        previous = ModelDeploymentStatus.model_validate(previous_json) if previous_json else None
        new = deployment_status(
            plan.deployments[key],
            previous=previous,
            generation=deployment.metadata.generation,
            observed={**_carried(previous, unlooked), **observed.get(key, {})},
            now=now,
        )
        return _StatusUpdate(key, raw, previous, previous_json, new, _json(new))

    async def _release_job(
        self, update: _StatusUpdate, intermediate: dict[str, Any], result: ReconcileResult
    ) -> None:
        """Write the part of a move that only releases, before any grant that waits for it."""
        if await self._write(DEPLOYMENTS, update.raw, intermediate, update.previous_json):
            result.status_writes += 1

    async def _deployment_job(self, update: _StatusUpdate, result: ReconcileResult) -> None:
        stored = dict(update.raw.get("status") or {})
        previous_json = self._previous(DEPLOYMENTS, update.key, stored)  # the release, if any
        if not await self._write(DEPLOYMENTS, update.raw, update.new_json, previous_json):
            return
        result.status_writes += 1
        event = _placement_event(update.previous, update.new)
        if event is not None:
            warning, reason, message = event
            await self.writer.post_event(
                ObjectRef.of(update.raw, DEPLOYMENTS),
                warning=warning,
                reason=reason,
                message=message,
            )
            result.events.append((update.key, reason))
            if self.config.on_placement is not None:
                self.config.on_placement(
                    PlacementChange(
                        update.key,
                        reason,
                        message,
                        _shares(update.previous),
                        _shares(update.new),
                        self._jurisdictions,
                    )
                )

    async def _site_job(
        self,
        site: InferenceSite,
        plan: Plan,
        raw_by_key: Mapping[str, RawObject],
        check: SiteCheck | None,
        now: dt.datetime,
        result: ReconcileResult,
        warnings: list[str],
    ) -> None:
        raw = raw_by_key[site.metadata.name]
        previous_json = self._previous(SITES, site.metadata.name, dict(raw.get("status") or {}))
        previous = InferenceSiteStatus.model_validate(previous_json) if previous_json else None
        new = site_status(
            plan.sites[site.metadata.name],
            previous=previous,
            generation=site.metadata.generation,
            check=check,
            cordoned=site.spec.cordoned,
            now=now,
            warnings=warnings,
        )
        if await self._write(SITES, raw, _json(new), previous_json):
            result.status_writes += 1

    async def _invalid_job(
        self, bad: Invalid, plural: str, now: dt.datetime, result: ReconcileResult
    ) -> None:
        """Report an object the typed model refuses: a False condition and one Warning Event."""
        kind = PLACED if plural == DEPLOYMENTS else "Ready"
        message = f"the spec is invalid and is ignored until fixed: {bad.error}"
        stored = dict(bad.raw.get("status") or {})
        previous_conditions = [
            Condition.model_validate(c)
            for c in stored.get("conditions", [])
            if isinstance(c, dict) and _is_condition(c)
        ]
        generation = bad.raw["metadata"].get("generation")
        updates = [
            Condition(
                type=kind,
                status=ConditionStatus.FALSE,
                reason="InvalidSpec",
                message=message[:32768],
                observed_generation=generation,
                last_transition_time=now,
            )
        ]
        if plural == DEPLOYMENTS:
            updates.append(updates[0].model_copy(update={"type": AVAILABLE}))
        conditions = merge_conditions(previous_conditions, updates)
        new = {
            **stored,
            "conditions": [
                c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in conditions
            ],
        }
        previous = self._previous(plural, bad.key, stored)
        if not await self._write(plural, bad.raw, new, previous):
            return
        result.status_writes += 1
        was_invalid = any(c.reason == "InvalidSpec" for c in previous_conditions)
        if not was_invalid:
            log.warning("%s %s has an invalid spec: %s", plural, bad.key, bad.error)
            await self.writer.post_event(
                ObjectRef.of(bad.raw, plural), warning=True, reason="InvalidSpec", message=message
            )
            result.events.append((bad.key, "InvalidSpec"))


async def _bounded(jobs: Iterable[Awaitable[None]], limit: asyncio.Semaphore) -> None:
    """Run ``jobs`` concurrently, at most as many at once as ``limit`` allows."""

    async def bounded(job: Awaitable[None]) -> None:
        async with limit:
            await job

    await asyncio.gather(*(bounded(job) for job in jobs))


def _observations(
    plan: Plan, agents: Mapping[str, SiteAgent], not_deployed: Mapping[str, str]
) -> dict[str, dict[str, Observation]]:
    """What each site reports for each deployment placed on it (nothing without agents)."""
    observed: dict[str, dict[str, Observation]] = {}
    for key, decision in plan.deployments.items():
        name = _app_name(key)
        for placement in decision.placements:
            agent = agents.get(placement.site)
            if agent is None:
                continue
            health = agent.health()
            if health.reachable is None:
                continue  # not looked at yet: the status keeps what it said (see _carried)
            if key in not_deployed:
                observation = Observation(PlacementState.FAILED, 0, not_deployed[key])
            elif health.reachable is False:
                observation = Observation(
                    PlacementState.FAILED, 0, f"site unreachable: {health.message}"
                )
            elif agent.pending(name) or health.report is None:
                observation = Observation(PlacementState.DEPLOYING, 0, "applying the Serve config")
            elif name in health.report.applications:
                observation = health.report.applications[name]
            else:
                observation = Observation(PlacementState.DEPLOYING, 0, "not started yet")
            observed.setdefault(key, {})[placement.site] = observation
    return observed


def _carried(
    previous: ModelDeploymentStatus | None, unlooked: frozenset[str]
) -> dict[str, Observation]:
    """What the status said about sites not looked at yet, so a restart does not flap it."""
    if previous is None or not unlooked:
        return {}
    return {
        placement.site: Observation(placement.state, placement.ready_replicas)
        for placement in previous.placements
        if placement.site in unlooked
    }


def _still_running(key: str, agents: Mapping[str, SiteAgent]) -> bool:
    """Whether a reachable site still runs deployment ``key``'s application, or may.

    A site not looked at yet (just after the operator started) may still run it: the answer
    waits for the agent's first look, which applies the site's config and reports what is left.
    """
    name = _app_name(key)
    for agent in agents.values():
        health = agent.health()
        if health.reachable is None:
            return True
        if health.reachable is False:
            continue  # cleaned when it returns; its status says so meanwhile
        present = health.report.present if health.report is not None else frozenset()
        if name in agent.applied_applications() or name in present:
            return True
    return False


def _leftovers(agent: SiteAgent, alive: set[str]) -> tuple[str, ...]:
    """Applications of deleted deployments that an unreachable site still runs."""
    if agent.health().reachable is not False:
        return ()
    wanted = {_app_name(key) for key in alive}
    return tuple(sorted(agent.applied_applications() - wanted))


def _is_condition(raw: Mapping[str, Any]) -> bool:
    try:
        Condition.model_validate(raw)
    except ValueError:
        return False
    return True


def _shares(status: ModelDeploymentStatus | None) -> tuple[tuple[str, int], ...]:
    return tuple((p.site, p.replicas) for p in status.placements) if status else ()


def _placement_event(
    previous: ModelDeploymentStatus | None, new: ModelDeploymentStatus
) -> tuple[bool, str, str] | None:
    """(warning, reason, message) of the Event a status change deserves, if any."""

    def shares(status: ModelDeploymentStatus | None) -> list[tuple[str, int]]:
        return [(p.site, p.replicas) for p in status.placements] if status else []

    def placed(status: ModelDeploymentStatus | None) -> Condition | None:
        if status is None:
            return None
        return next((c for c in status.conditions if c.type == PLACED), None)

    before, after = shares(previous), shares(new)
    condition = placed(new)
    if after and after != before:
        where = ", ".join(f"{site} x{replicas}" for site, replicas in after)
        if before:
            was = ", ".join(f"{site} x{replicas}" for site, replicas in before)
            return False, "Moved", f"moved from {was} to {where}"
        return False, "Placed", f"placed on {where} ({new.hourly_cost:g}/h)"
    old_condition = placed(previous)
    if (
        condition is not None
        and condition.status is ConditionStatus.FALSE
        and (old_condition is None or old_condition.message != condition.message)
    ):
        return True, "Unplaceable", condition.message
    return None
