"""Every ```python block in docs/ runs (blocks of one page share a namespace, in order)."""
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "briefs" not in p.parts)


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)


@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks(p)], ids=lambda p: str(p.relative_to(DOCS)))
def test_page_code_runs(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # pages that write files write them here
    namespace: dict = {"__name__": f"docs.{page.stem}"}
    for index, block in enumerate(python_blocks(page)):
        exec(compile(block, f"{page.name} block {index}", "exec"), namespace)
