"""Upgrading a running installation from the previous release to this checkout's chart and code.

There is no kubelet here, so the chart's pods never run. "Installing the chart" is everything the
API server sees (CRDs, ServiceAccounts, RBAC, Deployments) done with the real helm, and the
operator pods are played by operator processes started *exactly as the chart's Deployment says*:
the container args rendered by ``helm template`` (without the liveness and with a free metrics
port), the namespace the pod would get, and a token of the chart's ServiceAccount, so that each
version runs on its own RBAC. The previous release is commit ``PREVIOUS`` (the last main before
leader election; there are no tags): its chart *and its code*, run from a ``git archive`` of it.

The steps are the ones docs/operations.md gives for an upgrade:

1. previous release: its CRDs applied, its chart installed, its operator (one replica) running
   two ModelDeployments that a real Ray cluster serves (Placed and Available);
2. the old operator scaled to zero (it must not read objects the new CRDs default: the previous
   release refuses fields it does not know), ``kubectl apply --server-side`` of the new CRDs
   (helm never upgrades CRDs), ``helm upgrade`` with the same values: two new replicas start;
3. one takes the Lease and reconciles: no deployment moved, and a Serve application was deployed
   again only where the new version renders a different config for it (this one does: new
   runtime arguments and replicas pinned to their GPU model), checked with Ray's own
   ``last_deployed_time_s`` and ``deployed_app_config``;
4. the next rollout of the new version (the leader stops, the standby takes over): nothing moved,
   nothing deployed again, and the conditions stayed True (their ``lastTransitionTime`` did not
   change).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import tarfile
import urllib.request
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
import yaml

from soberana.operator.core.render import app_name
from soberana.operator.devenv.controlplane import free_port, wait_for
from soberana.operator.devenv.raysites import RaySite, start_ray_site
from soberana.operator.devenv.tinymodels import make_scripted_model
from tests.httpjson import call
from tests.integration.test_chart import release_name, token_kubeconfig
from tests.kube import Cluster

ROOT = Path(__file__).resolve().parents[2]
PREVIOUS = "f90bdea"
LABEL = "test.soberana.io/upgrade"
SETTLE_PASSES = 3


@pytest.fixture(scope="module")
def previous(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The previous release's tree (chart and code), with a ``soberana`` package over its code."""
    root = tmp_path_factory.mktemp("previous")
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", PREVIOUS, "charts", "operator", "serving"],
        capture_output=True,
    )
    assert archive.returncode == 0, (
        f"git archive {PREVIOUS} failed (a shallow clone? fetch the history): "
        f"{archive.stderr.decode()}"
    )
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
        tar.extractall(root / "src", filter="data")
    package = root / "tree" / "soberana"
    package.mkdir(parents=True)
    for name in ("operator", "serving"):
        (package / name).symlink_to(root / "src" / name)
    return root


@pytest.fixture(scope="module")
def ray_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RaySite]:
    site = start_ray_site(
        "upgrade", tmp_path_factory.mktemp("upgrade-site"), worker_ports=(22000, 22499), num_cpus=4
    )
    try:
        yield site
    finally:
        site.stop()


class ChartOperator:
    """One operator pod of a chart, played by a process: the chart's args on its own token."""

    def __init__(
        self, args: list[str], kubeconfig: Path, namespace: str, log: Path, code: Path | None
    ) -> None:
        self.metrics_port: int | None = None
        command = []
        for arg in args:
            if arg.startswith("--liveness="):
                continue  # the kubelet's probe; its fixed port would clash here
            if arg.startswith("--metrics-port="):
                self.metrics_port = free_port()
                command.append(f"--metrics-port={self.metrics_port}")
            else:
                command.append(arg)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "SOBERANA_NAMESPACE": namespace}
        if code is not None:  # the previous release's code, ahead of this checkout's
            env["PYTHONPATH"] = str(code)
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "soberana.operator.cli",
                    *command[:1],
                    f"--kubeconfig={kubeconfig}",
                    "--verbose",
                    *command[1:],
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def metrics(self) -> dict[str, float]:
        assert self.metrics_port is not None
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                text = response.read().decode()
        except OSError:
            return {}
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values

    def passes(self) -> float:
        return self.metrics().get('soberana_reconcile_total{result="success"}', 0.0)


def chart_args(cluster: Cluster, chart: Path, namespace: str, values: list[str]) -> list[str]:
    rendered = cluster.helm("template", "x", str(chart), f"--namespace={namespace}", *values).stdout
    for document in yaml.safe_load_all(rendered):
        if (
            document
            and document["kind"] == "Deployment"
            and document["metadata"]["name"].endswith("-operator")
        ):
            args: list[str] = document["spec"]["template"]["spec"]["containers"][0]["args"]
            return args
    raise AssertionError("no operator Deployment in the chart")


def site(name: str, run: str, ray: RaySite) -> dict[str, Any]:
    return {
        "apiVersion": "soberana.io/v1alpha1",
        "kind": "InferenceSite",
        "metadata": {"name": name, "labels": {LABEL: run}},
        "spec": {
            "tier": "onprem",
            "region": "br-southeast",
            "jurisdiction": "BR",
            "currency": "USD",
            "gpus": [{"model": "L4", "count": 2, "memoryGiB": 24, "hourlyCost": 1.0}],
            "latencyMs": {"br-southeast": 5},
            "backend": {
                "ray": {
                    "dashboardURL": ray.dashboard_url,
                    "serveURL": ray.serve_url,
                    "tokenSecretRef": {"name": "ray-token", "key": "token"},
                }
            },
        },
    }


def deployment(name: str, run: str, model: Path) -> dict[str, Any]:
    return {
        "apiVersion": "soberana.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": f"file://{model}", "format": "torchscript"},
            "resources": {"gpus": 1},  # (the previous release's CRD has no cpus)
            "traffic": [{"region": "br-southeast", "weight": 1}],
            "placement": {"siteSelector": {"matchLabels": {LABEL: run}}},
        },
    }


def conditions(cluster: Cluster, namespace: str, name: str) -> dict[str, tuple[str, str]]:
    status = cluster.get("mdep", name, namespace).get("status") or {}
    return {c["type"]: (c["status"], c["lastTransitionTime"]) for c in status.get("conditions", [])}


def serving(cluster: Cluster, namespace: str, names: list[str]) -> bool:
    return all(
        conditions(cluster, namespace, name).get(kind, ("",))[0] == "True"
        for name in names
        for kind in ("Placed", "Available")
    )


def applications(ray: RaySite) -> dict[str, Any]:
    reply = call("GET", f"{ray.dashboard_url}/api/serve/applications/", headers=ray.auth)
    assert reply.status == 200, reply.body
    return dict(reply.json().get("applications") or {})


def sites_of(status: dict[str, Any]) -> list[tuple[str, int]]:
    return [(p["site"], p["replicas"]) for p in status.get("placements", [])]


def changes(
    cluster: Cluster,
    namespace: str,
    ray: RaySite,
    before: dict[str, dict[str, Any]],
    before_conditions: dict[str, dict[str, tuple[str, str]]],
    deployed: dict[str, Any],
) -> list[str]:
    """``deployment: what changed`` since ``before``: its placements, its conditions (one that
    went False and back has a new transition time), its Serve application deployed again."""
    problems = []
    now = applications(ray)
    for name, status in before.items():
        after = cluster.get("mdep", name, namespace)["status"]
        if sites_of(after) != sites_of(status):
            problems.append(f"{name}: moved from {sites_of(status)} to {sites_of(after)}")
        if conditions(cluster, namespace, name) != before_conditions[name]:
            problems.append(
                f"{name}: conditions {before_conditions[name]} became "
                f"{conditions(cluster, namespace, name)}"
            )
        app = app_name(namespace, name)
        if now[app]["last_deployed_time_s"] != deployed[app]["last_deployed_time_s"]:
            problems.append(f"{name}: its Serve application was deployed again")
    return problems


def apply_crds(cluster: Cluster, chart: Path) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(chart / "crds"))


def test_helm_upgrade_from_the_previous_release_moves_and_redeploys_nothing(
    cluster: Cluster, namespace: str, previous: Path, ray_site: RaySite, tmp_path: Path
) -> None:
    old_chart, new_chart = previous / "src" / "charts" / "soberana", ROOT / "charts" / "soberana"
    values = [
        f"--set=operator.watchNamespaces={{{namespace}}}",
        "--set=operator.probeIntervalSeconds=1",
    ]
    release = release_name()
    account = f"{release}-soberana-operator"
    names = ["chat", "embed"]
    model = make_scripted_model(tmp_path / "model")
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "ray-token"},
            "data": {"token": base64.b64encode(ray_site.token.encode()).decode()},
        },
        namespace=namespace,
    )
    site_name = f"{namespace}-br"
    started: list[ChartOperator] = []
    try:
        # 1. the previous release, serving
        apply_crds(cluster, old_chart)
        cluster.helm(
            "install", release, str(old_chart), f"--namespace={namespace}", "--skip-crds", *values
        )
        old_token = token_kubeconfig(cluster, namespace, account, tmp_path / "old.kubeconfig")
        old = ChartOperator(
            chart_args(cluster, old_chart, namespace, values),
            old_token,
            namespace,
            tmp_path / "old.log",
            previous / "tree",
        )
        started.append(old)
        cluster.apply(site(site_name, namespace, ray_site))
        for name in names:
            cluster.apply(deployment(name, namespace, model), namespace=namespace)
        wait_for(
            lambda: serving(cluster, namespace, names),
            timeout=300,
            interval=1,
            what="both deployments Placed and Available under the previous release",
        )
        before = {name: cluster.get("mdep", name, namespace)["status"] for name in names}
        before_conditions = {name: conditions(cluster, namespace, name) for name in names}
        deployed = applications(ray_site)
        assert len(deployed) == 2

        # 2. the old operator stopped (scaled to 0: it must not read objects the new CRDs
        # default), the new CRDs, then helm upgrade with the same values, which starts the new
        # replicas
        old.stop()
        apply_crds(cluster, new_chart)
        cluster.helm("upgrade", release, str(new_chart), f"--namespace={namespace}", *values)
        history = json.loads(
            cluster.helm("history", release, f"--namespace={namespace}", "-o=json").stdout
        )
        assert [entry["revision"] for entry in history] == [1, 2]

        new_args = chart_args(cluster, new_chart, namespace, values)
        assert "--leader-elect" in new_args
        new_token = token_kubeconfig(cluster, namespace, account, tmp_path / "new.kubeconfig")
        replicas = [
            ChartOperator(new_args, new_token, namespace, tmp_path / f"new-{i}.log", None)
            for i in range(2)
        ]
        started.extend(replicas)
        wait_for(
            lambda: any(replica.passes() >= 1 for replica in replicas),
            timeout=120,
            what="a new replica to lead and reconcile",
        )
        leader = next(replica for replica in replicas if replica.passes() >= 1)
        settled_at = leader.passes() + SETTLE_PASSES
        # the sites are looked at every second, each look may start a pass: a few passes later
        # the new version has seen everything it will see
        wait_for(
            lambda: leader.passes() >= settled_at,
            timeout=120,
            what=f"{SETTLE_PASSES} more passes of the new leader",
        )

        # the new version renders a different Serve config for the same deployment (new
        # runtime arguments, replicas pinned to their GPU model): an application is deployed
        # again once if, and only if, its config changed
        changed = {
            name
            for name in names
            if applications(ray_site)[app_name(namespace, name)]["deployed_app_config"]
            != deployed[app_name(namespace, name)]["deployed_app_config"]
        }
        print(f"deployed again because their Serve config changed: {sorted(changed)}")
        problems = changes(cluster, namespace, ray_site, before, before_conditions, deployed)
        unexpected = [p for p in problems if ": moved" in p or p.split(":")[0] not in changed]
        assert not unexpected, "\n".join(problems)

        def settled_on_new_version() -> bool:
            # the changed configs were applied, Ray runs them, and the statuses say so (Running
            # with every replica ready), so no later pass of this leader changes a condition
            apps = applications(ray_site)
            if any(apps[app_name(namespace, name)]["status"] != "RUNNING" for name in names):
                return False
            for name in names:
                status = cluster.get("mdep", name, namespace)["status"]
                placements = status.get("placements") or []
                if not placements or any(
                    p.get("state") != "Running" or p.get("readyReplicas") != p["replicas"]
                    for p in placements
                ):
                    return False
            return serving(cluster, namespace, names)

        wait_for(
            lambda: "applied Serve config" in leader.log.read_text(errors="replace"),
            timeout=120,
            what="the new leader to apply the changed Serve configs",
        )
        wait_for(
            settled_on_new_version,
            timeout=300,
            interval=1,
            what="both deployments Running and Available again on the new version",
        )

        # 4. the next rollout or failover of the new version: the leader stops, the standby takes
        # over at once (the Lease released) and finds everything as it is: nothing to redo
        before = {name: cluster.get("mdep", name, namespace)["status"] for name in names}
        before_conditions = {name: conditions(cluster, namespace, name) for name in names}
        deployed = applications(ray_site)
        standby = next(replica for replica in replicas if replica is not leader)
        leader.stop()

        def standby_has_looked() -> bool:
            # its first pass, then its site agent's first look (which adopts or applies the
            # site's config) and the pass that look starts
            log = standby.log.read_text(errors="replace")
            looked = "already runs Serve config" in log or "applied Serve config" in log
            return looked and standby.passes() >= 2

        wait_for(standby_has_looked, timeout=120, what="the standby, now leading, to look")
        assert "applied Serve config" not in standby.log.read_text(errors="replace")
        problems = changes(cluster, namespace, ray_site, before, before_conditions, deployed)
        leader = standby
        assert (
            leader.metrics().get('soberana_leader_election_master_status{name="soberana-operator"}')
            == 1
        )
        for log in [old.log, *[replica.log for replica in replicas]]:
            text = log.read_text(errors="replace")
            for denied in ("Forbidden", "forbidden", "Traceback"):
                assert denied not in text, f"{denied!r} in {log.name}:\n{text[-4000:]}"
        assert not problems, "a takeover changed what runs:\n" + "\n".join(problems)
    finally:
        for process in started:
            process.stop()
        for process in started:
            print(f"---- {process.log.name} ----\n{process.log.read_text()[-4000:]}")
        for name in names:
            cluster.kubectl(
                "delete", "mdep", name, f"--namespace={namespace}", "--wait=false", check=False
            )
        cluster.kubectl("delete", "isite", site_name, "--wait=false", check=False)
        cluster.helm("uninstall", release, f"--namespace={namespace}", check=False)
        # the session's other tests run on this checkout's CRDs
        apply_crds(cluster, new_chart)
