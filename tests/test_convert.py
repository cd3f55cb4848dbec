"""bnnlab.convert: binarize / binarize_with_report / ConversionReport."""
from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _user_models import BasicBlock
from torch import nn

from bnnlab import convert, layers, quantizers
from bnnlab.convert import ConversionReport, binarize, binarize_with_report

FAMILY_CLASSES = {  # family -> (Linear, Conv1d, Conv2d) replacement; None: no such layer
    "binary": (layers.BinaryLinear, layers.BinaryConv1d, layers.BinaryConv2d),
    "xnor": (layers.XnorLinear, None, layers.XnorConv2d),
    "xnor++": (layers.XnorPlusLinear, None, layers.XnorPlusConv2d),
    "abc": (layers.AbcLinear, None, layers.AbcConv2d),
}


def np_sign(x):
    """sign with sign(0) = +1 (independent of bnnlab)."""
    return np.where(np.asarray(x) >= 0, 1.0, -1.0)


def mlp(sizes=(6, 8, 8, 8, 3)):
    mods = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        mods.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            mods.append(nn.Hardtanh())  # not ReLU: sign(ReLU(x)) = +1 (binarize warns)
    return nn.Sequential(*mods)


def cnn():
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.Hardtanh(),
        nn.Conv2d(4, 6, 3, padding=1, stride=2, bias=False), nn.BatchNorm2d(6),
        nn.Conv2d(6, 6, 3, groups=2, dilation=1), nn.Flatten(),
        nn.Linear(6, 5), nn.Linear(5, 2),
    )


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # these calls must not warn
        return fn(*args, **kwargs)


# ------------------------------------------------------------------------------ families
@pytest.mark.parametrize("family", list(FAMILY_CLASSES))
def test_each_family_replaces_middle_linears_and_copies_weights(family):
    model = mlp()
    before = copy.deepcopy(model.state_dict())
    new, report = quiet(binarize_with_report, model, layer=family)
    cls = FAMILY_CLASSES[family][0]
    # Linears at indices 0, 2, 4, 6: first and last stay float (registration order)
    assert type(new[0]) is nn.Linear and type(new[6]) is nn.Linear
    for i in (2, 4):
        assert type(new[i]) is cls
        torch.testing.assert_close(new[i].weight, model[i].weight, rtol=0, atol=0)
        torch.testing.assert_close(new[i].bias, model[i].bias, rtol=0, atol=0)
        assert new[i].weight is not model[i].weight  # a copy: the original stays independent
    assert report.converted == ["2", "4"]
    assert report.kept == ["0", "6"]
    assert [r.new_type for r in report] == ["Linear", cls.__name__, cls.__name__, "Linear"]
    # the original model is untouched
    assert all(type(model[i]) is nn.Linear for i in (0, 2, 4, 6))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("family", list(FAMILY_CLASSES))
def test_each_family_on_convolutions(family):
    model = nn.Sequential(nn.Conv1d(2, 3, 3), nn.Conv1d(3, 3, 3), nn.Flatten(1, 1),
                          nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 3, padding=1, groups=2),
                          nn.Conv2d(4, 2, 1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        new, report = binarize_with_report(model, layer=family, keep_first=False,
                                           keep_last=False)
    _, conv1d_cls, conv2d_cls = FAMILY_CLASSES[family]
    if conv1d_cls is None:
        assert type(new[0]) is nn.Conv1d and report["0"].status == "unsupported"
        assert "Conv1d" in report["0"].reason
        assert len(caught) == 1 and "left float" in str(caught[0].message)
    else:
        assert type(new[0]) is conv1d_cls and report["0"].converted
        assert not caught
    for i in (3, 4, 5):
        assert type(new[i]) is conv2d_cls
    assert new[4].groups == 2 and new[4].padding == (1, 1) and new[4].kernel_size == (3, 3)
    x = torch.randn(2, 3, 5, 5)  # the 2-D part runs like the float one
    y_new = nn.Sequential(*list(new)[3:])(x)
    y_old = nn.Sequential(*list(model)[3:])(x)
    assert y_new.shape == y_old.shape


def test_binary_layer_computes_sign_formula_with_copied_weights():
    model = mlp((5, 7, 4, 3))
    new = quiet(binarize, model)
    x = torch.randn(6, 7)
    x[0, 0] = 0.0  # sign(0) must be +1
    w, b = model[2].weight.detach().numpy(), model[2].bias.detach().numpy()
    expected = np_sign(x.numpy()) @ np_sign(w).T + b
    np.testing.assert_allclose(new[2](x).detach().numpy(), expected, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("pad_value", [0.0, 1.0, -1.0])
def test_binary_conv_uses_pad_value(pad_value):
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.Conv2d(2, 3, 3, padding=1), nn.Conv2d(3, 1, 1))
    new = quiet(binarize, model, pad_value=pad_value)
    assert new[1].pad_value == pad_value
    x = torch.randn(2, 2, 5, 5)
    xs = torch.from_numpy(np_sign(x.numpy())).float()
    xs = nn.functional.pad(xs, (1, 1, 1, 1), value=pad_value)
    ws = torch.from_numpy(np_sign(model[1].weight.detach().numpy())).float()
    expected = nn.functional.conv2d(xs, ws, model[1].bias)
    torch.testing.assert_close(new[1](x), expected)


def test_float64_eval_and_frozen_layers_keep_dtype_mode_and_requires_grad():
    model = mlp().double().eval()
    model[2].weight.requires_grad_(False)
    new = quiet(binarize, model)
    assert new[2].weight.dtype == torch.float64 and not new[2].training
    assert not new[2].weight.requires_grad and new[4].weight.requires_grad
    assert new[2](torch.randn(3, 8, dtype=torch.float64)).dtype == torch.float64


# ------------------------------------------------------------------------------ first / last
class Reversed(nn.Module):
    """Registers its layers in the opposite order of the forward pass."""

    def __init__(self):
        super().__init__()
        self.out = nn.Linear(8, 2)     # registered first, runs last
        self.hidden = nn.Linear(8, 8)
        self.inp = nn.Linear(4, 8)     # registered last, runs first

    def forward(self, x):
        return self.out(self.hidden(self.inp(x)))


def test_first_and_last_follow_registration_order_not_forward_order():
    new, report = quiet(binarize_with_report, Reversed())
    assert report.kept == ["out", "inp"]
    assert report["out"].reason.startswith("first") and report["inp"].reason.startswith("last")
    assert report.converted == ["hidden"]


@pytest.mark.parametrize("keep_first, keep_last, converted", [
    (True, True, ["2", "4"]), (False, True, ["0", "2", "4"]),
    (True, False, ["2", "4", "6"]), (False, False, ["0", "2", "4", "6"]),
])
def test_keep_first_keep_last(keep_first, keep_last, converted):
    _, report = quiet(binarize_with_report, mlp(), keep_first=keep_first, keep_last=keep_last)
    assert report.converted == converted


def test_first_weight_layer_may_be_unsupported():
    # the first weight layer is a Conv3d: it is "first" (and unsupported); the Conv2d after it
    # is not kept float by keep_first
    model = nn.Sequential(nn.Conv3d(1, 2, 1), nn.Flatten(1, 2), nn.Conv2d(2, 2, 1),
                          nn.Conv2d(2, 2, 1), nn.Conv2d(2, 1, 1))
    with pytest.warns(UserWarning, match="Conv3d"):
        new, report = binarize_with_report(model)
    assert [r.status for r in report] == ["unsupported", "binarized", "binarized", "kept"]
    assert type(new[0]) is nn.Conv3d


def test_single_layer_model():
    new = quiet(binarize, nn.Linear(3, 2), keep_first=False, keep_last=False)
    assert type(new) is layers.BinaryLinear
    new, report = quiet(binarize_with_report, nn.Linear(3, 2))  # first == last: kept
    assert type(new) is nn.Linear and report[""].status == "kept"


# ------------------------------------------------------------------------------ include / exclude
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(4, 8)
        self.features = nn.Sequential(nn.Linear(8, 8), nn.Hardtanh(), nn.Linear(8, 8))
        self.mid = nn.Linear(8, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.mid(self.features(self.stem(x))))


@pytest.mark.parametrize("include, exclude, converted", [
    (None, None, ["features.0", "features.2", "mid"]),
    (["mid"], None, ["mid"]),
    ("features", None, ["features.0", "features.2"]),             # a container selects its layers
    (lambda name, m: name.endswith("2"), None, ["features.2"]),   # predicate
    (None, ["features.0"], ["features.2", "mid"]),
    (None, lambda name, m: m.in_features == 8, []),
    ("features", "features.2", ["features.0"]),                   # exclude wins over include
    (["stem", "mid"], None, ["mid"]),                             # keep_first wins over include
])
def test_include_exclude(include, exclude, converted):
    new, report = quiet(binarize_with_report, Net(), include=include, exclude=exclude)
    assert report.converted == converted
    for row in report:
        mod = new.get_submodule(row.name)
        assert isinstance(mod, layers.BinaryLinear) == (row.name in converted)
    reasons = {r.name: r.reason for r in report}
    if exclude == ["features.0"]:
        assert "exclude" in reasons["features.0"]
    if include == ["mid"]:
        assert "include" in reasons["features.0"]


@pytest.mark.parametrize("argname", ["include", "exclude"])
def test_unknown_names_are_rejected(argname):
    with pytest.raises(ValueError, match=argname):
        binarize(Net(), **{argname: ["featurs.0"]})
    with pytest.raises(TypeError, match=argname):
        binarize(Net(), **{argname: 3})
    with pytest.raises(TypeError, match=argname):
        binarize(Net(), **{argname: [0]})


# ------------------------------------------------------------------------------ unsupported layers
class Zoo(nn.Module):
    def __init__(self):
        super().__init__()
        self.first = nn.Linear(4, 4)
        self.conv3d = nn.Conv3d(1, 1, 1)
        self.deconv = nn.ConvTranspose2d(2, 2, 2)
        self.lstm = nn.LSTM(4, 4)
        self.attn = nn.MultiheadAttention(4, 2)
        self.ok = nn.Linear(4, 4)
        self.last = nn.Linear(4, 2)


def test_unsupported_layers_are_left_alone_reported_and_warned():
    model = Zoo()
    with pytest.warns(UserWarning) as record:
        new, report = binarize_with_report(model)
    assert len(record) == 1
    message = str(record[0].message)
    for name in ("conv3d", "deconv", "lstm", "attn"):
        assert name in message
        assert report[name].status == "unsupported"
        assert type(new.get_submodule(name)) is type(model.get_submodule(name))
    # the attention's inner out_proj is the attention's business: no row of its own
    assert [r.name for r in report] == ["first", "conv3d", "deconv", "lstm", "attn", "ok", "last"]
    assert report.converted == ["ok"]
    assert report.unsupported == ["conv3d", "deconv", "lstm", "attn"]
    assert sum(1 for _ in new.parameters()) == sum(1 for _ in model.parameters())


def test_verbose_prints_instead_of_warning(capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        binarize(Zoo(), verbose=True)
    out = capsys.readouterr().out
    assert "conv3d" in out and "unsupported" in out and "binarized" in out


def test_subclasses_and_lazy_layers_are_not_converted():
    class MyLinear(nn.Linear):
        def forward(self, x):
            return super().forward(x) * 2

    model = nn.Sequential(nn.Linear(3, 3), MyLinear(3, 3), nn.LazyLinear(3), nn.Linear(3, 3),
                          nn.Linear(3, 3))
    with pytest.warns(UserWarning):
        new, report = binarize_with_report(model)
    assert report["1"].status == "unsupported" and "subclass" in report["1"].reason
    assert report["2"].status == "unsupported" and "lazy" in report["2"].reason
    assert type(new[1]) is MyLinear
    assert report.converted == ["3"]


@pytest.mark.parametrize("padding_mode", ["reflect", "circular", "replicate"])
def test_padding_mode_with_nonzero_pad_value_is_unsupported(padding_mode):
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.Conv2d(2, 2, 3, padding=1,
                                                         padding_mode=padding_mode),
                          nn.Conv2d(2, 1, 1))
    with pytest.warns(UserWarning, match="padding_mode"):
        new, report = binarize_with_report(model, pad_value=1.0)
    assert report["1"].status == "unsupported" and type(new[1]) is nn.Conv2d
    # with torch's zero padding semantics (pad_value=0) the layer converts and keeps its mode
    new = quiet(binarize, model, pad_value=0.0)
    assert type(new[1]) is layers.BinaryConv2d and new[1].padding_mode == padding_mode


def test_already_binary_layers_are_left_as_they_are():
    bl = layers.BinaryLinear(4, 4, weight_clip=1.0)
    model = nn.Sequential(nn.Linear(4, 4), bl, nn.Linear(4, 4), nn.Linear(4, 2))
    new, report = quiet(binarize_with_report, model, layer="xnor")
    assert report["1"].status == "already binary"
    assert type(new[1]) is layers.BinaryLinear and new[1].weight_clip == 1.0
    assert type(new[2]) is layers.XnorLinear


# ------------------------------------------------------------------------------ sharing
def test_shared_module_is_converted_once_and_stays_shared():
    shared = nn.Linear(4, 4)
    model = nn.Sequential(nn.Linear(4, 4), shared, nn.Hardtanh(), shared, nn.Linear(4, 2))
    new, report = quiet(binarize_with_report, model)
    assert type(new[1]) is layers.BinaryLinear and new[1] is new[3]
    assert report["1"].aliases == ("3",) and report["3"] is report["1"]
    assert len(report) == 3


def test_tied_parameters_stay_tied():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4))
    model[2].weight = model[1].weight  # weight tying
    new = quiet(binarize, model)
    assert type(new[1]) is layers.BinaryLinear and type(new[2]) is layers.BinaryLinear
    assert new[1].weight is new[2].weight
    n_old = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for p in new.parameters()) == n_old


# ------------------------------------------------------------------------------ quantizers
def test_quantizer_specs():
    q = quantizers.ApproxSign()
    new = quiet(binarize, mlp(), input_quantizer=q, weight_quantizer=quantizers.MagnitudeAwareSign)
    a, b = new[2], new[4]
    assert isinstance(a.input_quantizer, quantizers.ApproxSign)
    assert a.input_quantizer is not q and a.input_quantizer is not b.input_quantizer
    assert isinstance(a.weight_quantizer, quantizers.MagnitudeAwareSign)


def test_rsign_gets_the_layer_channels():
    model = nn.Sequential(nn.Linear(4, 6), nn.Linear(6, 5), nn.Conv1d(5, 3, 1), nn.Linear(3, 2))
    new = quiet(binarize, model, input_quantizer="rsign")
    assert isinstance(new[1].input_quantizer, quantizers.RSign)
    assert new[1].input_quantizer.threshold.shape == (6,)
    assert new[2].input_quantizer.threshold.shape == (5,)


def test_rsign_follows_the_layer_dtype():
    new = quiet(binarize, mlp().double(), input_quantizer="rsign")
    assert new[2].input_quantizer.threshold.dtype == torch.float64


def test_family_without_from_float_is_built_and_weights_copied(monkeypatch):
    class PlainBinary(nn.Linear):  # a family class without from_float
        def __init__(self, in_features, out_features, bias=True, device=None, dtype=None, *,
                     input_quantizer=None, weight_quantizer=None):
            super().__init__(in_features, out_features, bias, device, dtype)
            self.input_quantizer = quantizers.get_quantizer(input_quantizer)
            self.weight_quantizer = quantizers.get_quantizer(weight_quantizer)

    monkeypatch.setattr(layers, "BinaryLinear", PlainBinary)
    model = mlp().double()
    new = quiet(binarize, model)
    assert type(new[2]) is PlainBinary and new[2].weight.dtype == torch.float64
    assert torch.equal(new[2].weight, model[2].weight) and torch.equal(new[2].bias, model[2].bias)
    assert isinstance(new[2].input_quantizer, quantizers.SteSign)


def test_binary_weight_network_and_float_inputs():
    new = quiet(binarize, mlp(), input_quantizer=None)
    assert new[2].input_quantizer is None
    assert isinstance(new[2].weight_quantizer, quantizers.SteSign)


def test_layer_kwargs_reach_the_new_layers():
    new = quiet(binarize, cnn(), layer="abc", layer_kwargs={"num_weight_bases": 2,
                                                           "num_act_bases": 1})
    assert new[2].num_weight_bases == 2 and new[4].num_act_bases == 1
    new = quiet(binarize, cnn(), layer_kwargs={"weight_clip": 1.0})
    assert new[2].weight_clip == 1.0 and new[6].weight_clip == 1.0


def test_abc_from_float_scales_fit_the_copied_weight():
    model = mlp()
    new = quiet(binarize, model, layer="abc", layer_kwargs={"num_weight_bases": 1})
    # one base: alpha = least squares of W on sign(W - mean): must be finite and non-zero
    assert torch.isfinite(new[2].weight_scales).all() and (new[2].weight_scales != 0).all()


# ------------------------------------------------------------------------------ the report
def test_report_table_rows_and_lookup():
    _, report = quiet(binarize_with_report, cnn(), pad_value=1.0)
    assert isinstance(report, ConversionReport) and len(report) == 5
    text = str(report)
    assert "binarize(layer='binary'): 3 of 5 weight layers binarized, 2 kept float" in text
    for needle in ("Layer", "Old type", "New type", "BinaryConv2d", "first weight layer",
                   "last weight layer", "pad_value=1.0"):
        assert needle in text
    rows = report.to_rows()
    assert rows[0] == {"name": "0", "old_type": "Conv2d", "new_type": "Conv2d", "status": "kept",
                       "reason": "first weight layer (keep_first=True)", "aliases": ()}
    assert [r["status"] for r in rows] == ["kept", "binarized", "binarized", "binarized", "kept"]
    with pytest.raises(KeyError):
        report["nope"]


def test_report_of_model_without_weight_layers():
    new, report = quiet(binarize_with_report, nn.Sequential(nn.ReLU()))
    assert len(report) == 0 and "no weight layers" in str(report)
    assert type(new[0]) is nn.ReLU


# ------------------------------------------------------------------------------ bad arguments
@pytest.mark.parametrize("kwargs, exc, argname", [
    ({"layer": "xnor+"}, ValueError, "layer"),
    ({"layer": 1}, TypeError, "layer"),
    ({"keep_first": "yes"}, TypeError, "keep_first"),
    ({"keep_last": None}, TypeError, "keep_last"),
    ({"verbose": 1}, TypeError, "verbose"),
    ({"input_quantizer": "sign"}, ValueError, "input_quantizer"),
    ({"weight_quantizer": 3}, TypeError, "weight_quantizer"),
    ({"pad_value": 0.5}, ValueError, "pad_value"),
    ({"pad_value": float("nan")}, ValueError, "pad_value"),
    ({"pad_value": True}, TypeError, "pad_value"),
    ({"layer_kwargs": {"num_weight_bases": 2}}, ValueError, "layer_kwargs"),
    ({"layer_kwargs": {"pad_value": 1.0}}, ValueError, "layer_kwargs"),
    ({"layer_kwargs": [1]}, TypeError, "layer_kwargs"),
    # settings the layers reject raise at once instead of making every row "unsupported"
    ({"layer": "xnor++", "layer_kwargs": {"gamma_mode": "bogus"}}, ValueError, "gamma_mode"),
    ({"layer": "abc", "layer_kwargs": {"num_weight_bases": 0}}, ValueError, "num_weight_bases"),
    ({"layer_kwargs": {"weight_clip": -1.0}}, ValueError, "weight_clip"),
])
def test_bad_arguments_name_the_argument(kwargs, exc, argname):
    with pytest.raises(exc, match=argname):
        binarize(mlp(), **kwargs)


def test_model_must_be_a_module():
    with pytest.raises(TypeError, match="model"):
        binarize([nn.Linear(2, 2)])
    with pytest.raises(TypeError, match="model"):
        binarize_with_report("model")


def test_layer_error_names_the_choices():
    with pytest.raises(ValueError, match="abc.*binary.*xnor"):
        binarize(mlp(), layer="bnn")


def test_families_table_matches_layers():
    for family, classes in FAMILY_CLASSES.items():
        table = convert.FAMILIES[family]
        for torch_type, cls in zip((nn.Linear, nn.Conv1d, nn.Conv2d), classes, strict=True):
            assert getattr(layers, table[torch_type], None) is cls


# --- the sign(ReLU(x)) = +1 pitfall ------------------------------------------------------------
def _relu_mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(),
                         nn.Dropout(0.1), nn.Linear(16, 16), nn.BatchNorm1d(16), nn.Hardtanh(),
                         nn.Linear(16, 16), nn.ReLU6(), nn.Linear(16, 16), nn.Linear(16, 3))


def test_binarized_layer_after_relu_is_reported_and_warned():
    with pytest.warns(UserWarning, match="never negative") as record:
        new, report = binarize_with_report(_relu_mlp())
    assert len(record) == 1
    message = str(record[0].message)
    assert "5 (after a ReLU)" in message and "10 (after a ReLU6)" in message
    assert report.converted == ["5", "8", "10"]
    assert "follows a ReLU" in report["5"].reason and "follows a ReLU6" in report["10"].reason
    assert report["8"].reason == ""                    # after a Hardtanh: fine
    assert report["1"].reason.startswith("first") and report["11"].reason.startswith("last")
    assert "8 (after" not in message
    # the claim itself: layer 5 gets the same binarised input for every sample
    new.eval()
    x = torch.randn(32, 8)
    seen = []
    hook = new[5].register_forward_hook(lambda m, inp, out: seen.append(out))
    with torch.no_grad():
        new(x)
    hook.remove()
    assert torch.equal(seen[0], seen[0][:1].expand_as(seen[0]))


def test_after_relu_through_pooling_in_a_cnn_but_not_after_a_batchnorm():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(4),
                          nn.Conv2d(4, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 16, 2))
    with pytest.warns(UserWarning, match="never negative") as record:
        _, report = binarize_with_report(model, pad_value=1.0)
    assert "3 (after a ReLU)" in str(record[0].message)
    assert report.converted == ["3", "6"]
    assert report["3"].reason and report["6"].reason == ""


@pytest.mark.parametrize("kwargs", [
    {"input_quantizer": "rsign"}, {"input_quantizer": "stochastic_sign"},
    {"input_quantizer": "ste_heaviside"}, {"input_quantizer": None},
    {"exclude": ["5", "10"]}, {"verbose": True}, {"layer": "abc"},
])
def test_no_relu_warning_when_the_input_can_still_vary_or_nothing_follows_a_relu(kwargs, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, report = binarize_with_report(_relu_mlp(), **kwargs)
    if kwargs.get("verbose"):  # the report, printed, still says it
        assert "follows a ReLU" in capsys.readouterr().out
    elif "exclude" not in kwargs:
        assert all(r.reason == "" for r in report if r.status == "binarized")


@pytest.mark.parametrize("spec", [quantizers.SteSign, quantizers.SteSign(), "approx_sign",
                                  "swish_sign", "scaled_sign"])
def test_relu_warning_for_every_sign_at_zero_spec(spec):
    with pytest.warns(UserWarning, match="never negative"):
        binarize(_relu_mlp(), input_quantizer=spec)


def test_hardtanh_float_model_converts_silently():
    model = nn.Sequential(nn.Linear(8, 16), nn.Hardtanh(), nn.Linear(16, 16), nn.Sigmoid(),
                          nn.BatchNorm1d(16), nn.Linear(16, 16), nn.Linear(16, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        binarize(model)


def test_abc_after_relu_is_not_flagged_because_its_shifted_bases_still_vary():
    model = binarize(_relu_mlp(), layer="abc")
    layer = model[5]
    assert (0.5 - layer.act_shifts).max() > 0          # a base that switches at x > 0 ...
    seen = []
    layer.register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
    model.eval()
    with torch.no_grad():
        model(torch.randn(32, 8))
        bases = layer.input_bases(seen[0])
    assert any(not torch.equal(b, b[:1].expand_as(b)) for b in bases)  # ... varies per sample


# --- issue 8 defect 8 / issue 11 item 6: never-negative inputs found by probing ----------------
class _ResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = BasicBlock(8, 8)
        self.layer2 = BasicBlock(8, 16, 2)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


RESNET_BINARY = ["layer1.conv1", "layer1.conv2", "layer2.conv1", "layer2.conv2",
                 "layer2.downsample.0"]


def test_relu_inside_forward_goes_unnoticed_without_example_input():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, report = binarize_with_report(_ResNet())
    assert report.converted == RESNET_BINARY


def test_probe_finds_every_layer_after_a_relu_in_a_custom_forward():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 8, 8)
    with pytest.warns(UserWarning, match="constant") as record:
        new, report = binarize_with_report(_ResNet(), example_input=x)
    assert len(record) == 1
    message = str(record[0].message)
    for name in RESNET_BINARY:
        assert name in message
        assert "never negative" in report[name].reason and "+1 everywhere" in report[name].reason
    assert report["conv1"].reason.startswith("first")
    assert "example_input" in report.settings
    assert new.training  # the probe restored the mode
    # the claim itself: every binarised input is +1 everywhere on this batch
    seen = []
    for name in RESNET_BINARY:
        layer = new.get_submodule(name)
        layer.register_forward_pre_hook(lambda m, inp: seen.append(m.input_quantizer(inp[0])))
    new.eval()
    with torch.no_grad():
        new(x)
    assert len(seen) == len(RESNET_BINARY) and all(bool((q == 1).all()) for q in seen)


def test_probe_warns_about_data_in_0_1_reaching_a_binarized_first_layer():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.Hardtanh(),
                          nn.Linear(32, 10))
    pixels = torch.rand(16, 1, 8, 8)  # like load_digits scaled to [0, 1]
    with pytest.warns(UserWarning, match="constant") as record:
        _, report = binarize_with_report(model, keep_first=False, example_input=pixels)
    assert "1" in str(record[0].message) and "never negative" in report["1"].reason
    assert report["4"].status == "kept"
    # centred data: silent
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        binarize(model, keep_first=False, example_input=pixels - 0.5)


def test_probe_is_silent_for_hardtanh():
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.Hardtanh(), nn.Linear(16, 16),
                          nn.BatchNorm1d(16), nn.Hardtanh(), nn.Linear(16, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        binarize(model, example_input=torch.randn(8, 8))


def test_probe_on_abc_flags_exactly_the_layers_whose_every_base_is_constant():
    torch.manual_seed(1)
    x = torch.randn(8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        new, report = binarize_with_report(_relu_mlp(), layer="abc", example_input=x)
    inputs = {}
    for name in report.converted:
        new.get_submodule(name).register_forward_pre_hook(
            lambda m, inp, name=name: inputs.__setitem__(name, inp[0]))
    new.eval()
    with torch.no_grad():
        new(x)
    for name in report.converted:
        bases = new.get_submodule(name).input_bases(inputs[name]).reshape(
            new.get_submodule(name).num_act_bases, -1)
        constant = bool((bases == bases[:, :1]).all())
        assert constant == ("everywhere" in report[name].reason), name
    assert "everywhere" not in report["5"].reason  # after a ReLU, but a shifted base still varies


def test_probe_flags_rsign_at_its_initial_threshold_after_a_relu():
    with pytest.warns(UserWarning, match="constant") as record:
        binarize(_relu_mlp(), input_quantizer="rsign", example_input=torch.randn(8, 8))
    assert "5" in str(record[0].message) and "10" in str(record[0].message)


@pytest.mark.parametrize("bad, exc", [([1, 2], TypeError), ("x", TypeError),
                                      (torch.zeros(0, 8), ValueError),
                                      (torch.zeros(4, 5), ValueError)])
def test_example_input_is_validated(bad, exc):
    with pytest.raises(exc, match="example_input"):
        binarize(_relu_mlp(), example_input=bad)


def test_xnor_family_refuses_magnitude_aware_weights_naming_the_layer_class():
    with pytest.raises(ValueError, match="XnorLinear.*alpha twice"):
        binarize(_relu_mlp(), layer="xnor", weight_quantizer="magnitude_aware_sign")
