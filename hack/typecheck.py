"""Run mypy (strict) over the soberana packages, the tests, hack/ and bench/.

mypy resolves imports from folders, not through setuptools' editable-install import hook, so it
cannot see that ``operator/`` is installed as ``soberana.operator``. This script lays out a tree of
symlinks with the installed shape (``soberana/operator -> ../../operator``) and checks that.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREE = ROOT / "build" / "typecheck"
FOLDERS = {"operator": ROOT / "operator", "serving": ROOT / "serving"}


def main() -> int:
    package = TREE / "soberana"
    package.mkdir(parents=True, exist_ok=True)
    for name, target in FOLDERS.items():
        link = package / name
        if not link.is_symlink():
            link.symlink_to(os.path.relpath(target, package))
    extra = [
        str(p) for p in (ROOT / "tests", ROOT / "hack", ROOT / "bench") if any(p.rglob("*.py"))
    ]
    command = [
        sys.executable,
        "-m",
        "mypy",
        "--explicit-package-bases",
        str(package),
        *extra,
    ]
    env = {**os.environ, "MYPYPATH": os.pathsep.join(str(p) for p in (TREE, ROOT, ROOT / "bench"))}
    return subprocess.run(command, cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    raise SystemExit(main())
