"""What a platform engineer sees with kubectl on a real API server: `kubectl get soberana` lists
both kinds, the printer columns show an object's status sensibly, and `kubectl explain` reads
the field descriptions (docs/operations.md and docs/troubleshooting.md quote this output).

The statuses are written the way the operator writes them: a merge patch on the ``status``
subresource, composed by the operator's own status functions.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from soberana.operator.core.api import PlacementState
from soberana.operator.core.placement.plan import Change, DeploymentPlan, SitePlacement, SiteUsage
from soberana.operator.core.status import Observation, SiteCheck, deployment_status, site_status
from tests.kube import Cluster

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def table(output: str) -> list[dict[str, str]]:
    """Rows of a kubectl table, by column header (columns are aligned on the header)."""
    lines = [line for line in output.splitlines() if line.strip()]
    header = lines[0]
    names = header.split()
    starts = [header.index(name) for name in names]
    rows = []
    for line in lines[1:]:
        if line.split()[0] == names[0]:  # the header of the next kind
            header, names = line, line.split()
            starts = [header.index(name) for name in names]
            continue
        ends = [*starts[1:], None]
        rows.append(
            {name: line[a:b].strip() for name, a, b in zip(names, starts, ends, strict=True)}
        )
    return rows


def site_object(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "soberana.io/v1alpha1",
        "kind": "InferenceSite",
        "metadata": {"name": name},
        "spec": {
            "tier": "onprem",
            "region": "cl-central",
            "jurisdiction": "CL",
            "gpus": [{"model": "L4", "count": 8, "memoryGiB": 24, "hourlyCost": 0.8}],
            "latencyMs": {"cl-central": 3},
            "backend": {
                "ray": {"dashboardURL": "http://10.0.0.5:8265", "serveURL": "http://10.0.0.5:8000"}
            },
        },
    }


def deployment_object(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "soberana.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": "file:///models/qwen2.5-0.5b-instruct"},
            "replicas": 3,
            "traffic": [{"region": "cl-central"}],
            "residency": {"allowedJurisdictions": ["CL"]},
            "placement": {"strategy": "cost"},
        },
    }


def patch_status(cluster: Cluster, kind: str, name: str, status: Any, *namespace: str) -> None:
    body = json.dumps({"status": status.model_dump(mode="json", by_alias=True, exclude_none=True)})
    cluster.kubectl(
        "patch", kind, name, *namespace, "--subresource=status", "--type=merge", f"--patch={body}"
    )


def test_kubectl_get_soberana_lists_both_kinds_with_their_status(
    cluster: Cluster, namespace: str
) -> None:
    site, deployment = f"{namespace}-scl", "qwen-chat"
    cluster.apply(site_object(site))
    try:
        cluster.apply(deployment_object(deployment), namespace=namespace)
        usage = SiteUsage(
            gpus_allocated=3,
            gpus_total=8,
            hourly_cost=2.4,
            deployments=1,
            cpus_allocated=4,
            cpus_total=16,
        )
        check = SiteCheck(reachable=True, message="Ray 2.40.0", healthy=True)
        patch_status(
            cluster,
            "isite",
            site,
            site_status(usage, previous=None, generation=1, check=check, cordoned=False, now=NOW),
        )
        plan = DeploymentPlan(
            key=f"{namespace}/{deployment}",
            placements=(SitePlacement(site, "L4", 3, 2.4, ("cl-central",)),),
            reason=None,
            rejected={},
            change=Change.PLACED,
        )
        observed = {site: Observation(state=PlacementState.RUNNING, ready_replicas=2)}
        status = deployment_status(plan, previous=None, generation=1, observed=observed, now=NOW)
        patch_status(cluster, "mdep", deployment, status, f"--namespace={namespace}")

        output = cluster.kubectl("get", "soberana", f"--namespace={namespace}").stdout
        rows = {row["NAME"]: row for row in table(output)}
        site_row = rows[f"inferencesite.soberana.io/{site}"]
        columns = ("TIER", "REGION", "JURISDICTION", "GPUS", "CPUS")
        assert {key: site_row[key] for key in columns} == {
            "TIER": "onprem",
            "REGION": "cl-central",
            "JURISDICTION": "CL",
            "GPUS": "3/8",
            "CPUS": "4/16",
        }
        assert (site_row["HOURLY-COST"], site_row["READY"]) == ("2.4", "True")
        deployment_row = rows[f"modeldeployment.soberana.io/{deployment}"]
        assert {key: deployment_row[key] for key in ("SITES", "READY", "HOURLY-COST")} == {
            "SITES": site,
            "READY": "2/3",
            "HOURLY-COST": "2.4",
        }
        # Available: some replicas serve; Degraded (not a column) says one is not ready yet
        assert (deployment_row["PLACED"], deployment_row["AVAILABLE"]) == ("True", "True")

        wide = table(
            cluster.kubectl("get", "mdep", deployment, f"--namespace={namespace}", "-o=wide").stdout
        )
        assert (wide[0]["STRATEGY"], wide[0]["MODEL"]) == (
            "cost",
            "file:///models/qwen2.5-0.5b-instruct",
        )
    finally:
        cluster.kubectl("delete", "isite", site, "--wait=false", check=False)


def test_kubectl_explain_reads_the_field_descriptions(cluster: Cluster) -> None:
    output = cluster.kubectl("explain", "mdep.spec.residency").stdout
    assert "allowedJurisdictions\t<[]string>" in output
    assert "ISO 3166-1 alpha-2 codes of the only jurisdictions where the model may run" in output
    output = cluster.kubectl("explain", "isite.spec.backend").stdout
    assert "How soberana deploys to the site." in output
    assert "Drive an existing Ray cluster through its dashboard REST API." in output
