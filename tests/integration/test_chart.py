"""The Helm chart with the real helm and a real API server: it lints, renders, installs, uninstalls,
refuses bad values, and its RBAC is exactly what the operator and the router need.

No kube-controller-manager runs, so the chart's pods never start; what the API server shows is
tested instead: every object accepted, and each ServiceAccount's permissions, asked with
``kubectl auth can-i --as system:serviceaccount:NS:NAME`` and by running the real operator on the
operator ServiceAccount's own token.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from soberana.operator.devenv.controlplane import wait_for
from tests.integration.operator_process import OperatorProcess
from tests.kube import Cluster

CHART = Path(__file__).resolve().parents[2] / "charts" / "soberana"
APP_VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
LEASE = "soberana-operator"
Manifest = dict[str, Any]


@dataclass(frozen=True)
class Release:
    name: str
    namespace: str

    @property
    def fullname(self) -> str:
        return f"{self.name}-soberana"

    @property
    def operator(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.fullname}-operator"

    @property
    def router(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.fullname}-router"


def release_name() -> str:
    """Unique per install: ClusterRoles and ClusterRoleBindings are named after the release."""
    return f"r{uuid.uuid4().hex[:8]}"


def render(cluster: Cluster, *args: str, namespace: str = "soberana") -> list[Manifest]:
    out = cluster.helm("template", "test", str(CHART), f"--namespace={namespace}", *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def find(manifests: list[Manifest], kind: str, name_suffix: str = "") -> Manifest:
    matches = [
        m for m in manifests if m["kind"] == kind and m["metadata"]["name"].endswith(name_suffix)
    ]
    assert len(matches) == 1, f"{len(matches)} {kind} objects named *{name_suffix}"
    return matches[0]


def container(deployment: Manifest) -> Manifest:
    containers: list[Manifest] = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def can_i(cluster: Cluster, who: str, *args: str) -> bool:
    result = cluster.kubectl("auth", "can-i", f"--as={who}", *args, check=False)
    assert result.stdout.strip() in {"yes", "no"}, result.stdout + result.stderr
    return result.stdout.strip() == "yes"


# ------------------------------------------------------------------ lint and template


def test_helm_lint_is_clean(cluster: Cluster) -> None:
    result = cluster.helm("lint", "--strict", str(CHART))
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout
    assert "[ERROR]" not in result.stdout and "[WARNING]" not in result.stdout


def test_default_render_has_every_object(cluster: Cluster) -> None:
    kinds = sorted((m["kind"], m["metadata"]["name"]) for m in render(cluster))
    assert kinds == [
        ("ClusterRole", "test-soberana-operator"),
        ("ClusterRole", "test-soberana-router"),
        ("ClusterRoleBinding", "test-soberana-operator"),
        ("ClusterRoleBinding", "test-soberana-router"),
        ("Deployment", "test-soberana-operator"),
        ("Deployment", "test-soberana-router"),
        ("Role", "test-soberana-operator-leader-election"),
        ("Role", "test-soberana-operator-secrets"),
        ("RoleBinding", "test-soberana-operator-leader-election"),
        ("RoleBinding", "test-soberana-operator-secrets"),
        ("Service", "test-soberana-router"),
        ("ServiceAccount", "test-soberana-operator"),
        ("ServiceAccount", "test-soberana-router"),
    ]


def test_operator_deployment_is_replicated_hardened_and_probed(cluster: Cluster) -> None:
    deployment = find(render(cluster), "Deployment", "-operator")
    spec = deployment["spec"]
    # two replicas take turns on the Lease; a rolling update starts the new pod first
    assert spec["replicas"] == 2
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "test-soberana-operator"
    assert pod["securityContext"]["runAsNonRoot"] is True
    operator = container(deployment)
    assert operator["image"] == f"ghcr.io/soberana/soberana:{APP_VERSION}"
    assert operator["args"][0] == "operator"
    # the probe hits the port and path Kopf's liveness endpoint serves
    assert "--liveness=http://0.0.0.0:8080/healthz" in operator["args"]
    probe = operator["livenessProbe"]["httpGet"]
    assert probe["path"] == "/healthz"
    assert [p["containerPort"] for p in operator["ports"] if p["name"] == probe["port"]] == [8080]
    assert {
        "--leader-elect",
        "--leader-elect-lease-duration=10",
        "--leader-elect-renew-deadline=7",
        "--leader-elect-retry-period=1",
        "--metrics-port=8081",
    } <= set(operator["args"])
    assert [p["containerPort"] for p in operator["ports"] if p["name"] == "metrics"] == [8081]
    annotations = spec["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == "8081"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert operator["securityContext"]["readOnlyRootFilesystem"] is True
    assert operator["securityContext"]["allowPrivilegeEscalation"] is False
    assert operator["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert operator["resources"]["requests"] == {"cpu": "100m", "memory": "256Mi"}
    # Secrets are read in the pod's own namespace, the one the chart's Role covers
    namespace_env = next(e for e in operator["env"] if e["name"] == "SOBERANA_NAMESPACE")
    assert namespace_env["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"


def test_leader_election_can_be_turned_off_for_one_replica(cluster: Cluster) -> None:
    manifests = render(
        cluster, "--set=operator.leaderElection.enabled=false", "--set=operator.replicas=1"
    )
    spec = find(manifests, "Deployment", "-operator")["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    assert "--leader-elect" not in container({"spec": spec})["args"]
    assert not [m for m in manifests if "leader-election" in m["metadata"]["name"]]
    # two replicas without the Lease would both write: refused, saying what to set
    result = cluster.helm(
        "template", "test", str(CHART), "--set=operator.leaderElection.enabled=false", check=False
    )
    assert result.returncode != 0
    assert "operator.replicas > 1 needs operator.leaderElection.enabled=true" in result.stderr


def test_the_lease_role_names_only_the_operators_lease(cluster: Cluster) -> None:
    role = find(render(cluster), "Role", "-leader-election")
    assert role["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["get", "update"],
            "resourceNames": ["soberana-operator"],
        },
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
    ]


def test_service_monitor_is_off_by_default_and_scrapes_the_metrics_port(cluster: Cluster) -> None:
    assert not [m for m in render(cluster) if m["kind"] == "ServiceMonitor"]
    manifests = render(
        cluster,
        "--set=operator.metrics.serviceMonitor.enabled=true",
        "--set=operator.metrics.serviceMonitor.labels.release=prom",
        "--set=operator.metrics.port=9100",
    )
    monitor = find(manifests, "ServiceMonitor", "-operator")
    service = find(manifests, "Service", "-operator-metrics")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= (
        service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "30s"}
    ]
    assert service["spec"]["ports"][0]["port"] == 9100
    deployment = find(manifests, "Deployment", "-operator")
    assert service["spec"]["selector"].items() <= (
        deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    assert "--metrics-port=9100" in container(deployment)["args"]


def test_router_deployment_and_service_fit_together(cluster: Cluster) -> None:
    manifests = render(cluster)
    deployment = find(manifests, "Deployment", "-router")
    service = find(manifests, "Service", "-router")
    router = container(deployment)
    assert router["args"][:3] == ["router", "--host=0.0.0.0", "--port=8080"]
    assert router["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert router["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert router["securityContext"]["readOnlyRootFilesystem"] is True
    assert deployment["spec"]["replicas"] == 2
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    # the operator's pods must not be selected by the router's Service
    operator = find(manifests, "Deployment", "-operator")
    assert (
        not service["spec"]["selector"].items()
        <= operator["spec"]["template"]["metadata"]["labels"].items()
    )
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    ]


def test_images_resources_and_options_are_configurable(cluster: Cluster) -> None:
    digest = "sha256:" + "ab" * 32
    manifests = render(
        cluster,
        "--set=image.repository=registry.example/soberana",
        "--set=image.tag=1.2.3",
        f"--set=router.image.digest={digest}",
        "--set=operator.resources.limits.memory=2Gi",
        "--set=operator.solver=optimal",
        "--set=operator.placementOnly=true",
        "--set=operator.logLevel=verbose",
        "--set=router.region=br-southeast",
        "--set=router.replicas=5",
        "--set=router.apiKeys.secretName=router-keys",
    )
    operator = container(find(manifests, "Deployment", "-operator"))
    router_deployment = find(manifests, "Deployment", "-router")
    router = container(router_deployment)
    assert operator["image"] == "registry.example/soberana:1.2.3"
    assert router["image"] == f"registry.example/soberana@{digest}"
    assert operator["resources"]["limits"] == {"memory": "2Gi"}
    assert {"--solver=optimal", "--placement-only", "--verbose"} <= set(operator["args"])
    assert "--region=br-southeast" in router["args"]
    assert router_deployment["spec"]["replicas"] == 5
    assert "--api-keys=/etc/soberana/api-keys/api-keys.yaml" in router["args"]
    volumes = router_deployment["spec"]["template"]["spec"]["volumes"]
    assert {"name": "api-keys", "secret": {"secretName": "router-keys", "items": [
        {"key": "api-keys.yaml", "path": "api-keys.yaml"}
    ]}} in volumes  # fmt: skip


def test_router_can_be_left_out(cluster: Cluster) -> None:
    names = {
        (m["kind"], m["metadata"]["name"]) for m in render(cluster, "--set=router.enabled=false")
    }
    assert not [name for _, name in names if "router" in name]
    assert ("Deployment", "test-soberana-operator") in names


def test_a_router_only_release_has_no_operator(cluster: Cluster) -> None:
    """One more router (another region, say) beside the release that runs the operator."""
    manifests = render(cluster, "--set=operator.enabled=false", "--set=router.region=cl-central")
    names = {(m["kind"], m["metadata"]["name"]) for m in manifests}
    assert not [name for _, name in names if "operator" in name]
    assert ("Deployment", "test-soberana-router") in names
    assert ("ClusterRole", "test-soberana-router") in names
    router = container(find(manifests, "Deployment", "-router"))
    assert "--region=cl-central" in router["args"]


def test_watch_namespaces_and_secret_names_narrow_the_operator(cluster: Cluster) -> None:
    default = render(cluster)
    narrowed = render(
        cluster,
        "--set=operator.watchNamespaces={ml,team-*}",
        "--set=operator.secretNames={sp1-ray-token}",
    )
    namespaces_rule = {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]}
    # Kopf lists namespaces only to resolve watched namespaces: granted only then
    assert namespaces_rule not in find(default, "ClusterRole", "-operator")["rules"]
    assert namespaces_rule in find(narrowed, "ClusterRole", "-operator")["rules"]
    args = container(find(narrowed, "Deployment", "-operator"))["args"]
    assert "--namespace=ml" in args and "--namespace=team-*" in args
    assert find(default, "Role", "-secrets")["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}
    ]
    assert find(narrowed, "Role", "-secrets")["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "verbs": ["get"],
            "resourceNames": ["sp1-ray-token"],
        }
    ]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("operator.solver=greedy", "at '/operator/solver': value must be one of 'fast', 'optimal'"),
        ("operator.replicas=0", "at '/operator/replicas': minimum"),
        ("operator.leaderElection.leaseDurationSeconds=0", "at '/operator/leaderElection"),
        ("operator.metrics.serviceMonitor.interval=soon", "at '/operator/metrics/serviceMonitor"),
        ("operator.metrics.scrape=yes", "additional properties 'scrape' not allowed"),
        ("operator.moveThreshold=1", "at '/operator/moveThreshold'"),
        ("image.pullPolicy=Sometimes", "at '/image/pullPolicy'"),
        ("router.port=70000", "at '/router/port': maximum"),
        ("router.region=Brazil", "at '/router/region'"),
    ],
)
def test_schema_refuses_bad_values_with_a_clear_message(
    cluster: Cluster, value: str, message: str
) -> None:
    result = cluster.helm("template", "test", str(CHART), f"--set={value}", check=False)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr, result.stderr


# ------------------------------------------------------------------ on the API server


@pytest.fixture(scope="module")
def release(cluster: Cluster) -> Iterator[Release]:
    """The chart installed with default values into a namespace of its own, for the module."""
    installed = Release(release_name(), f"t-chart-{uuid.uuid4().hex[:6]}")
    cluster.kubectl("create", "namespace", installed.namespace)
    cluster.helm("install", installed.name, str(CHART), f"--namespace={installed.namespace}")
    try:
        yield installed
    finally:
        cluster.helm("uninstall", installed.name, f"--namespace={installed.namespace}", check=False)
        cluster.kubectl("delete", "namespace", installed.namespace, "--wait=false", check=False)


def test_install_creates_every_object(cluster: Cluster, release: Release) -> None:
    status = json.loads(
        cluster.helm("status", release.name, f"--namespace={release.namespace}", "-o=json").stdout
    )
    assert status["info"]["status"] == "deployed"
    selector = f"app.kubernetes.io/instance={release.name}"
    listed = json.loads(
        cluster.kubectl(
            "get",
            "deployments,services,serviceaccounts,roles,rolebindings",
            f"--namespace={release.namespace}",
            f"--selector={selector}",
            "-o=json",
        ).stdout
    )["items"]
    assert sorted(item["kind"] for item in listed) == [
        "Deployment",
        "Deployment",
        "Role",
        "Role",
        "RoleBinding",
        "RoleBinding",
        "Service",
        "ServiceAccount",
        "ServiceAccount",
    ]
    operator = cluster.get("deployment", f"{release.fullname}-operator", release.namespace)
    assert operator["spec"]["strategy"]["type"] == "RollingUpdate"
    cluster_scoped = json.loads(
        cluster.kubectl(
            "get", "clusterroles,clusterrolebindings", f"--selector={selector}", "-o=json"
        ).stdout
    )["items"]
    assert len(cluster_scoped) == 4
    # the CRDs the chart carries are the ones the API server serves
    for path in sorted((CHART / "crds").glob("*.yaml")):
        shipped = yaml.safe_load(path.read_text())
        served = cluster.get("crd", shipped["metadata"]["name"])
        assert served["spec"]["versions"] == shipped["spec"]["versions"], path.name


# (verb, resource, where) -> expected. where: "all" = every namespace, "cluster" = cluster-scoped,
# "own" = the release namespace, "other" = another namespace.
OPERATOR_MAY = [
    ("list", "inferencesites.soberana.io", "cluster"),
    ("watch", "inferencesites.soberana.io", "cluster"),
    ("patch", "inferencesites.soberana.io/status", "cluster"),
    ("list", "modeldeployments.soberana.io", "all"),
    ("watch", "modeldeployments.soberana.io", "all"),
    ("patch", "modeldeployments.soberana.io", "other"),
    ("patch", "modeldeployments.soberana.io/status", "other"),
    ("create", "events", "other"),
    ("create", "events", "default"),
    ("list", "customresourcedefinitions.apiextensions.k8s.io", "cluster"),
    ("watch", "customresourcedefinitions.apiextensions.k8s.io", "cluster"),
    ("get", "secrets", "own"),
    ("get", f"leases.coordination.k8s.io/{LEASE}", "own"),
    ("update", f"leases.coordination.k8s.io/{LEASE}", "own"),
    ("create", "leases.coordination.k8s.io", "own"),
]
OPERATOR_MAY_NOT = [
    # the Lease: exactly get and update on soberana-operator, create, in the release namespace
    ("get", "leases.coordination.k8s.io/kube-scheduler", "own"),
    ("update", "leases.coordination.k8s.io/kube-scheduler", "own"),
    ("patch", f"leases.coordination.k8s.io/{LEASE}", "own"),
    ("delete", f"leases.coordination.k8s.io/{LEASE}", "own"),
    ("list", "leases.coordination.k8s.io", "own"),
    ("watch", "leases.coordination.k8s.io", "own"),
    ("get", f"leases.coordination.k8s.io/{LEASE}", "other"),
    ("update", f"leases.coordination.k8s.io/{LEASE}", "other"),
    ("create", "leases.coordination.k8s.io", "other"),
    ("get", "secrets", "other"),
    ("get", "secrets", "default"),
    ("list", "secrets", "own"),
    ("watch", "secrets", "own"),
    ("create", "secrets", "own"),
    ("update", "secrets", "own"),
    ("delete", "secrets", "own"),
    ("delete", "namespaces", "cluster"),
    ("create", "namespaces", "cluster"),
    ("list", "namespaces", "cluster"),
    ("create", "customresourcedefinitions.apiextensions.k8s.io", "cluster"),
    ("update", "customresourcedefinitions.apiextensions.k8s.io", "cluster"),
    ("delete", "customresourcedefinitions.apiextensions.k8s.io", "cluster"),
    ("create", "clusterroles.rbac.authorization.k8s.io", "cluster"),
    ("bind", "clusterroles.rbac.authorization.k8s.io", "cluster"),
    ("escalate", "clusterroles.rbac.authorization.k8s.io", "cluster"),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io", "cluster"),
    ("create", "roles.rbac.authorization.k8s.io", "own"),
    ("create", "rolebindings.rbac.authorization.k8s.io", "own"),
    ("delete", "inferencesites.soberana.io", "cluster"),
    ("create", "inferencesites.soberana.io", "cluster"),
    ("update", "inferencesites.soberana.io", "cluster"),
    ("patch", "inferencesites.soberana.io", "cluster"),
    ("delete", "modeldeployments.soberana.io", "other"),
    ("create", "modeldeployments.soberana.io", "other"),
    ("delete", "events", "other"),
    ("get", "pods", "own"),
    ("create", "pods", "own"),
    ("create", "deployments.apps", "own"),
    ("create", "serviceaccounts/token", "own"),
    ("impersonate", "serviceaccounts", "own"),
    ("impersonate", "users", "cluster"),
    ("get", "configmaps", "own"),
    ("list", "nodes", "cluster"),
]
ROUTER_MAY = [
    (verb, resource, where)
    for verb in ("get", "list", "watch")
    for resource, where in (
        ("inferencesites.soberana.io", "cluster"),
        ("modeldeployments.soberana.io", "all"),
    )
]
ROUTER_MAY_NOT = [
    (verb, resource, where)
    for verb in ("create", "update", "patch", "delete")
    for resource, where in (
        ("inferencesites.soberana.io", "cluster"),
        ("inferencesites.soberana.io/status", "cluster"),
        ("modeldeployments.soberana.io", "other"),
        ("modeldeployments.soberana.io/status", "other"),
        ("events", "own"),
        ("configmaps", "own"),
    )
] + [
    ("get", "secrets", "own"),
    ("list", "secrets", "all"),
    ("list", "namespaces", "cluster"),
    ("list", "customresourcedefinitions.apiextensions.k8s.io", "cluster"),
]

MATRIX = (
    [("operator", *row, True) for row in OPERATOR_MAY]
    + [("operator", *row, False) for row in OPERATOR_MAY_NOT]
    + [("router", *row, True) for row in ROUTER_MAY]
    + [("router", *row, False) for row in ROUTER_MAY_NOT]
)


def scope_args(release: Release, where: str) -> list[str]:
    return {
        "cluster": [],
        "all": ["--all-namespaces"],
        "own": [f"--namespace={release.namespace}"],
        "other": ["--namespace=kube-system"],
        "default": ["--namespace=default"],
    }[where]


def resource_args(resource: str) -> list[str]:
    if resource.endswith("/status") or resource.endswith("/token"):
        name, subresource = resource.rsplit("/", 1)
        return [name, f"--subresource={subresource}"]
    return [resource]


def test_can_i_matrix(cluster: Cluster, release: Release) -> None:
    """Every row is asked; the failure lists every row that disagrees, not just the first."""
    wrong = []
    for who, verb, resource, where, expected in MATRIX:
        subject = release.operator if who == "operator" else release.router
        args = [verb, *resource_args(resource), *scope_args(release, where)]
        if can_i(cluster, subject, *args) != expected:
            wrong.append(f"{who} {' '.join(args)}: expected {'yes' if expected else 'no'}")
    assert not wrong, "\n".join(wrong)


def granted(cluster: Cluster, subject: str, namespace: str) -> set[str]:
    """Resource rules of ``subject`` in ``namespace`` as ``kubectl auth can-i --list`` shows."""
    out = cluster.kubectl(
        "auth", "can-i", "--list", f"--as={subject}", f"--namespace={namespace}"
    ).stdout
    rules = set()
    for line in out.splitlines()[1:]:
        match = re.match(r"^(\S+)\s+\[\]\s+(\[[^\]]*\])\s+(\[[^\]]*\])\s*$", line)
        if match:  # resource rules only; non-resource URLs are every account's defaults
            rules.add(" ".join(match.groups()))
    return rules


def test_nothing_more_is_granted_than_the_chart_declares(
    cluster: Cluster, release: Release
) -> None:
    """Compared with an account that has no bindings at all, the chart's accounts hold exactly
    these rules (in the release namespace, where the Secrets Role applies too)."""
    nobody = f"system:serviceaccount:{release.namespace}:nobody"
    baseline = granted(cluster, nobody, release.namespace)
    assert granted(cluster, release.operator, release.namespace) - baseline == {
        "inferencesites.soberana.io [] [get list watch]",
        "modeldeployments.soberana.io [] [get list watch patch]",
        "inferencesites.soberana.io/status [] [get patch]",
        "modeldeployments.soberana.io/status [] [get patch]",
        "events [] [create]",
        "customresourcedefinitions.apiextensions.k8s.io [] [list watch]",
        "secrets [] [get]",
        "leases.coordination.k8s.io [] [create]",
        f"leases.coordination.k8s.io [{LEASE}] [get update]",
    }
    assert granted(cluster, release.router, release.namespace) - baseline == {
        "inferencesites.soberana.io [] [get list watch]",
        "modeldeployments.soberana.io [] [get list watch]",
    }


def test_uninstall_removes_what_install_created(cluster: Cluster, namespace: str) -> None:
    name = release_name()
    selector = f"--selector=app.kubernetes.io/instance={name}"
    namespaced = "deployments,services,serviceaccounts,roles,rolebindings"
    cluster.helm("install", name, str(CHART), f"--namespace={namespace}")
    before = cluster.kubectl("get", namespaced, f"--namespace={namespace}", selector, "-o=name")
    assert len(before.stdout.split()) == 9
    cluster.helm("uninstall", name, f"--namespace={namespace}", "--wait")
    after = cluster.kubectl("get", namespaced, f"--namespace={namespace}", selector, "-o=name")
    assert after.stdout.split() == []
    cluster_scoped = cluster.kubectl("get", "clusterroles,clusterrolebindings", selector, "-o=name")
    assert cluster_scoped.stdout.split() == []
    assert cluster.helm("status", name, f"--namespace={namespace}", check=False).returncode != 0
    # Helm never deletes CRDs from crds/ (that would delete every site and deployment with them)
    cluster.kubectl("get", "crd", "inferencesites.soberana.io", "modeldeployments.soberana.io")


# ------------------------------------------------------------------ the operator on its own token


def token_kubeconfig(cluster: Cluster, namespace: str, account: str, path: Path) -> Path:
    """A kubeconfig that authenticates as ``account`` with a short-lived token (TokenRequest)."""
    token = cluster.kubectl(
        "create", "token", account, f"--namespace={namespace}", "--duration=15m"
    ).stdout.strip()
    admin = yaml.safe_load(
        cluster.kubectl("config", "view", "--raw", "--minify", "--flatten").stdout
    )
    server = admin["clusters"][0]
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [server],
                "users": [{"name": account, "user": {"token": token}}],
                "contexts": [
                    {"name": account, "context": {"cluster": server["name"], "user": account}}
                ],
                "current-context": account,
            }
        )
    )
    return path


RUN_LABEL = "test.soberana.io/run"


def site(name: str, run: str, secret: str) -> Manifest:
    return {
        "apiVersion": "soberana.io/v1alpha1",
        "kind": "InferenceSite",
        "metadata": {"name": name, "labels": {RUN_LABEL: run}},
        "spec": {
            "tier": "cloud",
            "region": "br-southeast",
            "jurisdiction": "BR",
            "gpus": [{"model": "L4", "count": 4, "memoryGiB": 24, "hourlyCost": 0.8}],
            "latencyMs": {"br-southeast": 5},
            "backend": {
                "ray": {
                    # nothing listens on the discard port: the site is unreachable, as intended
                    "dashboardURL": "http://127.0.0.1:9",
                    "serveURL": "http://127.0.0.1:9",
                    "tokenSecretRef": {"name": secret, "key": "token"},
                }
            },
        },
    }


def model_deployment(name: str, run: str) -> Manifest:
    return {
        "apiVersion": "soberana.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": "file:///models/tiny", "format": "torchscript"},
            "traffic": [{"region": "br-southeast"}],
            "placement": {"siteSelector": {"matchLabels": {RUN_LABEL: run}}},
        },
    }


def condition(obj: Manifest, kind: str) -> Manifest | None:
    conditions: list[Manifest] = (obj.get("status") or {}).get("conditions", [])
    return next((c for c in conditions if c["type"] == kind), None)


def test_operator_works_with_exactly_the_charts_permissions(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """The real operator, on the operator ServiceAccount's token and with leader election as the
    chart runs it: it takes the Lease, adds its finalizer, writes statuses, posts Events, reads
    the Secret a site names in its own namespace, and lets a deleted deployment go, all without
    one permission error."""
    name = release_name()
    # watchNamespaces keeps this operator off other tests' deployments; it also grants the
    # namespace list/watch that Kopf needs in that mode
    cluster.helm(
        "install",
        name,
        str(CHART),
        f"--namespace={namespace}",
        f"--set=operator.watchNamespaces={{{namespace}}}",
    )
    account = f"{name}-soberana-operator"
    kubeconfig = token_kubeconfig(cluster, namespace, account, tmp_path / "operator.kubeconfig")
    cluster.kubectl(
        "create", "secret", "generic", "ray-token", "--from-literal=token=t0ken", "-n", namespace
    )
    site_name = f"{namespace}-br"
    cluster.apply(site(site_name, namespace, "ray-token"))
    cluster.apply(model_deployment("chat", namespace), namespace=namespace)
    process = OperatorProcess(
        kubeconfig,
        tmp_path / "operator.log",
        f"--secrets-namespace={namespace}",
        f"--namespace={namespace}",
        "--probe-interval=0.5",
        "--leader-elect",
        "--leader-elect-lease-duration=4",
        "--leader-elect-renew-deadline=3",
        "--leader-elect-retry-period=0.5",
    )
    process.start()
    try:

        def placed() -> bool:
            placed = condition(cluster.get("mdep", "chat", namespace), "Placed")
            return placed is not None and placed["status"] == "True"

        wait_for(placed, timeout=60, what="the deployment placed")
        # it wrote as the holder of the Lease, which the chart lets it create and renew
        lease = cluster.get("lease", LEASE, namespace)
        assert lease["spec"]["holderIdentity"] and lease["spec"]["leaseDurationSeconds"] == 4
        deployment = cluster.get("mdep", "chat", namespace)
        assert deployment["metadata"]["finalizers"] == ["soberana.io/finalizer"]
        assert deployment["status"]["sites"] == site_name
        assert deployment["status"]["observedGeneration"] == deployment["metadata"]["generation"]

        def site_looked_at() -> bool:
            reachable = condition(cluster.get("isite", site_name), "Reachable")
            return reachable is not None and reachable["status"] == "False"

        wait_for(site_looked_at, timeout=60, what="the site's Reachable condition")
        reachable = condition(cluster.get("isite", site_name), "Reachable")
        assert reachable is not None
        # the token was read (no Secret error): what failed is the connection to the dashboard
        assert "Secret" not in reachable["message"] and "127.0.0.1:9" in reachable["message"]

        events = json.loads(
            cluster.kubectl(
                "get", "events", f"--namespace={namespace}", "--field-selector=reason=Placed",
                "-o=json",
            ).stdout
        )["items"]  # fmt: skip
        assert [e["involvedObject"]["name"] for e in events] == ["chat"]

        cluster.kubectl("delete", "mdep", "chat", f"--namespace={namespace}", "--timeout=60s")
        log = process.this_run()
        # (not "403" alone: log timestamps carry milliseconds such as ",403")
        for denied in ("Forbidden", "forbidden", "Not enough permissions"):
            assert denied not in log, f"{denied!r} in the operator log:\n{log[-4000:]}"
    finally:
        process.stop()
        cluster.kubectl("delete", "isite", site_name, "--wait=false", check=False)
        cluster.helm("uninstall", name, f"--namespace={namespace}", check=False)
        print(f"---- operator log ----\n{process.log.read_text()[-6000:]}")
