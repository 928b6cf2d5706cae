"""The GitOps material in docs/flux/ works against a real API server.

- The kustomize folder builds with kubectl's kustomize, and the API server accepts what it builds.
- The Flux ``healthCheckExprs`` give the right verdicts. Flux evaluates them with cel-go on the
  object; so does the API server for a ValidatingAdmissionPolicy. Each expression (with the
  object's top-level fields prefixed by ``object.``) becomes part of a warn-only policy's message
  on status updates, and the test reads the verdicts from kubectl's warnings while it writes the
  statuses the operator writes.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from soberana.operator.core.api import PlacementState
from soberana.operator.core.placement.plan import Change, DeploymentPlan, SitePlacement
from soberana.operator.core.status import Observation, deployment_status
from soberana.operator.devenv.controlplane import wait_for
from tests.kube import Cluster

FLUX = Path(__file__).resolve().parents[2] / "docs" / "flux"
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
VERDICTS = ("inProgress", "failed", "current")


def test_kustomize_folder_builds_and_the_api_server_accepts_it(
    cluster: Cluster, namespace: str
) -> None:
    built = cluster.kubectl("kustomize", str(FLUX / "models")).stdout
    documents = [doc for doc in yaml.safe_load_all(built) if doc]
    assert sorted(doc["kind"] for doc in documents) == [
        "InferenceSite",
        "InferenceSite",
        "ModelDeployment",
        "Namespace",
    ]
    # a server-side dry run creates no namespace, so the test's own stands in for "ml"
    for doc in documents:
        if "namespace" in doc["metadata"]:
            doc["metadata"]["namespace"] = namespace
    objects = [doc for doc in documents if doc["kind"] != "Namespace"]
    result = cluster.kubectl(
        "apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump_all(objects)
    )
    assert result.stdout.split("\n", 3)[:3] == [
        "inferencesite.soberana.io/santiago-1 created (server dry run)",
        "inferencesite.soberana.io/sao-paulo-1 created (server dry run)",
        "modeldeployment.soberana.io/qwen-chat created (server dry run)",
    ]


def flux_expressions(kind: str) -> dict[str, str]:
    kustomization = yaml.safe_load((FLUX / "models-kustomization.yaml").read_text())
    (entry,) = [e for e in kustomization["spec"]["healthCheckExprs"] if e["kind"] == kind]
    assert entry["apiVersion"] == "soberana.io/v1alpha1"
    return {verdict: entry[verdict] for verdict in VERDICTS}


def as_admission_cel(expression: str) -> str:
    """Flux's top-level ``status``/``metadata``/``spec`` are ``object.`` fields in admission CEL."""
    return re.sub(r"(?<![.\w])(status|metadata|spec)\.", r"object.\1.", expression)


@pytest.fixture
def verdict_policy(cluster: Cluster, namespace: str) -> Iterator[None]:
    """A warn-only policy whose message, on every ModelDeployment status write in ``namespace``,
    is the value of each Flux expression."""
    name = f"flux-verdicts-{uuid.uuid4().hex[:8]}"
    message = " + ' ' + ".join(
        f"'{verdict}=' + string({as_admission_cel(expression)})"
        for verdict, expression in flux_expressions("ModelDeployment").items()
    )
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": ["soberana.io"],
                        "apiVersions": ["v1alpha1"],
                        "operations": ["UPDATE"],
                        "resources": ["modeldeployments/status"],
                    }
                ]
            },
            "validations": [{"expression": "false", "messageExpression": message}],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Warn"],
            "matchResources": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
            },
        },
    }
    cluster.apply(policy, binding)
    try:
        yield
    finally:
        cluster.kubectl(
            "delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", name,
            "--wait=false", check=False,
        )  # fmt: skip


def deployment(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "soberana.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {"model": {"uri": "file:///models/chat"}, "replicas": 2},
    }


def status_of(placed: bool, observed: dict[str, Observation], generation: int) -> dict[str, Any]:
    placements = (
        (
            SitePlacement("sao-paulo-1", "L4", 1, 0.8, ("br-southeast",)),
            SitePlacement("santiago-1", "L4", 1, 0.8, ("cl-central",)),
        )
        if placed
        else ()
    )
    plan = DeploymentPlan(
        key="ml/chat",
        placements=placements,
        reason=None if placed else "no site in allowed jurisdictions [BR] has a free L4",
        rejected={},
        change=Change.PLACED if placed else Change.UNPLACED,
    )
    status = deployment_status(
        plan, previous=None, generation=generation, observed=observed, now=NOW
    )
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)


RUNNING = Observation(state=PlacementState.RUNNING, ready_replicas=1)
FAILED = Observation(state=PlacementState.FAILED, ready_replicas=0, message="out of memory")


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        pytest.param(
            status_of(True, {"sao-paulo-1": RUNNING, "santiago-1": RUNNING}, 1),
            {"inProgress": False, "failed": False, "current": True},
            id="healthy",
        ),
        pytest.param(
            status_of(False, {}, 1),
            {"inProgress": False, "failed": True, "current": False},
            id="unplaceable",
        ),
        pytest.param(
            status_of(True, {"sao-paulo-1": RUNNING, "santiago-1": FAILED}, 1),
            {"inProgress": False, "failed": True, "current": False},
            id="site-failed",
        ),
        pytest.param(
            status_of(True, {}, 1),
            {"inProgress": False, "failed": False, "current": False},
            id="sites-not-reported",
        ),
        pytest.param(
            status_of(True, {"sao-paulo-1": RUNNING, "santiago-1": RUNNING}, 0),
            {"inProgress": True, "failed": False, "current": True},
            id="older-generation",
        ),
    ],
)
@pytest.mark.usefixtures("verdict_policy")
def test_flux_health_expressions_read_the_conditions(
    cluster: Cluster, namespace: str, status: dict[str, Any], expected: dict[str, bool]
) -> None:
    cluster.apply(deployment("chat"), namespace=namespace)
    patch = json.dumps({"status": status})
    seen: list[str] = []

    def verdicts_reported() -> bool:
        result = cluster.kubectl(
            "patch", "mdep", "chat", f"--namespace={namespace}", "--subresource=status",
            "--type=merge", f"--patch={patch}",
        )  # fmt: skip
        seen[:] = re.findall(r"inProgress=\w+ failed=\w+ current=\w+", result.stderr)
        return bool(seen)

    # the policy is in force once the API server's informer has seen it
    wait_for(verdicts_reported, timeout=30, what="the verdict policy to take effect")
    verdicts = dict(part.split("=") for part in seen[0].split())
    assert verdicts == {key: str(value).lower() for key, value in expected.items()}
