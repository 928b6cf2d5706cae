"""Every relative link in docs/ points at a file that exists, and every #anchor at a heading."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(markdown: str) -> set[str]:
    """GitHub's anchors for the headings of a Markdown file."""
    found = set()
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


def links(markdown: str) -> list[str]:
    text = re.sub(r"```.*?```", "", markdown, flags=re.DOTALL)  # code blocks hold no links,
    text = re.sub(r"`[^`\n]*`", "", text)  # and neither do inline code spans
    return [target for target in LINK.findall(text) if "://" not in target]


@pytest.mark.parametrize("page", sorted(DOCS.glob("*.md")), ids=lambda page: page.name)
def test_relative_links_resolve(page: Path) -> None:
    markdown = page.read_text(encoding="utf-8")
    for target in links(markdown):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.exists(), f"{page.name}: link to missing {target}"
        if anchor:
            assert anchor in anchors(file.read_text(encoding="utf-8")), (
                f"{page.name}: no heading for #{anchor} in {file.name}"
            )


def test_the_anchor_rules_match_githubs() -> None:
    assert anchors("# Why is my model unplaced?\n## What the chart allows (RBAC)\n") == {
        "why-is-my-model-unplaced",
        "what-the-chart-allows-rbac",
    }
