"""The reconciler's decisions, with an in-memory writer standing in for the API server.

The same behaviour is tested end to end on a real API server in tests/integration/test_operator.py;
these tests cover what a real server cannot produce on demand (an object the CRD schema would have
refused, a watch that lags behind our own writes).
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import random
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from soberana.operator.backends.base import SiteReport
from soberana.operator.controller.config import OperatorConfig
from soberana.operator.controller.kube import ObjectRef
from soberana.operator.controller.reconciler import Reconciler
from soberana.operator.core.api import PlacementState
from soberana.operator.core.status import Observation, merge_patch

T0 = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)


class RecordingWriter:
    def __init__(self) -> None:
        self.patches: list[tuple[str, dict[str, Any]]] = []
        self.events: list[tuple[str, str, bool]] = []
        self.finalizers: dict[str, list[str]] = {}

    async def patch_finalizers(
        self, ref: ObjectRef, finalizers: list[str], resource_version: str
    ) -> bool:
        self.finalizers[ref.name] = finalizers
        return True

    async def patch_status(self, ref: ObjectRef, patch: Mapping[str, Any]) -> bool:
        self.patches.append((ref.name, dict(patch)))
        return True

    async def post_event(self, ref: ObjectRef, *, warning: bool, reason: str, message: str) -> None:
        self.events.append((ref.name, reason, warning))


def site(name: str, jurisdiction: str, gpus: int = 4) -> dict[str, Any]:
    return {
        "apiVersion": "soberana.io/v1alpha1",
        "kind": "InferenceSite",
        "metadata": {"name": name, "uid": f"uid-{name}", "generation": 1},
        "spec": {
            "tier": "cloud",
            "region": "br-southeast",
            "jurisdiction": jurisdiction,
            "currency": "USD",
            "gpus": [{"model": "L4", "count": gpus, "memoryGiB": 24, "hourlyCost": 1.0}],
            "latencyMs": {"br-southeast": 5},
            "backend": {"ray": {"dashboardURL": "http://ray:8265", "serveURL": "http://ray:8000"}},
        },
        "status": {},
    }


def deployment(name: str, allowed: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "soberana.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {
            "name": name,
            "namespace": "ml",
            "uid": f"uid-{name}",
            "generation": 1,
            **extra,
        },
        "spec": {
            "model": {"uri": "file:///models/m", "format": "torchscript"},
            "replicas": 1,
            "resources": {"gpus": 1},
            "traffic": [{"region": "br-southeast", "weight": 1}],
            "residency": {"allowedJurisdictions": allowed},
        },
        "status": {},
    }


def index(*objects: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for obj in objects:
        meta = obj["metadata"]
        key = f"{meta['namespace']}/{meta['name']}" if "namespace" in meta else meta["name"]
        out[key] = [obj]
    return out


def apply(patches: list[tuple[str, dict[str, Any]]], objects: list[dict[str, Any]]) -> None:
    """Play our own status patches back into the objects, as the watch would."""

    def merge(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
        for key, value in patch.items():
            if value is None:
                target.pop(key, None)
            elif isinstance(value, Mapping) and isinstance(target.get(key), dict):
                merge(target[key], value)
            else:
                target[key] = value

    by_name = {obj["metadata"]["name"]: obj for obj in objects}
    for name, patch in patches:
        merge(by_name[name]["status"], patch)


def reconciler(writer: RecordingWriter, now: list[dt.datetime] | None = None) -> Reconciler:
    clock = now or [T0]
    return Reconciler(writer, OperatorConfig(debounce_s=0), clock=lambda: clock[0])


async def test_places_writes_status_and_events_once() -> None:
    writer = RecordingWriter()
    br, us = site("br1", "BR"), site("us1", "US")
    chat = deployment("chat", ["BR"])
    rec = reconciler(writer)
    rec.attach(index(br, us), index(chat))

    result = await rec.reconcile_once()
    assert result.plan.deployments["ml/chat"].placed
    chat_patch = next(patch for name, patch in writer.patches if name == "chat")
    assert chat_patch["placements"][0]["site"] == "br1"
    assert {c["type"]: c["status"] for c in chat_patch["conditions"]} == {
        "Available": "Unknown",
        "Degraded": "False",
        "Placed": "True",
    }
    assert "jurisdiction" in chat_patch["explanation"]["us1"].lower()
    assert ("chat", "Placed", False) in writer.events

    # the watch delivers our writes: the next pass writes nothing and posts nothing
    apply(writer.patches, [br, us, chat])
    writer.patches.clear()
    writer.events.clear()
    again = await rec.reconcile_once()
    assert again.status_writes == 0
    assert writer.events == []


async def test_lagging_watch_does_not_cause_rewrites() -> None:
    writer = RecordingWriter()
    clock = [T0]
    br, chat = site("br1", "BR"), deployment("chat", ["BR"])
    rec = reconciler(writer, clock)
    rec.attach(index(br), index(chat))
    await rec.reconcile_once()
    first = len(writer.patches)
    clock[0] = T0 + dt.timedelta(seconds=5)  # later, but the index still shows the old status
    result = await rec.reconcile_once()
    assert result.status_writes == 0
    assert len(writer.patches) == first


async def test_a_failed_pass_is_done_again_not_skipped() -> None:
    class FailingWhenAsked(RecordingWriter):
        fail_next = False

        async def patch_status(self, ref: ObjectRef, patch: Mapping[str, Any]) -> bool:
            if self.fail_next:
                self.fail_next = False
                raise ConnectionError("the API server went away")
            return await super().patch_status(ref, patch)

    writer = FailingWhenAsked()
    br, chat = site("br1", "BR"), deployment("chat", ["BR"])
    rec = reconciler(writer)
    rec.attach(index(br), index(chat))
    await rec.reconcile_once()
    apply(writer.patches, [br, chat])
    writer.patches.clear()

    chat["metadata"]["generation"] = 2
    writer.fail_next = True
    with pytest.raises(ConnectionError):
        await rec.reconcile_once()
    assert "chat" not in {name for name, _ in writer.patches}
    result = await rec.reconcile_once()  # the same inputs again: a retry, which must write
    assert result.status_writes >= 1
    assert ("chat", {"observedGeneration": 2}) in [
        (name, {"observedGeneration": patch.get("observedGeneration")})
        for name, patch in writer.patches
    ]


async def test_unplaceable_gets_a_warning_with_a_reason() -> None:
    writer = RecordingWriter()
    rec = reconciler(writer)
    rec.attach(index(site("us1", "US")), index(deployment("chat", ["BR"])))
    result = await rec.reconcile_once()
    decision = result.plan.deployments["ml/chat"]
    assert not decision.placed
    events = [(name, reason, warning) for name, reason, warning in writer.events]
    assert ("chat", "Unplaceable", True) in events
    patch = next(patch for name, patch in writer.patches if name == "chat")
    placed = next(c for c in patch["conditions"] if c["type"] == "Placed")
    assert placed["status"] == "False"
    assert placed["message"] == decision.reason


async def test_invalid_spec_is_reported_and_others_still_placed() -> None:
    writer = RecordingWriter()
    odd = deployment("odd", ["BR"])
    odd["spec"]["replicas"] = -3  # the CRD would refuse this; an old object might still have it
    good = deployment("good", ["BR"])
    rec = reconciler(writer)
    rec.attach(index(site("br1", "BR")), index(odd, good))
    result = await rec.reconcile_once()
    assert result.invalid == ["ml/odd"]
    assert result.plan.deployments["ml/good"].placed
    patch = next(patch for name, patch in writer.patches if name == "odd")
    placed = next(c for c in patch["conditions"] if c["type"] == "Placed")
    assert placed["reason"] == "InvalidSpec"
    assert "replicas" in placed["message"]
    assert ("odd", "InvalidSpec", True) in writer.events


async def test_deleting_deployment_releases_capacity_then_its_finalizer() -> None:
    writer = RecordingWriter()
    br = site("br1", "BR", gpus=1)
    first = deployment("first", ["BR"])
    second = deployment("second", ["BR"])
    rec = reconciler(writer)
    rec.attach(index(br), index(first, second))
    result = await rec.reconcile_once()
    placed = {key for key, d in result.plan.deployments.items() if d.placed}
    assert len(placed) == 1, "one GPU: exactly one of the two fits"
    loser = ({"ml/first", "ml/second"} - placed).pop()
    winner = placed.pop()
    assert writer.finalizers == {
        "first": ["soberana.io/finalizer"],
        "second": ["soberana.io/finalizer"],
    }
    apply(writer.patches, [br, first, second])

    deleted, kept = (first, second) if winner == "ml/first" else (second, first)
    kept["metadata"]["finalizers"] = ["soberana.io/finalizer"]
    deleted["metadata"]["finalizers"] = ["other.example/keep", "soberana.io/finalizer"]
    deleted["metadata"]["deletionTimestamp"] = "2026-11-22T12:00:00Z"
    rec.attach(index(br), index(first, second))
    writer.finalizers.clear()
    result = await rec.reconcile_once()
    assert result.plan.deployments[loser].placed, "the freed GPU goes to the waiting deployment"
    assert winner not in result.plan.deployments
    assert writer.finalizers == {deleted["metadata"]["name"]: ["other.example/keep"]}, (
        "only our own finalizer leaves, once nothing runs the deployment"
    )


@pytest.mark.parametrize(
    ("old", "new", "patch"),
    [
        ({"a": 1}, {"a": 1}, {}),
        ({"a": 1, "b": 2}, {"a": 1}, {"b": None}),
        ({"e": {"s1": "x", "s2": "y"}}, {"e": {"s1": "x"}}, {"e": {"s2": None}}),
        ({"l": [1]}, {"l": [1, 2]}, {"l": [1, 2]}),
    ],
)
def test_merge_patch(old: dict[str, Any], new: dict[str, Any], patch: dict[str, Any]) -> None:
    assert merge_patch(old, new) == patch


class HeldSite:
    """A site backend whose looks wait until the test says what the site shows."""

    def __init__(self) -> None:
        self.report: SiteReport | None = None
        self._shown = asyncio.Event()

    def show(self, report: SiteReport) -> None:
        self.report = report
        self._shown.set()

    async def apply(self, config: dict[str, Any]) -> None:
        pass

    async def observe(self) -> SiteReport:
        await self._shown.wait()
        assert self.report is not None
        return self.report

    async def close(self) -> None:
        pass


async def test_a_site_not_looked_at_yet_keeps_a_deleted_deployments_finalizer() -> None:
    """After a restart every site agent is new: a site it has not looked at may still run the app.

    Issue 12, finding 10: the finalizer was released on the first pass after a restart, while Ray
    still listed the application as DELETING.
    """
    writer = RecordingWriter()
    backend = HeldSite()

    async def factory() -> HeldSite:
        return backend

    br = site("br1", "BR")
    chat = deployment("chat", ["BR"], finalizers=["soberana.io/finalizer"])
    chat["metadata"]["deletionTimestamp"] = "2026-11-22T12:00:00Z"
    rec = Reconciler(
        writer,
        OperatorConfig(debounce_s=0, probe_interval_s=0.01),
        clock=lambda: T0,
        backends=lambda _site: ("br1", factory),  # type: ignore[arg-type,return-value]
    )
    rec.attach(index(br), index(chat))

    async def seen(report: SiteReport) -> None:
        assert rec.fleet is not None
        await _until(lambda: rec.fleet.agents()["br1"].health().report == report)  # type: ignore[union-attr]

    try:
        await rec.reconcile_once()
        assert writer.finalizers == {}, "the site was not looked at yet: it may still run ml-chat"

        deleting = SiteReport(present=frozenset({"ml-chat"}), version="2.60.0")
        backend.show(deleting)
        await seen(deleting)
        await rec.reconcile_once()
        assert writer.finalizers == {}, "Ray still lists the application while it is deleted"

        gone = SiteReport(version="2.60.0")
        backend.show(gone)
        await seen(gone)
        await rec.reconcile_once()
        assert writer.finalizers == {"chat": []}, "released once the site no longer has it"
    finally:
        await rec.stop()


async def _until(done: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not done():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def _pool_totals(deployments: list[dict[str, Any]]) -> dict[tuple[str, str], int]:
    totals: dict[tuple[str, str], int] = {}
    for obj in deployments:
        for entry in (obj.get("status") or {}).get("placements", []):
            pool = (entry["site"], entry["gpuModel"])
            totals[pool] = totals.get(pool, 0) + entry["replicas"]
    return totals


def _never_over_capacity(
    patches: list[tuple[str, dict[str, Any]]],
    deployments: list[dict[str, Any]],
    capacity: Mapping[str, int],
) -> None:
    """Every prefix of ``patches`` (a crash after each write) keeps each pool within capacity."""
    for crash_after in range(len(patches) + 1):
        seen = copy.deepcopy(deployments)
        apply(
            [
                (n, p)
                for n, p in patches[:crash_after]
                if n in {d["metadata"]["name"] for d in seen}
            ],
            seen,
        )
        for (site_name, _), claimed in _pool_totals(seen).items():
            assert claimed <= capacity[site_name], (
                f"after {crash_after} of {len(patches)} writes, {site_name} shows {claimed} GPUs "
                f"claimed of {capacity[site_name]}"
            )


async def test_a_crash_between_status_writes_never_over_commits_a_pool() -> None:
    """Issue 12, finding 11: two deployments swap sites; every prefix of the writes is safe."""
    writer = RecordingWriter()
    br, cl = site("br1", "BR", gpus=1), site("cl1", "CL", gpus=1)
    a, b = deployment("a", ["BR"]), deployment("b", ["CL"])
    rec = reconciler(writer)
    rec.attach(index(br, cl), index(a, b))
    await rec.reconcile_once()
    apply(writer.patches, [br, cl, a, b])
    assert _pool_totals([a, b]) == {("br1", "L4"): 1, ("cl1", "L4"): 1}

    writer.patches.clear()
    a["spec"]["residency"]["allowedJurisdictions"] = ["CL"]
    b["spec"]["residency"]["allowedJurisdictions"] = ["BR"]
    a["metadata"]["generation"] = b["metadata"]["generation"] = 2
    before = copy.deepcopy([a, b])
    await rec.reconcile_once()
    patches = [(name, patch) for name, patch in writer.patches if name in {"a", "b"}]
    _never_over_capacity(patches, before, {"br1": 1, "cl1": 1})
    apply(patches, [a, b])
    assert [p["site"] for p in a["status"]["placements"]] == ["cl1"]
    assert [p["site"] for p in b["status"]["placements"]] == ["br1"]


@pytest.mark.parametrize("seed", range(12))
async def test_random_replans_never_over_commit_between_writes(seed: int) -> None:
    """Seeded random worlds and spec edits; a crash after any write leaves pools within capacity."""
    rng = random.Random(seed)
    jurisdictions = ["BR", "CL", "PE"]
    sites = [site(f"s{i}", jurisdictions[i % 3], gpus=rng.randint(1, 3)) for i in range(5)]
    capacity = {s["metadata"]["name"]: s["spec"]["gpus"][0]["count"] for s in sites}
    deployments = []
    for i in range(8):
        d = deployment(f"d{i}", rng.sample(jurisdictions, rng.randint(1, 2)))
        d["spec"]["replicas"] = rng.randint(1, 2)
        deployments.append(d)
    writer = RecordingWriter()
    rec = reconciler(writer)
    for _ in range(4):
        rec.attach(index(*sites), index(*deployments))
        before = copy.deepcopy(deployments)
        await rec.reconcile_once()
        names = {d["metadata"]["name"] for d in deployments}
        patches = [(name, patch) for name, patch in writer.patches if name in names]
        _never_over_capacity(patches, before, capacity)
        apply(writer.patches, [*sites, *deployments])
        writer.patches.clear()
        for d in rng.sample(deployments, 3):
            d["spec"]["residency"]["allowedJurisdictions"] = rng.sample(jurisdictions, 1)
            d["spec"]["replicas"] = rng.randint(1, 2)
            d["metadata"]["generation"] += 1


class CountingSite(HeldSite):
    """A held site that counts the configs applied to it."""

    def __init__(self) -> None:
        super().__init__()
        self.applied: list[dict[str, Any]] = []

    async def apply(self, config: dict[str, Any]) -> None:
        self.applied.append(config)


@pytest.mark.parametrize("looked_before_first_pass", [False, True])
async def test_a_new_operator_adopts_a_site_that_runs_its_config_and_keeps_statuses(
    looked_before_first_pass: bool,
) -> None:
    """A restart or a takeover re-applies nothing that runs, and statuses do not flap.

    The new agent's first look may come before the first plan gives it a config to want
    (``looked_before_first_pass``): the site's report then says what runs there.
    """
    writer = RecordingWriter()
    br, chat = site("br1", "BR"), deployment("chat", ["BR"])
    first_site = CountingSite()

    def make(backend: CountingSite) -> Any:
        async def factory() -> CountingSite:
            return backend

        return lambda _site: ("br1", factory)

    def running(config: dict[str, Any]) -> SiteReport:
        return SiteReport(
            applications={"ml-chat": Observation(PlacementState.RUNNING, 1)},
            present=frozenset({"ml-chat"}),
            deployed={app["name"]: app for app in config["applications"]},
            version="2.60.0",
        )

    config = OperatorConfig(debounce_s=0, probe_interval_s=0.01)
    old = Reconciler(writer, config, clock=lambda: T0, backends=make(first_site))
    old.attach(index(br), index(chat))
    try:
        await old.reconcile_once()
        first_site.show(SiteReport(deployed={}, version="2.60.0"))
        await _until(lambda: len(first_site.applied) == 1)
        first_site.show(running(first_site.applied[0]))
        await _until(lambda: old.fleet is not None and old.fleet.agents()["br1"].converged)
        await _until(
            lambda: (
                old.fleet is not None
                and old.fleet.agents()["br1"].health().report == first_site.report
            )
        )
        await old.reconcile_once()
    finally:
        await old.stop()
    apply(writer.patches, [br, chat])
    assert chat["status"]["placements"][0]["state"] == "Running"
    assert chat["status"]["ready"] == "1/1"

    # a new operator: its agent has not looked yet, then finds the config already running
    writer.patches.clear()
    second_site = CountingSite()
    new = Reconciler(writer, config, clock=lambda: T0, backends=make(second_site))
    new.attach(index(br), index(chat))
    if looked_before_first_pass:
        second_site.show(running(first_site.applied[0]))
    try:
        await new.reconcile_once()
        assert writer.patches == [], "the first pass keeps every status as it was"
        second_site.show(running(first_site.applied[0]))
        await _until(lambda: new.fleet is not None and new.fleet.agents()["br1"].converged)
        await new.reconcile_once()
        assert second_site.applied == [], "the site already runs the config: no PUT"
        assert writer.patches == []
    finally:
        await new.stop()
