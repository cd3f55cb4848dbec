"""Build of the private compiled module ``bnnlab._kernels`` from ``ext/``.

Everything else about the package lives in pyproject.toml.  Set
``BNNLAB_DEBUG_CYTHON=1`` to build with bounds checking and wraparound on
(slow, for a debugging CI run).
"""
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("BNNLAB_DEBUG_CYTHON", "0") == "1"

directives = {
    "language_level": "3",
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
}

ext = Extension(
    "bnnlab._kernels",
    sources=["ext/_kernels.pyx"],
    include_dirs=["ext"],
    depends=[os.path.join("ext", f) for f in os.listdir("ext") if f.endswith((".h", ".pxd"))],
    extra_compile_args=["-O3", "-fopenmp", "-std=gnu11", "-ffp-contract=off"] + (["-O0", "-g"] if DEBUG else []),
    extra_link_args=["-fopenmp"],
)

setup(ext_modules=cythonize([ext], compiler_directives=directives, build_dir="build/cython"))
