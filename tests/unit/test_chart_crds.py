"""The Helm chart ships the generated CRDs: charts/soberana/crds/ is a byte copy of crds/."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "crds"
CHART_CRDS = ROOT / "charts" / "soberana" / "crds"


def test_chart_crds_are_byte_identical_to_crds() -> None:
    repo = {path.name: path.read_bytes() for path in CRDS.glob("*.yaml")}
    chart = {path.name: path.read_bytes() for path in CHART_CRDS.iterdir()}
    assert repo, "crds/ is empty"
    assert sorted(chart) == sorted(repo), "run: python hack/generate_crds.py (make crds)"
    for name, content in repo.items():
        assert chart[name] == content, (
            f"charts/soberana/crds/{name} differs from crds/{name}; "
            "run: python hack/generate_crds.py (make crds)"
        )
