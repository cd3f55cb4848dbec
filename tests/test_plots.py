"""Tests for bnnlab.plots: each builder puts exactly the given data in the expected traces."""
from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import pytest
from torch import nn

from bnnlab import plots as P
from bnnlab.layers import BinaryLinear
from bnnlab.summary import summary
from bnnlab.train import History


def test_theme_is_registered_once_and_used_without_touching_the_default():
    assert P.THEME in pio.templates
    assert pio.templates.default != P.THEME
    before = pio.templates[P.THEME]
    P._register_theme()
    assert pio.templates[P.THEME] is before
    fig = P.bars_figure(["a"], [1.0])
    assert list(fig.layout.template.layout.colorway) == list(P.COLORS)


def test_quantizer_figure_traces_and_title():
    x = np.linspace(-2, 2, 5)
    curves = {"x": x, "q": np.where(x >= 0, 1.0, -1.0), "surrogate": (abs(x) <= 1) * 1.0,
              "smoothed": np.full(5, 0.5), "mismatch": 0.12345}
    fig = P.quantizer_figure(curves)
    assert [t.name for t in fig.data] == ["q(x)", "surrogate ∂q/∂x", "d/dx E[sign(x+sε)]"]
    np.testing.assert_array_equal(fig.data[0].y, [-1, -1, 1, 1, 1])
    np.testing.assert_array_equal(fig.data[1].y, [0, 1, 1, 1, 0])
    assert fig.data[0].line.shape == "hv"
    assert "0.123" in fig.layout.title.text


def test_histogram_figure_uses_bin_centres_and_widths():
    fig = P.histogram_figure([-1.0, 0.0, 0.5, 2.0], [3, 1, 4])
    np.testing.assert_allclose(fig.data[0].x, [-0.5, 0.25, 1.25])
    np.testing.assert_allclose(fig.data[0].width, [1.0, 0.5, 1.5])
    np.testing.assert_array_equal(fig.data[0].y, [3, 1, 4])
    assert fig.layout.shapes[0].x0 == 0.0                         # the flip point
    with pytest.raises(ValueError, match="edges"):
        P.histogram_figure([0.0, 1.0], [1, 2])


def test_sign_distribution_figure_marks_the_chosen_snapshot():
    fig = P.sign_distribution_figure([-1, 0, 1], [2, 5], [0, 1, 2], [0.4, 0.5, 0.7], 1)
    np.testing.assert_array_equal(fig.data[0].y, [2, 5])
    assert list(fig.data[1].y) == [0.4, 0.5, 0.7]
    assert list(fig.data[2].x) == [1] and list(fig.data[2].y) == [0.5]
    assert fig.layout.title.text == "epoch 1"


def test_curves_and_history_figures():
    h = History(epoch=[1, 2], train_loss=[2.0, 1.0], train_acc=[0.1, 0.2], val_loss=[2.1, 1.1],
                val_acc=[0.3, 0.6], time=[0.1, 0.1], lr=[1e-3, 1e-3])
    fig = P.history_figure({"a": h, "b": {"epoch": [1], "val_acc": [0.9]}}, "val_acc")
    assert [t.name for t in fig.data] == ["a", "b"]
    assert list(fig.data[0].y) == [0.3, 0.6] and list(fig.data[1].x) == [1]
    fig = P.curves_figure({"s": ([0, 1], [0.5, -0.5])}, yrange=(-1, 1))
    assert list(fig.layout.yaxis.range) == [-1, 1]


def test_flip_ratio_figure_one_line_per_layer_plus_total():
    fig = P.flip_ratio_figure([1, 2], {"2": [0.1, 0.01], "4": [0.2, 0.02]}, [0.15, 0.015],
                              every="step")
    assert [t.name for t in fig.data] == ["layer 2", "layer 4", "all layers"]
    assert list(fig.data[2].y) == [0.15, 0.015] and list(fig.data[0].x) == [1, 2]
    assert fig.layout.yaxis.type == "log" and fig.layout.xaxis.title.text == "optimiser step"


def test_bars_figure_labels_values_and_leaves_nan_empty():
    fig = P.bars_figure(["a", "b"], [0.5, math.nan], fmt=".2f")
    assert list(fig.data[0].text) == ["0.50", ""]


def test_summary_figure_shows_the_per_layer_numbers():
    # Linear(4, 16) float: 64 weights + 16 bias, 64 float MACs; BinaryLinear(16, 8, no bias):
    # 128 1-bit weights (16 bytes), 128 binary MACs.
    model = nn.Sequential(nn.Linear(4, 16), BinaryLinear(16, 8, bias=False))
    fig = P.summary_figure(summary(model, (4,)))
    assert [t.name for t in fig.data] == ["packed", "float32", "1-bit MACs", "32-bit MACs"]
    assert list(fig.data[0].x) == ["0", "1"]
    np.testing.assert_allclose(fig.data[0].y, [80 * 4 / 1024, 16 / 1024])
    np.testing.assert_allclose(fig.data[1].y, [80 * 4 / 1024, 128 * 4 / 1024])
    assert list(fig.data[2].y) == [0, 128] and list(fig.data[3].y) == [64, 0]


def test_comparison_figure_one_panel_per_metric():
    rows = [{"name": "float", "accuracy": 0.9, "latency_ms": 2.0, "memory_kib": 100.0},
            {"name": "bnn", "accuracy": 0.8, "latency_ms": 1.0}]
    fig = P.comparison_figure(rows)
    assert len(fig.data) == 3
    assert list(fig.data[0].x) == ["float", "bnn"] and list(fig.data[0].y) == [0.9, 0.8]
    assert list(fig.data[1].y) == [2.0, 1.0]
    assert fig.data[2].y[0] == 100.0 and math.isnan(fig.data[2].y[1])
    assert fig.data[1].xaxis == "x2"


def test_table_figure_formats_cells():
    fig = P.table_figure([{"name": "a", "acc": 0.123456, "n": 3}, {"name": "b", "acc": math.nan}],
                         ["name", "acc", "n"], fmt=".3f")
    assert isinstance(fig.data[0], go.Table)
    assert list(fig.data[0].header.values) == ["name", "acc", "n"]
    cells = [list(c) for c in fig.data[0].cells.values]
    assert cells == [["a", "b"], ["0.123", "–"], ["3", "–"]]


# ----------------------------------------------------------------- issue 11: labels and layout
def test_labels_are_human_with_units():
    assert P.label("val_acc") == "validation accuracy"
    assert P.label("memory_kib") == "memory (KiB)" and P.label("latency_ms") == "latency (ms)"
    assert P.label("some_new_key") == "some new key"


def test_theme_keeps_title_and_legend_apart():
    t = pio.templates[P.THEME].layout
    assert t.title.yref == "container" and t.title.yanchor == "top"   # title in the top margin
    assert t.legend.x >= 1 and t.legend.xanchor == "left"             # legend right of the plot


def test_history_figure_percent_axis_integer_epochs_and_labels():
    h = {"a": {"epoch": [1, 2, 3], "val_acc": [0.5, 0.6, 0.65]}}
    fig = P.history_figure(h, "val_acc")
    assert fig.layout.yaxis.title.text == "validation accuracy"
    assert fig.layout.yaxis.tickformat == ".0%" and list(fig.layout.yaxis.range) == [0, 1.02]
    assert fig.layout.xaxis.tickmode == "linear" and fig.layout.xaxis.dtick == 1
    assert fig.data[0].hovertemplate == "%{y:.1%}"


def test_curves_figure_min_span_does_not_magnify_noise():
    fig = P.curves_figure({"c": ([0, 1, 2], [0.99985, 1.0, 1.00005])}, min_span=0.2)
    lo, hi = fig.layout.yaxis.range
    assert hi - lo >= 0.2 - 1e-12 and lo < 0.99985 and hi > 1.00005
    fig = P.curves_figure({"c": ([0, 1], [0.01, 0.02])}, min_span=0.2, bounds=(0.0, 1.0))
    assert fig.layout.yaxis.range[0] == 0.0


def test_comparison_figure_labels_and_percent_panel():
    rows = [{"name": "float", "accuracy": 0.9, "latency_ms": 1.5, "memory_kib": 200.0},
            {"name": "binary", "accuracy": 0.8, "latency_ms": 0.5, "memory_kib": 10.0}]
    fig = P.comparison_figure(rows)
    assert [a.text for a in fig.layout.annotations] == ["accuracy", "latency (ms)",
                                                        "memory (KiB)"]
    assert list(fig.data[0].text) == ["90%", "80%"]
    assert fig.layout.yaxis.tickformat == ".0%"


def test_table_renders_html_with_units_and_formats():
    t = P.table({"float": {"accuracy": 0.9123, "memory_kib": 205.25, "params": 12345},
                 "binary": {"accuracy": float("nan"), "memory_kib": 13.4, "params": 99}})
    html = t._repr_html_()
    assert "<table" in html and "<th style='text-align:left'>memory (KiB)</th>" in html
    assert "91.2%" in html and "205.2" in html and "12,345" in html and "–" in html
    assert repr(t).splitlines()[0].split() == ["model", "accuracy", "memory", "(KiB)",
                                              "parameters"]
    assert P.Table([{"a": 1.23456}], formats={"a": ".2f"}).cell({"a": 1.23456}, "a") == "1.23"


def test_image_grid_figure_one_square_image_per_cell_with_captions():
    imgs = np.arange(10 * 28 * 28, dtype=float).reshape(10, 1, 28, 28)
    fig = P.image_grid_figure(imgs, [f"c{i}" for i in range(10)], cols=5, cell_px=100)
    (hm,) = fig.data
    z = np.asarray(hm.z, dtype=float)
    # image 3 (row 0, col 3): min-max scaled, at x = 3 * (28 + gap), below the caption band
    gap, cap = 28 // 7, 28 // 3
    block = z[cap:cap + 28, 3 * (28 + gap):3 * (28 + gap) + 28]
    img = imgs[3, 0]
    np.testing.assert_allclose(block, (img - img.min()) / (img.max() - img.min()))
    assert np.isnan(z[cap, 28])                                   # the gap is blank
    assert [a.text for a in fig.layout.annotations] == [f"c{i}" for i in range(10)]
    assert fig.layout.height >= 2 * 100 and fig.layout.width >= 5 * 100   # not 2×2 px images
    assert fig.layout.yaxis.scaleanchor == "x"
    with pytest.raises(ValueError, match="titles"):
        P.image_grid_figure(imgs, ["only one"])
    with pytest.raises(ValueError, match="shape"):
        P.image_grid_figure(np.zeros((2, 3)))


def test_misclassified_figure_shows_only_mistakes():
    imgs = np.random.default_rng(0).random((6, 8, 8))
    y, pred = np.array([0, 1, 2, 0, 1, 2]), np.array([0, 2, 2, 1, 1, 2])
    fig = P.misclassified_figure(imgs, y, pred, ["a", "b", "c"])
    assert [a.text for a in fig.layout.annotations] == ["b → c", "a → b"]
    z = np.asarray(fig.data[0].z, dtype=float)
    img = imgs[3]
    np.testing.assert_allclose(z[3:11, 9:17], (img - img.min()) / (img.max() - img.min()))
    assert fig.layout.title.text.startswith("2 of 6 images")
    with pytest.raises(ValueError, match="no image"):
        P.misclassified_figure(imgs, y, y, ["a", "b", "c"])


def test_bit_packing_figure_rows_bits_and_popcount():
    a = np.array([1.0, -1.0, 0.0, -2.0])
    b = np.array([1.0, 1.0, -1.0, -1.0])
    fig = P.bit_packing_figure(a, b, words_a=[10], words_b=[12], dot=0)
    (hm,) = fig.data
    assert list(hm.y) == ["a XOR b", "bits of b", "signs of b", "bits of a", "signs of a"]
    assert list(hm.text[-2]) == ["0", "1", "0", "1"] and list(hm.text[0]) == ["0", "1", "1", "0"]
    # dot = K - 2 popcount = 4 - 2*2 = 0 = sum(sign(a) * sign(b))
    assert "= 4 − 2·2 = 0" in fig.layout.title.text and "0x000000000000000a" in \
        fig.layout.title.text
    with pytest.raises(ValueError, match="same length"):
        P.bit_packing_figure(a, b[:3])
