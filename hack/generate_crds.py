"""Write crds/*.yaml from the typed API models (``make crds``).

The CRDs are generated, never edited by hand: tests/unit/test_crds.py fails when crds/ differs from
what this script would write.
"""

from __future__ import annotations

from pathlib import Path

from soberana.operator.core.crds import crd_files

CRDS = Path(__file__).resolve().parent.parent / "crds"


def main() -> None:
    CRDS.mkdir(exist_ok=True)
    for name, text in crd_files().items():
        (CRDS / name).write_text(text, encoding="utf-8")
        print(f"wrote crds/{name}")


if __name__ == "__main__":
    main()
