"""The typed API refuses what the API server refuses, and reads and writes the wire format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from soberana.operator.core.api import (
    InferenceSite,
    LabelSelector,
    ModelDeployment,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    PlacementStatus,
    Residency,
)
from soberana.operator.manifests import ManifestError, load_manifests

ROOT = Path(__file__).resolve().parents[2]
INVALID = sorted((ROOT / "tests" / "fixtures" / "invalid").glob("*.yaml"))


def _header(fixture: Path, name: str) -> str:
    prefix = f"# {name}:"
    lines = fixture.read_text(encoding="utf-8").splitlines()
    return next(line.removeprefix(prefix).strip() for line in lines if line.startswith(prefix))


def test_there_are_at_least_twenty_invalid_fixtures() -> None:
    assert len(INVALID) >= 20


@pytest.mark.parametrize("fixture", INVALID, ids=[fixture.stem for fixture in INVALID])
def test_models_refuse_invalid_object_naming_the_field(fixture: Path) -> None:
    field = _header(fixture, "field")
    with pytest.raises(ManifestError) as refused:
        load_manifests([fixture])
    message = str(refused.value)
    assert message.startswith(f"{fixture}: ")
    assert any(f": {field}{end}" in message for end in (":", ".", "[")), message


def _example_documents() -> list[dict[str, Any]]:
    return [
        document
        for path in sorted((ROOT / "examples").rglob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8"))
        if document and str(document["apiVersion"]).startswith("soberana.io/")
    ]


@pytest.mark.parametrize("document", _example_documents(), ids=lambda d: d["metadata"]["name"])
def test_examples_round_trip_through_the_models(document: dict[str, Any]) -> None:
    model = InferenceSite if document["kind"] == "InferenceSite" else ModelDeployment
    parsed = model.model_validate(document)
    written = parsed.model_dump(by_alias=True, exclude_none=True, mode="json")
    assert model.model_validate(written) == parsed
    assert set(written["spec"]) >= set(document["spec"])


def test_python_names_and_wire_names_both_work() -> None:
    by_name = ModelDeploymentSpec.model_validate(
        {
            "model": {"uri": "s3://bucket/m"},
            "latency_slo_ms": 40,
            "resources": {"gpu_memory_gib": 8},
        }
    )
    by_alias = ModelDeploymentSpec.model_validate(
        {"model": {"uri": "s3://bucket/m"}, "latencySLOms": 40, "resources": {"gpuMemoryGiB": 8}}
    )
    assert by_name == by_alias
    assert by_alias.model_dump(by_alias=True, exclude_none=True)["latencySLOms"] == 40


@pytest.mark.parametrize(
    ("spec", "expected"),
    [({}, 1), ({"replicas": 3}, 3), ({"autoscaling": {"minReplicas": 2, "maxReplicas": 5}}, 5)],
)
def test_reserved_replicas(spec: dict[str, Any], expected: int) -> None:
    body = {"model": {"uri": "file:///m"}, **spec}
    assert ModelDeploymentSpec.model_validate(body).reserved_replicas == expected


@pytest.mark.parametrize(
    ("selector", "labels", "mismatch"),
    [
        ({"matchLabels": {"a": "1"}}, {"a": "1"}, None),
        ({"matchLabels": {"a": "1"}}, {}, "label a=<unset>, selector wants a=1"),
        (
            {"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "2"]}]},
            {"a": "2"},
            None,
        ),
        (
            {"matchExpressions": [{"key": "a", "operator": "In", "values": ["1"]}]},
            {"a": "3"},
            "label a=3 is not in 1",
        ),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {}, None),
        ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {}, "label a is unset"),
        (
            {"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]},
            {"a": "x"},
            "label a is set (x)",
        ),
    ],
)
def test_label_selector_semantics(
    selector: dict[str, Any], labels: dict[str, str], mismatch: str | None
) -> None:
    assert LabelSelector.model_validate(selector).mismatch(labels) == mismatch


def test_residency_refusals() -> None:
    allowed = Residency.model_validate({"allowedJurisdictions": ["BR", "CL"]})
    assert allowed.refusal("BR") is None
    assert allowed.refusal("US") == "US is not in allowedJurisdictions [BR, CL]"
    denied = Residency.model_validate({"deniedJurisdictions": ["US"]})
    assert denied.refusal("US") == "US is in deniedJurisdictions"
    assert Residency().refusal("US") is None


def test_status_is_written_in_camel_case_and_tolerates_unknown_fields() -> None:
    status = ModelDeploymentStatus(
        placements=[
            PlacementStatus(site="br1", gpu_model="L4", replicas=2, hourly_cost=1.6, regions=["br"])
        ],
        hourly_cost=1.6,
    )
    written = status.model_dump(by_alias=True, exclude_none=True, mode="json")
    assert written["placements"][0] == {
        "site": "br1",
        "gpuModel": "L4",
        "replicas": 2,
        "readyReplicas": 0,
        "hourlyCost": 1.6,
        "regions": ["br"],
        "state": "Pending",
    }
    assert ModelDeploymentStatus.model_validate({**written, "futureField": 1}) == status
