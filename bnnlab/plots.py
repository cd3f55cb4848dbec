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
    "LABELS",
    "label",
    "Table",
    "table",
    "quantizer_figure",
    "histogram_figure",
    "sign_distribution_figure",
    "curves_figure",
    "history_figure",
    "flip_ratio_figure",
    "bars_figure",
    "summary_figure",
    "comparison_figure",
    "image_grid_figure",
    "misclassified_figure",
    "bit_packing_figure",
    "table_figure",
]

#: Name of the plotly template every bnnlab figure uses.
THEME = "bnnlab"
#: Okabe–Ito colour-blind-safe palette (the template's colorway).
COLORS = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442",
          "#000000")

#: Human labels (with units) for the metric and column names used across bnnlab.
LABELS: dict[str, str] = {
    "name": "model",
    "epoch": "epoch",
    "accuracy": "accuracy",
    "val_acc": "validation accuracy",
    "train_acc": "training accuracy",
    "val_loss": "validation loss",
    "train_loss": "training loss",
    "latency_ms": "latency (ms)",
    "latency_us": "latency (µs)",
    "memory_kib": "memory (KiB)",
    "float32_kib": "float32 memory (KiB)",
    "compression": "smaller by (×)",
    "speedup": "speed-up (×, cost model)",
    "train_s": "training time (s)",
    "epochs": "epochs",
    "params": "parameters",
    "binary_macs": "binary MACs",
    "cosine": "cosine similarity",
    "rel_error": "relative error",
    "norm_ratio": "norm ratio (STE / reference)",
    "flip_ratio": "flip ratio",
    "fraction_positive": "share of +1",
    "path": "execution path",
}

# d3 formats: tick labels / hover values. Shares (0..1) are shown as percentages.
_PERCENT = {"accuracy", "val_acc", "train_acc", "binary_macs", "fraction_positive"}
_FORMATS = {"latency_ms": ".2f", "latency_us": ".1f", "memory_kib": ".1f", "float32_kib": ".1f",
            "compression": ".1f", "speedup": ".1f", "train_s": ".1f", "params": ",d",
            "epochs": "d", "cosine": ".3f", "rel_error": ".3f", "norm_ratio": ".3f",
            "val_loss": ".3f", "train_loss": ".3f", "flip_ratio": ".2%"}


def label(key: str) -> str:
    """The human label (with unit) of a metric or column name; unknown names pass through."""
    return LABELS.get(key, key.replace("_", " "))


def _fmt(key: str) -> str:
    return ".1%" if key in _PERCENT else _FORMATS.get(key, ".3g")


def _register_theme() -> None:
    if THEME in pio.templates:
        return
    template = go.layout.Template(pio.templates["plotly_white"])
    # Title in the top margin (container coordinates), legend outside the plot on the right:
    # neither can cover the other, nor the subplot titles, whatever their lengths.
    template.layout.update(
        colorway=list(COLORS),
        font=dict(family="Helvetica, Arial, sans-serif", size=13),
        title=dict(font=dict(size=15), x=0.01, xanchor="left", yref="container", y=0.97,
                   yanchor="top"),
        margin=dict(l=70, r=20, t=64, b=56),
        legend=dict(orientation="v", x=1.02, xanchor="left", y=1, yanchor="top"),
        hovermode="x unified",
        hoverlabel=dict(namelength=-1),
        xaxis=dict(automargin=True),
        yaxis=dict(automargin=True),
    )
    pio.templates[THEME] = template


_register_theme()


def _layout(fig: go.Figure, **kw) -> go.Figure:
    fig.update_layout(template=THEME, **kw)
    return fig


def _subplot_top(fig: go.Figure, title) -> None:
    """Room for a title above subplot titles (both in the top margin)."""
    fig.update_layout(margin=dict(t=88 if title else 56))


def _integer_ticks(fig: go.Figure, xs: Sequence, **where) -> None:
    """Whole-number ticks (epochs, steps): never 1.2, 1.4 ..."""
    vals = [float(v) for v in xs]
    if not vals:
        fig.update_xaxes(tickformat="d", **where)
        return
    span = max(vals) - min(vals)
    dtick = max(1, math.ceil(span / 10))
    fig.update_xaxes(tickmode="linear", tick0=0, dtick=dtick, tickformat="d", **where)


def _padded_range(values: Sequence[float], min_span: float,
                  bounds: tuple[float, float] | None = None) -> list[float] | None:
    """A y range at least ``min_span`` wide (so noise does not look like a trend), kept inside
    ``bounds``; ``None`` when there is nothing finite to show."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return None
    lo, hi = min(vals), max(vals)
    pad = max((hi - lo) * 0.08, 0.0)
    lo, hi = lo - pad, hi + pad
    if hi - lo < min_span:
        mid = (lo + hi) / 2
        lo, hi = mid - min_span / 2, mid + min_span / 2
    if bounds is not None:
        if lo < bounds[0]:
            lo, hi = bounds[0], max(hi, bounds[0] + min_span)
        if hi > bounds[1]:
            lo, hi = min(lo, bounds[1] - min_span), bounds[1]
    return [lo, hi]


class Table:
    """A rendered table: shows as an HTML table in a notebook, as aligned text elsewhere.

    Args:
        rows: dicts, one per row.
        columns: ``{key: header}`` or keys (headers from :func:`label`); default: the first
            row's keys.
        formats: ``{key: format spec}`` for numbers; default from the column name (shares as
            ``%``, latencies with 2 decimals ...).
        caption: shown above the table.
    """

    def __init__(self, rows: Sequence[Mapping], columns=None, *, formats: Mapping | None = None,
                 caption: str | None = None) -> None:
        self.rows = [dict(r) for r in rows]
        if columns is None:
            columns = list(self.rows[0]) if self.rows else []
        if not isinstance(columns, Mapping):
            columns = {c: label(c) for c in columns}
        self.columns: dict[str, str] = dict(columns)
        self.formats = dict(formats or {})
        self.caption = caption

    def cell(self, row: Mapping, key: str) -> str:
        """The text of one cell: numbers formatted, ``None``/``nan`` as an en dash."""
        v = row.get(key)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "–"
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            return str(v)
        spec = self.formats.get(key) or _fmt(key)
        if spec == ".3g" and isinstance(v, (int, np.integer)):
            spec = ",d"
        try:
            return format(v, spec)
        except ValueError:
            return str(v)

    def _repr_html_(self) -> str:
        import html

        def num(v) -> bool:
            return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
        head = "".join(f"<th style='text-align:left'>{html.escape(h)}</th>"
                       for h in self.columns.values())
        body = "".join(
            "<tr>" + "".join(
                f"<td style='text-align:{'right' if num(r.get(k)) else 'left'}'>"
                f"{html.escape(self.cell(r, k))}</td>" for k in self.columns) + "</tr>"
            for r in self.rows)
        cap = (f"<caption style='caption-side:top;text-align:left;font-weight:bold'>"
               f"{html.escape(self.caption)}</caption>" if self.caption else "")
        return (f"<table class='bnnlab-table'>{cap}<thead><tr>{head}</tr></thead>"
                f"<tbody>{body}</tbody></table>")

    def __repr__(self) -> str:
        cols = list(self.columns)
        grid = [list(self.columns.values())] + [[self.cell(r, k) for k in cols] for r in self.rows]
        widths = [max(len(line[i]) for line in grid) for i in range(len(cols))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in grid]
        return "\n".join(([self.caption] if self.caption else []) + lines)


def table(rows, columns=None, *, formats: Mapping | None = None,
          caption: str | None = None) -> Table:
    """A :class:`Table` of ``rows``: a list of dicts, or a dict ``{row name: {column: value}}``
    (the row names become the first column, headed by ``columns``' first entry or "model")."""
    if isinstance(rows, Mapping):
        rows = [{"name": name, **dict(values)} for name, values in rows.items()]
    return Table(rows, columns, formats=formats, caption=caption)


def quantizer_figure(curves: Mapping, *, title: str | None = None, height: int = 360) -> go.Figure:
    """Forward map, surrogate gradient and smoothed-sign derivative of one quantizer.

    Args:
        curves: a dict with ``x``, ``q``, ``surrogate``, ``smoothed`` and ``mismatch``, as
            returned by :func:`bnnlab.analysis.mismatch_curves`.
        title: figure title; default states the L1 mismatch.

    Returns:
        Three traces, in order: ``q(x)`` (steps), ``surrogate ∂q/∂x``, ``smoothed derivative``.
    """
    x = np.asarray(curves["x"])
    hover = "%{y:.3f}"
    fig = go.Figure([
        go.Scatter(x=x, y=curves["q"], name="q(x)", line_shape="hv", hovertemplate=hover),
        go.Scatter(x=x, y=curves["surrogate"], name="surrogate ∂q/∂x", hovertemplate=hover),
        go.Scatter(x=x, y=curves["smoothed"], name="d/dx E[sign(x+sε)]", line_dash="dash",
                   hovertemplate=hover),
    ])
    title = title or f"L1 mismatch ∫|surrogate − smoothed| dx = {curves['mismatch']:.3f}"
    fig.update_xaxes(hoverformat=".2f")
    return _layout(fig, title=title, xaxis_title="input x", yaxis_title="value", height=height)


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
                           name=name, hovertemplate="%{y:,d} values<extra></extra>"))
    fig.add_vline(x=0.0, line_dash="dot", line_color="grey")
    fig.update_xaxes(hoverformat=".2f")
    return _layout(fig, title=title, xaxis_title="value", yaxis_title="count", bargap=0.02,
                   height=height)


def sign_distribution_figure(edges, counts, epochs: Sequence[int],
                             fraction_positive: Sequence[float], index: int, *,
                             title: str | None = None, height: int = 360) -> go.Figure:
    """Histogram at one snapshot (left) and the share of +1 over all snapshots (right).

    Args:
        edges: bin edges; counts: the histogram of snapshot ``index``.
        epochs, fraction_positive: one value per snapshot.
        index: which snapshot the histogram shows (marked on the right panel).

    Returns:
        Three traces: the histogram bars, the fraction line, the current-snapshot marker.
    """
    edges = np.asarray(edges, dtype=float)
    fig = make_subplots(rows=1, cols=2, column_widths=[0.62, 0.38], horizontal_spacing=0.12,
                        subplot_titles=("latent values (histogram)", "share of +1 signs"))
    fig.add_bar(x=(edges[:-1] + edges[1:]) / 2, y=np.asarray(counts), width=np.diff(edges),
                name="count", hovertemplate="value %{x:.2f}: %{y:,d}<extra></extra>",
                row=1, col=1)
    fig.add_scatter(x=list(epochs), y=list(fraction_positive), name="share of +1",
                    mode="lines+markers", hovertemplate="epoch %{x}: %{y:.1%}<extra></extra>",
                    row=1, col=2)
    fig.add_scatter(x=[epochs[index]], y=[fraction_positive[index]], name="this epoch",
                    mode="markers", marker=dict(size=13, symbol="circle-open"),
                    hoverinfo="skip", row=1, col=2)
    fig.add_vline(x=0.0, line_dash="dot", line_color="grey", row=1, col=1)
    fig.update_xaxes(title_text="latent value", row=1, col=1)
    fig.update_yaxes(title_text="count", row=1, col=1)
    fig.update_xaxes(title_text="epoch", row=1, col=2)
    _integer_ticks(fig, epochs, row=1, col=2)
    fig.update_yaxes(range=[0, 1], tickformat=".0%", row=1, col=2)
    title = title or f"epoch {epochs[index]}"
    _layout(fig, title=title, bargap=0.02, height=height, showlegend=False, hovermode="closest")
    _subplot_top(fig, title)
    return fig


def curves_figure(series: Mapping[str, tuple[Sequence, Sequence]], *, title: str | None = None,
                  xaxis_title: str = "epoch", yaxis_title: str = "", height: int = 360,
                  yrange: Sequence[float] | None = None, yformat: str = ".3g",
                  min_span: float | None = None,
                  bounds: tuple[float, float] | None = None) -> go.Figure:
    """One line per named series: ``{name: (x, y)}`` (training curves, cosine over training,
    flip ratio ...). Trace ``i`` is the ``i``-th series, named after it.

    Args:
        xaxis_title: an x title containing "epoch" or "step" gets whole-number ticks.
        yrange: a fixed y range; else, with ``min_span``, the range is at least that wide
            (so that noise of 1e-4 does not fill the plot), kept inside ``bounds``.
        yformat: d3 format of the y ticks and hover values (``".1%"`` for shares).
    """
    fig = go.Figure([go.Scatter(x=list(x), y=list(y), name=name, mode="lines+markers",
                                hovertemplate=f"%{{y:{yformat}}}")
                     for name, (x, y) in series.items()])
    _layout(fig, title=title, xaxis_title=xaxis_title, yaxis_title=yaxis_title, height=height)
    fig.update_yaxes(tickformat=".0%" if yformat.endswith("%") else None, hoverformat=yformat)
    xs = [v for x, _ in series.values() for v in x]
    if "epoch" in xaxis_title or "step" in xaxis_title:
        _integer_ticks(fig, xs)
        fig.update_xaxes(hoverformat="d")
    if yrange is not None:
        fig.update_yaxes(range=list(yrange))
    elif min_span is not None:
        rng = _padded_range([v for _, y in series.values() for v in y], min_span, bounds)
        if rng is not None:
            fig.update_yaxes(range=rng)
    return fig


def history_figure(histories: Mapping, metric: str = "val_acc", *, title: str | None = None,
                   height: int = 360) -> go.Figure:
    """One metric of several :class:`bnnlab.train.History` (or dicts of lists) over epochs.

    Accuracies are drawn as percentages on a 0–100 % axis; losses on their own range."""
    def get(h, key):
        return h[key] if isinstance(h, Mapping) else getattr(h, key)
    series = {name: (get(h, "epoch"), get(h, metric)) for name, h in histories.items()}
    if metric.endswith("acc") or metric == "accuracy":
        return curves_figure(series, title=title, yaxis_title=label(metric), height=height,
                             yrange=(0, 1.02), yformat=".1%")
    return curves_figure(series, title=title, yaxis_title=label(metric), height=height,
                         yformat=_fmt(metric), min_span=0.05)


def flip_ratio_figure(steps: Sequence[int], history: Mapping[str, Sequence[float]],
                      total: Sequence[float] | None = None, *, every: str = "epoch",
                      title: str | None = None, height: int = 360) -> go.Figure:
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
                        xaxis_title="optimiser step" if every == "step" else "epoch",
                        yaxis_title="flip ratio (log scale)", height=height, yformat=".2%")
    fig.update_yaxes(type="log", tickformat=".1%")
    return fig


def bars_figure(names: Sequence[str], values: Sequence[float], *, title: str | None = None,
                yaxis_title: str = "", fmt: str = ".3g", height: int = 340) -> go.Figure:
    """One bar per name, labelled with its value (``nan`` bars are left empty).

    ``fmt`` is a Python/d3 format spec; with a ``%`` format the axis shows percentages."""
    values = [float(v) for v in values]
    text = ["" if math.isnan(v) else format(v, fmt) for v in values]
    fig = go.Figure(go.Bar(x=list(names), y=values, text=text, textposition="outside",
                           cliponaxis=False, hovertemplate=f"%{{x}}: %{{y:{fmt}}}<extra></extra>",
                           marker_color=[COLORS[i % len(COLORS)] for i in range(len(values))]))
    _layout(fig, title=title, yaxis_title=yaxis_title, height=height, showlegend=False,
            hovermode="closest")
    if fmt.endswith("%"):
        fig.update_yaxes(tickformat=".0%", range=[0, 1.12])
    return fig


def summary_figure(summary, *, title: str | None = None, height: int = 380) -> go.Figure:
    """Memory and MACs per layer of a :class:`bnnlab.summary.Summary` (layers with either).

    Left: packed memory vs float32 memory (KiB); right: 1-bit vs 32-bit MACs (stacked).

    Returns:
        Four traces: ``packed``, ``float32``, ``1-bit MACs``, ``32-bit MACs``.
    """
    recs = [r for r in summary.records if r.params or r.macs or r.memory_bits]
    names = [r.name or r.type for r in recs]
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.14,
                        subplot_titles=("memory per layer (KiB)", "multiply-adds per image"))
    kib = "%{x}: %{y:.1f} KiB"
    fig.add_bar(x=names, y=[r.memory_bytes / 1024 for r in recs], name="packed",
                hovertemplate=kib, row=1, col=1)
    fig.add_bar(x=names, y=[r.float32_bytes / 1024 for r in recs], name="float32",
                hovertemplate=kib, row=1, col=1)
    fig.add_bar(x=names, y=[r.binary_macs for r in recs], name="1-bit MACs",
                hovertemplate="%{x}: %{y:,d}", row=1, col=2)
    fig.add_bar(x=names, y=[r.float_macs for r in recs], name="32-bit MACs",
                hovertemplate="%{x}: %{y:,d}", row=1, col=2)
    fig.update_xaxes(title_text="layer", type="category")
    fig.update_yaxes(title_text="KiB", row=1, col=1)
    fig.update_yaxes(title_text="MACs", row=1, col=2)
    title = title or (f"{summary.memory_bytes / 1024:.1f} KiB packed "
                      f"({summary.compression_ratio:.1f}× smaller), "
                      f"{summary.binary_mac_ratio:.0%} of MACs binary")
    _layout(fig, title=title, barmode="group", height=height, hovermode="closest")
    _subplot_top(fig, title)
    return fig


def comparison_figure(rows: Sequence[Mapping],
                      metrics: Mapping[str, str] | Sequence[str] | None = None, *,
                      title: str | None = None, height: int = 360) -> go.Figure:
    """Side-by-side bar panels, one per metric, one bar per row (variant).

    Args:
        rows: dicts with a ``name`` and the metric keys.
        metrics: ``{key: panel title}`` or keys (titles from :func:`label`); default accuracy,
            latency (ms) and memory (KiB). Accuracies are shown in %.

    Returns:
        One bar trace per metric, in the order of ``metrics``.
    """
    chosen = metrics or ("accuracy", "latency_ms", "memory_kib")
    metrics = chosen if isinstance(chosen, Mapping) else {k: label(k) for k in chosen}
    fig = make_subplots(rows=1, cols=len(metrics), subplot_titles=list(metrics.values()),
                        horizontal_spacing=0.08)
    names = [r["name"] for r in rows]
    colors = [COLORS[i % len(COLORS)] for i in range(len(rows))]
    for col, key in enumerate(metrics, start=1):
        values = [float(r.get(key, math.nan)) for r in rows]
        spec = _fmt(key)
        fig.add_bar(x=names, y=values, name=metrics[key], marker_color=colors,
                    text=["" if math.isnan(v) else format(v, ".0%" if key in _PERCENT else spec)
                          for v in values],
                    textposition="outside", cliponaxis=False,
                    hovertemplate=f"%{{x}}: %{{y:{spec}}}<extra>{metrics[key]}</extra>",
                    row=1, col=col)
        if key in _PERCENT:
            fig.update_yaxes(tickformat=".0%", range=[0, 1.15], row=1, col=col)
        else:
            finite = [v for v in values if math.isfinite(v)]
            fig.update_yaxes(range=[0, 1.2 * max(finite) if finite and max(finite) > 0 else 1],
                             row=1, col=col)
    fig.update_xaxes(tickangle=-35, type="category")
    _layout(fig, title=title, height=height, showlegend=False, hovermode="closest",
            uniformtext=dict(minsize=10, mode="show"))  # every bar keeps its value label
    _subplot_top(fig, title)
    return fig


def image_grid_figure(images, titles: Sequence[str] | None = None, *, cols: int = 5,
                      cell_px: int = 110, title: str | None = None,
                      title_colors: Sequence[str] | None = None) -> go.Figure:
    """Grey images in a grid, each under its own caption, every image ``cell_px`` wide.

    The images are laid out in one mosaic (one ``Heatmap`` on one pair of axes, gaps left
    blank), so the figure also works as a ``go.FigureWidget`` that is refreshed in place.

    Args:
        images: ``(n, h, w)`` or ``(n, 1, h, w)`` array or tensor (any range; each image is
            scaled to its own min–max, dark = high).
        titles: one caption per image (e.g. the class name).
        cols: images per row. cell_px: the side of one image, in pixels.
        title_colors: one colour per caption (e.g. red for a mistake).

    Returns:
        One ``Heatmap`` trace (the mosaic, ``nan`` in the gaps); captions are annotations.
    """
    arr = np.asarray(images.detach().cpu() if hasattr(images, "detach") else images, dtype=float)
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 3:
        raise ValueError(f"images must have shape (n, h, w) or (n, 1, h, w), got {arr.shape}")
    n, h, w = arr.shape
    if n == 0:
        raise ValueError("images is empty")
    if titles is not None and len(titles) != n:
        raise ValueError(f"titles must have one entry per image ({n}), got {len(titles)}")
    cols = max(1, min(int(cols), n))
    rows = math.ceil(n / cols)
    gap, cap = max(1, w // 7), max(3, h // 3)          # in image pixels
    mosaic = np.full((rows * (h + cap), cols * (w + gap) - gap), np.nan)
    annotations = []
    for i, img in enumerate(arr):
        r, c = divmod(i, cols)
        lo, hi = float(img.min()), float(img.max())
        y0, x0 = r * (h + cap) + cap, c * (w + gap)
        mosaic[y0:y0 + h, x0:x0 + w] = (img - lo) / (hi - lo) if hi > lo else 0.0
        if titles is not None:
            annotations.append(dict(
                x=x0 + (w - 1) / 2, y=y0 - 0.6, xref="x", yref="y", text=str(titles[i]),
                showarrow=False, yanchor="bottom",
                font=dict(size=12, color=title_colors[i] if title_colors else "#222")))
    scale = cell_px / w
    top = 56 if title else 10
    width = int(mosaic.shape[1] * scale) + 20
    height = int(mosaic.shape[0] * scale) + top + 10
    fig = go.Figure(go.Heatmap(z=mosaic.tolist(), colorscale="gray_r", zmin=0, zmax=1,
                               showscale=False, hoverinfo="skip"))
    fig.update_xaxes(visible=False, range=[-0.5, mosaic.shape[1] - 0.5], constrain="domain")
    fig.update_yaxes(visible=False, range=[mosaic.shape[0] - 0.5, -0.5], scaleanchor="x",
                     constrain="domain")
    return _layout(fig, title=title, width=width, height=height, hovermode=False,
                   annotations=annotations, margin=dict(l=10, r=10, t=top, b=10),
                   plot_bgcolor="white")


def misclassified_figure(images, labels, predictions, classes: Sequence[str], *,
                         max_images: int = 10, cols: int = 5,
                         title: str | None = None) -> go.Figure:
    """The images a model gets wrong, each captioned "true → predicted".

    Args:
        images: ``(n, [1,] h, w)``; labels, predictions: ``n`` class indices.
        classes: class names. max_images: show at most this many (the first mistakes).

    Raises:
        ValueError: when no image is misclassified (nothing to show).
    """
    y = np.asarray(labels.cpu() if hasattr(labels, "cpu") else labels).astype(int)
    p = np.asarray(predictions.cpu() if hasattr(predictions, "cpu") else predictions).astype(int)
    if y.shape != p.shape:
        raise ValueError(f"labels and predictions differ in shape: {y.shape} vs {p.shape}")
    wrong = np.flatnonzero(y != p)
    if wrong.size == 0:
        raise ValueError("no image is misclassified: nothing to show")
    idx = wrong[:max_images]
    imgs = np.asarray(images.detach().cpu() if hasattr(images, "detach") else images)[idx]
    caps = [f"{classes[y[i]]} → {classes[p[i]]}" for i in idx]
    title = title or f"{wrong.size} of {y.size} images misclassified ({wrong.size / y.size:.1%})"
    return image_grid_figure(imgs, caps, cols=cols, title=title)


def bit_packing_figure(a, b=None, *, words_a: Sequence[int] | None = None,
                       words_b: Sequence[int] | None = None, dot: int | None = None,
                       height: int | None = None) -> go.Figure:
    """Signs becoming bits, bits becoming words, and (with ``b``) XOR + popcount becoming a dot
    product.

    Rows of cells, one column per element: the signs of ``a`` (blue +1, orange −1), their bits
    (1 ⇔ −1), and with ``b`` the signs of ``b``, its bits and ``a ⊕ b`` (red where the signs
    differ). Row labels give each packed word in hex. The title states
    ``K − 2·popcount(a ⊕ b)`` and, when given, the kernel's result ``dot``.

    Args:
        a, b: 1-D arrays of values (only signs matter; sign(0) = +1).
        words_a, words_b: the packed ``uint64`` words (from :func:`bnnlab.kernels.pack_signs`).
        dot: the dot product computed by the packed kernel, shown next to the formula.

    Returns:
        One ``Heatmap`` trace (rows × K cells) with the digits as text.
    """
    a = np.asarray(a, dtype=float).ravel()
    rows_z, rows_t, names = [], [], []

    def add(values, texts, name):
        rows_z.append(values)
        rows_t.append(texts)
        names.append(name)

    def words_text(words):
        return " ".join(f"0x{int(w):016x}" for w in words) if words is not None else ""

    bits_a = (a < 0).astype(int)
    add(np.where(bits_a, 1, 0), ["−" if v else "+" for v in bits_a], "signs of a")
    add(np.where(bits_a, 1, 0), [str(v) for v in bits_a], "bits of a")
    k = a.size
    title = (f"{k} signs → {math.ceil(k / 64)} word(s) of 64 bits: "
             f"{words_text(words_a)}")
    if b is not None:
        b = np.asarray(b, dtype=float).ravel()
        if b.size != k:
            raise ValueError(f"a and b must have the same length, got {k} and {b.size}")
        bits_b = (b < 0).astype(int)
        x = bits_a ^ bits_b
        add(np.where(bits_b, 1, 0), ["−" if v else "+" for v in bits_b], "signs of b")
        add(np.where(bits_b, 1, 0), [str(v) for v in bits_b], "bits of b")
        add(np.where(x, 2, -1), [str(v) for v in x], "a XOR b")
        pc = int(x.sum())
        words = (f"a: {words_text(words_a)}   b: {words_text(words_b)}<br>"
                 if words_a is not None and words_b is not None else "")
        title = (f"{words}popcount(a XOR b) = {pc} differing signs → a·b = K − 2·popcount = "
                 f"{k} − 2·{pc} = {k - 2 * pc}" + (f" (packed kernel: {dot})"
                                                    if dot is not None else ""))
    z = np.array(rows_z, dtype=float)[::-1]
    text = rows_t[::-1]
    names = names[::-1]
    # colours: XOR 0 light grey, + / bit 0 light blue, − / bit 1 orange, XOR 1 red
    zz = np.select([z == -1, z == 0, z == 1, z == 2], [0.0, 0.5, 0.8, 1.0])
    colorscale = [[0.0, "#EEEEEE"], [0.25, "#EEEEEE"], [0.26, "#56B4E9"], [0.65, "#56B4E9"],
                  [0.66, "#E69F00"], [0.9, "#E69F00"], [0.91, "#D55E00"], [1.0, "#D55E00"]]
    fig = go.Figure(go.Heatmap(
        z=zz.tolist(), x=list(range(k)), y=names, text=text, texttemplate="%{text}",
        textfont=dict(size=10 if k <= 64 else 8), colorscale=colorscale, zmin=0, zmax=1,
        showscale=False, xgap=1, ygap=3,
        hovertemplate="element %{x} (bit %{x} of its word): %{text}<extra>%{y}</extra>"))
    for w in range(64, k, 64):
        fig.add_vline(x=w - 0.5, line_color="black", line_width=2)
    fig.update_xaxes(title_text="element j → bit j mod 64 of word ⌊j/64⌋ (least significant "
                     "first)", showgrid=False, zeroline=False)
    fig.update_yaxes(showgrid=False, automargin=True)
    return _layout(fig, title=dict(text=title, font=dict(size=13)),
                   height=height or 110 + 38 * len(names), hovermode="closest",
                   margin=dict(t=80 if "<br>" in title else 64))


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
