"""The operator on a real API server: it places, re-places, releases and restarts correctly."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from soberana.operator.devenv.controlplane import wait_for
from tests.integration.operator_process import OperatorProcess
from tests.kube import Cluster

LABEL = "test.soberana.io/run"


def site(
    name: str, run: str, jurisdiction: str, *, gpus: int, cost: float, latency: dict[str, int]
) -> dict[str, Any]:
    return {
        "apiVersion": "soberana.io/v1alpha1",
        "kind": "InferenceSite",
        "metadata": {"name": name, "labels": {LABEL: run}},
        "spec": {
            "tier": "cloud",
            "region": next(iter(latency)),
            "jurisdiction": jurisdiction,
            "currency": "USD",
            "gpus": [{"model": "L4", "count": gpus, "memoryGiB": 24, "hourlyCost": cost}],
            "latencyMs": latency,
            "backend": {
                "ray": {"dashboardURL": "http://127.0.0.1:9", "serveURL": "http://127.0.0.1:9"}
            },
        },
    }


def deployment(name: str, run: str, *, allowed: list[str], replicas: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "soberana.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": "file:///models/tiny", "format": "torchscript"},
            "replicas": replicas,
            "resources": {"gpus": 1, "gpuModels": ["L4"]},
            "traffic": [{"region": "br-southeast", "weight": 1}],
            "latencySLOms": 100,
            "residency": {"allowedJurisdictions": allowed},
            "placement": {"strategy": "cost", "siteSelector": {"matchLabels": {LABEL: run}}},
        },
    }


@pytest.fixture
def operator(cluster: Cluster, tmp_path: Path) -> Iterator[OperatorProcess]:
    # placement behaviour only: these sites have no Ray cluster behind them
    process = OperatorProcess(cluster.kubeconfig, tmp_path / "operator.log", "--placement-only")
    process.start()
    try:
        yield process
    finally:
        process.stop()
        # shown by pytest only when the test fails
        print(f"---- operator log ({process.log}) ----\n{process.log.read_text()[-8000:]}")


@pytest.fixture
def sites(cluster: Cluster, namespace: str) -> Iterator[dict[str, str]]:
    """Three sites for this test only: two in BR (cheap and dear), one in US (cheapest)."""
    names = {"br-cheap": f"{namespace}-br1", "br-dear": f"{namespace}-br2", "us": f"{namespace}-us"}
    cluster.apply(
        site(names["br-cheap"], namespace, "BR", gpus=2, cost=1.0, latency={"br-southeast": 5}),
        site(names["br-dear"], namespace, "BR", gpus=4, cost=2.0, latency={"br-southeast": 8}),
        site(names["us"], namespace, "US", gpus=8, cost=0.5, latency={"br-southeast": 90}),
    )
    yield names
    cluster.kubectl("delete", "isite", *names.values(), "--wait=false", check=False)


def placements(cluster: Cluster, namespace: str, name: str) -> list[tuple[str, int]]:
    status = cluster.get("mdep", name, namespace).get("status", {})
    return [(p["site"], p["replicas"]) for p in status.get("placements", [])]


def condition(
    cluster: Cluster, kind: str, name: str, namespace: str | None, type_: str
) -> dict[str, Any]:
    status = cluster.get(kind, name, namespace).get("status", {})
    return next((c for c in status.get("conditions", []) if c["type"] == type_), {})


def events(cluster: Cluster, namespace: str, name: str) -> list[str]:
    raw = cluster.kubectl(
        "get",
        "events",
        "-n",
        namespace,
        "-o",
        "json",
        f"--field-selector=involvedObject.name={name}",
    ).stdout
    return [event["reason"] for event in json.loads(raw)["items"]]


def test_places_reports_and_reacts(
    cluster: Cluster, namespace: str, sites: dict[str, str], operator: OperatorProcess
) -> None:
    cluster.apply(deployment("chat", namespace, allowed=["BR"], replicas=2), namespace=namespace)
    cluster.apply(deployment("free", namespace, allowed=["BR", "US"]), namespace=namespace)

    wait_for(
        lambda: condition(cluster, "mdep", "chat", namespace, "Placed").get("status") == "True",
        timeout=60,
        what="chat to be Placed",
    )
    # cost strategy: the two replicas go to the cheapest compliant site, never to the US one
    assert placements(cluster, namespace, "chat") == [(sites["br-cheap"], 2)]
    wait_for(
        lambda: placements(cluster, namespace, "free") == [(sites["us"], 1)],
        timeout=60,
        what="free on the cheap US site",
    )
    chat = cluster.get("mdep", "chat", namespace)["status"]
    assert chat["hourlyCost"] == pytest.approx(2.0)
    assert (
        chat["observedGeneration"]
        == cluster.get("mdep", "chat", namespace)["metadata"]["generation"]
    )
    assert "jurisdiction" in chat["explanation"][sites["us"]].lower()
    assert "Placed" in events(cluster, namespace, "chat")
    wait_for(
        lambda: cluster.get("isite", sites["br-cheap"]).get("status", {}).get("gpusAllocated") == 2,
        timeout=30,
        what="the BR site to report 2 GPUs allocated",
    )

    # cordon the cheap BR site: chat moves to the dear BR site, never to the US
    cluster.kubectl(
        "patch", "isite", sites["br-cheap"], "--type=merge", "-p", '{"spec":{"cordoned":true}}'
    )
    wait_for(
        lambda: placements(cluster, namespace, "chat") == [(sites["br-dear"], 2)],
        timeout=60,
        what="chat to move off the cordoned site",
    )
    wait_for(
        lambda: "Moved" in events(cluster, namespace, "chat"), timeout=30, what="a Moved event"
    )
    wait_for(
        lambda: cluster.get("isite", sites["br-cheap"])["status"]["gpusAllocated"] == 0,
        timeout=30,
        what="the cordoned site's GPUs to be released",
    )

    # shrink the remaining BR site below what chat needs: unplaceable, with a reason naming numbers
    cluster.kubectl(
        "patch",
        "isite",
        sites["br-dear"],
        "--type=json",
        "-p",
        '[{"op":"replace","path":"/spec/gpus/0/count","value":1}]',
    )
    wait_for(
        lambda: condition(cluster, "mdep", "chat", namespace, "Placed").get("status") == "False",
        timeout=60,
        what="chat to become unplaceable",
    )
    placed = condition(cluster, "mdep", "chat", namespace, "Placed")
    assert placed["reason"] == "Unplaceable"
    assert "BR" in placed["message"]
    assert placements(cluster, namespace, "chat") == []
    wait_for(
        lambda: "Unplaceable" in events(cluster, namespace, "chat"),
        timeout=30,
        what="Unplaceable event",
    )

    # the US site becomes BR by law: now chat fits there, and only there
    cluster.kubectl(
        "patch", "isite", sites["us"], "--type=merge", "-p", '{"spec":{"jurisdiction":"BR"}}'
    )
    wait_for(
        lambda: placements(cluster, namespace, "chat") == [(sites["us"], 2)],
        timeout=60,
        what="chat on the newly compliant site",
    )


def test_jurisdiction_change_moves_away(
    cluster: Cluster, namespace: str, sites: dict[str, str], operator: OperatorProcess
) -> None:
    cluster.apply(deployment("us-only", namespace, allowed=["US"]), namespace=namespace)
    wait_for(
        lambda: placements(cluster, namespace, "us-only") == [(sites["us"], 1)],
        timeout=60,
        what="us-only placed",
    )
    cluster.kubectl(
        "patch", "isite", sites["us"], "--type=merge", "-p", '{"spec":{"jurisdiction":"DE"}}'
    )
    wait_for(
        lambda: condition(cluster, "mdep", "us-only", namespace, "Placed").get("status") == "False",
        timeout=60,
        what="us-only to be unplaced once no site is in US",
    )
    assert placements(cluster, namespace, "us-only") == []


def test_delete_releases_capacity(
    cluster: Cluster, namespace: str, sites: dict[str, str], operator: OperatorProcess
) -> None:
    cluster.apply(deployment("big", namespace, allowed=["BR"], replicas=2), namespace=namespace)
    wait_for(
        lambda: placements(cluster, namespace, "big") == [(sites["br-cheap"], 2)],
        timeout=60,
        what="big placed",
    )
    cluster.apply(deployment("waiting", namespace, allowed=["BR"], replicas=4), namespace=namespace)
    wait_for(
        lambda: placements(cluster, namespace, "waiting") == [(sites["br-dear"], 4)],
        timeout=60,
        what="waiting placed on the larger site",
    )
    finalizers = cluster.get("mdep", "big", namespace)["metadata"].get("finalizers", [])
    assert "soberana.io/finalizer" in finalizers
    cluster.kubectl("delete", "mdep", "big", "-n", namespace, "--timeout=60s")
    assert cluster.kubectl("get", "mdep", "big", "-n", namespace, check=False).returncode != 0

    def allocated_in_br() -> int:
        return sum(
            cluster.get("isite", sites[key])["status"]["gpusAllocated"]
            for key in ("br-cheap", "br-dear")
        )

    # only `waiting` remains: its 4 GPUs are all that is allocated (it may now use the freed ones)
    wait_for(lambda: allocated_in_br() == 4, timeout=30, what="big's 2 GPUs to be released")
    assert sum(replicas for _, replicas in placements(cluster, namespace, "waiting")) == 4


def test_restart_converges_without_changes(
    cluster: Cluster, namespace: str, sites: dict[str, str], operator: OperatorProcess
) -> None:
    for index in range(4):
        cluster.apply(deployment(f"m{index}", namespace, allowed=["BR", "US"]), namespace=namespace)
    names = [f"m{index}" for index in range(4)]
    wait_for(
        lambda: all(placements(cluster, namespace, name) for name in names),
        timeout=60,
        what="all four placed",
    )

    def settled() -> bool:
        passes = operator.this_run().split("reconciled: ")[1:]
        return bool(passes) and " 0 status writes" in passes[-1].splitlines()[0]

    # the operator is quiet: its last pass had nothing left to write
    wait_for(settled, timeout=60, what="a pass that writes nothing")
    before = {name: cluster.get("mdep", name, namespace)["status"] for name in names}

    operator.restart()
    operator.wait_for_log("reconciled: ")
    after = {name: cluster.get("mdep", name, namespace)["status"] for name in names}
    assert after == before, "an operator restart changed a status"
    first_pass = operator.this_run().split("reconciled: ", 1)[1].splitlines()[0]
    assert " 0 status writes" in first_pass, first_pass
