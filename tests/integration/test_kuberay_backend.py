"""The kuberay backend against a second real API server with KubeRay's real CRDs installed.

No KubeRay controller runs there: the test plays its part by writing the RayService status
subresource, as KubeRay would, and checks what the backend reads back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from soberana.operator.backends.base import BackendError
from soberana.operator.backends.kuberay import KubeRaySiteClient, rayservice_name
from soberana.operator.core.api import ModelDeploymentSpec, PlacementState
from soberana.operator.core.placement.world import Deployment
from soberana.operator.core.render import SiteApplication, app_name, render_serve_config
from tests.kube import Cluster

KUBERAY_CRDS = Path(__file__).resolve().parents[2].parent / "shared" / "kuberay"


@pytest.fixture(scope="module")
def kuberay_cluster(site_cluster: Cluster) -> Cluster:
    for crd in ("ray.io_rayservices.yaml", "ray.io_rayclusters.yaml"):
        # the CRDs are too large for client-side apply's annotation
        site_cluster.kubectl("apply", "--server-side", "-f", str(KUBERAY_CRDS / crd))
    site_cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/rayservices.ray.io",
        "crd/rayclusters.ray.io",
    )
    return site_cluster


@pytest.fixture
async def backend(
    kuberay_cluster: Cluster, request: pytest.FixtureRequest
) -> AsyncIterator[KubeRaySiteClient]:
    namespace = f"kr-{request.node.name.lower().replace('_', '-')[:30]}".rstrip("-")
    kuberay_cluster.kubectl("create", "namespace", namespace)
    connected = await KubeRaySiteClient.connect(
        kuberay_cluster.kubeconfig.read_text(), site="sao-paulo-1", namespace=namespace, gpus=4
    )
    yield connected
    await connected.close()


def config() -> dict[str, Any]:
    spec = ModelDeploymentSpec.model_validate(
        {
            "model": {"uri": "pvc://models/qwen", "format": "transformers"},
            "replicas": 2,
            "resources": {"gpus": 1},
            "traffic": [{"region": "br-southeast", "weight": 1}],
        }
    )
    return render_serve_config(
        "sao-paulo-1", [SiteApplication(Deployment("ml", "qwen-chat", spec), replicas=2)]
    )


async def test_rayservice_is_accepted_and_status_is_read_back(
    backend: KubeRaySiteClient, kuberay_cluster: Cluster
) -> None:
    rendered = config()
    await backend.apply(rendered)
    name = rayservice_name("sao-paulo-1")
    stored: dict[str, Any] = kuberay_cluster.get("rayservice", name, backend.namespace)
    assert yaml.safe_load(stored["spec"]["serveConfigV2"]) == rendered
    assert stored["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "soberana"

    report = await backend.observe()
    assert report.applications == {}, "KubeRay has not reported anything yet"

    app = app_name("ml", "qwen-chat")
    status: dict[str, Any] = {
        "status": {
            "serviceStatus": "Running",
            "activeServiceStatus": {
                "applicationStatuses": {
                    app: {
                        "status": "RUNNING",
                        "serveDeploymentStatuses": {"Model": {"status": "HEALTHY"}},
                    }
                }
            },
        }
    }
    kuberay_cluster.kubectl(
        "patch",
        "rayservice",
        name,
        "-n",
        backend.namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        yaml.safe_dump(status),
    )
    report = await backend.observe()
    assert report.applications[app].state is PlacementState.RUNNING
    assert report.applications[app].ready_replicas == 2

    status["status"]["activeServiceStatus"]["applicationStatuses"][app] = {
        "status": "DEPLOY_FAILED",
        "message": "ImportError: no module named soberana",
    }
    kuberay_cluster.kubectl(
        "patch",
        "rayservice",
        name,
        "-n",
        backend.namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        yaml.safe_dump(status),
    )
    failed = (await backend.observe()).applications[app]
    assert failed.state is PlacementState.FAILED
    assert "ImportError" in failed.message


async def test_reapply_is_idempotent_and_foreign_rayservices_are_reported(
    backend: KubeRaySiteClient, kuberay_cluster: Cluster
) -> None:
    await backend.apply(config())
    await backend.apply(config())  # server-side apply: the same object, no conflict
    foreign = {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": "someone-elses", "namespace": backend.namespace},
        "spec": {
            "rayClusterConfig": {
                "headGroupSpec": {
                    "rayStartParams": {},
                    "template": {
                        "spec": {"containers": [{"name": "ray", "image": "rayproject/ray"}]}
                    },
                }
            }
        },
    }
    kuberay_cluster.apply(foreign)
    report = await backend.observe()
    assert report.foreign == ("someone-elses",)
    # soberana never touches it
    await backend.apply({"applications": []})
    assert kuberay_cluster.get("rayservice", "someone-elses", backend.namespace)


async def test_unreachable_cluster_is_a_clear_error(kuberay_cluster: Cluster) -> None:
    kubeconfig = yaml.safe_load(kuberay_cluster.kubeconfig.read_text())
    kubeconfig["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:9"
    backend = await KubeRaySiteClient.connect(
        yaml.safe_dump(kubeconfig), site="s", namespace="x", gpus=1
    )
    try:
        with pytest.raises(BackendError, match="unreachable"):
            await backend.observe()
    finally:
        await backend.close()


async def test_bad_kubeconfig_is_a_clear_error() -> None:
    with pytest.raises(BackendError, match="kubeconfig is not usable"):
        await KubeRaySiteClient.connect("not: [a kubeconfig", site="s", namespace="x", gpus=1)
