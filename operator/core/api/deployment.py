"""The ModelDeployment resource: a model to serve, where its users are, where and at what cost.

Namespaced. The spec is the user's intent (model and the engine that serves it, replicas or
autoscaling, GPUs or CPU cores per replica, traffic by region, latency SLO, residency, placement
preferences, budget, runtime settings); the status is
the operator's answer (placements per site, cost, conditions, and why other sites were not used).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from soberana.operator.core.api.base import (
    API_VERSION,
    CPU_POOL,
    LIST_SET,
    CelRule,
    GpuModelName,
    Jurisdiction,
    RegionId,
    SpecModel,
    StatusModel,
    cel_rules,
    list_map,
    require_unique,
)
from soberana.operator.core.api.meta import Condition, LabelSelector, ObjectMeta
from soberana.operator.core.engines import check_args

_MAX_REPLICAS = 1024


class ModelFormat(StrEnum):
    """How the model is stored, which decides the API it is served with."""

    TRANSFORMERS = "transformers"
    TORCHSCRIPT = "torchscript"
    GGUF = "gguf"


class EngineName(StrEnum):
    """The serving engine that loads the model and answers its requests."""

    LLAMACPP = "llamacpp"
    VLLM = "vllm"
    TRANSFORMERS = "transformers"
    TORCH = "torch"


DEFAULT_ENGINES: Mapping[ModelFormat, EngineName] = {
    ModelFormat.GGUF: EngineName.LLAMACPP,
    ModelFormat.TORCHSCRIPT: EngineName.TORCH,
    ModelFormat.TRANSFORMERS: EngineName.TRANSFORMERS,
}
"""The engine of each format when spec.engine is unset."""

ENGINES_BY_FORMAT: Mapping[ModelFormat, tuple[EngineName, ...]] = {
    ModelFormat.GGUF: (EngineName.LLAMACPP,),
    ModelFormat.TORCHSCRIPT: (EngineName.TORCH,),
    ModelFormat.TRANSFORMERS: (EngineName.TRANSFORMERS, EngineName.VLLM),
}
"""The engines that can load each format."""


class Strategy(StrEnum):
    """What placement optimises once every hard constraint holds."""

    COST = "cost"
    LATENCY = "latency"
    BALANCED = "balanced"


_GGUF_URI_MESSAGE = (
    "spec.model.uri must name a .gguf file when spec.model.format is gguf (such as "
    "file:///models/smollm2.Q4_1.gguf)"
)


class ModelSource(SpecModel):
    """Where the model's files are and in which format."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule(
                rule="self.format != 'gguf' || self.uri.endsWith('.gguf')",
                message=_GGUF_URI_MESSAGE,
                field_path=".uri",
            )
        )
    )

    uri: str = Field(
        max_length=2048,
        pattern=r"^(file:///\S+|s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/\S*)?"
        r"|pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?/\S+)$",
        description="Location of the model files: file:///<path> (on every node of each site), "
        "s3://<bucket>/<prefix>, or pvc://<claim>/<path> (a PersistentVolumeClaim at the site).",
    )
    format: ModelFormat = Field(
        ModelFormat.TRANSFORMERS,
        description="transformers: a Hugging Face model directory, served with an "
        "OpenAI-compatible text API. gguf: one .gguf file (llama.cpp's format), served with "
        "the same API. torchscript: a scripted torch module, served with a tensor API.",
    )

    @model_validator(mode="after")
    def _gguf_is_a_file(self) -> ModelSource:
        if self.format is ModelFormat.GGUF and not self.uri.endswith(".gguf"):
            raise ValueError(_GGUF_URI_MESSAGE)
        return self


class Engine(SpecModel):
    """The serving engine and its own arguments."""

    name: EngineName = Field(
        description="llamacpp: llama.cpp, for gguf models on CPU and small GPUs. vllm: vLLM "
        "through Ray Serve LLM, for transformers models on GPUs. transformers: soberana's "
        "simple runtime, a fallback for models llama.cpp and vLLM cannot load. torch: "
        "torchscript modules."
    )
    args: dict[str, Any] = Field(
        default_factory=dict,
        max_length=256,
        description="The engine's own arguments, passed to it as they are, such as {n_ctx: "
        "4096, n_parallel: 8} for llamacpp. Unknown keys, and keys soberana sets from other "
        "fields, are refused.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )

    @model_validator(mode="after")
    def _known_args(self) -> Engine:
        errors = check_args(self.name.value, self.args)
        if errors:
            raise ValueError("; ".join(errors))
        return self


class Autoscaling(SpecModel):
    """Replica bounds for Ray Serve autoscaling; placement reserves room for maxReplicas."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule(
                rule="self.minReplicas <= self.maxReplicas",
                message="autoscaling.minReplicas must not exceed autoscaling.maxReplicas: "
                "lower minReplicas or raise maxReplicas",
                field_path=".minReplicas",
            )
        )
    )

    min_replicas: int = Field(
        1, ge=1, le=_MAX_REPLICAS, description="Fewest replicas, across all sites together."
    )
    max_replicas: int = Field(
        ge=1,
        le=_MAX_REPLICAS,
        description="Most replicas, across all sites together. Placement reserves GPUs (or "
        "cores) and budget for this many.",
    )
    target_ongoing_requests: float = Field(
        2.0,
        ge=0.1,
        le=10_000,
        description="Average in-flight requests per replica that autoscaling aims for.",
    )

    @model_validator(mode="after")
    def _min_not_above_max(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                "autoscaling.minReplicas must not exceed autoscaling.maxReplicas: "
                "lower minReplicas or raise maxReplicas"
            )
        return self


_CPU_ONLY_CORES = (
    "spec.resources.cpus must be a whole number of cores, at least 1, when resources.gpus is 0 "
    "(placement counts the cores of a site's CPU pool)"
)
_CPU_ONLY_MEMORY = (
    "spec.resources.memoryGiB is required when resources.gpus is 0: set the memory one "
    "CPU-only replica needs"
)
_CPU_ONLY_NO_GPU_FIELDS = (
    "spec.resources.gpuModels and spec.resources.gpuMemoryGiB apply to GPUs only: remove them "
    "when resources.gpus is 0"
)
_CPU_NOT_A_GPU = (
    f"spec.resources.gpuModels cannot list {CPU_POOL!r}: set resources.gpus: 0 for a CPU-only "
    "replica"
)


class Resources(SpecModel):
    """What one replica needs."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule(
                rule="self.gpus != 0 || (self.cpus >= 1.0 && self.cpus == double(int(self.cpus)))",
                message=_CPU_ONLY_CORES,
                field_path=".cpus",
            ),
            CelRule(
                rule="self.gpus != 0 || has(self.memoryGiB)",
                message=_CPU_ONLY_MEMORY,
                field_path=".memoryGiB",
            ),
            CelRule(
                rule="self.gpus != 0 || ((!has(self.gpuModels) || size(self.gpuModels) == 0) "
                "&& !has(self.gpuMemoryGiB))",
                message=_CPU_ONLY_NO_GPU_FIELDS,
                field_path=".gpuModels",
            ),
            CelRule(
                rule=f"!has(self.gpuModels) || self.gpuModels.all(m, m.lowerAscii() != "
                f"'{CPU_POOL}')",
                message=_CPU_NOT_A_GPU,
                field_path=".gpuModels",
            ),
        )
    )

    gpus: int = Field(
        1,
        ge=0,
        le=64,
        description="GPUs per replica, all of one model and on one site. 0: a CPU-only replica, "
        "placed on a site's CPU pool (spec.cpus).",
    )
    gpu_models: list[GpuModelName] = Field(
        default_factory=list,
        max_length=16,
        description="GPU models a replica may use, such as [L4, A100]. Empty: any model.",
        json_schema_extra=LIST_SET,
    )
    gpu_memory_gib: int | None = Field(
        None,
        alias="gpuMemoryGiB",
        ge=1,
        le=4096,
        description="Memory each of the replica's GPUs must have, in GiB.",
    )
    cpus: float = Field(
        1,
        ge=0,
        le=1024,
        description="CPU cores per replica. For a CPU-only replica a whole number, counted "
        "against the site's CPU pool, and the engine's thread count; for a GPU replica, "
        "reserved in Ray only.",
    )
    memory_gib: float | None = Field(
        None,
        alias="memoryGiB",
        gt=0,
        le=65_536,
        description="Memory per replica, in GiB. Required for a CPU-only replica, counted "
        "against the site's CPU pool; for a GPU replica, reserved in Ray only. Unset: no "
        "reservation.",
    )

    @field_validator("gpu_models")
    @classmethod
    def _models_unique(cls, models: list[str]) -> list[str]:
        require_unique(models, "gpuModels")
        if any(model.lower() == CPU_POOL for model in models):
            raise ValueError(_CPU_NOT_A_GPU)
        return models

    @model_validator(mode="after")
    def _cpu_only_complete(self) -> Resources:
        if self.gpus == 0:
            if self.cpus < 1 or self.cpus != int(self.cpus):
                raise ValueError(_CPU_ONLY_CORES)
            if self.memory_gib is None:
                raise ValueError(_CPU_ONLY_MEMORY)
            if self.gpu_models or self.gpu_memory_gib is not None:
                raise ValueError(_CPU_ONLY_NO_GPU_FIELDS)
        return self

    @property
    def cpu_only(self) -> bool:
        """Whether a replica runs on a site's CPU pool instead of GPUs."""
        return self.gpus == 0


class TrafficSource(SpecModel):
    """Requests that come from one user region."""

    region: RegionId = Field(
        description="User region the requests come from; sites list their round-trip time to "
        "it in latencyMs."
    )
    weight: int = Field(
        1,
        ge=1,
        le=1_000_000,
        description="Share of requests from this region, relative to the other entries.",
    )


class Residency(SpecModel):
    """Where the model may run and its requests may be processed. Hard: never traded for cost."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule(
                rule="!has(self.allowedJurisdictions) || !has(self.deniedJurisdictions) || "
                "!self.allowedJurisdictions.exists(j, j in self.deniedJurisdictions)",
                message="a jurisdiction cannot be both allowed and denied: remove it from "
                "residency.allowedJurisdictions or residency.deniedJurisdictions",
                field_path=".deniedJurisdictions",
            )
        )
    )

    allowed_jurisdictions: list[Jurisdiction] = Field(
        default_factory=list,
        max_length=250,
        description="ISO 3166-1 alpha-2 codes of the only jurisdictions where the model may run. "
        "Empty: any jurisdiction not denied.",
        json_schema_extra=LIST_SET,
    )
    denied_jurisdictions: list[Jurisdiction] = Field(
        default_factory=list,
        max_length=250,
        description="ISO 3166-1 alpha-2 codes of jurisdictions where the model must never run.",
        json_schema_extra=LIST_SET,
    )

    @field_validator("allowed_jurisdictions", "denied_jurisdictions")
    @classmethod
    def _codes_unique(cls, codes: list[str]) -> list[str]:
        require_unique(codes, "the list")
        return codes

    @model_validator(mode="after")
    def _disjoint(self) -> Residency:
        overlap = sorted(set(self.allowed_jurisdictions) & set(self.denied_jurisdictions))
        if overlap:
            raise ValueError(
                f"a jurisdiction cannot be both allowed and denied ({', '.join(overlap)}): "
                "remove it from residency.allowedJurisdictions or residency.deniedJurisdictions"
            )
        return self

    def refusal(self, jurisdiction: str) -> str | None:
        """Why a site in ``jurisdiction`` may not host the model, or None when it may."""
        if jurisdiction in self.denied_jurisdictions:
            return f"{jurisdiction} is in deniedJurisdictions"
        if self.allowed_jurisdictions and jurisdiction not in self.allowed_jurisdictions:
            allowed = ", ".join(self.allowed_jurisdictions)
            return f"{jurisdiction} is not in allowedJurisdictions [{allowed}]"
        return None

    def describe(self) -> str:
        """The scope in words, such as ``in allowed jurisdictions [BR, CL]``."""
        if self.allowed_jurisdictions:
            return f"in allowed jurisdictions [{', '.join(self.allowed_jurisdictions)}]"
        if self.denied_jurisdictions:
            return f"outside denied jurisdictions [{', '.join(self.denied_jurisdictions)}]"
        return "in any jurisdiction"


class Placement(SpecModel):
    """How to choose among the sites that meet every hard constraint."""

    strategy: Strategy = Field(
        Strategy.BALANCED,
        description="cost: cheapest GPU- and core-hours. latency: lowest traffic-weighted "
        "round-trip time to the nearest chosen site. balanced: both, each relative to its best "
        "possible value.",
    )
    min_sites: int = Field(
        1,
        ge=1,
        le=64,
        description="Spread replicas over at least this many distinct sites (each gets at least "
        "one replica).",
    )
    site_selector: LabelSelector | None = Field(
        None, description="Only sites whose labels match this selector are considered."
    )


class Budget(SpecModel):
    """Spending limit. Hard: a placement that exceeds it is not made."""

    max_hourly_cost: float = Field(
        ge=0,
        le=1_000_000,
        description="Most the deployment may cost per hour at its peak replica count, in the "
        "sites' currency.",
    )


class Serving(SpecModel):
    """Runtime settings for each replica."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule(
                rule="self.maxOngoingRequests >= self.maxBatchSize",
                message="serving.maxOngoingRequests must be at least serving.maxBatchSize, or "
                "batches never fill",
                field_path=".maxOngoingRequests",
            )
        )
    )

    max_batch_size: int = Field(
        8, ge=1, le=1024, description="Most requests a replica processes in one batch."
    )
    batch_wait_timeout_s: float = Field(
        0.01,
        ge=0,
        le=10,
        description="Longest a request waits, in seconds, for its batch to fill.",
    )
    max_ongoing_requests: int = Field(
        16, ge=1, le=100_000, description="Most requests a replica holds at once."
    )

    @model_validator(mode="after")
    def _batches_can_fill(self) -> Serving:
        if self.max_ongoing_requests < self.max_batch_size:
            raise ValueError(
                "serving.maxOngoingRequests must be at least serving.maxBatchSize, or "
                "batches never fill"
            )
        return self


_MIN_SITES_RULE = (
    "spec.placement.minSites cannot exceed the replica count (spec.replicas, or "
    "spec.autoscaling.maxReplicas), as every site gets at least one replica: lower minSites or "
    "add replicas"
)
_SLO_NEEDS_TRAFFIC = (
    "spec.latencySLOms needs spec.traffic: the SLO is checked for each traffic region, so add "
    "traffic regions (such as traffic: [{region: br-southeast}]) or remove latencySLOms"
)
_ENGINE_FORMAT = (
    "spec.engine.name cannot load spec.model.format: gguf needs llamacpp, torchscript needs "
    "torch, transformers needs transformers or vllm"
)


class ModelDeploymentSpec(SpecModel):
    """The model, how many replicas, where its users are, and where it may run at what cost."""

    model_config = ConfigDict(
        json_schema_extra=cel_rules(
            CelRule(
                rule="!has(self.replicas) || !has(self.autoscaling)",
                message="set spec.replicas or spec.autoscaling, not both",
                field_path=".autoscaling",
            ),
            CelRule(
                rule="!has(self.placement) || !has(self.placement.minSites) || "
                "self.placement.minSites <= (has(self.autoscaling) ? "
                "self.autoscaling.maxReplicas : (has(self.replicas) ? self.replicas : 1))",
                message=_MIN_SITES_RULE,
                field_path=".placement.minSites",
            ),
            CelRule(
                rule="!has(self.latencySLOms) || (has(self.traffic) && size(self.traffic) > 0)",
                message=_SLO_NEEDS_TRAFFIC,
                field_path=".latencySLOms",
            ),
            CelRule(
                rule="!has(self.engine) || (self.model.format == 'gguf' ? "
                "self.engine.name == 'llamacpp' : (self.model.format == 'torchscript' ? "
                "self.engine.name == 'torch' : self.engine.name in ['transformers', 'vllm']))",
                message=_ENGINE_FORMAT,
                field_path=".engine.name",
            ),
        )
    )

    model: ModelSource = Field(description="The model to serve.")
    engine: Engine | None = Field(
        None,
        description="The engine that serves the model, and its arguments. Unset: the format's "
        "default (gguf: llamacpp, torchscript: torch, transformers: transformers).",
    )
    replicas: int | None = Field(
        None,
        ge=1,
        le=_MAX_REPLICAS,
        description="Replicas across all sites together. Leave unset with autoscaling; with "
        "neither set, one replica.",
    )
    autoscaling: Autoscaling | None = Field(
        None, description="Scale between bounds with load instead of a fixed replica count."
    )
    resources: Resources = Field(Resources(), description="What one replica needs.")
    traffic: list[TrafficSource] = Field(
        default_factory=list,
        max_length=32,
        description="Where requests come from, by user region. Each region is served by its "
        "nearest chosen site. Empty: latency plays no part in placement.",
        json_schema_extra=list_map("region"),
    )
    latency_slo_ms: int | None = Field(
        None,
        alias="latencySLOms",
        ge=1,
        le=60_000,
        description="Every traffic region must have a chosen site within this round-trip time, "
        "in milliseconds. Unset: any site that lists the region in latencyMs will do.",
    )
    residency: Residency | None = Field(
        None, description="Jurisdictions where the model may, or must not, run. Unset: anywhere."
    )
    placement: Placement = Field(
        Placement(), description="How to choose among the compliant sites."
    )
    budget: Budget | None = Field(None, description="Spending limit. Unset: no limit.")
    serving: Serving = Field(Serving(), description="Runtime settings for each replica.")

    @model_validator(mode="after")
    def _consistent(self) -> ModelDeploymentSpec:
        if self.replicas is not None and self.autoscaling is not None:
            raise ValueError("set spec.replicas or spec.autoscaling, not both")
        if self.placement.min_sites > self.reserved_replicas:
            raise ValueError(_MIN_SITES_RULE)
        if self.latency_slo_ms is not None and not self.traffic:
            raise ValueError(_SLO_NEEDS_TRAFFIC)
        if self.engine is not None and self.engine.name not in ENGINES_BY_FORMAT[self.model.format]:
            raise ValueError(_ENGINE_FORMAT)
        return self

    @field_validator("traffic")
    @classmethod
    def _one_entry_per_region(cls, traffic: list[TrafficSource]) -> list[TrafficSource]:
        require_unique([source.region for source in traffic], "traffic")
        return traffic

    @property
    def reserved_replicas(self) -> int:
        """Replicas placement reserves room and budget for: replicas, or autoscaling's maximum."""
        if self.autoscaling is not None:
            return self.autoscaling.max_replicas
        return self.replicas if self.replicas is not None else 1

    @property
    def engine_name(self) -> EngineName:
        """The engine that serves the model: spec.engine.name, or the format's default."""
        if self.engine is not None:
            return self.engine.name
        return DEFAULT_ENGINES[self.model.format]

    @property
    def engine_args(self) -> dict[str, Any]:
        """spec.engine.args ({} without spec.engine)."""
        return dict(self.engine.args) if self.engine is not None else {}


class PlacementState(StrEnum):
    """Progress of one site's share of a deployment."""

    PENDING = "Pending"
    DEPLOYING = "Deploying"
    RUNNING = "Running"
    FAILED = "Failed"


class PlacementStatus(StatusModel):
    """The replicas of a deployment at one site."""

    site: str = Field(description="Name of the InferenceSite.")
    gpu_model: str = Field(
        description=f"GPU model the replicas use there, or {CPU_POOL} for CPU-only replicas."
    )
    replicas: int = Field(ge=1, description="Replicas placed at the site.")
    ready_replicas: int = Field(0, ge=0, description="Replicas running and healthy there.")
    hourly_cost: float = Field(
        ge=0, description="Hourly cost of the replicas' GPUs, or CPU cores, there."
    )
    regions: list[str] = Field(
        default_factory=list,
        description="Traffic regions for which this is the nearest chosen site.",
    )
    state: PlacementState = Field(
        PlacementState.PENDING,
        description="Pending, Deploying, Running or Failed.",
    )


class ModelDeploymentStatus(StatusModel):
    """Where the deployment runs, what it costs, and why."""

    placements: list[PlacementStatus] = Field(
        default_factory=list,
        description="Sites chosen for the deployment, with their share of it.",
        json_schema_extra=list_map("site"),
    )
    hourly_cost: float = Field(0, ge=0, description="Hourly cost of all placements together.")
    sites: str = Field(
        "", description="Names of the chosen sites, comma-separated, for kubectl get."
    )
    ready: str = Field("", description="Ready/desired replicas, such as 2/3, for kubectl get.")
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Placed (a placement meets every hard constraint), Available (replicas serve "
        "requests) and Degraded (some do not), with a reason and a message.",
        json_schema_extra=list_map("type"),
    )
    explanation: dict[str, str] = Field(
        default_factory=dict,
        description="For each site not chosen, one line saying why not.",
    )
    observed_generation: int | None = Field(
        None, ge=0, description="metadata.generation of the spec this status reflects."
    )


class ModelDeployment(BaseModel):
    """One model to serve: where its users are, what it may cost, and where it may run."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    api_version: Literal["soberana.io/v1alpha1"] = Field(API_VERSION, alias="apiVersion")
    kind: Literal["ModelDeployment"] = "ModelDeployment"
    metadata: ObjectMeta
    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus | None = None
