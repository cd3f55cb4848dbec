"""Notebooks 02 and 07–09 on a machine without Fashion-MNIST: a rendered message (what is missing,
the apt command) and a Download button instead of a ``FileNotFoundError`` traceback.

No network: ``$BNNLAB_FASHION_MNIST`` (:func:`bnnlab.data.fashion_mnist_dir`) points the system
folder at an empty directory and ``$BNNLAB_DATA`` the download cache at another; the button
downloads from a ``file://`` mirror of generated IDX files.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from bnnlab import data
from bnnlab.widgets import DataDownload, DataMissing, load_or_offer_download

ROOT = Path(__file__).resolve().parent.parent
NB_DIR = ROOT / "notebooks"
VIEW = "application/vnd.jupyter.widget-view+json"


@pytest.fixture
def no_fashion_mnist(tmp_path, monkeypatch):
    """A machine without the Debian package and with an empty download cache."""
    (tmp_path / "system").mkdir()
    monkeypatch.setenv("BNNLAB_FASHION_MNIST", str(tmp_path / "system"))
    monkeypatch.setenv("BNNLAB_DATA", str(tmp_path / "cache"))
    return tmp_path


def _mirror(folder: Path) -> dict[str, str]:
    """Four small IDX files in ``folder``; their SHA-256 by file name."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {"train_images": rng.integers(0, 256, (60, 28, 28), dtype=np.uint8),
              "train_labels": (np.arange(60) % 10).astype(np.uint8),
              "test_images": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
              "test_labels": (np.arange(20) % 10).astype(np.uint8)}
    return {f: hashlib.sha256(data.write_idx(folder / f, arrays[role]).read_bytes()).hexdigest()
            for role, f in data.IDX_FILES.items()}


def test_the_loader_says_what_to_do_instead_of_a_traceback(no_fashion_mnist, monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", shown.append)
    with pytest.raises(DataMissing) as info:
        load_or_offer_download(data.load_fashion_mnist, n_train=10)
    assert info.value._render_traceback_() == [f"DataMissing: {info.value}"]
    (panel,) = shown
    assert isinstance(panel, DataDownload)
    assert "sudo apt-get install dataset-fashion-mnist" in panel.message.value
    assert "load_fashion_mnist(download=True)" in panel.message.value
    assert panel.missing == [str(no_fashion_mnist / "system" / f) for f in data.IDX_FILES.values()]
    assert all(p in panel.message.value for p in panel.missing)
    assert str(no_fashion_mnist / "cache" / "fashion-mnist") in panel.message.value


def test_other_missing_files_are_not_hidden(no_fashion_mnist):
    def load():
        raise FileNotFoundError("no such file: weights.safetensors")

    with pytest.raises(FileNotFoundError, match="weights.safetensors"):
        load_or_offer_download(load)


def test_the_download_button_fills_the_cache_the_loader_reads(no_fashion_mnist, monkeypatch):
    sums = _mirror(no_fashion_mnist / "mirror")
    monkeypatch.setitem(data.KNOWN_FILES["fashion-mnist"], "sha256", sums)
    panel = DataDownload(base_url=(no_fashion_mnist / "mirror").as_uri() + "/")
    panel.button.click()
    assert panel.status.value.startswith("done: 4 files in ") and not panel.button.disabled
    ds = data.load_fashion_mnist(val_size=10)  # found in the cache now, no download asked
    assert ds.sizes == {"train": 50, "val": 10, "test": 20}


def test_a_failed_download_is_reported_in_the_panel(no_fashion_mnist):
    panel = DataDownload(base_url=(no_fashion_mnist / "empty-mirror").as_uri() + "/")
    panel.button.click()
    assert panel.status.value.startswith("download failed: could not download")
    assert not panel.button.disabled


@pytest.mark.parametrize("name", ["07_live_dashboard", "08_classroom_demo",
                                  *(pytest.param(n, marks=pytest.mark.slow)
                                    for n in ("02_binarize_a_model", "09_deploy_to_c"))])
def test_notebook_shows_the_download_offer_when_the_data_are_missing(no_fashion_mnist, name):
    """The notebook stops at its data cell with the panel and one line, not a traceback
    (a kernel start and the imports: 7 to 14 s each here)."""
    nb = nbformat.read(NB_DIR / f"{name}.ipynb", as_version=4)
    client = NotebookClient(nb, timeout=120, kernel_name="python3", store_widget_state=True,
                            resources={"metadata": {"path": str(NB_DIR)}})
    with pytest.raises(CellExecutionError):
        client.execute()
    client.set_widgets_metadata()  # what the panel showed (execute() stores it only on success)
    (cell,) = [c for c in nb.cells if c.cell_type == "code"
               and any(o.output_type == "error" for o in c.get("outputs", []))]
    assert "load_or_offer_download" in cell.source
    (err,) = [o for o in cell.outputs if o.output_type == "error"]
    assert err.ename == "DataMissing" and len(err.traceback) == 1, err.traceback
    assert "FileNotFoundError" not in json.dumps(cell.outputs)
    assert any(VIEW in o.get("data", {}) for o in cell.outputs), "the panel is not displayed"
    state = json.dumps(nb.metadata["widgets"])
    assert "sudo apt-get install dataset-fashion-mnist" in state and "Download Fashion-MNIST" in state
