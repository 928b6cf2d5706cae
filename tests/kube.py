"""Test helpers for talking to a real API server through the real kubectl and helm binaries."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class Cluster:
    """One real API server as the tests see it: a kubeconfig plus the kubectl and helm to use."""

    kubeconfig: Path
    kubectl_path: Path
    helm_path: Path

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl; with ``check`` a failure raises with kubectl's own stderr in the message."""
        result = subprocess.run(
            [str(self.kubectl_path), f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
        return result

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.helm_path), f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
        return result

    def apply(self, *documents: dict[str, Any], namespace: str | None = None) -> None:
        args = ["apply", "-f", "-"] + ([f"--namespace={namespace}"] if namespace else [])
        self.kubectl(*args, input=yaml.safe_dump_all(documents))

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        args = ["get", kind, name, "-o", "json"] + (
            [f"--namespace={namespace}"] if namespace else []
        )
        loaded: dict[str, Any] = json.loads(self.kubectl(*args).stdout)
        return loaded
