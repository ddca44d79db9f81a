"""Griffe extension for the API reference (mkdocs.yml loads it; it is not a docs page).

jaxnets docstrings are written for ``help()`` and doctest: bare ``>>>`` examples,
RST literals (``x``), roles (:func:`f`), ``::`` before literal blocks, and parameter
lists wrapped over two lines. Rendered
as Markdown, ``>>>`` would become nested block quotes and ``[0.5, 0.731]`` a link,
so before the docstrings are parsed this turns each bare doctest run into a
```pycon fence and the RST markup into Markdown code spans. Related names documented
together ("a, b: text" under Args or Attributes) become one item per name with the same
text: griffe reads an item's name up to the first space, so "a, b" would be the name
"a," with the type "b". Docstrings themselves are untouched (the doctests still run
from the source).
"""
from __future__ import annotations

import re

import griffe

_SECTION = re.compile(r"^(\s*)([A-Z][A-Za-z ]*):\s*$")
_ROLE = re.compile(r":(?:func|class|meth|mod|data|attr|obj|exc|py:\w+):`~?([^`]+)`")
_LITERAL = re.compile(r"``([^`\n]+)``")
#: Sections whose items are "name: text" (griffe's Google parser).
_ITEM_SECTIONS = {"Args", "Arguments", "Parameters", "Attributes", "Keyword Args", "Keyword Arguments",
                  "Other Parameters"}
_GROUPED_ITEM = re.compile(r"^(\s*)([A-Za-z_]\w*(?:\s*,\s*[A-Za-z_]\w*)+)\s*:(.*)$")


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
    return split_grouped_items("\n".join(out))


def split_grouped_items(text: str) -> str:
    r"""Repeat an "a, b: text" item of an Args/Attributes section (with its continuation lines) per name.

    >>> print(split_grouped_items("Args:\n  l1, l2: penalties\n    on weights.\n  seed: a seed."))
    Args:
      l1: penalties
        on weights.
      l2: penalties
        on weights.
      seed: a seed.
    """
    lines = text.splitlines()
    out: list[str] = []
    section_indent = None  # indentation of the current Args/Attributes header, if inside one
    item_indent = None  # indentation of that section's items (its first line's)
    i = 0
    while i < len(lines):
        line = lines[i]
        indent = len(line) - len(line.lstrip())
        header = _SECTION.match(line)
        if header:
            section_indent = indent if header.group(2) in _ITEM_SECTIONS else None
            item_indent = None
        elif line.strip() and section_indent is not None and indent <= section_indent:
            section_indent = None
        elif line.strip() and section_indent is not None and item_indent is None:
            item_indent = indent
        item = _GROUPED_ITEM.match(line) if section_indent is not None and indent == item_indent else None
        if item is None:
            out.append(line)
            i += 1
            continue
        i += 1
        continuation = []
        while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
            continuation.append(lines[i])
            i += 1
        while continuation and not continuation[-1].strip():  # a blank line ends the item
            i -= 1
            continuation.pop()
        for name in item.group(2).split(","):
            out += [f"{item.group(1)}{name.strip()}:{item.group(3)}", *continuation]
    return "\n".join(out)


class DoctestFences(griffe.Extension):
    """Rewrite each docstring with :func:`convert` as soon as its object is loaded."""

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = convert(obj.docstring.value)
