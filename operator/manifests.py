"""Read InferenceSite and ModelDeployment manifests from YAML files, without a cluster.

Files and directories (searched recursively for ``*.yaml`` and ``*.yml``, in name order) may hold
several documents each, and ``kind: List`` documents as ``kubectl get -o yaml`` writes them.
Objects of other API groups (a Secret next to a site, say) are skipped; soberana.io objects are
validated against the typed API, and any problem is reported with the file, the object and the
field, such as ``examples/sites.yaml: InferenceSite br1: spec.gpus[0].count: Input should be
greater than or equal to 0``. A ModelDeployment without a namespace is in ``default``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import ValidationError

from soberana.operator.core.api import (
    API_VERSION,
    DEFAULT_NAMESPACE,
    GROUP,
    InferenceSite,
    ModelDeployment,
    NamespacedName,
    object_key,
)

_KINDS: dict[str, type[InferenceSite] | type[ModelDeployment]] = {
    "InferenceSite": InferenceSite,
    "ModelDeployment": ModelDeployment,
}


_Object = TypeVar("_Object", InferenceSite, ModelDeployment)


class ManifestError(ValueError):
    """A manifest that cannot be read or does not validate; the message names file and field."""


@dataclass(frozen=True)
class Manifests:
    """The soberana.io objects found, in the order read."""

    sites: tuple[InferenceSite, ...]
    deployments: tuple[ModelDeployment, ...]


def load_manifests(paths: Iterable[Path]) -> Manifests:
    """Read every soberana.io object under ``paths``; raise :class:`ManifestError` on a bad one."""
    sites: dict[str, tuple[Path, InferenceSite]] = {}
    deployments: dict[str, tuple[Path, ModelDeployment]] = {}
    for path, document in _documents(paths):
        parsed = _parse(path, document)
        if isinstance(parsed, InferenceSite):
            _add(sites, parsed.metadata.name, path, parsed)
        elif isinstance(parsed, ModelDeployment):
            _add(deployments, str(NamespacedName.of(parsed.metadata)), path, parsed)
    return Manifests(
        sites=tuple(site for _, site in sites.values()),
        deployments=tuple(deployment for _, deployment in deployments.values()),
    )


def _documents(paths: Iterable[Path]) -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in paths:
        if not path.exists():
            raise ManifestError(f"{path}: no such file or directory")
        files = (
            sorted(found for found in path.rglob("*") if found.suffix in (".yaml", ".yml"))
            if path.is_dir()
            else [path]
        )
        for file in files:
            try:
                documents = list(yaml.safe_load_all(file.read_text(encoding="utf-8")))
            except yaml.YAMLError as error:
                raise ManifestError(f"{file}: not valid YAML: {error}") from error
            for document in documents:
                if document is None:
                    continue
                if not isinstance(document, dict):
                    raise ManifestError(f"{file}: a document is not a mapping: {document!r}")
                if document.get("kind") == "List":
                    yield from ((file, item) for item in document.get("items") or [])
                else:
                    yield file, document


def _parse(path: Path, document: dict[str, Any]) -> InferenceSite | ModelDeployment | None:
    api_version, kind = str(document.get("apiVersion", "")), str(document.get("kind", ""))
    if api_version.partition("/")[0] != GROUP:
        return None
    name = _name(document)
    model = _KINDS.get(kind)
    if model is None:
        raise ManifestError(f"{path}: {kind or 'an object without kind'} {name}: unknown kind")
    if kind == "ModelDeployment":
        metadata = document.get("metadata")
        if isinstance(metadata, dict) and not metadata.get("namespace"):
            document = {**document, "metadata": {**metadata, "namespace": DEFAULT_NAMESPACE}}
            name = _name(document)
    try:
        return model.model_validate(document)
    except ValidationError as error:
        problems = "; ".join(_describe(detail) for detail in error.errors())
        raise ManifestError(f"{path}: {kind} {name}: {problems}") from error


def _describe(detail: Any) -> str:
    field = _field_path(detail["loc"])
    if detail["type"] == "extra_forbidden":
        message = "unknown field"
    elif detail["type"] == "literal_error" and field == "apiVersion":
        message = f"unsupported version {detail['input']!r}; soberana serves {API_VERSION}"
    else:
        message = str(detail["msg"]).removeprefix("Value error, ")
    return f"{field}: {message}" if field else message


def _field_path(location: Iterable[str | int]) -> str:
    """``("spec", "gpus", 0, "count")`` as ``spec.gpus[0].count``."""
    path = ""
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path


def _name(document: dict[str, Any]) -> str:
    metadata = document.get("metadata")
    if not isinstance(metadata, dict) or not metadata.get("name"):
        return "<unnamed>"
    return object_key(metadata.get("namespace"), str(metadata["name"]))


def _add(found: dict[str, tuple[Path, _Object]], key: str, path: Path, value: _Object) -> None:
    if key in found:
        raise ManifestError(f"{path}: {value.kind} {key} is also defined in {found[key][0]}")
    found[key] = (path, value)
