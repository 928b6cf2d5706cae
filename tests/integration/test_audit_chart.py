"""The chart's router audit log, with the real helm and a real API server: off by default; on,
it mounts the signing key Secret and a volume that outlives the release; bad values are refused."""

from __future__ import annotations

import yaml

from tests.integration.test_chart import CHART, container, find, render
from tests.kube import Cluster

ON = ("--set=router.audit.enabled=true", "--set=router.audit.signingKey.secretName=audit-key")


def test_auditing_is_off_by_default(cluster: Cluster) -> None:
    manifests = render(cluster)
    assert not [m for m in manifests if m["kind"] == "PersistentVolumeClaim"]
    args = container(find(manifests, "Deployment", "-router"))["args"]
    assert not [arg for arg in args if arg.startswith("--audit")]


def test_auditing_mounts_the_key_and_a_volume_kept_after_uninstall(cluster: Cluster) -> None:
    manifests = render(cluster, *ON, "--set=router.audit.failure=open", namespace="default")
    claim = find(manifests, "PersistentVolumeClaim", "-router-audit")
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "10Gi"

    deployment = find(manifests, "Deployment", "-router")
    router = container(deployment)
    assert {
        "--audit-dir=/var/lib/soberana/audit",
        "--audit-signing-key=/etc/soberana/audit-key/signing-key.pem",
        "--audit-failure=open",
    } <= set(router["args"])
    pod_name = next(env for env in router["env"] if env["name"] == "POD_NAME")
    assert pod_name["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    mounts = {mount["name"]: mount for mount in router["volumeMounts"]}
    assert mounts["audit"]["mountPath"] == "/var/lib/soberana/audit"
    assert mounts["audit-key"]["readOnly"] is True
    volumes = {
        volume["name"]: volume for volume in deployment["spec"]["template"]["spec"]["volumes"]
    }
    assert volumes["audit"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert volumes["audit-key"]["secret"]["secretName"] == "audit-key"
    assert volumes["audit-key"]["secret"]["defaultMode"] == 0o440

    # the API server takes both as rendered
    accepted = cluster.kubectl(
        "apply", "--dry-run=server", "--namespace=default", "-f", "-",
        input=yaml.safe_dump_all([claim, deployment]),
    )  # fmt: skip
    assert "persistentvolumeclaim/test-soberana-router-audit created (server dry run)" in (
        accepted.stdout
    )


def test_an_existing_claim_is_used_as_it_is(cluster: Cluster) -> None:
    manifests = render(cluster, *ON, "--set=router.audit.persistence.existingClaim=evidence")
    assert not [m for m in manifests if m["kind"] == "PersistentVolumeClaim"]
    volumes = find(manifests, "Deployment", "-router")["spec"]["template"]["spec"]["volumes"]
    audit = next(volume for volume in volumes if volume["name"] == "audit")
    assert audit["persistentVolumeClaim"]["claimName"] == "evidence"


def test_the_schema_refuses_auditing_without_a_key_or_with_an_unknown_failure_mode(
    cluster: Cluster,
) -> None:
    for values, message in [
        (("--set=router.audit.enabled=true",), "at '/router/audit/signingKey/secretName'"),
        ((*ON, "--set=router.audit.failure=maybe"), "at '/router/audit/failure'"),
        ((*ON, "--set=router.audit.persistence.size=lots"), "at '/router/audit/persistence/size'"),
    ]:
        result = cluster.helm("template", "test", str(CHART), *values, check=False)
        assert result.returncode != 0
        assert message in result.stderr, result.stderr


def test_the_operator_can_keep_its_placement_log_too(cluster: Cluster) -> None:
    manifests = render(
        cluster,
        "--set=operator.audit.enabled=true",
        "--set=operator.audit.signingKey.secretName=audit-key",
    )
    claim = find(manifests, "PersistentVolumeClaim", "-operator-audit")
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert not [m for m in manifests if m["metadata"]["name"].endswith("-router-audit")]
    deployment = find(manifests, "Deployment", "-operator")
    operator = container(deployment)
    assert {
        "--audit-dir=/var/lib/soberana/audit",
        "--audit-signing-key=/etc/soberana/audit-key/signing-key.pem",
    } <= set(operator["args"])
    assert any(env["name"] == "POD_NAME" for env in operator["env"])
    volumes = {
        volume["name"]: volume for volume in deployment["spec"]["template"]["spec"]["volumes"]
    }
    assert volumes["audit"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert volumes["audit-key"]["secret"]["secretName"] == "audit-key"
    refused = cluster.helm(
        "template", "test", str(CHART), "--set=operator.audit.enabled=true", check=False
    )
    assert "at '/operator/audit/signingKey/secretName'" in refused.stderr
