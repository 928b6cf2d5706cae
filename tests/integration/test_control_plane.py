"""The local control plane is a real Kubernetes API: kubectl works against it, CRDs validate, RBAC
is enforced, and ``soberana dev up/down`` manage exactly their own processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from soberana.operator.devenv.binaries import KUBERNETES_VERSION, Binaries
from soberana.operator.devenv.controlplane import ControlPlane, ControlPlaneError
from tests.kube import Cluster

WIDGET_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.test.soberana.io}
spec:
  group: test.soberana.io
  names: {kind: Widget, plural: widgets, singular: widget}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size: {type: integer, minimum: 1}
              colour: {type: string, enum: [red, green]}
            x-kubernetes-validations:
            - rule: "self.size <= 10 || self.colour == 'red'"
              message: "spec.size above 10 needs colour red"
"""


def test_readyz_and_real_version(cluster: Cluster) -> None:
    assert cluster.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"
    version = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert version["serverVersion"]["gitVersion"] == f"v{KUBERNETES_VERSION}"
    assert version["clientVersion"]["gitVersion"].startswith("v1.37.")


def test_soberana_crds_are_installed(cluster: Cluster) -> None:
    names = cluster.kubectl("get", "crd", "-o", "name").stdout.split()
    assert "customresourcedefinition.apiextensions.k8s.io/inferencesites.soberana.io" in names
    assert "customresourcedefinition.apiextensions.k8s.io/modeldeployments.soberana.io" in names


def test_crd_object_round_trip_and_invalid_object_refused(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("apply", "-f", "-", input=WIDGET_CRD)
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "crd/widgets.test.soberana.io"
    )
    good = "apiVersion: test.soberana.io/v1\nkind: Widget\nmetadata: {name: w1}\nspec: {size: 3}\n"
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=good)
    read_back = cluster.get("widget", "w1", namespace)
    assert read_back["spec"] == {"size": 3}

    negative = good.replace("w1", "w2").replace("size: 3", "size: -1")
    refused = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=negative, check=False)
    assert refused.returncode != 0
    assert "spec.size" in refused.stderr

    cel = good.replace("w1", "w3").replace("size: 3", "size: 11, colour: green")
    refused = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=cel, check=False)
    assert refused.returncode != 0
    assert "spec.size above 10 needs colour red" in refused.stderr


def test_rbac_is_enforced(cluster: Cluster, namespace: str) -> None:
    nobody = "system:serviceaccount:default:nobody"
    answer = cluster.kubectl(
        "auth", "can-i", "list", "secrets", "-n", namespace, "--as", nobody, check=False
    )
    assert answer.stdout.strip() == "no"
    assert cluster.kubectl("auth", "can-i", "'*'", "'*'").stdout.strip() == "yes"


def test_site_cluster_is_independent(cluster: Cluster, site_cluster: Cluster) -> None:
    site_cluster.kubectl("create", "namespace", "only-on-site")
    assert site_cluster.kubectl("get", "namespace", "only-on-site", check=False).returncode == 0
    assert cluster.kubectl("get", "namespace", "only-on-site", check=False).returncode != 0
    # the site cluster has no soberana CRDs unless a test installs some
    assert "soberana.io" not in site_cluster.kubectl("get", "crd", "-o", "name").stdout


def _soberana(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "soberana.operator.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_dev_up_status_down(tmp_path: Path, binaries: Binaries) -> None:
    state_dir, kubeconfig = tmp_path / "state", tmp_path / "kc"
    up = _soberana("dev", "up", "--kubeconfig", str(kubeconfig), "--state-dir", str(state_dir))
    assert up.returncode == 0, up.stderr
    plane = ControlPlane(state_dir)
    try:
        user = Cluster(kubeconfig, binaries.kubectl, binaries.helm)
        assert user.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"
        crds = user.kubectl("get", "crd").stdout
        assert "inferencesites.soberana.io" in crds
        assert "modeldeployments.soberana.io" in crds

        again = _soberana("dev", "up", "--state-dir", str(state_dir))
        assert again.returncode == 0, again.stderr
        assert "already running" in again.stderr

        status = _soberana("dev", "status", "--state-dir", str(state_dir), "-o", "json")
        report = json.loads(status.stdout)
        assert report["running"] is True
        assert report["apiservers"]["main"]["ready"] is True
        state = plane.state()
        assert state is not None
        records = [state.etcd, *(a.process for a in state.apiservers.values())]
        assert all(r.alive() for r in records)
    finally:
        down = _soberana("dev", "down", "--state-dir", str(state_dir))
    assert down.returncode == 0, down.stderr
    assert not any(r.alive() for r in records), "a process started by `dev up` survived `dev down`"
    assert plane.state() is None
    assert _soberana("dev", "status", "--state-dir", str(state_dir)).returncode == 1


def test_failed_start_shows_the_log(tmp_path: Path, binaries: Binaries) -> None:
    plane = ControlPlane(tmp_path / "state")
    # an etcd that cannot start: its data dir is a file
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "etcd-data").write_text("not a directory")
    try:
        with pytest.raises(ControlPlaneError, match="etcd exited during start-up"):
            plane.up(binaries=binaries, die_with_parent=True)
    finally:
        plane.down(quiet=True)
