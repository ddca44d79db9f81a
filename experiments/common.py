"""What every course experiment shares: its command line, where it writes, and how.

An experiment module defines ``run(quick: bool, out: Path) -> dict`` (the numbers it
measured, also written to ``out/results.json``) and ends with

    if __name__ == "__main__":
        sys.exit(main_for(run, "name", __doc__))

so that ``python -m experiments.NAME`` runs the fast default, ``--full`` the long
setting, ``--out DIR`` picks the output directory (default ``results/NAME``) and
``--update-docs`` copies the headline table, with the run's wall time, into its docs page
between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``, and the run's figures into
``docs/figures/NAME/`` (:func:`publish_figures`), where the page shows them. No run time
is typed anywhere: the generated block records the measured one.
"""
from __future__ import annotations

import argparse
import io
import time
from pathlib import Path
from typing import Any, Callable

from jaxnets import figures
from jaxnets.host_memory import retain_freed_memory
from jaxnets.io import atomic_write_bytes, atomic_write_json, atomic_write_text, replace_marked_block

ROOT = Path(__file__).resolve().parents[1]
#: Where the docs pages find the experiments' figures (committed, unlike ``results/``).
FIGURES = ROOT / "docs" / "figures"
#: A published figure larger than this is shrunk to a 256-colour palette (they are committed).
MAX_FIGURE_BYTES = 200_000


def save_json(out: Path, results: dict[str, Any]) -> Path:
    """``out/results.json``, atomically (NaN/inf become null)."""
    path = Path(out) / "results.json"
    atomic_write_json(path, results)
    return path


def save_figure(fig, path: Path) -> Path:
    """A matplotlib figure as PNG, atomically; closes the figure (``jaxnets.figures.save_figure``)."""
    return figures.save_figure(fig, path)


def publish_figures(out: Path, name: str, figures: Path = FIGURES) -> list[Path]:
    """Copy the run's figures ``out/*.png`` to ``figures/NAME/``, where the docs page links them.

    The folder is emptied first: a figure the experiment no longer draws disappears, and
    a page that still shows it then fails ``mkdocs build --strict`` (a link to a missing file).
    A PNG over ``MAX_FIGURE_BYTES`` is stored with a 256-colour palette (plots use few colours).

    Returns:
      The published files, sorted.
    """
    from PIL import Image

    target = Path(figures) / name
    target.mkdir(parents=True, exist_ok=True)
    for old in target.glob("*.png"):
        old.unlink()
    published = []
    for source in sorted(Path(out).glob("*.png")):
        data = source.read_bytes()
        if len(data) > MAX_FIGURE_BYTES:
            buffer = io.BytesIO()
            with Image.open(source) as image:
                image.convert("RGB").quantize(256).save(buffer, format="PNG", optimize=True)
            data = buffer.getvalue()
        atomic_write_bytes(target / source.name, data)
        published.append(target / source.name)
    return published


def save_text(path: Path, text: str) -> Path:
    atomic_write_text(path, text)
    return Path(path)


def figure(*args, **kwargs):
    """``plt.subplots`` with the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table; floats are printed with 4 significant digits."""
    def cell(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def main_for(run: Callable[..., dict], name: str, doc: str | None,
             summary: Callable[[dict], str] | None = None) -> int:
    """The command line every experiment shares; returns the exit status."""
    parser = argparse.ArgumentParser(prog=f"python -m experiments.{name}", description=(doc or "").split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="the long setting (the default is the fast one)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / name, help="output directory")
    parser.add_argument("--update-docs", action="store_true",
                        help=f"write the headline table into docs/experiments/{name}.md between its markers")
    args = parser.parse_args()
    retain_freed_memory()  # an experiment owns its process (jaxnets.host_memory)
    started = time.perf_counter()
    results = run(quick=not args.full, out=args.out)
    seconds = time.perf_counter() - started
    text = summary(results) if summary is not None else ""
    if text:
        print(text)
    print(f"wrote {args.out} ({seconds:.0f} s)")
    if args.update_docs:
        for path in publish_figures(args.out, name):
            print(f"published {path.relative_to(ROOT)} ({path.stat().st_size // 1000} kB)")
    if args.update_docs and text:
        setting = "--full" if args.full else "default"
        replace_marked_block(ROOT / "docs" / "experiments" / f"{name}.md", name,
                             f"Generated by `python -m experiments.{name}{' --full' if args.full else ''} "
                             f"--update-docs` ({setting} setting, {seconds:.0f} s):\n\n{text}")
    return 0
