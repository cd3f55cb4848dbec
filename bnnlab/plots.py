"""Pure figure builders: data in, :class:`plotly.graph_objects.Figure` out, one theme.

Every builder takes plain data (arrays, dicts, the records of :mod:`bnnlab.analysis` and
:mod:`bnnlab.summary`), computes nothing expensive and returns a new figure with the
:data:`THEME` template. The widgets of :mod:`bnnlab.widgets` wrap these figures in
``go.FigureWidget`` and refresh them; the paper's figures export them with kaleido. The
theme is registered once, on import, under ``plotly.io.templates["bnnlab"]``; the global
default template is left alone.

Examples::

    >>> from bnnlab import analysis, plots
    >>> fig = plots.quantizer_figure(analysis.mismatch_curves("approx_sign", "normal", 0.4))
    >>> fig.show()
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

__all__ = [
    "THEME",
    "COLORS",
    "quantizer_figure",
    "histogram_figure",
    "sign_distribution_figure",
    "curves_figure",
    "history_figure",
    "flip_ratio_figure",
    "bars_figure",
    "summary_figure",
    "comparison_figure",
    "table_figure",
]

#: Name of the plotly template every bnnlab figure uses.
THEME = "bnnlab"
#: Okabe–Ito colour-blind-safe palette (the template's colorway).
COLORS = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442",
          "#000000")


def _register_theme() -> None:
    if THEME in pio.templates:
        return
    template = go.layout.Template(pio.templates["plotly_white"])
    template.layout.update(
        colorway=list(COLORS),
        font=dict(family="Helvetica, Arial, sans-serif", size=13),
        title=dict(font=dict(size=15), x=0.02),
        margin=dict(l=60, r=20, t=50, b=50),
        legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="right", x=1),
        hovermode="x unified",
    )
    pio.templates[THEME] = template


_register_theme()


def _layout(fig: go.Figure, **kw) -> go.Figure:
    fig.update_layout(template=THEME, **kw)
    return fig


def quantizer_figure(curves: Mapping, *, title: str | None = None, height: int = 340) -> go.Figure:
    """Forward map, surrogate gradient and smoothed-sign derivative of one quantizer.

    Args:
        curves: a dict with ``x``, ``q``, ``surrogate``, ``smoothed`` and ``mismatch``, as
            returned by :func:`bnnlab.analysis.mismatch_curves`.
        title: figure title; default states the L1 mismatch.

    Returns:
        Three traces, in order: ``q(x)`` (steps), ``surrogate ∂q/∂x``, ``smoothed derivative``.
    """
    x = np.asarray(curves["x"])
    fig = go.Figure([
        go.Scatter(x=x, y=curves["q"], name="q(x)", line_shape="hv"),
        go.Scatter(x=x, y=curves["surrogate"], name="surrogate ∂q/∂x"),
        go.Scatter(x=x, y=curves["smoothed"], name="d/dx E[sign(x+sε)]", line_dash="dash"),
    ])
    title = title or f"L1 mismatch ∫|surrogate − smoothed| dx = {curves['mismatch']:.3f}"
    return _layout(fig, title=title, xaxis_title="x", height=height)


def histogram_figure(edges, counts, *, name: str = "latent weights", title: str | None = None,
                     height: int = 320) -> go.Figure:
    """Bar histogram on fixed bins with a dotted line at the flip point 0.

    Args:
        edges: bin edges (length ``len(counts) + 1``).
        counts: counts per bin.
    """
    edges, counts = np.asarray(edges, dtype=float), np.asarray(counts)
    if edges.shape != (counts.size + 1,):
        raise ValueError(f"edges must have len(counts) + 1 = {counts.size + 1} entries, "
                         f"got {edges.size}")
    fig = go.Figure(go.Bar(x=(edges[:-1] + edges[1:]) / 2, y=counts, width=np.diff(edges),
                           name=name))
    fig.add_vline(x=0.0, line_dash="dot", line_color="grey")
    return _layout(fig, title=title, xaxis_title="value", yaxis_title="count", bargap=0.02,
                   height=height)


def sign_distribution_figure(edges, counts, epochs: Sequence[int],
                             fraction_positive: Sequence[float], index: int, *,
                             title: str | None = None, height: int = 340) -> go.Figure:
    """Histogram at one snapshot (left) and the share of +1 over all snapshots (right).

    Args:
        edges: bin edges; counts: the histogram of snapshot ``index``.
        epochs, fraction_positive: one value per snapshot.
        index: which snapshot the histogram shows (marked on the right panel).

    Returns:
        Three traces: the histogram bars, the fraction line, the current-snapshot marker.
    """
    edges = np.asarray(edges, dtype=float)
    fig = make_subplots(rows=1, cols=2, column_widths=[0.62, 0.38],
                        subplot_titles=("latent values", "share of +1"))
    fig.add_bar(x=(edges[:-1] + edges[1:]) / 2, y=np.asarray(counts), width=np.diff(edges),
                name="count", row=1, col=1)
    fig.add_scatter(x=list(epochs), y=list(fraction_positive), name="share of +1",
                    mode="lines+markers", row=1, col=2)
    fig.add_scatter(x=[epochs[index]], y=[fraction_positive[index]], name="this epoch",
                    mode="markers", marker=dict(size=13, symbol="circle-open"), row=1, col=2)
    fig.add_vline(x=0.0, line_dash="dot", line_color="grey", row=1, col=1)
    fig.update_xaxes(title_text="epoch", row=1, col=2)
    fig.update_yaxes(range=[0, 1], row=1, col=2)
    return _layout(fig, title=title or f"epoch {epochs[index]}", bargap=0.02, height=height,
                   showlegend=False)


def curves_figure(series: Mapping[str, tuple[Sequence, Sequence]], *, title: str | None = None,
                  xaxis_title: str = "epoch", yaxis_title: str = "", height: int = 340,
                  yrange: Sequence[float] | None = None) -> go.Figure:
    """One line per named series: ``{name: (x, y)}`` (training curves, cosine over training,
    flip ratio ...). Trace ``i`` is the ``i``-th series, named after it."""
    fig = go.Figure([go.Scatter(x=list(x), y=list(y), name=name, mode="lines+markers")
                     for name, (x, y) in series.items()])
    _layout(fig, title=title, xaxis_title=xaxis_title, yaxis_title=yaxis_title, height=height)
    if yrange is not None:
        fig.update_yaxes(range=list(yrange))
    return fig


def history_figure(histories: Mapping, metric: str = "val_acc", *, title: str | None = None,
                   height: int = 340) -> go.Figure:
    """One metric of several :class:`bnnlab.train.History` (or dicts of lists) over epochs."""
    def get(h, key):
        return h[key] if isinstance(h, Mapping) else getattr(h, key)
    series = {name: (get(h, "epoch"), get(h, metric)) for name, h in histories.items()}
    return curves_figure(series, title=title, yaxis_title=metric, height=height)


def flip_ratio_figure(steps: Sequence[int], history: Mapping[str, Sequence[float]],
                      total: Sequence[float] | None = None, *, every: str = "epoch",
                      title: str | None = None, height: int = 340) -> go.Figure:
    """Flip ratio per layer (and over all layers) against step or epoch, on a log axis.

    Args:
        steps, history, total: the ``steps``, ``history`` and ``total`` of a
            :class:`bnnlab.analysis.FlipRatio` callback.
        every: ``"epoch"`` or ``"step"`` (axis title).

    Returns:
        One trace per layer, then ``"all layers"`` if ``total`` is given.
    """
    series = {f"layer {n}": (steps, r) for n, r in history.items()}
    if total is not None:
        series["all layers"] = (steps, total)
    fig = curves_figure(series, title=title or "share of binary weights that flipped",
                        xaxis_title=every, yaxis_title="flip ratio", height=height)
    fig.update_yaxes(type="log")
    return fig


def bars_figure(names: Sequence[str], values: Sequence[float], *, title: str | None = None,
                yaxis_title: str = "", fmt: str = ".3g", height: int = 320) -> go.Figure:
    """One bar per name, labelled with its value (``nan`` bars are left empty)."""
    values = [float(v) for v in values]
    text = ["" if math.isnan(v) else format(v, fmt) for v in values]
    fig = go.Figure(go.Bar(x=list(names), y=values, text=text, textposition="outside",
                           marker_color=[COLORS[i % len(COLORS)] for i in range(len(values))]))
    return _layout(fig, title=title, yaxis_title=yaxis_title, height=height, showlegend=False)


def summary_figure(summary, *, title: str | None = None, height: int = 340) -> go.Figure:
    """Memory and MACs per layer of a :class:`bnnlab.summary.Summary` (layers with either).

    Left: packed memory vs float32 memory (KiB); right: 1-bit vs 32-bit MACs (stacked).

    Returns:
        Four traces: ``packed``, ``float32``, ``1-bit MACs``, ``32-bit MACs``.
    """
    recs = [r for r in summary.records if r.params or r.macs or r.memory_bits]
    names = [r.name or r.type for r in recs]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("memory (KiB)", "MACs per sample"))
    fig.add_bar(x=names, y=[r.memory_bytes / 1024 for r in recs], name="packed", row=1, col=1)
    fig.add_bar(x=names, y=[r.float32_bytes / 1024 for r in recs], name="float32", row=1, col=1)
    fig.add_bar(x=names, y=[r.binary_macs for r in recs], name="1-bit MACs", row=1, col=2)
    fig.add_bar(x=names, y=[r.float_macs for r in recs], name="32-bit MACs", row=1, col=2)
    title = title or (f"{summary.memory_bytes / 1024:.1f} KiB packed "
                      f"({summary.compression_ratio:.1f}× smaller), "
                      f"{summary.binary_mac_ratio:.0%} of MACs binary")
    return _layout(fig, title=title, barmode="group", height=height)


def comparison_figure(rows: Sequence[Mapping], metrics: Mapping[str, str] | None = None, *,
                      title: str | None = None, height: int = 340) -> go.Figure:
    """Side-by-side bar panels, one per metric, one bar per row (variant).

    Args:
        rows: dicts with a ``name`` and the metric keys.
        metrics: ``{key: panel title}``; default accuracy, latency (ms) and memory (KiB).

    Returns:
        One bar trace per metric, in the order of ``metrics``.
    """
    metrics = metrics or {"accuracy": "accuracy", "latency_ms": "latency (ms)",
                          "memory_kib": "memory (KiB)"}
    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=list(metrics.values()))
    names = [r["name"] for r in rows]
    colors = [COLORS[i % len(COLORS)] for i in range(len(rows))]
    for col, key in enumerate(metrics, start=1):
        values = [float(r.get(key, math.nan)) for r in rows]
        fig.add_bar(x=names, y=values, name=metrics[key], marker_color=colors,
                    text=["" if math.isnan(v) else f"{v:.3g}" for v in values],
                    textposition="outside", row=1, col=col)
    return _layout(fig, title=title, height=height, showlegend=False)


def table_figure(rows: Sequence[Mapping], columns: Sequence[str] | None = None, *,
                 fmt: str = ".4g", title: str | None = None,
                 height: int | None = None) -> go.Figure:
    """A plotly table of dict rows (floats formatted with ``fmt``)."""
    columns = list(columns or (rows[0].keys() if rows else []))

    def cell(v):
        return format(v, fmt) if isinstance(v, float) and not math.isnan(v) else (
            "–" if isinstance(v, float) else str(v))
    values = [[cell(r.get(c, math.nan)) for r in rows] for c in columns]
    fig = go.Figure(go.Table(header=dict(values=columns, align="left"),
                             cells=dict(values=values, align="left")))
    return _layout(fig, title=title, height=height or 60 + 30 * (len(rows) + 1),
                   margin=dict(l=10, r=10, t=40 if title else 10, b=10))


def ladder_figure(rows: Sequence[Mapping], *, reference: float | None = None,
                  yaxis_title: str = "test accuracy", title: str | None = None,
                  height: int = 360) -> go.Figure:
    """An ablation ladder: one rung per row, left to right, mean ± sd and every seed.

    Args:
        rows: ``[{"name", "mean", "sd", "points", "flag"}]`` in ladder order; ``points`` are
            the per-seed values (small grey dots); ``flag`` (optional, bool) draws the rung's
            mean as an open circle (e.g. under-trained: most seeds hit the epoch cap).
        reference: a horizontal dotted line (e.g. the float twin's mean); ``None``: none.

    Returns:
        Traces: ``seeds`` (markers), ``mean ± sd`` (markers with error bars, joined by a thin
        line so the steps read as a ladder).
    """
    names = [str(r["name"]) for r in rows]
    xs = [str(r["name"]) for r in rows for _ in r.get("points", ())]
    ys = [float(p) for r in rows for p in r.get("points", ())]
    fig = go.Figure()
    fig.add_scatter(x=xs, y=ys, mode="markers", name="seeds",
                    marker=dict(size=6, color="rgba(90,90,90,0.45)"))
    sd = [0.0 if math.isnan(float(r["sd"])) else float(r["sd"]) for r in rows]
    fig.add_scatter(x=names, y=[float(r["mean"]) for r in rows], mode="lines+markers",
                    name="mean ± sd", line=dict(width=1, color="rgba(0,114,178,0.35)"),
                    error_y=dict(type="data", array=sd, visible=True, thickness=1.5),
                    marker=dict(size=10, color=COLORS[0],
                                symbol=["circle-open" if r.get("flag") else "circle"
                                        for r in rows]))
    if reference is not None and not math.isnan(reference):
        fig.add_hline(y=reference, line_dash="dot", line_color="grey")
    fig.update_xaxes(tickangle=-30)
    return _layout(fig, title=title, height=height, yaxis_title=yaxis_title,
                   hovermode="closest")
