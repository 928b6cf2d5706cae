"""The real API server refuses every malformed object in tests/fixtures/invalid, naming the field.

Each fixture's ``# expect:`` line is a substring kubectl's error must contain. Objects are sent
with a server-side dry run, so nothing is stored even if a rule regressed. The examples, on the
contrary, must pass.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kube import Cluster

ROOT = Path(__file__).resolve().parents[2]
INVALID = sorted((ROOT / "tests" / "fixtures" / "invalid").glob("*.yaml"))
EXAMPLES = sorted((ROOT / "examples").rglob("*.yaml"))


def _expectation(fixture: Path) -> str:
    for line in fixture.read_text(encoding="utf-8").splitlines():
        if line.startswith("# expect:"):
            return line.removeprefix("# expect:").strip()
    raise AssertionError(f"{fixture.name} has no '# expect:' line")


@pytest.mark.integration
@pytest.mark.parametrize("fixture", INVALID, ids=[fixture.stem for fixture in INVALID])
def test_api_server_refuses_invalid_object(cluster: Cluster, namespace: str, fixture: Path) -> None:
    result = cluster.kubectl(
        "create", "--dry-run=server", f"--namespace={namespace}", "-f", str(fixture), check=False
    )
    assert result.returncode != 0, f"{fixture.name} was accepted"
    assert _expectation(fixture) in result.stderr, result.stderr


def _soberana_objects() -> list[dict[str, Any]]:
    objects = []
    for path in EXAMPLES:
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if document and str(document["apiVersion"]).startswith("soberana.io/"):
                document["metadata"].pop("namespace", None)
                objects.append(document)
    return objects


@pytest.mark.integration
def test_api_server_accepts_the_examples(cluster: Cluster, namespace: str) -> None:
    objects = _soberana_objects()
    assert objects
    result = cluster.kubectl(
        "create",
        "--dry-run=server",
        f"--namespace={namespace}",
        "-o",
        "name",
        "-f",
        "-",
        input=yaml.safe_dump_all(objects),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.split()) == len(objects)
