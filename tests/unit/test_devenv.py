"""The pure parts of the dev environment: the PKI, the go.mod parsing and the build error path."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from soberana.operator.devenv import binaries
from soberana.operator.devenv.controlplane import free_port, wait_for
from soberana.operator.devenv.pki import ensure_pki

KUBERNETES_MOD = """
module k8s.io/kubernetes

require (
\tk8s.io/api v0.0.0
\tk8s.io/klog/v2 v2.140.0
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/client-go => ./staging/src/k8s.io/client-go
)
"""


def test_staging_replaces_come_from_the_mod_file() -> None:
    replaces = binaries.staging_replaces(KUBERNETES_MOD, "1.37.1")
    assert replaces == {
        "k8s.io/api": "k8s.io/api v0.37.1",
        "k8s.io/client-go": "k8s.io/client-go v0.37.1",
    }


def test_staging_replaces_refuse_a_mod_without_staging() -> None:
    with pytest.raises(binaries.BuildError, match=r"reading k8s\.io/kubernetes go\.mod"):
        binaries.staging_replaces("module k8s.io/kubernetes\n", "1.37.1")


def test_missing_go_names_the_step_and_the_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SOBERANA_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))  # no `go` here
    with pytest.raises(binaries.BuildError) as caught:
        binaries.ensure_etcd(progress=lambda _: None)
    assert caught.value.step == "building etcd"
    assert "install Go" in str(caught.value)


def test_cache_is_keyed_by_version(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SOBERANA_CACHE_DIR", str(tmp_path))
    assert (
        binaries.kube_apiserver_path().parent.name
        == f"kube-apiserver-v{binaries.KUBERNETES_VERSION}"
    )
    assert binaries.etcd_path().parent.name == f"etcd-v{binaries.ETCD_VERSION}"
    assert binaries.kube_apiserver_path().is_relative_to(tmp_path)


def test_pki_chain_and_admin_identity(tmp_path: Path) -> None:
    paths = ensure_pki(tmp_path)
    ca = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
    admin = x509.load_pem_x509_certificate(paths.admin_cert.read_bytes())
    serving = x509.load_pem_x509_certificate(paths.serving_cert.read_bytes())
    for cert in (admin, serving):
        cert.verify_directly_issued_by(ca)
    organisations = admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    assert [o.value for o in organisations] == ["system:masters"]
    usage = admin.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in usage
    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    assert paths.admin_key.stat().st_mode & 0o077 == 0, "private keys must not be world-readable"
    # loads as a client identity, exactly as a kubeconfig user would
    ssl.create_default_context(cafile=str(paths.ca_cert)).load_cert_chain(
        str(paths.admin_cert), str(paths.admin_key)
    )


def test_pki_is_reused(tmp_path: Path) -> None:
    first = ensure_pki(tmp_path).ca_cert.read_bytes()
    assert ensure_pki(tmp_path).ca_cert.read_bytes() == first


def test_wait_for_names_what_it_waited_for() -> None:
    with pytest.raises(TimeoutError, match="the impossible"):
        wait_for(lambda: False, timeout=0.05, interval=0.01, what="the impossible")


def test_free_port_never_hands_out_a_port_twice() -> None:
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
