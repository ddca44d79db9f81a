"""Atomic result files: content, permissions under the umask, and no half-written leftovers."""
import json
import os
import stat
from pathlib import Path

import pytest

from jaxnets import io as jio
from jaxnets import report


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


class _Umask:
    """Set the process umask for a block and always put the old one back."""

    def __init__(self, mask: int):
        self.mask = mask

    def __enter__(self):
        self.old = os.umask(self.mask)

    def __exit__(self, *exc):
        os.umask(self.old)


def _marked(path: Path) -> None:
    path.write_text("head\n<!-- table:start -->\nold\n<!-- table:end -->\ntail\n")


# name, how to write `path`, what the file must then hold
WRITERS = [
    ("bytes", lambda p: jio.atomic_write_bytes(p, b"\x00\xff"), lambda p: p.read_bytes() == b"\x00\xff"),
    ("text", lambda p: jio.atomic_write_text(p, "caf\u00e9\n"), lambda p: p.read_bytes() == b"caf\xc3\xa9\n"),
    ("json", lambda p: jio.atomic_write_json(p, {"a": float("nan"), "b": [1, 2]}),
     lambda p: json.loads(p.read_text()) == {"a": None, "b": [1, 2]}),
    ("jsonl", lambda p: jio.atomic_write_jsonl(p, [{"i": 0}, {"i": 1}]),
     lambda p: p.read_text() == '{"i": 0}\n{"i": 1}\n'),
]


@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o077, 0o600), (0o027, 0o640)])
@pytest.mark.parametrize("name, write, check", WRITERS, ids=[w[0] for w in WRITERS])
def test_new_file_gets_the_mode_plain_open_would_give(tmp_path, name, write, check, umask, expected):
    target = tmp_path / "sub" / f"out.{name}"
    with _Umask(umask):
        write(target)
        reference = tmp_path / f"plain.{name}"
        with open(reference, "w"):
            pass
    assert _mode(target) == expected == _mode(reference)
    assert check(target)
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]  # no temporary left


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_replacing_a_file_keeps_its_mode_like_an_in_place_rewrite(tmp_path, umask):
    page = tmp_path / "page.md"
    _marked(page)
    os.chmod(page, 0o640)
    with _Umask(umask):
        jio.replace_marked_block(page, "table", "new")
        jio.atomic_write_json(tmp_path / "r.json", {})
        os.chmod(tmp_path / "r.json", 0o604)
        jio.atomic_write_json(tmp_path / "r.json", {"x": 1})
    assert page.read_text() == "head\n<!-- table:start -->\nnew\n<!-- table:end -->\ntail\n"
    assert _mode(page) == 0o640 and _mode(tmp_path / "r.json") == 0o604


def test_report_files_follow_the_umask(tmp_path):
    # the PNG figures and report.md all go through the atomic writer
    with _Umask(0o027):
        paths = report.write_report(tmp_path, report.demo_results())
    assert sorted(p.name for p in paths.values()) == ["curves.png", "report.md", "sensitivity.png", "summary.png"]
    for path in paths.values():
        assert _mode(path) == 0o640, path.name
    assert paths["curves"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "results.json"
    target.write_text("old\n")
    with pytest.raises(TypeError):
        jio.atomic_write_bytes(target, "not bytes")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_temporary_is_renamed_from_the_same_folder(tmp_path, monkeypatch):
    renames = []
    real = os.replace

    def spy(src, dst):
        renames.append((Path(src), Path(dst)))
        real(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    jio.atomic_write_text(tmp_path / "a.txt", "x")
    (src, dst), = renames
    assert src.parent == dst.parent == tmp_path and src.name.startswith(".a.txt.") and src.suffix == ".tmp"
