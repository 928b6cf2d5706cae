"""A local Ray cluster running Serve, in this process, for runtime tests and benchmarks.

Configs are applied exactly as a site receives them: ``PUT /api/serve/applications/`` on Ray's
dashboard, then polled with ``GET`` until every application is RUNNING, within a deadline.
The dashboard takes the cluster's bearer token (Ray enables token authentication by default),
which ``ray get-auth-token`` prints, as a site's ``tokenSecretRef`` would hold it.

Ray declares GPUs that the machine need not have, so configs that ask for GPUs schedule; the
runtime then finds no CUDA device and computes on the CPU.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import serve

from tests.httpjson import call

_POLL_INTERVAL_S = 0.5


class DeployError(RuntimeError):
    """Serve refused a config, or an application did not reach RUNNING in time."""


@dataclass(frozen=True)
class LocalServe:
    dashboard_url: str
    serve_url: str
    token: str  # empty when the cluster has token authentication disabled

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def apply(self, config: Mapping[str, Any], timeout_s: float = 300) -> None:
        """PUT ``config`` and wait until each of its applications is RUNNING."""
        url = f"{self.dashboard_url}/api/serve/applications/"
        reply = call("PUT", url, config, headers=self.auth)
        if reply.status != 200:
            raise DeployError(f"PUT refused ({reply.status}): {reply.body.decode()}")
        wanted = {application["name"] for application in config["applications"]}
        deadline = time.monotonic() + timeout_s
        while True:
            statuses = self.statuses()
            failed = {
                name: status for name, status in statuses.items() if status[0] == "DEPLOY_FAILED"
            }
            if failed:
                raise DeployError(f"applications failed to deploy: {failed}")
            if all(statuses.get(name, ("",))[0] == "RUNNING" for name in wanted):
                return
            if time.monotonic() > deadline:
                raise DeployError(f"not RUNNING after {timeout_s:.0f}s: {statuses}")
            time.sleep(_POLL_INTERVAL_S)

    def statuses(self) -> dict[str, tuple[str, str]]:
        """(status, message) of every application, from the dashboard."""
        url = f"{self.dashboard_url}/api/serve/applications/"
        reply = call("GET", url, headers=self.auth)
        if reply.status != 200:
            raise DeployError(f"GET failed ({reply.status}): {reply.body.decode()}")
        applications = reply.json().get("applications") or {}
        return {
            name: (str(details["status"]), str(details.get("message", "")))
            for name, details in applications.items()
        }


@contextmanager
def local_serve(
    num_cpus: int = 2, num_gpus: int = 2, object_store_bytes: int = 200 * 1024**2
) -> Iterator[LocalServe]:
    """Start Ray (with its dashboard) and Serve on free loopback ports; shut both down after."""
    context = ray.init(
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        object_store_memory=object_store_bytes,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=_free_port(),
    )
    try:
        port = _free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        try:
            yield LocalServe(
                dashboard_url=f"http://{context.dashboard_url}",
                serve_url=f"http://127.0.0.1:{port}",
                token=_auth_token(),
            )
        finally:
            serve.shutdown()  # type: ignore[no-untyped-call]
    finally:
        ray.shutdown()


def _auth_token() -> str:
    ray_cli = Path(sys.executable).with_name("ray")
    printed = subprocess.run(
        [str(ray_cli), "get-auth-token"], capture_output=True, text=True, timeout=60
    )
    return printed.stdout.strip() if printed.returncode == 0 else ""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
