"""Every ```python block in docs/ runs (blocks of one page share a namespace, in order).

Pages whose blocks a dedicated test already runs (often checking printed output too)
are listed in DEDICATED and not run twice."""
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "briefs" not in p.parts)
DEDICATED = {  # page -> the test that runs its blocks
    "checkpoints.md": "tests/test_checkpoint.py", "models.md": "tests/test_models.py",
    "losses.md": "tests/test_losses.py", "text.md": "tests/test_text.py",
    "architectures/cnn.md": "tests/test_cnn.py", "architectures/regularization.md": "tests/test_cnn.py",
    "architectures/transformer.md": "tests/test_transformer.py",
}


def test_dedicated_tests_exist():
    root = DOCS.parent
    for page, test in DEDICATED.items():
        assert (DOCS / page).exists() and page in (root / test).read_text().replace("docs/", "") or \
            page.split("/")[-1] in (root / test).read_text(), (page, test)


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)


@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks(p) and str(p.relative_to(DOCS)) not in DEDICATED],
                         ids=lambda p: str(p.relative_to(DOCS)))
def test_page_code_runs(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # pages that write files write them here
    namespace: dict = {"__name__": f"docs.{page.stem}"}
    for index, block in enumerate(python_blocks(page)):
        exec(compile(block, f"{page.name} block {index}", "exec"), namespace)
