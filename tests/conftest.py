"""Shared fixtures: a real local control plane for the session, a fresh namespace per test.

Everything under tests/integration/ is marked ``integration``; ``pytest -m "not integration"`` (or
``make test-unit``) runs the fast pure tests alone. The control plane is started through the same
code as ``soberana dev up`` and dies with the test process even if pytest is killed.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from soberana.operator.core.crds import custom_resource_definitions
from soberana.operator.devenv.binaries import Binaries, ensure_all
from soberana.operator.devenv.controlplane import ControlPlane
from tests.kube import Cluster

_INTEGRATION = Path(__file__).parent / "integration"

# Ray clusters started by tests (in this process or as children) stay on loopback: without this,
# Ray replaces 127.0.0.1 with the machine's "remotely reachable" address
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _INTEGRATION in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def binaries() -> Binaries:
    """The four real binaries, built or fetched into ~/.cache/soberana on first use."""
    return ensure_all()


@pytest.fixture(scope="session")
def control_plane(
    tmp_path_factory: pytest.TempPathFactory, binaries: Binaries
) -> Iterator[ControlPlane]:
    plane = ControlPlane(tmp_path_factory.mktemp("control-plane"))
    plane.up(binaries=binaries, die_with_parent=True, crds=custom_resource_definitions())
    try:
        yield plane
    finally:
        plane.down(quiet=True)


@pytest.fixture(scope="session")
def cluster(control_plane: ControlPlane, binaries: Binaries) -> Cluster:
    """The main API server, with soberana's CRDs installed."""
    return Cluster(control_plane.kubeconfig(), binaries.kubectl, binaries.helm)


@pytest.fixture(scope="session")
def site_cluster(control_plane: ControlPlane, binaries: Binaries) -> Cluster:
    """A second, independent API server on the same etcd: stands in for a remote site cluster."""
    kubeconfig = control_plane.add_apiserver("site", binaries=binaries, die_with_parent=True)
    return Cluster(kubeconfig, binaries.kubectl, binaries.helm)


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards."""
    test = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40].strip("-")
    name = f"t-{test}-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        # No kube-controller-manager runs, so a deleted namespace keeps its objects (Terminating).
        # Mark this test's ModelDeployments deleted first: every later operator leaves them out
        # of its plans, and they cannot take capacity from another test's sites.
        cluster.kubectl(
            "delete", "modeldeployments", "--all", "-n", name, "--wait=false", check=False
        )
        cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
