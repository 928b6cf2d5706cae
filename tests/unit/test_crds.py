"""The generated CRDs: in sync with crds/, structural, described, and bounded for CEL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from soberana.operator.core.crds import crd_files, custom_resource_definitions

CRDS = Path(__file__).resolve().parents[2] / "crds"


def test_crds_folder_matches_the_generator() -> None:
    expected = crd_files()
    on_disk = {path.name: path.read_text(encoding="utf-8") for path in CRDS.glob("*.yaml")}
    assert sorted(on_disk) == sorted(expected), "run: python hack/generate_crds.py"
    for name, text in expected.items():
        assert on_disk[name] == text, f"crds/{name} is stale; run: python hack/generate_crds.py"


def _walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, child in schema.get("properties", {}).items():
        yield from _walk(child, f"{path}.{name}")
    if "items" in schema:
        yield from _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _walk(schema["additionalProperties"], f"{path}{{}}")


def _schemas() -> list[tuple[str, dict[str, Any]]]:
    return [
        (crd["spec"]["names"]["kind"], crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
        for crd in custom_resource_definitions()
    ]


@pytest.mark.parametrize(("kind", "schema"), _schemas())
def test_schema_is_structural(kind: str, schema: dict[str, Any]) -> None:
    forbidden = {"$ref", "anyOf", "oneOf", "allOf", "nullable", "propertyNames", "title"}
    for path, node in _walk(schema):
        assert "type" in node, f"{kind}{path} has no type"
        assert not forbidden & set(node), f"{kind}{path} uses {forbidden & set(node)}"
        assert not ("properties" in node and "additionalProperties" in node), f"{kind}{path}"
        if "x-kubernetes-preserve-unknown-fields" in node:
            # Only the engine's own arguments are free-form; soberana checks their keys itself.
            assert path == ".spec.engine.args", f"{kind}{path}"
        for required in node.get("required", []):
            assert required in node["properties"], f"{kind}{path} requires unknown {required}"


@pytest.mark.parametrize(("kind", "schema"), _schemas())
def test_every_field_is_described(kind: str, schema: dict[str, Any]) -> None:
    for path, node in _walk(schema):
        is_field = path.count(".") >= 1 and not path.endswith(("[]", "{}"))
        if is_field and path not in {".metadata"}:
            assert node.get("description"), f"{kind}{path} has no description"


@pytest.mark.parametrize(("kind", "schema"), _schemas())
def test_spec_strings_and_lists_are_bounded_for_cel(kind: str, schema: dict[str, Any]) -> None:
    for path, node in _walk(schema["properties"]["spec"], ".spec"):
        if node["type"] == "string" and "enum" not in node:
            assert "maxLength" in node, f"{kind}{path} needs maxLength"
        if node["type"] == "array":
            assert "maxItems" in node, f"{kind}{path} needs maxItems"
        if node["type"] == "object" and "additionalProperties" in node:
            assert "maxProperties" in node, f"{kind}{path} needs maxProperties"


def test_names_scope_and_columns() -> None:
    site, deployment = custom_resource_definitions()
    assert site["spec"]["scope"] == "Cluster"
    assert deployment["spec"]["scope"] == "Namespaced"
    assert site["spec"]["names"]["shortNames"] == ["isite"]
    assert deployment["spec"]["names"]["shortNames"] == ["mdep"]
    for crd in (site, deployment):
        version = crd["spec"]["versions"][0]
        assert crd["spec"]["names"]["categories"] == ["soberana"]
        assert version["subresources"] == {"status": {}}
        columns = [column["name"] for column in version["additionalPrinterColumns"]]
        assert "Age" in columns and "Hourly-Cost" in columns


def test_cel_rules_carry_messages() -> None:
    rules = [
        rule
        for _, schema in _schemas()
        for _, node in _walk(schema)
        for rule in node.get("x-kubernetes-validations", [])
    ]
    assert len(rules) >= 6
    assert all(rule["message"] for rule in rules)
