"""Local Ray clusters standing in for GPU sites (demo and tests): ``ray start --head`` each.

Each site is a separate Ray cluster (its own GCS, dashboard, temp dir and port ranges) with Serve
listening on its own HTTP port, as a site operator would run it. Ray declares GPUs the machine need
not have, so replicas that ask for one schedule and then compute on the CPU. A site is stopped by
ending its whole process group — ``ray stop`` would stop every cluster on the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import textwrap
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from soberana.operator.devenv.controlplane import free_port, wait_for


@dataclass
class RaySite:
    """One running Ray cluster with Serve; ``stop`` ends every process it started."""

    name: str
    temp_dir: Path
    gcs_port: int
    dashboard_port: int
    serve_port: int
    token: str
    log: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def serve_url(self) -> str:
        return f"http://127.0.0.1:{self.serve_port}"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """End every process of the cluster: SIGTERM, then SIGKILL what is left after 30 s."""
        if self.process is None:
            return
        _signal_session(self.process.pid, signal.SIGTERM)
        try:
            wait_for(lambda: not _session_members(self._session), timeout=30, what="Ray to stop")
        except TimeoutError:
            _signal_session(self._session, signal.SIGKILL)
        self._reap()

    def kill(self) -> None:
        """SIGKILL every process of the cluster at once, as a crash or a power cut would."""
        if self.process is None:
            return
        _signal_session(self._session, signal.SIGKILL)
        self._reap()

    @property
    def _session(self) -> int:
        # `ray start` leads a session of its own; Ray moves its workers (Serve's proxy and
        # controller, the replicas) into process groups of their own, but not out of the session
        assert self.process is not None
        return self.process.pid

    def _reap(self) -> None:
        assert self.process is not None
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=30)
        wait_for(lambda: not _session_members(self._session), timeout=30, what="Ray to exit")
        self.process = None


def _session_members(session: int) -> list[int]:
    """PIDs of the live processes in ``session``."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # the process ended meanwhile
            continue
        if fields[0] != "Z" and int(fields[3]) == session:
            members.append(int(stat.parent.name))
    return members


def _signal_session(session: int, signum: int) -> None:
    for pid in _session_members(session):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def start_ray_site(
    name: str,
    root: Path,
    *,
    worker_ports: tuple[int, int],
    num_gpus: int = 2,
    num_cpus: int = 2,
    accelerators: tuple[str, ...] = ("L4",),
    python: Path | None = None,
) -> RaySite:
    """Start a Ray head with its dashboard, then Serve on a free port; wait until both answer.

    The node is labelled with the Ray accelerator types in ``accelerators`` (as Ray labels a
    node with the GPU it detects), so that replicas pinned to one (``accelerator_type``) start.
    ``python`` is the interpreter of the environment Ray runs from (default: this one).
    """
    interpreter = python if python is not None else Path(sys.executable)
    temp_dir = Path(f"/tmp/sob-{name}-{os.getpid()}")  # Ray's socket paths must stay short
    site = RaySite(
        name=name,
        temp_dir=temp_dir,
        gcs_port=free_port(),
        dashboard_port=free_port(),
        serve_port=free_port(),
        token=secrets.token_hex(32),
        log=root / f"ray-{name}.log",
    )
    # each cluster gets its own token, passed explicitly rather than through ~/.ray/auth_token
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
        # a one-node cluster on loopback: without this Ray swaps 127.0.0.1 for the machine's
        # "remotely reachable" address
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": site.token,
    }
    env.pop("RAY_AUTH_TOKEN_PATH", None)
    argv = [
        str(interpreter.with_name("ray")),
        "start",
        "--head",
        "--block",
        "--disable-usage-stats",
        f"--port={site.gcs_port}",
        f"--temp-dir={temp_dir}",
        "--node-ip-address=127.0.0.1",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={site.dashboard_port}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--ray-client-server-port={free_port()}",
        f"--node-manager-port={free_port()}",
        f"--object-manager-port={free_port()}",
        f"--metrics-export-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
        f"--min-worker-port={worker_ports[0]}",
        f"--max-worker-port={worker_ports[1]}",
        f"--num-cpus={num_cpus}",
        f"--num-gpus={num_gpus}",
        "--resources=" + json.dumps({f"accelerator_type:{kind}": 1 for kind in accelerators}),
        "--object-store-memory=200000000",
    ]
    with site.log.open("ab") as out:
        # run from ``root``: Ray's workers put their working directory on sys.path, and this
        # repository's ``operator/`` would shadow the standard library's ``operator``
        site.process = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=root
        )

    def dashboard_up() -> bool:
        if not site.alive():
            raise RuntimeError(f"ray start exited:\n{site.log.read_text()[-3000:]}")
        request = urllib.request.Request(f"{site.dashboard_url}/api/version", headers=site.auth)
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    wait_for(dashboard_up, timeout=180, interval=0.5, what=f"Ray site {name}'s dashboard")
    script = textwrap.dedent(
        f"""
        import ray
        from ray import serve
        ray.init(address="127.0.0.1:{site.gcs_port}", log_to_driver=False)
        serve.start(http_options={{"host": "127.0.0.1", "port": {site.serve_port}}})
        """
    )
    started = subprocess.run(
        [str(interpreter), "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=root,
    )
    if started.returncode != 0:
        site.stop()
        raise RuntimeError(f"serve start failed on {name}:\n{started.stderr[-3000:]}")
    return site
