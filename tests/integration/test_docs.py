"""The documentation: the site builds with ``--strict`` offline, and every Python example
in ``docs/*.md`` and ``README.md`` runs.

A block is skipped only when the HTML comment ``<!-- docs-test: skip -->`` stands on the
line just above it, and only for examples that need a GPU (they must mention ``cuda``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SKIP = "<!-- docs-test: skip -->"
FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


def doc_pages() -> list[Path]:
    return [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]


def python_blocks(page: Path) -> list[tuple[int, str, bool]]:
    """(line number, code, skipped) for every ```python block of a page."""
    text = page.read_text(encoding="utf-8")
    out = []
    for m in FENCE.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        out.append((line, m.group(1), before == SKIP))
    return out


PAGES_WITH_CODE = [p for p in doc_pages() if python_blocks(p)]


def test_the_pages_with_examples_are_found() -> None:
    names = {p.name for p in PAGES_WITH_CODE}
    assert {"quickstart.md", "concepts.md", "README.md"} <= names


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=lambda p: p.name)
def test_every_python_example_runs(page: Path, tmp_path: Path) -> None:
    # GIVEN every python block of the page, in order, as one program (later blocks may
    # use names from earlier ones, as a reader would)
    blocks = python_blocks(page)
    program = []
    for line, code, skipped in blocks:
        if skipped:
            assert "cuda" in code, f"{page.name}:{line}: only GPU examples may be skipped"
            continue
        program.append(f"# --- {page.name}:{line}\n{code}")
    script = tmp_path / "page.py"
    script.write_text("\n".join(program), encoding="utf-8")
    # WHEN it runs in a fresh interpreter, in an empty folder
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    # THEN it succeeds
    assert proc.returncode == 0, f"{page.name} examples failed:\n{proc.stderr[-3000:]}"


@pytest.mark.slow
def test_site_builds_strictly_with_no_network(tmp_path: Path) -> None:
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    pages = {p.parent.name for p in site.glob("*/index.html")}
    assert {"quickstart", "concepts", "strategies", "cli", "api"} <= pages
    # the API reference was generated from the docstrings
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    assert "inspect_checkpoint" in api and "interval_ms" in api
    # no page asks the network for fonts or scripts
    for html in site.rglob("*.html"):
        text = html.read_text(encoding="utf-8")
        assert "fonts.googleapis.com" not in text, html
        assert not re.search(r"<script[^>]+src=\"https?://", text), html
