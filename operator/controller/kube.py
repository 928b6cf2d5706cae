"""Writes to the Kubernetes API: status patches and Events, through kubernetes_asyncio.

The reconciler decides what to write; this module only writes it. Status patches are JSON merge
patches on the ``status`` subresource, so they never touch a spec and never race a user's edit.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from soberana.operator.core.api import GROUP, VERSION

log = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
COMPONENT = "soberana-operator"


@dataclass(frozen=True)
class ObjectRef:
    """Enough of an object to patch it and to post an Event about it."""

    kind: str
    plural: str
    name: str
    namespace: str | None
    uid: str | None

    @classmethod
    def of(cls, raw: Mapping[str, Any], plural: str) -> ObjectRef:
        metadata = raw["metadata"]
        return cls(
            kind=raw.get("kind") or "",
            plural=plural,
            name=metadata["name"],
            namespace=metadata.get("namespace"),
            uid=metadata.get("uid"),
        )


async def load_client_config(kubeconfig: str | None = None) -> client.ApiClient:
    """An API client from ``kubeconfig``, ``$KUBECONFIG``, or the in-cluster service account."""
    configuration = client.Configuration()
    if kubeconfig or os.environ.get("KUBECONFIG") or not os.environ.get("KUBERNETES_SERVICE_HOST"):
        await config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    else:
        config.load_incluster_config(client_configuration=configuration)
    return client.ApiClient(configuration)


class KubeWriter:
    """Status patches and Events for soberana's objects."""

    def __init__(self, api: client.ApiClient) -> None:
        self._custom = client.CustomObjectsApi(api)
        self._core = client.CoreV1Api(api)

    async def patch_status(self, ref: ObjectRef, patch: Mapping[str, Any]) -> bool:
        """Merge-patch ``status``; False when the object is gone (nothing left to report on)."""
        body = {"status": patch}
        try:
            if ref.namespace is None:
                await self._custom.patch_cluster_custom_object_status(
                    GROUP, VERSION, ref.plural, ref.name, body, _content_type=MERGE_PATCH
                )
            else:
                await self._custom.patch_namespaced_custom_object_status(
                    GROUP,
                    VERSION,
                    ref.namespace,
                    ref.plural,
                    ref.name,
                    body,
                    _content_type=MERGE_PATCH,
                )
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return True

    async def post_event(self, ref: ObjectRef, *, warning: bool, reason: str, message: str) -> None:
        """Post a core/v1 Event about ``ref``; failures are logged, never raised."""
        now = dt.datetime.now(dt.UTC)
        namespace = ref.namespace or "default"
        event = client.CoreV1Event(
            metadata=client.V1ObjectMeta(
                name=f"{ref.name}.{uuid.uuid4().hex[:12]}", namespace=namespace
            ),
            involved_object=client.V1ObjectReference(
                api_version=f"{GROUP}/{VERSION}",
                kind=ref.kind,
                name=ref.name,
                namespace=ref.namespace,
                uid=ref.uid,
            ),
            type="Warning" if warning else "Normal",
            reason=reason,
            message=message[:1024],
            source=client.V1EventSource(component=COMPONENT),
            first_timestamp=now,
            last_timestamp=now,
            count=1,
        )
        try:
            await self._core.create_namespaced_event(namespace, event)
        except ApiException as error:
            log.warning("could not post event %s on %s: %s", reason, ref.name, error.reason)
