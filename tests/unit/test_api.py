"""The typed API refuses what the API server refuses, and reads and writes the wire format."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from soberana.operator.core.api import (
    CPU_POOL,
    EngineName,
    InferenceSite,
    InferenceSiteSpec,
    LabelSelector,
    ModelDeployment,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    NamespacedName,
    ObjectMeta,
    PlacementStatus,
    Residency,
    object_key,
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
            "traffic": [{"region": "br"}],
            "latency_slo_ms": 40,
            "resources": {"gpu_memory_gib": 8, "memory_gib": 16},
        }
    )
    by_alias = ModelDeploymentSpec.model_validate(
        {
            "model": {"uri": "s3://bucket/m"},
            "traffic": [{"region": "br"}],
            "latencySLOms": 40,
            "resources": {"gpuMemoryGiB": 8, "memoryGiB": 16},
        }
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


@pytest.mark.parametrize(
    ("model", "engine", "expected"),
    [
        ({"uri": "file:///m.gguf", "format": "gguf"}, None, EngineName.LLAMACPP),
        ({"uri": "file:///m.pt", "format": "torchscript"}, None, EngineName.TORCH),
        ({"uri": "file:///m"}, None, EngineName.TRANSFORMERS),
        ({"uri": "file:///m"}, {"name": "vllm"}, EngineName.VLLM),
    ],
)
def test_engine_defaults_follow_the_format(
    model: dict[str, Any], engine: dict[str, Any] | None, expected: EngineName
) -> None:
    body: dict[str, Any] = {"model": model}
    if engine is not None:
        body["engine"] = engine
    spec = ModelDeploymentSpec.model_validate(body)
    assert spec.engine_name is expected
    assert spec.engine_args == {}


def test_engine_args_are_checked_naming_the_key() -> None:
    body = {"model": {"uri": "file:///m"}, "engine": {"name": "vllm", "args": {"max_len": 1}}}
    with pytest.raises(ValueError, match=r"spec\.engine\.args\.max_len"):
        ModelDeploymentSpec.model_validate(body)
    with pytest.raises(ValueError, match=r"spec\.engine\.args\.model"):
        ModelDeploymentSpec.model_validate(
            {**body, "engine": {"name": "vllm", "args": {"model": "x"}}}
        )


def test_engine_args_unknown_to_an_argless_engine_are_refused() -> None:
    body = {"model": {"uri": "file:///m"}, "engine": {"name": "transformers", "args": {"a": 1}}}
    with pytest.raises(ValueError, match=r"spec\.engine\.args\.a"):
        ModelDeploymentSpec.model_validate(body)


def test_cpu_only_resources() -> None:
    spec = ModelDeploymentSpec.model_validate(
        {
            "model": {"uri": "file:///m.gguf", "format": "gguf"},
            "resources": {"gpus": 0, "cpus": 2, "memoryGiB": 1},
        }
    )
    assert spec.resources.cpu_only
    assert (spec.resources.cpus, spec.resources.memory_gib) == (2, 1)
    gpu = ModelDeploymentSpec.model_validate({"model": {"uri": "file:///m"}})
    assert not gpu.resources.cpu_only
    assert (gpu.resources.gpus, gpu.resources.cpus, gpu.resources.memory_gib) == (1, 1, None)


def _site(**spec: Any) -> dict[str, Any]:
    return {
        "tier": "edge",
        "region": "pe-central",
        "jurisdiction": "PE",
        "backend": {"ray": {"dashboardURL": "http://h:8265", "serveURL": "http://h:8000"}},
        **spec,
    }


def test_a_site_may_have_only_a_cpu_pool() -> None:
    spec = InferenceSiteSpec.model_validate(
        _site(cpus={"count": 16, "memoryGiB": 32, "hourlyCost": 0.02})
    )
    assert spec.gpus == []
    assert (spec.gpus_total, spec.cpus_total) == (0, 16)
    assert spec.cpus is not None and spec.cpus.memory_gib == 32
    with pytest.raises(ValueError, match=r"spec\.gpus .* or spec\.cpus"):
        InferenceSiteSpec.model_validate(_site())


def test_no_gpu_pool_may_take_the_cpu_pool_name() -> None:
    pool = {"model": CPU_POOL.upper(), "count": 1, "memoryGiB": 8, "hourlyCost": 1}
    with pytest.raises(ValueError, match=r"spec\.cpus"):
        InferenceSiteSpec.model_validate(_site(gpus=[pool]))


def test_a_namespaced_name_reads_back_what_it_writes() -> None:
    ref = NamespacedName("ml", "qwen-chat")
    assert str(ref) == "ml/qwen-chat"
    assert NamespacedName.parse(str(ref)) == ref


@pytest.mark.parametrize("key", ["qwen-chat", "/qwen-chat", "ml/", "ml/qwen/chat", ""])
def test_a_key_that_is_not_namespace_slash_name_is_refused_saying_how_to_write_it(key: str) -> None:
    with pytest.raises(ValueError, match=r"write it as <namespace>/<name>"):
        NamespacedName.parse(key)


def test_an_object_without_namespace_is_in_the_default_namespace() -> None:
    assert NamespacedName.of(ObjectMeta(name="chat")) == NamespacedName("default", "chat")
    assert NamespacedName.of(ObjectMeta(name="chat", namespace="ml")) == NamespacedName(
        "ml", "chat"
    )


def test_a_cluster_scoped_object_is_keyed_by_its_name_alone() -> None:
    assert object_key(None, "br1") == "br1"
    assert object_key("ml", "chat") == "ml/chat"
