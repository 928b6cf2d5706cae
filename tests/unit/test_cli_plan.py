"""``soberana plan`` on the examples: the table people read and the JSON programs read."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner

from soberana.operator.cli import main
from soberana.operator.core.api import (
    Condition,
    ConditionStatus,
    InferenceSite,
    InferenceSiteStatus,
    ModelDeployment,
    ModelDeploymentStatus,
    NamespacedName,
    PlacementStatus,
)
from soberana.operator.core.placement import World, place
from soberana.operator.manifests import load_manifests

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = str(ROOT / "examples" / "latam")


def test_json_places_every_example() -> None:
    result = CliRunner().invoke(main, ["plan", "-f", EXAMPLES, "-o", "json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert len(plan["deployments"]) == 7
    assert all(entry["placed"] for entry in plan["deployments"].values())
    assert plan["deployments"]["gov/citizen-assistant"]["placements"] == [
        {
            "site": "lima-edge",
            "pool": "T4",
            "replicas": 2,
            "hourlyCost": 0.7,
            "regions": ["pe-central"],
        }
    ]
    assert plan["sites"]["lima-edge"] == {
        "gpusAllocated": 2,
        "gpusTotal": 2,
        "cpusAllocated": 0,
        "cpusTotal": 0,
        "memoryGiBAllocated": 0,
        "memoryGiBTotal": 0,
    }


def test_the_gguf_model_runs_on_the_cpu_only_edge_box() -> None:
    result = CliRunner().invoke(main, ["plan", "-f", EXAMPLES, "-o", "json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert plan["deployments"]["gov/tramites-chat"]["placements"] == [
        {
            "site": "arequipa-edge",
            "pool": "cpu",
            "replicas": 2,
            "hourlyCost": 0.16,
            "regions": ["pe-south", "pe-central"],
        }
    ]
    assert plan["deployments"]["gov/tramites-chat"]["rejected"]["lima-edge"] == (
        "CPU pool: the site has no spec.cpus; a CPU-only replica needs one"
    )
    assert plan["sites"]["arequipa-edge"] == {
        "gpusAllocated": 0,
        "gpusTotal": 0,
        "cpusAllocated": 4,
        "cpusTotal": 16,
        "memoryGiBAllocated": 2,
        "memoryGiBTotal": 32,
    }


def test_optimal_solver_places_every_example_too() -> None:
    result = CliRunner().invoke(main, ["plan", "-f", EXAMPLES, "-o", "json", "--solver", "optimal"])
    assert result.exit_code == 0, result.output
    assert all(entry["placed"] for entry in json.loads(result.output)["deployments"].values())


def test_table_shows_placements_reasons_and_sites() -> None:
    result = CliRunner().invoke(main, ["plan", "-f", EXAMPLES])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == [
        "DEPLOYMENT",
        "PLACED",
        "COST/H",
        "SITE",
        "REPLICAS",
        "POOL",
        "REGIONS",
    ]
    assert "WHY NOT OTHER SITES" in lines
    assert any(
        "buenos-aires-1" in line and "cordoned: the site takes nothing new" in line
        for line in lines
    )
    assert any(line.startswith("SITE ") for line in lines)
    assert any(
        line.split()[:7] == ["arequipa-edge", "edge", "pe-south", "PE", "-", "4/16", "2/32"]
        for line in lines
    )
    assert lines[-1] == "7 of 7 deployments placed, 23.86/h in total (solver: fast)"


def test_invalid_input_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: soberana.io/v1alpha1\nkind: ModelDeployment\nmetadata: {name: x}\n"
        "spec: {model: {uri: 'file:///m'}, replicas: 0}\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(main, ["plan", "-f", str(bad)])
    assert result.exit_code == 1
    assert (
        f"Error: {bad}: ModelDeployment default/x: spec.replicas: Input should be" in result.output
    )


def test_a_snapshot_with_status_shows_what_is_kept_and_what_moves(tmp_path: Path) -> None:
    manifests = load_manifests([ROOT / "examples" / "latam"])
    first = place(World.from_resources(manifests.sites, manifests.deployments))
    documents: list[dict[str, Any]] = []
    for deployment in manifests.deployments:
        key = str(NamespacedName.of(deployment.metadata))
        placements = [
            PlacementStatus(
                site=entry.site,
                gpu_model=entry.gpu_model,
                replicas=entry.replicas,
                hourly_cost=entry.hourly_cost,
            )
            for entry in first.deployments[key].placements
        ]
        status = ModelDeploymentStatus(placements=placements)
        documents.append(_wire(deployment.model_copy(update={"status": status})))
    down = Condition(
        type="Ready",
        status=ConditionStatus.FALSE,
        reason="Unreachable",
        message="the dashboard does not answer",
        last_transition_time=datetime(2026, 1, 1, tzinfo=UTC),
    )
    for site in manifests.sites:
        unhealthy = site.model_copy(update={"status": InferenceSiteStatus(conditions=[down])})
        documents.append(_wire(unhealthy if site.metadata.name == "lima-edge" else site))
    snapshot = tmp_path / "snapshot.yaml"
    snapshot.write_text(yaml.safe_dump_all(documents), encoding="utf-8")

    result = CliRunner().invoke(main, ["plan", "-f", str(snapshot)])
    assert result.exit_code == 0, result.output
    table = result.output.split("\n\n")[0].splitlines()[1:]
    placed = {line.split()[0]: line.split()[1] for line in table if not line.startswith(" ")}
    assert placed["gov/citizen-assistant"] == "no"
    assert placed["ml/eu-support-bot"] == "kept"
    assert "lima-edge (unhealthy)" in result.output


def _wire(resource: InferenceSite | ModelDeployment) -> dict[str, Any]:
    return resource.model_dump(by_alias=True, exclude_none=True, mode="json")
