"""Write crds/*.yaml from the typed API models (``make crds``).

The CRDs are generated, never edited by hand: tests/unit/test_crds.py fails when crds/ differs from
what this script would write. The Helm chart ships the same files in charts/soberana/crds/
(tests/unit/test_chart_crds.py keeps them byte-identical).
"""

from __future__ import annotations

from pathlib import Path

from soberana.operator.core.crds import crd_files

ROOT = Path(__file__).resolve().parent.parent
CRDS = ROOT / "crds"
CHART_CRDS = ROOT / "charts" / "soberana" / "crds"


def main() -> None:
    for folder in (CRDS, CHART_CRDS):
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in crd_files().items():
            (folder / name).write_text(text, encoding="utf-8")
            print(f"wrote {folder.relative_to(ROOT)}/{name}")


if __name__ == "__main__":
    main()
