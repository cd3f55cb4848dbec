"""ipywidgets dashboards built from :mod:`bnnlab.analysis` (data) and :mod:`bnnlab.plots` (figures).

Each builder returns one widget (a :class:`ipywidgets.VBox` subclass) that shows in a notebook
cell as is, and that can be driven from Python without a browser: its controls are in
``.controls`` (a dict), its figures are ``go.FigureWidget`` attributes, and moving a control
(``w.controls["clip_value"].value = 0.5``) refreshes the figures synchronously, in one
``batch_update``. Long operations (fine-tuning, training several variants) show an
:class:`ipywidgets.IntProgress`, can be stopped with a Stop button, and have a plain ``run()``
method that does the same work without the buttons (what tests and scripts call).

A button click runs the work in a background thread (``background=True``, the default), so that
the notebook kernel keeps processing widget events, including the Stop button, during training.

=========================================  =================================================
builder                                    shows
=========================================  =================================================
:func:`quantizer_explorer`                 q(x), surrogate, smoothed derivative, mismatch
:func:`binarize_explorer`                  which layers to binarise: memory/MACs, accuracy
:func:`sign_distribution_explorer`         latent-value histograms per layer × epoch
:func:`gradient_mismatch_explorer`         per-layer cosine(STE, reference) over training
:func:`live_comparison`                    several variants trained side by side
:func:`bit_packing_explorer`               64 signs in one word; XOR + popcount = dot product
:func:`classroom_trainer`                  08's demo: train float + binary, mistakes, scoreboard
:func:`load_or_offer_download`             a missing data set: what, the apt command, Download
=========================================  =================================================
"""
from __future__ import annotations

import html
import math
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import ipywidgets as W
import numpy as np
import plotly.graph_objects as go
import torch
from torch import nn

from bnnlab import analysis as A
from bnnlab import plots as P

__all__ = [
    "quantizer_explorer",
    "binarize_explorer",
    "sign_distribution_explorer",
    "gradient_mismatch_explorer",
    "live_comparison",
    "bit_packing_data",
    "bit_packing_explorer",
    "classroom_trainer",
    "default_latency_fn",
    "LIVE_TABLE_COLUMNS",
    "QuantizerExplorer",
    "BinarizeExplorer",
    "SignDistributionExplorer",
    "GradientMismatchExplorer",
    "LiveComparison",
    "BitPackingExplorer",
    "ClassroomTrainer",
    "load_or_offer_download",
    "DataDownload",
    "DataMissing",
]


# =============================================================================================
# Shared machinery
# =============================================================================================
def _sync(fw: go.FigureWidget, fig: go.Figure) -> None:
    """Copy the traces and title of a freshly built ``fig`` into ``fw`` (one batch update)."""
    same = len(fw.data) == len(fig.data) and all(
        a.type == b.type for a, b in zip(fw.data, fig.data, strict=False))
    if not same:
        fw.data = []
        fw.add_traces(list(fig.data))
    with fw.batch_update():
        if same:
            for old, new in zip(fw.data, fig.data, strict=True):
                spec = new.to_plotly_json()
                spec.pop("type", None)
                old.update(spec, overwrite=True)
        fw.layout.title = fig.layout.title
        # axis titles, ranges and formats follow the new figure (a metric change must
        # retitle the y axis); so do subplot titles (annotations) and marker lines (shapes)
        for key in fig.layout:
            if key.startswith(("xaxis", "yaxis")):
                fw.layout[key] = fig.layout[key]
        fw.layout.annotations = fig.layout.annotations
        fw.layout.shapes = fig.layout.shapes


class _Progress:
    """fit callback: advances an IntProgress per batch, stops when ``should_stop()``, and calls
    ``on_epoch(epoch, history)`` after each epoch."""

    def __init__(self, bar: W.IntProgress, should_stop: Callable[[], bool],
                 on_epoch: Callable | None = None) -> None:
        self.bar, self.should_stop, self.on_epoch = bar, should_stop, on_epoch
        self.stop_training = False

    def on_batch_end(self, batch, loss, model) -> None:
        self.bar.value = min(self.bar.max, self.bar.value + 1)
        self.stop_training = bool(self.should_stop())

    def on_epoch_end(self, epoch, history, model) -> None:
        if self.on_epoch is not None:
            self.on_epoch(epoch, history)


class _Runner:
    """Run / Stop buttons, a progress bar and a status line around a ``run()`` method."""

    def _init_runner(self, label: str, background: bool) -> None:
        self.background = bool(background)
        self.run_button = W.Button(description=label, button_style="primary", icon="play")
        self.stop_button = W.Button(description="Stop", button_style="warning", icon="stop",
                                    disabled=True)
        self.progress = W.IntProgress(value=0, min=0, max=1, description="progress")
        self.status = W.Label(value="")
        self.run_button.on_click(lambda _: self.start())
        self.stop_button.on_click(lambda _: self.stop())
        self._stop_requested = False
        self._thread: threading.Thread | None = None

    def _runner_box(self) -> W.HBox:
        return W.HBox([self.run_button, self.stop_button, self.progress, self.status])

    def run(self):  # pragma: no cover - every widget defines its own
        raise NotImplementedError

    def stop(self) -> None:
        """Ask the running work to stop after the current batch."""
        self._stop_requested = True

    def start(self) -> None:
        """What the Run button does: :meth:`run` in a background thread (or inline)."""
        if self._thread is not None and self._thread.is_alive():
            return
        if self.background:
            self._thread = threading.Thread(target=self._guarded_run, daemon=True)
            self._thread.start()
        else:
            self._guarded_run()

    def _guarded_run(self) -> None:
        try:
            self.run()
        except Exception as exc:  # shown in the widget: a thread has nowhere else to report
            self.status.value = f"error: {type(exc).__name__}: {exc}"
            if not self.background:
                raise
        finally:
            self.run_button.disabled, self.stop_button.disabled = False, True

    def _begin(self, total_steps: int) -> None:
        self._stop_requested = False
        self.progress.max, self.progress.value = max(1, total_steps), 0
        self.run_button.disabled, self.stop_button.disabled = True, False

    def _end(self, message: str) -> None:
        self.run_button.disabled, self.stop_button.disabled = False, True
        self.status.value = ("stopped: " if self._stop_requested else "") + message


def _parts(data):
    """(train, val) pairs of a Split-like object or an (x, y) pair (val falls back to train)."""
    if hasattr(data, "train"):
        val = getattr(data, "val", None)
        return data.train, (val if val is not None and len(val[0]) else data.train)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return tuple(data), tuple(data)
    raise TypeError("data must be a bnnlab.data.Split or a pair (x, y) of tensors")


def _steps(data, epochs: int, batch_size: int) -> int:
    return epochs * math.ceil(len(_parts(data)[0][0]) / batch_size)


# =============================================================================================
# Quantizer explorer
# =============================================================================================
class QuantizerExplorer(W.VBox):
    """See :func:`quantizer_explorer`."""

    def __init__(self, x_range=(-3.0, 3.0), n_points: int = 601) -> None:
        self.x = np.linspace(float(x_range[0]), float(x_range[1]), int(n_points))
        slider = dict(continuous_update=False, readout_format=".2f",
                      style={"description_width": "initial"})
        self.controls = {
            "quantizer": W.Dropdown(options=list(A.EXPLORER_QUANTIZERS), description="quantizer"),
            "clip_value": W.FloatSlider(1.0, min=0.25, max=3.0, step=0.05,
                                        description="clip_value c", **slider),
            "beta": W.FloatSlider(5.0, min=0.5, max=20.0, step=0.5, description="SwishSign β",
                                  **slider),
            "noise": W.Dropdown(options=list(A.NOISES), description="noise"),
            "scale": W.FloatSlider(1.0, min=0.05, max=3.0, step=0.05,
                                   description="noise scale s", **slider),
            "normalize": W.Checkbox(False, description="normalize the surrogate"),
        }
        self.figure = go.FigureWidget(P.quantizer_figure(self.curves()))
        for c in self.controls.values():
            c.observe(lambda _: self.update(), names="value")
        c = self.controls
        super().__init__([W.HBox([c["quantizer"], c["clip_value"], c["beta"]]),
                          W.HBox([c["noise"], c["scale"], c["normalize"]]), self.figure])

    def curves(self) -> dict:
        """The curves for the current controls (mismatch on the fine default grid)."""
        v = {k: w.value for k, w in self.controls.items()}
        q = A.make_quantizer(v["quantizer"], clip_value=v["clip_value"], beta=v["beta"])
        out = A.mismatch_curves(q, v["noise"], v["scale"], x=self.x, normalize=v["normalize"])
        out["mismatch"] = A.surrogate_mismatch(q, v["noise"], v["scale"],
                                               normalize=v["normalize"])
        return out

    def update(self) -> None:
        _sync(self.figure, P.quantizer_figure(self.curves()))


def quantizer_explorer(x_range=(-3.0, 3.0), n_points: int = 601) -> QuantizerExplorer:
    """Choose a quantizer and its parameters; see :math:`q(x)`, its surrogate gradient, the
    derivative of the smoothed sign :math:`\\mathbb{E}[\\operatorname{sign}(x + s\\varepsilon)]`
    for the chosen noise and scale, and their L1 mismatch (figure title).

    Controls (``.controls``): ``quantizer``, ``clip_value``, ``beta`` (SwishSign), ``noise``,
    ``scale``, ``normalize``. Figure (``.figure``): traces ``q(x)``, surrogate, smoothed.

    Args:
        x_range: plotted interval. Default: ``(-3, 3)``.
        n_points: plotted grid size. Default: ``601``.
    """
    return QuantizerExplorer(x_range, n_points)


# =============================================================================================
# Binarize explorer
# =============================================================================================
_CANDIDATES = (nn.Linear, nn.Conv1d, nn.Conv2d)


class BinarizeExplorer(_Runner, W.VBox):
    """See :func:`binarize_explorer`."""

    def __init__(self, model_fn: Callable[[], nn.Module], data, *, input_shape=None,
                 families=None, epochs: int = 1, lr: float = 1e-3, batch_size: int = 64,
                 fit_kw: Mapping | None = None, background: bool = True) -> None:
        from bnnlab.convert import FAMILIES

        if not callable(model_fn):
            raise TypeError("model_fn must be a callable returning a float nn.Module")
        self.model_fn, self.data = model_fn, data
        self.input_shape = tuple(input_shape or _parts(data)[0][0].shape[1:])
        self.epochs, self.lr, self.batch_size = epochs, lr, batch_size
        self.fit_kw = dict(fit_kw or {})
        self.results: list[dict] = []
        mods = [(n, m) for n, m in model_fn().named_modules() if type(m) in _CANDIDATES]
        names = [n for n, _ in mods]
        self.controls = {n: W.Checkbox(value=0 < i < len(names) - 1, indent=False,
                                       description=_layer_label(i, m),
                                       layout=W.Layout(width="auto"))
                         for i, (n, m) in enumerate(mods)}
        self.controls["family"] = W.Dropdown(options=list(families or FAMILIES),
                                             description="family")
        self._init_runner("Fine-tune", background)
        self.summary_figure = go.FigureWidget(P.summary_figure(self.summary()))
        self.accuracy_figure = go.FigureWidget(self._accuracy_fig())
        for c in self.controls.values():
            c.observe(lambda _: self.update(), names="value")
        boxes = [c for n, c in self.controls.items() if n != "family"]
        super().__init__([W.HBox([self.controls["family"], *boxes]), self.summary_figure,
                          self._runner_box(), self.accuracy_figure])

    @property
    def selected(self) -> list[str]:
        """Names of the layers ticked for binarisation."""
        return [n for n, c in self.controls.items() if n != "family" and c.value]

    def build(self, example_input: Any = None) -> nn.Module:
        """A fresh ``model_fn()`` with the ticked layers binarised in the chosen family
        (``example_input``: probe it, see :func:`bnnlab.convert.binarize`)."""
        from bnnlab.convert import binarize

        return binarize(self.model_fn(), layer=self.controls["family"].value,
                        include=self.selected, keep_first=False, keep_last=False,
                        example_input=example_input)

    def summary(self):
        from bnnlab.summary import summary

        return summary(self.build(), self.input_shape)

    def update(self) -> None:
        _sync(self.summary_figure, P.summary_figure(self.summary()))

    def _accuracy_fig(self) -> go.Figure:
        return P.bars_figure([r["name"] for r in self.results],
                             [r["accuracy"] for r in self.results],
                             title="validation accuracy after fine-tuning",
                             yaxis_title="validation accuracy", fmt=".1%")

    def run(self) -> dict:
        """Binarise, fine-tune for ``epochs`` (progress, stoppable), evaluate on the validation
        part, append a result row and refresh the accuracy bars. Returns the row."""
        import warnings

        from bnnlab.train import evaluate, fit

        with warnings.catch_warnings(record=True) as caught:   # shown in the row and the status
            warnings.simplefilter("always")
            model = self.build(example_input=_parts(self.data)[0][0][:256])
        notes = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
        self._begin(_steps(self.data, self.epochs, self.batch_size))
        cb = _Progress(self.progress, lambda: self._stop_requested)
        fit(model, self.data, epochs=self.epochs, lr=self.lr, batch_size=self.batch_size,
            callbacks=[cb], progress=False, **self.fit_kw)
        acc = evaluate(model, *_parts(self.data)[1])["accuracy"]
        name = f"{self.controls['family'].value}: {', '.join(self.selected) or 'none'}"
        row = {"name": f"#{len(self.results) + 1} {name}", "accuracy": acc,
               "memory_kib": self.summary().memory_bytes / 1024, "warning": " ".join(notes)}
        self.results.append(row)
        _sync(self.accuracy_figure, self._accuracy_fig())
        self._end(f"{row['name']}: validation accuracy {acc:.1%}"
                  + (f" (warning: {row['warning']})" if notes else ""))
        return row


def _layer_label(i: int, m: nn.Module) -> str:
    """``"layer 2: Linear 256→256"``: what a checkbox of the binarize explorer says."""
    if isinstance(m, nn.Linear):
        shape = f"{m.in_features}→{m.out_features}"
    else:
        k = "×".join(str(v) for v in m.kernel_size)  # type: ignore[union-attr]
        shape = f"{m.in_channels}→{m.out_channels}, {k}"
    return f"layer {i + 1}: {type(m).__name__} {shape}"


def binarize_explorer(model_fn: Callable[[], nn.Module], data, *, input_shape=None,
                      families=None, epochs: int = 1, lr: float = 1e-3, batch_size: int = 64,
                      fit_kw: Mapping | None = None, background: bool = True) -> BinarizeExplorer:
    """Pick which layers of a float model to binarise and with which family; see the memory and
    MACs per layer at once, and the validation accuracy after a short fine-tune.

    Controls (``.controls``): one checkbox per ``nn.Linear``/``nn.Conv1d``/``nn.Conv2d`` of the
    model (by module name; all but the first and last ticked), and ``family``
    (:data:`bnnlab.convert.FAMILIES`). Figures: ``.summary_figure``
    (:func:`bnnlab.plots.summary_figure`, refreshed on every change) and ``.accuracy_figure``
    (one bar per fine-tuned configuration). ``Fine-tune`` runs :meth:`BinarizeExplorer.run`
    (progress bar, Stop button); results are kept in ``.results``.

    Args:
        model_fn: returns a (possibly pre-trained) float model; called for every build (each
            control change rebuilds the summary), so keep it cheap, e.g.
            ``lambda: copy.deepcopy(pretrained)``; its float weights start each fine-tune.
        data: a :class:`bnnlab.data.Split` (fits ``train``, reports ``val``).
        input_shape: one sample's shape for the summary; default: from ``data``.
        families: the dropdown's families. Default: all of :data:`bnnlab.convert.FAMILIES`.
        epochs, lr, batch_size: of the fine-tune. fit_kw: more :func:`bnnlab.train.fit` arguments.
        background: run the button's work in a thread (keeps Stop responsive). Default: ``True``.
    """
    return BinarizeExplorer(model_fn, data, input_shape=input_shape, families=families,
                            epochs=epochs, lr=lr, batch_size=batch_size, fit_kw=fit_kw,
                            background=background)


# =============================================================================================
# Sign-distribution explorer
# =============================================================================================
class SignDistributionExplorer(W.VBox):
    """See :func:`sign_distribution_explorer`."""

    def __init__(self, history) -> None:
        h = history.history if isinstance(history, A.SignStats) else history
        if not isinstance(h, A.SignHistory):
            raise TypeError("sign_stats_history must be a bnnlab.analysis.SignStats or SignHistory")
        if not h.epochs or not h.layers:
            raise ValueError("sign_stats_history is empty: train with the SignStats callback first")
        self.history = h
        layers = list(h.layers)
        kinds = ["weights"] + (["inputs"] if "input_counts" in h.layers[layers[0]] else [])
        self.controls = {
            "layer": W.Dropdown(options=layers, description="layer"),
            "values": W.ToggleButtons(options=kinds, description="values"),
            "epoch": W.SelectionSlider(options=list(h.epochs), value=h.epochs[-1],
                                       description="epoch", continuous_update=False),
        }
        self.figure = go.FigureWidget(self._figure())
        for c in self.controls.values():
            c.observe(lambda _: self.update(), names="value")
        super().__init__([W.HBox(list(self.controls.values())), self.figure])

    def _figure(self) -> go.Figure:
        h, v = self.history, {k: c.value for k, c in self.controls.items()}
        i, rec = h.epochs.index(v["epoch"]), h.layers[v["layer"]]
        counts, frac = (("weight_counts", "fraction_positive") if v["values"] == "weights"
                        else ("input_counts", "input_fraction_positive"))
        return P.sign_distribution_figure(
            h.edges, rec[counts][i], h.epochs, rec[frac], i,
            title=f"layer {v['layer']}: {v['values']} at epoch {v['epoch']}")

    def update(self) -> None:
        _sync(self.figure, self._figure())


def sign_distribution_explorer(sign_stats_history) -> SignDistributionExplorer:
    """Histogram of a layer's latent weights (or inputs) at one epoch, and its share of +1 over
    training, from a :class:`bnnlab.analysis.SignStats` callback (or its ``.history``).

    Controls (``.controls``): ``layer`` (dropdown), ``values`` (``"weights"``, and ``"inputs"``
    when the callback had a probe batch), ``epoch`` (slider over the snapshots). Figure
    (``.figure``): :func:`bnnlab.plots.sign_distribution_figure`.
    """
    return SignDistributionExplorer(sign_stats_history)


# =============================================================================================
# Gradient-mismatch explorer
# =============================================================================================
_GM_METRICS = ("cosine", "rel_error", "norm_ratio")


class GradientMismatchExplorer(W.VBox):
    """See :func:`gradient_mismatch_explorer`."""

    def __init__(self, results) -> None:
        if isinstance(results, A.GradientMismatch):
            results = {"model": results}
        if not isinstance(results, Mapping) or not results or not all(
                isinstance(r, A.GradientMismatch) and r.results for r in results.values()):
            raise TypeError("results must be a non-empty dict {name: GradientMismatch} of "
                            "callbacks that have measured at least once")
        self.results = dict(results)
        layers = list(dict.fromkeys(n for gm in self.results.values() for n in gm.layer_names))
        refs = list(dict.fromkeys(r for gm in self.results.values() for r in gm.references))
        self.controls = {
            "layer": W.Dropdown(options=["mean over layers", *layers], description="layer"),
            "reference": W.Dropdown(options=refs, description="reference"),
            "metric": W.Dropdown(options=[(P.label(m), m) for m in _GM_METRICS],
                                 description="metric"),
        }
        self.figure = go.FigureWidget(self._figure())
        for c in self.controls.values():
            c.observe(lambda _: self.update(), names="value")
        super().__init__([W.HBox(list(self.controls.values())), self.figure])

    def series(self) -> dict[str, tuple[list, list]]:
        """``{name: (epochs, values)}`` for the current controls (missing layers: skipped)."""
        v = {k: c.value for k, c in self.controls.items()}
        layer = None if v["layer"] == "mean over layers" else v["layer"]
        return {name: (gm.epochs, gm.series(v["metric"], v["reference"], layer))
                for name, gm in self.results.items()
                if (layer is None or layer in gm.layer_names) and v["reference"] in gm.references}

    def _figure(self) -> go.Figure:
        v = {k: c.value for k, c in self.controls.items()}
        name = P.label(v["metric"])
        # cosine lives in [-1, 1]: a fixed axis; the ratios start at 0. Either way, noise of
        # 1e-4 is not magnified into a trend.
        fig = P.curves_figure(self.series(), yaxis_title=name, yformat=".3f",
                              title=f"{name} of the STE gradient vs {v['reference']} — "
                                    f"{v['layer']}",
                              yrange=(-1.05, 1.05) if v["metric"] == "cosine" else None)
        if v["metric"] != "cosine":
            fig.update_yaxes(rangemode="tozero")
        return fig

    def update(self) -> None:
        _sync(self.figure, self._figure())


def gradient_mismatch_explorer(results) -> GradientMismatchExplorer:
    """Per-layer agreement between the STE gradient and a reference gradient over training, one
    line per quantizer (or model variant).

    Args:
        results: ``{name: GradientMismatch}`` (callbacks that ran during :func:`bnnlab.train.fit`,
            e.g. one per weight/input quantizer), or a single :class:`GradientMismatch`.

    Controls (``.controls``): ``layer`` (or the mean over layers), ``reference`` (``"tanh β=…"``
    or ``"mc σ=…"``), ``metric`` (``cosine``, ``rel_error``, ``norm_ratio``). Figure
    (``.figure``): one trace per name, in the order of ``results``.
    """
    return GradientMismatchExplorer(results)


# =============================================================================================
# Bit-packing explorer (05)
# =============================================================================================
def bit_packing_data(k: int = 64, seed: int = 0, agreement: float = 0.5) -> dict:
    """Two random ±1 vectors of length ``k``, their packed words and their dot product, the
    last computed three ways: by the packed kernel (:func:`bnnlab.kernels.xnor_matmul`), as
    ``k - 2 * popcount(a XOR b)`` on the words, and in float.

    Args:
        k: number of signs (1–512). seed: random seed.
        agreement: probability that ``b[j]`` has the sign of ``a[j]`` (0–1).

    Returns:
        ``{"a", "b"`` (float32 arrays of ±1), ``"words_a", "words_b"`` (``uint64`` lists),
        ``"popcount"``, ``"dot_kernel"``, ``"dot_popcount"``, ``"dot_float"``, ``"k"}``.
    """
    from bnnlab import kernels
    from bnnlab._validation import check_int, check_real

    k = check_int(k, "k", min_value=1, max_value=512)
    agreement = check_real(agreement, "agreement", min_value=0.0, max_value=1.0)
    rng = np.random.default_rng(check_int(seed, "seed", min_value=0))
    a = np.where(rng.random(k) < 0.5, -1.0, 1.0).astype(np.float32)
    b = np.where(rng.random(k) < agreement, a, -a).astype(np.float32)
    pa, pb = kernels.pack_signs(a[None]), kernels.pack_signs(b[None])
    wa, wb = pa.words[0].tolist(), pb.words[0].tolist()
    popcount = sum(bin(x ^ y).count("1") for x, y in zip(wa, wb, strict=True))
    return {"k": k, "a": a, "b": b, "words_a": wa, "words_b": wb, "popcount": popcount,
            "dot_kernel": int(kernels.xnor_matmul(pa, pb)[0, 0]),
            "dot_popcount": k - 2 * popcount, "dot_float": float(a @ b)}


class BitPackingExplorer(W.VBox):
    """See :func:`bit_packing_explorer`."""

    def __init__(self, k: int = 64) -> None:
        style = {"description_width": "initial"}
        self.controls = {
            "k": W.IntSlider(k, min=1, max=128, description="number of signs K",
                             continuous_update=False, style=style),
            "agreement": W.FloatSlider(0.5, min=0.0, max=1.0, step=0.05,
                                       description="share of equal signs",
                                       continuous_update=False, readout_format=".0%",
                                       style=style),
            "seed": W.IntSlider(0, min=0, max=20, description="random draw",
                                continuous_update=False, style=style),
            "compare": W.Checkbox(True, description="second vector b: XOR + popcount",
                                  indent=False),
        }
        self.figure = go.FigureWidget(self._figure())
        for c in self.controls.values():
            c.observe(lambda _: self.update(), names="value")
        c = self.controls
        super().__init__([W.HBox([c["k"], c["agreement"]]), W.HBox([c["seed"], c["compare"]]),
                          self.figure])

    def data(self) -> dict:
        """:func:`bit_packing_data` for the current controls."""
        v = {k: c.value for k, c in self.controls.items()}
        return bit_packing_data(v["k"], v["seed"], v["agreement"])

    def _figure(self) -> go.Figure:
        d = self.data()
        if self.controls["compare"].value:
            return P.bit_packing_figure(d["a"], d["b"], words_a=d["words_a"],
                                        words_b=d["words_b"], dot=d["dot_kernel"])
        return P.bit_packing_figure(d["a"], words_a=d["words_a"])

    def update(self) -> None:
        fig = self._figure()
        _sync(self.figure, fig)
        self.figure.layout.height = fig.layout.height


def bit_packing_explorer(k: int = 64) -> BitPackingExplorer:
    """See ``K`` signs become bits (1 ⇔ −1) in 64-bit words, and the dot product of two sign
    vectors become ``K − 2·popcount(a XOR b)``: the figure's title compares it with the packed
    kernel's result (:func:`bnnlab.kernels.xnor_matmul`).

    Controls (``.controls``): ``k`` (1–128 signs; a second word starts at 65), ``agreement``
    (share of equal signs in ``b``), ``seed``, ``compare`` (show ``b`` and the XOR).
    Figure (``.figure``): :func:`bnnlab.plots.bit_packing_figure`.
    """
    return BitPackingExplorer(k)


# =============================================================================================
# Classroom trainer (08)
# =============================================================================================
class ClassroomTrainer(_Runner, W.VBox):
    """See :func:`classroom_trainer`."""

    def __init__(self, models: Mapping, data, *, epochs: int = 2, lr: float = 2e-3,
                 batch_size: int = 64, input_shape=None, background: bool = True) -> None:
        from bnnlab._validation import check_int

        if not isinstance(models, Mapping) or len(models) < 1:
            raise TypeError("models must be a non-empty dict {name: model factory}")
        if not all(callable(f) for f in models.values()):
            raise TypeError("models must map names to callables returning an nn.Module")
        self.factories, self.data = dict(models), data
        self.epochs = check_int(epochs, "epochs", min_value=1)
        self.lr, self.batch_size = lr, batch_size
        self.input_shape = tuple(input_shape or _parts(data)[0][0].shape[1:])
        self.models: dict[str, nn.Module] = {}
        self.histories: dict = {}
        self.rows: list[dict] = []
        self.controls = {"epochs": W.IntSlider(self.epochs, min=1, max=10, description="epochs",
                                               continuous_update=False)}
        self._init_runner("Train", background)
        self.curves_figure = go.FigureWidget(self._curves_fig())
        self.curves_box = W.VBox([self.curves_figure])
        self.mistakes_figure: go.FigureWidget | None = None  # built after a run
        self.mistakes_box = W.VBox([])
        self.scoreboard = W.HTML(value="<i>Click Train: the scoreboard appears here.</i>")
        super().__init__([W.HBox([self.controls["epochs"], *self._runner_box().children]),
                          self.curves_box, self.mistakes_box, self.scoreboard])

    def _curves_fig(self) -> go.Figure:
        from bnnlab import plots

        hist = {n: self.histories.get(n, {"epoch": [], "val_acc": []}) for n in self.factories}
        return plots.history_figure(hist, "val_acc", title="validation accuracy while training")

    def _measure(self, name: str, model: nn.Module) -> list[dict]:
        from bnnlab import bench
        from bnnlab.summary import summary
        from bnnlab.train import evaluate

        test = self.data.test if hasattr(self.data, "test") else _parts(self.data)[1]
        acc = evaluate(model, *test)["accuracy"]
        s = summary(model, self.input_shape)
        lat = bench.model_latency(model, self.input_shape)
        rows = [{"name": f"{name} (torch)", "accuracy": acc,
                 "memory_kib": s.float32_bytes / 1024 if s.binary_mac_ratio == 0
                 else s.memory_bytes / 1024,
                 "latency_ms": 1e3 * lat["torch"],
                 "path": "torch float32" if s.binary_mac_ratio == 0
                 else "torch (simulates ±1 in float32)"}]
        if lat["packed"] is not None:
            rows.append({"name": f"{name} (packed)", "accuracy": acc,
                         "memory_kib": s.memory_bytes / 1024, "latency_ms": 1e3 * lat["packed"],
                         "path": "packed kernels (XNOR + popcount)"})
        elif s.binary_mac_ratio > 0:
            rows[0]["path"] += f"; packed export refused: {lat['packed_note']}"
        return rows

    def _show_mistakes(self, name: str) -> None:
        from bnnlab import plots

        x, y = self.data.test
        model = self.models[name].eval()
        with torch.no_grad():
            pred = model(x).argmax(1)
        try:
            fig = plots.misclassified_figure(x, y, pred, self.data.classes, max_images=10)
        except ValueError:  # no mistake at all: nothing to show
            self.mistakes_figure, self.mistakes_box.children = None, ()
            return
        fig.update_layout(title=f"{name}, test images: {fig.layout.title.text}; the first ten")
        self.mistakes_figure = go.FigureWidget(fig)
        self.mistakes_box.children = (self.mistakes_figure,)

    def run(self) -> list[dict]:
        """Train every model (curves grow per epoch, progress per batch), then show the last
        model's mistakes and the scoreboard. Returns the scoreboard rows (``.rows``)."""
        from bnnlab import plots
        from bnnlab.train import fit

        self.epochs = int(self.controls["epochs"].value)
        self.models, self.histories, self.rows = {}, {}, []
        self._begin(len(self.factories) * _steps(self.data, self.epochs, self.batch_size))
        for name, make in self.factories.items():
            if self._stop_requested:
                break
            torch.manual_seed(0)
            model = make()
            self.status.value = f"training {name}"

            def on_epoch(epoch, history, name=name):
                self.histories[name] = history
                _sync(self.curves_figure, self._curves_fig())

            cb = _Progress(self.progress, lambda: self._stop_requested, on_epoch)
            self.histories[name] = fit(model, self.data, epochs=self.epochs, lr=self.lr,
                                       batch_size=self.batch_size, callbacks=[cb],
                                       progress=False)
            self.models[name] = model
            _sync(self.curves_figure, self._curves_fig())
        # a fresh widget holds the final curves in its state: a view opened later (Voilà
        # renders after the run) shows them, not only views that saw every update
        self.curves_figure = go.FigureWidget(self._curves_fig())
        self.curves_box.children = (self.curves_figure,)
        self.status.value = "measuring accuracy, memory and latency"
        for name, model in self.models.items():
            self.rows += self._measure(name, model)
        if self.models:
            self._show_mistakes(list(self.models)[-1])
        self.scoreboard.value = plots.table(
            self.rows, ["name", "accuracy", "memory_kib", "latency_ms", "path"],
            caption="scoreboard: test accuracy, memory of the weights, batch-1 latency on "
                    "this CPU")._repr_html_()
        self._end(f"{len(self.models)} of {len(self.factories)} models trained")
        return self.rows


def classroom_trainer(models: Mapping, data, *, epochs: int = 2, lr: float = 2e-3,
                      batch_size: int = 64, input_shape=None,
                      background: bool = True) -> ClassroomTrainer:
    """The classroom demo's one widget: a Train button with a progress bar, the validation
    accuracy of each model growing epoch by epoch, the test images the last model gets wrong
    (:func:`bnnlab.plots.misclassified_figure`), and a scoreboard: test accuracy, memory,
    measured batch-1 latency and the execution path of each model (torch, or the packed
    XNOR-popcount kernels of :func:`bnnlab.packed.export` when the model exports).

    Args:
        models: ``{name: factory}``, e.g. a float CNN and its binary twin; each is built with
            seed 0 at every run.
        data: a :class:`bnnlab.data.Split` with ``classes``.
        epochs: initial value of the epochs slider. lr, batch_size: for
            :func:`bnnlab.train.fit`.
        background: run the button's work in a thread. Default: ``True``.

    Returns:
        A :class:`ClassroomTrainer`; ``.run()`` does the work without the button.
    """
    return ClassroomTrainer(models, data, epochs=epochs, lr=lr, batch_size=batch_size,
                            input_shape=input_shape, background=background)


# =============================================================================================
# Live comparison
# =============================================================================================
def default_latency_fn(input_shape) -> Callable[[nn.Module], dict]:
    """``model -> {"latency_ms", "path", "why"}`` of one batch-1 inference, as a user would
    deploy it (:func:`bnnlab.lessons.measure_latency`): the packed kernels
    (:func:`bnnlab.packed.export`) for a binary model the exporter supports, torch float32
    otherwise, with the reason for the path taken.
    """
    import torch

    from bnnlab.lessons import measure_latency

    x = torch.zeros(1, *tuple(input_shape))
    return lambda model: measure_latency(model, x)


#: Columns of the dashboard's table: ``{row key: header with unit}``.
LIVE_TABLE_COLUMNS = {"name": "variant", "accuracy_text": "validation accuracy (%)",
                      "latency_us": "latency (µs)", "path": "inference path", "why": "why",
                      "memory_kib": "memory (KiB)", "compression": "smaller than float32 by",
                      "epochs": "epochs", "train_s": "training time per seed (s)"}


class LiveComparison(_Runner, W.VBox):
    """See :func:`live_comparison`."""

    def __init__(self, variants: Mapping, data, epochs: int = 3, *, latency_fn=None,
                 input_shape=None, lr: float = 1e-3, batch_size: int = 64,
                 metric: str = "val_acc", fit_kw: Mapping | None = None, seeds=(0,),
                 background: bool = True) -> None:
        from bnnlab._validation import check_int

        if not isinstance(variants, Mapping) or not variants:
            raise TypeError("variants must be a non-empty dict {name: model or model factory}")
        if metric not in ("val_acc", "val_loss", "train_acc", "train_loss"):
            raise ValueError(f"metric must be 'val_acc', 'val_loss', 'train_acc' or "
                             f"'train_loss', got {metric!r}")
        if isinstance(seeds, int) or not seeds:
            raise TypeError("seeds must be a non-empty sequence of ints, e.g. (0, 1, 2)")
        self.seeds = tuple(check_int(s, "seeds", min_value=0) for s in seeds)
        self.variants, self.data, self.epochs = dict(variants), data, epochs
        self.input_shape = tuple(input_shape or _parts(data)[0][0].shape[1:])
        self.latency_fn = latency_fn or default_latency_fn(self.input_shape)
        self.lr, self.batch_size, self.metric = lr, batch_size, metric
        self.fit_kw = dict(fit_kw or {})
        self.models: dict[str, nn.Module] = {}
        self.histories: dict = {}
        self.seed_histories: dict[str, list] = {}
        self.rows: list[dict] = []
        self.controls: dict[str, Any] = {}
        self._init_runner("Train all", background)
        self.curves_figure = go.FigureWidget(self._curves_fig())
        self.bars_figure = go.FigureWidget(self._bars_fig())
        self.table = W.HTML(self._table_html())
        super().__init__([self._runner_box(), self.curves_figure, self.bars_figure, self.table])

    _METRIC_LABELS = {"val_acc": "validation accuracy", "val_loss": "validation loss",
                      "train_acc": "training accuracy", "train_loss": "training loss"}

    def _mean_curve(self, name: str) -> tuple[list, list]:
        hs = [h for h in self.seed_histories.get(name, []) if len(h)]
        if not hs:
            return [], []
        n = max(len(h) for h in hs)
        ys = []
        for i in range(n):
            vals = [getattr(h, self.metric)[i] for h in hs if len(h) > i]
            ys.append(float(np.mean(vals)))
        return list(range(1, n + 1)), ys

    def _curves_fig(self) -> go.Figure:
        series = {n: self._mean_curve(n) for n in self.variants}
        label = self._METRIC_LABELS[self.metric]
        over = f", mean over {len(self.seeds)} seeds" if len(self.seeds) > 1 else ""
        fig = P.curves_figure(series, title=f"{label} during training{over}",
                              yaxis_title=label)
        fig.update_xaxes(title_text="epoch", dtick=1)
        return fig

    def _bars_fig(self) -> go.Figure:
        metrics = {"accuracy": "validation accuracy (%)", "latency_us": "latency (µs)",
                   "memory_kib": "memory (KiB)"}
        fig = P.comparison_figure(self.rows, metrics)
        if len(fig.data) == 3 and self.rows:
            acc, lat, mem = fig.data
            acc.y = [100 * r["accuracy"] for r in self.rows]
            acc.error_y = dict(type="data", array=[100 * r["accuracy_sd"] for r in self.rows],
                               visible=len(self.seeds) > 1)
            acc.text = [r["accuracy_text"] for r in self.rows]
            lat.text = [_fmt_num(r["latency_us"], 0) for r in self.rows]
            mem.text = [_fmt_num(r["memory_kib"], 0) for r in self.rows]
            for tr, unit in ((acc, "%"), (lat, "µs"), (mem, "KiB")):
                tr.hovertemplate = f"%{{x}}: %{{text}} {unit}<extra></extra>"
        return fig

    def table_rows(self) -> list[list[str]]:
        """Header and rows as the table shows them (texts of :meth:`results_table`)."""
        from bnnlab.lessons import Table

        return Table(self.rows, LIVE_TABLE_COLUMNS, _LIVE_FORMATS).text_rows()

    def results_table(self):
        """The results as a :class:`bnnlab.lessons.Table` (HTML in a notebook)."""
        from bnnlab.lessons import Table

        return Table(self.rows, LIVE_TABLE_COLUMNS, _LIVE_FORMATS)

    def _table_html(self) -> str:
        if not self.rows:
            return "<i>Press Train all: the results appear here.</i>"
        return self.results_table()._repr_html_()

    def _refresh_results(self) -> None:
        _sync(self.bars_figure, self._bars_fig())
        self.table.value = self._table_html()

    def _measure(self, name: str, accs: list[float], seconds: list[float]) -> dict:
        from bnnlab.lessons import mean_sd
        from bnnlab.summary import summary

        model = self.models[name]
        s = summary(model, self.input_shape)
        lat = self.latency_fn(model)
        if isinstance(lat, Mapping):
            latency_ms, path, why = float(lat["latency_ms"]), lat.get("path", "–"), lat.get("why", "–")
        else:
            latency_ms, path, why = 1e3 * float(lat), "–", "–"
        m, sd = mean_sd(accs)
        text = f"{100 * m:.1f}" + (f" ± {100 * sd:.1f}" if len(accs) > 1 else "")
        return {"name": name, "accuracy": m, "accuracy_sd": sd, "accuracies": list(accs),
                "accuracy_text": text, "seeds": list(self.seeds[:len(accs)]),
                "latency_ms": latency_ms, "latency_us": 1e3 * latency_ms, "path": path,
                "why": why, "memory_kib": s.memory_bytes / 1024,
                "compression": s.compression_ratio, "epochs": len(self.histories[name]),
                "train_s": float(np.mean(seconds))}

    def run(self) -> list[dict]:
        """Train every variant under every seed in turn (curves: mean over the seeds, refreshed
        after each epoch; progress per batch), then measure accuracy (validation part, mean ±
        sd over the seeds), latency (first seed's model) and memory; refresh bars and table.
        Stopping ends the current training early, measures the variant on the seeds run so
        far, and skips the rest. The same press gives the same accuracies (seeded).

        Returns:
            The result rows (also in ``.rows``), one dict per trained variant.
        """
        from bnnlab.lessons import build_variant, train_variant
        from bnnlab.train import evaluate

        self.models, self.histories, self.seed_histories, self.rows = {}, {}, {}, []
        self._refresh_results()
        _sync(self.curves_figure, self._curves_fig())
        steps = _steps(self.data, self.epochs, self.batch_size)
        self._begin(len(self.variants) * len(self.seeds) * steps)
        for name, spec in self.variants.items():
            if self._stop_requested:
                break
            if isinstance(spec, nn.Module) and len(self.seeds) > 1:
                raise TypeError(f"variants[{name!r}] must be a factory (a callable returning a "
                                f"new nn.Module) to be trained under several seeds")
            accs, seconds = [], []
            self.seed_histories[name] = []
            for seed in self.seeds:
                if self._stop_requested:
                    break
                self.status.value = f"training {name}, seed {seed}"
                current: list = []

                def on_epoch(epoch, history, name=name, current=current):
                    if current:
                        self.seed_histories[name][-1] = history
                    else:
                        current.append(history)
                        self.seed_histories[name].append(history)
                    _sync(self.curves_figure, self._curves_fig())

                cb = _Progress(self.progress, lambda: self._stop_requested, on_epoch)
                t0 = time.perf_counter()
                model = build_variant(spec, seed, name=f"variants[{name!r}]")
                model, history = train_variant(model, self.data, seed=seed, epochs=self.epochs,
                                               lr=self.lr, batch_size=self.batch_size,
                                               callbacks=[cb], **self.fit_kw)
                seconds.append(time.perf_counter() - t0)
                if not current:
                    self.seed_histories[name].append(history)
                else:
                    self.seed_histories[name][-1] = history
                if name not in self.models:
                    self.models[name], self.histories[name] = model, history
                accs.append(evaluate(model, *_parts(self.data)[1])["accuracy"])
            if accs:
                self.rows.append(self._measure(name, accs, seconds))
            _sync(self.curves_figure, self._curves_fig())
            self._refresh_results()
        self._end(f"{len(self.rows)} of {len(self.variants)} variants trained")
        return self.rows


def _fmt_num(v: float, digits: int) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:,.{digits}f}"


_LIVE_FORMATS = {"latency_us": lambda v: _fmt_num(v, 0), "memory_kib": lambda v: _fmt_num(v, 1),
                 "compression": lambda v: f"{v:.1f}×", "train_s": lambda v: f"{v:.1f}"}


def live_comparison(variants: Mapping, data, epochs: int = 3, *, latency_fn=None,
                    input_shape=None, lr: float = 1e-3, batch_size: int = 64,
                    metric: str = "val_acc", fit_kw: Mapping | None = None, seeds=(0,),
                    background: bool = True) -> LiveComparison:
    """Train several variants (float, BinaryNet, XNOR-Net, Bi-Real, ReActNet ...) on the same data
    and compare them: training curves that grow epoch by epoch, then accuracy, latency and
    memory as bars and as a table.

    Args:
        variants: ``{name: model factory (callable) or model}``; factories are called at each run.
        data: a :class:`bnnlab.data.Split` (fits ``train``, reports ``val``).
        epochs: epochs per variant. Default: ``3``.
        latency_fn: ``model -> seconds`` of one inference, or ``model -> {"latency_ms",
            "path", "why"}``; default :func:`default_latency_fn` (the packed kernels for a
            binary model the exporter supports, torch float32 otherwise, and why).
        input_shape: one sample's shape (summary, latency); default: from ``data``.
        lr, batch_size: for :func:`bnnlab.train.fit`; fit_kw: more of its arguments.
        metric: the curve shown: ``"val_acc"``, ``"val_loss"``, ``"train_acc"``,
            ``"train_loss"``. Default: ``"val_acc"``.
        seeds: every variant is built under ``torch.manual_seed(seed)`` and trained with
            shuffling seed ``seed`` for each seed (:func:`bnnlab.lessons.train_variant`); the
            curves show the mean over seeds, bars and table the mean ± sd. The same press gives
            the same accuracies. Default: ``(0,)``.
        background: run the button's work in a thread (keeps Stop responsive). Default: ``True``.

    Returns:
        A :class:`LiveComparison` widget; ``.run()`` does the work without the button.
        Figures: ``.curves_figure`` (one trace per variant), ``.bars_figure`` (accuracy (%),
        latency (µs), memory (KiB)); ``.table`` (an HTML widget: every row, with units, the
        inference path and why); results in ``.rows``, ``.models`` and ``.histories`` (first
        seed), ``.seed_histories`` (every seed).

    Examples::

        >>> ds = data.load_digits(flatten=True)
        >>> w = live_comparison({"float": lambda: models.binary_mlp(64, (64, 64), binary=False),
        ...                      "BinaryNet": lambda: models.binary_mlp(64, (64, 64))}, ds, 3)
        >>> w          # click "Train all", or call w.run()
    """
    return LiveComparison(variants, data, epochs, latency_fn=latency_fn, input_shape=input_shape,
                          lr=lr, batch_size=batch_size, metric=metric, fit_kw=fit_kw,
                          seeds=seeds, background=background)


# =============================================================================================
# A data set that is not installed: say what is missing, offer the download
# =============================================================================================
class DataMissing(FileNotFoundError):
    """Raised by :func:`load_or_offer_download` once its panel is shown. It stops a notebook's
    *Run All* with one line instead of a traceback (IPython prints ``_render_traceback_``)."""

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


class DataDownload(W.VBox):
    """Fashion-MNIST is missing: which files, the apt command, and a Download button that
    fetches the files into the cache (:func:`bnnlab.data.fetch_idx`, SHA-256 checked), where
    :func:`bnnlab.data.load_fashion_mnist` finds them on the next run."""

    def __init__(self, *, cache_dir=None, base_url: str | None = None) -> None:
        from bnnlab import data as D

        self.cache_dir = Path(cache_dir) if cache_dir is not None else D.default_cache_dir()
        self.base_url = base_url
        system = D.fashion_mnist_dir()
        self.missing = [str(system / f) for f in D.IDX_FILES.values() if not (system / f).is_file()]
        files = "".join(f"<li><code>{html.escape(p)}</code></li>" for p in self.missing)
        self.message = W.HTML(
            "<div style='border-left: 4px solid #d9822b; padding: 4px 12px'>"
            "<p><b>Fashion-MNIST is not installed on this computer.</b> This notebook reads it from "
            f"Debian's package <code>dataset-fashion-mnist</code>; missing:</p><ul>{files}</ul>"
            "<p><b>Install it</b> (administrator rights): "
            "<code>sudo apt-get install dataset-fashion-mnist</code></p>"
            "<p><b>Or download it</b> (needs internet; each file is checked by SHA-256) into "
            f"<code>{html.escape(str(self.cache_dir / 'fashion-mnist'))}</code>: press the button "
            "below, or run <code>from bnnlab import data; data.load_fashion_mnist(download=True)</code> "
            "in a cell.</p>"
            "<p>Then run the notebook again (<i>Run → Run All Cells</i>; in Voilà, reload the page).</p>"
            "</div>")
        self.button = W.Button(description="Download Fashion-MNIST", button_style="primary",
                               icon="download", layout=W.Layout(width="auto"))
        self.status = W.Label(value="")
        self.button.on_click(lambda _: self._click())
        super().__init__([self.message, W.HBox([self.button, self.status])])

    def download(self) -> dict[str, Path]:
        """What the button does: fetch the four files into the cache; their paths."""
        from bnnlab import data as D

        self.button.disabled = True
        self.status.value = "downloading ..."
        try:
            paths = D.fetch_idx("fashion-mnist", cache_dir=self.cache_dir, base_url=self.base_url)
        finally:
            self.button.disabled = False
        self.status.value = (f"done: {len(paths)} files in {paths['train_images'].parent}; "
                             "run the notebook again")
        return paths

    def _click(self) -> None:
        try:
            self.download()
        except (OSError, ValueError) as exc:  # shown in the widget: a click has nowhere else to report
            self.status.value = f"download failed: {exc}"


def load_or_offer_download(load: Callable, /, *args, cache_dir=None, base_url: str | None = None,
                           **kwargs):
    """``load(*args, **kwargs)`` (a Fashion-MNIST loader); if the data are not installed, show
    a :class:`DataDownload` panel and raise :class:`DataMissing` instead of a long
    ``FileNotFoundError`` traceback.

    Args:
        load: :func:`bnnlab.data.load_fashion_mnist` or a function that calls it
            (:func:`bnnlab.lessons.fashion_subset`); ``args`` and ``kwargs`` go to it.
        cache_dir, base_url: where the button downloads to (default: the cache the loaders
            read, :func:`bnnlab.data.default_cache_dir`) and from (default: the official mirrors).

    Examples::

        >>> ds = load_or_offer_download(data.load_fashion_mnist, n_train=1200, val_size=500)
    """
    try:
        return load(*args, **kwargs)
    except FileNotFoundError as exc:
        if "Fashion-MNIST" not in str(exc):
            raise
    from IPython.display import display

    display(DataDownload(cache_dir=cache_dir, base_url=base_url))
    raise DataMissing("Fashion-MNIST is not installed: install or download it as shown above, "
                      "then run the notebook again")
