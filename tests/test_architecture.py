"""The library's layout, checked on its source: imports point one way, no private
names cross modules, functions stay short (issue "Open core").

Every module under jaxnets/ is parsed with ``ast``; every import counts, including
those inside functions (a lazy import is still a dependency). ``from jaxnets.a.b import
x`` is an edge to ``jaxnets.a.b`` (or to ``jaxnets.a.b.x`` when that is a module), never
to the package ``jaxnets.a`` alone.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "jaxnets"
MAX_FUNCTION_LINES = 100
MAX_FIT_LINES = 60


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
TREES = {name: ast.parse(path.read_text(), filename=str(path)) for name, path in MODULES.items()}


def resolve(name: str, node: ast.ImportFrom) -> str:
    """The absolute module of a ``from ... import`` in module ``name``."""
    if not node.level:
        return node.module or ""
    package = name.split(".") if MODULES[name].name == "__init__.py" else name.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(name: str) -> list[tuple[str, str | None, int]]:
    """(imported module, imported name or None, line) for every jaxnets import of a module."""
    found = []
    for node in ast.walk(TREES[name]):
        if isinstance(node, ast.Import):
            found += [(alias.name, None, node.lineno) for alias in node.names if alias.name.startswith("jaxnets")]
        elif isinstance(node, ast.ImportFrom):
            source = resolve(name, node)
            if source.startswith("jaxnets"):
                for alias in node.names:
                    submodule = f"{source}.{alias.name}"
                    if submodule in MODULES:  # `from jaxnets import train` imports the module train
                        found.append((submodule, None, node.lineno))
                    else:
                        found.append((source, alias.name, node.lineno))
    return found


def graph() -> dict[str, set[str]]:
    return {name: {target for target, _, _ in imports(name) if target in MODULES and target != name}
            for name in MODULES}


def reaches(edges: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a path, or None (depth-first search with colours)."""
    colour, stack = {}, []

    def visit(node):
        colour[node] = "grey"
        stack.append(node)
        for nxt in sorted(edges[node]):
            if colour.get(nxt) == "grey":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in colour:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        colour[node] = "black"
        return None

    for node in sorted(edges):
        if node not in colour:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_parser_sees_lazy_and_relative_imports():
    tree = ast.parse("def f():\n    from jaxnets.train import fit\n")
    TREES["jaxnets._probe"], MODULES["jaxnets._probe"] = tree, PACKAGE / "_probe.py"
    try:
        assert imports("jaxnets._probe") == [("jaxnets.train", "fit", 2)]
    finally:
        del TREES["jaxnets._probe"], MODULES["jaxnets._probe"]
    probe = "from jaxnets.train import _largest_split\nfrom jaxnets import optim\noptim._fail('x')\n"
    TREES["jaxnets._probe"], MODULES["jaxnets._probe"] = ast.parse(probe), PACKAGE / "_probe.py"
    try:
        assert private_uses("jaxnets._probe") == ["jaxnets/_probe.py:1 from jaxnets.train import _largest_split",
                                                  "jaxnets/_probe.py:3 optim._fail"]
    finally:
        del TREES["jaxnets._probe"], MODULES["jaxnets._probe"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_import_graph_has_no_cycle():
    edges = graph()
    cycle = find_cycle(edges)
    # Every import that closes a cycle, with its place, so each can be fixed at once.
    closing = sorted({f"{MODULES[name].relative_to(ROOT)}:{line} imports {target}"
                      for name in MODULES for target, _, line in imports(name)
                      if target in edges and target != name and name in reaches(edges, target)})
    assert cycle is None, "import cycle: " + " -> ".join(cycle) + "\nimports on a cycle:\n" + "\n".join(closing)


def private_uses(name: str) -> list[str]:
    """``from jaxnets.x import _y`` and ``x._y`` on another jaxnets module, as 'file:line text'."""
    where = MODULES[name].relative_to(ROOT)
    found = [f"{where}:{line} from {source} import {imported}" for source, imported, line in imports(name)
             if imported and imported.startswith("_") and not imported.startswith("__") and source != name]
    # Names bound to jaxnets modules in this file (import jaxnets.x as y / from jaxnets import x).
    aliases = {}
    for node in ast.walk(TREES[name]):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("jaxnets"):
                    aliases[alias.asname or alias.name.split(".")[0]] = alias.asname and alias.name
        elif isinstance(node, ast.ImportFrom) and resolve(name, node).startswith("jaxnets"):
            for alias in node.names:
                if f"{resolve(name, node)}.{alias.name}" in MODULES:
                    aliases[alias.asname or alias.name] = f"{resolve(name, node)}.{alias.name}"
    for node in ast.walk(TREES[name]):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            base = node.value
            dotted = []
            while isinstance(base, ast.Attribute):
                dotted.insert(0, base.attr)
                base = base.value
            if isinstance(base, ast.Name) and base.id in aliases:
                found.append(f"{where}:{node.lineno} {'.'.join([base.id, *dotted, node.attr])}")
    return found


def test_no_module_uses_another_modules_private_names():
    found = [use for name in MODULES for use in private_uses(name)]
    assert not found, "private names used across modules:\n" + "\n".join(found)


def direct(name: str) -> set[str]:
    return graph()[name]


def test_parallel_never_imports_train():
    assert "jaxnets.train" not in reaches(graph(), "jaxnets.parallel")


@pytest.mark.parametrize("above", ["jaxnets.train", "jaxnets.parallel", "jaxnets.epochs", "jaxnets.steps",
                                   "jaxnets.population", "jaxnets.inference"])
def test_checkpoint_needs_only_the_state(above):
    assert above not in reaches(graph(), "jaxnets.checkpoint")


TRAINING = {"jaxnets.train", "jaxnets.parallel", "jaxnets.epochs", "jaxnets.steps", "jaxnets.evaluation",
            "jaxnets.population", "jaxnets.checkpoint", "jaxnets.resume", "jaxnets.config", "jaxnets.callbacks",
            "jaxnets.objective", "jaxnets.state", "jaxnets.inference", "jaxnets.compare", "jaxnets.optim",
            "jaxnets.losses"}


@pytest.mark.parametrize("model", sorted(m for m in MODULES if m.startswith("jaxnets.models")))
def test_models_know_nothing_of_training_or_data(model):
    bad = sorted(m for m in direct(model) if m in TRAINING or m.startswith(("jaxnets.data", "jaxnets.cli")))
    assert not bad, f"{model} imports {bad}"


def test_experiments_are_never_imported_by_the_library():
    found = [f"{MODULES[name].relative_to(ROOT)}:{node.lineno}" for name, tree in TREES.items()
             for node in ast.walk(tree)
             if isinstance(node, ast.Import) and any(a.name.startswith("experiments") for a in node.names)
             or isinstance(node, ast.ImportFrom) and (node.module or "").startswith("experiments")]
    assert not found


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("jaxnets.data")))
def test_data_knows_no_model_and_no_training(module):
    bad = sorted(m for m in direct(module) if m in TRAINING or m.startswith(("jaxnets.models", "jaxnets.cli")))
    assert not bad, f"{module} imports {bad}"


def functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def length(node: ast.AST) -> int:
    """Lines from ``def`` (decorators excluded) to the function's last line, docstring included."""
    return node.end_lineno - node.lineno + 1


def test_no_function_is_over_100_lines():
    long = [f"{MODULES[name].relative_to(ROOT)}:{node.lineno} {node.name} ({length(node)} lines)"
            for name, tree in TREES.items() for node in functions(tree) if length(node) > MAX_FUNCTION_LINES]
    assert not long, "functions over 100 lines:\n" + "\n".join(long)


def test_fit_is_under_60_lines():
    """Counted without its docstring: the body is what must stay a short list of named helpers."""
    fit = next(node for node in functions(TREES["jaxnets.train"]) if node.name == "fit")
    docstring = fit.body[0]
    assert isinstance(docstring, ast.Expr) and isinstance(docstring.value, ast.Constant)
    body = length(fit) - (docstring.end_lineno - docstring.lineno + 1)
    assert body < MAX_FIT_LINES, f"fit has {body} lines without its docstring"


def readme_layout() -> list[tuple[str, str]]:
    """(entry, its text) for each jaxnets/ entry of README.md's Layout block, in order;
    an entry's continuation lines (deeper indentation) are joined to its text."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## Layout", 1)[1].split("```\n", 2)[1]
    lines = block.split("jaxnets/\n", 1)[1].splitlines()
    entries: list[tuple[str, str]] = []
    for line in lines:
        if not line.startswith("  "):
            break
        if line.startswith("   "):
            entries[-1] = (entries[-1][0], entries[-1][1] + " " + line.strip())
        else:
            entry, _, rest = line.strip().partition(" ")
            entries.append((entry, rest.strip()))
    return entries


def top_level(module: str) -> str:
    """The README entry of a module: ``jaxnets.models.cnn`` -> ``models/``, ``jaxnets.train`` -> ``train.py``."""
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__.py"
    if (PACKAGE / parts[1]).is_dir():
        return parts[1] + "/"
    return parts[1] + ".py"


def test_readme_layout_lists_every_module_once():
    entries = [entry for entry, _ in readme_layout()]
    assert len(entries) == len(set(entries)), entries
    assert sorted(entries) == sorted({top_level(m) for m in MODULES})
    for entry, text in readme_layout():
        if entry.endswith("/"):  # a package's line names each of its modules
            names = {p.stem for p in (PACKAGE / entry).glob("*.py") if p.stem != "__init__"}
            words = set(text.replace(",", " ").replace("(", " ").replace(")", " ").split())
            assert names <= words, f"README Layout, {entry}: missing {sorted(names - words)}"


def test_readme_layout_order_is_the_import_order():
    """README promises: a module imports only modules listed above it."""
    order = {entry: i for i, (entry, _) in enumerate(readme_layout())}
    late = [f"{MODULES[name].relative_to(ROOT)}:{line} imports {target} (listed below it)"
            for name in MODULES for target, _, line in imports(name)
            if target in MODULES and top_level(target) != top_level(name)
            and order[top_level(target)] > order[top_level(name)]]
    assert not late, "\n".join(late)
