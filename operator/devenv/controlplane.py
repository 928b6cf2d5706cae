"""Start, reuse, inspect and stop a local Kubernetes control plane: etcd + kube-apiserver.

Like controller-runtime's envtest, but a real cluster API for humans too: TLS on loopback, RBAC,
service-account signing keys and an admin client certificate in ``system:masters``. All state (PKI,
etcd data, logs, PIDs) lives in one state directory; ``down`` stops exactly the processes that
``up`` recorded there. Extra API servers can share the etcd under another ``--etcd-prefix``: each
is an independent cluster (the tests use one as a remote site cluster).
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from soberana.operator.devenv.binaries import Binaries, Progress, _stderr_progress, ensure_all
from soberana.operator.devenv.pki import PKIPaths, ensure_pki

MAIN = "main"
_STATE_FILE = "state.json"
_PR_SET_PDEATHSIG = 1


class ControlPlaneError(RuntimeError):
    """The control plane could not be started or reached; the message says why and what to do."""


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "soberana" / "dev"


@dataclass
class ProcessRecord:
    """A process that ``up`` started, known by more than its PID so a reused PID is never killed."""

    name: str
    pid: int
    executable: str
    start_ticks: int

    def alive(self) -> bool:
        _reap(self.pid)
        return _start_ticks(self.pid) == self.start_ticks


@dataclass
class APIServerRecord:
    process: ProcessRecord
    port: int
    etcd_prefix: str
    kubeconfig: str

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"


@dataclass
class State:
    etcd: ProcessRecord
    etcd_port: int
    apiservers: dict[str, APIServerRecord] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> State | None:
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return cls(
            etcd=ProcessRecord(**raw["etcd"]),
            etcd_port=raw["etcd_port"],
            apiservers={
                name: APIServerRecord(process=ProcessRecord(**record.pop("process")), **record)
                for name, record in raw["apiservers"].items()
            },
        )

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")


def _start_ticks(pid: int) -> int:
    """The process start time in clock ticks since boot, or -1 when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return -1
    # the command name may contain spaces; fields after the closing parenthesis are fixed
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return -1
    return int(fields[19])


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free loopback port, never one this process was given before.

    The kernel may hand the same ephemeral port to two ``bind(0)`` calls in a row once the first
    socket is closed, and a caller choosing several ports for one program (Ray takes ten) would
    then give two components the same one.
    """
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def _die_with_parent() -> None:
    """Ask the kernel to kill this child when its parent dies (used for test control planes)."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_for(
    condition: Callable[[], bool], *, timeout: float, interval: float = 0.2, what: str
) -> None:
    """Poll ``condition`` until it holds; raise :class:`TimeoutError` naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class ControlPlane:
    """One local control plane rooted at ``state_dir``."""

    def __init__(
        self, state_dir: Path | None = None, progress: Progress = _stderr_progress
    ) -> None:
        self.state_dir = (state_dir or default_state_dir()).resolve()
        self.progress = progress
        self.pki = PKIPaths(self.state_dir / "pki")
        self.logs = self.state_dir / "logs"

    # ----------------------------------------------------------------- inspection

    @property
    def _state_path(self) -> Path:
        return self.state_dir / _STATE_FILE

    def state(self) -> State | None:
        return State.load(self._state_path)

    def running(self) -> bool:
        state = self.state()
        return bool(
            state
            and state.etcd.alive()
            and MAIN in state.apiservers
            and all(a.process.alive() for a in state.apiservers.values())
            and self._ready(state.apiservers[MAIN].port)
        )

    def kubeconfig(self, name: str = MAIN) -> Path:
        state = self.state()
        if state is None or name not in state.apiservers:
            raise ControlPlaneError(
                f"no API server {name!r} in {self.state_dir}; run `soberana dev up`"
            )
        return Path(state.apiservers[name].kubeconfig)

    # ----------------------------------------------------------------- start

    def up(
        self,
        kubeconfig: Path | None = None,
        *,
        binaries: Binaries | None = None,
        die_with_parent: bool = False,
        crds: list[dict[str, Any]] | None = None,
    ) -> Path:
        """Start etcd and the main API server unless they already run; return the kubeconfig path.

        ``die_with_parent`` ties the processes' lifetime to this one (tests), instead of leaving
        them running for a later ``down`` (``soberana dev up``). ``crds`` are applied once the
        server is ready and waited on until established.
        """
        if self.running():
            path = self.kubeconfig()
            if kubeconfig is not None and kubeconfig.resolve() != path:
                kubeconfig.parent.mkdir(parents=True, exist_ok=True)
                kubeconfig.write_bytes(path.read_bytes())
                kubeconfig.chmod(0o600)
                path = kubeconfig.resolve()
            self.progress(f"control plane already running in {self.state_dir}; reusing it")
            if crds:
                self.apply_crds(path, (binaries or ensure_all(self.progress)).kubectl, crds)
            return path
        self.down(quiet=True)
        binaries = binaries or ensure_all(self.progress)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        ensure_pki(self.pki.directory)

        etcd_port, peer_port = free_port(), free_port()
        self.progress(f"starting etcd on 127.0.0.1:{etcd_port}")
        data_dir = self.state_dir / "etcd-data"
        etcd = self._spawn(
            "etcd",
            [
                str(binaries.etcd),
                "--name=soberana-dev",
                f"--data-dir={data_dir}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                f"--initial-cluster=soberana-dev=http://127.0.0.1:{peer_port}",
                "--unsafe-no-fsync=true",  # a throwaway dev/test store: speed over durability
                "--log-level=warn",
            ],
            die_with_parent,
        )
        state = State(etcd=etcd, etcd_port=etcd_port)
        state.save(self._state_path)
        self._wait_healthy("etcd", etcd, lambda: self._etcd_healthy(etcd_port), 60)

        path = self._start_apiserver(
            state=state,
            name=MAIN,
            etcd_prefix="/registry",
            binaries=binaries,
            die_with_parent=die_with_parent,
            kubeconfig=kubeconfig,
        )
        if crds:
            self.apply_crds(path, binaries.kubectl, crds)
        return path

    def add_apiserver(
        self,
        name: str,
        *,
        etcd_prefix: str | None = None,
        binaries: Binaries | None = None,
        die_with_parent: bool = False,
    ) -> Path:
        """Start another API server on the same etcd under its own prefix: a separate cluster."""
        state = self.state()
        if state is None or not state.etcd.alive():
            raise ControlPlaneError("etcd is not running; call up() first")
        existing = state.apiservers.get(name)
        if existing and existing.process.alive() and self._ready(existing.port):
            return Path(existing.kubeconfig)
        binaries = binaries or ensure_all(self.progress)
        return self._start_apiserver(
            state=state,
            name=name,
            etcd_prefix=etcd_prefix or f"/{name}-registry",
            binaries=binaries,
            die_with_parent=die_with_parent,
            kubeconfig=None,
        )

    def _start_apiserver(
        self,
        *,
        state: State,
        name: str,
        etcd_prefix: str,
        binaries: Binaries,
        die_with_parent: bool,
        kubeconfig: Path | None,
    ) -> Path:
        port = free_port()
        self.progress(f"starting kube-apiserver {name!r} on https://127.0.0.1:{port}")
        pki = self.pki
        process = self._spawn(
            f"kube-apiserver-{name}",
            [
                str(binaries.kube_apiserver),
                f"--etcd-servers=http://127.0.0.1:{state.etcd_port}",
                f"--etcd-prefix={etcd_prefix}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={self.state_dir / ('certs-' + name)}",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca_cert}",
                "--authorization-mode=RBAC",
                f"--service-account-key-file={pki.sa_public_key}",
                f"--service-account-signing-key-file={pki.sa_private_key}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--endpoint-reconciler-type=none",  # no kubelet or network: nothing to reconcile
                "--allow-privileged=true",
                "--v=1",
            ],
            die_with_parent,
        )
        path = (kubeconfig or self.state_dir / f"kubeconfig-{name}").resolve()
        record = APIServerRecord(
            process=process, port=port, etcd_prefix=etcd_prefix, kubeconfig=str(path)
        )
        state.apiservers[name] = record
        state.save(self._state_path)
        self._wait_healthy(f"kube-apiserver {name!r}", process, lambda: self._ready(port), 180)
        self._write_kubeconfig(path, record.url, context=f"soberana-{name}")
        self.progress(f"kube-apiserver {name!r} ready; kubeconfig: {path}")
        return path

    def _spawn(self, name: str, argv: list[str], die_with_parent: bool) -> ProcessRecord:
        log = self.logs / f"{name}.log"
        with log.open("ab") as out:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # called before exec in the child; the threads caveat does not apply to prctl
                preexec_fn=_die_with_parent if die_with_parent else None,  # noqa: PLW1509
            )
        return ProcessRecord(
            name=name, pid=popen.pid, executable=argv[0], start_ticks=_start_ticks(popen.pid)
        )

    def _wait_healthy(
        self, what: str, process: ProcessRecord, check: Callable[[], bool], timeout: float
    ) -> None:
        log = self.logs / f"{process.name}.log"

        def healthy() -> bool:
            if not process.alive():
                raise ControlPlaneError(
                    f"{what} exited during start-up. Last lines of {log}:\n{_tail(log)}"
                )
            return check()

        try:
            wait_for(healthy, timeout=timeout, interval=0.25, what=f"{what} to become ready")
        except TimeoutError as error:
            raise ControlPlaneError(f"{error}. Last lines of {log}:\n{_tail(log)}") from error

    # ----------------------------------------------------------------- health

    @staticmethod
    def _etcd_healthy(port: int) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                return bool(json.loads(response.read()).get("health") == "true")
        except (OSError, ValueError):
            return False

    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        context.load_cert_chain(str(self.pki.admin_cert), str(self.pki.admin_key))
        return context

    def _ready(self, port: int) -> bool:
        try:
            with urllib.request.urlopen(
                f"https://127.0.0.1:{port}/readyz", timeout=2, context=self._ssl_context()
            ) as response:
                return bool(response.read().strip() == b"ok")
        except (OSError, urllib.error.URLError, ssl.SSLError):
            return False

    def _write_kubeconfig(self, path: Path, server: str, context: str) -> None:
        def b64(p: Path) -> str:
            return base64.b64encode(p.read_bytes()).decode()

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": context,
                    "cluster": {
                        "server": server,
                        "certificate-authority-data": b64(self.pki.ca_cert),
                    },
                }
            ],
            "users": [
                {
                    "name": f"{context}-admin",
                    "user": {
                        "client-certificate-data": b64(self.pki.admin_cert),
                        "client-key-data": b64(self.pki.admin_key),
                    },
                }
            ],
            "contexts": [
                {"name": context, "context": {"cluster": context, "user": f"{context}-admin"}}
            ],
            "current-context": context,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))

    # ----------------------------------------------------------------- CRDs

    def apply_crds(self, kubeconfig: Path, kubectl: Path, crds: list[dict[str, Any]]) -> None:
        """Server-side apply the CRDs and wait until every one is Established."""
        self.progress(f"installing {len(crds)} CustomResourceDefinitions")
        manifest = yaml.safe_dump_all(crds, sort_keys=False)
        base = [str(kubectl), f"--kubeconfig={kubeconfig}"]
        applied = subprocess.run(
            [*base, "apply", "--server-side", "--field-manager=soberana-dev", "-f", "-"],
            input=manifest,
            capture_output=True,
            text=True,
        )
        if applied.returncode != 0:
            raise ControlPlaneError(f"installing the CRDs failed:\n{applied.stderr}")
        names = [f"crd/{crd['metadata']['name']}" for crd in crds]
        waited = subprocess.run(
            [*base, "wait", "--for=condition=Established", "--timeout=60s", *names],
            capture_output=True,
            text=True,
        )
        if waited.returncode != 0:
            raise ControlPlaneError(f"the CRDs did not become Established:\n{waited.stderr}")

    # ----------------------------------------------------------------- stop

    def down(self, *, quiet: bool = False) -> list[str]:
        """Stop every process recorded in the state dir and forget them; return what was stopped."""
        state = self.state()
        if state is None:
            if not quiet:
                self.progress(f"nothing running from {self.state_dir}")
            return []
        stopped = []
        # API servers first, then their store
        records = [a.process for a in state.apiservers.values()] + [state.etcd]
        for record in records:
            if _stop(record):
                stopped.append(f"{record.name} (pid {record.pid})")
        self._state_path.unlink(missing_ok=True)
        shutil.rmtree(self.state_dir / "etcd-data", ignore_errors=True)
        if not quiet:
            self.progress(
                "stopped " + ", ".join(stopped) if stopped else "no recorded process was running"
            )
        return stopped

    def status(self) -> dict[str, Any]:
        """A summary for ``soberana dev status``."""
        state = self.state()
        if state is None:
            return {"stateDir": str(self.state_dir), "running": False}
        return {
            "stateDir": str(self.state_dir),
            "running": self.running(),
            "etcd": {"pid": state.etcd.pid, "alive": state.etcd.alive(), "port": state.etcd_port},
            "apiservers": {
                name: {
                    "pid": a.process.pid,
                    "alive": a.process.alive(),
                    "url": a.url,
                    "ready": a.process.alive() and self._ready(a.port),
                    "etcdPrefix": a.etcd_prefix,
                    "kubeconfig": a.kubeconfig,
                }
                for name, a in state.apiservers.items()
            },
        }


def _stop(record: ProcessRecord, grace: float = 10.0) -> bool:
    if not record.alive():
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.pid, signal.SIGTERM)
    try:
        wait_for(lambda: not record.alive(), timeout=grace, interval=0.1, what=record.name)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.pid, signal.SIGKILL)
        wait_for(lambda: not record.alive(), timeout=5, interval=0.1, what=record.name)
    return True


def _reap(pid: int) -> None:
    """Collect the exit status if the process is our own child, so that no zombie stays behind."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
