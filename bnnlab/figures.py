r"""The report's figures (PDF) and tables (LaTeX), keyed by their LaTeX labels.

``python -m bnnlab figures paper/generated`` reads the JSON results written by
``python -m bnnlab experiments`` (``paper/generated/results/*.json``; the benchmark rows of
``python -m bnnlab bench --json`` from ``results/bench.json`` when present) and writes

* ``figures/<name>.pdf`` for every entry ``"fig:<name>"`` of :data:`FIGURES` (plotly figures
  from :mod:`bnnlab.plots`, the builders the notebooks use, exported with kaleido in one batch);
* ``tables/<name>.tex`` for every entry ``"tab:<name>"`` of :data:`TABLES` (a booktabs
  ``tabular``; the report wraps it in a ``table`` with its caption and label);
* ``macros.tex``: one ``\newcommand`` per number the report's text quotes (:func:`macros`), so
  the text never types a number; sentences that depend on the results (which rung helps, whether
  a step is within noise) are chosen by the data (:func:`ladder_macros`).

Sentences of the report that stay typed are guarded (:data:`GUARDS`): the command exits with
status 3 when the data contradict one, so the build fails instead of printing a false sentence.

Every function takes the loaded results (:func:`load_results`) and computes nothing
expensive: training happens in :mod:`bnnlab.experiments`; the analytic figures (surrogates,
XNOR-popcount example) are computed here from :mod:`bnnlab.analysis` and :mod:`bnnlab.kernels`.
A measurement that was not made is written as "not measured", never typed by hand.

Three builders are not (yet) in :mod:`bnnlab.plots` and live here: :func:`errorbar_figure`
(mean ± sd per variant), :func:`errorbar_curves_figure` (curves with error bars) and
:func:`regression_figure` (1-D fits).

Examples::

    >>> from bnnlab import figures
    >>> results = figures.load_results("paper/generated/results")
    >>> figures.FIGURES["fig:architectures"](results).show()
    >>> print(figures.TABLES["tab:architectures"](results))
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import re
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from bnnlab import bench as B
from bnnlab import plots as P
from bnnlab.experiments import SCHEMA, VARIANTS, aggregate

__all__ = [
    "FIGURES",
    "TABLES",
    "FIGURE_SIZES",
    "RESULT_FILES",
    "MissingResults",
    "figure",
    "table",
    "load_results",
    "booktabs",
    "pm",
    "macros",
    "macros_tex",
    "xnor_example",
    "errorbar_figure",
    "errorbar_curves_figure",
    "regression_figure",
    "export_pdfs",
    "write_all",
    "ANCHORS",
    "GUARDS",
    "ladder_stats",
    "ladder_macros",
    "check_guards",
    "main",
]

#: label -> function(results) -> plotly Figure
FIGURES: dict[str, Callable[[Mapping], go.Figure]] = {}
#: label -> function(results) -> LaTeX tabular (str)
TABLES: dict[str, Callable[[Mapping], str]] = {}
#: label -> (width, height) in CSS pixels of the exported PDF (1 px = 0.75 pt)
FIGURE_SIZES: dict[str, tuple[int, int]] = {}
#: result files read by :func:`load_results` (``<name>.json``); ``bench`` is optional
RESULT_FILES = ("run", "architectures", "signs", "ablation", "noise", "regression", "costs",
                "bench")

NOT_MEASURED = "not measured"


class MissingResults(KeyError):
    """A figure or table needs a result file that was not found."""


def figure(label: str, *, width: int = 720, height: int = 320):
    """Register a figure function under ``label`` (``"fig:<name>"``, file ``<name>.pdf``)."""
    if not re.fullmatch(r"fig:[a-z0-9-]+", label):
        raise ValueError(f"label must look like 'fig:some-name', got {label!r}")

    def register(fn):
        FIGURES[label] = fn
        FIGURE_SIZES[label] = (width, height)
        fn.label = label
        return fn
    return register


def table(label: str):
    """Register a table function under ``label`` (``"tab:<name>"``, file ``<name>.tex``)."""
    if not re.fullmatch(r"tab:[a-z0-9-]+", label):
        raise ValueError(f"label must look like 'tab:some-name', got {label!r}")

    def register(fn):
        TABLES[label] = fn
        fn.label = label
        return fn
    return register


def _stem(label: str) -> str:
    return label.split(":", 1)[1]


# =============================================================================================
# Loading and formatting
# =============================================================================================
def load_results(results_dir, *, bench_json=None) -> dict[str, Any]:
    """Read ``<results_dir>/<name>.json`` for every name of :data:`RESULT_FILES` that exists,
    and the ablation ladder of ``<results_dir>/ladder`` (:func:`bnnlab.ladder.load_ladder`)
    under ``"ladder"`` when it was run.

    Args:
        results_dir: the ``--out`` directory of ``python -m bnnlab experiments``.
        bench_json: the ``--json`` file of ``python -m bnnlab bench``; default
            ``<results_dir>/bench.json``.

    Returns:
        ``{name: payload}`` (missing files are absent).

    Raises:
        ValueError: a file of the experiments has another ``schema``.
    """
    results_dir = Path(results_dir)
    out: dict[str, Any] = {}
    for name in RESULT_FILES:
        path = (Path(bench_json) if (name == "bench" and bench_json is not None)
                else results_dir / f"{name}.json")
        if not path.is_file():
            continue
        payload = json.loads(path.read_text())
        if name != "bench" and payload.get("schema") != SCHEMA:
            raise ValueError(f"{path}: schema {payload.get('schema')!r}, expected {SCHEMA!r}; "
                             f"rerun `python -m bnnlab experiments`")
        out[name] = payload
    from bnnlab.ladder import load_ladder

    lad = load_ladder(results_dir / "ladder")
    if lad is not None:
        out["ladder"] = lad
    return out


def _need(results: Mapping, name: str) -> Any:
    if name not in results or results[name] is None:
        raise MissingResults(f"results have no {name!r} (run `python -m bnnlab experiments`)")
    return results[name]


def _num(v) -> float:
    return math.nan if v is None else float(v)


def pm(mean: float, sd: float, digits: int = 1, *, scale: float = 1.0,
       math_mode: bool = True) -> str:
    r"""``mean ± sd`` for LaTeX (``$97.3 \pm 0.4$``); only the mean when ``sd`` is nan (n = 1)."""
    mean, sd = _num(mean), _num(sd)
    if math.isnan(mean):
        return "--"
    s = f"{mean * scale:.{digits}f}"
    if not math.isnan(sd):
        s += rf" \pm {sd * scale:.{digits}f}"
    return f"${s}$" if math_mode else s


def _tex(s: Any) -> str:
    """Escape LaTeX specials in plain text."""
    rep = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
           "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
           "^": r"\textasciicircum{}", "±": r"$\pm$", "×": r"$\times$", "σ": r"$\sigma$",
           "β": r"$\beta$"}
    return "".join(rep.get(c, c) for c in str(s))


def booktabs(columns: Sequence[str], rows: Sequence[Sequence[str] | str],
             align: str | None = None, *, units: Sequence[str] | None = None,
             groups: Sequence[int] = ()) -> str:
    r"""A booktabs ``tabular``: ``\toprule`` header [units] ``\midrule`` rows ``\bottomrule``.

    Cells are LaTeX already (escape plain text with ``_tex``). A row given as one string spans
    every column (``\multicolumn``). ``units`` is a second header line; ``groups`` lists row
    indices before which a ``\midrule`` is drawn.
    """
    ncol = len(columns)
    align = align or "l" + "r" * (ncol - 1)
    if len(align) != ncol:
        raise ValueError(f"align has {len(align)} columns, the header {ncol}")
    lines = [rf"\begin{{tabular}}{{{align}}}", r"\toprule", " & ".join(columns) + r" \\"]
    if units is not None:
        if len(units) != ncol:
            raise ValueError(f"units has {len(units)} cells, the header {ncol}")
        lines.append(" & ".join(units) + r" \\")
    lines.append(r"\midrule")
    for i, row in enumerate(rows):
        if i in groups and i > 0:
            lines.append(r"\midrule")
        if isinstance(row, str):
            lines.append(rf"\multicolumn{{{ncol}}}{{c}}{{{row}}} \\")
            continue
        if len(row) != ncol:
            raise ValueError(f"row {i} has {len(row)} cells, the header {ncol}")
        lines.append(" & ".join(str(c) for c in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def _label(variant: str) -> str:
    return VARIANTS[variant].label if variant in VARIANTS else variant


_DATASET_LABELS = {"digits": "Digits", "fashion-mnist": "Fashion-MNIST"}


def _stats(runs: Sequence[Mapping], key: str, **match) -> dict[str, float]:
    return aggregate(r[key] for r in runs if all(r.get(k) == v for k, v in match.items()))


def _variants_of(arch: Mapping) -> list[str]:
    seen: list[str] = []
    for r in arch["runs"]:
        if r["variant"] not in seen:
            seen.append(r["variant"])
    return seen


# =============================================================================================
# Builders missing from bnnlab.plots
# =============================================================================================
def errorbar_figure(panels: Mapping[str, Sequence[Mapping]], *, yaxis_title: str = "",
                    title: str | None = None, height: int = 340) -> go.Figure:
    """Dot-and-whisker plot: one panel per key, one point (mean ± sd) per row, seeds as dots.

    No legend (say it in the caption): large coloured dot and bar = mean ± sd, small grey
    dots = the individual seeds.

    Args:
        panels: ``{panel title: [{"name", "mean", "sd", "points"}]}`` (``points``: the
            per-seed values, drawn small and grey).

    Returns:
        Per panel: a ``seeds`` marker trace, then the mean trace with ``error_y``.
    """
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=list(panels),
                        horizontal_spacing=0.08)
    for col, rows in enumerate(panels.values(), start=1):
        names = [r["name"] for r in rows]
        xs = [r["name"] for r in rows for _ in r.get("points", ())]
        ys = [p for r in rows for p in r.get("points", ())]
        fig.add_scatter(x=xs, y=ys, mode="markers", name="seeds", showlegend=False,
                        marker=dict(size=5, color="rgba(90,90,90,0.45)"), row=1, col=col)
        sd = [0.0 if math.isnan(_num(r["sd"])) else _num(r["sd"]) for r in rows]
        fig.add_scatter(x=names, y=[_num(r["mean"]) for r in rows], mode="markers",
                        name="mean ± sd", showlegend=False,
                        error_y=dict(type="data", array=sd, visible=True, thickness=1.5),
                        marker=dict(size=9, color=[P.COLORS[i % len(P.COLORS)]
                                                   for i in range(len(rows))]),
                        row=1, col=col)
    fig.update_yaxes(title_text=yaxis_title, row=1, col=1)
    fig.update_xaxes(tickangle=-35)
    return _themed(fig, title=title, height=height, hovermode="closest")


def errorbar_curves_figure(series: Mapping[str, tuple[Sequence, Sequence, Sequence]], *,
                           xaxis_title: str = "", yaxis_title: str = "",
                           title: str | None = None, height: int = 340) -> go.Figure:
    """One line per series ``{name: (x, mean, sd)}`` with error bars (sd; nan drawn as 0)."""
    fig = go.Figure()
    for name, (x, mean, sd) in series.items():
        sd = [0.0 if math.isnan(_num(s)) else _num(s) for s in sd]
        fig.add_scatter(x=list(x), y=[_num(m) for m in mean], name=name, mode="lines+markers",
                        error_y=dict(type="data", array=sd, visible=True, thickness=1))
    return _themed(fig, title=title, xaxis_title=xaxis_title, yaxis_title=yaxis_title,
                     height=height)


def regression_figure(x, truth, fits: Mapping[str, Sequence], points=None, *,
                      title: str | None = None, height: int = 340) -> go.Figure:
    """A 1-D regression: training points (grey), the true curve (dashed) and one line per fit.

    Returns:
        Traces in order: ``training data`` (if ``points``), ``f(x)``, then one per fit.
    """
    fig = go.Figure()
    if points is not None:
        fig.add_scatter(x=list(points[0]), y=list(points[1]), mode="markers",
                        name="training data", marker=dict(size=3, color="rgba(120,120,120,0.4)"))
    fig.add_scatter(x=list(x), y=list(truth), name="f(x)", mode="lines",
                    line=dict(color="black", dash="dash", width=1.5))
    for name, y in fits.items():
        fig.add_scatter(x=list(x), y=list(y), name=name, mode="lines", line=dict(width=2))
    return _themed(fig, title=title, xaxis_title="x", yaxis_title="y", height=height,
                     hovermode="closest")


def _epoch_ticks(fig: go.Figure, epochs: Sequence) -> go.Figure:
    """Integer epoch ticks when there are few epochs."""
    if epochs and max(epochs) <= 12:
        fig.update_xaxes(dtick=1)
    return fig


def _themed(fig: go.Figure, **layout) -> go.Figure:
    """The :data:`bnnlab.plots.THEME` template plus ``layout`` (what every plots builder does)."""
    fig.update_layout(template=P.THEME, **layout)
    return fig


def _lines_only(fig: go.Figure) -> go.Figure:
    fig.update_traces(mode="lines", selector=dict(type="scatter"))
    return fig


# =============================================================================================
# Figures
# =============================================================================================
_SURROGATE_X = np.linspace(-2.0, 2.0, 801)


def _surrogate_quantizers() -> dict[str, Any]:
    from bnnlab import quantizers as Q

    return {"STE sign (c = 1)": Q.SteSign(clip_value=1.0), "ApproxSign": Q.ApproxSign(),
            "SwishSign (β = 5)": Q.SwishSign(beta=5.0)}


@figure("fig:surrogates", height=300)
def surrogates(results: Mapping) -> go.Figure:
    """Surrogate gradients ∂q/∂x of the binarisers (their forward is sign(x) for all)."""
    from bnnlab import analysis as A

    series: dict[str, tuple[Any, Any]] = {}
    for name, q in _surrogate_quantizers().items():
        _, dq = A.surrogate_curves(q, _SURROGATE_X)
        series[name] = (_SURROGATE_X, dq)
    series["d/dx E[sign(x + ε)], ε ~ N(0, 0.5²)"] = (
        _SURROGATE_X, A.smoothed_sign_derivative(_SURROGATE_X, "normal", 0.5))
    fig = P.curves_figure(series, xaxis_title="x", yaxis_title="∂q/∂x")
    fig.data[-1].line.dash = "dot"
    return _lines_only(fig)


@figure("fig:mismatch-function", height=300)
def mismatch_function(results: Mapping) -> go.Figure:
    """The quantizer explorer's view: ApproxSign vs the derivative of the Gaussian-smoothed sign."""
    from bnnlab import analysis as A

    curves = A.mismatch_curves("approx_sign", "normal", 0.5,  # type: ignore[arg-type]
                               x=np.linspace(-2.5, 2.5, 1001))
    return P.quantizer_figure(curves)


def _signs_entry(results: Mapping) -> tuple[str, Mapping]:
    signs = _need(results, "signs")["datasets"]
    if not signs:
        raise MissingResults("signs.json has no data set")
    dname = "fashion-mnist" if "fashion-mnist" in signs else next(iter(signs))
    return dname, signs[dname]


@figure("fig:mismatch-network", height=300)
def mismatch_network(results: Mapping) -> go.Figure:
    """Cosine between the STE gradient and the exact gradient of tanh(βx)-relaxed twins,
    averaged over the binary layers, over training (BinaryNet MLP, first seed)."""
    _, entry = _signs_entry(results)
    gm = entry["gradient_mismatch"]
    refs = list(gm["results"][0])
    series = {}
    for ref in refs:
        vals = [float(np.mean([v["cosine"] for v in res[ref].values()
                               if v["cosine"] is not None])) for res in gm["results"]]
        series[f"cos(STE, {ref})"] = (gm["epochs"], vals)
    fig = P.curves_figure(series, xaxis_title="epoch", yaxis_title="cosine", yrange=(0, 1))
    return _epoch_ticks(fig, gm["epochs"])


def _first_layer(stats: Mapping) -> str:
    return next(iter(stats["layers"]))


def _stack_rows(figs: Sequence[go.Figure], titles: Sequence[str]) -> go.Figure:
    """Stack figures made by :func:`bnnlab.plots.sign_distribution_figure` (1×2 each) as rows."""
    out = make_subplots(rows=len(figs), cols=2, column_widths=[0.62, 0.38],
                        subplot_titles=list(titles), vertical_spacing=0.17)
    for row, f in enumerate(figs, start=1):
        for trace in f.data:
            col = 1 if trace.type == "bar" else 2
            out.add_trace(trace, row=row, col=col)
        out.add_vline(x=0.0, line_dash="dot", line_color="grey", row=row, col=1)
        out.update_yaxes(range=[0, 1], row=row, col=2)
    out.update_xaxes(title_text="epoch", row=len(figs), col=2)
    return _themed(out, bargap=0.02, showlegend=False)


@figure("fig:sign-distribution", height=440)
def sign_distribution(results: Mapping) -> go.Figure:
    """The sign explorer's two views for the first binary layer of the BinaryNet MLP: its latent
    weights (top) and its inputs on the probe batch, i.e. what its sign sees (bottom); histogram
    after the last epoch (left) and share of values >= 0 per epoch (right)."""
    _, entry = _signs_entry(results)
    st = entry["sign_stats"]
    layer = st["layers"][_first_layer(st)]
    last = len(st["epochs"]) - 1
    figs = [P.sign_distribution_figure(st["edges"], layer["weight_counts"][-1], st["epochs"],
                                       layer["fraction_positive"], last)]
    titles = [f"latent weights, epoch {st['epochs'][-1]}", "share of W ≥ 0"]
    if layer.get("input_counts"):
        figs.append(P.sign_distribution_figure(st["edges"], layer["input_counts"][-1],
                                               st["epochs"], layer["input_fraction_positive"],
                                               last))
        titles += [f"layer inputs (probe batch), epoch {st['epochs'][-1]}", "share of x ≥ 0"]
    return _stack_rows(figs, titles)


@figure("fig:flip-ratio", height=300)
def flip_ratio(results: Mapping) -> go.Figure:
    """Share of binary weights whose sign changed during each epoch, per variant (log axis)."""
    _, entry = _signs_entry(results)
    series = {_label(v): (fr["epochs"], fr["total"]) for v, fr in entry["flip_ratio"].items()}
    fig = P.curves_figure(series, xaxis_title="epoch", yaxis_title="flip ratio")
    fig.update_yaxes(type="log", dtick=1)
    return _epoch_ticks(fig, [e for x, _ in series.values() for e in x])


def _acc_rows(runs: Sequence[Mapping], variants: Sequence[str], dataset: str) -> list[dict]:
    rows = []
    for v in variants:
        pts = [r["test_acc"] for r in runs if r["variant"] == v and r["dataset"] == dataset]
        if not pts:
            continue
        st = aggregate(pts)
        rows.append({"name": _label(v), "mean": st["mean"], "sd": st["sd"], "points": pts})
    return rows


@figure("fig:architectures", height=340)
def architectures(results: Mapping) -> go.Figure:
    """Test accuracy (selected epoch) per variant and data set: mean ± sd over seeds."""
    arch = _need(results, "architectures")
    variants = _variants_of(arch)
    panels = {_DATASET_LABELS.get(d, d): _acc_rows(arch["runs"], variants, d)
              for d in arch["datasets"]}
    return errorbar_figure(panels, yaxis_title="test accuracy")


@figure("fig:training-curves", height=300)
def training_curves(results: Mapping) -> go.Figure:
    """Validation accuracy per epoch on Fashion-MNIST (first seed), every variant."""
    arch = _need(results, "architectures")
    dname = "fashion-mnist" if "fashion-mnist" in arch["datasets"] else next(iter(arch["datasets"]))
    seed = min(r["seed"] for r in arch["runs"])
    hist = {_label(r["variant"]): r["history"] for r in arch["runs"]
            if r["dataset"] == dname and r["seed"] == seed}
    fig = P.history_figure(hist, "val_acc")
    fig.update_yaxes(title_text="validation accuracy")
    return _epoch_ticks(fig, [e for h in hist.values() for e in h["epoch"]])


@figure("fig:ablation", height=300)
def ablation(results: Mapping) -> go.Figure:
    """Test accuracy of the BinaryNet MLP with each activation binariser (mean ± sd)."""
    ab = _need(results, "ablation")
    rows = []
    for key, label in ab["quantizers"].items():
        pts = [r["test_acc"] for r in ab["runs"] if r["quantizer"] == key]
        st = aggregate(pts)
        rows.append({"name": label, "mean": st["mean"], "sd": st["sd"], "points": pts})
    return errorbar_figure({_DATASET_LABELS.get(ab["dataset"], ab["dataset"]): rows},
                           yaxis_title="test accuracy")


def _noise_series(noise: Mapping) -> dict[str, tuple]:
    series = {}
    variants: list[str] = []
    for r in noise["runs"]:
        if r["variant"] not in variants:
            variants.append(r["variant"])
    for v in variants:
        accs = np.array([[_num(a) for a in r["accuracy"]] for r in noise["runs"]
                         if r["variant"] == v])
        stats = [aggregate(accs[:, j]) for j in range(accs.shape[1])]
        series[_label(v)] = (noise["sigmas"], [s["mean"] for s in stats],
                             [s["sd"] for s in stats])
    return series


@figure("fig:noise", height=340)
def noise(results: Mapping) -> go.Figure:
    """Test accuracy under additive Gaussian input noise of std σ (mean ± sd over seeds)."""
    nz = _need(results, "noise")
    return errorbar_curves_figure(_noise_series(nz), xaxis_title="σ (input noise std)",
                                  yaxis_title="test accuracy")


@figure("fig:regression", height=320)
def regression(results: Mapping) -> go.Figure:
    """Float and binary MLP fits of f(x) = sin 3x + 0.3x (first seed, selected epoch)."""
    reg = _need(results, "regression")
    c = reg["curves"]
    fits = {("float MLP" if k == "float" else "binary MLP"): v for k, v in c["fits"].items()}
    return regression_figure(c["x"], c["truth"], fits, (c["train_x"], c["train_y"]))


_SHORT_TYPES = {"BatchNorm1d": "BN", "BatchNorm2d": "BN", "BinaryLinear": "Bin", "Linear": "Lin",
                "BinaryConv2d": "BinConv", "Conv2d": "Conv"}


def _summary_from_dict(d: Mapping) -> SimpleNamespace:
    """A read-only stand-in of :class:`bnnlab.summary.Summary` from its ``to_dict()``."""
    recs = []
    for row in d["records"]:
        bits = {int(k[len("weights_"):-len("bit")]): v for k, v in row.items()
                if k.startswith("weights_") and k.endswith("bit")}
        short = _SHORT_TYPES.get(row["type"], row["type"])
        recs.append(SimpleNamespace(
            name=f"{short} {row['name']}", type=row["type"], params=row["params"], macs=row["macs"],
            binary_macs=row["binary_macs"], float_macs=row["float_macs"],
            memory_bits=sum(b * n for b, n in bits.items()), memory_bytes=row["memory_bytes"],
            float32_bytes=row["float32_bytes"]))
    t = d["totals"]
    return SimpleNamespace(records=recs, memory_bytes=t["memory_bytes"],
                           compression_ratio=_num(t["compression_ratio"]),
                           binary_mac_ratio=_num(t["binary_mac_ratio"]))


@figure("fig:memory", height=320)
def memory(results: Mapping) -> go.Figure:
    """Per-layer memory (packed vs float32) and MACs (1-bit vs 32-bit) of the BinaryNet MLP."""
    costs = _need(results, "costs")["datasets"]
    dname = "fashion-mnist" if "fashion-mnist" in costs else next(iter(costs))
    return P.summary_figure(_summary_from_dict(costs[dname]["variants"]["binary"]["summary"]),
                            title=None)


# =============================================================================================
# Tables
# =============================================================================================
@table("tab:protocol")
def protocol_table(results: Mapping) -> str:
    """Data sizes and the training budget shared by every variant of a data set."""
    arch = _need(results, "architectures")
    n_seeds = len({r["seed"] for r in arch["runs"]})
    rows = []
    for d, p in arch["datasets"].items():
        s = p["sizes"]
        shape = "$" + r"\times".join(str(v) for v in p["input_shape"]) + "$"
        rows.append([_tex(_DATASET_LABELS.get(d, d)), f"{s['train']:,}".replace(",", r"\,"),
                     f"{s['val']:,}".replace(",", r"\,"), f"{s['test']:,}".replace(",", r"\,"),
                     shape, str(p["epochs"]), str(p["batch_size"]), f"{p['lr']:g}",
                     str(n_seeds)])
    return booktabs(["Data", "Train", "Val.", "Test", "Input", "Epochs", "Batch", "LR", "Seeds"],
                    rows, "lrrrcrrrr")


@table("tab:architectures")
def architectures_table(results: Mapping) -> str:
    """Test accuracy (%) at the epoch chosen on validation, mean ± sd over seeds."""
    arch = _need(results, "architectures")
    datasets = list(arch["datasets"])
    rows, groups = [], []
    prev_kind = None
    for i, v in enumerate(_variants_of(arch)):
        kind = VARIANTS[v].kind if v in VARIANTS else ""
        if prev_kind is not None and kind != prev_kind:
            groups.append(i)
        prev_kind = kind
        row = [_tex(_label(v))]
        for d in datasets:
            row.append(pm(**_pm_args(_stats(arch["runs"], "test_acc", variant=v, dataset=d)),
                          scale=100))
        ep = [_stats(arch["runs"], "best_epoch", variant=v, dataset=d)["mean"] for d in datasets]
        row += [f"{e:.1f}" if not math.isnan(e) else "--" for e in ep]
        rows.append(row)
    head = (["Variant"] + [f"{_tex(_DATASET_LABELS.get(d, d))} (\\%)" for d in datasets]
            + [f"epoch ({_tex(_DATASET_LABELS.get(d, d))})" for d in datasets])
    return booktabs(head, rows, "l" + "r" * (2 * len(datasets)), groups=groups)


def _pm_args(st: Mapping) -> dict[str, Any]:
    return {"mean": st["mean"], "sd": st["sd"]}


@table("tab:ablation")
def ablation_table(results: Mapping) -> str:
    """Activation-binariser ablation of the BinaryNet MLP: test and validation accuracy (%)."""
    ab = _need(results, "ablation")
    rows = []
    for key, label in ab["quantizers"].items():
        rows.append([_tex(label),
                     pm(**_pm_args(_stats(ab["runs"], "test_acc", quantizer=key)), scale=100),
                     pm(**_pm_args(_stats(ab["runs"], "val_acc", quantizer=key)), scale=100),
                     f"{_stats(ab['runs'], 'best_epoch', quantizer=key)['mean']:.1f}"])
    return booktabs(["Activation binariser", r"Test (\%)", r"Validation (\%)", "Epoch"], rows)


@table("tab:regression")
def regression_table(results: Mapping) -> str:
    r"""Errors of the selected fits against f on the domain: sup, L1, L2 (mean ± sd)."""
    reg = _need(results, "regression")
    rows = []
    for v, label in (("float", "Float MLP"), ("binary", "Binary MLP")):
        st = {k: _stats(reg["runs"], k, variant=v) for k in ("sup", "l1", "l2", "val_loss")}
        rows.append([label] + [pm(**_pm_args(st[k]), digits=3) for k in ("sup", "l1", "l2")]
                    + [pm(**_pm_args(st["val_loss"]), digits=4)])
    return booktabs(["Model", r"$\lVert e\rVert_\infty$", r"$\lVert e\rVert_1$",
                     r"$\lVert e\rVert_2$", "val.\\ MSE"], rows)


def _kib(b) -> str:
    b = _num(b)
    return "--" if math.isnan(b) else f"{b / 1024:.1f}"


@table("tab:costs")
def costs_table(results: Mapping) -> str:
    """Cost model (bnnlab.summary) next to measured packed bytes and torch forward times."""
    costs = _need(results, "costs")["datasets"]
    dname = "fashion-mnist" if "fashion-mnist" in costs else next(iter(costs))
    rows = []
    for v, c in costs[dname]["variants"].items():
        t = c["summary"]["totals"]
        ratio = _num(t["binary_mac_ratio"])
        speed = _num(t["speedup"])
        packed, bits = c["packed_bytes"], c["bits_bytes"]
        rows.append([
            _tex(_label(v)), f"{t['total_params']:,}".replace(",", r"\,"),
            _kib(t["float32_bytes"]), _kib(t["memory_bytes"]),
            f"{_num(t['compression_ratio']):.1f}",
            _kib(bits) if bits else "--", _kib(packed) if packed else "--",
            "--" if math.isnan(ratio) else f"{100 * ratio:.0f}",
            "--" if math.isnan(speed) else f"{speed:.1f}",
            f"{c['torch_forward_ms']:.2f}"])
    head = ["Variant", "Params", "float32", "packed", "ratio", "1-bit", "words",
            r"bin.\ MACs", "model", "torch"]
    units = ["", "", "KiB", "KiB", r"$\times$", "KiB", "KiB", r"\%", r"speed-up", "ms"]
    return booktabs(head, rows, "lrrrrrrrrr", units=units)


def _bench_rows(results: Mapping) -> list[Mapping] | None:
    b = results.get("bench")
    if not b:
        return None
    rows = b.get("rows", b) if isinstance(b, Mapping) else b
    return [r for r in rows if isinstance(r, Mapping)]


def _ms(s) -> str:
    s = _num(s)
    if math.isnan(s):
        return "--"
    ms = s * 1e3
    if ms >= 1000:
        return f"{ms:,.0f}".replace(",", r"\,")
    return f"{ms:.3g}" if ms >= 0.1 else f"{ms:.2g}"


def _pct_cell(v) -> str:
    v = _num(v)
    return "--" if math.isnan(v) else f"{100 * v:.0f}"


#: the peers ``bench --peers`` adds, in column order (``bnnlab.bench.PEERS``)
_BENCH_PEERS = ("openvino", "torch_int8")


def _bench_peer_names(rows: Sequence[Mapping]) -> dict[str, str]:
    names: dict[str, str] = {}
    for key in _BENCH_PEERS:
        for r in rows:
            e = (r.get("peers") or {}).get(key)
            if isinstance(e, Mapping) and (key not in names or e.get("time") is not None):
                names[key] = str(e.get("name", key))
    return names


def _bench_peer_cell(e) -> str:
    if not isinstance(e, Mapping):
        return "--"
    if e.get("time") is None:
        return r"\emph{not installed}" if e.get("note") == "not installed" else r"\emph{not timed}"
    ratio = _num(e.get("ratio"))
    return _ms(e["time"]) + ("" if math.isnan(ratio) else f" ({ratio:.1f}$\\times$)")


@table("tab:bench")
def bench_table(results: Mapping) -> str:
    r"""Measured time of torch float32 vs the packed kernels (``python -m bnnlab bench``), with
    each side's efficiency (achieved MAC/s over the measured peak, in \%) and, for a
    ``bench --peers`` run, a column per peer: its time and bnnlab's speed-up over it. The
    ``threads_*`` rows are in :func:`bench_threads_table`."""
    rows = _bench_rows(results)
    head = ["Case", "Threads", "Baseline", "Baseline (ms)", "bnnlab (ms)", "Speed-up",
            r"Eff.\ base (\%)", r"Eff.\ bnnlab (\%)"]
    if rows is None:
        return booktabs(head, [r"\emph{" + NOT_MEASURED + r"}: no \texttt{bench.json}"],
                        "lrlrrrrr")
    names = _bench_peer_names(rows)
    head += [_tex(n.replace(" BinaryConvolution", "")) + r" (ms, $\times$)" for n in names.values()]
    out = []
    for r in rows:
        if r.get("unit", "s") != "s" or r.get("group") == "threads":
            continue
        ok = r.get("correct", True)
        ratio = _num(r.get("ratio"))
        out.append([_tex(r.get("case", "?")),
                    "--" if r.get("threads") is None else str(r["threads"]),
                    _tex(r.get("baseline", "torch float32")),
                    _ms(r.get("torch")) if ok else "--",
                    _ms(r.get("bnnlab")) if ok else r"\emph{wrong}",
                    "--" if math.isnan(ratio) or not ok else f"{ratio:.1f}$\\times$",
                    _pct_cell(r.get("torch_eff")), _pct_cell(r.get("bnnlab_eff"))]
                   + [_bench_peer_cell((r.get("peers") or {}).get(k)) for k in names])
    return booktabs(head, out, "lrlrrrrr" + "r" * len(names))


@table("tab:bench-threads")
def bench_threads_table(results: Mapping) -> str:
    """2-vs-1-thread speed-ups of bnnlab (and of torch float32) from the bench's ``threads_*``
    rows (wall clock), with the targets: >= 1.85x for GEMM 2048 and batch-16 convs, never
    slower for batch-1 convs; and the CPU time the hypervisor gave to other guests meanwhile
    (``steal``; "--" in runs from before it was recorded)."""
    rows = _bench_rows(results)
    head = ["Case", "1 thread (ms)", "2 threads (ms)", "bnnlab 2 vs 1", "torch 2 vs 1", "Target",
            "Stolen (\\%)"]
    sel = [r for r in rows or [] if r.get("group") == "threads"]
    if not sel:
        why = r"no \texttt{bench.json}" if rows is None else r"no \texttt{threads\_*} rows"
        return booktabs(head, [r"\emph{" + NOT_MEASURED + "}: " + why], "lrrrrrr")
    out = []
    for r in sel:
        case = str(r.get("case", "?"))
        ratio, t2 = _num(r.get("ratio")), _num(r.get("torch_2v1"))
        out.append([_tex(case[len("threads_"):]), _ms(r.get("torch")), _ms(r.get("bnnlab")),
                    "--" if math.isnan(ratio) else f"{ratio:.2f}$\\times$",
                    "--" if math.isnan(t2) else f"{t2:.2f}$\\times$",
                    f"$\\geq$ {B.threads_target(case):.2f}$\\times$",
                    _steal_cell(r.get("steal"))])
    return booktabs(head, out, "lrrrrrr")


def _steal_cell(v) -> str:
    v = _num(v)
    return "--" if math.isnan(v) else f"{100 * v:.1f}"


def _bench_targets(results: Mapping) -> list[dict]:
    """:func:`bnnlab.bench.targets` of the bench rows, with the efficiencies of
    :func:`bnnlab.bench.add_efficiency` filled in on copies ([] without rows or peaks)."""
    rows, b = _bench_rows(results), results.get("bench")
    if not rows or not isinstance(b, Mapping) or not b.get("peaks"):
        return []
    return B.targets(B.add_efficiency([dict(copy.deepcopy(r)) for r in rows], b["peaks"]))


@table("tab:bench-targets")
def bench_targets_table(results: Mapping) -> str:
    """Issue 12's speed targets checked on the bench rows (:func:`bnnlab.bench.targets`): the
    goal, how many measured cases meet it and the case furthest from it."""
    rows = _bench_rows(results)
    head = ["Target", "Goal", "Met", "Furthest from the goal"]
    ts = _bench_targets(results)
    if not ts:
        why = r"no \texttt{bench.json}" if rows is None else "no case with a target"
        return booktabs(head, [r"\emph{" + NOT_MEASURED + "}: " + why], "lrrl")

    def val(t: Mapping, v: float) -> str:
        return f"{100 * v:.0f}\\%" if t["unit"] == "%" else f"{v:.2f}$\\times$"
    out = [[_tex(t["target"]).replace("≥", r"$\geq$").replace("×", r"$\times$"),
            ("$\\leq$ " if t["at_most"] else "$\\geq$ ") + val(t, t["goal"]),
            f"{t['met']} of {t['of']}", f"{_tex(t['worst_case'])}: {val(t, t['worst'])}"]
           for t in ts]
    return booktabs(head, out, "lrrl")


@table("tab:bench-memory")
def bench_memory_table(results: Mapping) -> str:
    """Measured bytes: float32 vs packed (``python -m bnnlab bench``, memory rows)."""
    rows = _bench_rows(results)
    head = ["Case", "Baseline", "Baseline (KiB)", "Packed (KiB)", "Ratio"]
    if rows is None:
        return booktabs(head, [r"\emph{" + NOT_MEASURED + r"}: no \texttt{bench.json}"], "llrrr")
    out = []
    for r in rows:
        if r.get("unit") != "bytes":
            continue
        ratio = _num(r.get("ratio"))
        out.append([_tex(r.get("case", "?")), _tex(r.get("baseline", "")), _kib(r.get("torch")),
                    _kib(r.get("bnnlab")), "--" if math.isnan(ratio) else f"{ratio:.1f}$\\times$"])
    return booktabs(head, out, "llrrr")


@table("tab:deploy")
def deploy_table(results: Mapping) -> str:
    """Flash and RAM of the reference CNN exported as C (bnnlab.packed.c_export), binary vs float32,
    and the Cortex-M4 build measured with arm-none-eabi-size (computed here; no result file)."""
    from bnnlab.packed import c_export as packed_c

    d = packed_c.reference_deployment()
    m4 = d["cortex_m4"]
    head = ["C program", "Flash (KiB)", "RAM (KiB)"]
    rows = [[r"float32 (estimate)", _kib(d["float32_flash_bytes"]), _kib(d["float32_ram_bytes"])],
            [r"binary, 32-bit words (estimate)", _kib(d["flash_bytes"]), _kib(d["ram_bytes"])],
            [r"binary, Cortex-M4 \texttt{-Os} (\texttt{arm-none-eabi-size})",
             _kib(m4["flash"]) if m4 else "--", _kib(m4["ram"]) if m4 else "--"]]
    return booktabs(head, rows, "lrr")


def xnor_example(k: int = 12, seed: int = 8) -> dict[str, Any]:
    r"""A worked XNOR-popcount dot product computed by :mod:`bnnlab.kernels`.

    Two rows of ``k`` seeded numbers (magnitudes 0.1 to 1.9, one exact 0) are packed with
    :func:`~bnnlab.kernels.pack_signs`
    (bit ``j`` of word 0 is 1 iff element ``j`` is negative), XOR-ed and counted; the dot product
    is :math:`k - 2\,\operatorname{popcount}(a \oplus b)`, checked against
    :func:`~bnnlab.kernels.xnor_matmul` and against :math:`\sum_j \operatorname{sign}(a_j)
    \operatorname{sign}(b_j)`.

    Returns:
        dict with ``a``, ``b`` (values), ``sa``, ``sb`` (signs), ``wa``, ``wb``, ``xor`` (the
        words as ints), ``popcount``, ``dot`` (from the popcount), ``kernel`` (xnor_matmul)
        and ``direct`` (the float dot of the signs).
    """
    import torch

    from bnnlab import kernels
    from bnnlab.functional import sign

    rng = np.random.default_rng(seed)
    ab = (rng.uniform(0.1, 1.9, size=(2, k)).round(1)
          * rng.choice([-1.0, 1.0], size=(2, k))).astype(np.float32)
    ab[0, 2] = 0.0                                   # show the tie rule sign(0) = +1
    pa, pb = kernels.pack_signs(ab[:1]), kernels.pack_signs(ab[1:])
    wa, wb = int(pa.words[0, 0]), int(pb.words[0, 0])
    x = wa ^ wb
    pop = bin(x).count("1")
    s = sign(torch.from_numpy(ab)).numpy()
    return {"k": k, "a": ab[0].tolist(), "b": ab[1].tolist(), "sa": s[0].tolist(),
            "sb": s[1].tolist(), "wa": wa, "wb": wb, "xor": x, "popcount": pop,
            "dot": k - 2 * pop, "kernel": int(kernels.xnor_matmul(pa, pb)[0, 0]),
            "direct": int(np.dot(s[0], s[1]))}


def _bits(word: int, k: int) -> str:
    return "".join(str((word >> j) & 1) for j in range(k))


@table("tab:xnor-example")
def xnor_example_table(results: Mapping) -> str:
    r"""The worked example: values, signs, packed bits (element j = bit j), XOR, popcount."""
    ex = xnor_example()
    k = ex["k"]

    def cells(vals, f):
        return [f(v) for v in vals]
    sgn = {1.0: "$+$", -1.0: "$-$"}
    rows = [
        ["$a_j$"] + cells(ex["a"], lambda v: f"${v:g}$"),
        [r"$\operatorname{sign}(a_j)$"] + cells(ex["sa"], lambda v: sgn[v]),
        ["bit of $a$"] + list(_bits(ex["wa"], k)),
        ["$b_j$"] + cells(ex["b"], lambda v: f"${v:g}$"),
        [r"$\operatorname{sign}(b_j)$"] + cells(ex["sb"], lambda v: sgn[v]),
        ["bit of $b$"] + list(_bits(ex["wb"], k)),
        [r"$a \oplus b$"] + list(_bits(ex["xor"], k)),
    ]
    head = ["$j$"] + [str(j) for j in range(k)]
    return booktabs(head, rows, "l" + "c" * k, groups=(3, 6))


@table("tab:xnor-words")
def xnor_words_table(results: Mapping) -> str:
    """The 64-bit words of the example and the dot product three ways."""
    ex = xnor_example()
    rows = [[r"word of $a$ (hex)", rf"\texttt{{0x{ex['wa']:016x}}}"],
            [r"word of $b$ (hex)", rf"\texttt{{0x{ex['wb']:016x}}}"],
            [r"$a \oplus b$ (hex)", rf"\texttt{{0x{ex['xor']:016x}}}"],
            [r"$\operatorname{popcount}(a \oplus b)$", str(ex["popcount"])],
            [rf"$K - 2\,\operatorname{{popcount}} = {ex['k']} - 2 \cdot {ex['popcount']}$",
             str(ex["dot"])],
            [r"\texttt{kernels.xnor\_matmul}", str(ex["kernel"])],
            [r"$\sum_j \operatorname{sign}(a_j)\operatorname{sign}(b_j)$", str(ex["direct"])]]
    return booktabs(["Quantity", "Value"], rows, "lr", groups=(3,))


@table("tab:mismatch")
def mismatch_table(results: Mapping) -> str:
    r"""L1 mismatch :math:`\int|\tilde q' - \bar q_s'|dx` of each surrogate vs smoothed signs."""
    from bnnlab import analysis as A

    laws = [("uniform", 1.0), ("normal", 0.5), ("logistic", 0.3)]
    rows = []
    for name, q in _surrogate_quantizers().items():
        rows.append([_tex(name)] + [f"{A.surrogate_mismatch(q, n, s):.3f}" for n, s in laws])
    head = ["Surrogate"] + [f"{n}, $s = {s:g}$" for n, s in laws]
    return booktabs(head, rows)


# =============================================================================================
# Macros
# =============================================================================================
_MACRO_VARIANT = {"float": "FloatMLP", "binary": "BinaryNet", "xnor": "XnorNet",
                  "xnor++": "XnorNetPP", "abc": "AbcNet", "float-cnn": "FloatCNN",
                  "bireal": "BiReal", "reactnet": "ReActNet"}
_MACRO_DATASET = {"digits": "Digits", "fashion-mnist": "Fashion"}
_MACRO_QUANT = {"ste_sign": "Ste", "approx_sign": "Approx", "swish_sign": "Swish",
                "stochastic_sign": "Stochastic"}


def _pct(v, digits: int = 1) -> str:
    v = _num(v)
    return "n/a" if math.isnan(v) else f"{100 * v:.{digits}f}"


def _f(v, digits: int = 1) -> str:
    v = _num(v)
    return "n/a" if math.isnan(v) else f"{v:.{digits}f}"


def _thousands(n) -> str:
    return f"{int(n):,}".replace(",", r"\,")


def weight_clip_text() -> str:
    """The report's sentence on latent-weight clipping, read from the compared models' layers
    (:func:`bnnlab.models.weight_clip_sentence` over every binary variant, built as the
    experiments build them)."""
    from bnnlab.experiments import build_model
    from bnnlab.models import weight_clip_sentence

    built = {v.label: build_model(k, (1, 14, 14), 10) for k, v in VARIANTS.items() if v.binary}
    text = weight_clip_sentence(built)
    return text[:1].upper() + text[1:]


def macros(results: Mapping) -> dict[str, str]:
    r"""Every number the report's text quotes, as ``{macro name: LaTeX text}``.

    Names are letters only (``\AccBinaryNetFashion``). A value that was not measured is
    ``n/a``; the bench macros come with a conditional ``\ifbenchmeasured``.
    """
    m: dict[str, str] = {}
    run = results.get("run") or {}
    m["ExpProfile"] = _tex(run.get("profile", "n/a"))
    total = run.get("total_seconds")
    m["ExpMinutes"] = _f(None if total is None else total / 60)
    mach = run.get("machine", {})
    m["ExpThreads"] = str(mach.get("torch_threads", "n/a"))
    m["ExpCPUs"] = str(mach.get("cpu_count", "n/a"))
    m["ExpTorch"] = _tex(mach.get("torch", "n/a"))
    m["ExpFinished"] = _tex(run.get("finished", "n/a"))
    m["WeightClipSentence"] = weight_clip_text()

    arch = results.get("architectures")
    if arch:
        seeds = sorted({r["seed"] for r in arch["runs"]})
        m["NumSeeds"] = str(len(seeds))
        for d, p in arch["datasets"].items():
            D = _MACRO_DATASET.get(d, "X")
            for part in ("train", "val", "test"):
                m[f"{D}{part.capitalize()}Size"] = _thousands(p["sizes"][part])
            m[f"{D}Epochs"] = str(p["epochs"])
            m[f"{D}Batch"] = str(p["batch_size"])
            m[f"{D}LR"] = f"{p['lr']:g}"
            m[f"{D}Side"] = str(p["input_shape"][-1])
            m[f"{D}Width"] = str(p["width"])
            m[f"{D}Pool"] = str(p.get("pool", 1))
            m[f"{D}Hidden"] = r"\mbox{" + "--".join(str(h) for h in p["hidden"]) + "}"
            best, best_acc = None, -1.0
            for v in _variants_of(arch):
                st = _stats(arch["runs"], "test_acc", variant=v, dataset=d)
                V = _MACRO_VARIANT.get(v, "X")
                m[f"Acc{V}{D}"] = _pct(st["mean"])
                m[f"AccSd{V}{D}"] = _pct(st["sd"])
                if VARIANTS.get(v) and VARIANTS[v].binary and st["mean"] > best_acc:
                    best, best_acc = v, st["mean"]
            m[f"BestBinary{D}"] = _tex(_label(best)) if best else "n/a"
            m[f"BestBinaryAcc{D}"] = _pct(best_acc)
            fl = _stats(arch["runs"], "test_acc", variant="float", dataset=d)["mean"]
            bn = _stats(arch["runs"], "test_acc", variant="binary", dataset=d)["mean"]
            m[f"GapBinaryNet{D}"] = _pct(fl - bn)
            m[f"GapBest{D}"] = _pct(fl - best_acc)
        seconds = [r["fit_seconds"] for r in arch["runs"]]
        m["ArchRuns"] = str(len(arch["runs"]))
        m["ArchMinutes"] = _f(arch.get("seconds", sum(seconds)) / 60)

    signs = results.get("signs")
    if signs and signs.get("datasets"):
        _, entry = _signs_entry(results)
        fr = entry["flip_ratio"].get("binary")
        if fr and fr["total"]:
            m["FlipFirst"] = _pct(fr["total"][0], 2)
            m["FlipLast"] = _pct(fr["total"][-1], 2)
        gm = entry.get("gradient_mismatch")
        if gm:
            refs = list(gm["results"][0])
            ref = refs[-1]
            cos = [float(np.mean([v["cosine"] for v in res[ref].values()
                                  if v["cosine"] is not None])) for res in gm["results"]]
            m["GradRef"] = _tex(ref)
            m["GradCosStart"] = _f(cos[0], 2)
            m["GradCosEnd"] = _f(cos[-1], 2)
        sst = entry.get("sign_stats")
        if sst:
            layer = sst["layers"][_first_layer(sst)]
            m["SignFracStart"] = _pct(layer["fraction_positive"][0])
            m["SignFracEnd"] = _pct(layer["fraction_positive"][-1])
            m["SignNearFlipEnd"] = _pct(layer["near_flip"][-1])

    ab = results.get("ablation")
    if ab:
        means = {}
        for key, label in ab["quantizers"].items():
            st = _stats(ab["runs"], "test_acc", quantizer=key)
            Q = _MACRO_QUANT.get(key, "X")
            m[f"Abl{Q}Acc"] = _pct(st["mean"])
            m[f"Abl{Q}Sd"] = _pct(st["sd"])
            means[label] = st["mean"]
        best = max(means, key=lambda k: means[k])
        worst = min(means, key=lambda k: means[k])
        m["AblBest"], m["AblBestAcc"] = _tex(best), _pct(means[best])
        m["AblWorst"], m["AblWorstAcc"] = _tex(worst), _pct(means[worst])
        m["AblSpread"] = _pct(means[best] - means[worst])

    nz = results.get("noise")
    if nz:
        m["NoiseMaxSigma"] = f"{max(nz['sigmas']):g}"
        m["NoiseNTest"] = _thousands(nz.get("n_test", 0))
        drops = {}
        for v in {r["variant"] for r in nz["runs"]}:
            accs = np.array([[_num(a) for a in r["accuracy"]] for r in nz["runs"]
                             if r["variant"] == v])
            clean, worst = accs[:, 0].mean(), accs[:, -1].mean()
            V = _MACRO_VARIANT.get(v, "X")
            m[f"Noise{V}Clean"], m[f"Noise{V}Max"] = _pct(clean), _pct(worst)
            m[f"NoiseDrop{V}"] = _pct(clean - worst)
            drops[v] = clean - worst
        if drops:
            order = sorted(drops, key=lambda k: drops[k])
            m["NoiseMostRobust"] = _tex(_label(order[0]))
            m["NoiseLeastRobust"] = _tex(_label(order[-1]))
            if "float" in drops and "binary" in drops:
                m["NoiseRobusterOfTwo"] = _tex(_label("float" if drops["float"] <= drops["binary"]
                                                      else "binary"))

    reg = results.get("regression")
    if reg:
        m["RegSamples"] = _thousands(reg["n_samples"])
        m["RegEpochs"] = str(reg["protocol"]["epochs"])
        m["RegGridPoints"] = _thousands(reg["grid_points"])
        m["RegNoise"] = f"{reg['noise']:g}"
        l2 = {}
        for v, V in (("float", "Float"), ("binary", "Binary")):
            for k, K in (("sup", "Sup"), ("l1", "LOne"), ("l2", "LTwo")):
                m[f"Reg{K}{V}"] = _f(_stats(reg["runs"], k, variant=v)["mean"], 3)
            l2[v] = _stats(reg["runs"], "l2", variant=v)["mean"]
        m["RegLTwoRatio"] = _f(l2["binary"] / l2["float"] if l2["float"] else math.nan, 1)

    costs = results.get("costs")
    if costs and costs.get("datasets"):
        cd = costs["datasets"]
        dname = "fashion-mnist" if "fashion-mnist" in cd else next(iter(cd))
        fl_ms = cd[dname]["variants"].get("float", {}).get("torch_forward_ms")
        cnn_ms = cd[dname]["variants"].get("float-cnn", {}).get("torch_forward_ms")
        for v, c in cd[dname]["variants"].items():
            t = c["summary"]["totals"]
            V = _MACRO_VARIANT.get(v, "X")
            m[f"CostParams{V}"] = _thousands(t["total_params"])
            m[f"CostCompression{V}"] = _f(t["compression_ratio"], 1)
            m[f"CostBinMacShare{V}"] = _pct(t["binary_mac_ratio"], 0)
            m[f"CostSpeedup{V}"] = _f(t["speedup"], 1)
            m[f"CostForward{V}"] = _f(c["torch_forward_ms"], 2)
            if fl_ms:
                m[f"CostForwardRatio{V}"] = _f(c["torch_forward_ms"] / fl_ms, 1)
            if cnn_ms and VARIANTS.get(v) and VARIANTS[v].kind == "cnn":
                m[f"CostForwardRatioCNN{V}"] = _f(c["torch_forward_ms"] / cnn_ms, 1)
            if c.get("bits_bytes"):
                m[f"CostPackedOverhead{V}"] = _f(c["packed_bytes"] / c["bits_bytes"], 1)
        m["CostTimingBatch"] = str(cd[dname]["timing_batch"])
        any_summary = next(iter(cd[dname]["variants"].values()))["summary"]
        m["CostR"] = f"{any_summary['binary_ops_per_float_op']:g}"
        m["CostDataset"] = _tex(_DATASET_LABELS.get(dname, dname))
        m["CostThreads"] = str(costs.get("threads", "n/a"))
        m["CostISA"] = _tex((costs.get("kernel_info") or {}).get("isa", "n/a"))

    m.update(ladder_macros(results))

    ex = xnor_example()
    m["XnorK"], m["XnorPopcount"], m["XnorDot"] = str(ex["k"]), str(ex["popcount"]), str(ex["dot"])
    m["XnorTieIndex"] = str(ex["a"].index(0.0))

    rows = _bench_rows(results)
    m["BenchStatus"] = "measured" if rows else NOT_MEASURED
    bench = results.get("bench") if isinstance(results.get("bench"), Mapping) else {}
    load = bench.get("load_average") if bench else None
    m["BenchLoad"] = _f(load[0], 1) if load else "n/a"
    cpus = ((bench.get("cpu") or {}).get("cpus") if bench else None) or 1
    if load:
        m["BenchLoadNote"] = (("on a quiet machine" if load[0] < 0.5 * cpus else
                               "while the machine was shared")
                              + f" (load average {_f(load[0], 1)} on {cpus} logical CPUs)")
    m["BenchMode"] = ("quick" if bench.get("quick") else "full") if bench else "n/a"
    m.update(_bench_machine_macros(bench or {}))
    if rows:
        ok = [r for r in rows if r.get("correct") and r.get("ratio") is not None]

        def pick(pred):
            sel = [r for r in ok if pred(r)]
            return sel

        gemm = pick(lambda r: r.get("group") == "gemm" and r.get("threads") == 1
                    and not str(r["case"]).endswith("prepacked"))
        if gemm:
            big = max(gemm, key=lambda r: int(re.sub(r"\D", "", str(r["case"])) or 0))
            m["BenchGemmCase"] = _tex(big["case"])
            m["BenchGemmSpeedup"] = _f(big["ratio"], 1)
        conv = pick(lambda r: r.get("group") == "conv" and r.get("threads") == 1)
        if conv:
            m["BenchConvMin"] = _f(min(r["ratio"] for r in conv), 1)
            m["BenchConvMax"] = _f(max(r["ratio"] for r in conv), 1)
        e2e = pick(lambda r: r.get("case") == "e2e_cnn" and r.get("threads") == 1)
        if e2e:
            m["BenchEtoE"] = _f(e2e[0]["ratio"], 1)
        for case, name in (("e2e_vgg_small", "BenchEtoEVgg"), ("e2e_resnet18", "BenchEtoEResNet")):
            sel = pick(lambda r, c=case: r.get("case") == c and r.get("threads") == 1)
            if sel:
                m[name] = _f(sel[0]["ratio"], 1)
        ov = next((t for t in _bench_targets(results) if t.get("ceiling")), None)
        if ov:      # OpenVINO's efficiency and the ceiling it implies (bench.targets)
            m["BenchOpenvinoEffMin"] = f"{100 * ov['peer_eff'][0]:.0f}"
            m["BenchOpenvinoEffMax"] = f"{100 * ov['peer_eff'][1]:.0f}"
            m["BenchOpenvinoCeilMin"] = _f(ov["ceiling"][0], 1)
            m["BenchOpenvinoCeilMax"] = _f(ov["ceiling"][1], 1)
        mem = pick(lambda r: r.get("unit") == "bytes")
        for r in mem:
            name = "".join(w.capitalize() for w in re.split(r"[^A-Za-z]+", str(r["case"])) if w)
            m[f"Bench{name}"] = _f(r["ratio"], 1)
    return m


_BENCH_DEFAULTS = ("BenchLoad", "BenchMode", "BenchGemmCase", "BenchGemmSpeedup",
                   "BenchConvMin", "BenchConvMax", "BenchEtoE", "BenchMemGemm",
                   "BenchMemCnnWeights", "BenchMemCnnFile", "BenchCPU", "BenchClock",
                   "BenchPeaks", "BenchPeakRatio", "BenchTorch", "BenchTimer",
                   "BenchPeakTwoThreads", "BenchOpenvinoMin", "BenchOpenvinoMax",
                   "BenchIntEightConvMin", "BenchIntEightConvMax", "BenchIntEightGemv",
                   "BenchIntEightGemm", "BenchIntEightGemmCase", "BenchPeers", "BenchLoadNote",
                   "BenchEtoEVgg", "BenchEtoEResNet", "BenchOpenvinoEffMin", "BenchOpenvinoEffMax",
                   "BenchOpenvinoCeilMin", "BenchOpenvinoCeilMax")


def _bench_machine_macros(bench: Mapping) -> dict[str, str]:
    r"""The bench JSON's machine for the speed tables' captions: ``\BenchCPU`` (model, logical
    CPUs), ``\BenchClock`` (measured GHz), ``\BenchPeaks`` (register-only peaks per core, GMAC/s
    and MAC/cycle), ``\BenchPeakRatio`` (best binary / torch's fp32 peak), ``\BenchTorch``,
    ``\BenchTimer`` (wall or CPU clock), ``\BenchPeakTwoThreads`` (the register-only binary
    kernel's 2-vs-1-thread scaling: the machine's ceiling)."""
    m: dict[str, str] = {}
    cpu, pk = bench.get("cpu") or {}, bench.get("peaks") or {}
    if cpu.get("model"):
        m["BenchCPU"] = _tex(f"{cpu['model']}, {cpu.get('cpus', '?')} logical CPUs, torch "
                             f"capability {cpu.get('torch_capability', '?')}")
    if bench.get("torch_version"):
        m["BenchTorch"] = _tex(bench["torch_version"])
    if bench.get("clock"):
        m["BenchTimer"] = "CPU time of the calling thread" if bench["clock"] == "cpu" else "wall time"
    clock = _num(pk.get("clock_hz"))
    if not math.isnan(clock) and clock > 0:
        m["BenchClock"] = f"{clock / 1e9:.2f}"
    fp32, binary = pk.get("fp32") or {}, {k: v for k, v in (pk.get("binary") or {}).items() if v}
    tf = pk.get("torch_fp32")
    if tf and fp32.get(tf) and binary:
        per = pk.get("per_cycle") or {}

        def one(kind: str, name: str, v: float) -> str:
            cyc = (per.get(kind) or {}).get(name)
            return (f"{kind} {_tex(name)} {v / 1e9:.1f}\\,GMAC/s"
                    + (f" ({cyc:.0f}/cycle)" if cyc else ""))
        m["BenchPeaks"] = ", ".join([one("fp32", tf, fp32[tf])]
                                    + [one("binary", k, v) for k, v in binary.items()])
        best = max(binary, key=lambda k: binary[k])
        m["BenchPeakRatio"] = f"{binary[best] / fp32[tf]:.1f}"
    ceiling = [r["peak_2v1"] for r in bench.get("rows") or []
               if isinstance(r, Mapping) and r.get("peak_2v1")]
    if ceiling:
        m["BenchPeakTwoThreads"] = f"{ceiling[0]:.2f}"
    m.update(_bench_peer_macros(bench.get("rows") or []))
    return m


def _bench_peer_macros(rows: Sequence) -> dict[str, str]:
    r"""bnnlab's speed-up over the peers at one thread (``bench --peers``): over OpenVINO's
    BinaryConvolution on the convolutions (``\BenchOpenvinoMin``/``Max``), over torch int8 on
    the convolutions (``\BenchIntEightConvMin``/``Max``), the GEMV (``\BenchIntEightGemv``,
    1x4096x4096) and the largest GEMM (``\BenchIntEightGemm``); ``BenchPeers`` = "measured"
    when there is at least one."""
    def ratios(key: str, group: str) -> list[tuple[str, float]]:
        out = []
        for r in rows:
            e = (r.get("peers") or {}).get(key) if isinstance(r, Mapping) else None
            if r.get("group") == group and r.get("threads") == 1 and isinstance(e, Mapping) \
                    and e.get("ratio") is not None:
                out.append((str(r["case"]), float(e["ratio"])))
        return out

    m: dict[str, str] = {}
    for name, key, group in (("Openvino", "openvino", "conv"), ("IntEightConv", "torch_int8", "conv")):
        got = ratios(key, group)
        if got:
            m[f"Bench{name}Min"] = _f(min(v for _, v in got), 1)
            m[f"Bench{name}Max"] = _f(max(v for _, v in got), 1)
    gemv = dict(ratios("torch_int8", "gemv"))
    if "gemv1x4096" in gemv:
        m["BenchIntEightGemv"] = _f(gemv["gemv1x4096"], 1)
    gemm = [(c, v) for c, v in ratios("torch_int8", "gemm") if not c.endswith("prepacked")]
    if gemm:
        case, v = max(gemm, key=lambda cv: int(re.sub(r"\D", "", cv[0]) or 0))
        m["BenchIntEightGemm"], m["BenchIntEightGemmCase"] = _f(v, 1), _tex(case)
    if m:
        m["BenchPeers"] = "measured"
    return m


def macros_tex(results: Mapping) -> str:
    r"""``macros.tex``: ``\newcommand`` lines, plus ``\ifbenchmeasured``."""
    m = macros(results)
    models = "BenchEtoEVgg" in m and "BenchEtoEResNet" in m
    ceiling = "BenchOpenvinoCeilMin" in m
    for name in _BENCH_DEFAULTS:
        m.setdefault(name, "n/a")
    lines = ["% Generated by `python -m bnnlab figures` from the JSON results. Do not edit.",
             r"\newif\ifbenchmeasured",
             r"\benchmeasuredtrue" if m["BenchStatus"] == "measured" else r"\benchmeasuredfalse",
             r"\newif\ifbenchpeers",
             r"\benchpeerstrue" if m.get("BenchPeers") == "measured" else r"\benchpeersfalse",
             r"\newif\ifbenchmodels",
             r"\benchmodelstrue" if models else r"\benchmodelsfalse",
             r"\newif\ifbenchceiling",
             r"\benchceilingtrue" if ceiling else r"\benchceilingfalse"]
    for name, value in sorted(m.items()):
        if not re.fullmatch(r"[A-Za-z]+", name):
            raise ValueError(f"macro name {name!r} must be letters only")
        lines.append(rf"\newcommand{{\{name}}}{{{value}}}")
    return "\n".join(lines) + "\n"


# =============================================================================================
# The ablation ladder (bnnlab.ladder): table, figure, published anchors, macros, guards
# =============================================================================================
_LADDER_MACRO = {"float": "Float", "binarynet": "BinaryNet", "xnor": "Xnor", "bireal": "BiReal",
                 "reactnet": "ReActNet", "twostep": "TwoStep", "distill": "Distill"}

#: published anchors: (method, data set, architecture, budget, accuracy %, bib key, note).
#: Numbers as the papers state them (top-1 on ImageNet; CIFAR-10: 100 - test error).
ANCHORS: tuple[tuple[str, str, str, str, float, str, str], ...] = (
    ("BinaryNet", "CIFAR-10", "VGG-like", "500 epochs", 88.6, "hubara2016binarized",
     "error 11.40 %, Theano"),
    ("XNOR-Net", "ImageNet", "ResNet-18", "--", 51.2, "rastegari2016xnor", ""),
    ("Bi-Real Net", "ImageNet", "ResNet-18", "--", 56.4, "liu2018bireal", ""),
    ("Bi-Real Net", "ImageNet", "ResNet-34", "--", 62.2, "liu2018bireal", ""),
    ("Real-to-Binary", "ImageNet", "ResNet-18", "multi-stage distillation", 65.4,
     "martinez2020training", "as ReActNet quotes it"),
    ("ReActNet-A", "ImageNet", "MobileNet-like", "two steps, distillation", 69.4,
     "liu2020reactnet", ""),
)


def _t975(df: int) -> float:
    """Two-sided 95 % quantile of Student's t with ``df`` degrees of freedom."""
    from scipy import stats

    return float(stats.t.ppf(0.975, df))


def ladder_stats(results: Mapping) -> list[dict[str, Any]]:
    """Per rung, in ladder order: test accuracy over seeds and the step from the rung before.

    Returns:
        One dict per rung: ``rung``, ``label``, ``points`` (test accuracy per seed, seed order),
        ``mean``, ``sd``, ``n``, ``stopped`` / ``capped`` (counts), ``under_trained`` (more
        than half the seeds hit the cap), ``best_epoch`` (mean, last training step),
        ``epochs`` (mean epochs run, all steps), ``diff`` (paired by seed: ``mean``, ``sd``,
        ``n``, ``lo``, ``hi`` of the 95 % t-interval, nan when n < 2) and ``verdict``:
        ``"first"``, ``"one seed"``, ``"better"``, ``"worse"`` or ``"within noise"`` (the
        interval contains 0).
    """
    lad = _need(results, "ladder")
    runs = lad["runs"]
    out: list[dict[str, Any]] = []
    prev: dict[int, float] | None = None
    for rung in lad["meta"]["rungs"]:
        recs = sorted((r for r in runs if r["rung"] == rung), key=lambda r: r["seed"])
        if not recs:
            raise MissingResults(f"ladder has no run of rung {rung!r}")
        acc = {r["seed"]: float(r["test_acc"]) for r in recs}
        st = aggregate(acc.values())
        row: dict[str, Any] = {
            "rung": rung, "label": recs[0]["label"], "points": list(acc.values()),
            "mean": st["mean"], "sd": st["sd"], "n": st["n"],
            "stopped": sum(bool(r["stopped_early"]) for r in recs),
            "capped": sum(bool(r["hit_cap"]) for r in recs),
            "best_epoch": float(np.mean([_num(r["best_epoch"]) for r in recs])),
            "epochs": float(np.mean([r["epochs_run"] for r in recs])),
        }
        row["under_trained"] = row["capped"] * 2 > len(recs)
        nan = math.nan
        diff = {"mean": nan, "sd": nan, "n": 0, "lo": nan, "hi": nan}
        verdict = "first"
        if prev is not None:
            d = [acc[s] - prev[s] for s in acc if s in prev]
            dst = aggregate(d)
            diff.update(mean=dst["mean"], sd=dst["sd"], n=dst["n"])
            if dst["n"] >= 2:
                half = _t975(int(dst["n"]) - 1) * dst["sd"] / math.sqrt(dst["n"])
                diff.update(lo=dst["mean"] - half, hi=dst["mean"] + half)
                verdict = ("better" if diff["lo"] > 0 else "worse" if diff["hi"] < 0
                           else "within noise")
            else:
                verdict = "one seed"
        row["diff"], row["verdict"] = diff, verdict
        out.append(row)
        prev = acc
    return out


def _pts(v, digits: int = 1) -> str:
    """Signed percentage points (``+1.2``), ``--`` for nan."""
    v = _num(v)
    return "--" if math.isnan(v) else f"{v * 100:+.{digits}f}"


@figure("fig:ladder", height=360)
def ladder(results: Mapping) -> go.Figure:
    """The ablation ladder: test accuracy per rung, mean ± sd over seeds and every seed; open
    circles: under-trained (most seeds hit the epoch cap); dotted: the float twin's mean."""
    rows = ladder_stats(results)
    fig = P.ladder_figure([{"name": r["label"], "mean": r["mean"], "sd": r["sd"],
                            "points": r["points"], "flag": r["under_trained"]} for r in rows],
                          reference=rows[0]["mean"] if rows[0]["rung"] == "float" else None)
    fig.update_layout(showlegend=False)
    return fig


@table("tab:ladder")
def ladder_table(results: Mapping) -> str:
    """The ladder: test accuracy per rung, the paired step from the rung before with its 95 %
    interval and verdict, and how many runs stopped early or hit the cap."""
    rows = ladder_stats(results)
    out: list[Sequence[str] | str] = []
    for r in rows:
        d = r["diff"]
        ci = ("" if math.isnan(_num(d["lo"]))
              else rf" [{d['lo'] * 100:+.1f}, {d['hi'] * 100:+.1f}]")
        flag = r"$^\dagger$" if r["under_trained"] else ""
        out.append([_tex(r["label"]) + flag, pm(r["mean"], r["sd"], scale=100),
                    ("--" if r["verdict"] == "first" else f"${_pts(d['mean'])}${ci}"),
                    _tex(r["verdict"] if r["verdict"] != "first" else "reference"),
                    f"{r['stopped']} / {r['capped']}", f"{r['best_epoch']:.1f}"])
    out.append(r"$^\dagger$ under-trained: most seeds hit the epoch cap")
    head = ["Rung", r"Test acc.\ (\%)", r"Step (points, 95\,\% CI)", "Verdict",
            "Stopped / capped", "Best epoch"]
    return booktabs(head, out, "lrllcr")


@table("tab:anchors")
def anchors_table(results: Mapping) -> str:
    """Published anchors (from the papers) next to the ladder measured here."""
    out: list[Sequence[str] | str] = [r"\emph{published}"]
    for method, data, arch, budget, acc, key, note in ANCHORS:
        out.append([_tex(method), _tex(data), _tex(arch), _tex(budget), f"{acc:.1f}",
                    rf"\cite{{{key}}}" + (f" ({_tex(note)})" if note else "")])
    lad = results.get("ladder")
    if lad:
        s = lad["meta"]["settings"]
        side = 28 // int(s.get("pool", 1))
        budget = rf"$\le {s['max_epochs']}$ epochs, early stop"
        out.append(r"\emph{measured here} (" + _tex(lad["meta"]["profile"]) + " profile)")
        for r in ladder_stats(results):
            out.append([_tex(r["label"]), "Fashion-MNIST",
                        rf"ladder CNN, ${side}\times{side}$", budget,
                        pm(r["mean"], r["sd"], scale=100, math_mode=True), "this report"])
    head = ["Method", "Data", "Architecture", "Budget", r"Acc.\ (\%)", "Source"]
    return booktabs(head, out, "llllrl")


def _join(items: Sequence[str]) -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def ladder_macros(results: Mapping) -> dict[str, str]:
    r"""The ladder's numbers and data-chosen sentences (``\LadderBestBinary``, ...)."""
    lad = results.get("ladder")
    if not lad:
        return {}
    meta, m = lad["meta"], {}
    s = meta["settings"]
    rows = ladder_stats(results)
    m["LadderProfile"] = _tex(meta["profile"])
    m["LadderSeeds"] = str(len(meta["seeds"]))
    m["LadderRuns"] = str(len(lad["runs"]))
    m["LadderStopped"] = str(sum(r["stopped"] for r in rows))
    m["LadderCapped"] = str(sum(r["capped"] for r in rows))
    m["LadderMinutes"] = _f(meta["run_seconds"] / 60)
    m["LadderCPUs"] = str(meta["machine"].get("cpus", "n/a"))
    m["LadderTrain"] = "all" if s["n_train"] is None else _thousands(s["n_train"])
    m["LadderVal"] = _thousands(s["val_size"])
    m["LadderTest"] = "10,000" if s["n_test"] is None else _thousands(s["n_test"])
    m["LadderSide"] = str(28 // int(s["pool"]))
    for k, name in (("width", "Width"), ("blocks", "Blocks"), ("max_epochs", "Cap"),
                    ("patience", "Patience"), ("lr_patience", "LRPatience"),
                    ("batch_size", "Batch")):
        m[f"Ladder{name}"] = str(s[k])
    m["LadderMinDelta"] = _f(float(s.get("min_delta", 0.0)) * 100)
    m["LadderWallMinutes"] = _f(meta["wall_seconds"] / 60)
    m["LadderLR"] = f"{s['lr']:g}"
    for r in rows:
        R = _LADDER_MACRO.get(r["rung"], "X")
        m[f"LadderAcc{R}"] = _pct(r["mean"])
        m[f"LadderSd{R}"] = _pct(r["sd"])
        m[f"LadderStep{R}"] = _pts(r["diff"]["mean"])
    binary = [r for r in rows if r["rung"] != "float"]
    best = max(binary, key=lambda r: r["mean"])
    m["LadderBestBinary"] = _tex(best["label"])
    m["LadderBestBinaryAcc"] = _pct(best["mean"])
    fl = next((r for r in rows if r["rung"] == "float"), None)
    if fl is not None:
        gap = fl["mean"] - best["mean"]
        m["LadderGapFloat"] = _pct(abs(gap))
        m["LadderFloatSentence"] = (
            rf"the float twin stays above every binary rung, {_pct(gap)} points above the best "
            rf"one ({_tex(best['label'])})" if gap > 0 else
            rf"the best binary rung ({_tex(best['label'])}) reaches the float twin "
            rf"({_pct(-gap)} points above it)")
    # the steps that add an idea: from the first binary rung on (float -> BinaryNet is the
    # price of binarisation, not an idea that should help)
    steps = [r for r in rows[2:]] if rows[0]["rung"] == "float" else rows[1:]
    if rows[0]["rung"] == "float" and len(rows) > 1:
        m["LadderBinarisationCost"] = _pct(-rows[1]["diff"]["mean"])
    gain = max(steps, key=lambda r: r["diff"]["mean"])
    m["LadderLargestStep"] = _tex(gain["label"])
    m["LadderLargestStepPts"] = _pts(gain["diff"]["mean"])
    if any(r["verdict"] == "one seed" for r in steps):
        m["LadderStepSentence"] = (r"With one seed per rung no step can be told from noise: "
                                   r"the steps of \cref{tab:ladder} are single runs.")
        m["LadderLiteratureSentence"] = (r"One seed cannot confirm or contradict the "
                                         r"literature's ordering.")
    else:
        by = {v: [_tex(r["label"]) for r in steps if r["verdict"] == v]
              for v in ("better", "worse", "within noise")}
        parts = []
        if by["better"]:
            parts.append(f"{_join(by['better'])} improve{'s' if len(by['better']) == 1 else ''} "
                         "on the rung before beyond noise (the 95\\,\\% interval of the paired "
                         "difference excludes zero)")
        if by["within noise"]:
            parts.append(f"{_join(by['within noise'])} cannot be told from the rung before")
        if by["worse"]:
            parts.append(f"{_join(by['worse'])} lose{'s' if len(by['worse']) == 1 else ''} "
                         "to the rung before beyond noise")
        text = "; ".join(parts)
        m["LadderStepSentence"] = text[:1].upper() + text[1:] + "."
        m["LadderLiteratureSentence"] = (
            "No rung loses to the one before it beyond noise, as the literature, where each "
            "idea was introduced as an improvement, predicts." if not by["worse"] else
            f"Against the literature, where each idea was introduced as an improvement, "
            f"{_join(by['worse'])} lose{'s' if len(by['worse']) == 1 else ''} here beyond noise.")
    under = [_tex(r["label"]) for r in rows if r["under_trained"]]
    m["LadderUnderTrained"] = (
        "No rung hit the cap in most of its seeds." if not under else
        ("Every rung" if len(under) == len(rows) else _join(under))
        + " hit the epoch cap in most seeds and "
        + ("is" if len(under) == 1 or len(under) == len(rows) else "are")
        + r" marked under-trained ($^\dagger$): a longer budget could still change "
        + ("its" if len(under) == 1 else "their") + " numbers.")
    return m


#: guards: name -> function(results) -> error message or None. Each guards a sentence of the
#: report that is typed, not generated; ``python -m bnnlab figures`` fails when one fires.
GUARDS: dict[str, Callable[[Mapping], str | None]] = {}


def guard(name: str):
    """Register a guard under ``name``: ``fn(results) -> str | None`` (a message when the data
    contradict the sentence it guards; ``None`` when they agree or the data are absent)."""
    def register(fn):
        GUARDS[name] = fn
        return fn
    return register


@guard("ladder-complete")
def _guard_ladder_complete(results: Mapping) -> str | None:
    """'each rung ... over the same seeds' (Sec. ladder): every rung has every seed."""
    lad = results.get("ladder")
    if not lad:
        return None
    seeds = sorted(lad["meta"]["seeds"])
    for rung in lad["meta"]["rungs"]:
        got = sorted(r["seed"] for r in lad["runs"] if r["rung"] == rung)
        if got != seeds:
            return f"rung {rung!r} has seeds {got}, the ladder {seeds}"
    return None


@guard("ladder-binary-below-float")
def _guard_binary_below_float(results: Mapping) -> str | None:
    """'the float twin is the reference the binary rungs are measured against' (Sec. ladder)
    reads as an upper bound: no binary rung may beat it beyond noise."""
    if not results.get("ladder"):
        return None
    rows = ladder_stats(results)
    fl = next((r for r in rows if r["rung"] == "float"), None)
    if fl is None:
        return "the ladder has no float twin"
    for r in rows[1:]:
        noise = 2 * max(_num(r["sd"]) if r["n"] > 1 else 0.0,
                        _num(fl["sd"]) if fl["n"] > 1 else 0.0, 0.005)
        if r["mean"] > fl["mean"] + noise:
            return (f"{r['label']} ({r['mean']:.4f}) beats the float twin ({fl['mean']:.4f}) "
                    f"by more than 2 sd")
    return None


@guard("signs-balanced")
def _guard_signs_balanced(results: Mapping) -> str | None:
    """'the share of non-negative weights stays near one half' and 'its inputs are balanced
    between the signs too' (Sec. signs): within 0.4 to 0.6 at the start and the end."""
    signs = results.get("signs")
    if not signs or not signs.get("datasets"):
        return None
    _, entry = _signs_entry(results)
    st = entry.get("sign_stats")
    if not st:
        return None
    layer = st["layers"][_first_layer(st)]
    for key in ("fraction_positive", "input_fraction_positive"):
        vals = layer.get(key) or []
        for v in vals[:1] + vals[-1:]:
            if not 0.4 <= v <= 0.6:
                return f"first binary layer: {key} = {v:.3f}, outside [0.4, 0.6]"
    return None


@guard("flip-ratio-falls")
def _guard_flip_ratio_falls(results: Mapping) -> str | None:
    """'for BinaryNet it falls from \\FlipFirst to \\FlipLast' (Sec. signs)."""
    signs = results.get("signs")
    if not signs or not signs.get("datasets"):
        return None
    _, entry = _signs_entry(results)
    fr = entry["flip_ratio"].get("binary")
    if fr and len(fr["total"]) > 1 and not fr["total"][-1] < fr["total"][0]:
        return f"BinaryNet's flip ratio does not fall: {fr['total'][0]} -> {fr['total'][-1]}"
    return None


@guard("ste-correlated-not-equal")
def _guard_ste_cosine(results: Mapping) -> str | None:
    """'The STE direction is correlated with, but not equal to, the gradient of any smooth
    neighbour' (Sec. STE): every mean cosine in (0, 0.999)."""
    signs = results.get("signs")
    if not signs or not signs.get("datasets"):
        return None
    _, entry = _signs_entry(results)
    gm = entry.get("gradient_mismatch")
    if not gm:
        return None
    for res in gm["results"]:
        for ref, layers in res.items():
            vals = [v["cosine"] for v in layers.values() if v["cosine"] is not None]
            c = float(np.mean(vals)) if vals else math.nan
            if not 0.0 < c < 0.999:
                return f"cosine of the STE gradient with {ref} is {c:.3f}, not in (0, 0.999)"
    return None


def _cost_variants(results: Mapping) -> dict | None:
    """The ``costs`` variants of Fashion-MNIST (else the first data set), or ``None``."""
    costs = results.get("costs")
    if not costs or not costs.get("datasets"):
        return None
    cd = costs["datasets"]
    return cd["fashion-mnist" if "fashion-mnist" in cd else next(iter(cd))]["variants"]


@guard("binary-slower-in-torch")
def _guard_binary_slower(results: Mapping) -> str | None:
    """'In PyTorch ... the binary models are *slower* than their float twins' (Discussion)."""
    v = _cost_variants(results)
    if v is None:
        return None
    fl, bn = v.get("float", {}).get("torch_forward_ms"), v.get("binary", {}).get("torch_forward_ms")
    if fl and bn and not bn > fl:
        return f"the binary MLP is not slower than the float MLP in torch ({bn} vs {fl} ms)"
    return None


@guard("cnns-compress-more")
def _guard_cnns_compress(results: Mapping) -> str | None:
    """'The small CNNs ... come closer [to 32]' than the BinaryNet MLP (Discussion, memory)."""
    v = _cost_variants(results)
    if v is None:
        return None

    def ratio(k):
        return v[k]["summary"]["totals"]["compression_ratio"] if k in v else None

    mlp = ratio("binary")
    for k in ("bireal", "reactnet"):
        r = ratio(k)
        if mlp is not None and r is not None and not r > mlp:
            return f"{k} compresses {r:.1f}x, not more than the BinaryNet MLP's {mlp:.1f}x"
    return None


@guard("float-ends-hold-most-bytes")
def _guard_float_ends(results: Mapping) -> str | None:
    """'its first and last layers ... hold a minority of its parameters but, at 32 bits each,
    most of its bytes' (Discussion, memory; the BinaryNet MLP)."""
    costs = results.get("costs")
    if not costs or not costs.get("datasets"):
        return None
    cd = costs["datasets"]
    dname = "fashion-mnist" if "fashion-mnist" in cd else next(iter(cd))
    sm = cd[dname]["variants"].get("binary", {}).get("summary")
    if not sm:
        return None
    recs = sm["records"]
    ends = [r for r in recs if r["type"] in ("Linear", "Conv2d")]
    params = sum(r["params"] for r in recs)
    nbytes = sum(r["memory_bytes"] for r in recs)
    p_end = sum(r["params"] for r in ends) / params if params else math.nan
    b_end = sum(r["memory_bytes"] for r in ends) / nbytes if nbytes else math.nan
    if not (p_end < 0.5 < b_end):
        return (f"the float layers of the BinaryNet MLP hold {p_end:.0%} of its parameters and "
                f"{b_end:.0%} of its bytes (the text says: a minority, but most bytes)")
    return None


def check_guards(results: Mapping) -> list[str]:
    """Run every guard of :data:`GUARDS`; return ``"name: message"`` for each that fired."""
    out = []
    for name, fn in GUARDS.items():
        msg = fn(results)
        if msg:
            out.append(f"{name}: {msg}")
    return out


# =============================================================================================
# Export and CLI
# =============================================================================================
def _for_paper(fig: go.Figure, width: int, height: int) -> go.Figure:
    """The same figure without its title (the caption says it), sized for the page."""
    fig = go.Figure(fig)
    fig.update_layout(title=None, width=width, height=height,
                      margin=dict(l=60, r=15, t=45, b=50))
    if fig.layout.annotations and fig.layout.showlegend is not False:
        # subplot titles sit where the legend would: put the legend under the plot
        fig.update_layout(legend=dict(orientation="h", x=0.5, xanchor="center", y=-0.22,
                                      yanchor="top"), margin=dict(b=95))
    return fig


def export_pdfs(figs: Mapping[str, go.Figure], paths: Mapping[str, Path],
                sizes: Mapping[str, tuple[int, int]]) -> None:
    """Write every figure to its PDF in one kaleido batch (one Chromium for all).

    Uses the system Chromium (``/usr/bin/chromium`` on Debian; kaleido finds it on its own);
    never downloads a browser.
    """
    import kaleido
    import plotly.io as pio

    labels = list(figs)
    if not labels:
        return
    for p in paths.values():
        Path(p).parent.mkdir(parents=True, exist_ok=True)
    kaleido.start_sync_server(silence_warnings=True)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The kopts argument is ignored")
            pio.write_images([figs[k] for k in labels], [str(paths[k]) for k in labels],
                             width=[sizes[k][0] for k in labels],
                             height=[sizes[k][1] for k in labels])
    finally:
        kaleido.stop_sync_server(silence_warnings=True)


def write_all(outdir, *, results_dir=None, bench_json=None, pdf: bool = True,
              only: Sequence[str] | None = None, log: Callable[[str], None] = print) -> dict:
    """Write ``figures/*.pdf``, ``tables/*.tex`` and ``macros.tex`` under ``outdir``.

    Args:
        outdir: e.g. ``paper/generated``.
        results_dir: the experiments' JSON directory. Default: ``<outdir>/results``.
        bench_json: the bench JSON. Default: ``<results_dir>/bench.json``.
        pdf: export the figures (needs kaleido and Chromium); ``False`` only builds them.
        only: labels to write (default: all).

    Returns:
        ``{"figures": [paths], "tables": [paths], "macros": path, "guards": [messages]}``
        (``guards``: the guards of :data:`GUARDS` that fired, see :func:`check_guards`).

    Raises:
        MissingResults: a needed result file is missing.
    """
    outdir = Path(outdir)
    results_dir = Path(results_dir) if results_dir is not None else outdir / "results"
    results = load_results(results_dir, bench_json=bench_json)
    labels = list(FIGURES) + list(TABLES) if only is None else list(only)
    unknown = [l for l in labels if l not in FIGURES and l not in TABLES]
    if unknown:
        raise ValueError(f"only: unknown labels {unknown}")
    figs, paths = {}, {}
    for label in labels:
        if label in FIGURES:
            w, h = FIGURE_SIZES[label]
            figs[label] = _for_paper(FIGURES[label](results), w, h)
            paths[label] = outdir / "figures" / f"{_stem(label)}.pdf"
    written_tables = []
    for label in labels:
        if label in TABLES:
            path = outdir / "tables" / f"{_stem(label)}.tex"
            path.parent.mkdir(parents=True, exist_ok=True)
            fn = TABLES[label]
            path.write_text(f"% {label}: made by bnnlab.figures.{fn.__name__}. Do not edit.\n"
                            + fn(results))
            written_tables.append(path)
    macro_path = outdir / "macros.tex"
    macro_path.write_text(macros_tex(results))
    failed = check_guards(results)
    for msg in failed:
        log(f"[figures] GUARD FAILED {msg}")
    if pdf and figs:
        t0 = time.perf_counter()
        export_pdfs(figs, paths, FIGURE_SIZES)
        log(f"[figures] {len(figs)} PDFs in {time.perf_counter() - t0:.1f} s")
    log(f"[figures] {len(written_tables)} tables, macros.tex -> {outdir}")
    return {"figures": [paths[k] for k in figs], "tables": written_tables, "macros": macro_path,
            "guards": failed}


def main(argv: list[str] | None = None) -> int:
    """``python -m bnnlab figures OUTDIR [--results DIR] [--bench-json FILE] [--no-pdf]``."""
    parser = argparse.ArgumentParser(
        prog="python -m bnnlab figures",
        description="Write the report's figures (PDF), tables (LaTeX) and macros.tex from the "
                    "JSON results of `python -m bnnlab experiments`.")
    parser.add_argument("outdir", type=Path, help="output directory, e.g. paper/generated")
    parser.add_argument("--results", type=Path, default=None,
                        help="JSON results directory (default: OUTDIR/results)")
    parser.add_argument("--bench-json", type=Path, default=None,
                        help="`python -m bnnlab bench --json` output (default: RESULTS/bench.json)")
    parser.add_argument("--no-pdf", action="store_true",
                        help="build the figures but do not export PDFs (no Chromium needed)")
    parser.add_argument("--only", nargs="+", metavar="LABEL", help="only these labels")
    parser.add_argument("--list", action="store_true", help="list the labels and exit")
    args = parser.parse_args(argv)
    if args.list:
        for label, fn in {**FIGURES, **TABLES}.items():
            doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
            print(f"{label:<24} {fn.__name__:<22} {doc}")
        return 0
    if not args.no_pdf and shutil.which("chromium") is None and shutil.which("chrome") is None \
            and not Path("/usr/bin/chromium").exists():
        print("bnnlab figures: no Chromium found for the PDF export (Debian: apt-get install "
              "chromium); use --no-pdf to only write tables and macros", file=sys.stderr)
        return 2
    try:
        done = write_all(args.outdir, results_dir=args.results, bench_json=args.bench_json,
                  pdf=not args.no_pdf, only=args.only, log=lambda s: print(s, flush=True))
    except MissingResults as exc:
        print(f"bnnlab figures: {exc.args[0]}", file=sys.stderr)
        return 1
    if done["guards"]:
        print(f"bnnlab figures: {len(done['guards'])} sentence(s) of the report contradicted by "
              "the data (see GUARD FAILED above)", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
