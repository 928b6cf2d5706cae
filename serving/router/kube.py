"""The routing table from the API server: InferenceSites and ModelDeployments, kept current.

Each kind is listed, then watched from the list's resourceVersion; every event updates a local
copy, and the table is rebuilt from both copies and published. A watch that ends is resumed
where it stopped; one the server refuses as too old (410 Gone) or that fails starts over with a
fresh list, after a short backoff. An object that does not parse as the typed API is left out
of the table (and logged), so that a model is never routed by a half-understood object.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import aiohttp
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import BaseModel, ValidationError

from soberana.operator.core.api import GROUP, VERSION, InferenceSite, ModelDeployment
from soberana.serving.router.table import RoutingTable, table_from_resources

log = logging.getLogger(__name__)

_WATCH_TIMEOUT_S = 300  # the server ends each watch after this; it is then resumed
_MAX_BACKOFF_S = 30.0

M = TypeVar("M", bound=BaseModel)


class _Store(Generic[M]):
    """The objects of one kind, by namespace/name, as the last list and watch events left them."""

    def __init__(self, plural: str, model: type[M]) -> None:
        self.plural = plural
        self.model = model
        self.objects: dict[str, M] = {}
        self.listed = False

    def replace(self, items: list[dict[str, Any]]) -> None:
        self.objects = {}
        for item in items:
            self.apply("ADDED", item)
        self.listed = True

    def apply(self, event: str, item: dict[str, Any]) -> None:
        metadata = item.get("metadata", {})
        key = f"{metadata.get('namespace', '')}/{metadata.get('name', '')}"
        if event == "DELETED":
            self.objects.pop(key, None)
            return
        try:
            self.objects[key] = self.model.model_validate(item)
        except ValidationError as error:
            self.objects.pop(key, None)
            log.warning("left %s %s out of the routing table: %s", self.plural, key, error)


class ClusterTableSource:
    """Publishes the routing table the API server describes, whenever it changes."""

    def __init__(self, api: client.ApiClient, publish: Callable[[RoutingTable], None]) -> None:
        self._objects = client.CustomObjectsApi(api)
        self._publish = publish
        self._sites = _Store("inferencesites", InferenceSite)
        self._deployments = _Store("modeldeployments", ModelDeployment)

    async def run(self) -> None:
        """List and watch both kinds until cancelled."""
        await asyncio.gather(self._follow(self._sites), self._follow(self._deployments))

    async def _follow(self, store: _Store[Any]) -> None:
        backoff = 0.5
        while True:
            try:
                version = await self._list(store)
                backoff = 0.5
                while True:
                    version = await self._watch(store, version)
            except ApiException as error:
                if error.status != 410:
                    log.warning("watching %s failed: %s %s", store.plural, error.status, error)
            except (OSError, aiohttp.ClientError) as error:  # TimeoutError is an OSError
                log.warning("watching %s failed: %s", store.plural, error)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF_S)

    async def _list(self, store: _Store[Any]) -> str:
        listed = await self._objects.list_cluster_custom_object(GROUP, VERSION, store.plural)
        store.replace(listed.get("items", []))
        self._changed()
        return str(listed["metadata"]["resourceVersion"])

    async def _watch(self, store: _Store[Any], version: str) -> str:
        """Apply events from ``version`` on until the watch ends; the version to resume from."""
        async with watch.Watch().stream(
            self._objects.list_cluster_custom_object,
            GROUP,
            VERSION,
            store.plural,
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=_WATCH_TIMEOUT_S,
        ) as events:
            async for event in events:
                item = event["raw_object"]
                version = item.get("metadata", {}).get("resourceVersion", version)
                if event["type"] != "BOOKMARK":
                    store.apply(event["type"], item)
                    self._changed()
        return version

    def _changed(self) -> None:
        if self._sites.listed and self._deployments.listed:
            self._publish(
                table_from_resources(
                    self._sites.objects.values(), self._deployments.objects.values()
                )
            )
