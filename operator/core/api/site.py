"""The InferenceSite resource: one place where models can run, what it offers and how to reach it.

Cluster-scoped. A site is a Ray cluster in a cloud region, an on-premises cluster or an edge box;
its spec says where it is (region, legal jurisdiction), what GPUs and CPU cores it has at what
price, how far it is from each user region, and how soberana drives it (an existing Ray cluster,
or a Kubernetes cluster running KubeRay).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from soberana.operator.core.api.base import (
    API_VERSION,
    CPU_POOL,
    DEFAULT_NAMESPACE,
    CelRule,
    GpuModelName,
    HttpUrl,
    Jurisdiction,
    NamespaceName,
    RegionId,
    SecretKeySelector,
    SpecModel,
    StatusModel,
    cel_rules,
    list_map,
    require_unique,
)
from soberana.operator.core.api.meta import Condition, ObjectMeta

RoundTripMs = Annotated[int, Field(ge=0, le=60_000)]


class Tier(StrEnum):
    """What kind of place a site is."""

    CLOUD = "cloud"
    ONPREM = "onprem"
    EDGE = "edge"


_NOT_CPU_MESSAGE = (
    f"gpus[].model cannot be {CPU_POOL!r}, the name of the CPU pool: describe CPU cores in "
    "spec.cpus"
)


class GpuPool(SpecModel):
    """The GPUs of one model at a site, and their price."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule(
                rule=f"self.model.lowerAscii() != '{CPU_POOL}'",
                message=_NOT_CPU_MESSAGE,
                field_path=".model",
            )
        )
    )

    model: GpuModelName = Field(
        description="GPU model as deployments ask for it in resources.gpuModels, such as L4 or "
        "A100-80GB. Each model appears once per site."
    )
    count: int = Field(
        ge=0, le=100_000, description="Number of GPUs of this model that soberana may use."
    )
    memory_gib: int = Field(
        alias="memoryGiB", ge=1, le=4096, description="Memory of one GPU of this model, in GiB."
    )
    hourly_cost: float = Field(
        ge=0,
        le=1_000_000,
        description="Price of one GPU of this model for one hour, in the site's currency.",
    )

    @field_validator("model")
    @classmethod
    def _not_cpu(cls, model: str) -> str:
        if model.lower() == CPU_POOL:
            raise ValueError(_NOT_CPU_MESSAGE)
        return model


class CpuPool(SpecModel):
    """The CPU cores soberana may use at a site for CPU-only replicas, their memory and price."""

    count: int = Field(
        ge=1, le=1_000_000, description="Number of vCPU cores that soberana may use."
    )
    memory_gib: float = Field(
        alias="memoryGiB",
        gt=0,
        le=1_048_576,
        description="Memory available to CPU-only replicas, all cores together, in GiB.",
    )
    hourly_cost: float = Field(
        ge=0,
        le=1_000_000,
        description="Price of one core for one hour, in the site's currency.",
    )


class RayBackend(SpecModel):
    """An existing Ray cluster, driven through its dashboard's REST API."""

    dashboard_url: HttpUrl = Field(
        alias="dashboardURL",
        description="Base URL of the Ray dashboard (port 8265 by default), where soberana PUTs "
        "the Serve configuration.",
    )
    serve_url: HttpUrl = Field(
        alias="serveURL",
        description="Base URL of the Ray Serve HTTP proxy (port 8000 by default), where the "
        "router sends requests.",
    )
    token_secret_ref: SecretKeySelector | None = Field(
        None,
        description="Bearer token for the dashboard, when it requires one. The Secret lives in "
        "the operator's namespace.",
    )


class KubeRayBackend(SpecModel):
    """A Kubernetes cluster running the KubeRay operator: soberana writes a RayService there."""

    kubeconfig_secret_ref: SecretKeySelector = Field(
        description="Kubeconfig for the site's cluster. The Secret lives in the operator's "
        "namespace."
    )
    namespace: NamespaceName = Field(
        DEFAULT_NAMESPACE,
        description="Namespace of the site's cluster where the RayService is written.",
    )
    serve_url: HttpUrl | None = Field(
        None,
        alias="serveURL",
        description="Base URL where the router reaches the RayService's Serve proxy from outside "
        "the site cluster (an Ingress or LoadBalancer in front of the Service "
        "soberana-<site>-serve-svc). Unset: the router sends this site no traffic.",
    )


class Backend(SpecModel):
    """How soberana deploys to the site: exactly one of ray or kuberay."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule(
                rule="has(self.ray) != has(self.kuberay)",
                message="set exactly one of backend.ray or backend.kuberay",
            )
        )
    )

    ray: RayBackend | None = Field(
        None, description="Drive an existing Ray cluster through its dashboard REST API."
    )
    kuberay: KubeRayBackend | None = Field(
        None, description="Write a RayService into a Kubernetes cluster that runs KubeRay."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> Backend:
        if (self.ray is None) == (self.kuberay is None):
            raise ValueError("set exactly one of backend.ray or backend.kuberay")
        return self

    @property
    def serve_url(self) -> str | None:
        """Where requests for the site's models go, whichever backend deploys them."""
        if self.ray is not None:
            return str(self.ray.serve_url)
        return str(self.kuberay.serve_url) if self.kuberay and self.kuberay.serve_url else None


_CAPACITY_MESSAGE = "a site needs spec.gpus (at least one pool) or spec.cpus, or both"


class InferenceSiteSpec(SpecModel):
    """Where the site is, what it offers, how far it is from users, and how to drive it."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule(
                rule="(has(self.gpus) && size(self.gpus) > 0) || has(self.cpus)",
                message=_CAPACITY_MESSAGE,
            )
        )
    )

    tier: Tier = Field(description="Kind of site: cloud, onprem or edge.")
    region: RegionId = Field(
        description="Region id of the site itself, such as br-southeast; the same ids appear in "
        "latencyMs and in ModelDeployment traffic."
    )
    jurisdiction: Jurisdiction = Field(
        description="ISO 3166-1 alpha-2 code, in capitals, of the country whose law governs "
        "processing at this site, such as BR. Residency rules compare against it."
    )
    currency: str = Field(
        "USD",
        pattern=r"^[A-Z]{3}$",
        min_length=3,
        max_length=3,
        description="ISO 4217 code of the currency of gpus[].hourlyCost and cpus.hourlyCost. "
        "Placement compares costs as plain numbers, so keep every site in one currency.",
    )
    gpus: list[GpuPool] = Field(
        default_factory=list,
        max_length=32,
        description="GPU capacity by model; one entry per model. Optional when cpus is set.",
        json_schema_extra=list_map("model"),
    )
    cpus: CpuPool | None = Field(
        None,
        description="CPU cores for CPU-only replicas (resources.gpus: 0), their memory and "
        "price per core-hour. An edge box may have only this. Unset: no CPU-only replicas here.",
    )
    latency_ms: dict[str, RoundTripMs] = Field(
        default_factory=dict,
        max_length=256,
        description="Network round-trip time in milliseconds from each user region (the key) to "
        "this site. A region missing here is out of reach of this site.",
    )
    backend: Backend = Field(description="How soberana deploys to the site.")
    cordoned: bool = Field(
        False,
        description="When true, nothing new is placed here and running deployments move to other "
        "compliant sites; a deployment that has nowhere else to go keeps running here.",
    )

    @field_validator("gpus")
    @classmethod
    def _one_entry_per_model(cls, gpus: list[GpuPool]) -> list[GpuPool]:
        require_unique([pool.model for pool in gpus], "gpus")
        return gpus

    @model_validator(mode="after")
    def _has_capacity(self) -> InferenceSiteSpec:
        if not self.gpus and self.cpus is None:
            raise ValueError(_CAPACITY_MESSAGE)
        return self

    @property
    def gpus_total(self) -> int:
        """GPUs of all models together."""
        return sum(pool.count for pool in self.gpus)

    @property
    def cpus_total(self) -> int:
        """Cores of the CPU pool (0 without one)."""
        return self.cpus.count if self.cpus is not None else 0


class InferenceSiteStatus(StatusModel):
    """What the operator observed and allocated at the site."""

    conditions: list[Condition] = Field(
        default_factory=list,
        description="Reachable (the backend answers) and Ready (soberana may place here).",
        json_schema_extra=list_map("type"),
    )
    gpus_allocated: int = Field(
        0, ge=0, description="GPUs placed here by ModelDeployments, all models together."
    )
    gpus_total: int = Field(0, ge=0, description="GPUs the site offers, all models together.")
    gpu_usage: str = Field(
        "",
        max_length=32,
        description="gpusAllocated/gpusTotal, such as 3/8, for kubectl get.",
    )
    cpus_allocated: int = Field(
        0, ge=0, description="CPU cores placed here by CPU-only replicas of ModelDeployments."
    )
    cpus_total: int = Field(0, ge=0, description="Cores of the site's CPU pool.")
    cpu_usage: str = Field(
        "",
        max_length=32,
        description="cpusAllocated/cpusTotal, such as 4/16, for kubectl get.",
    )
    memory_gib_allocated: float = Field(
        0,
        alias="memoryGiBAllocated",
        ge=0,
        description="Memory placed here by CPU-only replicas, in GiB.",
    )
    deployments: int = Field(0, ge=0, description="ModelDeployments with replicas placed here.")
    hourly_cost: float = Field(
        0,
        ge=0,
        description="Hourly cost of the GPUs and CPU cores allocated here, in the site's currency.",
    )
    observed_generation: int | None = Field(
        None, ge=0, description="metadata.generation of the spec this status reflects."
    )


class InferenceSite(BaseModel):
    """A place where inference runs: a Ray cluster in a cloud region, on premises or at the edge."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    api_version: Literal["soberana.io/v1alpha1"] = Field(API_VERSION, alias="apiVersion")
    kind: Literal["InferenceSite"] = "InferenceSite"
    metadata: ObjectMeta
    spec: InferenceSiteSpec
    status: InferenceSiteStatus | None = None

    @property
    def name(self) -> str:
        return self.metadata.name
