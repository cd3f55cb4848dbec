"""Tests for bnnlab.widgets without a browser: move a control in Python, check the figure data.

Expected values come from NumPy formulas or from hand-built inputs, not from the code under test.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from bnnlab import analysis as A
from bnnlab import widgets as Wd
from bnnlab.data import load_digits
from bnnlab.layers import BinaryLinear
from bnnlab.summary import summary


@pytest.fixture(scope="module")
def digits():
    return load_digits(flatten=True, n_train=128, val_size=64)


def float_mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 16), nn.BatchNorm1d(16), nn.Linear(16, 16),
                         nn.BatchNorm1d(16), nn.Linear(16, 16), nn.BatchNorm1d(16),
                         nn.Linear(16, 10))


def bnn_mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 16), nn.BatchNorm1d(16), BinaryLinear(16, 16),
                         nn.BatchNorm1d(16), nn.Linear(16, 10))


# --------------------------------------------------------------------------- quantizer explorer
def test_quantizer_explorer_tracks_every_control():
    w = Wd.quantizer_explorer(x_range=(-2, 2), n_points=9)
    x = np.linspace(-2, 2, 9)
    fig, c = w.figure, w.controls
    np.testing.assert_array_equal(fig.data[0].y, np.where(x >= 0, 1.0, -1.0))
    np.testing.assert_array_equal(fig.data[1].y, (np.abs(x) <= 1.0) * 1.0)
    assert "= 0.000" in fig.layout.title.text                 # STE clip 1 vs uniform s = 1
    c["clip_value"].value = 0.5
    np.testing.assert_array_equal(fig.data[1].y, (np.abs(x) <= 0.5) * 1.0)
    assert "= 1.00" in fig.layout.title.text                  # |1 - 1/1| ... 2 * |0.5 - 1|
    c["quantizer"].value = "approx_sign"
    np.testing.assert_allclose(fig.data[1].y, np.clip(2 - 2 * np.abs(x), 0, None))
    c["noise"].value, c["scale"].value = "normal", 0.5
    np.testing.assert_allclose(fig.data[2].y,
                               2 * np.exp(-x**2 / (2 * 0.25)) / (0.5 * np.sqrt(2 * np.pi)))
    c["quantizer"].value, c["beta"].value = "swish_sign", 2.0
    b = 2.0
    np.testing.assert_allclose(fig.data[1].y,
                               b * (2 - b * x * np.tanh(b * x / 2)) / (1 + np.cosh(b * x)))


# --------------------------------------------------------------------------- binarize explorer
def test_binarize_explorer_summary_follows_checkboxes_and_family(digits):
    w = Wd.binarize_explorer(float_mlp, digits, background=False)
    assert [n for n in w.controls if n != "family"] == ["0", "2", "4", "6"]
    assert w.selected == ["2", "4"]                            # first and last stay float
    names = list(w.summary_figure.data[2].x)
    binary_macs = dict(zip(names, w.summary_figure.data[2].y, strict=True))
    assert binary_macs["2"] == 256 and binary_macs["4"] == 256 and binary_macs["0"] == 0
    w.controls["4"].value = False
    binary_macs = dict(zip(w.summary_figure.data[2].x, w.summary_figure.data[2].y, strict=True))
    assert binary_macs["2"] == 256 and binary_macs["4"] == 0
    float_macs = dict(zip(w.summary_figure.data[3].x, w.summary_figure.data[3].y, strict=True))
    assert float_macs["4"] == 256
    w.controls["family"].value = "xnor"
    assert type(w.build()[2]).__name__ == "XnorLinear"


def test_binarize_explorer_run_fine_tunes_and_plots_accuracy(digits):
    w = Wd.binarize_explorer(float_mlp, digits, epochs=1, batch_size=64, background=False)
    w.controls["4"].value = False
    w.run_button.click()                                       # background=False: inline
    assert len(w.results) == 1
    row = w.results[0]
    assert row["name"] == "#1 binary: 2"
    assert list(w.accuracy_figure.data[0].x) == [row["name"]]
    assert list(w.accuracy_figure.data[0].y) == [row["accuracy"]]
    assert 0.0 <= row["accuracy"] <= 1.0
    assert w.progress.value == w.progress.max == 2             # 128 samples / 64 per batch
    assert not w.run_button.disabled and w.stop_button.disabled


# --------------------------------------------------------------------------- sign distribution
def _hand_made_history():
    h = A.SignHistory(edges=np.array([-1.0, 0.0, 1.0]), epochs=[0, 1, 2])
    h.layers["a"] = {"weight_counts": [np.array([1, 3]), np.array([2, 2]), np.array([3, 1])],
                     "fraction_positive": [0.75, 0.5, 0.25],
                     "input_counts": [np.array([5, 5]), np.array([4, 6]), np.array([0, 10])],
                     "input_fraction_positive": [0.5, 0.6, 1.0]}
    h.layers["b"] = {k: [v * 10 for v in vals] for k, vals in h.layers["a"].items()}
    return h


def test_sign_distribution_explorer_tracks_layer_epoch_and_values():
    w = Wd.sign_distribution_explorer(_hand_made_history())
    fig, c = w.figure, w.controls
    assert c["epoch"].value == 2
    assert list(fig.data[0].y) == [3, 1] and list(fig.data[2].x) == [2]
    c["epoch"].value = 1
    assert list(fig.data[0].y) == [2, 2]
    assert list(fig.data[2].y) == [0.5]
    c["layer"].value = "b"
    assert list(fig.data[0].y) == [20, 20]
    c["values"].value = "inputs"
    assert list(fig.data[0].y) == [40, 60]
    assert list(fig.data[1].y) == [5.0, 6.0, 10.0]
    assert fig.layout.title.text == "layer b: inputs at epoch 1"


def test_sign_distribution_explorer_accepts_the_callback_and_rejects_empty():
    cb = A.SignStats()
    with pytest.raises(ValueError, match="empty"):
        Wd.sign_distribution_explorer(cb)
    cb.snapshot(bnn_mlp(), 0)
    w = Wd.sign_distribution_explorer(cb)
    assert w.controls["values"].options == ("weights",)
    assert sum(w.figure.data[0].y) == 16 * 16
    with pytest.raises(TypeError, match="sign_stats_history"):
        Wd.sign_distribution_explorer({"not": "history"})


# --------------------------------------------------------------------------- gradient mismatch
def _hand_made_mismatch(offset):
    gm = A.GradientMismatch(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long))
    for epoch in (0, 1):
        res = {}
        for k, ref in enumerate(("tanh β=1", "tanh β=5")):
            res[ref] = {layer: {"cosine": offset + 0.1 * epoch + 0.01 * k + 0.001 * i,
                                "rel_error": 2.0 + epoch, "norm_ratio": 3.0 + i}
                        for i, layer in enumerate(("x", "y"))}
        gm.results.append(res)
        gm.epochs.append(epoch)
    return gm


def test_gradient_mismatch_explorer_one_line_per_quantizer():
    w = Wd.gradient_mismatch_explorer({"ste": _hand_made_mismatch(0.5),
                                       "approx": _hand_made_mismatch(0.2)})
    fig, c = w.figure, w.controls
    assert [t.name for t in fig.data] == ["ste", "approx"]
    np.testing.assert_allclose(fig.data[0].y, [0.5005, 0.6005])        # mean of x and y
    c["layer"].value = "y"
    np.testing.assert_allclose(fig.data[1].y, [0.201, 0.301])
    c["reference"].value = "tanh β=5"
    np.testing.assert_allclose(fig.data[1].y, [0.211, 0.311])
    assert list(fig.data[0].x) == [0, 1]
    assert fig.layout.yaxis.title.text == "cosine similarity"
    assert tuple(fig.layout.yaxis.range) == (-1.05, 1.05)
    c["metric"].value = "norm_ratio"
    np.testing.assert_allclose(fig.data[0].y, [4.0, 4.0])
    assert fig.layout.yaxis.range is None and fig.layout.yaxis.rangemode == "tozero"
    c["metric"].value = "rel_error"                    # issue 11: the y title followed too late
    assert fig.layout.yaxis.title.text == "relative error"
    assert "relative error" in fig.layout.title.text
    c["metric"].value = "cosine"
    assert tuple(fig.layout.yaxis.range) == (-1.05, 1.05)
    with pytest.raises(TypeError, match="results"):
        Wd.gradient_mismatch_explorer({})


def test_gradient_mismatch_explorer_skips_variants_without_the_layer():
    other = _hand_made_mismatch(0.0)
    for res in other.results:                          # this variant has layers "x" and "z"
        for per in res.values():
            per["z"] = per.pop("y")
    w = Wd.gradient_mismatch_explorer({"a": _hand_made_mismatch(0.5), "b": other})
    w.controls["layer"].value = "y"
    assert [t.name for t in w.figure.data] == ["a"]
    w.controls["layer"].value = "x"
    assert [t.name for t in w.figure.data] == ["a", "b"]
    np.testing.assert_allclose(w.figure.data[1].y, [0.0, 0.1])


# --------------------------------------------------------------------------- live comparison
def test_live_comparison_run_fills_curves_bars_and_table(digits):
    w = Wd.live_comparison({"float": float_mlp, "bnn": bnn_mlp}, digits, epochs=2,
                           batch_size=64, latency_fn=lambda m: 0.004, background=False)
    rows = w.run()
    assert [r["name"] for r in rows] == ["float", "bnn"]
    curves = {t.name: t for t in w.curves_figure.data}
    for name in ("float", "bnn"):
        assert list(curves[name].x) == [1, 2]
        assert list(curves[name].y) == w.histories[name].val_acc
    acc, lat, mem = w.bars_figure.data
    np.testing.assert_allclose(acc.y, [100 * r["accuracy"] for r in rows])   # %
    assert list(lat.y) == [4000.0, 4000.0]                                 # µs
    expected_kib = [summary(w.models[n], (64,)).memory_bytes / 1024 for n in ("float", "bnn")]
    np.testing.assert_allclose(mem.y, expected_kib)
    assert expected_kib[1] < expected_kib[0]
    head, *body = w.table_rows()
    assert head[:3] == ["variant", "validation accuracy (%)", "latency (µs)"]
    assert [r[0] for r in body] == ["float", "bnn"] and [r[2] for r in body] == ["4,000"] * 2
    assert "<table" in w.table.value and w.table.value.count("<tr>") == 3   # header + 2 rows
    assert w.progress.value == w.progress.max == 2 * 2 * 2


def test_live_comparison_is_seeded_and_reports_mean_sd_and_the_path(digits):
    def make():
        return Wd.live_comparison({"float": float_mlp, "bnn": bnn_mlp}, digits, epochs=1,
                                  batch_size=64, seeds=(0, 1), background=False)
    w1, w2 = make(), make()
    rows1, rows2 = w1.run(), w2.run()
    assert [r["accuracies"] for r in rows1] == [r["accuracies"] for r in rows2]
    for r in rows1:
        assert len(r["accuracies"]) == 2 and r["seeds"] == [0, 1]
        assert r["accuracy"] == pytest.approx(float(np.mean(r["accuracies"])))
        assert r["accuracy_sd"] == pytest.approx(float(np.std(r["accuracies"], ddof=1)))
        assert " ± " in r["accuracy_text"] and r["latency_us"] > 0
    assert [(r["path"], r["why"].split(":")[0]) for r in rows1] == [
        ("torch", "no binary layer to pack"), ("packed", "binary layers fused")]
    assert w1.progress.value == w1.progress.max == 2 * 2 * math.ceil(len(digits.train[0]) / 64)
    assert len(w1.seed_histories["bnn"]) == 2
    with pytest.raises(TypeError, match="seeds"):
        Wd.live_comparison({"a": bnn_mlp}, digits, seeds=0)


class _StopAfter(nn.Module):
    """Wraps a model; clicks the widget's Stop button during the ``n``-th training forward."""

    def __init__(self, inner, widget_ref, n):
        super().__init__()
        self.inner, self.widget_ref, self.n, self.calls = inner, widget_ref, n, 0

    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.calls == self.n:
                self.widget_ref[0].stop_button.click()
        return self.inner(x)


def test_live_comparison_stop_button_ends_training_and_skips_the_rest(digits):
    ref = []
    w = Wd.live_comparison({"first": lambda: _StopAfter(bnn_mlp(), ref, 2), "second": bnn_mlp},
                           digits, epochs=3, batch_size=64, latency_fn=lambda m: 0.001,
                           background=False)
    ref.append(w)
    rows = w.run()
    assert [r["name"] for r in rows] == ["first"]
    assert w.progress.value == 2                          # stopped after the second batch
    assert w.status.value.startswith("stopped")
    assert w.histories["first"].stopped_early


def test_run_button_uses_a_background_thread(digits):
    w = Wd.live_comparison({"bnn": bnn_mlp}, digits, epochs=1, batch_size=64,
                           latency_fn=lambda m: 0.001)
    w.run_button.click()
    w._thread.join(timeout=60)
    assert not w._thread.is_alive()
    assert [r["name"] for r in w.rows] == ["bnn"]


def test_an_error_in_the_background_is_shown_and_the_buttons_come_back(digits):
    w = Wd.live_comparison({"bad": lambda: "not a model"}, digits, epochs=1,
                           latency_fn=lambda m: 0.001)
    w.run_button.click()
    w._thread.join(timeout=60)
    assert w.status.value.startswith("error: TypeError") and "variants['bad']" in w.status.value
    assert not w.run_button.disabled and w.stop_button.disabled


def test_default_latency_fn_times_a_forward_pass_and_names_the_path():
    out = Wd.default_latency_fn((64,))(bnn_mlp())
    assert out["latency_ms"] > 0 and math.isfinite(out["latency_ms"])
    assert out["path"] == "packed" and out["why"].startswith("binary layers fused")
    out = Wd.default_latency_fn((64,))(float_mlp())
    assert out["path"] == "torch" and out["why"].startswith("no binary layer")


def test_live_comparison_rejects_bad_arguments(digits):
    with pytest.raises(TypeError, match="variants"):
        Wd.live_comparison({}, digits)
    with pytest.raises(ValueError, match="metric"):
        Wd.live_comparison({"a": bnn_mlp}, digits, metric="f1")


# --------------------------------------------------------------------------- bit packing (05)
def test_bit_packing_data_kernel_equals_popcount_formula_and_float():
    for k, agreement in ((1, 0.5), (64, 0.0), (65, 1.0), (128, 0.3)):
        d = Wd.bit_packing_data(k, seed=3, agreement=agreement)
        assert len(d["words_a"]) == -(-k // 64)
        assert d["dot_kernel"] == d["dot_popcount"] == d["dot_float"] == float(d["a"] @ d["b"])
        bits = [(int(d["words_a"][j // 64]) >> (j % 64)) & 1 for j in range(k)]
        assert bits == [int(v < 0) for v in d["a"]]       # bit 1 <=> -1, LSB first
    assert Wd.bit_packing_data(64, agreement=1.0)["dot_kernel"] == 64
    assert Wd.bit_packing_data(64, agreement=0.0)["dot_kernel"] == -64
    with pytest.raises(ValueError, match="k"):
        Wd.bit_packing_data(0)
    with pytest.raises(ValueError, match="agreement"):
        Wd.bit_packing_data(8, agreement=1.5)


def test_bit_packing_explorer_follows_its_controls():
    w = Wd.bit_packing_explorer()
    assert len(w.figure.data[0].x) == 64 and len(w.figure.data[0].y) == 5
    w.controls["k"].value = 100
    assert len(w.figure.data[0].x) == 100
    d = w.data()
    assert f"= {d['dot_kernel']}" in w.figure.layout.title.text
    w.controls["compare"].value = False
    assert len(w.figure.data[0].y) == 2 and "2 word(s)" in w.figure.layout.title.text


# --------------------------------------------------------------------------- classroom (08)
@pytest.mark.slow
def test_classroom_trainer_trains_shows_mistakes_and_scoreboard():
    from bnnlab import models

    ds = load_digits(n_train=200, val_size=100)
    w = Wd.classroom_trainer(
        {"float": lambda: models.binary_cnn(1, 8, channels=(8, 16), hidden=32, binary=False),
         "binary": lambda: models.binary_cnn(1, 8, channels=(8, 16), hidden=32)},
        ds, epochs=1, background=False)
    rows = w.run()
    assert [r["name"] for r in rows][:2] == ["float (torch)", "binary (torch)"]
    assert rows[0]["path"] == "torch float32"
    packed = [r for r in rows if r["name"] == "binary (packed)"]
    assert packed and packed[0]["path"].startswith("packed kernels")
    assert rows[1]["memory_kib"] < rows[0]["memory_kib"] / 5
    assert [t.name for t in w.curves_figure.data] == ["float", "binary"]
    assert len(w.curves_figure.data[0].y) == 1
    assert "<table" in w.scoreboard.value and "execution path" in w.scoreboard.value
    assert w.mistakes_box.children == (w.mistakes_figure,)
    assert "→" in w.mistakes_figure.layout.annotations[0].text
    assert w.progress.value == w.progress.max and w.run_button.disabled is False


def test_binarize_explorer_warns_when_a_binarized_input_is_never_negative(digits):
    """Binarising the first layer of a digits model (pixels in [0, 1]: sign = +1 always) is
    named in the result row and the status line; the default selection is not."""
    w = Wd.binarize_explorer(float_mlp, digits, epochs=1, batch_size=64, background=False)
    w.run_button.click()
    assert w.results[-1]["warning"] == ""
    w.controls["0"].value = True
    w.run_button.click()
    row = w.results[-1]
    assert "binarised input of layer(s) 0 is constant" in row["warning"]
    assert "never negative" in row["warning"]
    assert f"(warning: {row['warning']})" in w.status.value
