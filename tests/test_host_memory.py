"""retain_freed_memory: a freed large block is reused without page faults (glibc only)."""
import json
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jaxnets.host_memory import retain_freed_memory

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"

PROBE = textwrap.dedent("""
    import json, resource
    import numpy as np
    from jaxnets.host_memory import retain_freed_memory

    def faults():  # page faults taken while filling a fresh 64 MiB block
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = np.empty(64 * 2**20, np.uint8)
        block.fill(1)
        del block
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    default = [faults() for _ in range(3)]
    applied = retain_freed_memory()
    faults()  # the first block after the change is mapped once, then kept
    print(json.dumps({"applied": applied, "default": default, "retained": [faults() for _ in range(3)]}))
""")


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_a_freed_block_is_reused_without_page_faults():
    # A fresh process: the setting is process-wide and must not leak into the test run.
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=True)
    result = json.loads(out.stdout)
    assert result["applied"] is True
    # glibc maps and unmaps a 64 MiB block every time: at least 32 faults (64 MiB in 2 MiB
    # transparent huge pages, which the kernel grants only sometimes), far more with small pages.
    assert min(result["default"]) >= 32
    assert max(result["retained"]) < min(result["default"]) / 10


def test_bad_threshold_is_a_one_line_error():
    for bad in (0, -5, 2**31, 1.5, True, "1G"):
        with pytest.raises(ValueError, match=r"^threshold_bytes: got .*; allowed: an int from 1 to 2147483647$"):
            retain_freed_memory(bad)


def test_doctests():
    import doctest

    from jaxnets import host_memory

    result = doctest.testmod(host_memory)
    assert result.attempted > 0 and result.failed == 0


IMPORT_PROBE = textwrap.dedent("""
    import ctypes, json
    calls = []
    load_library = ctypes.CDLL

    class Spy:  # stands in for glibc's mallopt: records each call, changes nothing
        argtypes = restype = None

        def __call__(self, *args):
            calls.append(args)
            return 1

    class Library:
        mallopt = Spy()

    # Only the process's own C library (CDLL(None), where mallopt lives) is replaced.
    ctypes.CDLL = lambda name, *args, **kwargs: Library() if name is None else load_library(name, *args, **kwargs)
    import jaxnets, jaxnets.models, jaxnets.kernels, jaxnets.cli  # noqa: E401,F401
    from jaxnets.host_memory import retain_freed_memory
    on_import = list(calls)
    retain_freed_memory()
    print(json.dumps({"on_import": on_import, "on_call": calls}))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="retain_freed_memory acts on Linux only")
def test_importing_jaxnets_does_not_change_the_allocator():
    """retain_freed_memory is an entry point's choice: importing the library never calls mallopt."""
    root = Path(__file__).resolve().parents[1]  # "python -c" imports this checkout's jaxnets from its cwd
    out = subprocess.run([sys.executable, "-c", IMPORT_PROBE], capture_output=True, text=True, timeout=300,
                         check=True, cwd=root)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["on_import"] == []
    # The spy does see a call: the probe would notice one made on import.
    assert [call[0] for call in result["on_call"]] == [-3, -1]
