"""bnnlab: a Jupyter-centric laboratory for binary neural networks.

Layers, bottom to top (each imports only from those below it):

* ``bnnlab.kernels`` – validated face of the compiled packed-bit kernels (``ext/``).
* ``bnnlab.functional``, ``bnnlab.quantizers`` – binarisation ops and their surrogate gradients.
* ``bnnlab.layers``, ``bnnlab.blocks``, ``bnnlab.models`` – binary layers, blocks, reference models.
* ``bnnlab.convert``, ``bnnlab.summary``, ``bnnlab.packed`` – binarise a float model, count bits
  and ops, run a trained model on the packed kernels, save it without pickle, and write it out
  as self-contained C99 (``bnnlab.packed.c_export``).
* ``bnnlab.data``, ``bnnlab.train``, ``bnnlab.bench``, ``bnnlab.bench_models`` – data sets, the
  fit loop (checkpoints, DDP under torchrun), benchmarks with the machine's own roofline, and the
  end-to-end CIFAR-size models (VGG-small, ResNet-18 Bi-Real) against their float twins.
* ``bnnlab.runs``, ``bnnlab.sweep`` – runs as pure functions of a JSON spec, the results store,
  sweeps on Dask.
* ``bnnlab.analysis``, ``bnnlab.plots``, ``bnnlab.widgets``, ``bnnlab.lessons`` – the lab: sign
  statistics, figures, dashboards and the notebooks' seeded experiments.
* ``bnnlab.experiments``, ``bnnlab.ladder``, ``bnnlab.figures`` – the report's experiments, the
  ablation ladder, and every figure, table and generated sentence of ``paper/report.tex``.

Notation (README, docstrings and paper share it): x, W latent input/weight; x_b, W_b their
binarised values in {-1, +1}; sign(0) = +1; c the STE clip value; beta SwishSign's sharpness;
alpha_o XNOR-Net's per-output-channel weight scale; tau_c ReActNet's RSign threshold;
gamma_c, zeta_c, kappa_c RPReLU's input shift, output shift and negative slope; K the reduction
length (C_in * k_h * k_w for a conv, in_features for a linear layer).

Submodules are imported lazily: ``import bnnlab`` is cheap, ``bnnlab.layers`` loads on first use.
"""
from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

from bnnlab._check_build import check_build as _check_build

_check_build()

try:
    __version__ = version("bnnlab")
except PackageNotFoundError:  # pragma: no cover - running from an uninstalled tree
    __version__ = "0.0.0+unknown"

_SUBMODULES = (
    "kernels", "functional", "quantizers", "layers", "blocks", "models", "convert",
    "summary", "packed", "data", "train", "bench", "bench_models", "runs", "sweep",
    "analysis", "plots", "widgets", "lessons", "figures", "experiments", "ladder",
)

__all__ = ["__version__", *_SUBMODULES]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"bnnlab.{name}")
    raise AttributeError(f"module 'bnnlab' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_SUBMODULES))
