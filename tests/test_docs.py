"""Every ```python block in docs/ runs (blocks of one page share a namespace, in order).

Pages whose blocks a dedicated test already runs (often checking printed output too)
are listed in DEDICATED and not run twice.

A page shows readers code and printed results, not test assertions: checks go in a
hidden block right after the block they check,

    <!-- checked by the tests after the block above; not shown on the site
    ```python
    assert ...
    ```
    -->

which every runner executes in order (it is a ```python block to the regular expression)
and neither the site nor GitHub displays (an HTML comment)."""
import ast
import inspect
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


HIDDEN = re.compile(r"<!-- checked by the tests after the block above; not shown on the site\n```python\n.*?```\n-->",
                    flags=re.S)
README = DOCS.parent / "README.md"


def visible_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", re.sub(r"<!--.*?-->", "", text, flags=re.S), flags=re.S)


@pytest.mark.parametrize("page", [*PAGES, README], ids=lambda p: p.name if p == README else str(p.relative_to(DOCS)))
def test_shown_code_has_no_assert(page):
    text = page.read_text()
    for index, block in enumerate(visible_blocks(text)):
        asserts = [node.lineno for node in ast.walk(ast.parse(block)) if isinstance(node, ast.Assert)]
        assert not asserts, f"{page.name} block {index} shows assert statements (lines {asserts}): hide them"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_hidden_checks_follow_a_shown_block_and_are_run(page):
    text = page.read_text()
    comments_with_code = [c for c in re.findall(r"<!--.*?-->", text, flags=re.S) if "```python" in c]
    hidden = HIDDEN.findall(text)
    assert len(hidden) == len(comments_with_code), f"{page.name}: a hidden block is not in the checked form"
    for block in hidden:
        before = text[:text.index(block)]
        assert before.rstrip().endswith("```"), f"{page.name}: a hidden check does not follow a code block"
        assert block.split("```python\n")[1].split("```")[0] in python_blocks(page)  # what the runners execute


def test_fit_has_no_per_step_callback():
    """docs/execution.md: fit's hooks run after evaluated epochs; per-step work needs your own loop."""
    import jaxnets

    hooks = [name for name in inspect.signature(jaxnets.fit).parameters if name.startswith(("on_", "callback"))]
    assert hooks == ["callbacks", "on_epoch_end"]
    seen = []
    data = jaxnets.data.load("xor")
    jaxnets.fit(jaxnets.models.MLP(hidden=(4,), output_dim=1), data, jaxnets.optim.create("sgd", 0.1),
                jaxnets.TrainConfig(epochs=4, batch_size=2, eval_every=2, loop="python"),
                callbacks=[lambda epoch, metrics, state: seen.append(int(state.step))])
    assert seen == [4, 8]  # after evaluated epochs 1 and 3 (2 steps per epoch), never per step
    page = (DOCS / "execution.md").read_text()
    assert "per-step callback" not in page.replace("no per-step callback", "")
