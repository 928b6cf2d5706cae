"""Two operator processes with ``--leader-elect`` on a real API server: one writes, the other only
waits; when the leader is killed the standby takes over, and a leader that cannot renew in time
stops writing and exits.

The processes run with the chart's lease timing (values.yaml), so the takeover here is the one a
cluster gets; bench/bench_takeover.py measures it. The standby's silence is checked three ways:
its metrics (leader status 0, no status write, no refused write), the order of its log lines
(no pass before it leads), and the Lease's holder at each step.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from soberana.operator.devenv.controlplane import free_port, wait_for
from tests.integration.operator_process import OperatorProcess
from tests.kube import Cluster

CHART = Path(__file__).resolve().parents[2] / "charts" / "soberana"
TIMING = yaml.safe_load((CHART / "values.yaml").read_text())["operator"]["leaderElection"]
LEASE = "soberana-operator"
LABEL = "test.soberana.io/run"


def site(name: str, run: str) -> dict[str, Any]:
    return {
        "apiVersion": "soberana.io/v1alpha1",
        "kind": "InferenceSite",
        "metadata": {"name": name, "labels": {LABEL: run}},
        "spec": {
            "tier": "cloud",
            "region": "br-southeast",
            "jurisdiction": "BR",
            "gpus": [{"model": "L4", "count": 8, "memoryGiB": 24, "hourlyCost": 1.0}],
            "latencyMs": {"br-southeast": 5},
            "backend": {
                "ray": {"dashboardURL": "http://127.0.0.1:9", "serveURL": "http://127.0.0.1:9"}
            },
        },
    }


def deployment(name: str, run: str) -> dict[str, Any]:
    return {
        "apiVersion": "soberana.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": "file:///models/tiny", "format": "torchscript"},
            "traffic": [{"region": "br-southeast"}],
            "placement": {"siteSelector": {"matchLabels": {LABEL: run}}},
        },
    }


class Replica:
    """One operator process with leader election, its identity and its metrics port."""

    def __init__(
        self, cluster: Cluster, namespace: str, identity: str, log: Path, timing: dict[str, float]
    ) -> None:
        self.identity, self.port = identity, free_port()
        self.process = OperatorProcess(
            cluster.kubeconfig,
            log,
            "--placement-only",
            f"--namespace={namespace}",
            f"--secrets-namespace={namespace}",
            "--leader-elect",
            f"--leader-elect-identity={identity}",
            f"--leader-elect-lease-duration={timing['leaseDurationSeconds']}",
            f"--leader-elect-renew-deadline={timing['renewDeadlineSeconds']}",
            f"--leader-elect-retry-period={timing['retryPeriodSeconds']}",
            f"--metrics-port={self.port}",
        )

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def serving_metrics(self) -> bool:
        try:
            self.metrics()
        except OSError:
            return False
        return True

    def leader_status(self) -> float:
        return self.metrics()[("soberana_leader_election_master_status", (("name", LEASE),))]

    def status_writes(self) -> float:
        return sum(v for (n, _), v in self.metrics().items() if n == "soberana_status_writes_total")


@pytest.fixture
def replicas(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[list[Replica]]:
    site_name = f"{namespace}-br"
    cluster.apply(site(site_name, namespace))
    started = [
        Replica(cluster, namespace, f"{name}-{namespace}", tmp_path / f"{name}.log", TIMING)
        for name in ("a", "b")
    ]
    for replica in started:
        replica.process.start()
    try:
        yield started
    finally:
        for replica in started:
            replica.process.stop()
            print(f"---- {replica.identity} ----\n{replica.process.log.read_text()[-5000:]}")
        cluster.kubectl("delete", "isite", site_name, "--wait=false", check=False)


def holder(cluster: Cluster, namespace: str) -> str:
    result = cluster.kubectl(
        "get", "lease", LEASE, f"--namespace={namespace}", "-o=json", check=False
    )
    if result.returncode != 0:
        return ""
    return str(json.loads(result.stdout)["spec"].get("holderIdentity") or "")


def placed(cluster: Cluster, namespace: str, name: str) -> bool:
    status = cluster.get("mdep", name, namespace).get("status") or {}
    return any(
        c["type"] == "Placed" and c["status"] == "True" for c in status.get("conditions", [])
    )


def test_the_standby_takes_over_when_the_leader_is_killed(
    cluster: Cluster, namespace: str, replicas: list[Replica]
) -> None:
    identities = {replica.identity: replica for replica in replicas}
    wait_for(lambda: holder(cluster, namespace) in identities, timeout=60, what="a replica to lead")
    leader = identities[holder(cluster, namespace)]
    standby = next(replica for replica in replicas if replica is not leader)
    cluster.apply(deployment("before", namespace), namespace=namespace)
    wait_for(lambda: placed(cluster, namespace, "before"), timeout=60, what="'before' Placed")
    wait_for(standby.serving_metrics, timeout=30, what="the standby's metrics")

    # after a pass, the leader's /metrics has soberana_ families with values
    seen = leader.metrics()
    assert seen["soberana_reconcile_duration_seconds_count", ()] >= 1
    assert seen["soberana_reconcile_total", (("result", "success"),)] >= 1
    assert seen["soberana_placement_solve_duration_seconds_count", (("solver", "fast"),)] >= 1
    assert seen["soberana_events_total", (("reason", "Placed"), ("type", "Normal"))] == 1
    assert seen["soberana_finalizer_writes_total", ()] >= 1
    assert seen["soberana_deployments", (("condition", "Placed"), ("status", "True"))] == 1
    # --placement-only looks at no site: each is Reachable Unknown
    site_labels = (("condition", "Reachable"), ("site", f"{namespace}-br"), ("status", "Unknown"))
    assert seen["soberana_site_condition", site_labels] == 1

    # the standby waits, alive, and has written nothing
    assert standby.process.process is not None and standby.process.process.poll() is None
    assert leader.leader_status() == 1 and standby.leader_status() == 0
    assert leader.status_writes() >= 1
    standby_metrics = standby.metrics()
    assert standby.status_writes() == 0
    assert not [n for (n, _), v in standby_metrics.items() if n == "soberana_writes_refused_total"]
    assert "reconciled:" not in standby.process.this_run()

    assert leader.process.process is not None
    leader.process.process.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    leader.process.process.wait(timeout=10)
    cluster.apply(deployment("after", namespace), namespace=namespace)
    # "within 15 s" is measured by bench/bench_takeover.py; here only that it happens
    wait_for(lambda: placed(cluster, namespace, "after"), timeout=90, what="'after' Placed")
    print(f"'after' Placed {time.monotonic() - killed:.1f}s after the kill")

    assert holder(cluster, namespace) == standby.identity
    lease = cluster.get("lease", LEASE, namespace)
    assert lease["spec"]["leaseTransitions"] >= 1
    assert standby.leader_status() == 1 and standby.status_writes() >= 1
    log = standby.process.this_run()
    # its first pass came after it took the Lease, never before
    assert log.index(f"leading as {standby.identity}") < log.index("reconciled:")
    # 'before' was not moved or rewritten into anything else by the new leader
    assert cluster.get("mdep", "before", namespace)["status"]["sites"] == f"{namespace}-br"


def test_a_leader_that_cannot_renew_stops_writing_and_exits(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """SIGSTOP freezes the leader past its renew deadline; the standby takes over; the old leader,
    resumed, writes nothing more and exits with an error (controller-runtime's behaviour)."""
    timing = {"leaseDurationSeconds": 3, "renewDeadlineSeconds": 2, "retryPeriodSeconds": 0.5}
    site_name = f"{namespace}-br"
    cluster.apply(site(site_name, namespace))
    first = Replica(cluster, namespace, f"first-{namespace}", tmp_path / "first.log", timing)
    second = Replica(cluster, namespace, f"second-{namespace}", tmp_path / "second.log", timing)
    first.process.start()
    try:
        wait_for(
            lambda: holder(cluster, namespace) == first.identity,
            timeout=60,
            what="the first replica to lead",
        )
        second.process.start()
        cluster.apply(deployment("chat", namespace), namespace=namespace)
        wait_for(lambda: placed(cluster, namespace, "chat"), timeout=60, what="'chat' Placed")
        frozen = first.process.process
        assert frozen is not None
        frozen.send_signal(signal.SIGSTOP)
        try:
            wait_for(
                lambda: holder(cluster, namespace) == second.identity,
                timeout=60,
                what="the second replica to take over",
            )
            # something for the old leader to want to write once it wakes up
            cluster.apply(deployment("later", namespace), namespace=namespace)
            wait_for(lambda: placed(cluster, namespace, "later"), timeout=60, what="'later'")
        finally:
            frozen.send_signal(signal.SIGCONT)
        assert frozen.wait(timeout=60) != 0
        log = first.process.this_run()
        assert "leader election lost" in log
        resumed = log[log.index("no longer the leader") :]
        assert "reconciled:" not in resumed
        assert holder(cluster, namespace) == second.identity
    finally:
        for replica in (first, second):
            replica.process.stop()
            print(f"---- {replica.identity} ----\n{replica.process.log.read_text()[-5000:]}")
        cluster.kubectl("delete", "isite", site_name, "--wait=false", check=False)
