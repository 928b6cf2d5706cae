"""Writes to the Kubernetes API: status patches, finalizers and Events, through kubernetes_asyncio.

The reconciler decides what to write; this module only writes it. Status patches are JSON merge
patches on the ``status`` subresource, so they never touch a spec and never race a user's edit.
Finalizer patches carry the ``resourceVersion`` they were computed from, so that a concurrent
change to the list (another controller's finalizer) is refused with a conflict, never overwritten.
"""

from __future__ import annotations

import base64
import datetime as dt
import inspect
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kopf
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from soberana.operator.backends.base import BackendError
from soberana.operator.core.api import DEFAULT_NAMESPACE, GROUP, VERSION

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


async def connection_info(configuration: client.Configuration) -> kopf.ConnectionInfo:
    """The same credentials for Kopf's own API calls (as ``kopf.login_via_async_client`` does)."""
    maybe_header: Any = configuration.get_api_key_with_prefix("BearerToken")
    header = await maybe_header if inspect.isawaitable(maybe_header) else maybe_header
    scheme, token = None, None
    if header:
        parts = str(header).split(" ", 1)
        scheme, token = (None, parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    return kopf.ConnectionInfo(
        server=str(configuration.host),
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        username=configuration.username or None,
        password=configuration.password or None,
        scheme=scheme,
        token=token,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
        proxy_url=configuration.proxy,
    )


class KubeWriter:
    """Status patches and Events for soberana's objects."""

    def __init__(self, api: client.ApiClient) -> None:
        self._custom = client.CustomObjectsApi(api)
        self._core = client.CoreV1Api(api)

    async def patch_status(self, ref: ObjectRef, patch: Mapping[str, Any]) -> bool:
        """Merge-patch ``status``; False when the object is gone (nothing left to report on)."""
        return await self._merge_patch(ref, {"status": patch}, status=True, allowed={404})

    async def patch_finalizers(
        self, ref: ObjectRef, finalizers: list[str], resource_version: str
    ) -> bool:
        """Set ``metadata.finalizers`` if the object is still at ``resource_version``.

        False when the object is gone or changed meanwhile: its next watch event brings the
        version to decide on again.
        """
        body = {"metadata": {"finalizers": finalizers, "resourceVersion": resource_version}}
        return await self._merge_patch(ref, body, status=False, allowed={404, 409})

    async def _merge_patch(
        self, ref: ObjectRef, body: Mapping[str, Any], *, status: bool, allowed: set[int]
    ) -> bool:
        """One merge patch; False on an HTTP status in ``allowed``, which the caller expects."""
        custom = self._custom
        try:
            if ref.namespace is None:
                cluster_patch = (
                    custom.patch_cluster_custom_object_status
                    if status
                    else custom.patch_cluster_custom_object
                )
                await cluster_patch(  # type: ignore[call-arg]
                    GROUP, VERSION, ref.plural, ref.name, body, _content_type=MERGE_PATCH
                )
            else:
                namespaced_patch = (
                    custom.patch_namespaced_custom_object_status
                    if status
                    else custom.patch_namespaced_custom_object
                )
                await namespaced_patch(  # type: ignore[call-arg]
                    GROUP,
                    VERSION,
                    ref.namespace,
                    ref.plural,
                    ref.name,
                    body,
                    _content_type=MERGE_PATCH,
                )
        except ApiException as error:
            if error.status in allowed:
                return False
            raise
        return True

    async def post_event(self, ref: ObjectRef, *, warning: bool, reason: str, message: str) -> None:
        """Post a core/v1 Event about ``ref``; failures are logged, never raised."""
        now = dt.datetime.now(dt.UTC)
        namespace = ref.namespace or DEFAULT_NAMESPACE
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


class SecretReader:
    """Reads values from Secrets in one namespace (the operator's); values are never logged."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self._core = client.CoreV1Api(api)
        self.namespace = namespace

    async def read(self, name: str, key: str) -> str:
        try:
            secret = await self._core.read_namespaced_secret(name, self.namespace)
        except ApiException as error:
            raise BackendError(
                f"cannot read Secret {self.namespace}/{name}: HTTP {error.status} {error.reason}"
            ) from error
        data = secret.data or {}
        if key not in data:
            raise BackendError(f"Secret {self.namespace}/{name} has no key {key!r}")
        return base64.b64decode(data[key]).decode()
