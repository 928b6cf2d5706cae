"""Kopf handlers: indexes feed the world, every change triggers the reconciler.

The handlers are deliberately thin. Kopf keeps two indexes (all InferenceSites, all
ModelDeployments); it fills them completely before any other handler runs, so the first plan after
a restart already sees every running placement and moves nothing. Everything else happens in
:class:`~soberana.operator.controller.reconciler.Reconciler`, finalizers included.

With leader election every replica keeps its indexes warm, but only the Lease holder runs a
reconciler, and every write (status, finalizer, Event, Serve config) passes the leader gate just
before it is made.

There is on purpose no per-object change handler (``on.create``/``on.update``/``on.delete``):
Kopf would patch every object on first sight (its own finalizer and a last-handled annotation),
which at a thousand objects costs a TLS connection and two watch events per object during a cold
start. Index and event handlers write nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import kopf
from aiohttp import web
from kubernetes_asyncio.client import ApiClient

from soberana.operator.backends.base import (
    BackendError,
    BackendFactory,
    ServeConfig,
    SiteBackend,
    SiteReport,
)
from soberana.operator.backends.factory import backend_for
from soberana.operator.controller.config import OperatorConfig
from soberana.operator.controller.kube import (
    KubeWriter,
    ObjectRef,
    SecretReader,
    connection_info,
)
from soberana.operator.controller.leader import LEASE_NAME, Candidate, LeaderElector, LeaseLock
from soberana.operator.controller.metrics import Objects, OperatorMetrics
from soberana.operator.controller.reconciler import (
    DEPLOYMENTS,
    SITES,
    BackendProvider,
    Reconciler,
    ReconcileResult,
    Writer,
)
from soberana.operator.controller.snapshot import RawObject, freeze
from soberana.operator.core.api import GROUP, VERSION, InferenceSite, object_key
from soberana.operator.kubeconfig import load_configuration

log = logging.getLogger(__name__)


class GatedWriter:
    """The reconciler's writer, behind the leader gate, counting what it writes.

    ``allowed`` is asked just before every write: a replica that is not (or no longer) the leader
    writes nothing, whatever a pass in flight wanted.
    """

    def __init__(
        self, inner: Writer, allowed: Callable[[], bool], metrics: OperatorMetrics
    ) -> None:
        self._inner, self._allowed, self._metrics = inner, allowed, metrics

    def _refused(self, kind: str) -> bool:
        if self._allowed():
            return False
        self._metrics.writes_refused.labels(kind).inc()
        return True

    async def patch_status(self, ref: ObjectRef, patch: Mapping[str, Any]) -> bool:
        if self._refused("status"):
            return False
        written = await self._inner.patch_status(ref, patch)
        if written:
            self._metrics.status_writes.labels(ref.plural).inc()
        return written

    async def patch_finalizers(
        self, ref: ObjectRef, finalizers: list[str], resource_version: str
    ) -> bool:
        if self._refused("finalizers"):
            return False
        written = await self._inner.patch_finalizers(ref, finalizers, resource_version)
        if written:
            self._metrics.finalizer_writes.inc()
        return written

    async def post_event(self, ref: ObjectRef, *, warning: bool, reason: str, message: str) -> None:
        if self._refused("event"):
            return
        await self._inner.post_event(ref, warning=warning, reason=reason, message=message)
        self._metrics.events.labels("Warning" if warning else "Normal", reason).inc()


class GatedBackend:
    """A site's backend whose applies wait for the leader gate and are counted per site."""

    def __init__(
        self, site: str, inner: SiteBackend, allowed: Callable[[], bool], metrics: OperatorMetrics
    ) -> None:
        self._site, self._inner, self._allowed, self._metrics = site, inner, allowed, metrics

    async def apply(self, config: ServeConfig) -> None:
        if not self._allowed():
            self._metrics.writes_refused.labels("serve_config").inc()
            raise BackendError("not applied: this operator replica is not the leader")
        try:
            await self._inner.apply(config)
        except BackendError:
            self._metrics.serve_apply_failures.labels(self._site).inc()
            raise
        self._metrics.serve_applies.labels(self._site).inc()

    async def observe(self) -> SiteReport:
        return await self._inner.observe()

    async def close(self) -> None:
        await self._inner.close()


def gated_backends(
    secrets: SecretReader, allowed: Callable[[], bool], metrics: OperatorMetrics
) -> BackendProvider:
    """``backend_for`` with every backend behind the gate and counted."""

    def provide(site: InferenceSite) -> tuple[str, BackendFactory]:
        identity, make = backend_for(site, secrets)

        async def make_gated() -> SiteBackend:
            return GatedBackend(site.metadata.name, await make(), allowed, metrics)

        return identity, make_gated

    return provide


class _MeteredReconciler(Reconciler):
    """Times every pass and its placement solve, and counts its result."""

    def __init__(self, metrics: OperatorMetrics, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._metrics = metrics

    async def reconcile_once(self) -> ReconcileResult:
        started = time.monotonic()
        try:
            result = await super().reconcile_once()
        except Exception:
            self._metrics.reconciles.labels("error").inc()
            raise
        finally:
            self._metrics.reconcile_duration.observe(time.monotonic() - started)
        self._metrics.reconciles.labels("success").inc()
        if result.solve_s is not None:
            self._metrics.solve_duration.labels(self.config.solver).observe(result.solve_s)
        return result


def _flatten(index: Mapping[Any, Iterable[RawObject]]) -> list[RawObject]:
    return [raw for key in list(index) for raw in index[key]]


class Operator:
    """One operator's moving parts between Kopf's startup and cleanup: the metrics, the leader
    election (when on) and the reconciler, which runs only while this replica may write."""

    def __init__(
        self,
        config: OperatorConfig,
        api: ApiClient,
        on_lost: Callable[[], None],
    ) -> None:
        self.config, self.api, self._on_lost = config, api, on_lost
        self.metrics = OperatorMetrics(self._objects)
        self.elector: LeaderElector | None = None
        self.reconciler: Reconciler | None = None
        self.task: asyncio.Task[None] | None = None
        self.election_task: asyncio.Task[None] | None = None
        self.indexes: tuple[Mapping[Any, Any], Mapping[Any, Any]] | None = None
        self._metrics_runner: web.AppRunner | None = None
        self._stopping: set[asyncio.Task[None]] = set()

    def allowed(self) -> bool:
        """May this replica write now? Always without election; while leading with it."""
        return self.elector is None or self.elector.is_leader()

    def _objects(self) -> Objects | None:
        if self.task is None or self.indexes is None:
            return None
        sites, deployments = self.indexes
        return _flatten(sites), _flatten(deployments)

    async def start(self) -> None:
        if self.config.metrics_port is not None:
            self._metrics_runner = await self.metrics.serve("0.0.0.0", self.config.metrics_port)
        election = self.config.leader_election
        if election is None:
            self._lead()
            return
        lock = LeaseLock(self.api, self.config.secrets_namespace, LEASE_NAME)
        self.elector = LeaderElector(
            lock, Candidate(election), on_started=self._lead, on_stopped=self._step_down
        )
        self.metrics.leader.labels(LEASE_NAME).set(0)
        self.election_task = asyncio.create_task(self._elect(), name="soberana-leader-election")

    async def _elect(self) -> None:
        assert self.elector is not None
        await self.elector.run()
        # run() returns only when the Lease is lost: stop as controller-runtime's manager does
        self._on_lost()

    def _lead(self) -> None:
        log.info(
            "leading as %s: reconciling",
            self.config.leader_election.identity
            if self.config.leader_election
            else "the only replica",
        )
        self.metrics.leader.labels(LEASE_NAME).set(1)
        secrets = SecretReader(self.api, self.config.secrets_namespace)
        self.reconciler = _MeteredReconciler(
            self.metrics,
            GatedWriter(KubeWriter(self.api), self.allowed, self.metrics),
            self.config,
            backends=gated_backends(secrets, self.allowed, self.metrics),
        )
        if self.indexes is not None:
            self.reconciler.attach(*self.indexes)
            self.reconciler.trigger()
        self.task = asyncio.create_task(self.reconciler.run(), name="soberana-reconciler")

    def _step_down(self) -> None:
        """Stop every write now: the gate is already closed; the pass in flight is cancelled."""
        log.warning("no longer the leader: reconciling stopped")
        self.metrics.leader.labels(LEASE_NAME).set(0)
        task, reconciler = self.task, self.reconciler
        self.task, self.reconciler = None, None
        if task is not None:
            task.cancel()
        if reconciler is not None:
            stopping = asyncio.create_task(reconciler.stop())
            self._stopping.add(stopping)
            stopping.add_done_callback(self._stopping.discard)

    def changed(self, sites: Mapping[Any, Any], deployments: Mapping[Any, Any]) -> None:
        self.indexes = (sites, deployments)
        if self.reconciler is not None:
            self.reconciler.attach(sites, deployments)
            self.reconciler.trigger()

    def probe(self) -> str:
        if self.election_task is not None and self.election_task.done():
            raise RuntimeError("the leader election is not running")
        if self.elector is not None and not self.elector.leading:
            return "standby"
        if self.task is None or self.task.done():
            raise RuntimeError("the reconciler task is not running")
        return "leader" if self.elector is not None else "running"

    async def stop(self) -> None:
        """Stop writing, then hand the Lease back so that a standby takes over at once."""
        task, reconciler = self.task, self.reconciler
        self.task, self.reconciler = None, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if reconciler is not None:
            await reconciler.stop()
        for stopping in list(self._stopping):
            with contextlib.suppress(asyncio.CancelledError):
                await stopping
        if self.election_task is not None:
            self.election_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.election_task
        if self.elector is not None:
            await self.elector.release()
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()


def build_registry(
    config: OperatorConfig,
    kubeconfig: str | None = None,
    on_lost: Callable[[], None] = lambda: None,
) -> kopf.OperatorRegistry:
    """A fresh registry with soberana's handlers: one per operator instance.

    ``on_lost`` is called when this replica loses the leader Lease (it has stopped writing by
    then); the CLI stops the process with an error, as controller-runtime does.
    """
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    async def login(**_: Any) -> kopf.ConnectionInfo:
        # Kopf and our client use one source of credentials, whatever --kubeconfig said
        return await connection_info(await load_configuration(kubeconfig))

    @kopf.on.startup(registry=registry)
    async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        # Kopf stores nothing with only index and event handlers; should that change, it
        # stores under soberana.io, never under Kopf's defaults
        settings.persistence.finalizer = f"{GROUP}/kopf-finalizer"
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=GROUP, key="last-handled-configuration"
        )
        settings.posting.level = logging.WARNING  # Kopf's own chatter stays in the logs
        settings.watching.server_timeout = 300
        # an idle per-object worker holds the last body it saw: let it go before the plan that
        # follows a burst (the debounce) rather than 5 s later, in the middle of that plan
        settings.queueing.idle_timeout = 0.25
        api = ApiClient(await load_configuration(kubeconfig))
        memo["api"] = api
        memo["operator"] = operator = Operator(config, api, on_lost)
        await operator.start()

    @kopf.on.cleanup(registry=registry)
    async def stop(memo: kopf.Memo, **_: Any) -> None:
        if memo.get("operator") is not None:
            await memo["operator"].stop()
        if memo.get("api") is not None:
            await memo["api"].close()

    @kopf.index(GROUP, VERSION, SITES, id="site_index", registry=registry)
    async def site_index(body: kopf.Body, name: str, **_: Any) -> dict[str, Any]:
        return {name: freeze(body)}

    @kopf.index(GROUP, VERSION, DEPLOYMENTS, id="deployment_index", registry=registry)
    async def deployment_index(
        body: kopf.Body, namespace: str | None, name: str, **_: Any
    ) -> dict[str, Any]:
        return {object_key(namespace, name): freeze(body)}

    # async handlers run on the event loop, where the reconciler's asyncio primitives live
    @kopf.on.event(GROUP, VERSION, SITES, id="site_changed", registry=registry)
    @kopf.on.event(GROUP, VERSION, DEPLOYMENTS, id="deployment_changed", registry=registry)
    async def changed(memo: kopf.Memo, **kwargs: Any) -> None:
        operator: Operator = memo["operator"]
        operator.changed(kwargs["site_index"], kwargs["deployment_index"])

    @kopf.on.probe(id="reconciler", registry=registry)
    async def reconciler_alive(memo: kopf.Memo, **_: Any) -> str:
        operator: Operator | None = memo.get("operator")
        if operator is None:
            raise RuntimeError("the operator has not started")
        return operator.probe()

    return registry
