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
