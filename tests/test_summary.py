"""bnnlab.summary: counts checked EXACTLY against arithmetic written out by hand."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from bnnlab import layers, quantizers
from bnnlab.summary import LayerRecord, Summary, summary


def rec(s: Summary, name: str) -> LayerRecord:
    (r,) = [r for r in s.records if r.name == name]
    return r


# ------------------------------------------------------------------------------ single layers
def test_binary_linear_10_to_4():
    s = summary(nn.Sequential(layers.BinaryLinear(10, 4)), (10,))
    r = rec(s, "0")
    assert r.type == "BinaryLinear" and r.output_shape == (4,) and r.input_precision == 1
    assert r.weight_bits == {1: 10 * 4, 32: 4}          # 40 binary weights + 4 float biases
    assert r.params == 44 and r.trainable_params == 44
    assert r.memory_bits == 40 * 1 + 4 * 32              # 168 bits
    assert r.memory_bytes == 21.0                       # 168 / 8
    assert r.float32_bytes == 44 * 4                    # 176
    assert (r.macs, r.binary_macs, r.float_macs) == (40, 40, 0)  # 4 outputs x 10 inputs
    assert s.compression_ratio == 176 / 21
    # cost model: 40 MACs / (0 float + 40 / 64)
    assert s.speedup == pytest.approx(40 / (40 / 64))
    assert s.binary_mac_ratio == 1.0


def test_binary_conv2d_3_to_8_k3_on_6x6_padding_1():
    conv = layers.BinaryConv2d(3, 8, 3, padding=1, pad_value=1.0)
    s = summary(nn.Sequential(conv), (3, 6, 6))
    r = rec(s, "0")
    assert r.output_shape == (8, 6, 6)
    k = 3 * 3 * 3                                       # C_in * k_h * k_w = 27
    assert r.macs == r.binary_macs == 8 * 6 * 6 * k      # 288 outputs x 27 = 7776
    assert r.binary_macs == 7776 and r.float_macs == 0
    assert r.weight_bits == {1: 8 * 27, 32: 8}           # 216 1-bit + 8 biases
    assert r.memory_bits == 216 + 8 * 32                 # 472 bits = 59 bytes
    assert r.memory_bytes == 59.0


def test_float_conv2d_stride_groups_and_no_bias():
    # 4 -> 8 channels, k3, stride 2, groups 2, on 7x7: out 8 x 3 x 3, K = (4/2) * 9 = 18
    s = summary(nn.Conv2d(4, 8, 3, stride=2, groups=2, bias=False), (4, 7, 7))
    r = rec(s, "")  # the model itself is the layer
    assert r.output_shape == (8, 3, 3)
    assert r.macs == r.float_macs == 72 * 18 == 1296 and r.binary_macs == 0
    assert r.input_precision == 32 and r.weight_bits == {1: 0, 32: 8 * 2 * 9}
    assert s.speedup == 1.0 and s.binary_mac_ratio == 0.0


def test_binary_conv1d():
    # 2 -> 4 channels, k3, length 10, no padding: out 4 x 8, K = 2 * 3 = 6
    s = summary(nn.Sequential(layers.BinaryConv1d(2, 4, 3, bias=False)), (2, 10))
    r = rec(s, "0")
    assert r.output_shape == (4, 8) and r.binary_macs == 32 * 6 == 192
    assert r.weight_bits == {1: 24, 32: 0} and r.memory_bytes == 3.0  # 24 bits


def test_conv_transpose_counts_input_elements_times_fan_out():
    # ConvTranspose2d(2, 3, 2) on 4x4: every one of the 2*16 inputs feeds 3*2*2 outputs
    s = summary(nn.ConvTranspose2d(2, 3, 2), (2, 4, 4))
    assert s.records[0].output_shape == (3, 5, 5)
    assert s.float_macs == 32 * 12 == 384


def test_binary_weights_on_float_inputs_are_float_macs():
    bwn = layers.BinaryLinear(10, 4, input_quantizer=None)
    r = summary(bwn, (10,)).records[0]
    assert r.input_precision == 32 and r.weight_bits == {1: 40, 32: 4}
    assert (r.binary_macs, r.float_macs) == (0, 40)


def test_binary_inputs_on_float_weights_are_float_macs():
    r = summary(layers.BinaryLinear(10, 4, weight_quantizer=None), (10,)).records[0]
    assert r.input_precision == 1 and r.weight_bits == {1: 0, 32: 44}
    assert (r.binary_macs, r.float_macs) == (0, 40)


def test_linear_on_sequence_counts_every_position():
    # Linear(5, 3) on (7, 5): 7 positions x 3 outputs x 5 inputs
    assert summary(nn.Linear(5, 3), (7, 5)).float_macs == 7 * 3 * 5


# ------------------------------------------------------------------------------ families
def test_xnor_linear_stores_one_alpha_per_output_channel():
    r = summary(layers.XnorLinear(10, 4), (10,)).records[0]
    assert r.params == 44
    assert r.weight_bits == {1: 40, 32: 4 + 4}           # bias + alpha_o (not a parameter)
    assert r.memory_bits == 40 + 8 * 32 and r.memory_bytes == 37.0
    assert r.binary_macs == 40


def test_magnitude_aware_weights_store_alpha_too():
    fc = layers.BinaryLinear(10, 4, bias=False, weight_quantizer=quantizers.MagnitudeAwareSign())
    assert summary(fc, (10,)).records[0].weight_bits == {1: 40, 32: 4}


def test_xnor_plus_gamma_is_a_32_bit_parameter():
    r = summary(layers.XnorPlusLinear(10, 4), (10,)).records[0]   # gamma: 4 (channel mode)
    assert r.params == 40 + 4 + 4 and r.weight_bits == {1: 40, 32: 8}
    conv = layers.XnorPlusConv2d(2, 3, 3, padding=1, gamma_mode="factorised", out_size=5)
    r = summary(conv, (2, 5, 5)).records[0]
    # gamma_c 3 + gamma_h 5 + gamma_w 5 + bias 3 = 16 floats; 3*2*9 = 54 bits
    assert r.weight_bits == {1: 54, 32: 16} and r.binary_macs == 75 * 18


def test_abc_linear_m_bases_and_m_times_n_binary_macs():
    m, n = 3, 2
    fc = layers.AbcLinear(10, 4, num_weight_bases=m, num_act_bases=n, formulation="per_channel")
    r = summary(fc, (10,)).records[0]
    # params: W 40 + bias 4 + alpha (M x C_out) 12 + act shifts 2 + act scales 2 = 60
    assert r.params == 60
    # stored: M bit planes of W (3 * 40) + float: bias 4 + alpha 12 + shifts/scales 4
    assert r.weight_bits == {1: 3 * 40, 32: 4 + 12 + 4}
    assert r.macs == 40 and r.binary_macs == m * n * 40 == 240 and r.float_macs == 0
    assert r.float32_bytes == 60 * 4


def test_abc_conv2d():
    conv = layers.AbcConv2d(2, 4, 3, padding=1, bias=False, num_weight_bases=2, num_act_bases=3,
                            formulation="per_channel")
    r = summary(conv, (2, 4, 4)).records[0]
    base = 4 * 4 * 4 * (2 * 9)                          # 64 outputs x K=18 = 1152
    assert r.macs == base and r.binary_macs == 2 * 3 * base
    assert r.weight_bits == {1: 2 * 72, 32: 2 * 4 + 3 + 3}
    # the paper's formulation (the default): one alpha per base
    paper = layers.AbcConv2d(2, 4, 3, padding=1, bias=False, num_weight_bases=2, num_act_bases=3)
    assert summary(paper, (2, 4, 4)).records[0].weight_bits == {1: 2 * 72, 32: 2 + 3 + 3}


def test_abc_with_float_inputs_folds_to_one_float_mac():
    fc = layers.AbcLinear(10, 4, input_quantizer=None, num_weight_bases=3, num_act_bases=2)
    r = summary(fc, (10,)).records[0]
    assert r.input_precision == 32 and (r.binary_macs, r.float_macs) == (0, 40)
    assert r.weight_bits[1] == 120  # the weights are still binary planes


# ------------------------------------------------------------------------------ whole models
def small_model():
    return nn.Sequential(
        nn.Linear(10, 4),               # float: 40 MACs, 44 params
        nn.BatchNorm1d(4),              # 8 params (weight + bias), running stats not counted
        layers.BinaryLinear(4, 2),      # 8 binary MACs, 8 1-bit + 2 float
        nn.Hardtanh(),
    )


def test_mixed_model_records_and_totals():
    s = summary(small_model(), (10,))
    assert [r.name for r in s.records] == ["0", "1", "2", "3"]
    assert [r.type for r in s.records] == ["Linear", "BatchNorm1d", "BinaryLinear", "Hardtanh"]
    assert [r.output_shape for r in s.records] == [(4,), (4,), (2,), (2,)]
    assert [r.input_precision for r in s.records] == [32, 32, 1, 32]
    assert rec(s, "1").weight_bits == {1: 0, 32: 8} and rec(s, "1").macs == 0
    assert rec(s, "3").params == 0 and rec(s, "3").macs == 0
    assert s.total_params == 44 + 8 + 10 == 62
    assert s.weight_bits == {1: 8, 32: 44 + 8 + 2}
    assert s.memory_bits == 8 + 54 * 32                 # 1736 bits
    assert s.memory_bytes == 217.0
    assert s.float32_bytes == 62 * 4 == 248
    assert s.compression_ratio == 248 / 217
    assert (s.total_macs, s.binary_macs, s.float_macs) == (48, 8, 40)
    assert s.binary_mac_ratio == 8 / 48
    assert s.speedup == pytest.approx(48 / (40 + 8 / 64))
    assert summary(small_model(), (10,), binary_ops_per_float_op=58).speedup == pytest.approx(
        48 / (40 + 8 / 58))


def test_shared_layer_called_twice_counts_macs_twice_params_once():
    fc = layers.BinaryLinear(4, 4, bias=False)
    model = nn.Sequential(fc, fc)
    s = summary(model, (4,))
    assert len(s.records) == 1 and s.records[0].calls == 2
    assert s.binary_macs == 2 * 16 and s.total_params == 16


def test_tied_parameters_counted_once():
    model = nn.Sequential(nn.Linear(3, 3, bias=False), nn.Linear(3, 3, bias=False))
    model[1].weight = model[0].weight
    s = summary(model, (3,))
    assert s.total_params == 9 == sum(p.numel() for p in model.parameters())
    assert s.float_macs == 18


def test_quantizer_parameters_belong_to_their_layer():
    fc = layers.BinaryLinear(6, 2, bias=False, input_quantizer=quantizers.RSign(6))
    s = summary(nn.Sequential(fc), (6,))
    assert [r.name for r in s.records] == ["0"]          # no separate row for the quantizer
    assert s.records[0].weight_bits == {1: 12, 32: 6}    # 6 thresholds
    assert s.records[0].binary_macs == 12


def test_total_params_match_torch_on_a_model_with_unsupported_layers():
    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(4, 2)
            self.lstm = nn.LSTM(4, 4)
            self.fc = nn.Linear(4, 2)
            self.scale = nn.Parameter(torch.ones(2))

        def forward(self, x):
            return self.fc(x) * self.scale

    model = Mixed()
    s = summary(model, (4,))
    assert s.total_params == sum(p.numel() for p in model.parameters())
    assert rec(s, "").params == 2 and rec(s, "lstm").output_shape is None  # not called
    assert s.float_macs == 8 and rec(s, "attn").macs == 0


def test_model_without_parameters():
    s = summary(nn.ReLU(), (3,))
    assert s.total_params == 0 and s.memory_bytes == 0
    assert math.isnan(s.compression_ratio) and math.isnan(s.speedup)
    assert "n/a" in str(s)


def test_float64_model():
    s = summary(small_model().double(), (10,))
    assert s.total_macs == 48


# ------------------------------------------------------------------------------ side effects
def test_training_state_batchnorm_stats_and_rng_are_untouched():
    model = small_model()
    model.train()
    model[2].eval()  # a mixed state must come back as it was
    running = model[1].running_mean.clone()
    rng = torch.get_rng_state()
    summary(model, (10,))
    assert model.training and model[1].training and not model[2].training
    assert torch.equal(model[1].running_mean, running)
    assert int(model[1].num_batches_tracked) == 0
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(not m._forward_hooks for m in model.modules())


def test_stochastic_layers_do_not_move_the_global_rng():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), layers.BinaryLinear(
        4, 2, input_quantizer=quantizers.StochasticSign(stochastic_eval=True)))
    rng = torch.get_rng_state()
    summary(model, (4,))
    assert torch.equal(torch.get_rng_state(), rng)


# ------------------------------------------------------------------------------ rendering
def test_str_has_columns_rows_totals_and_cost_model():
    text = str(summary(small_model(), (10,)))
    for needle in ("Layer", "Input prec.", "Outputs", "# 1-bit", "# 32-bit", "Memory (KiB)",
                   "1-bit MACs", "32-bit MACs", "0 (Linear)", "2 (BinaryLinear)", "(-1, 4)",
                   "Total params", "62", "Model size (packed)", "217 bytes",
                   "Model size (float32)", "248 bytes", "Compression ratio of memory",
                   "Number of MACs", "Ratio of MACs that are binarised", "0.1667",
                   "Estimated speed-up", "Cost model", "/ 64"):
        assert needle in text, needle
    assert "/ 58" in str(summary(small_model(), (10,), binary_ops_per_float_op=58))


def test_to_rows_and_to_dict_are_plain_data():
    s = summary(small_model(), (10,))
    rows = s.to_rows()
    assert rows[2] == {"name": "2", "type": "BinaryLinear", "output_shape": [2],
                       "input_precision": 1, "weights_1bit": 8, "weights_32bit": 2,
                       "params": 10, "trainable_params": 10, "memory_bytes": (8 + 64) / 8,
                       "float32_bytes": 40, "macs": 8, "binary_macs": 8, "float_macs": 0,
                       "calls": 1}
    d = s.to_dict()
    assert d["input_shape"] == [10] and d["binary_ops_per_float_op"] == 64
    assert d["totals"]["total_params"] == 62 and d["totals"]["memory_bytes"] == 217.0
    assert d["records"] == rows
    json.dumps(d)  # serialisable


def test_summary_of_a_binarized_model():
    from bnnlab.convert import binarize

    float_net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8),
                              nn.Linear(8, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))
    s = summary(binarize(float_net), (1, 4, 4))
    assert s.binary_macs == 64 and s.float_macs == 16 * 8 + 8 * 3
    assert s.weight_bits[1] == 64


# ------------------------------------------------------------------------------ bad arguments
@pytest.mark.parametrize("shape, exc", [
    (10, TypeError), ("10", TypeError), ((), ValueError), ((0, 3), ValueError),
    ((-1, 10), ValueError), ((3.0,), TypeError), ((True,), TypeError), (None, TypeError),
])
def test_bad_input_shape(shape, exc):
    with pytest.raises(exc, match="input_shape"):
        summary(small_model(), shape)


def test_batch_dimension_by_mistake_names_input_shape():
    with pytest.raises(ValueError, match="input_shape.*without the batch"):
        summary(nn.Conv2d(3, 4, 3), (8, 3, 6, 6))


@pytest.mark.parametrize("value, exc", [
    (0, ValueError), (-64, ValueError), (float("inf"), ValueError), (float("nan"), ValueError),
    ("64", TypeError), (True, TypeError),
])
def test_bad_binary_ops_per_float_op(value, exc):
    with pytest.raises(exc, match="binary_ops_per_float_op"):
        summary(small_model(), (10,), binary_ops_per_float_op=value)


def test_bad_model_and_dtype():
    with pytest.raises(TypeError, match="model"):
        summary([nn.Linear(2, 2)], (2,))
    with pytest.raises(TypeError, match="dtype"):
        summary(small_model(), (10,), dtype="float32")


def test_input_shape_accepts_list_and_size():
    assert summary(small_model(), [10]).input_shape == (10,)
    assert summary(small_model(), torch.Size([10])).total_macs == 48
