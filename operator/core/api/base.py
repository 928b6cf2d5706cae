"""Base classes, constrained strings and CEL rules shared by the soberana.io API models.

Spec models refuse unknown fields, so a typo fails loudly instead of being ignored; status models
tolerate them, because an operator may read an object written by a newer version. Both speak
camelCase on the wire (``memoryGiB``) and accept snake_case names in Python (``memory_gib``).

A rule the OpenAPI schema cannot express is declared twice, side by side on the model it
constrains: as a CEL rule (``x-kubernetes-validations``) that the API server enforces, and as a
Python validator that enforces the same rule wherever the model is built without a server (for
example ``soberana plan``). :func:`cel_rules` puts the CEL half into the model's JSON schema, from
which :mod:`soberana.operator.core.crds` generates the CRDs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

GROUP: Final = "soberana.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = "soberana.io/v1alpha1"
DEFAULT_NAMESPACE: Final = "default"
"""Where a namespaced object without a namespace lives, as with kubectl."""
CPU_POOL: Final = "cpu"
"""The pool name of CPU-only replicas where a GPU model is named (placements, allocations)."""

# A DNS label, as Kubernetes uses for namespaces; region ids follow the same shape.
_DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

Jurisdiction = Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$", min_length=2, max_length=2)]
"""An ISO 3166-1 alpha-2 code in capitals, such as ``BR`` (``EU`` is accepted too)."""

RegionId = Annotated[str, StringConstraints(pattern=_DNS_LABEL, min_length=1, max_length=63)]
"""A user region such as ``br-southeast``: lowercase letters, digits and dashes."""

GpuModelName = Annotated[
    str,
    StringConstraints(
        pattern=r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$", min_length=1, max_length=63
    ),
]
"""A GPU model as sites list it and deployments ask for it, such as ``L4`` or ``A100-80GB``."""

NamespaceName = Annotated[str, StringConstraints(pattern=_DNS_LABEL, min_length=1, max_length=63)]
"""A Kubernetes namespace name."""

ObjectName = Annotated[str, StringConstraints(pattern=_DNS_SUBDOMAIN, min_length=1, max_length=253)]
"""A Kubernetes object name (DNS subdomain), such as a Secret's."""

HttpUrl = Annotated[
    str,
    StringConstraints(pattern=r"^https?://[^\s/?#]+([/?#]\S*)?$", min_length=8, max_length=2048),
]
"""An ``http://`` or ``https://`` URL, kept as written (no normalisation)."""


@dataclass(frozen=True)
class CelRule:
    """One ``x-kubernetes-validations`` entry.

    ``field_path`` (relative to the object that carries the rule, such as ``.minSites``) makes the
    API server report the error on that field instead of on the object.
    """

    rule: str
    message: str
    field_path: str | None = None

    def to_schema(self) -> JsonDict:
        entry: JsonDict = {"rule": self.rule, "message": self.message}
        if self.field_path is not None:
            entry["fieldPath"] = self.field_path
        return entry


def cel_rules(*rules: CelRule) -> JsonDict:
    """The ``json_schema_extra`` that attaches ``rules`` to a model's schema."""
    return {"x-kubernetes-validations": [rule.to_schema() for rule in rules]}


def list_map(*keys: str) -> JsonDict:
    """Mark a list field as a map keyed by ``keys``: the API server refuses duplicate keys."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": list(keys)}


LIST_SET: JsonDict = {"x-kubernetes-list-type": "set"}
"""Mark a list of scalars as a set: the API server refuses duplicate items."""


class SpecModel(BaseModel):
    """Base of everything a user writes: unknown fields are errors, values are immutable."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class StatusModel(BaseModel):
    """Base of everything the operator writes: unknown fields are ignored."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class SecretKeySelector(SpecModel):
    """A key of a Secret in the operator's namespace."""

    name: ObjectName = Field(description="Name of the Secret, in the operator's namespace.")
    key: str = Field(
        min_length=1,
        max_length=253,
        pattern=r"^[-._a-zA-Z0-9]+$",
        description="Key within the Secret's data whose value is used.",
    )


def require_unique(values: list[str], what: str) -> None:
    """Refuse a list that holds a value twice (the API server does so for list-type set and map)."""
    seen: set[str] = set()
    repeated: list[str] = []
    for value in values:
        if value in seen and value not in repeated:
            repeated.append(value)
        seen.add(value)
    if repeated:
        raise ValueError(f"{', '.join(repeated)} listed more than once in {what}")
