"""Builds jaxnets' optional C++ kernels (jaxnets/kernels/*.cc); everything else is in pyproject.toml.

The kernels are XLA FFI handlers, compiled against the headers that jaxlib ships (a build
requirement) for the installing machine's CPU (-march=native where the compiler takes it).
The extension is optional: where no C++20 compiler is found, pip still installs jaxnets and
its "patches" path runs the JAX kernels (jaxnets.kernels.native.UNAVAILABLE says why).
"""
import os

import jaxlib
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

FLAGS = ["-std=c++20", "-O3", "-g0"]


class BuildForThisCpu(build_ext):
    """Try -march=native first: the handlers' loops vectorize for this CPU's widest vectors."""

    def build_extension(self, ext):
        try:
            ext.extra_compile_args = FLAGS + ["-march=native"]
            super().build_extension(ext)
        except Exception:  # noqa: BLE001 (a compiler without -march=native: build for the baseline ISA)
            ext.extra_compile_args = FLAGS
            super().build_extension(ext)


setup(
    ext_modules=[Extension(
        "jaxnets.kernels._cpu_kernels", ["jaxnets/kernels/conv_pool.cc", "jaxnets/kernels/winograd.cc"],
        depends=["jaxnets/kernels/cpu_blocks.h"], language="c++", optional=True,
        include_dirs=[os.path.join(os.path.dirname(jaxlib.__file__), "include")])],
    cmdclass={"build_ext": BuildForThisCpu},
)
