"""Rendering each site's Ray Serve config: valid for Ray, faithful to the specs, deterministic."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from ray.serve.schema import ServeDeploySchema

from soberana.operator.cli.render import render
from soberana.operator.core.accelerators import ray_accelerator_type
from soberana.operator.core.api import CPU_POOL
from soberana.operator.core.placement import (
    Change,
    DeploymentPlan,
    Plan,
    SitePlacement,
    World,
    current_allocations,
    place,
)
from soberana.operator.core.render import (
    MODEL_ROOT,
    OWNER_ENV,
    RUNTIME_DEPLOYMENT_NAME,
    RUNTIME_IMPORT_PATH,
    VLLM_IMPORT_PATH,
    ApplicationNameConflictError,
    SiteApplication,
    app_name,
    config_hash,
    model_path,
    name_conflicts,
    render_serve_config,
    render_site_configs,
    render_warnings,
    rendered_by_soberana,
    route_prefix,
)
from soberana.operator.manifests import load_manifests
from soberana.serving.runtime import builder
from soberana.serving.runtime.args import TorchScriptArgs, parse_runtime_args
from soberana.serving.runtime.storage import local_model_path
from tests.unit.builders import deployment, site, world

EXAMPLES = Path(__file__).parents[2] / "examples" / "latam"


@pytest.fixture(scope="module")
def latam() -> tuple[Plan, World]:
    manifests = load_manifests([EXAMPLES])
    scene = World.from_resources(manifests.sites, manifests.deployments)
    return place(scene, current_allocations(manifests.deployments)), scene


def applications(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {application["name"]: application for application in config["applications"]}


def test_every_rendered_config_is_valid_for_ray(latam: tuple[Plan, World]) -> None:
    plan, scene = latam
    configs = render_site_configs(plan, scene)
    assert sorted(configs) == sorted(site.name for site in scene.sites)
    for config in configs.values():
        ServeDeploySchema.model_validate(config)
        for application in config["applications"]:
            if application["import_path"] == VLLM_IMPORT_PATH:
                llm_config(application)
            else:
                assert application["import_path"] == RUNTIME_IMPORT_PATH
                parse_runtime_args(application["args"])
    assert any(config["applications"] for config in configs.values())


def test_each_placement_becomes_an_application_with_its_replicas(
    latam: tuple[Plan, World],
) -> None:
    plan, scene = latam
    configs = render_site_configs(plan, scene)
    specs = {entry.key: entry for entry in scene.deployments}
    rendered = 0
    for key, deployment_plan in plan.deployments.items():
        spec = specs[key]
        for placement in deployment_plan.placements:
            found = applications(configs[placement.site])[app_name(spec.namespace, spec.name)]
            assert found["route_prefix"] == route_prefix(spec.namespace, spec.name)
            assert found["args"]["model_uri"] == spec.spec.model.uri
            assert found["args"]["served_model_name"] == key
            assert found["args"]["site"] == placement.site
            assert found["args"]["engine"] == spec.spec.engine_name.value
            assert found["args"]["engine_args"] == spec.spec.engine_args
            assert found["args"]["cpus"] == spec.spec.resources.cpus
            (options,) = found["deployments"]
            assert options["name"] == RUNTIME_DEPLOYMENT_NAME
            actor: dict[str, float | str] = {
                "num_cpus": spec.spec.resources.cpus,
                "num_gpus": spec.spec.resources.gpus,
            }
            accelerator = ray_accelerator_type(placement.gpu_model)
            if spec.spec.resources.gpus and accelerator is not None:
                actor["accelerator_type"] = accelerator
            if spec.spec.resources.memory_gib is not None:
                actor["memory"] = int(spec.spec.resources.memory_gib * 2**30)
            assert options["ray_actor_options"] == actor
            assert options["max_ongoing_requests"] == spec.spec.serving.max_ongoing_requests
            if spec.spec.autoscaling is None:
                assert options["num_replicas"] == placement.replicas
            else:
                assert "num_replicas" not in options
                assert options["autoscaling_config"]["max_replicas"] == placement.replicas
            rendered += 1
    total = sum(len(config["applications"]) for config in configs.values())
    assert rendered == total > 0


def test_a_site_with_nothing_placed_gets_an_empty_config() -> None:
    scene = world([site("empty"), site("busy")], [deployment("chat")])
    plan = place(scene)
    configs = render_site_configs(plan, scene)
    placed_on = plan.deployments["ml/chat"].placements[0].site
    idle = "empty" if placed_on == "busy" else "busy"
    assert configs[idle] == {"applications": []}
    ServeDeploySchema.model_validate(configs[idle])


def test_torchscript_args_carry_the_batching_limits() -> None:
    scorer = deployment(
        "scorer",
        model={"uri": "pvc://models/scorer.pt", "format": "torchscript"},
        serving={"maxBatchSize": 16, "batchWaitTimeoutS": 0.05, "maxOngoingRequests": 64},
    )
    config = render_serve_config("br1", [SiteApplication(scorer, replicas=3)])
    ServeDeploySchema.model_validate(config)
    (application,) = config["applications"]
    args = parse_runtime_args(application["args"])
    assert isinstance(args, TorchScriptArgs)
    assert (args.max_batch_size, args.batch_wait_timeout_s) == (16, 0.05)
    assert application["deployments"][0]["num_replicas"] == 3
    assert application["deployments"][0]["max_ongoing_requests"] == 64


def test_transformers_args_carry_no_batching_limits() -> None:
    config = render_serve_config("br1", [SiteApplication(deployment("chat"), replicas=1)])
    assert config["applications"][0]["args"] == {
        "model_uri": "file:///models/m",
        "format": "transformers",
        "served_model_name": "ml/chat",
        "site": "br1",
        "engine": "transformers",
        "engine_args": {},
        "cpus": 1.0,
    }


@pytest.mark.parametrize(
    ("minimum", "maximum", "on_site", "expected_minimum"),
    [(2, 6, 3, 1), (2, 6, 6, 2), (1, 4, 1, 1), (5, 6, 3, 3), (6, 6, 2, 2)],
)
def test_autoscaling_bounds_are_the_sites_share(
    minimum: int, maximum: int, on_site: int, expected_minimum: int
) -> None:
    embedder = deployment(
        "embedder",
        autoscaling={
            "minReplicas": minimum,
            "maxReplicas": maximum,
            "targetOngoingRequests": 4,
        },
    )
    config = render_serve_config("br1", [SiteApplication(embedder, replicas=on_site)])
    ServeDeploySchema.model_validate(config)
    assert config["applications"][0]["deployments"][0]["autoscaling_config"] == {
        "min_replicas": expected_minimum,
        "max_replicas": on_site,
        "target_ongoing_requests": 4.0,
    }


def test_rendering_is_deterministic(latam: tuple[Plan, World]) -> None:
    plan, scene = latam
    shuffled = World(sites=scene.sites[::-1], deployments=scene.deployments[::-1])
    first = render_site_configs(plan, scene)
    again = render_site_configs(place(shuffled), shuffled)
    assert json.dumps(first) == json.dumps(again)
    for name, config in first.items():
        assert config_hash(config) == config_hash(again[name])
        names = [application["name"] for application in config["applications"]]
        assert names == sorted(names)


def test_config_hash_follows_content_not_key_order() -> None:
    one = render_serve_config("br1", [SiteApplication(deployment("chat"), replicas=1)])
    two = render_serve_config("br1", [SiteApplication(deployment("chat"), replicas=2)])
    reordered = json.loads(json.dumps(one, sort_keys=True))
    assert list(reordered["applications"][0]) != list(one["applications"][0])
    assert config_hash(reordered) == config_hash(one)
    assert config_hash(two) != config_hash(one)
    assert len(config_hash(one)) == 64


def test_replicas_of_one_deployment_on_one_site_form_one_application() -> None:
    chat = deployment("chat", replicas=3)
    scene = world([site("br1", gpus=[("L4", 4, 24, 1.0), ("A100", 4, 80, 3.0)])], [chat])
    split = Plan(
        deployments={
            chat.key: DeploymentPlan(
                key=chat.key,
                placements=(
                    SitePlacement("br1", "A100", 1, 3.0, ()),
                    SitePlacement("br1", "L4", 2, 2.0, ("r1",)),
                ),
                reason=None,
                rejected={},
                change=Change.PLACED,
            )
        },
        sites={},
        solver="fast",
        objective=0.0,
    )
    (application,) = render_site_configs(split, scene)["br1"]["applications"]
    assert application["deployments"][0]["num_replicas"] == 3


def test_colliding_application_names_are_refused() -> None:
    one = deployment("b-c", namespace="a")
    other = deployment("c", namespace="a-b")
    with pytest.raises(ApplicationNameConflictError, match="a/b-c and a-b/c"):
        render_serve_config(
            "br1", [SiteApplication(one, replicas=1), SiteApplication(other, replicas=1)]
        )


def test_a_colliding_name_leaves_only_the_later_deployment_out() -> None:
    first, second = deployment("b-c", namespace="a"), deployment("c", namespace="a-b")
    scene = world([site("br1")], [second, deployment("chat"), first])
    plan = place(scene)
    assert all(decision.placed for decision in plan.deployments.values())
    conflicts = name_conflicts(scene.deployments)
    assert conflicts == {  # keys compare as strings: "a-b/c" < "a/b-c"
        "a/b-c": "not deployed: ModelDeployment a-b/c already runs as Serve application a-b-c; "
        "rename one of them"
    }
    rendered = applications(render_site_configs(plan, scene)["br1"])
    assert sorted(rendered) == ["a-b-c", "ml-chat"]
    assert rendered["a-b-c"]["route_prefix"] == "/a-b/c"


def test_the_renderer_names_the_runtimes_builder_and_deployment() -> None:
    module, _, attribute = RUNTIME_IMPORT_PATH.partition(":")
    assert getattr(importlib.import_module(module), attribute) is builder.app_builder
    assert RUNTIME_DEPLOYMENT_NAME == builder.DEPLOYMENT_NAME


def test_cli_prints_the_config_of_the_sites_asked_for(latam: tuple[Plan, World]) -> None:
    plan, scene = latam
    arguments = ["-f", str(EXAMPLES), "--site", "sao-paulo-1", "-o", "yaml"]
    result = CliRunner().invoke(render, arguments)
    assert result.exit_code == 0, result.output
    printed = yaml.safe_load(result.stdout)
    assert printed == {"sao-paulo-1": render_site_configs(plan, scene)["sao-paulo-1"]}


def test_cli_prints_every_site_as_json(latam: tuple[Plan, World]) -> None:
    plan, scene = latam
    result = CliRunner().invoke(render, ["-f", str(EXAMPLES)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == render_site_configs(plan, scene)


def test_cli_refuses_an_unknown_site() -> None:
    result = CliRunner().invoke(render, ["-f", str(EXAMPLES), "--site", "atlantis"])
    assert result.exit_code == 1
    assert "no InferenceSite named atlantis" in result.output


# --- engines: vLLM through Ray Serve LLM, accelerator types, CPU-only replicas ---------------

VLLM_SITE = """\
apiVersion: soberana.io/v1alpha1
kind: InferenceSite
metadata: {name: gpu-1}
spec:
  tier: cloud
  region: r1
  jurisdiction: BR
  gpus:
  - {model: L4, count: 4, memoryGiB: 24, hourlyCost: 0.5}
  latencyMs: {r1: 10}
  backend: {ray: {dashboardURL: "http://10.0.0.1:8265", serveURL: "http://10.0.0.1:8000"}}
"""

VLLM_DEPLOYMENT = """\
apiVersion: soberana.io/v1alpha1
kind: ModelDeployment
metadata: {name: chat, namespace: ml}
spec:
  model: {uri: "pvc://models/smollm2", format: transformers}
  engine: {name: vllm, args: {ARGS}}
  replicas: 2
  resources: {gpus: 2}
  traffic: [{region: r1}]
"""


def llm_config(config: dict[str, Any]) -> Any:
    """Ray Serve LLM's own LLMConfig model of the one LLMConfig in a vLLM application."""
    from ray.llm._internal.serve.core.configs.llm_config import LLMConfig

    (one,) = config["args"]["llm_configs"]
    return LLMConfig.model_validate(one)


def vllm_manifests(folder: Path, args: str) -> Path:
    (folder / "site.yaml").write_text(VLLM_SITE)
    (folder / "deployment.yaml").write_text(VLLM_DEPLOYMENT.replace("{ARGS}", args))
    return folder


def test_render_acceptance_vllm_on_l4_with_tensor_parallelism(tmp_path: Path) -> None:
    folder = vllm_manifests(tmp_path, "{max_model_len: 2048}")
    result = CliRunner().invoke(render, ["-f", str(folder)])
    assert result.exit_code == 0, result.output
    config = json.loads(result.stdout)["gpu-1"]
    ServeDeploySchema.model_validate(config)
    (application,) = config["applications"]
    assert application["import_path"] == VLLM_IMPORT_PATH == "ray.serve.llm:build_openai_app"
    assert (application["name"], application["route_prefix"]) == ("ml-chat", "/ml/chat")
    assert "deployments" not in application
    parsed = llm_config(application)
    assert parsed.model_id == "ml/chat"
    assert parsed.model_loading_config.model_source == "/models/pvc/models/smollm2"
    assert parsed.accelerator_type == "L4"
    assert parsed.accelerator_config.kind == "gpu"
    assert parsed.engine_kwargs == {"max_model_len": 2048, "tensor_parallel_size": 2}
    assert parsed.placement_group_config["bundles"] == [{"GPU": 1.0}, {"GPU": 1.0}]
    assert parsed.deployment_config["num_replicas"] == 2  # the placement: 2 replicas x 2 GPUs
    assert set(application["args"]) <= {
        "llm_configs",
        "ingress_cls_config",
        "ingress_deployment_config",
    }


def test_render_refuses_a_misspelled_vllm_argument(tmp_path: Path) -> None:
    folder = vllm_manifests(tmp_path, "{max_model_lenn: 2048}")
    result = CliRunner().invoke(render, ["-f", str(folder)])
    assert result.exit_code != 0
    assert "spec.engine.args.max_model_lenn" in result.output
    assert "max_model_len" in result.output.replace("max_model_lenn", "")
    assert "Traceback" not in result.output


def test_render_refuses_a_reserved_vllm_argument(tmp_path: Path) -> None:
    folder = vllm_manifests(tmp_path, "{tensor_parallel_size: 4}")
    result = CliRunner().invoke(render, ["-f", str(folder)])
    assert result.exit_code != 0
    assert "spec.engine.args.tensor_parallel_size" in result.output
    assert "spec.resources.gpus" in result.output


def test_vllm_cpu_only_replica_gets_one_cpu_bundle_and_no_accelerator() -> None:
    chat = deployment(
        "chat",
        engine={"name": "vllm", "args": {"max_model_len": 512, "enforce_eager": True}},
        resources={"gpus": 0, "cpus": 2, "memoryGiB": 4},
    )
    config = render_serve_config("edge-1", [SiteApplication(chat, 1, (CPU_POOL,))])
    ServeDeploySchema.model_validate(config)
    (application,) = config["applications"]
    parsed = llm_config(application)
    assert parsed.accelerator_type is None
    assert parsed.accelerator_config.kind == "cpu"
    assert parsed.model_loading_config.model_source == "/models/m"
    assert parsed.engine_kwargs == {
        "enforce_eager": True,
        "max_model_len": 512,
        "tensor_parallel_size": 1,
        "kv_cache_memory_bytes": 2 * 1024**3,  # half the replica's memory
    }
    assert parsed.placement_group_config["bundles"] == [{"CPU": 2.0, "memory": 4 * 1024**3}]
    assert parsed.deployment_config["ray_actor_options"] == {"num_cpus": 0.0}


def test_vllm_args_that_size_the_cpu_kv_cache_are_kept() -> None:
    chat = deployment(
        "chat",
        engine={"name": "vllm", "args": {"gpu_memory_utilization": 0.3}},
        resources={"gpus": 0, "cpus": 2, "memoryGiB": 4},
    )
    config = render_serve_config("edge-1", [SiteApplication(chat, 1, (CPU_POOL,))])
    parsed = llm_config(config["applications"][0])
    assert parsed.engine_kwargs == {"gpu_memory_utilization": 0.3, "tensor_parallel_size": 1}


def test_vllm_autoscaling_bounds_go_to_the_deployment_config() -> None:
    chat = deployment(
        "chat",
        engine={"name": "vllm"},
        autoscaling={"minReplicas": 1, "maxReplicas": 4, "targetOngoingRequests": 8},
    )
    config = render_serve_config("br1", [SiteApplication(chat, replicas=2, gpu_models=("A10",))])
    ServeDeploySchema.model_validate(config)
    parsed = llm_config(config["applications"][0])
    assert parsed.accelerator_type == "A10G"
    assert "num_replicas" not in parsed.deployment_config
    assert parsed.deployment_config["autoscaling_config"] == {
        "min_replicas": 1,
        "max_replicas": 2,
        "target_ongoing_requests": 8.0,
    }


@pytest.mark.parametrize(
    ("uri", "path"),
    [
        ("file:///var/lib/models/chat", "/var/lib/models/chat"),
        ("pvc://weights/qwen/0.5b", "/models/pvc/weights/qwen/0.5b"),
        ("s3://bucket/a%20b", "/models/s3/bucket/a b"),
    ],
)
def test_vllm_model_source_is_where_the_runtime_finds_the_model(
    uri: str, path: str, tmp_path: Path
) -> None:
    assert model_path(uri) == path
    if uri.startswith("file://"):
        return
    mounted = tmp_path / path.removeprefix(f"{MODEL_ROOT}/")
    mounted.mkdir(parents=True)
    assert local_model_path(uri, tmp_path) == mounted


def test_runtime_replicas_ask_for_the_placed_gpu_model() -> None:
    chat = deployment("chat", resources={"gpus": 1, "cpus": 2, "memoryGiB": 8})
    config = render_serve_config(
        "br1", [SiteApplication(chat, replicas=1, gpu_models=("A100-80GB",))]
    )
    ServeDeploySchema.model_validate(config)
    assert config["applications"][0]["deployments"][0]["ray_actor_options"] == {
        "num_cpus": 2.0,
        "num_gpus": 1.0,
        "memory": 8 * 1024**3,
        "accelerator_type": "A100",
    }


def test_cpu_only_runtime_replicas_ask_for_no_accelerator() -> None:
    chat = deployment(
        "chat",
        model={"uri": "file:///models/m.gguf", "format": "gguf"},
        resources={"gpus": 0, "cpus": 2, "memoryGiB": 1},
    )
    config = render_serve_config("edge-1", [SiteApplication(chat, 1, (CPU_POOL,))])
    ServeDeploySchema.model_validate(config)
    (application,) = config["applications"]
    assert application["deployments"][0]["ray_actor_options"] == {
        "num_cpus": 2.0,
        "num_gpus": 0.0,
        "memory": 1024**3,
    }
    args = parse_runtime_args(application["args"])
    assert (args.engine, args.cpus, args.engine_args) == ("llamacpp", 2.0, {})


def test_runtime_args_carry_the_engine_and_its_args() -> None:
    chat = deployment(
        "chat",
        model={"uri": "file:///models/m.gguf", "format": "gguf"},
        engine={"name": "llamacpp", "args": {"n_ctx": 4096}},
        resources={"gpus": 0, "cpus": 4, "memoryGiB": 2},
    )
    (application,) = render_serve_config("edge-1", [SiteApplication(chat, 1, (CPU_POOL,))])[
        "applications"
    ]
    assert application["import_path"] == RUNTIME_IMPORT_PATH
    args = parse_runtime_args(application["args"])
    assert (args.engine, args.cpus, args.engine_args) == ("llamacpp", 4.0, {"n_ctx": 4096})


def test_an_unknown_gpu_model_is_reported_not_dropped(tmp_path: Path) -> None:
    chat = deployment("chat", engine={"name": "vllm"})
    scene = world([site("br1", gpus=[("RTX-4090", 4, 24, 0.3)])], [chat])
    plan = place(scene)
    config = render_site_configs(plan, scene)["br1"]
    assert "accelerator_type" not in config["applications"][0]["args"]["llm_configs"][0]
    (warning,) = render_warnings(plan, scene)
    assert "ml/chat" in warning
    assert "'RTX-4090' has no Ray accelerator type" in warning
    (tmp_path / "site.yaml").write_text(VLLM_SITE.replace("model: L4", "model: RTX-4090"))
    (tmp_path / "deployment.yaml").write_text(VLLM_DEPLOYMENT.replace("{ARGS}", "{}"))
    result = CliRunner().invoke(render, ["-f", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "'RTX-4090' has no Ray accelerator type" in result.stderr


def test_one_application_on_several_gpu_models_is_reported() -> None:
    chat = deployment("chat", replicas=3)
    scene = world([site("br1", gpus=[("L4", 4, 24, 1.0), ("A100", 4, 80, 3.0)])], [chat])
    split = Plan(
        deployments={
            chat.key: DeploymentPlan(
                key=chat.key,
                placements=(
                    SitePlacement("br1", "A100", 1, 3.0, ()),
                    SitePlacement("br1", "L4", 2, 2.0, ("r1",)),
                ),
                reason=None,
                rejected={},
                change=Change.PLACED,
            )
        },
        sites={},
        solver="fast",
        objective=0.0,
    )
    (application,) = render_site_configs(split, scene)["br1"]["applications"]
    assert "accelerator_type" not in application["deployments"][0]["ray_actor_options"]
    (warning,) = render_warnings(split, scene)
    assert "several GPU models (A100, L4)" in warning


def test_plan_warns_about_an_unknown_gpu_model(tmp_path: Path) -> None:
    from soberana.operator.cli.plan import plan

    (tmp_path / "site.yaml").write_text(VLLM_SITE.replace("model: L4", "model: RTX-4090"))
    (tmp_path / "deployment.yaml").write_text(VLLM_DEPLOYMENT.replace("{ARGS}", "{}"))
    result = CliRunner().invoke(plan, ["-f", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "'RTX-4090' has no Ray accelerator type" in result.stderr


def test_plan_refuses_a_misspelled_vllm_argument(tmp_path: Path) -> None:
    from soberana.operator.cli.plan import plan

    result = CliRunner().invoke(plan, ["-f", str(vllm_manifests(tmp_path, "{max_model_lenn: 1}"))])
    assert result.exit_code != 0
    assert "spec.engine.args.max_model_lenn" in result.output


def test_vllm_applications_are_marked_as_soberanas() -> None:
    chat = deployment("chat", engine={"name": "vllm"})
    (application,) = render_serve_config("br1", [SiteApplication(chat, 1, ("L4",))])["applications"]
    assert application["runtime_env"] == {"env_vars": {OWNER_ENV: "ml/chat"}}
    assert rendered_by_soberana(application)
    (runtime,) = render_serve_config("br1", [SiteApplication(deployment("t"), 1)])["applications"]
    assert rendered_by_soberana(runtime)
    someone_elses = {**application, "runtime_env": {"env_vars": {"OTHER": "1"}}}
    assert not rendered_by_soberana(someone_elses)
    assert not rendered_by_soberana({"import_path": "app:main"})


def test_the_ray_backend_owns_vllm_apps_and_counts_only_engine_replicas() -> None:
    from soberana.operator.backends.ray import observe_application, owned

    chat = deployment("chat", engine={"name": "vllm"})
    (config,) = render_serve_config("br1", [SiteApplication(chat, 1, ("L4",))])["applications"]
    running = {"state": "RUNNING"}
    status = {
        "status": "RUNNING",
        "deployed_app_config": config,
        "deployments": {
            "LLMServer:ml--chat": {"replicas": [running]},
            "OpenAiIngress": {"replicas": [running, running]},
        },
    }
    assert owned(status)
    assert observe_application(status).ready_replicas == 1


async def test_the_operator_reports_an_unknown_gpu_model_on_the_sites_ready_condition() -> None:
    from tests.unit.test_reconciler import RecordingWriter, index, reconciler
    from tests.unit.test_reconciler import site as raw_site

    odd = raw_site("br1", "BR")
    odd["spec"]["gpus"][0]["model"] = "RTX-4090"
    chat = {
        "apiVersion": "soberana.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "chat", "namespace": "ml", "uid": "uid-chat", "generation": 1},
        "spec": {
            "model": {"uri": "file:///models/chat"},
            "engine": {"name": "vllm", "args": {"max_model_len": 2048}},
            "resources": {"gpus": 1},
            "traffic": [{"region": "br-southeast"}],
        },
        "status": {},
    }
    writer = RecordingWriter()
    rec = reconciler(writer)
    rec.attach(index(odd), index(chat))
    result = await rec.reconcile_once()
    assert result.plan.deployments["ml/chat"].placed
    site_patch = next(patch for name, patch in writer.patches if name == "br1")
    ready = {c["type"]: c for c in site_patch["conditions"]}["Ready"]
    assert ready["status"] == "True"
    assert "; ml/chat: GPU model" in ready["message"]
    assert "'RTX-4090' has no Ray accelerator type" in ready["message"]


@pytest.mark.parametrize(
    ("gpu_model", "ray_name"),
    [
        ("L4", "L4"),
        ("A10", "A10G"),
        ("A100-80GB", "A100"),
        ("nvidia-a100-40g", "A100"),
        ("NVIDIA H100 80GB HBM3", "H100"),
        ("H100-SXM5", "H100"),
        ("h200", "H200"),
        ("Tesla T4", "T4"),
        ("L40S", "L40S"),
        ("MI300X", "AMD-Instinct-MI300X-OAM"),
        ("RTX-4090", None),
        ("GH200", None),
    ],
)
def test_gpu_models_map_to_rays_accelerator_names(gpu_model: str, ray_name: str | None) -> None:
    assert ray_accelerator_type(gpu_model) == ray_name


def test_the_accelerator_list_is_rays() -> None:
    from ray.util.accelerators import accelerators

    from soberana.operator.core.accelerators import RAY_ACCELERATOR_TYPES

    names = {v for k, v in vars(accelerators).items() if k[0].isupper() and isinstance(v, str)}
    gpus = {name for name in names if not name.startswith(("M1", "M2", "M3", "Apple", "aws"))}
    assert names >= RAY_ACCELERATOR_TYPES
    assert gpus - RAY_ACCELERATOR_TYPES <= {
        "Ascend910B",
        "Ascend910B4",
        "MXC500",
        "MXC550",
        "FURIOSA_RNGD",
        "MOBILINT_ARIES",
        "MOBILINT_REGULUS",
        "AMD-Radeon-R9-200-HD-7900",
        "AMD-Radeon-HD-7900",
    }
