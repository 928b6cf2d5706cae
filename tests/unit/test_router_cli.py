"""``soberana router``: options are checked before anything starts."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from soberana.operator.cli.router import router


def test_routes_and_kubeconfig_exclude_each_other(tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text("sites: []\n")
    result = CliRunner().invoke(router, ["--routes", str(routes), "--kubeconfig", str(routes)])
    assert result.exit_code == 2
    assert "give --routes or --kubeconfig, not both" in result.output


def test_a_region_must_be_a_region_id() -> None:
    result = CliRunner().invoke(router, ["--region", "Sao Paulo"])
    assert result.exit_code == 2
    assert "'Sao Paulo' is not a region id such as br-southeast" in result.output


def test_limits_and_timeouts_are_checked() -> None:
    for option, value in (("--max-connections", "0"), ("--header-timeout", "0")):
        result = CliRunner().invoke(router, [option, value])
        assert result.exit_code == 2, result.output
        assert option in result.output
