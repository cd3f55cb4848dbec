"""Portable builds of the kernels (issue 15): the C-level kernel test on several toolchains,
and a clang build of the extension without OpenMP that passes tests/test_kernels.py.

Each toolchain is a separate test that is skipped, with the missing tool named, when the
toolchain is not installed (Debian: gcc-aarch64-linux-gnu, qemu-user, mingw-w64, clang).
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "ext" / "test_cross.sh"

TOOLS = {
    "gcc": ("gcc",),
    "clang": ("clang",),
    "aarch64": ("aarch64-linux-gnu-gcc", "qemu-aarch64"),
    "mingw": ("x86_64-w64-mingw32-gcc",),
}


def _missing(tools):
    return [t for t in tools if shutil.which(t) is None]


@pytest.mark.slow
@pytest.mark.parametrize("target", list(TOOLS))
def test_c_kernel_test_on_toolchain(target, tmp_path):
    missing = _missing(("bash",) + TOOLS[target])
    if missing:
        pytest.skip(f"{target}: {', '.join(missing)} not installed")
    env = dict(os.environ, BNNLAB_CROSS_OUT=str(tmp_path), BNNLAB_CROSS_STRICT="1")
    proc = subprocess.run(["bash", str(SCRIPT), target], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert f"== {target}: ok" in out
    if target == "mingw":
        assert (tmp_path / "ctest-mingw.exe").stat().st_size > 0
    else:
        assert ", 0 failed" in out
    if target == "aarch64":   # the NEON level was compiled, detected and exercised
        assert "levels available: portable neon" in out and "neon     2 thread(s): ok" in out


def _copy_sources(dst: Path) -> None:
    """The files a wheel build needs (not build outputs, not the in-place .so)."""
    for name in ("setup.py", "pyproject.toml", "README.md", "LICENSE", "MANIFEST.in"):
        shutil.copy2(ROOT / name, dst / name)
    shutil.copytree(ROOT / "ext", dst / "ext", ignore=shutil.ignore_patterns("*.so", "*.o"))
    shutil.copytree(ROOT / "bnnlab", dst / "bnnlab",
                    ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"))


@pytest.mark.slow
@pytest.mark.long
def test_clang_wheel_without_openmp_passes_the_kernel_tests(tmp_path):
    missing = _missing(("clang",))
    if missing:
        pytest.skip("clang not installed")
    src, dist, site, run = (tmp_path / d for d in ("src", "dist", "site", "run"))
    for d in (src, dist, site, run):
        d.mkdir()
    _copy_sources(src)
    env = dict(os.environ, CC="clang", LDSHARED="clang -shared", BNNLAB_OPENMP="0",
               PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.pop("PYTHONPATH", None)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-build-isolation", "--no-deps",
                            "-v", "-w", str(dist)], cwd=src, env=env, capture_output=True, text=True,
                           timeout=900)
    log = build.stdout + build.stderr
    assert build.returncode == 0, log[-4000:]
    assert "compiler=clang, openmp=no" in log
    assert "-fopenmp" not in log.split("bnnlab build:")[1]
    wheels = list(dist.glob("bnnlab-*.whl"))
    assert len(wheels) == 1
    inst = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(site),
                           str(wheels[0])], env=env, capture_output=True, text=True, timeout=300)
    assert inst.returncode == 0, inst.stderr[-2000:]
    # run the kernel tests from a directory holding only the tests, against the wheel
    shutil.copytree(ROOT / "tests", run / "tests", ignore=shutil.ignore_patterns("__pycache__", "e2e"))
    env_run = dict(os.environ, PYTHONPATH=str(site))
    check = subprocess.run([sys.executable, "-c", "import bnnlab._kernels as k, bnnlab.kernels as bk; "
                            "print(k.__file__); print(bk.kernel_info()['openmp'])"],
                           cwd=run, env=env_run, capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr
    so_path, openmp = check.stdout.split()
    assert so_path.startswith(str(site)) and openmp == "False"
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                            "tests/test_kernels.py"], cwd=run, env=env_run, capture_output=True,
                           text=True, timeout=900)
    assert tests.returncode == 0, (tests.stdout + tests.stderr)[-4000:]
    assert " passed" in tests.stdout
