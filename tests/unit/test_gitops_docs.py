"""The Argo CD health checks in docs/argocd/ give the right verdict on the statuses the operator
really writes, and the argocd-cm patch carries exactly those scripts.

The statuses come from the operator's own pure status composer
(:mod:`soberana.operator.core.status`), so a change to a condition's type or reason that the Lua
does not follow fails here. The Lua runs in a real interpreter: Lua 5.1 (the dialect Argo CD's
gopher-lua speaks) through the ``lupa`` package when it is installed, and every ``lua*`` binary
found on PATH (Debian: ``apt-get install lua5.1``).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import shutil
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from soberana.operator.core.api import PlacementState
from soberana.operator.core.placement.plan import Change, DeploymentPlan, SitePlacement, SiteUsage
from soberana.operator.core.status import Observation, SiteCheck, deployment_status, site_status

DOCS = Path(__file__).resolve().parents[2] / "docs"
MODEL_DEPLOYMENT_LUA = (DOCS / "argocd" / "modeldeployment.lua").read_text()
INFERENCE_SITE_LUA = (DOCS / "argocd" / "inferencesite.lua").read_text()
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)

Verdict = tuple[str, str]
Runner = Callable[[str], Verdict]


# ------------------------------------------------------------------ running Lua


def lua_literal(value: Any) -> str:
    """``value`` (JSON-shaped) as a Lua table constructor; nulls are left out, as in Argo CD."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid Lua for this text
    if isinstance(value, list):
        return "{" + ", ".join(lua_literal(item) for item in value if item is not None) + "}"
    if isinstance(value, dict):
        return (
            "{"
            + ", ".join(
                f"[{json.dumps(key)}] = {lua_literal(item)}"
                for key, item in value.items()
                if item is not None
            )
            + "}"
        )
    raise TypeError(type(value))


def health_chunk(script: str, obj: dict[str, Any]) -> str:
    """A chunk that runs ``script`` as Argo CD does: ``obj`` global, the script returns ``hs``."""
    return f"obj = {lua_literal(obj)}\nlocal hs = (function()\n{script}\nend)()\n"


def _binary_runner(binary: str) -> Runner:
    def run(chunk: str) -> Verdict:
        result = subprocess.run(
            [binary, "-"],
            input=chunk + 'io.write(hs.status, "\\n", hs.message or "")\n',
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
        status, _, message = result.stdout.partition("\n")
        return status, message

    return run


def _lupa_runner() -> Runner:
    lua51 = importlib.import_module("lupa.lua51")

    def run(chunk: str) -> Verdict:
        status, message = lua51.LuaRuntime(unpack_returned_tuples=True).execute(
            chunk + "return hs.status, hs.message or ''\n"
        )
        return str(status), str(message)

    return run


def interpreters() -> list[Any]:
    found: list[Any] = []
    with contextlib.suppress(ImportError):
        found.append(pytest.param(_lupa_runner(), id="lupa-lua5.1"))
    seen: set[Path] = set()
    for name in ("lua5.1", "luajit", "lua5.4", "lua"):
        path = shutil.which(name)
        if path and Path(path).resolve() not in seen:
            seen.add(Path(path).resolve())
            found.append(pytest.param(_binary_runner(path), id=name))
    if not found:
        reason = "no Lua interpreter: pip install lupa, or apt-get install lua5.1"
        found.append(pytest.param(None, id="no-lua", marks=pytest.mark.skip(reason=reason)))
    return found


@pytest.fixture(params=interpreters())
def lua(request: pytest.FixtureRequest) -> Runner:
    runner: Runner = request.param
    return runner


# ------------------------------------------------------------------ as the operator writes them


def model_deployment(
    *,
    generation: int = 3,
    placed_on: tuple[str, ...] = ("sao-paulo-1", "santiago-1"),
    observed: dict[str, Observation] | None = None,
    status_generation: int | None = 3,
    with_status: bool = True,
) -> dict[str, Any]:
    placements = tuple(
        SitePlacement(site=site, gpu_model="L4", replicas=1, hourly_cost=0.8, regions=())
        for site in placed_on
    )
    plan = DeploymentPlan(
        key="ml/chat",
        placements=placements,
        reason=None if placements else "no site in allowed jurisdictions [BR, CL] has 1 free L4",
        rejected={"virginia-1": "jurisdiction US is not in allowedJurisdictions [BR, CL]"},
        change=Change.PLACED if placements else Change.UNPLACED,
    )
    obj: dict[str, Any] = {
        "apiVersion": "soberana.io/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "chat", "namespace": "ml", "generation": generation},
        "spec": {"model": {"uri": "file:///models/chat"}, "replicas": len(placed_on) or 1},
    }
    if with_status:
        status = deployment_status(
            plan, previous=None, generation=status_generation, observed=observed or {}, now=NOW
        )
        obj["status"] = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    return obj


def running(ready: int = 1) -> Observation:
    return Observation(state=PlacementState.RUNNING, ready_replicas=ready)


def inference_site(
    *,
    check: SiteCheck | None,
    cordoned: bool = False,
    generation: int = 2,
    status_generation: int | None = 2,
    with_status: bool = True,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "soberana.io/v1alpha1",
        "kind": "InferenceSite",
        "metadata": {"name": "sao-paulo-1", "generation": generation},
        "spec": {"tier": "cloud", "region": "br-southeast", "jurisdiction": "BR"},
    }
    if with_status:
        usage = SiteUsage(gpus_allocated=3, gpus_total=8, hourly_cost=2.4, deployments=2)
        status = site_status(
            usage,
            previous=None,
            generation=status_generation,
            check=check,
            cordoned=cordoned,
            now=NOW,
        )
        obj["status"] = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    return obj


REACHABLE = SiteCheck(reachable=True, message="Ray 2.40.0", healthy=True)


# ------------------------------------------------------------------ ModelDeployment


@pytest.mark.parametrize(
    ("obj", "status", "message"),
    [
        pytest.param(
            model_deployment(with_status=False),
            "Progressing",
            "observe generation 3",
            id="no-status-yet",
        ),
        pytest.param(
            model_deployment(generation=4, observed={s: running() for s in ("sao-paulo-1",)}),
            "Progressing",
            "observe generation 4",
            id="spec-changed-since-status",
        ),
        pytest.param(
            model_deployment(placed_on=()),
            "Degraded",
            "Unplaceable: no site in allowed jurisdictions [BR, CL]",
            id="unplaceable",
        ),
        pytest.param(
            model_deployment(observed={"sao-paulo-1": running(), "santiago-1": running()}),
            "Healthy",
            "2/2 replicas ready on sao-paulo-1,santiago-1",
            id="all-replicas-ready",
        ),
        pytest.param(
            model_deployment(),
            "Progressing",
            "waiting for sao-paulo-1, santiago-1 to report",
            id="sites-not-reported-yet",
        ),
        pytest.param(
            model_deployment(
                observed={
                    "sao-paulo-1": running(),
                    "santiago-1": Observation(state=PlacementState.DEPLOYING, ready_replicas=0),
                }
            ),
            "Progressing",
            "1 of 2 replicas not ready",
            id="one-replica-coming-up",
        ),
        pytest.param(
            model_deployment(
                observed={
                    "sao-paulo-1": running(),
                    "santiago-1": Observation(
                        state=PlacementState.FAILED, ready_replicas=0, message="out of memory"
                    ),
                }
            ),
            "Degraded",
            "santiago-1: out of memory",
            id="a-site-failed",
        ),
    ],
)
def test_model_deployment_health(
    lua: Runner, obj: dict[str, Any], status: str, message: str
) -> None:
    verdict = lua(health_chunk(MODEL_DEPLOYMENT_LUA, obj))
    assert verdict[0] == status, verdict
    assert message in verdict[1], verdict


# ------------------------------------------------------------------ InferenceSite


@pytest.mark.parametrize(
    ("obj", "status", "message"),
    [
        pytest.param(
            inference_site(check=REACHABLE, with_status=False),
            "Progressing",
            "observe generation 2",
            id="no-status-yet",
        ),
        pytest.param(
            inference_site(check=REACHABLE, generation=3),
            "Progressing",
            "observe generation 3",
            id="spec-changed-since-status",
        ),
        pytest.param(inference_site(check=REACHABLE), "Healthy", "3/8", id="reachable-and-ready"),
        pytest.param(inference_site(check=None), "Healthy", "3/8", id="placement-only-operator"),
        pytest.param(
            inference_site(check=SiteCheck(reachable=None, message="", healthy=True)),
            "Progressing",
            "not looked at yet",
            id="not-probed-yet",
        ),
        pytest.param(
            inference_site(
                check=SiteCheck(reachable=False, message="connection refused", healthy=True)
            ),
            "Progressing",
            "connection refused",
            id="unreachable-within-grace",
        ),
        pytest.param(
            inference_site(
                check=SiteCheck(reachable=False, message="connection refused", healthy=False)
            ),
            "Degraded",
            "deployments are placed elsewhere",
            id="unreachable-past-grace",
        ),
        pytest.param(
            inference_site(check=REACHABLE, cordoned=True),
            "Suspended",
            "cordoned",
            id="cordoned",
        ),
    ],
)
def test_inference_site_health(lua: Runner, obj: dict[str, Any], status: str, message: str) -> None:
    verdict = lua(health_chunk(INFERENCE_SITE_LUA, obj))
    assert verdict[0] == status, verdict
    assert message in verdict[1], verdict


# ------------------------------------------------------------------ the material around the scripts


def test_argocd_cm_patch_carries_the_scripts_verbatim() -> None:
    patch = yaml.safe_load((DOCS / "argocd" / "argocd-cm-patch.yaml").read_text())
    assert patch["data"] == {
        "resource.customizations.health.soberana.io_ModelDeployment": MODEL_DEPLOYMENT_LUA,
        "resource.customizations.health.soberana.io_InferenceSite": INFERENCE_SITE_LUA,
    }


def test_gitops_md_shows_the_scripts_verbatim() -> None:
    text = (DOCS / "gitops.md").read_text()
    for script in (MODEL_DEPLOYMENT_LUA, INFERENCE_SITE_LUA):
        assert f"```lua\n{script}```" in text
