"""Atomic result files: a killed run leaves the old file or the new one, never half of one.

Each write goes to a temporary file in the same directory, is flushed to disk, and
then renamed over the target (``os.replace`` is atomic on POSIX and Windows). The
file gets the permissions a plain ``open(path, "w")`` would give: ``0o666 & ~umask``
when new, its old permission bits when replaced.
"""
from __future__ import annotations

import json
import math
import os
import secrets
import stat
from pathlib import Path
from typing import Any, Iterable


def _open_temporary(path: Path) -> tuple[int, Path]:
    # O_CREAT with mode 0o666 lets the kernel apply the umask, exactly as open(path, "w")
    # does; mkstemp would force 0o600. O_EXCL plus a random name keeps it race-free.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder + fsync + rename).

    File mode: what ``open(path, "w")`` would give. A new file gets
    ``0o666 & ~umask`` (0644 under the usual umask 022); an existing file keeps
    its permission bits.

    >>> import stat, tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     old = os.umask(0o022)
    ...     try:
    ...         atomic_write_bytes(Path(d) / "a.bin", b"ok")
    ...     finally:
    ...         _ = os.umask(old)
    ...     oct(stat.S_IMODE((Path(d) / "a.bin").stat().st_mode)), (Path(d) / "a.bin").read_bytes()
    ('0o644', b'ok')
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _open_temporary(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            # Replacing a file: keep its permissions, as an in-place rewrite would.
            os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
        except FileNotFoundError:
            pass
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def to_jsonable(value: Any) -> Any:
    """NumPy/JAX scalars and arrays to plain Python; non-finite floats to None (valid JSON)."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return to_jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n")


def atomic_write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> None:
    """Write one JSON object per line, atomically (the whole file is rewritten)."""
    atomic_write_text(path, "".join(json.dumps(to_jsonable(r)) + "\n" for r in records))


def replace_marked_block(path: str | os.PathLike, name: str, text: str) -> None:
    """Replace the text between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` in a file, atomically.

    This is how generated numbers reach hand-written pages: the page keeps its prose,
    the script that measured the numbers writes them between the markers.
    """
    path = Path(path)
    content = path.read_text(encoding="utf-8")
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if content.count(start) != 1 or content.count(end) != 1 or content.index(start) > content.index(end):
        raise ValueError(f"{path}: got no single '{start}' ... '{end}' pair; allowed: a page with exactly one")
    head, rest = content.split(start, 1)
    _, tail = rest.split(end, 1)
    atomic_write_text(path, f"{head}{start}\n{text.strip()}\n{end}{tail}")
