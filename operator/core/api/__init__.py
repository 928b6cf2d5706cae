"""Typed models of the soberana.io/v1alpha1 API: InferenceSite and ModelDeployment, spec and status.

These models are the single source of truth for the API: the CRDs in ``crds/`` are generated from
them (see :mod:`soberana.operator.core.crds`), field descriptions included.
"""

from soberana.operator.core.api.base import (
    API_VERSION,
    DEFAULT_NAMESPACE,
    GROUP,
    VERSION,
    SecretKeySelector,
)
from soberana.operator.core.api.deployment import (
    Autoscaling,
    Budget,
    ModelDeployment,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    ModelFormat,
    ModelSource,
    Placement,
    PlacementState,
    PlacementStatus,
    Residency,
    Resources,
    Serving,
    Strategy,
    TrafficSource,
)
from soberana.operator.core.api.meta import (
    Condition,
    ConditionStatus,
    LabelSelector,
    LabelSelectorRequirement,
    ObjectMeta,
    SelectorOperator,
)
from soberana.operator.core.api.site import (
    Backend,
    GpuPool,
    InferenceSite,
    InferenceSiteSpec,
    InferenceSiteStatus,
    KubeRayBackend,
    RayBackend,
    Tier,
)

__all__ = [
    "API_VERSION",
    "DEFAULT_NAMESPACE",
    "GROUP",
    "VERSION",
    "Autoscaling",
    "Backend",
    "Budget",
    "Condition",
    "ConditionStatus",
    "GpuPool",
    "InferenceSite",
    "InferenceSiteSpec",
    "InferenceSiteStatus",
    "KubeRayBackend",
    "LabelSelector",
    "LabelSelectorRequirement",
    "ModelDeployment",
    "ModelDeploymentSpec",
    "ModelDeploymentStatus",
    "ModelFormat",
    "ModelSource",
    "ObjectMeta",
    "Placement",
    "PlacementState",
    "PlacementStatus",
    "RayBackend",
    "Residency",
    "Resources",
    "SecretKeySelector",
    "SelectorOperator",
    "Serving",
    "Strategy",
    "Tier",
    "TrafficSource",
]
