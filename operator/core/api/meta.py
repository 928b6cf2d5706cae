"""Kubernetes shapes the soberana.io types reuse: object metadata, conditions, label selectors.

They mirror ``metav1.ObjectMeta`` (only what soberana reads), ``metav1.Condition`` and
``metav1.LabelSelector`` so that tools and people who know Kubernetes meet nothing new.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic.alias_generators import to_camel

from soberana.operator.core.api.base import (
    DEFAULT_NAMESPACE,
    CelRule,
    SpecModel,
    StatusModel,
    cel_rules,
)

LabelKey = Annotated[str, StringConstraints(min_length=1, max_length=317)]
LabelValue = Annotated[
    str, StringConstraints(pattern=r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$", max_length=63)
]


class ObjectMeta(BaseModel):
    """The part of ``metadata`` soberana reads; everything else is kept by the API server."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    name: str = Field(min_length=1, max_length=253, description="Name of the object.")
    namespace: str | None = Field(None, description="Namespace of a namespaced object.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels of the object.")
    generation: int | None = Field(None, description="Spec generation, set by the API server.")


@dataclass(frozen=True)
class NamespacedName:
    """A namespaced object's identity, written ``namespace/name`` in keys, plans and logs."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"

    @classmethod
    def parse(cls, key: str) -> NamespacedName:
        """Read ``namespace/name``; a key of any other shape is a :class:`ValueError`."""
        namespace, slash, name = key.partition("/")
        if not namespace or not slash or not name or "/" in name:
            raise ValueError(
                f"{key!r} is not a namespaced name: write it as <namespace>/<name>, "
                "such as default/qwen-chat"
            )
        return cls(namespace, name)

    @classmethod
    def of(cls, metadata: ObjectMeta) -> NamespacedName:
        """A namespaced object's identity; without a namespace it lives in the default one."""
        return cls(metadata.namespace or DEFAULT_NAMESPACE, metadata.name)


def object_key(namespace: str | None, name: str) -> str:
    """How indexes and logs name any object: ``namespace/name``, or ``name`` if cluster-scoped."""
    return str(NamespacedName(namespace, name)) if namespace else name


class ConditionStatus(StrEnum):
    """Whether a condition holds."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(StatusModel):
    """One aspect of the object's state, in the shape of a Kubernetes metav1.Condition."""

    type: str = Field(
        min_length=1,
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
        r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
        description="Type of condition in CamelCase, such as Ready or Placed.",
    )
    status: ConditionStatus = Field(description="Status of the condition: True, False or Unknown.")
    observed_generation: int | None = Field(
        None,
        ge=0,
        description="metadata.generation of the object when the condition was last set.",
    )
    last_transition_time: datetime = Field(
        description="Last time the condition changed from one status to another."
    )
    reason: str = Field(
        min_length=1,
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        description="Machine-readable CamelCase reason for the last transition.",
    )
    message: str = Field(
        max_length=32768, description="Human-readable details about the last transition."
    )


class SelectorOperator(StrEnum):
    """How a label selector requirement relates a label to its values."""

    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


_VALUES_REQUIRED = (SelectorOperator.IN, SelectorOperator.NOT_IN)


class LabelSelectorRequirement(SpecModel):
    """A requirement on one label, as in a Kubernetes label selector."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule(
                rule="(self.operator in ['In', 'NotIn']) == "
                "(has(self.values) && size(self.values) > 0)",
                message="values must be non-empty for operator In or NotIn, "
                "and empty for Exists or DoesNotExist",
                field_path=".values",
            )
        )
    )

    key: LabelKey = Field(description="The label key the requirement applies to.")
    operator: SelectorOperator = Field(
        description="In, NotIn, Exists or DoesNotExist: how the label relates to values."
    )
    values: list[LabelValue] = Field(
        default_factory=list,
        max_length=64,
        description="Label values; non-empty for In and NotIn, empty for Exists and DoesNotExist.",
    )

    @model_validator(mode="after")
    def _values_match_operator(self) -> LabelSelectorRequirement:
        if (self.operator in _VALUES_REQUIRED) != bool(self.values):
            raise ValueError(
                "values must be non-empty for operator In or NotIn, "
                "and empty for Exists or DoesNotExist"
            )
        return self

    def mismatch(self, labels: Mapping[str, str]) -> str | None:
        """Why ``labels`` fail this requirement, or None when they meet it."""
        value = labels.get(self.key)
        match self.operator:
            case SelectorOperator.IN if value not in self.values:
                wanted = "|".join(self.values)
                return f"label {self.key}={value or '<unset>'} is not in {wanted}"
            case SelectorOperator.NOT_IN if value is not None and value in self.values:
                return f"label {self.key}={value} is excluded"
            case SelectorOperator.EXISTS if value is None:
                return f"label {self.key} is unset"
            case SelectorOperator.DOES_NOT_EXIST if value is not None:
                return f"label {self.key} is set ({value})"
        return None


class LabelSelector(SpecModel):
    """Selects objects by their labels, like a Kubernetes label selector: every term must hold."""

    match_labels: dict[str, LabelValue] = Field(
        default_factory=dict,
        max_length=64,
        description="Labels that must be present with exactly these values.",
    )
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list,
        max_length=32,
        description="Requirements on labels that must all hold.",
    )

    def mismatch(self, labels: Mapping[str, str]) -> str | None:
        """Why ``labels`` fail this selector (the first failing term), or None when they match."""
        for key, wanted in sorted(self.match_labels.items()):
            value = labels.get(key)
            if value != wanted:
                return f"label {key}={value or '<unset>'}, selector wants {key}={wanted}"
        for requirement in self.match_expressions:
            reason = requirement.mismatch(labels)
            if reason is not None:
                return reason
        return None

    def describe(self) -> str:
        """A compact rendering such as ``provider=aws,gpu in (L4|A100)``."""
        terms = [f"{key}={value}" for key, value in sorted(self.match_labels.items())]
        for requirement in self.match_expressions:
            values = "|".join(requirement.values)
            match requirement.operator:
                case SelectorOperator.IN:
                    terms.append(f"{requirement.key} in ({values})")
                case SelectorOperator.NOT_IN:
                    terms.append(f"{requirement.key} notin ({values})")
                case SelectorOperator.EXISTS:
                    terms.append(requirement.key)
                case SelectorOperator.DOES_NOT_EXIST:
                    terms.append(f"!{requirement.key}")
        return ",".join(terms) or "<everything>"
