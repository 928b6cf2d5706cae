"""The ``ray`` backend: an existing Ray cluster, driven through its dashboard's Serve REST API.

``PUT /api/serve/applications/`` replaces every application on the cluster, so the body is always
the whole of soberana's applications for the site, plus — unchanged — any application soberana did
not create (found with ``GET``), which are reported and never silently deleted. This is the same
API KubeRay uses to deploy a RayService's ``serveConfigV2``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from typing import Any

import aiohttp

from soberana.operator.backends.base import (
    BackendError,
    ServeConfig,
    SiteReport,
    serve_app_state,
)
from soberana.operator.core.render import (
    VLLM_IMPORT_PATH,
    VLLM_SERVER_PREFIX,
    rendered_by_soberana,
)
from soberana.operator.core.status import Observation

log = logging.getLogger(__name__)

APPLICATIONS = "/api/serve/applications/"


def owned(app: Mapping[str, Any]) -> bool:
    """Whether soberana created this application (it runs a config soberana renders)."""
    return rendered_by_soberana(app.get("deployed_app_config") or {})


def observe_application(app: Mapping[str, Any]) -> Observation:
    """Ray's view of one application, as a placement state and a count of running replicas.

    In a vLLM application only the engine's replicas count, not its OpenAI ingress.
    """
    state = serve_app_state(app.get("status"))
    vllm = (app.get("deployed_app_config") or {}).get("import_path") == VLLM_IMPORT_PATH
    ready = 0
    for name, deployment in (app.get("deployments") or {}).items():
        if vllm and not str(name).startswith(VLLM_SERVER_PREFIX):
            continue
        ready += sum(
            1 for replica in deployment.get("replicas") or [] if replica.get("state") == "RUNNING"
        )
    message = str(app.get("message") or "")
    return Observation(
        state=state, ready_replicas=ready, message=message.splitlines()[0][:300] if message else ""
    )


class RayDashboardClient:
    """A ``ray`` site's backend: its dashboard. Requests time out; failures retry with backoff."""

    def __init__(
        self,
        dashboard_url: str,
        *,
        token: str | None = None,
        timeout_s: float = 10.0,
        attempts: int = 3,
        backoff_s: float = 0.5,
    ) -> None:
        self.dashboard_url = dashboard_url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session = aiohttp.ClientSession(
            headers=headers, timeout=aiohttp.ClientTimeout(total=timeout_s)
        )
        self._attempts = attempts
        self._backoff_s = backoff_s

    async def _request(self, method: str, path: str, body: Any = None) -> Any:
        url = f"{self.dashboard_url}{path}"
        last = ""
        for attempt in range(self._attempts):
            try:
                async with self._session.request(method, url, json=body) as response:
                    text = await response.text()
                    if response.status < 300:
                        return json.loads(text) if text.strip() else None
                    last = f"{method} {url}: HTTP {response.status}: {text.strip()[:300]}"
                    if response.status < 500:
                        break  # the cluster refused the request: retrying will not help
            except (aiohttp.ClientError, TimeoutError, ValueError) as error:
                last = f"{method} {url}: {type(error).__name__}: {error}".rstrip(": ")
            if attempt + 1 < self._attempts:
                await asyncio.sleep(self._backoff_s * 2**attempt)
        raise BackendError(last)

    async def _applications(self) -> Mapping[str, Any]:
        details = await self._request("GET", APPLICATIONS)
        if not isinstance(details, Mapping):
            raise BackendError(f"GET {self.dashboard_url}{APPLICATIONS}: not a Serve status")
        applications = details.get("applications") or {}
        return applications if isinstance(applications, Mapping) else {}

    async def apply(self, config: ServeConfig) -> None:
        existing = await self._applications()
        foreign = [
            app["deployed_app_config"]
            for app in existing.values()
            if not owned(app) and app.get("deployed_app_config")
        ]
        ours = {app["name"] for app in config.get("applications", [])}
        clashes = sorted(app["name"] for app in foreign if app.get("name") in ours)
        if clashes:
            raise BackendError(
                f"applications {', '.join(clashes)} exist on the cluster but were not created by "
                "soberana; rename or remove them"
            )
        body = {**config, "applications": [*config.get("applications", []), *foreign]}
        await self._request("PUT", APPLICATIONS, body)

    async def observe(self) -> SiteReport:
        version = await self._request("GET", "/api/version")
        applications = await self._applications()
        return SiteReport(
            applications={
                name: observe_application(app) for name, app in applications.items() if owned(app)
            },
            foreign=tuple(
                sorted(
                    name
                    for name, app in applications.items()
                    if not owned(app) and app.get("status") != "DELETING"
                )
            ),
            present=frozenset(applications),
            version=str((version or {}).get("ray_version", "")),
            deployed={
                name: app["deployed_app_config"]
                for name, app in applications.items()
                if owned(app)
                and app.get("status") != "DELETING"
                and isinstance(app.get("deployed_app_config"), Mapping)
            },
        )

    async def close(self) -> None:
        await self._session.close()
