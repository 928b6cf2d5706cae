"""Run ``soberana operator`` as a real subprocess against a test cluster, and read its log."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from soberana.operator.devenv.controlplane import wait_for


class OperatorProcess:
    """One operator process; ``restart`` stops it and starts a new one with the same arguments."""

    def __init__(self, kubeconfig: Path, log: Path, *extra: str) -> None:
        self.kubeconfig, self.log, self.extra = kubeconfig, log, extra
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"\n==== start {self.starts} ====\n".encode())
            out.flush()
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "soberana.operator.cli",
                    "operator",
                    "--kubeconfig",
                    str(self.kubeconfig),
                    "--debounce",
                    "0.2",
                    "--verbose",
                    *self.extra,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def this_run(self) -> str:
        """The log of the current process only."""
        text = self.log.read_text(errors="replace")
        return text.rsplit(f"==== start {self.starts} ====", 1)[-1]

    def wait_for_log(self, needle: str, timeout: float = 60) -> None:
        def seen() -> bool:
            assert self.process is not None and self.process.poll() is None, (
                f"the operator exited:\n{self.this_run()[-3000:]}"
            )
            return needle in self.this_run()

        wait_for(seen, timeout=timeout, what=f"operator log line {needle!r}")
