"""Tests of bnnlab.models: shapes, flat structure (packed-exporter contract), twins, sizes."""
import pytest
import torch
from torch import nn

from bnnlab import layers, models
from bnnlab.blocks import BiRealBlock, ReActBlock
from bnnlab.layers import BinaryConv2d, BinaryLinear
from bnnlab.quantizers import Quantizer, SteSign

ALLOWED = (nn.Flatten, nn.Linear, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.MaxPool2d,
           nn.ReLU, nn.Hardtanh, nn.Identity)
BINARY_TYPES = tuple(getattr(layers, n) for n in layers.__all__
                     if isinstance(getattr(layers, n), type))


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def is_binary(m):
    return isinstance(m, BINARY_TYPES) or isinstance(m, Quantizer)


# ---------------------------------------------------------------------------------- shapes
CASES = [
    pytest.param(lambda b: models.binary_mlp(binary=b), (3, 1, 28, 28), id="mlp-784"),
    pytest.param(lambda b: models.binary_mlp(64, (32, 32, 16), 5, binary=b), (3, 64), id="mlp-64"),
    pytest.param(lambda b: models.binary_cnn(binary=b), (3, 1, 28, 28), id="cnn-28"),
    pytest.param(lambda b: models.binary_cnn(3, 32, binary=b), (3, 3, 32, 32), id="cnn-32"),
    pytest.param(lambda b: models.tiny_bireal(binary=b), (3, 1, 28, 28), id="bireal-28"),
    pytest.param(lambda b: models.tiny_bireal(3, binary=b, width=8), (3, 3, 32, 32),
                 id="bireal-32"),
    pytest.param(lambda b: models.tiny_reactnet(binary=b), (3, 1, 28, 28), id="react-28"),
    pytest.param(lambda b: models.tiny_reactnet(3, binary=b, width=8), (3, 3, 32, 32),
                 id="react-32"),
]


@pytest.mark.parametrize("make, shape", CASES)
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "float"])
def test_forward_shape_and_backward(make, shape, binary):
    model = make(binary)
    out = model(torch.rand(*shape))
    n_out = 5 if shape == (3, 64) else 10
    assert out.shape == (3, n_out) and torch.isfinite(out).all()
    out.square().sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("make, shape", CASES)
def test_float_twin_is_float_and_same_size(make, shape):
    binary, twin = make(True), make(False)
    assert any(is_binary(m) for m in binary.modules())
    assert not any(is_binary(m) for m in twin.modules())
    assert n_params(binary) == n_params(twin)


# ---------------------------------------------------------------------------------- structure
FLAT = [
    pytest.param(lambda b: models.binary_mlp(binary=b), id="mlp"),
    pytest.param(lambda b: models.binary_mlp(100, (64, 48, 32), 7, binary=b), id="mlp-deep"),
    pytest.param(lambda b: models.binary_cnn(binary=b), id="cnn-28"),
    pytest.param(lambda b: models.binary_cnn(3, 32, binary=b), id="cnn-32"),
]


@pytest.mark.parametrize("make", FLAT)
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "float"])
def test_reference_models_are_flat_sequentials_of_allowed_layers(make, binary):
    model = make(binary)
    assert type(model) is nn.Sequential
    for m in model:
        assert isinstance(m, ALLOWED), type(m)
        assert not list(m.children()) or isinstance(m, (BinaryLinear, BinaryConv2d)), type(m)
    compute = [m for m in model if isinstance(m, (nn.Linear, nn.Conv2d))]
    assert type(compute[0]) in (nn.Linear, nn.Conv2d)        # first layer float
    assert type(compute[-1]) is nn.Linear                     # last layer float
    assert type(model[-1]) is nn.Linear


@pytest.mark.parametrize("make", FLAT)
def test_binary_layers_binarize_their_inputs_with_ste_sign(make):
    model = make(True)
    bins = [m for m in model if isinstance(m, (BinaryLinear, BinaryConv2d))]
    assert bins
    for m in bins:
        assert isinstance(m.input_quantizer, SteSign) and isinstance(m.weight_quantizer, SteSign)
        assert m.weight_clip == 1.0 and m.bias is None
        if isinstance(m, BinaryConv2d):
            assert m.pad_value == 1.0
    # every binary layer follows a BatchNorm (possibly through pooling / flatten)
    seq = list(model)
    for i, m in enumerate(seq):
        if isinstance(m, (BinaryLinear, BinaryConv2d)):
            prev = [p for p in seq[:i] if not isinstance(p, (nn.MaxPool2d, nn.Flatten))]
            assert isinstance(prev[-1], (nn.BatchNorm1d, nn.BatchNorm2d))


def test_float_twin_puts_an_activation_where_the_sign_was():
    b = models.binary_mlp(binary=True)
    f = models.binary_mlp(binary=False, activation="hardtanh")
    kinds_b = [type(m).__name__ for m in b]
    kinds_f = [type(m).__name__ for m in f]
    expected = []
    for k in kinds_b:
        expected += ["Hardtanh", "Linear"] if k == "BinaryLinear" else [k]
    assert kinds_f == expected


def test_binary_mlp_layer_list():
    m = models.binary_mlp(784, (512, 512), 10)
    assert [type(x).__name__ for x in m] == [
        "Flatten", "Linear", "BatchNorm1d", "BinaryLinear", "BatchNorm1d", "Hardtanh", "Linear"]
    assert (m[1].in_features, m[1].out_features) == (784, 512)
    assert (m[3].in_features, m[3].out_features) == (512, 512)


def test_binary_cnn_equals_manual_computation_on_signs():
    """Each binary conv is the float conv of sign(input) with sign(W), padded with +1."""
    torch.manual_seed(0)
    model = models.binary_cnn(binary=True, channels=(4, 6), hidden=8).eval()
    x = torch.rand(2, 1, 28, 28)
    sign = lambda t: torch.where(t >= 0, 1.0, -1.0)  # noqa: E731
    h = x
    for m in model:
        if isinstance(m, BinaryConv2d):
            hp = torch.nn.functional.pad(sign(h), (1, 1, 1, 1), value=1.0)
            h = torch.nn.functional.conv2d(hp, sign(m.weight))
        elif isinstance(m, BinaryLinear):
            h = sign(h) @ sign(m.weight).T
        else:
            h = m(h)
    torch.testing.assert_close(model(x), h)


# ---------------------------------------------------------------------------------- sizes
def test_parameter_counts_by_hand():
    # MLP 784-512-512-10: Linear(no bias) + BN + BinaryLinear(no bias) + BN + Linear(bias)
    mlp = 784 * 512 + 2 * 512 + 512 * 512 + 2 * 512 + 512 * 10 + 10
    assert n_params(models.binary_mlp()) == mlp == 670730
    # CNN 28x28: conv 1->16, bconv 16->64, bconv 64->64 (3x3, no bias), BN each,
    # BinaryLinear 64*3*3 -> 128, BN, Linear 128 -> 10
    cnn28 = (1 * 16 * 9 + 32) + (16 * 64 * 9 + 128) + (64 * 64 * 9 + 128) \
        + (64 * 9 * 128 + 256) + (128 * 10 + 10)
    assert n_params(models.binary_cnn()) == cnn28
    cnn32 = (3 * 16 * 9 + 32) + (16 * 64 * 9 + 128) + (64 * 64 * 9 + 128) \
        + (64 * 16 * 128 + 256) + (128 * 10 + 10)
    assert n_params(models.binary_cnn(3, 32)) == cnn32
    assert models.count_parameters(models.binary_cnn(3, 32)) == cnn32


def test_tiny_bireal_structure_and_size():
    w = 8
    m = models.tiny_bireal(1, 10, width=w)
    blocks = [b for b in m if isinstance(b, BiRealBlock)]
    assert [(b.in_channels, b.out_channels, b.stride) for b in blocks] == [
        (8, 8, 1), (8, 8, 1), (8, 16, 2), (16, 16, 1), (16, 32, 2), (32, 32, 1)]

    def unit(ci, co, down):
        return ci * co * 9 + 2 * co + ((ci * co + 2 * co) if down else 0)

    expected = (9 * w + 2 * w) + unit(8, 8, 0) * 2 + unit(8, 16, 1) + unit(16, 16, 0) \
        + unit(16, 32, 1) + unit(32, 32, 0) + (32 * 10 + 10)
    assert n_params(m) == expected


def test_tiny_reactnet_structure_and_size():
    w = 8
    m = models.tiny_reactnet(1, 10, width=w)
    blocks = [b for b in m if isinstance(b, ReActBlock)]
    assert [(b.in_channels, b.out_channels, b.stride) for b in blocks] == [
        (8, 8, 1), (8, 16, 2), (16, 16, 1), (16, 32, 2), (32, 32, 1)]

    def block(c, co):
        k = co // c
        # RSign x2 (c each), 3x3 conv, BN, RPReLU(c), k 1x1 convs + k BNs, RPReLU(co)
        return 2 * c + c * c * 9 + 2 * c + 3 * c + k * (c * c + 2 * c) + 3 * co

    expected = (9 * w + 2 * w) + block(8, 8) + block(8, 16) + block(16, 16) + block(16, 32) \
        + block(32, 32) + (32 * 10 + 10)
    assert n_params(m) == expected


# ---------------------------------------------------------------------------------- arguments
@pytest.mark.parametrize("fn, kwargs, exc, match", [
    (models.binary_mlp, {"hidden": ()}, ValueError, "hidden"),
    (models.binary_mlp, {"hidden": "512"}, TypeError, "hidden"),
    (models.binary_mlp, {"in_features": 0}, ValueError, "in_features"),
    (models.binary_mlp, {"binary": False, "activation": "gelu"}, ValueError, "activation"),
    (models.binary_mlp, {"head_activation": "sigmoid"}, ValueError, "head_activation"),
    (models.binary_cnn, {"image_size": 4}, ValueError, "image_size"),
    (models.binary_cnn, {"num_classes": 1.0}, TypeError, "num_classes"),
    (models.tiny_bireal, {"width": 0}, ValueError, "width"),
    (models.tiny_reactnet, {"in_channels": -1}, ValueError, "in_channels"),
])
def test_bad_arguments(fn, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fn(**kwargs)


# --- issue 8 (claims): the report's clipping sentence is read from the models ------------------
def test_weight_clip_sentence_follows_the_models():
    weight_clip_sentence = models.weight_clip_sentence
    binary_mlp, tiny_bireal = models.binary_mlp, models.tiny_bireal
    built = {"BinaryNet": binary_mlp(64, (16, 16)), "Float": binary_mlp(64, (16, 16), binary=False),
             "Bi-Real": tiny_bireal(width=4, blocks_per_stage=1),
             "ReActNet": models.tiny_reactnet(width=4)}
    text = weight_clip_sentence(built)
    assert text == ("latent weights are clipped to $[-1, 1]$ after each step in BinaryNet, as in "
                    "Larq; Bi-Real and ReActNet are trained without clipping")
    clipped = tiny_bireal(width=4, blocks_per_stage=1, weight_clip=0.5)
    assert weight_clip_sentence({"A": clipped}) == \
        "latent weights are clipped to $[-0.5, 0.5]$ after each step in A, as in Larq"
    first = next(m for m in clipped.modules() if getattr(m, "weight_quantizer", None) is not None)
    first.weight_clip = None
    assert weight_clip_sentence({"A": clipped}) == "A clips only some of its binary layers"
    assert weight_clip_sentence({"F": binary_mlp(64, (16, 16), binary=False)}) == ""
    with pytest.raises(TypeError, match="models"):
        weight_clip_sentence([clipped])


def test_tiny_reactnet_passes_the_gradient_variant_to_its_blocks():
    official = models.tiny_reactnet(width=4)
    larq = models.tiny_reactnet(width=4, gradients="larq")
    assert {b.gradients for b in official.modules() if isinstance(b, ReActBlock)} == {"official"}
    assert {b.gradients for b in larq.modules() if isinstance(b, ReActBlock)} == {"larq"}
