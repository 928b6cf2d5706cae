"""Run a router process: pick its table source, load its keys, serve until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

import uvloop
from kubernetes_asyncio import client

from soberana.operator.kubeconfig import load_configuration
from soberana.serving.router.app import Background, Router, RouterSettings, serving_router
from soberana.serving.router.auth import api_keys_from_document
from soberana.serving.router.files import FileFollower
from soberana.serving.router.kube import ClusterTableSource
from soberana.serving.router.table import table_from_routes
from soberana.serving.router.telemetry import make_telemetry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerOptions:
    host: str = "127.0.0.1"
    port: int = 8080
    routes: Path | None = None  # a static routes file; None: the API server's objects
    kubeconfig: Path | None = None
    api_keys: Path | None = None
    otlp_endpoint: str | None = None
    settings: RouterSettings = field(default_factory=RouterSettings)
    # hooked into the router for as long as it serves, such as the audit log
    extensions: tuple[Callable[[Router], AbstractContextManager[object]], ...] = ()


def run(options: ServerOptions) -> None:
    uvloop.run(serve(options))


async def serve(options: ServerOptions) -> None:
    router = Router(options.settings, make_telemetry(options.otlp_endpoint))
    background: list[Background] = []
    api: client.ApiClient | None = None
    if options.routes is not None:
        routes = FileFollower(options.routes, table_from_routes, router.set_table)
        routes.load()
        background.append(routes.follow)
    else:
        kubeconfig = str(options.kubeconfig) if options.kubeconfig else None
        api = client.ApiClient(await load_configuration(kubeconfig))
        background.append(ClusterTableSource(api, router.set_table).run)
    if options.api_keys is not None:
        keys = FileFollower(
            options.api_keys, api_keys_from_document, router.set_api_keys, secret=True
        )
        keys.load()
        background.append(keys.follow)

    extensions = contextlib.ExitStack()
    try:
        for extension in options.extensions:
            extensions.enter_context(extension(router))
        async with serving_router(router, options.host, options.port, background) as server:
            # what startup made lives as long as the process: keep the collector from walking
            # it on every full collection, which shows up as latency spikes
            gc.collect()
            gc.freeze()
            log.info("soberana router listening on http://%s:%d", options.host, server.port)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stop.set)
            await stop.wait()
    finally:
        extensions.close()
        if api is not None:
            await api.close()
