"""Fail loudly, with instructions, when the compiled module is missing or stale."""

_MESSAGE = """
bnnlab's compiled kernels (bnnlab._kernels, built from ext/_kernels.pyx) could not be
imported: {error}

bnnlab has no silent pure-Python fallback.  Build the extension from the repository root:

    pip install -e .                 # or: pip install .   (needs gcc with OpenMP)
    # after editing ext/*.pyx or ext/*.h, run it again (or: python setup.py build_ext --inplace)

If you are running from a source checkout without installing, the import picks up the
uncompiled folder instead of an installed copy: install it first.
"""


def check_build() -> None:
    try:
        from bnnlab import _kernels  # noqa: F401
    except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
        raise ImportError(_MESSAGE.format(error=exc)) from exc
