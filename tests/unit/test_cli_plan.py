"""``soberana plan`` on the examples: the table people read and the JSON programs read."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from soberana.operator.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = str(ROOT / "examples")


def test_json_places_every_example() -> None:
    result = CliRunner().invoke(main, ["plan", "-f", EXAMPLES, "-o", "json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert len(plan["deployments"]) == 6
    assert all(entry["placed"] for entry in plan["deployments"].values())
    assert plan["deployments"]["gov/citizen-assistant"]["placements"] == [
        {"site": "lima-edge", "replicas": 2, "hourlyCost": 0.7, "regions": ["pe-central"]}
    ]
    assert plan["sites"]["lima-edge"] == {"gpusAllocated": 2, "gpusTotal": 2}


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
        "GPU",
        "REGIONS",
    ]
    assert "WHY NOT OTHER SITES" in lines
    assert any(
        "buenos-aires-1" in line and "cordoned: the site takes nothing new" in line
        for line in lines
    )
    assert any(line.startswith("SITE ") for line in lines)
    assert lines[-1] == "6 of 6 deployments placed, 23.70/h in total (solver: fast)"


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
