"""Reading manifests from files: what is found, what is skipped, and errors that name the field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from soberana.operator.manifests import ManifestError, load_manifests

ROOT = Path(__file__).resolve().parents[2]

SITE = """
apiVersion: soberana.io/v1alpha1
kind: InferenceSite
metadata: {name: br1}
spec:
  tier: edge
  region: br-south
  jurisdiction: BR
  gpus: [{model: L4, count: 2, memoryGiB: 24, hourlyCost: 0.6}]
  backend: {ray: {dashboardURL: "http://10.0.0.1:8265", serveURL: "http://10.0.0.1:8000"}}
"""

DEPLOYMENT = """
apiVersion: soberana.io/v1alpha1
kind: ModelDeployment
metadata: {name: chat}
spec:
  model: {uri: "file:///models/m"}
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_the_examples_load() -> None:
    latam = load_manifests([ROOT / "examples" / "latam"])
    assert (len(latam.sites), len(latam.deployments)) == (8, 7)
    demo = load_manifests([ROOT / "examples" / "demo"])
    assert (len(demo.sites), len(demo.deployments)) == (4, 4)


def test_directories_multi_documents_lists_and_other_groups(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", f"{SITE}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: s}}\n")
    nested = tmp_path / "more"
    nested.mkdir()
    write(nested, "b.yml", "apiVersion: v1\nkind: List\nitems:\n" + _indented(DEPLOYMENT))
    write(tmp_path, "notes.txt", "not yaml: [")
    found = load_manifests([tmp_path])
    assert [site.metadata.name for site in found.sites] == ["br1"]
    assert [deployment.metadata.namespace for deployment in found.deployments] == ["default"]


def test_an_invalid_field_is_named_with_file_and_object(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.yaml", SITE.replace("count: 2", "count: -2"))
    with pytest.raises(ManifestError) as refused:
        load_manifests([path])
    assert str(refused.value) == (
        f"{path}: InferenceSite br1: spec.gpus[0].count: Input should be greater than or equal to 0"
    )


def test_unknown_fields_kinds_and_versions(tmp_path: Path) -> None:
    typo = write(tmp_path, "typo.yaml", DEPLOYMENT + "  replica: 2\n")
    with pytest.raises(
        ManifestError, match=re.escape("ModelDeployment default/chat: spec.replica: unknown")
    ):
        load_manifests([typo])
    kind = write(tmp_path, "kind.yaml", DEPLOYMENT.replace("ModelDeployment", "ModelDeploy"))
    with pytest.raises(ManifestError, match="ModelDeploy chat: unknown kind"):
        load_manifests([kind])
    version = write(tmp_path, "version.yaml", SITE.replace("v1alpha1", "v9"))
    with pytest.raises(
        ManifestError, match=re.escape("apiVersion: unsupported version 'soberana.io/v9'")
    ):
        load_manifests([version])


def test_duplicates_and_broken_yaml(tmp_path: Path) -> None:
    first = write(tmp_path, "a.yaml", SITE)
    second = write(tmp_path, "b.yaml", SITE)
    with pytest.raises(
        ManifestError, match=re.escape(f"{second}: InferenceSite br1 is also defined in {first}")
    ):
        load_manifests([first, second])
    broken = write(tmp_path, "broken.yaml", "spec: [")
    with pytest.raises(ManifestError, match=re.escape("broken.yaml: not valid YAML")):
        load_manifests([broken])


def _indented(document: str) -> str:
    lines = [line for line in document.strip().splitlines()]
    return "\n".join(["- " + lines[0], *("  " + line for line in lines[1:])]) + "\n"
