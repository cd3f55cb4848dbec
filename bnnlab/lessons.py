"""The notebooks' default experiments, as functions that the notebooks and the tests both call.

Each notebook states its lessons in its Summary. Every lesson that is a measured effect comes
from one function here, run by the notebook once (seed 0, within its 30-second budget) and by
``tests/test_lessons.py`` (marker ``lessons``) under several seeds, which asserts that the
lesson holds on every seed or on average, as the notebook claims it. A notebook that changes
its experiment changes it here, so the test follows.

==========================================  ====================================================
function                                    notebook · lesson
==========================================  ====================================================
:func:`ste_vs_no_gradient`                  01 · the STE learns, the true gradient (c = 0) does not
:func:`binarize_and_finetune`               02 · conversion costs accuracy, fine-tuning wins it back
:func:`flip_ratio_experiment`               03 · sign flips are frequent early and become rare
:func:`dashboard_variants`,                 07 · float and binary variants side by side, seeded
:func:`train_variant`,
:func:`compare_variants`
:func:`classroom_experiment`                08 · a float CNN and its binary twin on Fashion-MNIST
==========================================  ====================================================

Every function takes a ``seed`` that sets the initial weights (``torch.manual_seed``), the
shuffling of :func:`bnnlab.train.fit` and, for the Fashion-MNIST experiments, the training
subset and validation split; the same seed gives the same numbers. :class:`Table` renders the
results as an HTML table with units in notebooks (and as text elsewhere).
"""
from __future__ import annotations

import html
import math
import statistics
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import nn

from bnnlab._validation import check_int, check_real

__all__ = [
    "Table",
    "mean_sd",
    "report_table",
    "summary_table",
    "memory_table",
    "fashion_subset",
    "ste_vs_no_gradient",
    "SteResult",
    "binarize_and_finetune",
    "BinarizeResult",
    "flip_ratio_experiment",
    "FlipResult",
    "dashboard_variants",
    "build_variant",
    "train_variant",
    "execution_path",
    "measure_latency",
    "compare_variants",
    "classroom_experiment",
    "ClassroomResult",
]


# =============================================================================================
# Tables and statistics
# =============================================================================================
def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """``(mean, sample standard deviation)``; the deviation is 0 for a single value."""
    vals = [float(v) for v in values]
    if not vals:
        raise ValueError("values must not be empty")
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


@dataclass
class Table:
    """Rows of a result table, shown as an HTML table in a notebook and as text by ``print``.

    Args:
        rows: one dict per row.
        columns: ``{key: header}`` (header with its unit, e.g. ``"latency (µs)"``), in order.
            Default: every key of the first row, as its own header.
        formats: ``{key: format spec or callable}`` for values; floats default to ``".3g"``.
        title: a caption. Default: none.

    Examples::

        >>> Table([{"name": "float", "acc": 0.81234}], {"name": "model", "acc": "accuracy (%)"},
        ...       {"acc": lambda v: f"{100 * v:.1f}"})
    """

    rows: Sequence[Mapping[str, Any]]
    columns: Mapping[str, str] | None = None
    formats: Mapping[str, Any] = field(default_factory=dict)
    title: str | None = None

    def _columns(self) -> dict[str, str]:
        if self.columns is not None:
            return dict(self.columns)
        return {k: k for k in (self.rows[0] if self.rows else {})}

    def cell(self, key: str, value: Any) -> str:
        """The text of one cell."""
        fmt = self.formats.get(key)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "–"
        if callable(fmt):
            return str(fmt(value))
        if fmt is not None:
            return format(value, fmt)
        if isinstance(value, float):
            return format(value, ".3g")
        return str(value)

    def text_rows(self) -> list[list[str]]:
        """Header row, then one list of cell texts per row."""
        cols = self._columns()
        return [list(cols.values())] + [[self.cell(k, r.get(k)) for k in cols] for r in self.rows]

    def _repr_html_(self) -> str:
        head, *body = self.text_rows()
        esc = html.escape
        caption = f"<caption>{esc(self.title)}</caption>" if self.title else ""
        ths = "".join(f"<th style='text-align:left'>{esc(h)}</th>" for h in head)
        trs = "".join("<tr>" + "".join(f"<td style='text-align:left'>{esc(c)}</td>" for c in row)
                      + "</tr>" for row in body)
        return (f"<table class='bnnlab-table'>{caption}<thead><tr>{ths}</tr></thead>"
                f"<tbody>{trs}</tbody></table>")

    def __str__(self) -> str:
        table = self.text_rows()
        widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))] if table[0] else []
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table]
        if widths:
            lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(([self.title] if self.title else []) + lines)

    def __repr__(self) -> str:
        return str(self)


def report_table(report) -> Table:
    """A :class:`bnnlab.convert.ConversionReport` as a :class:`Table` (one row per weight layer)."""
    rows = [{"layer": r.name, "old": r.old_type, "new": r.new_type, "status": r.status,
             "reason": r.reason or "–"} for r in report]
    return Table(rows, {"layer": "layer", "old": "was", "new": "is now", "status": "status",
                        "reason": "reason"},
                 title=f"binarize(layer={report.layer!r}): {len(report.converted)} of "
                       f"{len(report)} weight layers binarised")


def summary_table(s, *, weights_only: bool = True) -> Table:
    """A :class:`bnnlab.summary.Summary` as a :class:`Table`: per layer the weights by bit
    width, the memory (KiB, 1 bit per binary weight) and the MACs split into 1-bit and 32-bit
    ones, and a total row. ``weights_only`` skips layers without parameters."""
    rows = [{"layer": r.name, "type": r.type, "w1": r.weight_bits.get(1, 0),
             "w32": r.weight_bits.get(32, 0), "kib": r.memory_bytes / 1024,
             "bmacs": r.binary_macs, "fmacs": r.float_macs}
            for r in s.records if r.name and (r.params or not weights_only)]
    rows.append({"layer": "total", "type": "", "w1": sum(r["w1"] for r in rows),
                 "w32": sum(r["w32"] for r in rows), "kib": s.memory_bytes / 1024,
                 "bmacs": s.binary_macs, "fmacs": s.float_macs})
    count = "{:,}".format
    return Table(rows, {"layer": "layer", "type": "type", "w1": "1-bit weights",
                        "w32": "32-bit parameters", "kib": "memory (KiB)",
                        "bmacs": "1-bit MACs", "fmacs": "32-bit MACs"},
                 {"w1": count, "w32": count, "kib": ".2f", "bmacs": count, "fmacs": count})


def memory_table(summaries: Mapping[str, Any]) -> Table:
    """``{name: Summary}`` as a :class:`Table`: memory (KiB, 1 bit per binary weight), how many
    times smaller than float32, and the 1-bit and 32-bit MACs of each model."""
    rows = [{"model": n, "kib": s.memory_bytes / 1024, "ratio": s.compression_ratio,
             "b": s.binary_macs, "f": s.float_macs} for n, s in summaries.items()]
    count = "{:,}".format
    return Table(rows, {"model": "model", "kib": "memory (KiB)",
                        "ratio": "smaller than float32 by", "b": "1-bit MACs",
                        "f": "32-bit MACs"},
                 {"kib": ".1f", "ratio": lambda v: f"{v:.2f}×", "b": count, "f": count})


def _percent(v: float) -> str:
    return f"{100 * v:.1f}"


def _pm_percent(pair: tuple[float, float]) -> str:
    m, s = pair
    return f"{100 * m:.1f} ± {100 * s:.1f}"


# =============================================================================================
# 01 · STE against the true gradient
# =============================================================================================
@dataclass
class SteResult:
    """Result of :func:`ste_vs_no_gradient`: ``histories[c]`` and final ``accuracy[c]`` per clip
    value ``c`` (validation part of the digits)."""

    histories: dict[float, Any]
    accuracy: dict[float, float]

    def figure_series(self) -> dict[str, Any]:
        """``{"clip c = …": History}`` for :func:`bnnlab.plots.history_figure`."""
        return {f"clip c = {c:g}": h for c, h in self.histories.items()}


def ste_vs_no_gradient(seed: int = 0, *, hidden: Sequence[int] = (128, 128, 128, 128),
                       epochs: int = 5, lr: float = 3e-3,
                       clip_values: Sequence[float] = (0.0, 1.0), data=None) -> SteResult:
    """Notebook 01: the same binary MLP on the 8×8 digits, trained with STE clip ``c = 0`` (the
    true gradient of the sign: zero) and ``c = 1`` (the STE), same seed, same data.

    With ``c = 0`` no gradient crosses a sign, so only the float classifier (and the last
    BatchNorm) learns, on top of fixed random binary features; three binary layers in a row
    (``hidden`` of length 4) make those features poor, so the gap to the STE is large
    (about 27 points over seeds 0–4, never below 20).

    Args:
        seed: initial weights and shuffling. Default: ``0``.
        hidden: widths of :func:`bnnlab.models.binary_mlp` (``len(hidden) - 1`` binary layers).
        epochs, lr: of :func:`bnnlab.train.fit`. Defaults: ``5``, ``3e-3``.
        clip_values: the ``c`` to compare. Default: ``(0.0, 1.0)``.
        data: a digits split (default: :func:`bnnlab.data.load_digits` ``(flatten=True)``).
    """
    from bnnlab import data as D
    from bnnlab import models, train
    from bnnlab import quantizers as Q

    seed = check_int(seed, "seed", min_value=0)
    epochs = check_int(epochs, "epochs", min_value=1)
    lr = check_real(lr, "lr", min_value=0.0, include_min=False)
    ds = data if data is not None else D.load_digits(flatten=True)
    histories, acc = {}, {}
    for c in clip_values:
        c = check_real(c, "clip_values", min_value=0.0)
        torch.manual_seed(seed)
        net = models.binary_mlp(ds.input_shape[-1], hidden, input_quantizer=Q.SteSign(c),
                                weight_quantizer=Q.SteSign(c))
        histories[c] = train.fit(net, ds, epochs=epochs, lr=lr, progress=False, seed=seed)
        acc[c] = histories[c].val_acc[-1]
    return SteResult(histories, acc)


# =============================================================================================
# 02 · Binarise a trained float model
# =============================================================================================
@dataclass
class BinarizeResult:
    """Result of :func:`binarize_and_finetune` (accuracies on the validation part)."""

    float_model: nn.Module
    binary_model: nn.Module
    report: Any
    data: Any
    float_acc: float
    converted_acc: float
    finetuned_acc: float

    def table(self) -> Table:
        rows = [{"model": "float", "acc": self.float_acc},
                {"model": "binarised copy, before fine-tuning", "acc": self.converted_acc},
                {"model": "binarised copy, fine-tuned", "acc": self.finetuned_acc}]
        return Table(rows, {"model": "model", "acc": "validation accuracy (%)"},
                     {"acc": _percent})


def fashion_subset(seed: int = 0, *, n_train: int = 3000, flatten: bool = True):
    """A seeded Fashion-MNIST subset: ``n_train`` training images, 1,000 validation, 1,000 test
    (the test subset is the same for every seed)."""
    from bnnlab import data as D

    return D.load_fashion_mnist(flatten=flatten, n_train=n_train, val_size=1000, n_test=1000,
                                seed=seed)


def binarize_and_finetune(seed: int = 0, *, hidden: Sequence[int] = (256, 256),
                          activation: str = "hardtanh", epochs: int = 5, lr: float = 3e-3,
                          finetune_epochs: int = 3, finetune_lr: float = 3e-4,
                          n_train: int = 3000, data=None) -> BinarizeResult:
    """Notebook 02: train a float MLP on Fashion-MNIST, binarise its middle layers
    (:func:`bnnlab.convert.binarize_with_report`), measure, fine-tune, measure again.

    Both trainings use Adam with a cosine decay; the fine-tune starts ten times lower (the
    copied latent weights are small, so a large step flips many signs at once and first undoes
    what the float network learnt). Fashion-MNIST rather than the 8×8 digits: on the digits the
    conversion hardly costs anything, so there is nothing to win back.

    Args:
        seed: data subset, initial weights and shuffling. Default: ``0``.
        hidden: widths of the float twin of :func:`bnnlab.models.binary_mlp`.
        activation: the float net's activation; ``"relu"`` shows why sign(ReLU) fails.
        epochs, lr: float training. finetune_epochs, finetune_lr: fine-tune of the copy
            (``finetune_epochs=0`` skips it).
        n_train: training images (:func:`fashion_subset`). data: a split to use instead.
    """
    from bnnlab import convert, models, train

    seed = check_int(seed, "seed", min_value=0)
    epochs = check_int(epochs, "epochs", min_value=1)
    finetune_epochs = check_int(finetune_epochs, "finetune_epochs", min_value=0)
    ds = data if data is not None else fashion_subset(seed, n_train=n_train)
    torch.manual_seed(seed)
    float_net = models.binary_mlp(ds.input_shape[-1], hidden, binary=False, activation=activation)
    train.fit(float_net, ds, epochs=epochs, lr=lr, schedule="cosine", progress=False, seed=seed)
    with warnings.catch_warnings():
        if activation == "relu":  # the sign(ReLU) warning is the point of that run
            warnings.simplefilter("ignore", UserWarning)
        bin_net, report = convert.binarize_with_report(float_net)
    converted = train.evaluate(bin_net, *ds.val)["accuracy"]
    if finetune_epochs:
        train.fit(bin_net, ds, epochs=finetune_epochs, lr=finetune_lr, schedule="cosine",
                  progress=False, seed=seed)
    return BinarizeResult(float_net, bin_net, report, ds,
                          train.evaluate(float_net, *ds.val)["accuracy"], converted,
                          train.evaluate(bin_net, *ds.val)["accuracy"])


# =============================================================================================
# 03 · Flip ratio
# =============================================================================================
@dataclass
class FlipResult:
    """Result of :func:`flip_ratio_experiment`: the trained ``model``, the ``SignStats`` and
    ``FlipRatio`` callbacks, the ``History``, and the mean flip ratio over the binary layers per
    epoch (``epoch_flips[e]``, mean of the per-step ratios of epoch ``e + 1``)."""

    model: nn.Module
    stats: Any
    flips: Any
    history: Any
    epoch_flips: list[float]


def flip_ratio_experiment(seed: int = 0, *, hidden: Sequence[int] = (128, 128, 128, 128),
                          epochs: int = 6, lr: float = 3e-3, data=None) -> FlipResult:
    """Notebook 03: a binary MLP on the 8×8 digits trained with the ``SignStats`` (probe: the
    validation inputs) and per-step ``FlipRatio`` callbacks.

    Args:
        seed: initial weights and shuffling. Default: ``0``.
        hidden: widths of :func:`bnnlab.models.binary_mlp`. epochs, lr: of the fit.
        data: a split (default: :func:`bnnlab.data.load_digits` ``(flatten=True)``).
    """
    from bnnlab import analysis as A
    from bnnlab import data as D
    from bnnlab import models, train

    seed = check_int(seed, "seed", min_value=0)
    epochs = check_int(epochs, "epochs", min_value=1)
    ds = data if data is not None else D.load_digits(flatten=True)
    torch.manual_seed(seed)
    net = models.binary_mlp(ds.input_shape[-1], hidden)
    stats, flips = A.SignStats(probe=ds.val[0]), A.FlipRatio(every="step")
    history = train.fit(net, ds, epochs=epochs, lr=lr, callbacks=[stats, flips], progress=False,
                        seed=seed)
    per_step = [statistics.fmean(vals) for vals in zip(*flips.history.values(), strict=True)]
    n = len(per_step) // epochs if epochs else 0
    epoch_flips = [statistics.fmean(per_step[e * n:(e + 1) * n]) for e in range(epochs)] if n else []
    return FlipResult(net, stats, flips, history, epoch_flips)


# =============================================================================================
# 07 · The live dashboard
# =============================================================================================
def dashboard_variants(in_features: int = 784, hidden: Sequence[int] = (128, 128, 128)
                       ) -> dict[str, Callable[[], nn.Module]]:
    """Notebook 07's variants: ``{name: factory}`` for the float twin (hardtanh), BinaryNet,
    and XNOR-Net and XNOR-Net++ converted from the float twin, all of shape
    ``in_features - hidden - 10`` with float first and last layers."""
    from bnnlab import convert, models

    float_mlp = partial(models.binary_mlp, in_features, tuple(hidden), binary=False,
                        activation="hardtanh")
    return {
        "float": float_mlp,
        "BinaryNet": partial(models.binary_mlp, in_features, tuple(hidden)),
        "XNOR-Net": lambda: convert.binarize(float_mlp(), layer="xnor"),
        "XNOR-Net++": lambda: convert.binarize(float_mlp(), layer="xnor++"),
    }


def build_variant(spec, seed: int = 0, *, name: str = "spec") -> nn.Module:
    """``spec`` itself if it is a model, else ``spec()`` built under ``torch.manual_seed(seed)``
    (the initial weights of seed ``seed``); a :class:`TypeError` naming ``name`` otherwise."""
    seed = check_int(seed, "seed", min_value=0)
    if isinstance(spec, nn.Module):
        return spec
    if not callable(spec):
        raise TypeError(f"{name} must be an nn.Module or a factory of one, got "
                        f"{type(spec).__name__}")
    torch.manual_seed(seed)
    model = spec()
    if not isinstance(model, nn.Module):
        raise TypeError(f"{name} must be an nn.Module or a factory of one; the factory returned "
                        f"{type(model).__name__}")
    return model


def train_variant(spec, data, *, seed: int = 0, epochs: int = 3, lr: float = 1e-3,
                  batch_size: int = 64, callbacks=(), **fit_kw) -> tuple[nn.Module, Any]:
    """Build one variant (:func:`build_variant`) and fit it with shuffling seed ``seed``: what
    the live dashboard does for each variant and seed. ``spec`` is a model or a factory of one.

    Returns:
        ``(model, history)``.
    """
    from bnnlab import train

    model = build_variant(spec, seed)
    history = train.fit(model, data, epochs=epochs, lr=lr, batch_size=batch_size,
                        callbacks=list(callbacks), progress=False, seed=seed, **fit_kw)
    return model, history


def execution_path(model: nn.Module) -> tuple[str, str, Any]:
    """Which inference path bnnlab has for ``model``, and why.

    Returns:
        ``(path, why, runner)``: ``path`` is ``"packed"`` (:func:`bnnlab.packed.export`
        succeeded) or ``"torch"``; ``why`` is a short reason (the export's refusal, or whether
        the binary layers were fused into one packed chain or need float work in between,
        from ``PackedModel.notes``); ``runner`` is the packed model or ``model`` itself.
    """
    from bnnlab import packed

    was_training = model.training
    model.eval()
    try:
        runner = packed.export(model)
    except ValueError as exc:
        msg = str(exc)
        if "no binary layer" in msg:
            why = "no binary layer to pack"
        elif "(" in msg and "):" in msg:  # "cannot export layer '4' (AbcLinear): only ..."
            why = f"no packed kernel for {msg.split('(', 1)[1].split(')', 1)[0]}"
        else:
            why = f"not exportable: {msg.split(':')[0]}"
        return "torch", why, model
    finally:
        model.train(was_training)
    unfused = [n.split("not fused (", 1)[1].rsplit(");", 1)[0]
               for n in runner.notes if "not fused (" in n]
    if unfused:
        why = f"binary layers not fused: {unfused[0]}"
    else:
        why = "binary layers fused: signs stay packed"
    return "packed", why, runner


def measure_latency(model: nn.Module, x) -> dict[str, Any]:
    """``{"latency_ms", "path", "why"}``: median batch latency of ``model(x)`` on the path of
    :func:`execution_path` (:func:`bnnlab.bench.latency`)."""
    from bnnlab import bench

    path, why, runner = execution_path(model)
    was_training = model.training
    model.eval()
    try:
        seconds = bench.latency(runner, x)
    finally:
        model.train(was_training)
    return {"latency_ms": 1e3 * seconds, "path": path, "why": why}


def compare_variants(seeds: Sequence[int] = (0,), *, variants=None, data=None,
                     epochs: int = 3, lr: float = 3e-3, batch_size: int = 128,
                     n_train: int = 2000, schedule: str | None = "cosine",
                     latency: bool = False) -> dict[str, dict[str, Any]]:
    """Notebook 07 without the widget: train every variant under every seed (as
    :class:`bnnlab.widgets.LiveComparison` does, through :func:`train_variant`).

    Args:
        seeds: weight/shuffle seeds. The data are one split (``data``, or
            :func:`fashion_subset` of seed 0 with ``n_train`` images) for all seeds.
        variants: ``{name: factory}``; default :func:`dashboard_variants`.
        epochs, lr, batch_size, schedule: of the fit (Adam).
        latency: also measure :func:`measure_latency` on one image (first seed's model).

    Returns:
        ``{name: {"accuracy": [per seed], ...}}`` (validation accuracy), plus the
        :func:`measure_latency` keys when ``latency``.
    """
    from bnnlab import train

    ds = data if data is not None else fashion_subset(0, n_train=n_train)
    variants = variants if variants is not None else dashboard_variants(ds.input_shape[-1])
    out: dict[str, dict[str, Any]] = {}
    for name, spec in variants.items():
        accs = []
        for i, seed in enumerate(seeds):
            model, _ = train_variant(spec, ds, seed=seed, epochs=epochs, lr=lr,
                                     batch_size=batch_size, schedule=schedule)
            accs.append(train.evaluate(model, *ds.val)["accuracy"])
            if latency and i == 0:
                out[name] = measure_latency(model, ds.val[0][:1])
        out.setdefault(name, {})["accuracy"] = accs
    return out


# =============================================================================================
# 08 · Classroom demonstration
# =============================================================================================
@dataclass
class ClassroomResult:
    """Result of :func:`classroom_experiment`: both trained CNNs, their histories, the data,
    and test accuracies."""

    float_model: nn.Module
    binary_model: nn.Module
    histories: dict[str, Any]
    data: Any
    float_acc: float
    binary_acc: float


def classroom_experiment(seed: int = 0, *, n_train: int = 2000, epochs: int = 2,
                         widths: Sequence[int] = (16, 32, 32), lr: float = 2e-3,
                         batch_size: int = 64, schedule: str | None = None, data=None,
                         callbacks_for: Callable[[str], Sequence] | None = None
                         ) -> ClassroomResult:
    """Notebook 08: a float CNN and its binary twin (:func:`bnnlab.models.binary_cnn`,
    ``channels=widths``) trained on the same Fashion-MNIST subset with the same seed and
    optimiser; test accuracy of each.

    Args:
        seed: data subset, initial weights, shuffling. Default: ``0``.
        n_train: training images. epochs, lr, batch_size, schedule: of the fit.
        widths: the CNN's conv widths.
        data: an image split to use instead of :func:`fashion_subset` (``flatten=False``).
        callbacks_for: ``name -> callbacks`` for ``"float"`` and ``"binary"`` (e.g. a progress
            bar in the notebook's Train button). Default: none.
    """
    from bnnlab import models, train

    seed = check_int(seed, "seed", min_value=0)
    epochs = check_int(epochs, "epochs", min_value=1)
    ds = data if data is not None else fashion_subset(seed, n_train=n_train, flatten=False)
    nets, hist = {}, {}
    for name, binary in (("float", False), ("binary", True)):
        torch.manual_seed(seed)
        nets[name] = models.binary_cnn(channels=tuple(widths), binary=binary)
        cbs = list(callbacks_for(name)) if callbacks_for is not None else []
        hist[name] = train.fit(nets[name], ds, epochs=epochs, lr=lr, batch_size=batch_size,
                               schedule=schedule, callbacks=cbs, progress=False, seed=seed)
    acc = {n: train.evaluate(m, *ds.test)["accuracy"] for n, m in nets.items()}
    return ClassroomResult(nets["float"], nets["binary"], hist, ds, acc["float"], acc["binary"])
