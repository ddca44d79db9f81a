"""Griffe extension for the API reference (mkdocs.yml loads it; it is not a docs page).

jaxnets docstrings are written for ``help()`` and doctest: bare ``>>>`` examples,
RST literals (``x``), roles (:func:`f`), ``::`` before literal blocks, and parameter
lists wrapped over two lines. Rendered
as Markdown, ``>>>`` would become nested block quotes and ``[0.5, 0.731]`` a link,
so before the docstrings are parsed this turns each bare doctest run into a
```pycon fence and the RST markup into Markdown code spans. Docstrings themselves
are untouched (the doctests still run from the source).
"""
from __future__ import annotations

import re

import griffe

_SECTION = re.compile(r"^(\s*)([A-Z][A-Za-z ]*):\s*$")
_ROLE = re.compile(r":(?:func|class|meth|mod|data|attr|obj|exc|py:\w+):`~?([^`]+)`")
_LITERAL = re.compile(r"``([^`\n]+)``")


def _markdown_text(line: str) -> str:
    line = _ROLE.sub(r"`\1`", line)
    line = _LITERAL.sub(r"`\1`", line)
    if line.rstrip().endswith("::"):
        line = line.rstrip()[:-1]
    return line


def convert(text: str) -> str:
    """Fence bare doctest runs (a ``>>>`` line up to the next blank line) and convert RST markup."""
    out: list[str] = []
    lines = text.splitlines()
    examples_indent = None  # indentation of an "Examples:" header griffe handles itself
    fenced = False
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.lstrip()
        indent = len(line) - len(stripped)
        if stripped.startswith("```"):
            fenced = not fenced
        header = _SECTION.match(line)
        if header:
            examples_indent = indent if header.group(2) in ("Examples", "Example") else None
        elif stripped and examples_indent is not None and indent <= examples_indent:
            examples_indent = None
        # A list of names wrapped over two lines ("a, b,\n  c: as in X") is one item.
        while (not fenced and stripped.endswith(",") and ":" not in stripped and i + 1 < len(lines)
               and lines[i + 1].strip() and len(lines[i + 1]) - len(lines[i + 1].lstrip()) == indent):
            i += 1
            line = line.rstrip() + " " + lines[i].strip()
            stripped = line.lstrip()
        if not fenced and stripped.startswith(">>>") and examples_indent is None:
            block = []
            while i < len(lines) and lines[i].strip():
                block.append(lines[i])
                i += 1
            pad = " " * indent
            out += [pad + "```pycon", *block, pad + "```"]
            continue
        out.append(line if fenced or examples_indent is not None else _markdown_text(line))
        i += 1
    return "\n".join(out)


class DoctestFences(griffe.Extension):
    """Rewrite each docstring with :func:`convert` as soon as its object is loaded."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = convert(obj.docstring.value)
