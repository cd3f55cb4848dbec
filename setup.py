"""Build of the private compiled module ``bnnlab._kernels`` from ``ext/``.

Everything else about the package lives in pyproject.toml.  The build adapts to its compiler:

* **Flags per compiler family**: GCC and clang (``-O3 -std=gnu11 -ffp-contract=off``), Apple
  clang (the same; OpenMP only through Homebrew's libomp, see below), MSVC
  (``/O2 /std:c11 /fp:precise``).  No ``-march``: the instruction set is chosen at run time.
* **OpenMP only where it works**: a small test program is compiled and linked with the
  compiler's OpenMP flags; if that fails the extension is built without OpenMP (bnnlab's own
  pthread pool still runs the kernels on several threads; on MSVC without OpenMP they run on
  one thread).  ``BNNLAB_OPENMP=1`` forces OpenMP (the build fails if it does not work),
  ``BNNLAB_OPENMP=0`` turns it off.
* ``BNNLAB_DEBUG_CYTHON=1`` builds with bounds checking and wraparound on (slow, for a
  debugging CI run).

The result of the probe is printed (``bnnlab build: compiler=..., openmp=...``).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

DEBUG = os.environ.get("BNNLAB_DEBUG_CYTHON", "0") == "1"
OPENMP_ENV = os.environ.get("BNNLAB_OPENMP", "auto").strip().lower()
if OPENMP_ENV not in ("auto", "0", "1"):
    raise SystemExit(f"BNNLAB_OPENMP must be 0, 1 or unset, got {OPENMP_ENV!r}")

directives = {
    "language_level": "3",
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
}

OMP_TEST = """
#include <omp.h>
#include <stdio.h>
int main(void) {
    int n = 0;
#pragma omp parallel reduction(+:n)
    n += 1;
    printf("%d %d\\n", n, omp_get_max_threads());
    return n < 1;
}
"""


def _family(compiler) -> str:
    """'msvc', 'apple-clang', 'clang' or 'gcc' (anything else GCC-like)."""
    if compiler.compiler_type == "msvc":
        return "msvc"
    cc = compiler.compiler_so[0] if getattr(compiler, "compiler_so", None) else "cc"
    try:
        out = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout  # noqa: S603
    except (OSError, subprocess.SubprocessError):
        out = ""
    if "Apple clang" in out or ("clang" in out and sys.platform == "darwin"):
        return "apple-clang"
    if "clang" in out:
        return "clang"
    return "gcc"


def _flags(family: str) -> tuple[list[str], list[str], list[str], list[str]]:
    """(compile, link, openmp compile, openmp link) flags of a compiler family."""
    if family == "msvc":
        return ["/O2", "/std:c11", "/fp:precise"], [], ["/openmp"], []
    base = ["-O3", "-std=gnu11", "-ffp-contract=off"]
    if family == "apple-clang":
        # Apple's clang has no bundled OpenMP; Homebrew's libomp provides omp.h and libomp.
        prefix = os.environ.get("BNNLAB_LIBOMP_PREFIX", "/opt/homebrew/opt/libomp")
        if not os.path.isdir(prefix):
            prefix = "/usr/local/opt/libomp"
        return (base, [], ["-Xpreprocessor", "-fopenmp", f"-I{prefix}/include"],
                [f"-L{prefix}/lib", "-lomp"])
    return base, [], ["-fopenmp"], ["-fopenmp"]


def _probe_openmp(compiler, cflags: list[str], lflags: list[str]) -> bool:
    """True if a small OpenMP program compiles and links with these flags."""
    tmp = tempfile.mkdtemp(prefix="bnnlab-omp-")
    try:
        src = os.path.join(tmp, "omp_test.c")
        with open(src, "w", encoding="utf-8") as fh:
            fh.write(OMP_TEST)
        objs = compiler.compile([src], output_dir=tmp, extra_postargs=cflags)
        compiler.link_executable(objs, "omp_test", output_dir=tmp, extra_postargs=lflags)
        return True
    except Exception:  # noqa: BLE001 - any compile or link error means "no OpenMP"
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class BuildExt(build_ext):
    """build_ext that picks flags for the compiler in use and probes OpenMP."""

    def build_extensions(self):
        family = _family(self.compiler)
        cflags, lflags, omp_c, omp_l = _flags(family)
        if OPENMP_ENV == "0":
            use_omp = False
        else:
            use_omp = _probe_openmp(self.compiler, cflags + omp_c, lflags + omp_l)
            if OPENMP_ENV == "1" and not use_omp:
                raise SystemExit(f"BNNLAB_OPENMP=1 but the {family} compiler cannot build an OpenMP "
                                 "program (install libomp / libgomp, or set BNNLAB_OPENMP=0)")
        if DEBUG:
            cflags = cflags + (["/Od", "/Zi"] if family == "msvc" else ["-O0", "-g"])
        print(f"bnnlab build: compiler={family}, openmp={'yes' if use_omp else 'no'}"
              f" (BNNLAB_OPENMP={OPENMP_ENV})", flush=True)
        for ext in self.extensions:
            ext.extra_compile_args = cflags + (omp_c if use_omp else [])
            ext.extra_link_args = lflags + (omp_l if use_omp else [])
        super().build_extensions()


ext = Extension(
    "bnnlab._kernels",
    sources=["ext/_kernels.pyx"],
    include_dirs=["ext"],
    depends=[os.path.join("ext", f) for f in os.listdir("ext") if f.endswith((".h", ".pxd"))],
)

setup(ext_modules=cythonize([ext], compiler_directives=directives, build_dir="build/cython"),
      cmdclass={"build_ext": BuildExt})
