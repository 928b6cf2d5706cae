"""The container image, built here with buildah (``hack/build_image.sh``, as ``make image`` does)
and run the way the chart runs it: as uid 65532, read-only root file system, only ``args``.

The build is reused while its inputs (Containerfile, pyproject.toml, setup.py, operator/, serving/)
are unchanged. Containers run with podman (runtime runc, host network: the local API server is on
loopback) on the chart's own ServiceAccounts: the chart is rendered with helm, its accounts and
RBAC created, and a token minted for each.
"""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from soberana.operator.devenv.controlplane import free_port, wait_for
from tests.httpjson import call
from tests.kube import Cluster

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "soberana"
ARCHIVE = ROOT / "build" / "image" / "soberana.oci.tar"
UID = 65532
IN_CONTAINER = "/etc/soberana/kubeconfig"
RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
Manifest = dict[str, Any]
# a cold first run installs the tools and builds the base and the image (a few minutes on 2 cores)
pytestmark = pytest.mark.timeout(1200)


@pytest.fixture(scope="module")
def image() -> str:
    """The image's name in local container storage, built (or found up to date) first."""
    result = subprocess.run(
        [str(ROOT / "hack" / "build_image.sh")],
        capture_output=True,
        text=True,
        timeout=1500,
    )
    print(result.stderr)
    assert result.returncode == 0, f"hack/build_image.sh failed:\n{result.stderr[-6000:]}"
    return (ARCHIVE.parent / "soberana.ref").read_text().strip()


def podman_run(
    image: str, *args: str, name: str, kubeconfig: Path | None = None, entrypoint: str = ""
) -> list[str]:
    """``podman run`` as the chart runs the pod: read-only root fs, /tmp writable (a tmpfs here,
    an emptyDir in the chart), all capabilities dropped; the user is the image's own (65532)."""
    extra = [f"--volume={kubeconfig}:{IN_CONTAINER}:ro"] if kubeconfig else []
    extra += [f"--entrypoint={entrypoint}"] if entrypoint else []
    return [
        "podman",
        "run",
        "--rm",
        f"--name={name}",
        "--runtime=runc",
        "--network=host",
        "--ulimit=nofile=16384:16384",
        "--ulimit=nproc=4096:4096",
        "--read-only",
        "--cap-drop=all",
        *extra,
        image,
        *args,
    ]


class Container:
    """One container run by podman in the background; its output goes to ``log``."""

    def __init__(self, argv: list[str], name: str, log: Path) -> None:
        self.name, self.log = name, log
        with log.open("wb") as out:
            self.process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def running(self) -> bool:
        assert self.process.poll() is None, f"the container exited:\n{self.output()[-4000:]}"
        return True

    def stop(self) -> None:
        subprocess.run(["podman", "rm", "--force", "--time=5", self.name], capture_output=True)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        print(f"---- {self.name} ----\n{self.output()[-4000:]}")


@pytest.fixture
def containers() -> Iterator[list[Container]]:
    started: list[Container] = []
    yield started
    for container in started:
        container.stop()


def start(
    containers: list[Container], image: str, tmp_path: Path, *args: str, kubeconfig: Path
) -> Container:
    name = f"soberana-test-{uuid.uuid4().hex[:8]}"
    argv = podman_run(
        image, *args, f"--kubeconfig={IN_CONTAINER}", name=name, kubeconfig=kubeconfig
    )
    container = Container(argv, name, tmp_path / f"{name}.log")
    containers.append(container)
    return container


# ------------------------------------------------------------------ the archive (acceptance)


def oci_index(archive: tarfile.TarFile) -> Any:
    member = archive.extractfile("index.json")
    assert member is not None
    return json.load(member)


def oci_blob(archive: tarfile.TarFile, digest: str) -> Any:
    member = archive.extractfile("blobs/" + digest.replace(":", "/"))
    assert member is not None, digest
    return json.load(member)


def test_archive_config_has_the_entrypoint_and_user(image: str) -> None:
    with tarfile.open(ARCHIVE) as archive:
        index = oci_index(archive)
        manifests = index["manifests"]
        assert len(manifests) == 1
        manifest = oci_blob(archive, manifests[0]["digest"])
        config = oci_blob(archive, manifest["config"]["digest"])["config"]
    assert config["Entrypoint"] == ["soberana"]
    assert config["User"] == f"{UID}:{UID}"
    assert "HOME=/tmp" in config["Env"]


def test_unpacked_archive_runs_help_as_65532(image: str, tmp_path: Path) -> None:
    """``umoci unpack`` makes a runtime bundle from the archive alone; runc runs its entrypoint
    with the image's own user, read-only, and ``soberana --help`` exits 0."""
    layout = tmp_path / "layout"
    with tarfile.open(ARCHIVE) as archive:
        archive.extractall(layout, filter="tar")
        tag = oci_index(archive)["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
    bundle = tmp_path / "bundle"
    unpacked = subprocess.run(
        ["umoci", "unpack", "--image", f"{layout}:{tag}", str(bundle)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert unpacked.returncode == 0, unpacked.stderr
    spec = json.loads((bundle / "config.json").read_text())
    process = spec["process"]
    assert (process["user"]["uid"], process["user"]["gid"]) == (UID, UID)
    assert process["args"] == ["soberana", "--help"]
    process["terminal"] = False
    process["rlimits"] = [
        {"type": "RLIMIT_NOFILE", "hard": 16384, "soft": 16384},
        {"type": "RLIMIT_NPROC", "hard": 4096, "soft": 4096},
    ]
    spec["root"]["readonly"] = True
    (bundle / "config.json").write_text(json.dumps(spec))
    ran = subprocess.run(
        ["runc", "run", "--bundle", str(bundle), f"soberana-test-{uuid.uuid4().hex[:8]}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "operator" in ran.stdout and "router" in ran.stdout


# ------------------------------------------------------------------ podman


def test_help_runs_as_65532_on_a_read_only_root(image: str) -> None:
    """The image's own user (no --user given) and HOME, and no serving extra inside."""
    name = f"soberana-test-{uuid.uuid4().hex[:8]}"
    result = subprocess.run(
        podman_run(image, "--help", name=name), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    for command in ("operator", "router", "plan", "render"):
        assert command in result.stdout
    # the serving extra stays out of the image: Ray and torch run on the sites
    probe = subprocess.run(
        podman_run(
            image,
            "-c",
            "import importlib.util as u, os; "
            "print(os.getuid(), os.environ['HOME'], u.find_spec('ray'), u.find_spec('torch'))",
            name=f"{name}-python",
            entrypoint="python3",
        ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split() == [str(UID), "/tmp", "None", "None"]


@dataclass(frozen=True)
class Release:
    name: str
    namespace: str

    def account(self, component: str) -> str:
        return f"{self.name}-soberana-{component}"


@pytest.fixture
def release(cluster: Cluster, namespace: str) -> Iterator[Release]:
    """The chart's ServiceAccounts and RBAC (rendered by helm, nothing else of the chart), with the
    operator watching only this test's namespace."""
    installed = Release(f"img{uuid.uuid4().hex[:6]}", namespace)
    rendered = cluster.helm(
        "template",
        installed.name,
        str(CHART),
        f"--namespace={namespace}",
        f"--set=operator.watchNamespaces={{{namespace}}}",
    ).stdout
    rbac = [m for m in yaml.safe_load_all(rendered) if m and m["kind"] in RBAC_KINDS]
    assert {m["kind"] for m in rbac} >= RBAC_KINDS
    cluster.apply(*rbac, namespace=namespace)
    try:
        yield installed
    finally:
        for m in rbac:
            if m["kind"] in {"ClusterRole", "ClusterRoleBinding"}:
                cluster.kubectl("delete", m["kind"], m["metadata"]["name"], check=False)


def token_kubeconfig(cluster: Cluster, release: Release, component: str, path: Path) -> Path:
    """A kubeconfig (readable by the container's uid) holding a fresh token of the chart's
    ``component`` ServiceAccount."""
    account = release.account(component)
    token = cluster.kubectl(
        "create", "token", account, f"--namespace={release.namespace}", "--duration=15m"
    ).stdout.strip()
    admin = yaml.safe_load(
        cluster.kubectl("config", "view", "--raw", "--minify", "--flatten").stdout
    )
    server = admin["clusters"][0]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [server],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": account, "context": {"cluster": server["name"], "user": account}}],
        "current-context": account,
    }
    path.write_text(yaml.safe_dump(config))
    os.chmod(path, 0o644)
    return path


def test_operator_from_the_image_places_a_deployment(
    cluster: Cluster,
    release: Release,
    image: str,
    containers: list[Container],
    tmp_path: Path,
) -> None:
    ns = release.namespace
    kubeconfig = token_kubeconfig(cluster, release, "operator", tmp_path / "operator.kubeconfig")
    site_name = f"{ns}-br"
    cluster.apply(
        {
            "apiVersion": "soberana.io/v1alpha1",
            "kind": "InferenceSite",
            "metadata": {"name": site_name, "labels": {"test.soberana.io/run": ns}},
            "spec": {
                "tier": "cloud",
                "region": "br-southeast",
                "jurisdiction": "BR",
                "gpus": [{"model": "L4", "count": 2, "memoryGiB": 24, "hourlyCost": 0.8}],
                "latencyMs": {"br-southeast": 5},
                # nothing listens on the discard port; placement-only never calls it
                "backend": {
                    "ray": {"dashboardURL": "http://127.0.0.1:9", "serveURL": "http://127.0.0.1:9"}
                },
            },
        }
    )
    cluster.apply(
        {
            "apiVersion": "soberana.io/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "chat"},
            "spec": {
                "model": {"uri": "file:///models/tiny", "format": "torchscript"},
                "traffic": [{"region": "br-southeast"}],
                "placement": {"siteSelector": {"matchLabels": {"test.soberana.io/run": ns}}},
            },
        },
        namespace=ns,
    )
    liveness = free_port()
    try:
        operator = start(
            containers,
            image,
            tmp_path,
            "operator",
            f"--liveness=http://127.0.0.1:{liveness}/healthz",
            f"--namespace={ns}",
            f"--secrets-namespace={ns}",
            "--placement-only",
            "--debounce=0.2",
            "--verbose",
            kubeconfig=kubeconfig,
        )

        def placed() -> bool:
            operator.running()
            conditions = (cluster.get("mdep", "chat", ns).get("status") or {}).get("conditions")
            return any(c["type"] == "Placed" and c["status"] == "True" for c in conditions or [])

        wait_for(placed, timeout=90, what="the deployment placed by the operator in the image")
        assert cluster.get("mdep", "chat", ns)["status"]["sites"] == site_name

        def live() -> bool:
            operator.running()
            try:
                return call("GET", f"http://127.0.0.1:{liveness}/healthz", timeout=5).status == 200
            except OSError:
                return False

        wait_for(live, timeout=30, what="the operator's liveness endpoint")
        log = operator.output()
        for denied in ("Forbidden", "forbidden", "Not enough permissions", "Read-only file"):
            assert denied not in log, f"{denied!r} in the operator log:\n{log[-4000:]}"
    finally:
        cluster.kubectl("delete", "isite", site_name, "--wait=false", check=False)


def test_router_from_the_image_is_ready(
    cluster: Cluster,
    release: Release,
    image: str,
    containers: list[Container],
    tmp_path: Path,
) -> None:
    kubeconfig = token_kubeconfig(cluster, release, "router", tmp_path / "router.kubeconfig")
    port = free_port()
    router = start(
        containers,
        image,
        tmp_path,
        "router",
        "--host=127.0.0.1",
        f"--port={port}",
        "--region=br-southeast",
        kubeconfig=kubeconfig,
    )
    answers: list[Any] = []

    def ready() -> bool:
        router.running()
        try:
            reply = call("GET", f"http://127.0.0.1:{port}/readyz", timeout=5)
        except OSError:
            return False
        answers.append(reply.json())
        return reply.status == 200

    wait_for(ready, timeout=60, what="the router in the image answering /readyz")
    assert answers[-1]["status"] == "ok"
    assert "Forbidden" not in router.output()
