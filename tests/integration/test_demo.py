"""``soberana demo --once`` runs every step on this machine and exits 0 only if all worked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_demo_once(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "KUBECONFIG"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "soberana.operator.cli",
            "demo",
            "--once",
            "--state-dir",
            str(tmp_path / "demo"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        env={**env, "PYTHONUNBUFFERED": "1"},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "Every step worked" in output
    # what a person reads: the placement, why not elsewhere, who served, and residency held
    assert "no site in allowed jurisdictions [DE]" in output
    assert "served by santiago-local" in output
    assert "(no_compliant_site)" in output
    # the chat model: streamed from the edge box, failed over to it, refused outside BR
    assert "smol-chat from pe-south -> served by lima-edge-local" in output
    assert "smol-chat from br-southeast -> served by lima-edge-local" in output
    assert "smol-chat from Brazil, data must stay in BR -> HTTP 503 (no_compliant_site)" in output
    # everything the demo started is gone
    leftovers = subprocess.run(
        ["pgrep", "-f", str(tmp_path)], capture_output=True, text=True
    ).stdout.split()
    assert leftovers == [], f"processes left behind: {leftovers}"
