"""The documentation site builds in strict mode, lists every page, and names real API.

`mkdocs build --strict` fails on any warning: a broken link or anchor between pages, a
page left out of `nav`, or an API reference (docs/api.md, mkdocstrings) that no longer
resolves. It runs in a subprocess with this interpreter's MkDocs, into a temporary folder.
"""
import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def nav_pages() -> list[str]:
    """Every page path named in mkdocs.yml's nav (a YAML list of `Title: page.md` entries)."""
    text = (ROOT / "mkdocs.yml").read_text()
    nav = text[text.index("\nnav:"):]
    return re.findall(r"^\s*-\s*(?:[^:\n]+:\s*)?([\w./-]+\.md)\s*$", nav, flags=re.M)


def test_every_page_is_in_the_nav():
    pages = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md") if "briefs" not in p.parts)
    listed = nav_pages()
    missing = sorted(set(pages) - set(listed))
    assert not missing, f"docs pages missing from mkdocs.yml nav: {missing}"
    stale = sorted(set(listed) - set(pages))
    assert not stale, f"mkdocs.yml nav names pages that do not exist: {stale}"
    assert len(listed) == len(set(listed)), "a page is listed twice in mkdocs.yml nav"


def test_getting_started_has_the_readme_commands():
    readme_commands = re.findall(r"```bash\n(python3 -m venv .venv && [^\n]+)\n```", (ROOT / "README.md").read_text())
    assert len(readme_commands) == 2, readme_commands
    index = (DOCS / "index.md").read_text()
    for command in readme_commands:
        assert command in index, f"docs/index.md lacks the README command: {command}"


def _resolve(dotted: str) -> object:
    parts = dotted.replace("jn.", "jaxnets.", 1).split(".") if dotted.startswith("jn.") else dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


@pytest.mark.parametrize("page", ["slides.md", "api.md", "index.md"])
def test_api_names_on_the_page_exist(page):
    """Every `jn.x.y` / `jaxnets.x.y` the page names (in code spans or ::: directives) resolves."""
    text = (DOCS / page).read_text()
    names = set(re.findall(r"(?<![\w.])((?:jn|jaxnets)(?:\.[A-Za-z_]\w*)+)", text))
    assert names
    broken = []
    for name in sorted(names):
        try:
            _resolve(name)
        except (ImportError, AttributeError):
            broken.append(name)
    assert not broken, f"{page} names API that does not exist: {broken}"


def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="MkDocs is not installed (pip install -e '.[dev]')")
    pytest.importorskip("material", reason="mkdocs-material is not installed (pip install -e '.[dev]')")
    pytest.importorskip("mkdocstrings_handlers.python", reason="mkdocstrings[python] is not installed (pip install -e '.[dev]')")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    log = result.stdout + result.stderr
    warnings = [line for line in log.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert result.returncode == 0, "mkdocs build --strict failed:\n" + "\n".join(warnings or log.splitlines()[-30:])
    assert not warnings, "\n".join(warnings)
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    for module in ("jaxnets.train", "jaxnets.optim", "jaxnets.population", "jaxnets.profiling"):
        assert f'id="{module}"' in api, f"API reference lacks {module}"
    assert "&gt;&gt;&gt;" in api and "<blockquote>" not in api, "doctest examples should render as code"
