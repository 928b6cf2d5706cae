"""Build the backend an InferenceSite asks for, reading the Secrets it refers to."""

from __future__ import annotations

from typing import Protocol

from soberana.operator.backends.base import BackendError, BackendFactory, SiteBackend
from soberana.operator.backends.kuberay import KubeRaySiteClient
from soberana.operator.backends.ray import RayDashboardClient
from soberana.operator.core.api import InferenceSite


class SecretSource(Protocol):
    async def read(self, name: str, key: str) -> str:
        """The value of ``key`` in Secret ``name``; raises :class:`BackendError` if missing."""


def backend_for(site: InferenceSite, secrets: SecretSource) -> tuple[str, BackendFactory]:
    """(identity, factory): the identity changes whenever the site's backend settings do."""
    backend = site.spec.backend
    identity = backend.model_dump_json()

    async def make() -> SiteBackend:
        if backend.ray is not None:
            ref = backend.ray.token_secret_ref
            token = await secrets.read(ref.name, ref.key) if ref is not None else None
            return RayDashboardClient(str(backend.ray.dashboard_url), token=token)
        if backend.kuberay is not None:
            ref = backend.kuberay.kubeconfig_secret_ref
            kubeconfig = await secrets.read(ref.name, ref.key)
            return await KubeRaySiteClient.connect(
                kubeconfig,
                site=site.metadata.name,
                namespace=backend.kuberay.namespace,
                gpus=site.spec.gpus_total,
            )
        raise BackendError("the site names no backend")

    return identity, make
