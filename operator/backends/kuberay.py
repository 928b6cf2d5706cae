"""The ``kuberay`` backend: a RayService in the site's own Kubernetes cluster, run by KubeRay.

soberana writes one RayService per site (``soberana-<site>``) into the namespace the site names,
with ``serveConfigV2`` set to the site's rendered Serve config, and reads the applications' states
back from the RayService status that KubeRay maintains. The site cluster is reached with the
kubeconfig stored in the Secret the site refers to. RayServices soberana did not create are
reported, never touched.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import yaml
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from soberana.operator.backends.base import (
    BackendError,
    ServeConfig,
    SiteReport,
    serve_app_state,
)
from soberana.operator.core.api import PlacementState
from soberana.operator.core.status import Observation

GROUP, VERSION, PLURAL = "ray.io", "v1", "rayservices"
MANAGED_BY = "app.kubernetes.io/managed-by"
SITE_LABEL = "soberana.io/site"
FIELD_MANAGER = "soberana"
RAY_IMAGE = os.environ.get("SOBERANA_RAY_IMAGE", "rayproject/ray:2.60.0")


def rayservice_name(site: str) -> str:
    return f"soberana-{site}"[:63].rstrip("-")


def render_rayservice(site: str, namespace: str, config: ServeConfig, gpus: int) -> dict[str, Any]:
    """The RayService running ``config`` at ``site``: a head and an autoscaled GPU worker group."""
    container = {"name": "ray", "image": RAY_IMAGE}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "RayService",
        "metadata": {
            "name": rayservice_name(site),
            "namespace": namespace,
            "labels": {MANAGED_BY: "soberana", SITE_LABEL: site},
        },
        "spec": {
            "serveConfigV2": yaml.safe_dump(dict(config), sort_keys=True),
            "rayClusterConfig": {
                "enableInTreeAutoscaling": True,
                "headGroupSpec": {
                    "rayStartParams": {"num-gpus": "0"},
                    "template": {"spec": {"containers": [container]}},
                },
                "workerGroupSpecs": [
                    {
                        "groupName": "gpu",
                        "replicas": 0,
                        "minReplicas": 0,
                        "maxReplicas": max(gpus, 1),
                        "rayStartParams": {},
                        "template": {
                            "spec": {
                                "containers": [
                                    {**container, "resources": {"limits": {"nvidia.com/gpu": "1"}}}
                                ]
                            }
                        },
                    }
                ],
            },
        },
    }


def observe_rayservice(rayservice: Mapping[str, Any], config: ServeConfig | None) -> SiteReport:
    """Application states from a RayService status; ready replicas count only healthy apps."""
    wanted = {
        app["name"]: sum(d.get("num_replicas", 1) for d in app.get("deployments", []))
        for app in (config or {}).get("applications", [])
    }
    statuses = (rayservice.get("status") or {}).get("activeServiceStatus", {}).get(
        "applicationStatuses"
    ) or {}
    applications = {}
    for name, app in statuses.items():
        state = serve_app_state(app.get("status"))
        healthy = all(
            d.get("status") == "HEALTHY"
            for d in (app.get("serveDeploymentStatuses") or {}).values()
        )
        ready = wanted.get(name, 0) if state is PlacementState.RUNNING and healthy else 0
        applications[name] = Observation(state, ready, str(app.get("message") or "")[:300])
    return SiteReport(applications=applications)


class KubeRaySiteClient:
    """A ``kuberay`` site's backend: a RayService in a remote cluster, server-side applied."""

    def __init__(self, api: client.ApiClient, *, site: str, namespace: str, gpus: int) -> None:
        self._api = api
        self._custom = client.CustomObjectsApi(api)
        self.site, self.namespace, self.gpus = site, namespace, gpus
        self._applied: ServeConfig | None = None

    @classmethod
    async def connect(
        cls, kubeconfig: str, *, site: str, namespace: str, gpus: int
    ) -> KubeRaySiteClient:
        """A backend for the cluster that ``kubeconfig`` (the text of a kubeconfig file) names."""
        configuration = client.Configuration()
        try:
            await config.load_kube_config_from_dict(
                yaml.safe_load(kubeconfig), client_configuration=configuration
            )
        except (config.ConfigException, yaml.YAMLError, TypeError) as error:
            raise BackendError(f"the site's kubeconfig is not usable: {error}") from error
        return cls(client.ApiClient(configuration), site=site, namespace=namespace, gpus=gpus)

    async def apply(self, config: ServeConfig) -> None:
        body = render_rayservice(self.site, self.namespace, config, self.gpus)
        try:
            await self._custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                body["metadata"]["name"],
                body,
                field_manager=FIELD_MANAGER,
                force=True,
                _content_type="application/apply-patch+yaml",  # type: ignore[call-arg]
            )
        except ApiException as error:
            raise BackendError(_describe(error, "applying the RayService")) from error
        self._applied = config

    async def observe(self) -> SiteReport:
        try:
            listed = await self._custom.list_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL
            )
        except ApiException as error:
            raise BackendError(_describe(error, "reading RayServices")) from error
        except (OSError, TimeoutError) as error:
            raise BackendError(f"the site cluster is unreachable: {error}") from error
        ours = rayservice_name(self.site)
        items = listed.get("items", [])
        foreign = tuple(
            sorted(
                item["metadata"]["name"]
                for item in items
                if item["metadata"].get("labels", {}).get(MANAGED_BY) != "soberana"
            )
        )
        mine = next((item for item in items if item["metadata"]["name"] == ours), None)
        report = observe_rayservice(mine or {}, self._applied)
        return SiteReport(
            applications=report.applications,
            foreign=foreign,
            present=frozenset(report.applications),
        )

    async def close(self) -> None:
        await self._api.close()


def _describe(error: ApiException, doing: str) -> str:
    reason = error.reason or "error"
    if error.status == 404:
        return f"{doing}: not found (is KubeRay's RayService CRD installed in the site cluster?)"
    if error.status in (401, 403):
        return f"{doing}: HTTP {error.status} {reason}: the kubeconfig's user lacks permission"
    return f"{doing}: HTTP {error.status} {reason}: {str(error.body)[:300]}"
