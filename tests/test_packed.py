"""Tests of bnnlab.packed: packed layers, export (fused and module replacement), ties, files."""
import hashlib
import io
import json
import pickle
import struct
import zlib

import numpy as np
import pytest
import torch
from _user_models import BasicBlock
from torch import nn

from bnnlab import layers as L
from bnnlab import models, packed
from bnnlab import quantizers as Q


class ref:
    """NumPy oracles, deliberately naive; they never call bnnlab."""

    @staticmethod
    def sign(x):
        """sign with sign(0) = +1 (and -0.0 -> +1)."""
        return np.where(np.asarray(x) >= 0, 1, -1).astype(np.int64)

    @staticmethod
    def pm1_linear(x, w):
        """Integer dot products sign(x) @ sign(w).T, x (N, K), w (O, K)."""
        return ref.sign(x) @ ref.sign(w).T

    @staticmethod
    def pm1_conv2d(x, w, stride=1, padding=0, pad_value=1):
        """Cross-correlation (as torch) of sign(x) (N, C, H, W) with sign(w) (O, C, kh, kw), the
        binarised input padded with pad_value (±1); int64 (N, O, Ho, Wo). Naive loops."""
        xb, wb = ref.sign(x), ref.sign(w)
        n, c, h, wd = xb.shape
        o, _, kh, kw = wb.shape
        p = padding
        xp = np.full((n, c, h + 2 * p, wd + 2 * p), pad_value, np.int64)
        xp[:, :, p:p + h, p:p + wd] = xb
        ho, wo = (h + 2 * p - kh) // stride + 1, (wd + 2 * p - kw) // stride + 1
        out = np.zeros((n, o, ho, wo), np.int64)
        for i in range(ho):
            for j in range(wo):
                patch = xp[:, :, i * stride:i * stride + kh, j * stride:j * stride + kw]
                out[:, :, i, j] = np.einsum("nchw,ochw->no", patch, wb)
        return out

    @staticmethod
    def words_per_row(k):
        """uint64 words that hold k bits."""
        return (k + 63) // 64

K_VALUES = [1, 63, 64, 65, 127, 129, 200]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Results do not depend on threads; one thread keeps this file fast on a shared machine."""
    from bnnlab import kernels
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    kernels.set_num_threads(1)
    yield
    torch.set_num_threads(before)
    kernels.set_num_threads(None)


# ------------------------------------------------------------------------------ helpers
def _randn(*shape, seed=0, zeros=True):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g)
    if zeros:  # exact zeros (and a -0.0) must binarise to +1
        x.view(-1)[::7] = 0.0
        x.view(-1)[1] = -0.0
    return x


def _calibrated(model, shape, seed=0):
    """Random weights, non-trivial BN: a few train-mode forwards, then random affine (with
    negative scales, so flipped thresholds and OR-pooling get exercised), then eval."""
    g = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(*shape, generator=g) * 2)
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
                m.weight.normal_(generator=g)
                m.bias.normal_(0.0, 0.5, generator=g)
    return model.eval()


def _eval(model, x):
    with torch.no_grad():
        return model(x)


def _file_parts(data):
    """Independent parser of the documented layout: (header dict, payload bytes)."""
    magic, version, hlen, zlen = struct.unpack("<8sIIQ", data[:24])
    header = json.loads(zlib.decompress(data[24:24 + hlen]))
    payload = zlib.decompress(data[24 + hlen:24 + hlen + zlen])
    return header, payload


def _file_build(header, payload, version=1):
    hz, pz = zlib.compress(json.dumps(header).encode()), zlib.compress(payload)
    body = b"BNNLABPK" + struct.pack("<IIQ", version, len(hz), len(pz)) + hz + pz
    return body + hashlib.sha256(body).digest()


# ------------------------------------------------------------------------------ single layers
@pytest.mark.parametrize("k", K_VALUES)
def test_packed_linear_equals_numpy_and_torch_across_word_boundary(k):
    layer = L.BinaryLinear(k, 5, bias=False).eval()
    x = _randn(4, k, seed=k)
    p = packed.PackedLinear.from_binary(layer)
    np.testing.assert_array_equal(p.int_forward(x), ref.pm1_linear(x.numpy(), layer.weight.detach().numpy()))
    assert torch.equal(p(x), _eval(layer, x))


@pytest.mark.parametrize("k", K_VALUES)
def test_packed_linear_weight_memory_is_ceil_k_over_64_words_per_row(k):
    p = packed.PackedLinear.from_binary(L.BinaryLinear(k, 7))
    assert p.weight.words.nbytes == 7 * ref.words_per_row(k) * 8
    assert p.packed_weight_bytes() == 7 * ref.words_per_row(k) * 8
    assert p.float_weight_bytes() == 7 * k * 4


def test_packed_linear_with_bias_and_leading_dims():
    layer = L.BinaryLinear(70, 6).eval()
    x = _randn(2, 3, 70)
    got = packed.PackedLinear.from_binary(layer)(x)
    assert got.shape == (2, 3, 6)
    torch.testing.assert_close(got, _eval(layer, x), rtol=0, atol=1e-4)


@pytest.mark.parametrize("c_in", [1, 63, 64, 65])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("padding, pad_value", [(0, 0.0), (1, 1.0), (1, -1.0)])
def test_packed_conv_equals_numpy_and_torch(c_in, stride, padding, pad_value):
    layer = L.BinaryConv2d(c_in, 3, 3, stride=stride, padding=padding, bias=False,
                           pad_value=pad_value).eval()
    x = _randn(2, c_in, 6, 5, seed=c_in + stride)
    p = packed.PackedConv2d.from_binary(layer)
    want = ref.pm1_conv2d(x.numpy(), layer.weight.detach().numpy(), stride, padding,
                          1 if pad_value >= 0 else -1)
    np.testing.assert_array_equal(p.int_forward(x), want)
    assert torch.equal(p(x), _eval(layer, x))
    assert p.packed_weight_bytes() == 3 * 3 * 3 * ref.words_per_row(c_in) * 8


def test_from_binary_does_not_change_the_source_layer():
    layer = L.BinaryLinear(10, 3, input_quantizer=Q.StochasticSign())   # training mode
    before = [m.training for m in layer.modules()]
    packed.PackedLinear.from_binary(layer)
    assert [m.training for m in layer.modules()] == before


def test_packed_conv_unbatched_input():
    layer = L.BinaryConv2d(4, 5, 3, padding=1, bias=False, pad_value=1.0).eval()
    x = _randn(4, 6, 6)
    assert torch.equal(packed.PackedConv2d.from_binary(layer)(x), _eval(layer, x))


FAMILIES = [
    pytest.param(lambda: L.BinaryLinear(65, 7, input_quantizer="approx_sign"), (5, 65), True, id="approx_sign"),
    pytest.param(lambda: L.BinaryLinear(65, 7, input_quantizer="swish_sign"), (5, 65), True, id="swish_sign"),
    pytest.param(lambda: L.BinaryLinear(65, 7, input_quantizer=Q.StochasticSign()), (5, 65), True,
                 id="stochastic_eval"),
    pytest.param(lambda: L.BinaryLinear(63, 9, input_quantizer=Q.RSign(63)), (5, 63), True, id="rsign"),
    pytest.param(lambda: L.BinaryLinear(63, 9, input_quantizer=Q.ScaledSign(0.5)), (5, 63), False, id="scaled_sign"),
    pytest.param(lambda: L.BinaryLinear(63, 9, input_quantizer=Q.ScaledSign(-0.3)), (5, 63), False,
                 id="scaled_sign_neg"),
    pytest.param(lambda: L.BinaryLinear(65, 7, weight_quantizer="magnitude_aware_sign"), (5, 65), False,
                 id="magnitude_aware"),
    pytest.param(lambda: L.XnorLinear(129, 9), (5, 129), True, id="xnor_beta"),
    pytest.param(lambda: L.XnorLinear(129, 9, input_scaling=False), (5, 129), True, id="xnor_alpha"),
    pytest.param(lambda: L.XnorPlusLinear(63, 9), (5, 63), True, id="xnorplus"),
    pytest.param(lambda: L.BinaryConv2d(5, 6, 3, padding=1, pad_value=1.0,
                                        weight_quantizer="magnitude_aware_sign"), (2, 5, 7, 7), False,
                 id="conv_magnitude"),
    pytest.param(lambda: L.BinaryConv2d(5, 6, 3, padding=1, pad_value=1.0,
                                        input_quantizer=Q.RSign(5)), (2, 5, 7, 7), False,
                 id="conv_rsign"),   # torch adds a conv's bias inside its accumulation: rounding
    pytest.param(lambda: L.XnorConv2d(5, 6, 3, stride=2, padding=1, pad_value=-1.0), (2, 5, 7, 7), True,
                 id="xnor_kmap"),
    pytest.param(lambda: L.XnorPlusConv2d(5, 6, 3, padding=1, pad_value=1.0, gamma_mode="factorised",
                                          out_size=7), (2, 5, 7, 7), True, id="xnorplus_factorised"),
]


@pytest.mark.parametrize("make, shape, exact", FAMILIES)
def test_layer_families_reproduce_their_source(make, shape, exact):
    layer = make()
    with torch.no_grad():
        for name, prm in layer.named_parameters():
            if name != "weight":      # thresholds, Γ, bias: away from their init
                prm.normal_(0.0, 0.3)
    layer.eval()
    x = _randn(*shape, seed=3)
    got, want = packed.export(layer)(x), _eval(layer, x)
    if exact:
        assert torch.equal(got, want)
    else:  # α·d is one product; torch sums ±α terms with its own rounding
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # the integer part is exact whatever the scales
    p = packed.export(layer).packed_layers()[0]
    w = torch.where(layer.weight < 0, -1.0, 1.0).numpy()
    xb = x - layer.input_quantizer.threshold.detach().reshape((1, -1) + (1,) * (x.dim() - 2)) \
        if isinstance(layer.input_quantizer, Q.RSign) else x
    want_int = ref.pm1_linear(xb.numpy(), w) if x.dim() == 2 else \
        ref.pm1_conv2d(xb.numpy(), w, layer.stride[0], layer.padding[0], int(layer.pad_value))
    np.testing.assert_array_equal(p.int_forward(x), want_int)


# ------------------------------------------------------------------------------ refusals
REFUSED = [
    # issue 8, defect 1: torch pads s*sign(x) with ±1, which is not a binary conv of sign(x)
    pytest.param(lambda: L.BinaryConv2d(4, 3, 3, padding=1, pad_value=1.0,
                                        input_quantizer=Q.ScaledSign(2.0, learnable=False)),
                 "s=2 but pad_value=1", id="scaled_sign_padding"),
    pytest.param(lambda: L.BinaryConv2d(4, 3, 3, padding=1, pad_value=-1.0, input_quantizer=Q.ScaledSign(0.5)),
                 "s=0.5 but pad_value=-1", id="scaled_sign_padding_neg"),
    # issue 8, defect 2: a stochastic weight quantizer is not one fixed set of weights
    pytest.param(lambda: L.BinaryLinear(8, 4, weight_quantizer=Q.StochasticSign(stochastic_eval=True)),
                 "weight_quantizer StochasticSign", id="stochastic_weights"),
    pytest.param(lambda: L.BinaryConv2d(4, 4, 3, groups=2, pad_value=1.0), "groups", id="groups"),
    pytest.param(lambda: L.BinaryConv2d(4, 4, 3, dilation=2, pad_value=1.0), "dilation", id="dilation"),
    pytest.param(lambda: L.BinaryLinear(8, 4, input_quantizer="ste_heaviside"), "SteHeaviside", id="heaviside"),
    pytest.param(lambda: L.BinaryLinear(8, 4, input_quantizer="magnitude_aware_sign"), "MagnitudeAwareSign",
                 id="mag_input"),
    pytest.param(lambda: L.BinaryLinear(8, 4, input_quantizer=Q.StochasticSign(stochastic_eval=True)),
                 "stochastic_eval", id="stochastic_eval"),
    pytest.param(lambda: L.BinaryLinear(8, 4, weight_quantizer=None), "weight_quantizer=None", id="real_weights"),
    pytest.param(lambda: L.BinaryLinear(8, 4, weight_quantizer="ste_heaviside"), "±α", id="heaviside_weights"),
    pytest.param(lambda: L.BinaryLinear(8, 4, input_quantizer=None), "input_quantizer=None", id="real_input"),
    pytest.param(lambda: L.AbcLinear(8, 4), "AbcLinear", id="abc"),
    pytest.param(lambda: L.BinaryConv1d(4, 4, 3), "BinaryConv1d", id="conv1d"),
]


@pytest.mark.parametrize("make, match", REFUSED)
def test_export_refuses_what_it_cannot_reproduce_and_names_the_layer(make, match):
    model = nn.Sequential(nn.Identity(), make())
    with pytest.raises(ValueError, match=match) as info:
        packed.export(model)
    assert "'1'" in str(info.value)


class _NoisySign(Q.SteSign):
    """A weight quantizer whose eval forward draws noise (not the documented sign)."""

    def forward(self, x):
        return torch.where(x + 0.5 * torch.randn_like(x) >= 0, 1.0, -1.0)


def test_export_refuses_a_weight_quantizer_that_is_not_deterministic_in_eval():
    # issue 8, defect 2: exported from one random draw, the packed model differed from torch
    layer = L.BinaryLinear(64, 8, weight_quantizer=_NoisySign()).eval()
    with pytest.raises(ValueError, match="not deterministic"):
        packed.export(layer)


def test_stochastic_weights_deterministic_in_eval_export_that_function():
    layer = L.BinaryLinear(65, 7, weight_quantizer=Q.StochasticSign()).eval()
    x = _randn(4, 65)
    assert torch.equal(packed.export(layer)(x), _eval(layer, x))


@pytest.mark.parametrize("scale", [2.0, 0.5, 1.0, -1.0])
def test_scaled_sign_with_zero_padding_reproduces_the_border(scale):
    # issue 8, defect 1: zero padding of s*sign(x) stays zero in units of sign(x): exact d
    layer = L.BinaryConv2d(4, 3, 3, padding=1, bias=False,
                           input_quantizer=Q.ScaledSign(scale, learnable=False)).eval()
    x = _randn(2, 4, 6, 5)
    p = packed.export(layer)
    torch.testing.assert_close(p(x), _eval(layer, x), rtol=1e-6, atol=1e-5)
    want = ref.pm1_conv2d(x.numpy(), layer.weight.detach().numpy(), 1, 1, 0)
    np.testing.assert_array_equal(p.packed_layers()[0].int_forward(x), want)


@pytest.mark.parametrize("pad_value", [1.0, -1.0])
def test_unit_scaled_sign_with_pm1_padding_is_exported(pad_value):
    # s = -1 flips the sign of the padded value in units of sign(x)
    layer = L.BinaryConv2d(4, 3, 3, padding=1, bias=False, pad_value=pad_value,
                           input_quantizer=Q.ScaledSign(-1.0, learnable=False)).eval()
    x = _randn(2, 4, 5, 5)
    assert torch.equal(packed.export(layer)(x), _eval(layer, x))


@pytest.mark.parametrize("c_in", [1, 63, 64, 65])
@pytest.mark.parametrize("stride, padding", [(1, 1), (2, 1), (1, 2), (2, 2)])
def test_zero_padding_is_reproduced_bit_exact(c_in, stride, padding):
    # issue 8, defect 7: torch's pad_value=0 was refused; now exact (zero-padding correction)
    layer = L.BinaryConv2d(c_in, 5, 3, stride=stride, padding=padding, bias=False).eval()
    assert layer.pad_value == 0.0
    x = _randn(2, c_in, 6, 5, seed=c_in)
    p = packed.export(layer)
    assert torch.equal(p(x), _eval(layer, x))
    want = ref.pm1_conv2d(x.numpy(), layer.weight.detach().numpy(), stride, padding, 0)
    np.testing.assert_array_equal(p.packed_layers()[0].int_forward(x), want)


def test_zero_padded_fused_chain_with_pool_is_bit_exact_and_saves():
    torch.manual_seed(5)
    model = nn.Sequential(
        nn.Conv2d(3, 65, 3, padding=1), nn.BatchNorm2d(65), nn.Hardtanh(),
        L.BinaryConv2d(65, 64, 3, padding=1, bias=False), nn.MaxPool2d(2), nn.BatchNorm2d(64),
        nn.Hardtanh(),
        L.BinaryConv2d(64, 63, 3, padding=2, stride=2, bias=False), nn.BatchNorm2d(63),
        nn.Flatten(), nn.Linear(63 * 3 * 3, 10))
    model = _calibrated(model, (8, 3, 9, 9))
    x = _randn(5, 3, 9, 9, seed=6)
    p = packed.export(model, fold_float_bn=False)
    assert p.packed_layers()[0].fused
    assert torch.equal(p(x), _eval(model, x))
    q = packed.PackedModel.from_bytes(p.to_bytes())
    assert torch.equal(q(x), p(x))


def test_empty_batch_gives_an_empty_output_of_the_right_shape():
    # issue 8, defect 5: a batch of 0 ended in "inconsistent shapes"
    model = _calibrated(models.binary_cnn(), (8, 1, 28, 28))
    p = packed.export(model)
    x = torch.zeros(0, 1, 28, 28)
    got = p(x)
    assert got.shape == _eval(model, x).shape == (0, 10) and got.dtype == torch.float32


def test_absurd_padding_raises_value_error_naming_padding():
    # issue 8, defect 5: numpy's "array is too big"
    layer = L.BinaryConv2d(2, 2, 3, padding=10**6, pad_value=1.0, bias=False).eval()
    p = packed.export(layer)
    with pytest.raises(ValueError, match="padding"):
        p(torch.randn(1, 2, 3, 3))


def test_channels_last_and_non_contiguous_inputs():
    model = _calibrated(models.binary_cnn(), (8, 1, 28, 28))
    p = packed.export(model, fold_float_bn=False)
    x = _randn(4, 1, 28, 28)
    want = _eval(model, x)
    assert torch.equal(p(x.contiguous(memory_format=torch.channels_last)), want)
    assert torch.equal(p(_randn(4, 1, 28, 56)[..., ::2]), _eval(model, _randn(4, 1, 28, 56)[..., ::2]))


def test_export_accepts_pad_value_zero_without_padding():
    layer = L.BinaryConv2d(4, 4, 1, bias=False).eval()   # pad_value=0.0 but no padding: nothing is padded
    x = _randn(2, 4, 5, 5)
    assert torch.equal(packed.export(layer)(x), _eval(layer, x))


def test_export_accepts_real_input_fed_by_a_pm1_quantizer_and_refuses_others_at_run_time():
    model = nn.Sequential(Q.SteSign(), L.BinaryLinear(30, 4, input_quantizer=None)).eval()
    x = _randn(3, 30)
    p = packed.export(model)
    assert torch.equal(p(x), _eval(model, x))
    with pytest.raises(ValueError, match="-1 and \\+1"):
        p.packed_layers()[0](x)  # a real input reaching the layer directly is refused


def test_export_argument_errors():
    with pytest.raises(TypeError, match="model"):
        packed.export("not a model")
    with pytest.raises(ValueError, match="no binary layer"):
        packed.export(nn.Linear(3, 3))
    with pytest.raises(ValueError, match="float32"):
        packed.export(nn.Sequential(L.BinaryLinear(8, 4)).double())


def test_check_against_detects_a_different_model():
    model = _calibrated(models.binary_mlp(64, hidden=(32, 32)), (8, 64))
    p = packed.export(model, _randn(4, 64))
    other = _calibrated(models.binary_mlp(64, hidden=(32, 32)), (8, 64), seed=1)
    with pytest.raises(ValueError, match="export check failed"):
        p.check_against(other, _randn(4, 64))


# ------------------------------------------------------------------------------ whole models
REFERENCE_MODELS = [
    pytest.param(lambda: models.binary_mlp(), (8, 784), id="mlp"),
    pytest.param(lambda: models.binary_mlp(65, hidden=(129, 63, 64)), (8, 65), id="mlp_odd"),
    pytest.param(lambda: models.binary_cnn(), (8, 1, 28, 28), id="cnn28"),
    pytest.param(lambda: models.binary_cnn(3, 32), (8, 3, 32, 32), id="cnn32"),
    pytest.param(lambda: models.binary_cnn(channels=(16, 40, 70), hidden=33), (8, 1, 28, 28), id="cnn_odd"),
]


@pytest.mark.parametrize("make, shape", REFERENCE_MODELS)
def test_reference_models_export_bit_exact(make, shape):
    model = _calibrated(make(), shape)
    x = _randn(*shape, seed=5)
    p = packed.export(model, x, fold_float_bn=False)
    want = _eval(model, x)
    got = p(x)
    assert torch.equal(got, want)                      # logits bit-exact (sign weights, no α)
    assert torch.equal(got.argmax(1), want.argmax(1))
    layers = p.packed_layers()
    assert not any(isinstance(m, L._BinaryMixin) for m in p.modules())
    assert all(m.fused for m in layers[:-1]) and not layers[-1].fused   # binary chains fused
    assert not any(m.folded_bn for m in layers)
    assert torch.equal(packed.export(model, fuse=False)(x), want)
    # fuse=False never folds the float BatchNorm, whatever fold_float_bn says
    assert torch.equal(packed.export(model, fuse=False, fold_float_bn=True)(x), want)


@pytest.mark.parametrize("make, shape", REFERENCE_MODELS)
def test_reference_models_fold_float_bn_allclose_same_predictions(make, shape):
    model = _calibrated(make(), shape)
    x = _randn(64, *shape[1:], seed=6)
    p = packed.export(model, x)                        # default: fold_float_bn=True
    exact = packed.export(model, fold_float_bn=False)
    want = _eval(model, x)
    got = p(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert torch.equal(got.argmax(1), want.argmax(1))
    last = p.packed_layers()[-1]
    assert last.folded_bn and not last.fused
    assert not any(isinstance(m, nn.BatchNorm1d) for m in p.body)       # BN1d is gone
    assert len(p.body) == len(exact.body) - 1
    assert any("BatchNorm1d folded" in n for n in p.notes)
    # integer parts unchanged (bit-exact)
    feed = p.body[:-3]                                 # up to the last binary layer's input
    with torch.no_grad():
        a, b = feed(x), exact.body[:-4](x)
    np.testing.assert_array_equal(last.int_forward(a), exact.packed_layers()[-1].int_forward(b))


def test_fold_float_bn_handles_bias_alpha_and_refuses_nd_inputs():
    model = nn.Sequential(L.BinaryLinear(40, 12, bias=True, weight_quantizer="magnitude_aware_sign"),
                          nn.BatchNorm1d(12), nn.ReLU(), nn.Linear(12, 3))
    model = _calibrated(model, (16, 40))
    x = _randn(32, 40, seed=2)
    p = packed.export(model, x)
    assert p.packed_layers()[0].folded_bn and "folded_bn" in repr(p)
    torch.testing.assert_close(p(x), _eval(model, x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="2-D"):
        p(x.reshape(4, 8, 40))
    with pytest.raises(TypeError, match="fold_float_bn"):
        packed.export(model, fold_float_bn=1)


def test_fold_float_bn_on_a_conv_epilogue():
    model = nn.Sequential(L.BinaryConv2d(3, 8, 3, padding=1, bias=False, pad_value=1.0),
                          nn.BatchNorm2d(8), nn.Hardtanh(), nn.Flatten(), nn.Linear(8 * 25, 4))
    model = _calibrated(model, (8, 3, 5, 5))
    x = _randn(16, 3, 5, 5, seed=3)
    p = packed.export(model, x)
    assert p.packed_layers()[0].folded_bn
    assert not any(isinstance(m, nn.BatchNorm2d) for m in p.body)
    torch.testing.assert_close(p(x), _eval(model, x), rtol=1e-5, atol=1e-5)
    assert torch.equal(packed.export(model, fold_float_bn=False)(x), _eval(model, x))


def test_fast_kernel_paths_fall_back_and_check_like_the_stages():
    # entry fold (PackedSign + pool) first: the model sees the caller's tensor directly
    model = nn.Sequential(nn.MaxPool2d(2), nn.BatchNorm2d(3),
                          L.BinaryConv2d(3, 8, 3, padding=1, bias=False, pad_value=1.0),
                          nn.MaxPool2d(2), nn.BatchNorm2d(8),
                          L.BinaryConv2d(8, 4, 3, padding=1, bias=False, pad_value=1.0),
                          nn.Flatten(), nn.Linear(4 * 9, 2))
    model = _calibrated(model, (8, 3, 12, 12))
    p = packed.export(model, fold_float_bn=False)
    x = _randn(2, 3, 12, 12, seed=11)
    want = _eval(model, x)
    assert torch.equal(p(x), want)
    assert torch.equal(p(x.clone().requires_grad_()), want)            # grad input: checked path
    xt = x.transpose(2, 3).contiguous().transpose(2, 3)                # non-contiguous
    assert torch.equal(p(xt), want)
    assert torch.equal(p(x[:1]), _eval(model, x[:1]))                  # new shape: new plan
    assert torch.equal(p(x), want)
    bad = x.clone()
    bad[0, 1, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        p(bad)


def test_fast_steps_do_not_modify_the_callers_tensor():
    # Hardtanh runs in place only on a packed layer's fresh output, never on the caller's input
    model = nn.Sequential(nn.Hardtanh(), nn.Linear(6, 6), nn.Hardtanh(),
                          L.BinaryLinear(6, 5, bias=False), nn.Hardtanh(), nn.Linear(5, 2))
    model = _calibrated(model, (8, 6))
    x = _randn(4, 6, seed=1) * 3
    x0 = x.clone()
    p = packed.export(model)
    got = p(x)
    assert torch.equal(x, x0)
    assert torch.equal(got, _eval(model, x))


def test_fused_cnn_exercises_flips_and_or_pooling():
    model = _calibrated(models.binary_cnn(), (8, 1, 28, 28))
    p = packed.export(model, fold_float_bn=False)
    assert any(m.flip.any() for m in p.packed_layers() if m.fused)
    assert any(m.or_channels.any() for m in p.modules() if isinstance(m, packed.PackedMaxPool2d))
    x = _randn(4, 1, 28, 28, seed=9)
    assert torch.equal(p(x), _eval(model, x))


def test_unfusable_segment_falls_back_to_float_and_stays_exact():
    model = nn.Sequential(nn.Linear(20, 40), nn.BatchNorm1d(40), L.BinaryLinear(40, 40, bias=False),
                          nn.LayerNorm(40), L.BinaryLinear(40, 10, bias=False), nn.BatchNorm1d(10))
    model = _calibrated(model, (16, 20))
    p = packed.export(model, fold_float_bn=False)
    assert not p.packed_layers()[0].fused and any("not fused" in n for n in p.notes)
    x = _randn(6, 20)
    assert torch.equal(p(x), _eval(model, x))


@pytest.mark.parametrize("make", [models.tiny_bireal, models.tiny_reactnet], ids=["bireal", "reactnet"])
def test_residual_models_by_module_replacement(make):
    model = make()
    with torch.no_grad():  # move RSign thresholds and RPReLU parameters away from their init
        for m in model.modules():
            if isinstance(m, Q.RSign):
                m.threshold.normal_(0.0, 0.3)
            if type(m).__name__ == "RPReLU":
                m.gamma.normal_(0.0, 0.2)
                m.zeta.normal_(0.0, 0.2)
    model = _calibrated(model, (8, 1, 12, 12))
    x = _randn(8, 1, 12, 12, seed=2)
    p = packed.export(model, x)
    got, want = p(x), _eval(model, x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)   # α·d vs torch's ±α sums
    assert torch.equal(got.argmax(1), want.argmax(1))
    assert p.packed_layers() and not any(isinstance(m, L._BinaryMixin) for m in p.modules())
    with pytest.raises(ValueError, match="cannot save"):
        p.to_bytes()


# ------------------------------------------------------------------------------ ties
def _tie_bn(bn, means, signs):
    """BN with var + eps == 1 exactly and weights ±1, ±0.5: z = (d - m) * w, exactly 0 at d = m."""
    with torch.no_grad():
        bn.eps = 2.0 ** -10
        bn.running_var.fill_(1.0 - 2.0 ** -10)
        bn.running_mean.copy_(torch.as_tensor(means, dtype=torch.float32))
        bn.weight.copy_(torch.as_tensor(signs, dtype=torch.float32))
        bn.bias.zero_()


def test_fused_dense_thresholds_break_ties_as_sign0_plus1():
    k1, c = 65, 70
    model = nn.Sequential(L.BinaryLinear(k1, c, bias=False), nn.BatchNorm1d(c),
                          L.BinaryLinear(c, 5, bias=False)).eval()
    x = _randn(40, k1, seed=11)
    w1, w2 = model[0].weight.detach().numpy(), model[2].weight.detach().numpy()
    d1 = ref.pm1_linear(x.numpy(), w1)
    means = d1[np.arange(c) % 40, np.arange(c)]                 # every channel has a real tie
    scales = np.tile([1.0, -1.0, 0.5, -0.5], c)[:c]             # and half of them are flipped
    _tie_bn(model[1], means, scales)
    z = (d1 - means) * scales
    assert (z == 0).sum() >= c
    want = ref.sign(z) @ ref.sign(w2).T                          # sign(0) = +1
    p = packed.export(model)
    assert p.packed_layers()[0].fused
    np.testing.assert_array_equal(p(x).numpy(), want)
    np.testing.assert_array_equal(_eval(model, x).numpy(), want)  # torch agrees


def test_fused_conv_pool_thresholds_break_ties_as_sign0_plus1():
    c = 6
    model = nn.Sequential(L.BinaryConv2d(3, c, 3, padding=1, bias=False, pad_value=1.0),
                          nn.MaxPool2d(2), nn.BatchNorm2d(c),
                          L.BinaryConv2d(c, 4, 3, padding=1, bias=False, pad_value=-1.0)).eval()
    x = _randn(2, 3, 8, 8, seed=12)
    w1, w2 = model[0].weight.detach().numpy(), model[3].weight.detach().numpy()
    d1 = ref.pm1_conv2d(x.numpy(), w1, 1, 1, 1)
    pooled = d1.reshape(2, c, 4, 2, 4, 2).max(axis=(3, 5))
    means = pooled[0, np.arange(c), 1, 2]
    scales = np.array([1.0, -1.0, 0.5, -0.5, -1.0, 1.0])
    _tie_bn(model[2], means, scales)
    z = (pooled - means[None, :, None, None]) * scales[None, :, None, None]
    assert (z == 0).sum() >= c
    want = ref.pm1_conv2d(ref.sign(z).astype(np.float64), w2, 1, 1, -1)
    p = packed.export(model)
    assert p.packed_layers()[0].fused
    pool = [m for m in p.modules() if isinstance(m, packed.PackedMaxPool2d)][0]
    np.testing.assert_array_equal(pool.or_channels, scales < 0)   # negative scale: min-pool
    np.testing.assert_array_equal(p(x).numpy(), want)
    np.testing.assert_array_equal(_eval(model, x).numpy(), want)


def test_entry_fold_float_thresholds_break_ties_and_handle_constant_channels():
    c = 8
    model = nn.Sequential(nn.BatchNorm1d(c), L.BinaryLinear(c, 3, bias=False)).eval()
    means = np.array([0.5, -1.25, 3.0, 0.0, 2.0, -2.0, 1.0, 0.0], np.float32)
    scales = np.array([1.0, -1.0, 0.5, -0.5, 0.0, 0.0, 2.0, -2.0], np.float32)
    _tie_bn(model[0], means, scales)
    with torch.no_grad():
        model[0].bias[4] = -1.0          # weight 0: constant -1 ...
        model[0].bias[5] = 0.0           # ... and constant sign(0) = +1
    x = torch.from_numpy(np.stack([means, means + 1e-3, means - 1e-3, -means,
                                   np.linspace(-3, 3, c, dtype=np.float32)]))
    z = (x.numpy().astype(np.float64) - means) * scales + model[0].bias.detach().numpy()
    assert (z == 0).sum() >= c - 2
    want = ref.sign(z) @ ref.sign(model[1].weight.detach().numpy()).T
    p = packed.export(model)
    assert isinstance(p.body[0], packed.PackedSign)
    np.testing.assert_array_equal(p(x).numpy(), want)
    np.testing.assert_array_equal(_eval(model, x).numpy(), want)


@pytest.mark.parametrize("c", [1, 63, 64, 65, 129])
def test_entry_fold_with_pool_breaks_ties_on_4d_inputs_and_fused_steps_match_stages(c):
    # float MaxPool -> BN (ties, negative and zero scales) -> sign -> binary conv: the entry
    # fold becomes PackedSign + PackedMaxPool2d, which PackedModel runs as ONE kernel call
    rng = np.random.default_rng(c)
    model = nn.Sequential(nn.MaxPool2d(2), nn.BatchNorm2d(c),
                          L.BinaryConv2d(c, 5, 3, padding=1, bias=False, pad_value=1.0)).eval()
    means = (rng.integers(-8, 9, c) / 4).astype(np.float32)
    scales = rng.choice(np.array([1.0, -1.0, 0.5, -0.5, 0.0], np.float32), c)
    _tie_bn(model[1], means, scales)
    x = np.repeat(means[None, :, None, None], 6 * 6, axis=2).reshape(1, c, 6, 6).copy()
    x[0, :, ::2, ::2] += rng.choice(np.array([-1e-3, 0.0, 1e-3], np.float32), (c, 3, 3))
    x = np.concatenate([x, rng.standard_normal((1, c, 6, 6)).astype(np.float32)])
    xt = torch.from_numpy(x)
    p = packed.export(model)
    kinds = [type(m).__name__ for m in p.body]
    assert kinds == ["PackedSign", "PackedMaxPool2d", "PackedConv2d"], kinds
    assert len(p._steps()) == 2                               # sign + pool fused
    want = _eval(model, xt)
    pooled = nn.functional.max_pool2d(xt, 2)
    z = (pooled.numpy().astype(np.float64) - means[None, :, None, None]) \
        * scales[None, :, None, None]
    assert (z == 0).any()                                     # real ties reach the sign
    assert torch.equal(p(xt), want)
    with torch.no_grad():
        assert torch.equal(p.body(xt), want)                  # stage by stage (unfused)


def test_packed_maxpool_on_bits_equals_max_and_min_pool():
    rng = np.random.default_rng(0)
    c = 70
    signs = np.where(rng.random((2, c, 7, 6)) < 0.5, -1.0, 1.0).astype(np.float32)
    or_ch = rng.random(c) < 0.5
    from bnnlab import kernels
    pool = packed.PackedMaxPool2d(c, (3, 3), (2, 2), (1, 1), or_ch)
    got = kernels.unpack_nhwc(pool(kernels.pack_nhwc(signs)))
    padded = np.full((2, c, 9, 8), np.nan)
    padded[:, :, 1:8, 1:7] = signs
    want = np.empty((2, c, 4, 3))
    for i in range(4):
        for j in range(3):
            win = padded[:, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3].reshape(2, c, -1)
            want[:, :, i, j] = np.where(or_ch[None, :], np.nanmin(win, -1), np.nanmax(win, -1))
    np.testing.assert_array_equal(got, want)


# ------------------------------------------------------------------------------ files
@pytest.fixture(scope="module")
def cnn_export():
    torch.manual_seed(0)
    model = _calibrated(models.binary_cnn(), (8, 1, 28, 28))
    return model, packed.export(model)


@pytest.mark.parametrize("make, shape", REFERENCE_MODELS)
def test_save_load_round_trip(make, shape, tmp_path):
    model = _calibrated(make(), shape)
    p = packed.export(model)
    n = p.save(tmp_path / "m.bnnpk")
    assert n == (tmp_path / "m.bnnpk").stat().st_size
    q = packed.load(tmp_path / "m.bnnpk")
    x = _randn(*shape, seed=4)
    assert torch.equal(q(x), p(x))
    assert [type(m) for m in q.body] == [type(m) for m in p.body]
    assert [m.folded_bn for m in q.packed_layers()] == [m.folded_bn for m in p.packed_layers()]
    assert q.packed_layers()[-1].folded_bn                    # the folded BN round-trips
    assert q.sizes()["packed_file_bytes"] == n
    # files without a folded BN (fold_float_bn=False) have no 'folded_bn' key and load too
    e = packed.export(model, fold_float_bn=False)
    assert "folded_bn" not in json.dumps(_file_parts(e.to_bytes())[0])
    assert torch.equal(packed.PackedModel.from_bytes(e.to_bytes())(x), e(x))


def test_load_never_unpickles(cnn_export, tmp_path, monkeypatch):
    _, p = cnn_export
    p.save(tmp_path / "m.bnnpk")

    def boom(*a, **k):
        raise AssertionError("unpickling attempted")
    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "loads", boom)
    monkeypatch.setattr(pickle, "Unpickler", boom)
    monkeypatch.setattr(torch, "load", boom)
    monkeypatch.setattr(np, "load", boom)
    q = packed.load(tmp_path / "m.bnnpk")
    x = _randn(3, 1, 28, 28, seed=8)
    assert torch.equal(q(x), p(x))                     # the model came back, without pickle
    assert [type(m) for m in q.body] == [type(m) for m in p.body]


def test_truncated_files_raise_value_error(cnn_export, tmp_path):
    data = cnn_export[1].to_bytes()
    for cut in (0, 5, 8, 20, 24, 100, len(data) // 2, len(data) - 1):
        path = tmp_path / f"t{cut}.bnnpk"
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="truncated|not a bnnlab"):
            packed.load(path)
    path.write_bytes(data + b"\0")
    with pytest.raises(ValueError, match="trailing"):
        packed.load(path)


def test_foreign_files_raise_value_error(tmp_path):
    buf = io.BytesIO()
    torch.save(models.binary_mlp(64, hidden=(16, 16)).state_dict(), buf)
    np.savez(tmp_path / "a.npz", x=np.zeros(3))
    for i, data in enumerate([buf.getvalue(), (tmp_path / "a.npz").read_bytes(), b"hello world" * 9]):
        path = tmp_path / f"f{i}"
        path.write_bytes(data)
        with pytest.raises(ValueError, match="not a bnnlab packed model file"):
            packed.load(path)
    with pytest.raises(TypeError, match="path"):
        packed.load(3)


def test_tampered_bytes_fail_the_checksum(cnn_export, tmp_path):
    data = bytearray(cnn_export[1].to_bytes())
    data[len(data) // 2] ^= 0x10
    (tmp_path / "x").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum"):
        packed.load(tmp_path / "x")


def _first(header, kind):
    return next(s for s in header["stages"] if s["kind"] == kind)


TAMPER = [
    pytest.param(lambda h, p: (_first(h, "packed_conv2d")["arrays"]["weight"].__setitem__(1, [64, 3, 3, 2]), p),
                 "shape", id="shape"),
    pytest.param(lambda h, p: (_first(h, "linear")["arrays"]["weight"].__setitem__(0, "<f8"), p),
                 "dtype", id="dtype"),
    pytest.param(lambda h, p: (_first(h, "packed_linear").__setitem__("kind", "packed_lstm"), p),
                 "unknown stage kind", id="kind"),
    pytest.param(lambda h, p: (_first(h, "packed_conv2d")["cfg"].__setitem__("pad_value", 0.5), p),
                 "pad_value", id="pad_value"),
    pytest.param(lambda h, p: (_first(h, "packed_conv2d")["cfg"].__setitem__("extra", 1), p),
                 "unexpected cfg", id="cfg_key"),
    pytest.param(lambda h, p: (_first(h, "linear")["arrays"]["weight"].__setitem__(2, 10 ** 9), p),
                 "outside the payload", id="offset"),
    pytest.param(lambda h, p: (h.__setitem__("format", "something.else"), p),
                 "not a bnnlab", id="format_tag"),
    pytest.param(lambda h, p: (None, _set_padding_bits(h, p)), "padding bits", id="padding_bits"),
    pytest.param(lambda h, p: (_first(h, "packed_linear")["cfg"].__setitem__("folded_bn", 1), p),
                 "folded_bn", id="folded_bn_type"),
    pytest.param(lambda h, p: (_first(h, "packed_conv2d")["cfg"].__setitem__("folded_bn", True), p),
                 "folded_bn", id="folded_bn_on_fused"),
]


def _set_padding_bits(header, payload):
    """Set a padding bit in the first packed conv's weight (32 input channels: bits 32..63 unused)."""
    entry = _first(header, "packed_conv2d")["arrays"]["weight"]
    words = bytearray(payload)
    words[entry[2] + 7] |= 0x80
    return bytes(words)


@pytest.mark.parametrize("edit, match", TAMPER)
def test_tampered_headers_with_valid_checksum_are_validated(cnn_export, tmp_path, edit, match):
    header, payload = _file_parts(cnn_export[1].to_bytes())
    _, new_payload = edit(header, payload)
    (tmp_path / "x").write_bytes(_file_build(header, new_payload))
    with pytest.raises(ValueError, match=match):
        packed.load(tmp_path / "x")


def test_unknown_version_is_refused(cnn_export, tmp_path):
    header, payload = _file_parts(cnn_export[1].to_bytes())
    (tmp_path / "x").write_bytes(_file_build(header, payload, version=2))
    with pytest.raises(ValueError, match="version"):
        packed.load(tmp_path / "x")


def test_reference_cnn_file_is_20x_smaller_than_float_twin(cnn_export, tmp_path):
    model, p = cnn_export
    n = p.save(tmp_path / "cnn.bnnpk")
    twin, own = io.BytesIO(), io.BytesIO()
    torch.save(models.binary_cnn(binary=False).state_dict(), twin)
    torch.save(model.state_dict(), own)
    assert len(twin.getvalue()) / n >= 20
    s = p.sizes()
    assert s["packed_file_bytes"] == n and s["float_state_dict_bytes"] == len(own.getvalue())
    assert s["ratio"] >= 20
    # binary weights as the kernels hold them: C_in=c0 < 64 pads each tap's word (see
    # PackedConv2d); c0 = width of the float first conv (models.binary_cnn's default)
    c0 = model[0].out_channels
    want = 64 * 9 * ref.words_per_row(c0) * 8 + 64 * 9 * ref.words_per_row(64) * 8 \
        + 128 * ref.words_per_row(576) * 8
    assert s["packed_weight_bytes"] == want
    assert s["float_weight_bytes"] == 4 * (64 * c0 * 9 + 64 * 64 * 9 + 128 * 576)


# ------------------------------------------------------------------------------ CLI
def test_cli_export(tmp_path, capsys):
    out = tmp_path / "cnn.bnnpk"
    assert packed.main(["binary_cnn", str(out), "--random"]) == 0
    assert "smaller" in capsys.readouterr().out
    assert packed.load(out)(torch.zeros(1, 1, 28, 28)).shape == (1, 10)
    assert packed.main(["binary_cnn", str(out), "--random", "--no-fold-bn"]) == 0
    assert not packed.load(out).packed_layers()[-1].folded_bn
    torch.save(models.binary_mlp(64).state_dict(), tmp_path / "sd.pt")
    args = ["binary_mlp", str(tmp_path / "m.bnnpk"), "--weights", str(tmp_path / "sd.pt")]
    assert packed.main(args + ["--in-features", "64"]) == 0
    assert packed.main(args) == 2                         # 784 inputs: the weights do not fit
    assert "error" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        packed.main(["binary_cnn", str(out)])  # neither --weights nor --random


# ------------------------------------------------------------------------------ a user's ResNet-18
class _ResNet18(nn.Module):
    def __init__(self, widths=(16, 32, 64, 65), num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        layers, cin = [], widths[0]
        for i, w in enumerate(widths):
            layers.append(nn.Sequential(BasicBlock(cin, w, 1 if i == 0 else 2), BasicBlock(w, w, 1)))
            cin = w
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def test_a_users_resnet18_converted_with_zero_padding_exports_bit_exact():
    # issue 8, defect 7: convert.binarize keeps torch's pad_value=0, which export refused
    from bnnlab import convert

    torch.manual_seed(3)
    model = convert.binarize(_ResNet18())
    binary = [m for m in model.modules() if isinstance(m, L.BinaryConv2d)]
    assert len(binary) >= 16 and all(m.pad_value == 0.0 for m in binary if m.padding != (0, 0))
    model = _calibrated(model, (4, 3, 32, 32))
    x = _randn(3, 3, 32, 32, seed=5)
    p = packed.export(model, x)
    assert len(p.packed_layers()) == len(binary)
    assert torch.equal(p(x), _eval(model, x))
    assert torch.equal(p(x[:0]), _eval(model, x[:0]))
