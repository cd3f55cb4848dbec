"""The compiled module is present, and a missing build fails loudly with instructions."""
import subprocess
import sys
import textwrap

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


def test_version_and_lazy_submodules():
    assert bnnlab.__version__ == "0.1.0"
    assert "kernels" in dir(bnnlab)
    try:
        bnnlab.not_a_module
    except AttributeError as exc:
        assert "not_a_module" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("unknown attribute must raise AttributeError")
