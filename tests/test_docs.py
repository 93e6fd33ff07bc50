"""The documentation: the MkDocs site builds with --strict (broken links, anchors and pages left out of the nav
fail it), and every relative link in README.md and docs/*.md points at a file that exists."""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

# [text](target) and ![alt](target), target up to the first space or ')'; reference-style definitions too.
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.MULTILINE)
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+)(?!`).+?(?<!`)\1", re.DOTALL)


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def links(text: str) -> list[str]:
    """Link targets of a Markdown text, code blocks and code spans left out (their brackets are not links)."""
    text = CODE_SPAN.sub("", FENCE.sub("", text))
    return INLINE_LINK.findall(text) + REFERENCE_DEF.findall(text)


def is_external(target: str) -> bool:
    return re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) is not None or target.startswith("//")


def test_links_parser_sees_links_and_skips_code():
    text = "[a](docs/x.md) ![p](docs/p.png#frag) `[no](nope.md)`\n```\n[no](nope2.md)\n```\n[r]: docs/y.md\n"
    assert links(text) == ["docs/x.md", "docs/p.png#frag", "docs/y.md"]


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_at_existing_files(path):
    """A relative link must name a file of the checkout (README: a path into docs/ or the repository, so it works
    on GitHub; docs pages: another page or picture in docs/, so it works in the site too)."""
    broken, outside = [], []
    for target in links(path.read_text(encoding="utf-8")):
        if is_external(target) or target.startswith("#"):
            continue
        assert not target.startswith("/"), f"{path.name}: absolute link {target} (use a relative path)"
        file_part = unquote(target.split("#", 1)[0].split("?", 1)[0])
        resolved = (path.parent / file_part).resolve()
        if not resolved.exists():
            broken.append(target)
        elif path.parent == DOCS and DOCS not in resolved.parents:
            outside.append(target)  # the site holds docs/ only: such a link breaks in the built site
    assert not broken, f"{path.relative_to(ROOT)}: links to missing files: {broken}"
    assert not outside, f"{path.relative_to(ROOT)}: links leaving docs/ (broken in the site): {outside}"


def test_readme_is_short_and_points_into_docs():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.encode("utf-8")) < 16_000, "README.md is meant to stay short: put details into docs/"
    assert any(t.startswith("docs/") for t in links(text))


def test_every_docs_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    listed = set(re.findall(r":\s*([\w./-]+\.md)\s*$", nav, re.MULTILINE))
    pages = {p.name for p in DOCS.glob("*.md")}
    assert pages - listed == set(), f"docs pages missing from mkdocs.yml's nav: {sorted(pages - listed)}"
    assert listed - pages == set(), f"nav entries without a page: {sorted(listed - pages)}"


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None,
                    reason="mkdocs not installed (it is in requirements.lock; pip install -e '.[docs]')")
def test_mkdocs_strict_build(tmp_path):
    site = tmp_path / "site"
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                             "-d", str(site)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (site / "index.html").is_file() and (site / "results.html").is_file()
