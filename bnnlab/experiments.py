r"""The report's experiments: train and evaluate the model families, write JSON results.

Run ``python -m bnnlab experiments --quick`` (CI: 1.4 minutes on a shared two-core machine) or
``python -m bnnlab experiments --full`` (the report's numbers: 15.5 minutes there). Each
experiment writes one JSON file into the output directory (default
``paper/generated/results``); :mod:`bnnlab.figures` reads them and writes the report's figures,
tables and ``macros.tex``. No number of the report is typed by hand: they all come from these
files.

Every training is a run of :mod:`bnnlab.runs` (runner ``"experiment"``,
:func:`experiment_runner`, a pure function of its JSON spec: :func:`experiment_specs`). Its
record, and for architecture runs the selected weights (``<key>.weights.safetensors``), go to
the results store ``<out>/store``; a rerun executes only the missing runs (resume). The runs
execute serially in this process by default, or as tasks of Dask with ``--workers N`` (an
embedded ``LocalCluster``) or ``--scheduler tcp://host:8786`` (an existing cluster). The JSON
files are then built from the store alone (:func:`assemble`): ``noise`` and ``costs`` load the
stored weights into models rebuilt from the specs.

==================  ===========================================================================
experiment          what it measures (file ``<name>.json``)
==================  ===========================================================================
``architectures``   float MLP, BinaryNet, XNOR-Net, XNOR-Net++, ABC-Net (the float MLP converted
                    by :func:`bnnlab.convert.binarize`), a float CNN, Bi-Real and ReActNet
                    (:mod:`bnnlab.models`) on digits and Fashion-MNIST; also ``signs.json``:
                    sign statistics, flip ratio and gradient mismatch recorded while training
``ablation``        the activation binariser of the BinaryNet MLP: STE, ApproxSign, SwishSign,
                    stochastic sign
``noise``           test accuracy under additive Gaussian input noise of std :math:`\sigma`
``regression``      float and binary MLPs fitting :math:`f(x) = \sin 3x + 0.3x` on
                    :math:`[-2, 2]`; sup, :math:`L^1` and :math:`L^2` errors of :math:`\hat f - f`
``costs``           :func:`bnnlab.summary.summary` (cost model) next to the bytes of the weights
                    actually packed by :func:`bnnlab.kernels.pack_signs`, and the measured
                    forward time of the simulated (float) binary layers in torch
==================  ===========================================================================

Protocol (the same for every variant of one comparison):

* data come in train / validation / test parts (:mod:`bnnlab.data`); a seed moves the
  initialisation, the shuffling and the train/validation partition, never the test set;
* every variant of a data set gets the same budget: Adam, the same learning rate with a
  cosine decay to 0, the same batch size and number of epochs;
* model selection uses the validation part only: the weights of the epoch with the best
  validation accuracy (lowest validation MSE for regression; the earliest on ties) are
  restored (:class:`KeepBest`), and the test part is evaluated **once**, on those weights;
* results are reported as mean ± sample standard deviation (``ddof=1``) over the seeds
  (:func:`aggregate`).

Fashion-MNIST images are average-pooled 2×2 to 14×14 (``pool``) so the small CNNs train in
minutes on a laptop CPU; every variant sees the same inputs. torch runs on one thread by
default (``--threads``): on a shared two-core machine two OpenMP threads slowed training
down by up to 30× through contention.

The ``paper`` profile (``--paper --data-root PATH``, the folder of CIFAR-10's binary files or
``cifar-10-binary.tar.gz`` itself) is different: CIFAR-10 runs of
:data:`PAPER_MODELS` as specs of :mod:`bnnlab.runs`, swept on Dask (:func:`run_sweep`;
``--scheduler`` for a cluster) into ``<out>/runs/``; :func:`paper_table` builds ``paper.json``
from those records only, so an interrupted sweep resumes and records from several machines merge.

Examples::

    $ python -m bnnlab experiments --quick --out paper/generated/results
    $ python -m bnnlab experiments --full --workers 2          # the runs on a LocalCluster
    $ python -m bnnlab experiments --full --scheduler tcp://head:8786
    $ python -m bnnlab experiments --full --bench      # also runs `python -m bnnlab bench --json`
    $ python -m bnnlab experiments --only regression --epochs 5 --seeds 1
    $ python -m bnnlab experiments --paper --data-root ~/cifar-10-batches-bin --out runs/paper \
          --scheduler tcp://head:8786
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bnnlab.runs import ResultStore, spec_key
from bnnlab.sweep import run_sweep
from bnnlab.train import KeepBest

__all__ = [
    "SCHEMA",
    "VARIANTS",
    "Variant",
    "DatasetSpec",
    "RegressionSpec",
    "Profile",
    "PROFILES",
    "EXPERIMENTS",
    "ABLATION_QUANTIZERS",
    "build_model",
    "build_regression_model",
    "regression_target",
    "function_errors",
    "aggregate",
    "select_best",
    "KeepBest",
    "load_dataset",
    "pool_split",
    "run",
    "assemble",
    "main",
    "RUNNER",
    "WEIGHTS",
    "RUN_KINDS",
    "train_one",
    "architecture_spec",
    "ablation_spec",
    "regression_spec",
    "experiment_specs",
    "experiment_runner",
    "load_model",
    "PAPER_MODELS",
    "PAPER_BUDGET",
    "paper_specs",
    "paper_table",
    "run_paper",
    "run_sweep",
    "ResultStore",
]

#: Identifies the layout of the JSON files; bump when it changes.
SCHEMA = "bnnlab.experiments/1"
DEFAULT_OUT = Path("paper") / "generated" / "results"


# =============================================================================================
# Variants and models
# =============================================================================================
@dataclass(frozen=True)
class Variant:
    """One model family of the comparison.

    Attributes:
        key: short name used in the JSON files.
        label: name printed in the report.
        kind: ``"mlp"`` (the reference MLP, binarised by :func:`bnnlab.convert.binarize`) or
            ``"cnn"`` (a model of :mod:`bnnlab.models`).
        layer: ``layer=`` family of :func:`bnnlab.convert.binarize` (MLPs), ``None`` for float.
        binary: whether the model has binary layers.
        cite: BibTeX key of the paper.
    """

    key: str
    label: str
    kind: str
    layer: str | None
    binary: bool
    cite: str = ""


VARIANTS: dict[str, Variant] = {v.key: v for v in (
    Variant("float", "Float MLP", "mlp", None, False),
    Variant("binary", "BinaryNet", "mlp", "binary", True, "hubara2016binarized"),
    Variant("xnor", "XNOR-Net", "mlp", "xnor", True, "rastegari2016xnor"),
    Variant("xnor++", "XNOR-Net++", "mlp", "xnor++", True, "bulat2019xnorpp"),
    Variant("abc", "ABC-Net", "mlp", "abc", True, "lin2017abc"),
    Variant("float-cnn", "Float CNN", "cnn", None, False),
    Variant("bireal", "Bi-Real", "cnn", None, True, "liu2018bireal"),
    Variant("reactnet", "ReActNet", "cnn", None, True, "liu2020reactnet"),
)}

#: Activation binarisers of the ablation: key -> (label, ``input_quantizer`` spec).
ABLATION_QUANTIZERS: dict[str, tuple[str, str]] = {
    "ste_sign": ("STE sign", "ste_sign"),
    "approx_sign": ("ApproxSign", "approx_sign"),
    "swish_sign": ("SwishSign", "swish_sign"),
    "stochastic_sign": ("Stochastic sign", "stochastic_sign"),
}


def build_model(variant: str, input_shape: Sequence[int], num_classes: int, *,
                hidden: Sequence[int] = (256, 256, 256), width: int = 16,
                input_quantizer: Any = "ste_sign", weight_clip: float | None = 1.0) -> nn.Module:
    """Build one variant (untrained) for inputs of ``input_shape`` (one sample).

    MLP variants start from the float MLP ``binary_mlp(..., binary=False,
    activation="hardtanh")`` (hardtanh, so that the sign a binary layer takes of its input is
    the sign of the float activation) and are binarised by :func:`bnnlab.convert.binarize`
    (first and last layers stay float, ``weight_clip`` on the latent weights). CNN variants
    are :func:`bnnlab.models.tiny_bireal` (its float twin for ``"float-cnn"``) and
    :func:`bnnlab.models.tiny_reactnet`.

    Args:
        variant: a key of :data:`VARIANTS`.
        input_shape: shape of one sample, e.g. ``(1, 14, 14)``.
        num_classes: outputs (1 for regression).
        hidden: widths of the MLP (``len(hidden) - 1`` binary layers). Default: three of 256.
        width: base width of the CNNs. Default: ``16``.
        input_quantizer: activation binariser of the binary MLP layers. Default: ``"ste_sign"``.
        weight_clip: latent-weight clip of the binary MLP layers. Default: ``1.0``.
    """
    from bnnlab import convert, models

    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {list(VARIANTS)}, got {variant!r}")
    v = VARIANTS[variant]
    shape = tuple(int(s) for s in input_shape)
    if v.kind == "mlp":
        net = models.binary_mlp(int(np.prod(shape)), hidden=tuple(hidden),
                                num_classes=num_classes, binary=False, activation="hardtanh")
        if v.layer is None:
            return net
        return convert.binarize(net, layer=v.layer, input_quantizer=input_quantizer,
                                layer_kwargs={"weight_clip": weight_clip})
    if len(shape) != 3:
        raise ValueError(f"input_shape must be (C, H, W) for {variant!r}, got {shape}")
    if variant == "reactnet":
        return models.tiny_reactnet(shape[0], num_classes, width=width)
    return models.tiny_bireal(shape[0], num_classes, width=width, binary=v.binary)


def build_regression_model(variant: str, hidden: Sequence[int] = (256, 256, 256), *,
                           domain: tuple[float, float] = (-2.0, 2.0)) -> nn.Sequential:
    r"""The 1-D regression MLP: :func:`bnnlab.models.binary_mlp` with one input and one output.

    ``"float"`` is the float twin (ReLU), ``"binary"`` the BNN (STE sign activations, weight
    clip 1); both are built from the same seed, so their first layers start equal. The input
    :math:`x` is normalised by the first BatchNorm, so every unit's threshold (binary: where
    its sign flips; float: its ReLU kink) sits where that BatchNorm's shift :math:`\beta_i`
    puts it: :math:`x = \bar x - \beta_i \sigma_x / \gamma_i`. With torch's default
    :math:`\beta_i = 0` they would all start at the centre of the domain, and a binary network
    could then only output a step there; so the shifts are drawn uniformly from
    :math:`[-0.98\sqrt3, 0.98\sqrt3]`, which spreads the thresholds over 98\,% of a domain
    sampled uniformly (:math:`(b - a) / 2 = \sqrt3\,\sigma_x`).

    Args:
        variant: ``"float"`` or ``"binary"``.
        hidden: hidden widths (``len(hidden) - 1`` binary layers).
        domain: the input interval (only to document the spread; the data define it).
    """
    from bnnlab import models

    if variant not in ("float", "binary"):
        raise ValueError(f"variant must be 'float' or 'binary', got {variant!r}")
    net = models.binary_mlp(1, hidden=tuple(hidden), num_classes=1, binary=variant == "binary")
    bn = net[2]
    if not isinstance(bn, nn.BatchNorm1d):   # pragma: no cover - models.binary_mlp changed
        raise RuntimeError("binary_mlp no longer starts with Flatten, Linear, BatchNorm1d")
    spread = 0.98 * math.sqrt(3.0)
    with torch.no_grad():
        bn.bias.uniform_(-spread, spread)
    return net


# =============================================================================================
# Data
# =============================================================================================
@dataclass(frozen=True)
class DatasetSpec:
    """Data and training budget of one data set (the same for every variant).

    Attributes:
        name: ``"digits"`` or ``"fashion-mnist"``.
        epochs, batch_size, lr: the budget (Adam, cosine decay of ``lr`` to 0 over the run).
        n_train: training images (``None``: all that the loader gives).
        val_size: validation part (count or fraction, as the loader takes it).
        n_test: test images (Fashion-MNIST: a fixed subset of the official 10,000).
        pool: average-pooling factor of the images (1: none).
        hidden: widths of the MLPs; width: base width of the CNNs.
    """

    name: str
    epochs: int
    batch_size: int
    lr: float
    n_train: int | None = None
    val_size: float | int = 0.2
    n_test: int | None = None
    pool: int = 1
    hidden: tuple[int, ...] = (256, 256, 256)
    width: int = 16


def pool_split(split, factor: int):
    """Average-pool the images of every part of ``split`` by ``factor`` (a new Split)."""
    from bnnlab.data import Split

    if factor == 1:
        return split

    def pool(pair):
        x, y = pair
        return F.avg_pool2d(x, factor), y

    info = dict(split.info, pool=factor)
    return Split(pool(split.train), pool(split.val), pool(split.test), name=split.name,
                 num_classes=split.num_classes, classes=split.classes, info=info)


def load_dataset(spec: DatasetSpec, seed: int):
    """The :class:`bnnlab.data.Split` of ``spec`` for one seed (images, not flattened)."""
    from bnnlab import data

    if spec.name == "digits":
        split = data.load_digits(val_size=spec.val_size, n_train=spec.n_train, seed=seed)
    elif spec.name == "fashion-mnist":
        split = data.load_fashion_mnist(val_size=spec.val_size, n_train=spec.n_train,
                                        n_test=spec.n_test, seed=seed)
    else:
        raise ValueError(f"spec.name must be 'digits' or 'fashion-mnist', got {spec.name!r}")
    return pool_split(split, spec.pool)


# =============================================================================================
# Protocol helpers: model selection, aggregation, function errors
# =============================================================================================
def select_best(values: Sequence[float], mode: str = "max") -> int:
    """Index of the best finite value (the first one on ties).

    Args:
        values: one metric per epoch (e.g. validation accuracy).
        mode: ``"max"`` (accuracies) or ``"min"`` (losses).

    Raises:
        ValueError: ``mode`` unknown, or no finite value.
    """
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    best, best_i = math.nan, -1
    for i, v in enumerate(values):
        v = float(v)
        if math.isnan(v):
            continue
        if best_i < 0 or (v > best if mode == "max" else v < best):
            best, best_i = v, i
    if best_i < 0:
        raise ValueError("values has no finite entry")
    return best_i


def aggregate(values: Iterable[float]) -> dict[str, float]:
    """Mean, sample standard deviation (``ddof=1``), count, min and max of finite values.

    With one value the standard deviation is ``nan`` (undefined), not 0.
    """
    v = np.asarray([float(x) for x in values if x is not None], dtype=np.float64)
    v = v[np.isfinite(v)]
    n = int(v.size)
    if n == 0:
        return {"mean": math.nan, "sd": math.nan, "n": 0, "min": math.nan, "max": math.nan}
    sd = float(v.std(ddof=1)) if n > 1 else math.nan
    return {"mean": float(v.mean()), "sd": sd, "n": n, "min": float(v.min()),
            "max": float(v.max())}


def regression_target(x):
    r""":math:`f(x) = \sin(3x) + 0.3x`: the noise-free curve of
    :func:`bnnlab.data.make_regression`."""
    return np.sin(3.0 * np.asarray(x, dtype=np.float64)) + 0.3 * np.asarray(x, dtype=np.float64)


def function_errors(x, err) -> dict[str, float]:
    r"""Sup, :math:`L^1` and :math:`L^2` norms of an error function sampled on a grid.

    .. math::
        \lVert e\rVert_\infty = \max_i |e(x_i)|, \qquad
        \lVert e\rVert_1 = \int_a^b |e(x)|\,dx, \qquad
        \lVert e\rVert_2 = \Big(\int_a^b e(x)^2\,dx\Big)^{1/2}

    with both integrals by the trapezoid rule on the (increasing, not necessarily uniform)
    grid ``x`` covering :math:`[a, b]`. Use a fine grid: a binary network's output is piecewise
    constant, and the rule's error at each jump is about (grid step) × (jump).

    Args:
        x: increasing 1-D grid.
        err: :math:`e(x_i)`, same length.

    Returns:
        ``{"sup", "l1", "l2"}``.
    """
    x = np.asarray(x, dtype=np.float64)
    e = np.asarray(err, dtype=np.float64)
    if x.ndim != 1 or x.size < 2 or e.shape != x.shape:
        raise ValueError("x and err must be 1-D arrays of the same length >= 2")
    if not np.all(np.diff(x) > 0):
        raise ValueError("x must be strictly increasing")
    return {"sup": float(np.max(np.abs(e))),
            "l1": float(np.trapezoid(np.abs(e), x)),
            "l2": float(math.sqrt(np.trapezoid(e * e, x)))}


# =============================================================================================
# Profiles
# =============================================================================================
@dataclass(frozen=True)
class RegressionSpec:
    """1-D regression: data size, budget and MLP widths (float and binary share them)."""

    n_samples: int = 512
    noise: float = 0.1
    epochs: int = 100
    batch_size: int = 64
    lr: float = 3e-3
    hidden: tuple[int, ...] = (256, 256, 256)
    grid_points: int = 20001
    plot_points: int = 801
    domain: tuple[float, float] = (-2.0, 2.0)


@dataclass(frozen=True)
class Profile:
    """Everything a run does; :data:`PROFILES` holds ``quick`` and ``full``.

    Attributes:
        seeds: seeds of every experiment.
        datasets: ``{name: DatasetSpec}`` of the architecture comparison.
        variants: keys of :data:`VARIANTS` compared.
        ablation_dataset, ablation_quantizers: data set and binarisers of the ablation.
        noise_dataset, noise_sigmas: data set and noise levels of the robustness sweep.
        noise_n_test: the sweep uses the first ``noise_n_test`` test images (``None``: all).
        signs_dataset: data set whose first-seed runs record sign statistics, flip ratio and
            gradient mismatch.
        probe_size: training images in the probe batch of those recordings.
        regression: :class:`RegressionSpec`.
        timing_batch, timing_repeats: the forward-time measurement of ``costs``.
    """

    name: str
    seeds: tuple[int, ...]
    datasets: dict[str, DatasetSpec]
    variants: tuple[str, ...] = tuple(VARIANTS)
    ablation_dataset: str = "fashion-mnist"
    ablation_quantizers: tuple[str, ...] = tuple(ABLATION_QUANTIZERS)
    noise_dataset: str = "fashion-mnist"
    noise_sigmas: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
    noise_n_test: int | None = 2000
    signs_dataset: str = "fashion-mnist"
    probe_size: int = 256
    regression: RegressionSpec = field(default_factory=RegressionSpec)
    timing_batch: int = 256
    timing_repeats: int = 15

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(dataclasses.asdict(self))


PROFILES: dict[str, Profile] = {
    "quick": Profile(
        name="quick", seeds=(0, 1),
        datasets={
            "digits": DatasetSpec("digits", epochs=5, batch_size=64, lr=3e-3),
            "fashion-mnist": DatasetSpec("fashion-mnist", epochs=3, batch_size=128, lr=2e-3,
                                         n_train=1500, val_size=500, n_test=1000, pool=2),
        },
        noise_sigmas=(0.0, 0.1, 0.2, 0.4), noise_n_test=500,
        regression=RegressionSpec(n_samples=256, epochs=40),
        timing_repeats=5,
    ),
    "full": Profile(
        name="full", seeds=(0, 1, 2),
        datasets={
            "digits": DatasetSpec("digits", epochs=20, batch_size=64, lr=3e-3),
            "fashion-mnist": DatasetSpec("fashion-mnist", epochs=8, batch_size=128, lr=2e-3,
                                         n_train=5000, val_size=2000, pool=2),
        },
        noise_sigmas=(0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5), noise_n_test=2000,
        regression=RegressionSpec(n_samples=1024, epochs=150),
    ),
}


# =============================================================================================
# Training one model
# =============================================================================================
def _history_dict(h) -> dict[str, list]:
    d = h.as_dict()
    return {k: d[k] for k in ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "time")}


def train_one(model: nn.Module, data, *, epochs: int, lr: float, batch_size: int, seed: int,
              loss: str = "cross_entropy", callbacks: Sequence = (),
              progress: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """Fit with the common budget, restore the best-validation epoch, evaluate the test part.

    Returns:
        ``(model, record)``: the model with the selected weights (eval mode) and a dict with
        ``epochs``, ``best_epoch``, ``val_acc``/``val_loss`` at that epoch, ``test_acc``,
        ``test_loss``, ``fit_seconds`` and ``history``.
    """
    from bnnlab import train

    keep = KeepBest("val_loss" if loss == "mse" else "val_acc")
    t0 = time.perf_counter()
    hist = train.fit(model, data, epochs=epochs, lr=lr, batch_size=batch_size,
                     schedule="cosine", loss=loss, seed=seed, progress=progress,
                     callbacks=[keep, *callbacks])
    seconds = time.perf_counter() - t0
    keep.restore(model)
    if keep.best_epoch is None:
        raise ValueError("train_one: epochs must be >= 1 and data must have a validation part")
    i = hist.epoch.index(keep.best_epoch)
    test = train.evaluate(model, *data.test, loss=loss)
    record = {
        "epochs": len(hist), "best_epoch": keep.best_epoch,
        "val_acc": hist.val_acc[i], "val_loss": hist.val_loss[i],
        "test_acc": test["accuracy"], "test_loss": test["loss"],
        "fit_seconds": seconds, "history": _history_dict(hist),
    }
    return model, record


# =============================================================================================
# JSON helpers
# =============================================================================================
def _jsonable(obj: Any) -> Any:
    """Plain JSON types; ``nan``/``inf`` become ``None`` (strict JSON has no NaN)."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Tensor):
        return _jsonable(obj.detach().cpu().numpy())
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def _write_json(path: Path, payload: Mapping) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_jsonable(payload), indent=1, allow_nan=False) + "\n")
    tmp.replace(path)


def _header(name: str, profile: Profile) -> dict[str, Any]:
    return {"schema": SCHEMA, "experiment": name, "profile": profile.name}


# =============================================================================================
# Runs: every training of the experiments is a spec of the runner "experiment"
# =============================================================================================
#: Name of the runner of :mod:`bnnlab.runs` that trains one model of the experiments.
RUNNER = "experiment"
#: File of an architecture run's trained weights (safetensors), next to its record.
WEIGHTS = "weights.safetensors"
#: Kinds of ``experiment`` runs.
RUN_KINDS = ("architecture", "ablation", "regression")
#: Keys of a training record that a payload row copies (``train_one``'s record).
_FIT_KEYS = ("epochs", "best_epoch", "val_acc", "val_loss", "test_acc", "test_loss",
             "fit_seconds", "history")


def _dataset_spec(d: Mapping[str, Any]) -> DatasetSpec:
    return DatasetSpec(**{**d, "hidden": tuple(d["hidden"])})


def _regression_spec(d: Mapping[str, Any]) -> RegressionSpec:
    return RegressionSpec(**{**d, "hidden": tuple(d["hidden"]), "domain": tuple(d["domain"])})


def architecture_spec(profile: Profile, dataset: str, variant: str, seed: int) -> dict[str, Any]:
    """Spec of one architecture run: ``variant`` trained on ``dataset`` with ``seed``.

    The first seed's binary variants on ``profile.signs_dataset`` also record the flip ratio
    (and, for ``"binary"``, sign statistics and gradient mismatch on a probe batch of
    ``profile.probe_size`` training images): ``record_signs`` is part of the spec.
    """
    if dataset not in profile.datasets:
        raise ValueError(f"dataset must be one of {list(profile.datasets)}, got {dataset!r}")
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {list(VARIANTS)}, got {variant!r}")
    record_signs = (dataset == profile.signs_dataset and seed == profile.seeds[0]
                    and VARIANTS[variant].binary)
    spec = {"runner": RUNNER, "kind": "architecture",
            "data": _jsonable(dataclasses.asdict(profile.datasets[dataset])),
            "variant": variant, "seed": int(seed), "record_signs": record_signs}
    if record_signs:
        spec["probe_size"] = int(profile.probe_size)
    return spec


def ablation_spec(profile: Profile, quantizer: str, seed: int) -> dict[str, Any]:
    """Spec of one ablation run: the BinaryNet MLP with the activation binariser ``quantizer``.

    ``"ste_sign"`` is the architecture run of ``"binary"`` (the same spec, so the same
    record: it is trained once).
    """
    if quantizer not in ABLATION_QUANTIZERS:
        raise ValueError(f"quantizer must be one of {list(ABLATION_QUANTIZERS)}, "
                         f"got {quantizer!r}")
    if quantizer == "ste_sign":
        return architecture_spec(profile, profile.ablation_dataset, "binary", seed)
    return {"runner": RUNNER, "kind": "ablation",
            "data": _jsonable(dataclasses.asdict(profile.datasets[profile.ablation_dataset])),
            "quantizer": quantizer, "seed": int(seed)}


def regression_spec(profile: Profile, variant: str, seed: int) -> dict[str, Any]:
    """Spec of one regression run (``"float"`` or ``"binary"``); the first seed also records
    the fitted curve."""
    if variant not in ("float", "binary"):
        raise ValueError(f"variant must be 'float' or 'binary', got {variant!r}")
    return {"runner": RUNNER, "kind": "regression",
            "regression": _jsonable(dataclasses.asdict(profile.regression)),
            "variant": variant, "seed": int(seed), "curve": seed == profile.seeds[0]}


def _arch_runs(p: Profile, datasets: Iterable[str] | None = None,
               seeds: Iterable[int] | None = None) -> list[tuple[str, str, int, dict]]:
    out = []
    for dname in (p.datasets if datasets is None else datasets):
        for seed in (p.seeds if seeds is None else seeds):
            for variant in p.variants:
                out.append((dname, variant, seed, architecture_spec(p, dname, variant, seed)))
    return out


def _needed_specs(p: Profile, name: str) -> list[dict[str, Any]]:
    if name == "architectures":
        return [s for *_, s in _arch_runs(p)]
    if name == "ablation":
        return [ablation_spec(p, q, seed) for seed in p.seeds for q in p.ablation_quantizers]
    if name == "noise":
        return [s for *_, s in _arch_runs(p, [p.noise_dataset])]
    if name == "regression":
        return [regression_spec(p, v, seed) for seed in p.seeds for v in ("float", "binary")]
    if name == "costs":
        return [s for *_, s in _arch_runs(p, seeds=p.seeds[:1])]
    raise ValueError(f"unknown experiment {name!r}")


def experiment_specs(profile: Profile | str = "quick",
                     only: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Every run the experiments of ``profile`` need (distinct, in order): the specs of
    runner ``"experiment"`` that :func:`run` executes (or that a sweep can run elsewhere)."""
    p = _profile(profile)
    seen: set[str] = set()
    out = []
    for name in _names(only):
        for spec in _needed_specs(p, name):
            key = spec_key(spec)
            if key not in seen:
                seen.add(key)
                out.append(spec)
    return out


@functools.lru_cache(maxsize=4)
def _split(data_json: str, seed: int):
    """The data of a run (cached: the runs of one data set and seed share it; read only)."""
    return load_dataset(_dataset_spec(json.loads(data_json)), seed)


def _run_split(data: Mapping[str, Any], seed: int):
    return _split(json.dumps(data, sort_keys=True), int(seed))


def _profile_split(p: Profile, dataset: str, seed: int):
    return _run_split(_jsonable(dataclasses.asdict(p.datasets[dataset])), seed)


def _weights_bytes(model: nn.Module) -> bytes:
    """The state dict as safetensors bytes. Tensors that share memory (ReActNet's pointwise
    branches share one threshold) are saved once per name, as copies; loading them back
    into the rebuilt model restores the sharing."""
    from safetensors.torch import save

    return save({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()})


def _signs_recorder(variant: str, split, probe_size: int) -> dict[str, Any]:
    from bnnlab import analysis

    probe_x, probe_y = split.train[0][:probe_size], split.train[1][:probe_size]
    cbs: dict[str, Any] = {"flip": analysis.FlipRatio(every="epoch")}
    if variant == "binary":
        cbs["signs"] = analysis.SignStats(probe_x)
        cbs["mismatch"] = analysis.GradientMismatch(probe_x, probe_y, betas=(1.0, 3.0, 10.0))
    return cbs


def _signs_record(variant: str, cbs: Mapping[str, Any]) -> dict[str, Any]:
    fr = cbs["flip"]
    out: dict[str, Any] = {"flip_ratio": {"epochs": fr.steps, "total": fr.total,
                                          "layers": fr.history}}
    if "signs" in cbs:
        out["sign_stats"] = {"variant": variant, **_sign_history_dict(cbs["signs"].history)}
        gm = cbs["mismatch"]
        out["gradient_mismatch"] = {"variant": variant, "epochs": gm.epochs,
                                    "results": gm.results}
    return out


def experiment_runner(spec: dict[str, Any]) -> Any:
    """Runner ``"experiment"`` of :mod:`bnnlab.runs`: one training of the experiments.

    ``spec["kind"]`` is ``"architecture"`` (:func:`architecture_spec`), ``"ablation"``
    (:func:`ablation_spec`) or ``"regression"`` (:func:`regression_spec`). The result is
    :func:`train_one`'s record (history, best epoch, validation and test metrics at it,
    ``fit_seconds``) plus, for classifiers, ``sizes``, ``input_shape`` and ``num_classes``;
    ``signs`` (flip ratio, sign statistics, gradient mismatch) when ``record_signs``;
    regression: ``sup``/``l1``/``l2`` of the selected fit against :func:`regression_target`
    and, for the first seed, ``curve``. An architecture run returns a
    :class:`bnnlab.runs.RunOutput` whose file ``weights.safetensors`` holds the selected
    weights (:func:`load_model` rebuilds the model from them).
    """
    from bnnlab._validation import check_bool, check_choice, check_int
    from bnnlab.runs import RunOutput

    kind = check_choice(spec.get("kind"), "spec['kind']", RUN_KINDS)
    seed = check_int(spec.get("seed"), "spec['seed']", min_value=0)
    if kind == "regression":
        return _regression_run(spec, seed)
    ds = _dataset_spec(spec["data"])
    split = _run_split(spec["data"], seed)
    variant, quantizer = "binary", "ste_sign"
    if kind == "architecture":
        variant = check_choice(spec.get("variant"), "spec['variant']", tuple(VARIANTS))
    else:
        qkey = check_choice(spec.get("quantizer"), "spec['quantizer']",
                            tuple(ABLATION_QUANTIZERS))
        quantizer = ABLATION_QUANTIZERS[qkey][1]
    record_signs = kind == "architecture" and check_bool(spec.get("record_signs", False),
                                                         "spec['record_signs']")
    torch.manual_seed(seed)
    model = build_model(variant, split.input_shape, split.num_classes, hidden=ds.hidden,
                        width=ds.width, input_quantizer=quantizer)
    cbs = _signs_recorder(variant, split, check_int(spec.get("probe_size"),
                                                    "spec['probe_size']", min_value=1)) \
        if record_signs else {}
    model, rec = train_one(model, split, epochs=ds.epochs, lr=ds.lr, batch_size=ds.batch_size,
                           seed=seed, callbacks=list(cbs.values()))
    result = {**rec, "sizes": split.sizes, "input_shape": list(split.input_shape),
              "num_classes": int(split.num_classes)}
    if cbs:
        result["signs"] = _signs_record(variant, cbs)
    result = _jsonable(result)
    if kind == "architecture":
        return RunOutput(result, {WEIGHTS: _weights_bytes(model)})
    return result


def _regression_run(spec: Mapping[str, Any], seed: int) -> dict[str, Any]:
    from bnnlab import data as D
    from bnnlab._validation import check_bool, check_choice

    r = _regression_spec(spec["regression"])
    variant = check_choice(spec.get("variant"), "spec['variant']", ("float", "binary"))
    split = D.make_regression(r.n_samples, noise=r.noise, seed=seed)
    torch.manual_seed(seed)
    reg_model: nn.Module = build_regression_model(variant, r.hidden, domain=r.domain)
    model, rec = train_one(reg_model, split, epochs=r.epochs, lr=r.lr, batch_size=r.batch_size,
                           seed=seed, loss="mse")
    grid = np.linspace(*r.domain, r.grid_points)
    with torch.no_grad():
        pred = model(torch.as_tensor(grid, dtype=torch.float32)[:, None])[:, 0]
    errs = function_errors(grid, pred.double().numpy() - regression_target(grid))
    for k in ("test_acc", "val_acc"):
        rec.pop(k)
    result: dict[str, Any] = {**errs, **rec}
    if check_bool(spec.get("curve", False), "spec['curve']"):
        plot_x = np.linspace(*r.domain, r.plot_points)
        with torch.no_grad():
            fit = model(torch.as_tensor(plot_x, dtype=torch.float32)[:, None])[:, 0]
        result["curve"] = {"x": plot_x, "fit": fit, "train_x": split.train[0][:, 0],
                           "train_y": split.train[1][:, 0]}
    return _jsonable(result)


def load_model(store: ResultStore, spec: Mapping[str, Any]) -> nn.Module:
    """The trained model of an architecture run, rebuilt from its spec and record and loaded
    from the store's ``weights.safetensors`` (eval mode).

    Raises:
        ValueError: the run is not in the store, or its weights are missing or altered.
    """
    from safetensors.torch import load

    rec = _record(store, spec)
    res = rec["result"]
    ds = _dataset_spec(rec["spec"]["data"])
    torch.manual_seed(int(rec["spec"]["seed"]))
    model = build_model(rec["spec"]["variant"], res["input_shape"], res["num_classes"],
                        hidden=ds.hidden, width=ds.width)
    model.load_state_dict(load(store.read_file(rec["key"], WEIGHTS)))
    return model.eval()


def _record(store: ResultStore, spec: Mapping[str, Any]) -> dict[str, Any]:
    rec = store.get(spec)
    if rec is None:
        raise ValueError(f"{store.root}: no record of run {spec_key(spec)} "
                         f"({_describe(spec)}); run the experiments first")
    return rec


def _describe(spec: Mapping[str, Any]) -> str:
    kind = spec.get("kind")
    if kind == "regression":
        return f"regression {spec['variant']} seed {spec['seed']}"
    what = spec.get("variant") if kind == "architecture" else spec.get("quantizer")
    return f"{kind} {spec['data']['name']} {what} seed {spec['seed']}"


# =============================================================================================
# The experiments: payloads assembled from the results store only
# =============================================================================================
@dataclass
class _Context:
    """What the assemblers of one profile share: the results store (records and weights)."""

    profile: Profile
    store: ResultStore
    log: Callable[[str], None] = print
    extra_outputs: dict[str, dict] = field(default_factory=dict)

    def record(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        return _record(self.store, spec)

    def result(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        return self.record(spec)["result"]

    def run_seconds(self, keys: Iterable[str]) -> float:
        return float(sum(self.record_of_key(k)["seconds"] for k in keys))

    def record_of_key(self, key: str) -> dict[str, Any]:
        rec = self.store.get(key)
        if rec is None:
            raise ValueError(f"{self.store.root}: no record of run {key}")
        return rec


def _protocol(spec: DatasetSpec, res: Mapping[str, Any]) -> dict[str, Any]:
    return {"optimizer": "adam", "lr": spec.lr, "schedule": "cosine", "epochs": spec.epochs,
            "batch_size": spec.batch_size, "selection": "best validation accuracy",
            "sizes": res["sizes"], "input_shape": list(res["input_shape"]), "pool": spec.pool,
            "hidden": list(spec.hidden), "width": spec.width}


def _sign_history_dict(h) -> dict[str, Any]:
    keep = ("weight_counts", "fraction_positive", "mean_distance", "near_flip", "input_counts",
            "input_fraction_positive")
    return {"edges": h.edges, "epochs": h.epochs,
            "layers": {name: {k: v for k, v in rec.items() if k in keep}
                       for name, rec in h.layers.items()}}


def _fit_row(res: Mapping[str, Any]) -> dict[str, Any]:
    return {k: res[k] for k in _FIT_KEYS}


def run_architectures(ctx: _Context) -> dict[str, Any]:
    """Every variant on every data set for every seed; ``signs.json`` from the first seed."""
    p = ctx.profile
    runs: list[dict[str, Any]] = []
    datasets: dict[str, Any] = {}
    signs: dict[str, Any] = {}
    for dname, variant, seed, spec in _arch_runs(p):
        rec = ctx.record(spec)
        res = rec["result"]
        datasets.setdefault(dname, _protocol(p.datasets[dname], res))
        runs.append({"dataset": dname, "variant": variant, "seed": seed, **_fit_row(res),
                     "key": rec["key"]})
        if "signs" in res:
            entry = signs.setdefault(dname, {"seed": seed, "flip_ratio": {}})
            entry["flip_ratio"][variant] = res["signs"]["flip_ratio"]
            for k in ("sign_stats", "gradient_mismatch"):
                if k in res["signs"]:
                    entry[k] = res["signs"][k]
    ctx.extra_outputs = {"signs": {**_header("signs", p), "datasets": signs}}
    return {**_header("architectures", p), "variants": {k: dataclasses.asdict(VARIANTS[k])
                                                        for k in p.variants},
            "datasets": datasets, "runs": runs}


def run_ablation(ctx: _Context) -> dict[str, Any]:
    """The activation binariser of the BinaryNet MLP, everything else equal."""
    p = ctx.profile
    dname = p.ablation_dataset
    arch_keys = {spec_key(s) for s in _needed_specs(p, "architectures")}
    runs = []
    for seed in p.seeds:
        for qkey in p.ablation_quantizers:
            rec = ctx.record(ablation_spec(p, qkey, seed))
            runs.append({"quantizer": qkey, "seed": seed,
                         "reused_from_architectures": rec["key"] in arch_keys,
                         **_fit_row(rec["result"]), "key": rec["key"]})
    first = ctx.result(ablation_spec(p, p.ablation_quantizers[0], p.seeds[0]))
    return {**_header("ablation", p), "dataset": dname, "model": "binary",
            "quantizers": {k: ABLATION_QUANTIZERS[k][0] for k in p.ablation_quantizers},
            "protocol": _protocol(p.datasets[dname], first), "runs": runs}


@torch.no_grad()
def run_noise(ctx: _Context) -> dict[str, Any]:
    r"""Test accuracy of the selected models (loaded from the store) under
    :math:`x + \sigma\varepsilon`, :math:`\varepsilon \sim \mathcal N(0, I)` drawn once per seed
    (the same for every variant and every :math:`\sigma`: common random numbers)."""
    from bnnlab import train

    p = ctx.profile
    dname = p.noise_dataset
    runs = []
    n_test = 0
    for seed in p.seeds:
        split = _profile_split(p, dname, seed)
        x, y = split.test
        if p.noise_n_test is not None:
            x, y = x[:p.noise_n_test], y[:p.noise_n_test]
        n_test = int(x.shape[0])
        eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(10_000 + seed))
        for variant in p.variants:
            model = load_model(ctx.store, architecture_spec(p, dname, variant, seed))
            acc = [train.evaluate(model, x + s * eps, y)["accuracy"] for s in p.noise_sigmas]
            runs.append({"variant": variant, "seed": seed, "accuracy": acc})
        ctx.log(f"[noise] {dname} seed {seed}: {len(p.variants)} variants x "
                f"{len(p.noise_sigmas)} sigmas")
    return {**_header("noise", p), "dataset": dname, "sigmas": list(p.noise_sigmas),
            "n_test": n_test,
            "noise": "gaussian, added to the normalised test inputs, not clipped",
            "runs": runs}


def run_regression(ctx: _Context) -> dict[str, Any]:
    """Float vs binary MLP on the 1-D curve; errors of the selected model against f."""
    p = ctx.profile
    r = p.regression
    runs: list[dict[str, Any]] = []
    curves: dict[str, Any] = {}
    for seed in p.seeds:
        for variant in ("float", "binary"):
            rec = ctx.record(regression_spec(p, variant, seed))
            res = dict(rec["result"])
            curve = res.pop("curve", None)
            if curve is not None:
                if not curves:
                    curves = {"x": curve["x"], "truth": regression_target(curve["x"]),
                              "fits": {}, "train_x": curve["train_x"],
                              "train_y": curve["train_y"]}
                curves["fits"][variant] = curve["fit"]
            runs.append({"variant": variant, "seed": seed, **res, "key": rec["key"]})
    return {**_header("regression", p),
            "target": "sin(3x) + 0.3x", "domain": list(r.domain), "noise": r.noise,
            "n_samples": r.n_samples, "grid_points": r.grid_points,
            "integration": "trapezoid rule on a uniform grid of the domain; L2 = sqrt(int e^2)",
            "protocol": {"optimizer": "adam", "lr": r.lr, "schedule": "cosine",
                         "epochs": r.epochs, "batch_size": r.batch_size, "hidden": list(r.hidden),
                         "selection": "lowest validation MSE",
                         "models": "models.binary_mlp(1, hidden, 1): float twin (ReLU) and "
                                   "binary (STE sign, weight clip 1); first-BN shifts "
                                   "~ U(-0.98*sqrt(3), 0.98*sqrt(3))"},
            "runs": runs, "curves": curves}


def _packed_weight_bytes(model: nn.Module) -> dict[str, float]:
    """Bytes of the binary weights as packed by :mod:`bnnlab.kernels` (words with padding),
    and the theoretical 1 bit per binary weight, summed over the binary layers."""
    from bnnlab import analysis, kernels
    from bnnlab.functional import sign

    packed = bits = 0
    for layer in analysis.binary_layers(model).values():
        wq = getattr(layer, "weight_quantizer", None)
        if wq is None or getattr(wq, "precision", 32) != 1:
            continue
        lay: Any = layer
        with torch.no_grad():
            planes = lay.weight_bases() if hasattr(lay, "weight_bases") else \
                lay.weight_quantizer(lay.weight)[None]
        for plane in sign(planes.detach().float()):
            if plane.ndim == 2:
                packed += kernels.pack_signs(plane.contiguous()).nbytes
            elif plane.ndim == 4:
                packed += kernels.pack_conv_weights(plane.contiguous()).nbytes
            else:   # conv1d or other: pack rows over everything but the output channel
                packed += kernels.pack_signs(plane.reshape(plane.shape[0], -1)).nbytes
            bits += plane.numel()
    return {"packed_bytes": packed, "bits_bytes": bits / 8}


def _median_forward_ms(model: nn.Module, x: Tensor, repeats: int) -> float:
    from bnnlab.bench import latency

    model.eval()
    return float(latency(model, x, repeats=repeats, warmup=2) * 1e3)


def run_costs(ctx: _Context) -> dict[str, Any]:
    """Cost model (summary) and measured packed bytes of the first seed's trained models (loaded
    from the store); their simulated forward time, measured here."""
    from bnnlab import kernels
    from bnnlab.summary import summary

    p = ctx.profile
    out: dict[str, Any] = {}
    for dname in p.datasets:
        split = _profile_split(p, dname, p.seeds[0])
        shape = split.input_shape
        x = split.test[0][:p.timing_batch]
        rows, models = {}, {}
        for variant in p.variants:
            model = load_model(ctx.store, architecture_spec(p, dname, variant, p.seeds[0]))
            s = summary(model, shape)
            rows[variant] = {"summary": s.to_dict(), **_packed_weight_bytes(model)}
            models[variant] = model
        # forward time of the torch models (binarisation simulated in float): rounds of
        # interleaved medians; the fastest round is kept (load bursts of a shared machine only
        # ever make a round slower)
        times: dict[str, list[float]] = {v: [] for v in p.variants}
        for _ in range(5):
            for variant, model in models.items():
                times[variant].append(_median_forward_ms(model, x, p.timing_repeats))
        for variant in p.variants:
            rows[variant]["torch_forward_ms"] = float(np.min(times[variant]))
            rows[variant]["torch_forward_ms_rounds"] = times[variant]
        out[dname] = {"input_shape": list(shape), "timing_batch": int(x.shape[0]),
                      "variants": rows}
        ctx.log(f"[costs] {dname}: summaries, packed bytes and forward times of "
                f"{len(p.variants)} variants")
    return {**_header("costs", p), "threads": torch.get_num_threads(),
            "kernel_info": kernels.kernel_info(), "datasets": out}


#: name -> the function that assembles its payload from the results store
#: (:func:`experiment_specs` lists the runs each needs).
EXPERIMENTS: dict[str, Callable[[_Context], dict]] = {
    "architectures": run_architectures,
    "ablation": run_ablation,
    "noise": run_noise,
    "regression": run_regression,
    "costs": run_costs,
}


def _profile(profile: Profile | str) -> Profile:
    if isinstance(profile, str):
        if profile not in PROFILES:
            raise ValueError(f"profile must be one of {list(PROFILES)}, got {profile!r}")
        return PROFILES[profile]
    if not isinstance(profile, Profile):
        raise TypeError(f"profile must be a Profile or a name, got {type(profile).__name__}")
    return profile


def _names(only: Iterable[str] | None) -> list[str]:
    if isinstance(only, str):
        raise TypeError("only must be a list of experiment names, not a string")
    names = list(EXPERIMENTS) if only is None else list(only)
    for n in names:
        if n not in EXPERIMENTS:
            raise ValueError(f"only: unknown experiment {n!r}; choose from {list(EXPERIMENTS)}")
    return [n for n in EXPERIMENTS if n in names]


# =============================================================================================
# The paper profile: CIFAR-10 runs as a Dask sweep, tables from the results directory only
# =============================================================================================
#: name -> (model builder of :mod:`bnnlab.models`, its keyword arguments, label).
PAPER_MODELS: dict[str, tuple[str, dict[str, Any], str]] = {
    "vgg-small-float": ("vgg_small", {"binary": False}, "VGG-small (float)"),
    "vgg-small": ("vgg_small", {"binary": True}, "BinaryNet VGG-small"),
    "resnet18-float": ("resnet18_bireal", {"binary": False}, "ResNet-18 (float)"),
    "bireal-18": ("resnet18_bireal", {"binary": True}, "Bi-Real Net-18"),
    "reactnet-18": ("resnet18_bireal", {"binary": True, "block": "reactnet"},
                    "ReActNet-18"),
}

#: The budget of every ``paper`` run (one budget for all, as in the small profiles): Adam with
#: a cosine decay, crop/flip augmentation, per-channel normalisation, best validation epoch.
#: It is this project's choice, not any one paper's schedule (BinaryNet trained 500 epochs).
PAPER_BUDGET: dict[str, Any] = {"optimizer": "adam", "lr": 1e-3, "schedule": "cosine",
                                "epochs": 200, "batch_size": 128, "augment": True,
                                "weight_decay": 0.0}


def paper_specs(*, seeds: Iterable[int] = (0, 1, 2), fraction: float = 1.0,
                epochs: int | None = None, verify: bool = True,
                models: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Run specs of the ``paper`` profile: :data:`PAPER_MODELS` × ``seeds`` on CIFAR-10.

    The data folder (or archive) is not part of a spec (the files are verified against the
    official SHA-256, so every machine reads the same bytes); it is given to :func:`run_paper`
    or set in ``BNNLAB_DATA_ROOT`` on the workers.
    """
    from bnnlab._validation import check_bool, check_int, check_real

    fraction = check_real(fraction, "fraction", min_value=0.0, max_value=1.0,
                          include_min=False)
    epochs = check_int(epochs, "epochs", min_value=1, allow_none=True)
    verify = check_bool(verify, "verify")
    names = list(PAPER_MODELS) if models is None else list(models)
    for name in names:
        if name not in PAPER_MODELS:
            raise ValueError(f"models: unknown {name!r}; choose from {list(PAPER_MODELS)}")
    budget = dict(PAPER_BUDGET, **({"epochs": epochs} if epochs is not None else {}))
    specs = []
    for seed in seeds:
        for name in names:
            builder, kw, _ = PAPER_MODELS[name]
            specs.append({"runner": "fit", "model": builder, "model_kw": dict(kw),
                          "data": "cifar10", "data_kw": {"verify": verify},
                          "fraction": float(fraction), "seed": int(seed), **budget,
                          "tags": {"profile": "paper", "model": name}})
    return specs


def paper_table(results: str | os.PathLike[str]) -> dict[str, Any]:
    """Mean ± sd of the test accuracy per model of the ``paper`` records in ``results``
    (built from the results directory only)."""
    from bnnlab.runs import ResultStore

    rows: dict[str, list[dict[str, Any]]] = {}
    for rec in ResultStore(results).records():
        tags = rec["spec"].get("tags") or {}
        if tags.get("profile") != "paper":
            continue
        rows.setdefault(tags["model"], []).append(rec)
    table = {}
    for name in PAPER_MODELS:
        recs = sorted(rows.get(name, []), key=lambda r: r["spec"]["seed"])
        if not recs:
            continue
        table[name] = {"label": PAPER_MODELS[name][2],
                       "test_acc": aggregate(r["result"]["test_acc"] for r in recs),
                       "seeds": [r["spec"]["seed"] for r in recs],
                       "keys": [r["key"] for r in recs],
                       "parameters": recs[0]["result"]["parameters"],
                       "epochs": recs[0]["spec"]["epochs"],
                       "fraction": recs[0]["spec"]["fraction"],
                       "run_seconds": aggregate(r["seconds"] for r in recs)}
    return {"schema": SCHEMA, "experiment": "paper", "profile": "paper",
            "budget": PAPER_BUDGET, "models": table}


def run_paper(out: str | os.PathLike[str], data_root: str | os.PathLike[str], *,
              client: Any = None, scheduler: str | None = None, workers: int | None = None,
              progress: bool = True, log: Callable[[str], None] = print,
              **spec_kw: Any) -> dict[str, Any]:
    """The ``paper`` profile: sweep :func:`paper_specs` into ``<out>/runs`` on Dask (missing
    runs only), then write ``<out>/paper.json`` from those records."""
    from bnnlab.sweep import run_sweep

    out = Path(out)
    specs = paper_specs(**spec_kw)
    report = run_sweep(specs, out / "runs", client=client, scheduler=scheduler,
                       workers=workers, progress=progress, log=log,
                       env={"BNNLAB_DATA_ROOT": str(Path(data_root).resolve())})
    if report.failed:
        raise RuntimeError(f"{len(report.failed)} paper runs failed: "
                           + "; ".join(report.failed.values()))
    table = paper_table(out / "runs")
    table["sweep"] = {"total": report.total, "done": len(report.done),
                      "skipped": len(report.skipped), "seconds": report.seconds,
                      "scheduler": report.scheduler}
    _write_json(out / "paper.json", table)
    return table


# =============================================================================================
# Runner and CLI
# =============================================================================================
def _machine() -> dict[str, Any]:
    import bnnlab

    return {"python": platform.python_version(), "torch": torch.__version__,
            "bnnlab": bnnlab.__version__, "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}


def _run_bench(out: Path, quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    """``python -m bnnlab bench --json <out>/bench.json`` if :mod:`bnnlab.bench` exists."""
    if importlib.util.find_spec("bnnlab.bench") is None:
        log("[bench] bnnlab.bench does not exist yet: skipped (the report says 'not measured')")
        return {"status": "missing"}
    cmd = [sys.executable, "-m", "bnnlab", "bench", "--json", str(out / "bench.json")]
    if quick:
        cmd.append("--quick")
    log("[bench] " + " ".join(cmd))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, check=False)  # noqa: S603 - our own interpreter and module
    return {"status": "ok" if proc.returncode == 0 else f"failed (rc={proc.returncode})",
            "command": cmd[1:], "seconds": time.perf_counter() - t0}


def _previous_run(path: Path, profile: Profile) -> dict | None:
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    same = old.get("schema") == SCHEMA and old.get("config") == profile.to_dict()
    return old if same else None


def _execute(specs: list[dict[str, Any]], store: ResultStore, *, client: Any,
             scheduler: str | None, workers: int | None, threads: int, progress: bool,
             log: Callable[[str], None]) -> dict[str, Any]:
    """Run the specs whose record is missing: on Dask when an executor is given, else here."""
    from bnnlab.runs import run_spec

    missing = store.missing(specs)
    info: dict[str, Any] = {"total": len(specs), "skipped": len(specs) - len(missing),
                            "done": 0, "seconds": 0.0, "executor": "none",
                            "store": str(store.root)}
    log(f"[experiments] {len(specs)} runs: {info['skipped']} already in {store.root}, "
        f"{len(missing)} to run")
    if not missing:
        return info
    t0 = time.perf_counter()
    if client is not None or scheduler is not None or workers is not None:
        report = run_sweep(missing, store, client=client, scheduler=scheduler, workers=workers,
                           threads=threads, progress=progress, log=log)
        if report.failed:
            raise RuntimeError(f"experiments: {len(report.failed)} run(s) failed on Dask: "
                               + "; ".join(report.failed.values()))
        info.update(executor=report.scheduler, done=len(report.done))
    else:
        for i, spec in enumerate(missing, 1):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                rec = run_spec(spec, threads=threads)
            store.put(rec)
            res = rec["result"]
            metric = (f"test acc {res['test_acc']:.4f} (epoch {res['best_epoch']}/"
                      f"{res['epochs']})" if "test_acc" in res else
                      f"sup {res['sup']:.3f} L1 {res['l1']:.4f} L2 {res['l2']:.4f}")
            log(f"[run {i}/{len(missing)}] {_describe(spec)}: {metric}, "
                f"{rec['seconds']:.1f} s")
        info.update(executor="serial (this process)", done=len(missing))
    info["seconds"] = time.perf_counter() - t0
    return info


def assemble(profile: Profile | str = "quick", out: str | os.PathLike = DEFAULT_OUT, *,
             only: Iterable[str] | None = None,
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """Build and write ``<out>/<name>.json`` of each experiment from the results store
    ``<out>/store`` only (records and weights; no run is executed).

    Each payload's ``seconds`` is the run time of its runs (those not already counted by an
    experiment before it: the ablation's STE runs are architecture runs) plus the time of
    assembling it (noise evaluation, forward timings).

    Raises:
        ValueError: a run the experiments need is not in the store.

    Returns:
        ``{name: payload}`` as written (``signs`` included with ``architectures``).
    """
    p = _profile(profile)
    todo = _names(only)
    out = Path(out)
    store = ResultStore(out / "store")
    for spec in experiment_specs(p, todo):
        _record(store, spec)                 # every run is there before anything is written
    ctx = _Context(profile=p, store=store, log=log)
    results: dict[str, Any] = {}
    counted: set[str] = set()
    for name in todo:
        t0 = time.perf_counter()
        ctx.extra_outputs = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            payload = EXPERIMENTS[name](ctx)
        keys = {spec_key(s) for s in _needed_specs(p, name)} - counted
        counted |= keys
        payload["seconds"] = ctx.run_seconds(keys) + time.perf_counter() - t0
        for extra_name, extra in {name: payload, **ctx.extra_outputs}.items():
            _write_json(out / f"{extra_name}.json", extra)
            results[extra_name] = extra
        log(f"[{name}] {payload['seconds']:.1f} s of runs -> {out / (name + '.json')}")
    return results


def run(profile: Profile | str = "quick", out: str | os.PathLike = DEFAULT_OUT, *,
        only: Iterable[str] | None = None, progress: bool = False, bench: bool = False,
        log: Callable[[str], None] = print, scheduler: str | None = None,
        workers: int | None = None, client: Any = None, threads: int = 1) -> dict[str, Any]:
    """Run the experiments of ``profile``: execute the missing runs, then write
    ``<out>/<name>.json`` plus ``run.json`` from the results store ``<out>/store``.

    Every training is a run of :mod:`bnnlab.runs` (:func:`experiment_specs`); its record (and,
    for architecture runs, its weights) is stored as ``<out>/store/<key>.json``, so a rerun
    executes only the missing runs and an interrupted one resumes. By default they run
    serially in this process; with ``client`` (a :class:`distributed.Client`), ``scheduler``
    (an address) or ``workers`` (an embedded :class:`~distributed.LocalCluster` of that many
    processes) they are tasks of Dask (:func:`bnnlab.sweep.run_sweep`). The payloads are then
    built from the store alone (:func:`assemble`).

    Args:
        profile: a :class:`Profile` or a key of :data:`PROFILES`.
        out: output directory (created).
        only: names of :data:`EXPERIMENTS` to write. Default: all.
        progress: the sweep's progress bar (Dask only).
        bench: also run ``python -m bnnlab bench --json <out>/bench.json``.
        log: where progress lines go.
        scheduler, workers, client: the Dask executor (at most one). Default: none (serial).
        threads: torch threads inside each run. Default: ``1``.

    ``run.json`` records the machine, the configuration, how the runs were executed
    (``execution``) and the seconds of each experiment; ``total_seconds`` is their sum. A rerun
    with ``only`` and the same configuration keeps the seconds of the experiments it did not
    rerun.

    Returns:
        ``{name: payload}`` as written.
    """
    from bnnlab._validation import check_bool, check_int

    p = _profile(profile)
    todo = _names(only)
    if scheduler is not None and not isinstance(scheduler, str):
        raise TypeError(f"scheduler must be an address string, got {type(scheduler).__name__}")
    workers = check_int(workers, "workers", min_value=1, allow_none=True)
    threads = check_int(threads, "threads", min_value=1)
    progress = check_bool(progress, "progress")
    given = [n for n, v in (("client", client), ("scheduler", scheduler), ("workers", workers))
             if v is not None]
    if len(given) > 1:
        raise ValueError(f"give at most one of client, scheduler and workers, got {given}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    store = ResultStore(out / "store")
    execution = _execute(experiment_specs(p, todo), store, client=client, scheduler=scheduler,
                         workers=workers, threads=threads, progress=progress, log=log)
    results = assemble(p, out, only=todo, log=log)
    seconds = {name: results[name]["seconds"] for name in todo}
    bench_info = _run_bench(out, p.name != "full", log) if bench else {"status": "skipped"}
    wall = time.perf_counter() - t_start
    previous = _previous_run(out / "run.json", p) if only is not None else None
    if previous:   # a partial rerun of the same profile: keep the times of the other experiments
        seconds = {**previous.get("seconds", {}), **seconds}
        todo = [n for n in EXPERIMENTS if n in seconds]
    total = float(sum(seconds.values()))
    meta = {**_header("run", p), "experiments": todo, "seconds": seconds,
            "total_seconds": total, "wall_seconds": wall, "execution": execution,
            "bench": bench_info, "machine": _machine(), "config": p.to_dict(),
            "argv": sys.argv, "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    _write_json(out / "run.json", meta)
    results["run"] = meta
    log(f"[experiments] {p.name}: {', '.join(todo)} in {wall:.1f} s ({wall / 60:.1f} min)")
    return results


def _override(profile: Profile, args: argparse.Namespace) -> Profile:
    """Apply the CLI overrides (``--seeds``, ``--epochs``, ``--datasets``, ``--variants``)."""
    changes: dict[str, Any] = {}
    if args.seeds is not None:
        changes["seeds"] = tuple(range(args.seeds))
    datasets = dict(profile.datasets)
    if args.datasets:
        unknown = [d for d in args.datasets if d not in datasets]
        if unknown:
            raise SystemExit(f"--datasets: unknown {unknown}; choose from {list(datasets)}")
        datasets = {d: datasets[d] for d in args.datasets}
    if args.epochs is not None:
        datasets = {k: dataclasses.replace(v, epochs=args.epochs) for k, v in datasets.items()}
        changes["regression"] = dataclasses.replace(profile.regression, epochs=args.epochs)
    changes["datasets"] = datasets
    for attr in ("ablation_dataset", "noise_dataset", "signs_dataset"):
        if getattr(profile, attr) not in datasets:
            changes[attr] = next(iter(datasets))
    if args.variants:
        unknown = [v for v in args.variants if v not in VARIANTS]
        if unknown:
            raise SystemExit(f"--variants: unknown {unknown}; choose from {list(VARIANTS)}")
        changes["variants"] = tuple(args.variants)
    name = profile.name if not (args.seeds or args.epochs or args.datasets or args.variants) \
        else profile.name + "+overrides"
    return dataclasses.replace(profile, name=name, **changes)


def main(argv: list[str] | None = None) -> int:
    """``python -m bnnlab experiments [--quick | --full] [--out DIR] [options]``."""
    parser = argparse.ArgumentParser(
        prog="python -m bnnlab experiments",
        description="Train and evaluate the model families; write JSON results for "
                    "`python -m bnnlab figures`. Every training is a run stored in OUT/store "
                    "(record + weights); a rerun executes only the missing runs, serially here "
                    "or on Dask (--workers N: an embedded LocalCluster; --scheduler ADDRESS: "
                    "an existing cluster).")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_const", const="quick", dest="profile",
                      help="CI profile: digits + a 1,500-image Fashion-MNIST subset, 2 seeds, "
                           "few epochs (under 2 minutes on 2 cores; the default)")
    mode.add_argument("--full", action="store_const", const="full", dest="profile",
                      help="the report's numbers: 3 seeds, 5,000 Fashion-MNIST training images "
                           "(about 16 minutes on 2 cores)")
    mode.add_argument("--paper", action="store_const", const="paper", dest="profile",
                      help="CIFAR-10 (--data-root) with VGG-small and ResNet-18 Bi-Real / "
                           "ReActNet, as a Dask sweep (a cluster or a GPU)")
    parser.add_argument("--data-root", type=Path, help="CIFAR-10's binary files (--paper): "
                        "their folder or cifar-10-binary.tar.gz")
    parser.add_argument("--fraction", type=float, default=1.0,
                        help="--paper: fraction of the training images (smoke tests: 0.01)")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="run the missing runs as tasks of this Dask scheduler "
                             "(tcp://host:8786); --paper always uses Dask (default there: an "
                             "embedded LocalCluster)")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="run the missing runs on an embedded Dask LocalCluster of N "
                             "worker processes (default for --quick/--full: serially here)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"output directory (default: {DEFAULT_OUT})")
    parser.add_argument("--only", nargs="+", metavar="NAME", choices=list(EXPERIMENTS),
                        help=f"run only these experiments: {', '.join(EXPERIMENTS)}")
    parser.add_argument("--seeds", type=int, help="use seeds 0..N-1 instead of the profile's")
    parser.add_argument("--epochs", type=int, help="override every number of epochs")
    parser.add_argument("--datasets", nargs="+", metavar="NAME",
                        help="restrict to these data sets (digits, fashion-mnist)")
    parser.add_argument("--variants", nargs="+", metavar="KEY",
                        help=f"restrict to these variants: {', '.join(VARIANTS)}")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: stable on shared machines)")
    parser.add_argument("--bench", action="store_true",
                        help="also run `python -m bnnlab bench --json OUT/bench.json` "
                             "(--quick unless --full)")
    parser.add_argument("--progress", action="store_true",
                        help="a progress bar of the Dask runs (done / total, ETA)")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error("--threads must be >= 1")
    if args.seeds is not None and args.seeds < 1:
        parser.error("--seeds must be >= 1")
    if args.epochs is not None and args.epochs < 1:
        parser.error("--epochs must be >= 1")
    if args.workers is not None and args.workers < 1:
        parser.error("--workers must be >= 1")
    if args.workers is not None and args.scheduler is not None:
        parser.error("--workers starts an embedded LocalCluster; it does not go with "
                     "--scheduler")
    torch.set_num_threads(args.threads)
    if args.profile == "paper":
        if args.data_root is None:
            parser.error("--paper needs --data-root (the CIFAR-10 binary files)")
        run_paper(args.out, args.data_root, scheduler=args.scheduler, workers=args.workers,
                  progress=args.progress, log=lambda s: print(s, flush=True),
                  seeds=range(args.seeds or 3), fraction=args.fraction, epochs=args.epochs)
        return 0
    profile = _override(PROFILES[args.profile or "quick"], args)
    run(profile, args.out, only=args.only, progress=args.progress, bench=args.bench,
        log=lambda s: print(s, flush=True), scheduler=args.scheduler, workers=args.workers,
        threads=args.threads)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
