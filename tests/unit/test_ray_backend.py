"""Error paths and ownership rules of the ray backend, against a small local stand-in dashboard.

The happy path runs against real Ray clusters in tests/integration/test_end_to_end.py; what a real
dashboard cannot do on demand (fail with a 503 twice, hold foreign applications in a known shape)
is exercised here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from soberana.operator.backends.base import BackendError, serve_app_state
from soberana.operator.backends.kuberay import observe_rayservice
from soberana.operator.backends.ray import RayDashboardClient, observe_application
from soberana.operator.core.api import PlacementState
from soberana.operator.core.render import RUNTIME_IMPORT_PATH


class FakeDashboard:
    def __init__(self) -> None:
        self.applications: dict[str, Any] = {}
        self.puts: list[dict[str, Any]] = []
        self.put_attempts = 0
        self.failures_left = 0
        self.auth: list[str | None] = []

    async def get_apps(self, request: web.Request) -> web.Response:
        self.auth.append(request.headers.get("Authorization"))
        if self.failures_left:
            self.failures_left -= 1
            return web.Response(status=503, text="busy")
        return web.json_response({"applications": self.applications})

    async def put_apps(self, request: web.Request) -> web.Response:
        self.put_attempts += 1
        body = await request.json()
        if any(not app.get("import_path") for app in body["applications"]):
            return web.Response(status=400, text="import_path is required")
        self.puts.append(body)
        return web.json_response({})

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response({"ray_version": "2.60.0"})


@pytest.fixture
async def dashboard() -> AsyncIterator[tuple[FakeDashboard, str]]:
    fake = FakeDashboard()
    app = web.Application()
    app.router.add_get("/api/serve/applications/", fake.get_apps)
    app.router.add_put("/api/serve/applications/", fake.put_apps)
    app.router.add_get("/api/version", fake.version)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield fake, f"http://127.0.0.1:{port}"
    await runner.cleanup()


def ours(name: str, status: str = "RUNNING", running: int = 1) -> dict[str, Any]:
    return {
        "name": name,
        "status": status,
        "message": "",
        "deployed_app_config": {"name": name, "import_path": RUNTIME_IMPORT_PATH},
        "deployments": {"Model": {"replicas": [{"state": "RUNNING"}] * running}},
    }


def foreign(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "status": "RUNNING",
        "deployed_app_config": {
            "name": name,
            "import_path": "their.app:build",
            "route_prefix": "/x",
        },
        "deployments": {},
    }


async def test_foreign_applications_are_kept_and_reported(
    dashboard: tuple[FakeDashboard, str],
) -> None:
    fake, url = dashboard
    fake.applications = {"ml-chat": ours("ml-chat", running=2), "theirs": foreign("theirs")}
    backend = RayDashboardClient(url, token="s3cret")
    try:
        config = {"applications": [{"name": "ml-chat", "import_path": RUNTIME_IMPORT_PATH}]}
        await backend.apply(config)
        sent = fake.puts[-1]["applications"]
        assert [app["name"] for app in sent] == ["ml-chat", "theirs"], "foreign app must survive"
        report = await backend.observe()
        assert report.foreign == ("theirs",)
        assert report.applications["ml-chat"].state is PlacementState.RUNNING
        assert report.applications["ml-chat"].ready_replicas == 2
        assert report.version == "2.60.0"
        assert set(fake.auth) == {"Bearer s3cret"}
    finally:
        await backend.close()


async def test_name_clash_with_a_foreign_application_is_refused(
    dashboard: tuple[FakeDashboard, str],
) -> None:
    fake, url = dashboard
    fake.applications = {"ml-chat": foreign("ml-chat")}
    backend = RayDashboardClient(url)
    try:
        with pytest.raises(BackendError, match="not created by soberana"):
            await backend.apply({"applications": [{"name": "ml-chat", "import_path": "x"}]})
        assert fake.puts == []
    finally:
        await backend.close()


async def test_server_errors_are_retried_then_succeed(dashboard: tuple[FakeDashboard, str]) -> None:
    fake, url = dashboard
    fake.failures_left = 2
    backend = RayDashboardClient(url, attempts=3, backoff_s=0.01)
    try:
        report = await backend.observe()
        assert report.applications == {}
        assert fake.failures_left == 0
    finally:
        await backend.close()


async def test_client_errors_are_not_retried_and_explain_themselves(
    dashboard: tuple[FakeDashboard, str],
) -> None:
    fake, url = dashboard
    backend = RayDashboardClient(url, attempts=3, backoff_s=0.01)
    try:
        with pytest.raises(BackendError, match="HTTP 400: import_path is required"):
            await backend.apply({"applications": [{"name": "a"}]})
        assert fake.put_attempts == 1
    finally:
        await backend.close()


async def test_unreachable_dashboard_is_a_clear_error() -> None:
    backend = RayDashboardClient("http://127.0.0.1:9", attempts=2, backoff_s=0.01)
    try:
        with pytest.raises(BackendError, match=r"GET http://127\.0\.0\.1:9/api/version: .*Connect"):
            await backend.observe()
    finally:
        await backend.close()


def test_failed_application_reports_its_first_message_line() -> None:
    observed = observe_application(
        {
            "status": "DEPLOY_FAILED",
            "message": "ImportError: nope\nTraceback ...",
            "deployments": {},
        }
    )
    assert observed.state is PlacementState.FAILED
    assert observed.message == "ImportError: nope"


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("RUNNING", PlacementState.RUNNING),
        ("NOT_STARTED", PlacementState.DEPLOYING),
        ("DELETING", PlacementState.DEPLOYING),
        ("DEPLOY_FAILED", PlacementState.FAILED),
        ("UNHEALTHY", PlacementState.FAILED),
        ("A_STATUS_FROM_A_NEWER_RAY", PlacementState.DEPLOYING),
        (None, PlacementState.DEPLOYING),
    ],
)
def test_both_ray_backends_read_serve_states_from_one_table(
    status: str | None, state: PlacementState
) -> None:
    assert serve_app_state(status) is state
    rayservice = {
        "status": {"activeServiceStatus": {"applicationStatuses": {"a": {"status": status}}}}
    }
    assert observe_rayservice(rayservice, None).applications["a"].state is state
    assert observe_application({"status": status}).state is state
