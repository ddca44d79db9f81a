"""MkDocs hooks (mkdocs.yml ``hooks:``; not a docs page): the site shows the package's version.

The version is read from ``jaxnets/version.py`` at build time, so the site cannot show
another one (tests/test_docs_site.py compares it with ``jaxnets.__version__``). The file
is parsed, not imported: the build needs no JAX.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE_INIT = Path(__file__).resolve().parents[1] / "jaxnets" / "version.py"


def package_version(init: Path = PACKAGE_INIT) -> str:
    """The string assigned to ``__version__`` in ``jaxnets/version.py``."""
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__version__" for t in node.targets):
            return ast.literal_eval(node.value)
    raise ValueError(f"{init}: got no __version__ assignment; allowed: a module that sets __version__ = '...'")


def on_config(config):
    """Append the version to the site name (the header and every page title show it)."""
    config["site_name"] = f"{config['site_name']} {package_version()}"
    return config
