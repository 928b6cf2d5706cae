"""Kopf handlers: indexes feed the world, every change triggers the reconciler.

The handlers are deliberately thin. Kopf keeps two indexes (all InferenceSites, all
ModelDeployments); it fills them completely before any other handler runs, so the first plan after
a restart already sees every running placement and moves nothing. Everything else happens in
:class:`~soberana.operator.controller.reconciler.Reconciler`, finalizers included.

There is on purpose no per-object change handler (``on.create``/``on.update``/``on.delete``):
Kopf would patch every object on first sight (its own finalizer and a last-handled annotation),
which at a thousand objects costs a TLS connection and two watch events per object during a cold
start. Index and event handlers write nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import kopf
from kubernetes_asyncio.client import ApiClient

from soberana.operator.backends.factory import backend_for
from soberana.operator.controller.config import OperatorConfig
from soberana.operator.controller.kube import (
    KubeWriter,
    SecretReader,
    connection_info,
)
from soberana.operator.controller.reconciler import DEPLOYMENTS, SITES, Reconciler
from soberana.operator.controller.snapshot import freeze
from soberana.operator.core.api import GROUP, VERSION
from soberana.operator.kubeconfig import load_configuration


def build_registry(config: OperatorConfig, kubeconfig: str | None = None) -> kopf.OperatorRegistry:
    """A fresh registry with soberana's handlers: one per operator instance."""
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
        secrets = SecretReader(api, config.secrets_namespace)
        reconciler = Reconciler(
            KubeWriter(api), config, backends=lambda site: backend_for(site, secrets)
        )
        memo["reconciler"] = reconciler
        memo["task"] = asyncio.create_task(reconciler.run(), name="soberana-reconciler")

    @kopf.on.cleanup(registry=registry)
    async def stop(memo: kopf.Memo, **_: Any) -> None:
        task: asyncio.Task[None] | None = memo.get("task")
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if memo.get("reconciler") is not None:
            await memo["reconciler"].stop()
        if memo.get("api") is not None:
            await memo["api"].close()

    @kopf.index(GROUP, VERSION, SITES, id="site_index", registry=registry)
    async def site_index(body: kopf.Body, name: str, **_: Any) -> dict[str, Any]:
        return {name: freeze(body)}

    @kopf.index(GROUP, VERSION, DEPLOYMENTS, id="deployment_index", registry=registry)
    async def deployment_index(
        body: kopf.Body, namespace: str | None, name: str, **_: Any
    ) -> dict[str, Any]:
        return {f"{namespace}/{name}": freeze(body)}

    # async handlers run on the event loop, where the reconciler's asyncio primitives live
    @kopf.on.event(GROUP, VERSION, SITES, id="site_changed", registry=registry)
    @kopf.on.event(GROUP, VERSION, DEPLOYMENTS, id="deployment_changed", registry=registry)
    async def changed(memo: kopf.Memo, **kwargs: Any) -> None:
        reconciler: Reconciler = memo["reconciler"]
        reconciler.attach(kwargs["site_index"], kwargs["deployment_index"])
        reconciler.trigger()

    @kopf.on.probe(id="reconciler", registry=registry)
    async def reconciler_alive(memo: kopf.Memo, **_: Any) -> str:
        task: asyncio.Task[None] | None = memo.get("task")
        if task is None or task.done():
            raise RuntimeError("the reconciler task is not running")
        return "running"

    return registry
