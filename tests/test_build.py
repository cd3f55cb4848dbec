"""The compiled module is present, and a missing build fails loudly with instructions."""
import importlib
import subprocess
import sys
import textwrap

import pytest

import bnnlab


def test_compiled_module_is_importable():
    from bnnlab import _kernels

    assert _kernels.__file__.endswith(".so")


def test_missing_build_explains_how_to_build(tmp_path):
    # Simulate a missing extension: block the import of bnnlab._kernels in a fresh interpreter.
    code = textwrap.dedent(
        """
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "bnnlab._kernels":
                    raise ImportError("No module named 'bnnlab._kernels'")
        sys.meta_path.insert(0, Block())
        import bnnlab
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "pip install -e ." in proc.stderr
    assert "bnnlab._kernels" in proc.stderr


def test_lazy_submodules_and_unknown_attribute():
    assert "kernels" in dir(bnnlab)
    assert bnnlab.kernels is importlib.import_module("bnnlab.kernels")
    with pytest.raises(AttributeError, match="not_a_module"):
        getattr(bnnlab, "not_a_module")  # noqa: B009 - the lazy __getattr__ under test


def test_every_public_module_is_listed_and_documented():
    """bnnlab/__init__ lists every public module (lazy attribute and the layer docstring)."""
    from pathlib import Path

    root = Path(bnnlab.__file__).parent
    public = {p.stem for p in root.glob("*.py") if not p.stem.startswith("_")}
    public |= {p.name for p in root.iterdir() if (p / "__init__.py").is_file()}
    public -= {"__main__"}
    assert public == set(bnnlab._SUBMODULES)
    for name in public:
        assert f"``bnnlab.{name}``" in bnnlab.__doc__, name
