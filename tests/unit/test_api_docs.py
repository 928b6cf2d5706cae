"""docs/api.md is generated from the typed API models and stays in sync with them."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from soberana.operator.core.crds import custom_resource_definitions

ROOT = Path(__file__).resolve().parents[2]
GENERATOR = ROOT / "hack" / "generate_api_docs.py"


@pytest.fixture(scope="module")
def reference() -> str:
    spec = importlib.util.spec_from_file_location("generate_api_docs", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    render: Callable[[], str] = module.api_reference
    return render()


def test_docs_api_md_matches_the_generator(reference: str) -> None:
    on_disk = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    assert on_disk == reference, "docs/api.md is stale; run: python hack/generate_api_docs.py"


def _nodes(schema: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(field name, schema) of every field below ``schema``, list items and map values included."""
    for name, child in schema.get("properties", {}).items():
        yield name, child
        yield from _nodes(child)
        for inner in (child.get("items"), child.get("additionalProperties")):
            if isinstance(inner, dict):
                yield from _nodes(inner)


@pytest.mark.parametrize(
    "crd", custom_resource_definitions(), ids=lambda crd: crd["spec"]["names"]["kind"]
)
def test_every_field_column_and_rule_is_documented(reference: str, crd: dict[str, Any]) -> None:
    version = crd["spec"]["versions"][0]
    root = version["schema"]["openAPIV3Schema"]
    for part in ("spec", "status"):
        for name, node in _nodes(root["properties"][part]):
            assert f"| `{name}`" in reference, f"{part} field {name} is not documented"
            for rule in node.get("x-kubernetes-validations", []):
                assert rule["message"] in reference, f"CEL rule on {name} is not documented"
    for rule in root["properties"]["spec"].get("x-kubernetes-validations", []):
        assert rule["message"] in reference
    for column in version["additionalPrinterColumns"]:
        assert f"| {column['name']}" in reference and f"`{column['jsonPath']}`" in reference
