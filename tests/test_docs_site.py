"""The documentation site builds in strict mode, lists every page, and names real API.

`mkdocs build --strict` fails on any warning: a broken link or anchor between pages, an
image whose file is missing, a page left out of `nav`, or an API reference (docs/api.md,
mkdocstrings) that no longer resolves. It runs in a subprocess with this interpreter's
MkDocs, into a temporary folder.
"""
import ast
import importlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
FIGURE_PAGES = sorted((DOCS / "experiments").glob("*.md")) + [DOCS / "optimizer_comparison.md"]
IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")
MAX_FIGURE_BYTES = 200_000  # committed PNGs stay small (experiments/common.py shrinks larger ones)


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    grouped = re.findall(r"<td><code>(?:<span[^>]*>)?(\w+,)(?:</span>)?</code></td>", api)
    assert not grouped, f"Args/Attributes items rendered with the names {grouped} (docs/griffe_doctests.py)"
    import jaxnets

    index = (tmp_path / "site" / "index.html").read_text()
    assert f"<title>jaxnets {jaxnets.__version__}</title>" in index
    for page in (tmp_path / "site").rglob("*.html"):
        visible = re.sub(r"<!--.*?-->", "", page.read_text(), flags=re.S)
        assert '<span class="k">assert</span>' not in visible or page.parent.name == "api", f"{page} shows an assert"
    for source in FIGURE_PAGES:
        for image in IMAGE.findall(source.read_text()):
            built = (tmp_path / "site" / (source.parent / image).resolve().relative_to(DOCS))
            assert built.is_file(), f"the site lacks {built}"


@pytest.mark.parametrize("page", FIGURE_PAGES, ids=lambda p: p.name)
def test_experiment_pages_show_figures_that_exist(page):
    images = IMAGE.findall(page.read_text())
    assert images, f"{page.relative_to(ROOT)} shows no figure"
    for image in images:
        target = (page.parent / image).resolve()
        assert target.is_file(), f"{page.relative_to(ROOT)} shows {image}, which does not exist"
        assert target.parent.parent == DOCS / "figures", f"{image}: figures live in docs/figures/NAME/"
        # The experiment that the page documents is the one that drew it (its --update-docs copies it).
        assert target.parent.name == page.stem, f"{page.name} shows another experiment's figure {image}"


def test_every_committed_figure_is_shown_and_small():
    shown = {(page.parent / image).resolve() for page in DOCS.rglob("*.md") for image in IMAGE.findall(page.read_text())}
    figures = sorted((DOCS / "figures").rglob("*"))
    assert figures
    for path in (p for p in figures if p.is_file()):
        assert path.suffix == ".png", path
        assert path.resolve() in shown, f"{path.relative_to(ROOT)} is on no page"
        assert path.stat().st_size < MAX_FIGURE_BYTES, f"{path.relative_to(ROOT)}: {path.stat().st_size} bytes"


def test_publish_figures_replaces_the_folder_and_shrinks_large_ones(tmp_path):
    pytest.importorskip("PIL")
    import numpy as np
    from PIL import Image

    from experiments.common import MAX_FIGURE_BYTES as limit, publish_figures

    out, figures = tmp_path / "results", tmp_path / "figures"
    out.mkdir()
    (figures / "demo").mkdir(parents=True)
    (figures / "demo" / "stale.png").write_bytes(b"old")
    small = np.zeros((20, 30, 3), np.uint8)
    Image.fromarray(small).save(out / "small.png")
    # Few colours (as a plot has) but a noisy layout: large as RGB, small with a palette.
    noisy = np.random.default_rng(0).integers(0, 4, (800, 800, 1)).astype(np.uint8) * np.array([60, 20, 40], np.uint8)
    Image.fromarray(noisy).save(out / "large.png")
    assert (out / "large.png").stat().st_size > limit
    published = publish_figures(out, "demo", figures)
    assert [p.name for p in published] == ["large.png", "small.png"]
    assert sorted(p.name for p in (figures / "demo").iterdir()) == ["large.png", "small.png"]
    assert (figures / "demo" / "small.png").read_bytes() == (out / "small.png").read_bytes()
    assert (figures / "demo" / "large.png").stat().st_size < limit
    with Image.open(figures / "demo" / "large.png") as image:  # the same picture, fewer bytes
        assert np.array_equal(np.asarray(image.convert("RGB")), noisy)


def _validation_block() -> str:
    text = (ROOT / "mkdocs.yml").read_text()
    return re.search(r"^validation:\n(?:  .*\n)+", text, flags=re.M).group(0)


def test_strict_build_fails_on_a_missing_image(tmp_path):
    """The site's own validation settings: an image link to a missing file fails --strict."""
    pytest.importorskip("mkdocs", reason="MkDocs is not installed (pip install -e '.[dev]')")
    (tmp_path / "docs" / "figures").mkdir(parents=True)
    (tmp_path / "docs" / "figures" / "here.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (tmp_path / "mkdocs.yml").write_text("site_name: t\nstrict: true\n" + _validation_block())

    def build(image: str) -> subprocess.CompletedProcess:
        (tmp_path / "docs" / "index.md").write_text(f"# t\n\n![a figure]({image})\n")
        return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                              cwd=tmp_path, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})

    assert build("figures/here.png").returncode == 0
    missing = build("figures/gone.png")
    assert missing.returncode != 0 and "figures/gone.png" in missing.stdout + missing.stderr


def test_site_name_carries_the_package_version():
    import jaxnets

    hooks = _load(DOCS / "site_hooks.py")
    assert hooks.package_version() == jaxnets.__version__
    assert hooks.on_config({"site_name": "jaxnets"})["site_name"] == f"jaxnets {jaxnets.__version__}"
    assert "docs/site_hooks.py" in (ROOT / "mkdocs.yml").read_text().split("\nhooks:")[1].split("\n\n")[0]


def test_grouped_docstring_items_become_one_item_per_name():
    """griffe would read "apply_fn, tx: ..." as the name "apply_fn," of type "tx"."""
    extension = _load(DOCS / "griffe_doctests.py")
    import doctest

    assert doctest.testmod(extension).failed == 0
    grouped = "Summary.\n\nAttributes:\n  step: the step.\n  apply_fn, tx: static parts.\n"
    text = extension.convert(grouped)
    names = re.findall(r"^\s+(\w+(?:,\s*\w+)*):", text.split("Attributes:")[1], flags=re.M)
    assert names == ["step", "apply_fn", "tx"], names
    nested = "Args:\n  a: text\n    x, y: inside a's text, not an item.\nReturns:\n  p, q: prose."
    assert extension.split_grouped_items(nested) == nested


def _durations(text: str) -> list[str]:
    return re.findall(r"\b\d+(?:\.\d+)?\s*(?:s|sec|seconds?|min|minutes?|h|hours?)\b|\ban hour\b", text)


def test_the_main_jobs_wall_time_is_only_the_generated_one():
    """The quick comparison's time is the one its run wrote into the page, never a typed claim."""
    page = (DOCS / "optimizer_comparison.md").read_text()
    typed = re.sub(r"<!-- (generated-[\w-]+):start -->.*?<!-- \1:end -->", "", page, flags=re.S)
    assert not _durations(typed), _durations(typed)
    quick = re.search(r"<!-- generated-quick:start -->\n(.*?)\n", page).group(1)
    assert re.match(r"Generated by `python -m experiments.optimizer_comparison --update-docs`: \d+ s wall", quick)
    import experiments.optimizer_comparison as job

    assert not _durations(job.__doc__), _durations(job.__doc__)
    import experiments.common as common

    assert not _durations(common.__doc__), _durations(common.__doc__)
    readme = (ROOT / "README.md").read_text()
    main_job = readme[readme.index("**Main job**"):readme.index("**Tests**")]
    assert not _durations(main_job), _durations(main_job)
