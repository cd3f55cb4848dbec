"""Tests for bnnlab.analysis against NumPy references written here (never calling the code
under test for the expected values)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from bnnlab import analysis as A
from bnnlab.layers import BinaryConv2d, BinaryLinear, XnorLinear
from bnnlab.quantizers import ApproxSign, MagnitudeAwareSign, RSign, SteHeaviside, SteSign, SwishSign
from bnnlab.train import fit

DT = torch.float64


# --------------------------------------------------------------------------- NumPy references
def np_sign(x):
    return np.where(np.asarray(x) >= 0, 1.0, -1.0)


def np_smoothed_derivative(x, noise, s):
    """2 p(x) of s*eps, written from the textbook densities."""
    if noise == "uniform":
        return np.where(np.abs(x) <= s, 1.0 / (2 * s), 0.0) * 2
    if noise == "normal":
        return 2 * np.exp(-x**2 / (2 * s**2)) / (s * np.sqrt(2 * np.pi))
    if noise == "logistic":
        z = np.exp(-np.abs(x) / s)
        return 2 * z / (s * (1 + z) ** 2)
    return 2 * np.exp(-np.abs(x) / s) / (2 * s)


def np_cosine(a, b):
    a, b = np.ravel(a), np.ravel(b)
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def with_zeros(t):
    t = t.clone()
    t.view(-1)[::5] = 0.0
    return t


def tiny_net():
    return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8),
                         BinaryLinear(8, 8), nn.BatchNorm1d(8),
                         XnorLinear(8, 8), nn.BatchNorm1d(8), nn.Linear(8, 3))


def tiny_data(n=48):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    return x, y


# --------------------------------------------------------------------------- layer selection
def test_binary_layers_finds_exactly_the_quantized_layers():
    net = tiny_net()
    assert list(A.binary_layers(net)) == ["2", "4"]
    assert A.binary_layers(nn.Sequential(nn.Linear(2, 2))) == {}
    with pytest.raises(TypeError, match="model"):
        A.binary_layers("not a model")


# --------------------------------------------------------------------------- sign statistics
def test_fraction_positive_counts_exact_zeros_as_plus_one():
    x = torch.tensor([-1.0, 0.0, -0.0, 2.0, -3.0, 0.0])
    assert A.fraction_positive(x) == pytest.approx(4 / 6)
    w = with_zeros(torch.randn(5, 3, 2, 2))
    expected = (np_sign(w.numpy()) > 0).reshape(5, -1).mean(axis=1)
    np.testing.assert_allclose(A.fraction_positive(w, dim=0), expected)
    a = with_zeros(torch.randn(4, 3, 5))
    expected = (np_sign(a.numpy()) > 0).transpose(1, 0, 2).reshape(3, -1).mean(axis=1)
    np.testing.assert_allclose(A.fraction_positive(a, dim=1), expected)


def test_fraction_positive_rejects_bad_dim_and_empty():
    with pytest.raises(ValueError, match="dim"):
        A.fraction_positive(torch.zeros(2, 2), dim=2)
    with pytest.raises(ValueError, match="x"):
        A.fraction_positive(torch.zeros(0))
    with pytest.raises(TypeError, match="x"):
        A.fraction_positive("abc")


def test_channel_balance_and_flip_distance():
    w = torch.tensor([[1.0, -1.0, 0.0, 2.0], [-1.0, -2.0, -3.0, -0.5]])
    np.testing.assert_allclose(A.channel_balance(w), [0.5, -1.0])
    np.testing.assert_allclose(A.flip_distance(w), np.abs(w.numpy()))


def test_histogram_clips_outliers_into_end_bins_and_keeps_total():
    edges = np.array([-1.0, 0.0, 1.0])
    x = np.array([-5.0, -0.5, 0.0, 0.5, 1.0, 7.0, -1.0])
    np.testing.assert_array_equal(A.histogram(x, edges), [3, 4])
    with pytest.raises(ValueError, match="bins"):
        A.histogram(x, [1.0, 0.0])


def test_collect_preactivations_records_layer_inputs_without_side_effects():
    net = tiny_net()
    net.train()
    x, _ = tiny_data()
    stats_before = net[1].running_mean.clone()
    pre = A.collect_preactivations(net, x)
    assert list(pre) == ["2", "4"]
    with torch.no_grad():
        net.eval()
        expected = net[1](net[0](x))          # what BinaryLinear "2" receives in eval mode
        net.train()
    torch.testing.assert_close(pre["2"], expected)
    assert net.training
    torch.testing.assert_close(net[1].running_mean, stats_before)


def test_sign_stats_matches_numpy():
    net = tiny_net()
    x, _ = tiny_data()
    with torch.no_grad():
        net[2].weight.view(-1)[:3] = 0.0
    st = A.sign_stats(net, x, bins=np.linspace(-1, 1, 5), eps=0.05)["2"]
    w = net[2].weight.detach().numpy()
    assert st.fraction_positive == pytest.approx((w >= 0).mean())
    np.testing.assert_allclose(st.channel_fraction, (w >= 0).mean(axis=1))
    assert st.mean_distance == pytest.approx(np.abs(w).mean())
    assert st.near_flip == pytest.approx((np.abs(w) < 0.05).mean())
    np.testing.assert_array_equal(st.weight_counts,
                                  np.histogram(np.clip(w, -1, 1), np.linspace(-1, 1, 5))[0])
    assert st.input_counts.sum() == 48 * 8
    assert 0.0 <= st.input_fraction_positive <= 1.0


# --------------------------------------------------------------------------- flip ratio
def test_flip_ratio_of_known_tensors():
    prev = torch.tensor([1.0, -2.0, 0.0, 3.0, -0.1, 0.0])
    cur = torch.tensor([0.5, 1.0, -1.0, 3.0, -5.0, 0.0])      # flips at 1 and 2
    assert A.flip_ratio(prev, cur) == pytest.approx(2 / 6)
    assert A.flip_ratio(prev, prev) == 0.0
    assert A.flip_ratio(np.ones(4), -np.ones(4)) == 1.0
    d1 = {"a": torch.ones(2), "b": torch.ones(6)}
    d2 = {"a": -torch.ones(2), "b": torch.ones(6)}
    assert A.flip_ratio(d1, d2) == pytest.approx(2 / 8)


def test_flip_ratio_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="shape"):
        A.flip_ratio(torch.ones(3), torch.ones(4))
    with pytest.raises(ValueError, match="keys"):
        A.flip_ratio({"a": torch.ones(1)}, {"b": torch.ones(1)})


class _Recorder:
    """Stores the signs of layer '2' at every step, to check FlipRatio against NumPy."""

    def __init__(self, net):
        self.signs = [np_sign(net[2].weight.detach().numpy())]

    def on_batch_end(self, batch, loss, model):
        self.signs.append(np_sign(model[2].weight.detach().numpy()))


def test_flip_ratio_callback_per_step_matches_recorded_signs():
    net = tiny_net()
    fr = A.FlipRatio(every="step")
    rec = _Recorder(net)
    fit(net, tiny_data(), epochs=2, lr=0.05, batch_size=16, callbacks=[rec, fr], progress=False)
    expected = [float((a != b).mean()) for a, b in zip(rec.signs[:-1], rec.signs[1:], strict=True)]
    assert fr.steps == list(range(1, 7))
    np.testing.assert_allclose(fr.history["2"], expected)
    assert max(expected) > 0                       # lr 0.05 does flip some signs
    assert len(fr.total) == 6 and set(fr.history) == {"2", "4"}


def test_flip_ratio_callback_per_epoch():
    net = tiny_net()
    fr = A.FlipRatio(every="epoch", layers=["4"])
    w0 = np_sign(net[4].weight.detach().numpy())
    fit(net, tiny_data(), epochs=1, lr=0.05, batch_size=16, callbacks=[fr], progress=False)
    w1 = np_sign(net[4].weight.detach().numpy())
    assert fr.steps == [1]
    assert fr.history["4"] == [pytest.approx(float((w0 != w1).mean()))]
    with pytest.raises(ValueError, match="every"):
        A.FlipRatio(every="batch")


def test_sign_stats_callback_records_snapshots_with_fixed_bins():
    net = tiny_net()
    x, _ = tiny_data()
    cb = A.SignStats(probe=x[:8], bins=np.linspace(-1, 1, 11))
    fit(net, tiny_data(), epochs=2, lr=0.01, batch_size=16, callbacks=[cb], progress=False)
    h = cb.history
    assert h.epochs == [0, 1, 2]
    assert set(h.layers) == {"2", "4"}
    counts = h.series("2", "weight_counts")
    assert len(counts) == 3 and all(c.sum() == 64 for c in counts)
    w = net[2].weight.detach().numpy()
    assert h.series("2", "fraction_positive")[-1] == pytest.approx((w >= 0).mean())
    assert all(c.sum() == 8 * 8 for c in h.series("4", "input_counts"))
    np.testing.assert_allclose(h.centers, np.linspace(-0.9, 0.9, 10))


# --------------------------------------------------------------------------- function level
@pytest.mark.parametrize("noise", A.NOISES)
@pytest.mark.parametrize("s", [0.5, 1.0, 2.0])
def test_smoothed_derivative_matches_density_and_integrates_to_two(noise, s):
    x = np.linspace(-40 * s, 40 * s, 200_001)
    d = A.smoothed_sign_derivative(x, noise, s)
    np.testing.assert_allclose(d, np_smoothed_derivative(x, noise, s), rtol=1e-12, atol=1e-300)
    assert np.trapezoid(d, x) == pytest.approx(2.0, abs=2e-3 if noise == "uniform" else 1e-6)


@pytest.mark.parametrize("noise", A.NOISES)
def test_smoothed_sign_is_the_expectation_and_its_derivative(noise):
    # Monte Carlo E[sign(x + s eps)] vs the closed form; finite differences vs the derivative.
    rng = np.random.default_rng(0)
    draw = {"uniform": lambda n: rng.uniform(-1, 1, n), "normal": rng.standard_normal,
            "logistic": lambda n: rng.logistic(0, 1, n), "laplace": lambda n: rng.laplace(0, 1, n)}
    s, xs = 0.7, np.array([-1.0, -0.3, 0.0, 0.2, 0.9])
    eps = draw[noise](200_000)
    mc = np.array([np_sign(x + s * eps).mean() for x in xs])
    np.testing.assert_allclose(A.smoothed_sign(xs, noise, s), mc, atol=0.01)
    x = np.linspace(-3, 3, 601)[1:-1] + 1e-3
    h = 1e-5
    fd = (A.smoothed_sign(x + h, noise, s) - A.smoothed_sign(x - h, noise, s)) / (2 * h)
    keep = np.abs(np.abs(x) - s) > 2 * h if noise == "uniform" else slice(None)
    np.testing.assert_allclose(fd[keep], np_smoothed_derivative(x, noise, s)[keep], atol=1e-5)


def test_smoothed_sign_rejects_bad_arguments():
    with pytest.raises(ValueError, match="noise"):
        A.smoothed_sign_derivative(np.zeros(2), "cauchy", 1.0)
    with pytest.raises(ValueError, match="scale"):
        A.smoothed_sign(np.zeros(2), "normal", 0.0)


def test_surrogate_curves_reads_the_surrogate_through_autograd():
    x = torch.tensor([-1.5, -1.0, -0.2, 0.0, 0.7, 1.0, 1.2], dtype=DT)
    q, g = A.surrogate_curves(SteSign(clip_value=1.0), x)
    np.testing.assert_array_equal(q, np_sign(x.numpy()))
    np.testing.assert_array_equal(g, (np.abs(x.numpy()) <= 1).astype(float))
    q, g = A.surrogate_curves("approx_sign", x)
    np.testing.assert_allclose(g, np.clip(2 - 2 * np.abs(x.numpy()), 0, None))


@pytest.mark.parametrize("c", [0.5, 1.0, 2.0])
def test_ste_clip_c_against_uniform_noise_s_equal_c(c):
    # Shapes always agree (normalize=True); raw curves agree only at c = s = 1 (the STE
    # integrates to 2c, the smoothed derivative to 2), and then differ by 2|c - 1| otherwise.
    assert A.surrogate_mismatch(SteSign(clip_value=c), "uniform", c, normalize=True) == 0.0
    raw = A.surrogate_mismatch(SteSign(clip_value=c), "uniform", c)
    assert raw == pytest.approx(2 * abs(c - 1), abs=2e-3)


def test_mismatch_of_ste_against_normal_noise_matches_numpy_integral():
    x = np.linspace(-8, 8, 400_001)
    sigma = 0.6
    expected = np.trapezoid(np.abs((np.abs(x) <= 1) - np_smoothed_derivative(x, "normal", sigma)),
                            x)
    got = A.surrogate_mismatch(SteSign(), "normal", sigma)
    assert got == pytest.approx(expected, abs=2e-3)


def test_mismatch_of_approx_sign_against_numpy_and_its_best_scale():
    # ApproxSign's triangle (2 - 2|x|) is exactly 2p of U[-1/2, 1/2] + U[-1/2, 1/2]; among
    # normals, one of std 1/sqrt(6) (the same variance) is much closer than a wide one.
    x = np.linspace(-12, 12, 600_001)
    tri = np.clip(2 - 2 * np.abs(x), 0, None)
    for s in (1 / math.sqrt(6), 2.0):
        expected = np.trapezoid(np.abs(tri - np_smoothed_derivative(x, "normal", s)), x)
        assert A.surrogate_mismatch(ApproxSign(), "normal", s) == pytest.approx(expected, abs=2e-3)
    assert (A.surrogate_mismatch(ApproxSign(), "normal", 1 / math.sqrt(6))
            < 0.25 * A.surrogate_mismatch(ApproxSign(), "normal", 2.0))


def test_mismatch_curves_scales_heaviside_reference_by_half():
    out = A.mismatch_curves(SteHeaviside(clip_value=1.0), "uniform", 1.0)
    inside = np.abs(out["x"]) <= 1
    np.testing.assert_allclose(out["smoothed"][inside], 0.5)
    assert out["mismatch"] == pytest.approx(1.0, abs=2e-3)     # |1 - 1/2| over [-1, 1]


def test_make_quantizer_and_its_errors():
    assert isinstance(A.make_quantizer("swish_sign", beta=3.0), SwishSign)
    assert A.make_quantizer("swish_sign", beta=3.0).beta == 3.0
    assert A.make_quantizer("ste_sign", clip_value=0.5).clip_value == 0.5
    with pytest.raises(ValueError, match="name"):
        A.make_quantizer("nope")


# --------------------------------------------------------------------------- network level
def _linear_case(n_in=5, n_out=4, clip=1.0):
    """One BinaryLinear with float input and binary weights, under a loss linear in its output:
    L = sum(v * (x W_b^T)), so dL/dW_b = v^T x whatever the forward values are."""
    layer = BinaryLinear(n_in, n_out, bias=False, input_quantizer=None,
                         weight_quantizer=SteSign(clip_value=clip), dtype=DT)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(7, n_in, generator=g, dtype=DT)
    v = torch.randn(7, n_out, generator=g, dtype=DT)
    loss = lambda out, target: (out * target).sum()   # noqa: E731
    return layer, x, v, loss


def test_ste_and_relaxed_gradients_match_numpy_formulas():
    layer, x, v, loss = _linear_case()
    with torch.no_grad():
        layer.weight[0, 0] = 1.5                                      # outside the clip
    w, G = layer.weight.detach().numpy(), v.numpy().T @ x.numpy()     # dL/dW_b
    ste = A.latent_gradients(layer, x, v, loss=loss)[""]
    np.testing.assert_allclose(ste.numpy(), G * (np.abs(w) <= 1))
    beta = 2.5
    rel = A.relaxed_gradients(layer, x, v, beta, loss=loss)[""]
    np.testing.assert_allclose(rel.numpy(), G * beta / np.cosh(beta * w) ** 2, rtol=1e-12)
    assert isinstance(layer.weight_quantizer, SteSign)               # put back
    assert layer.weight.grad is None                                 # no side effect


def test_relaxed_cosine_tends_to_one_as_beta_tends_to_zero():
    # beta sech^2(beta W) -> beta uniformly, so the relaxed gradient -> beta * G, and with every
    # |W| <= 1 the STE gradient is G: the cosine similarity tends to 1 (lower for large beta).
    layer, x, v, loss = _linear_case()
    assert layer.weight.abs().max() <= 1
    res = A.gradient_mismatch(layer, x, v, betas=(1e-3, 1.0, 20.0), loss=loss)
    cos = {k: r[""]["cosine"] for k, r in res.items()}
    assert cos["tanh β=0.001"] == pytest.approx(1.0, abs=1e-6)
    assert cos["tanh β=20"] < cos["tanh β=1"] < cos["tanh β=0.001"]
    G, w = v.numpy().T @ x.numpy(), layer.weight.detach().numpy()
    assert cos["tanh β=20"] == pytest.approx(np_cosine(G, G * 20 / np.cosh(20 * w) ** 2))
    ratio = res["tanh β=0.001"][""]["norm_ratio"]
    assert ratio == pytest.approx(1e3, rel=1e-5)                       # ||G|| / ||beta G||


def test_gradient_similarity_against_numpy():
    a, b = torch.tensor([1.0, 2.0, -1.0]), torch.tensor([2.0, 1.0, 0.0])
    out = A.gradient_similarity(a, b)
    assert out["cosine"] == pytest.approx(np_cosine(a.numpy(), b.numpy()))
    assert out["rel_error"] == pytest.approx(np.linalg.norm(b - a) / np.linalg.norm(a))
    assert out["norm_ratio"] == pytest.approx(np.linalg.norm(b) / np.linalg.norm(a))
    assert math.isnan(A.gradient_similarity(torch.zeros(3), b)["cosine"])
    with pytest.raises(ValueError, match="shape"):
        A.gradient_similarity(torch.zeros(3), torch.zeros(4))


def test_monte_carlo_smoothed_gradient_is_unbiased_in_a_closed_form_case():
    # L(W) = sum G * sign(W): the Gaussian-smoothed loss is sum G * erf(W / (sigma sqrt 2)),
    # its gradient G * 2 phi(W / sigma) / sigma.
    layer, x, v, loss = _linear_case(n_in=3, n_out=2)
    sigma = 0.5
    G, w = v.numpy().T @ x.numpy(), layer.weight.detach().numpy()
    truth = G * 2 * np.exp(-(w / sigma) ** 2 / 2) / (sigma * np.sqrt(2 * np.pi))
    est, se = A.smoothed_gradients(layer, x, v, sigma=sigma, n_samples=3000, loss=loss,
                                   generator=torch.Generator().manual_seed(0), return_stderr=True)
    est, se = est[""].numpy(), se[""].numpy()
    assert np.all(np.abs(est - truth) <= 5 * se)
    assert np_cosine(est, truth) > 0.98
    assert np.all(se < 0.2 * np.abs(truth).max())
    torch.testing.assert_close(layer.weight.detach(), torch.as_tensor(w))   # weights restored


def test_smoothed_gradients_rejects_bad_arguments():
    layer, x, v, loss = _linear_case()
    with pytest.raises(ValueError, match="sigma"):
        A.smoothed_gradients(layer, x, v, sigma=0.0, loss=loss)
    with pytest.raises(ValueError, match="n_samples"):
        A.smoothed_gradients(layer, x, v, n_samples=1, loss=loss)


def test_tanh_relaxation_of_magnitude_aware_and_rsign():
    w = torch.randn(3, 4, dtype=DT)
    beta = 1.7
    out = A.TanhRelaxation(MagnitudeAwareSign(), beta)(w)
    alpha = w.abs().mean(dim=1, keepdim=True)
    torch.testing.assert_close(out, alpha * torch.tanh(beta * w))
    rs = RSign(3)
    with torch.no_grad():
        rs.threshold.copy_(torch.tensor([0.1, -0.2, 0.3]))
    a = torch.randn(2, 3, 4, 4)
    out = A.TanhRelaxation(rs, beta)(a)
    torch.testing.assert_close(out, torch.tanh(beta * (a - rs.threshold.detach().view(1, 3, 1, 1))))
    with pytest.raises(ValueError, match="beta"):
        A.TanhRelaxation(SteSign(), 0.0)


def test_relaxed_context_restores_quantizers_even_on_error():
    conv = BinaryConv2d(2, 3, 3)
    q_in, q_w = conv.input_quantizer, conv.weight_quantizer
    with pytest.raises(RuntimeError):
        with A.relaxed(conv, 2.0):
            assert isinstance(conv.weight_quantizer, A.TanhRelaxation)
            raise RuntimeError
    assert conv.input_quantizer is q_in and conv.weight_quantizer is q_w


def test_gradient_mismatch_has_no_side_effects_in_train_or_eval_mode():
    net = tiny_net()
    x, y = tiny_data()
    net.eval()
    fit_free = {k: v.clone() for k, v in net.state_dict().items()}
    net[2].weight.grad = torch.ones_like(net[2].weight)
    for train in (True, False):
        res = A.gradient_mismatch(net, x, y, betas=(2.0,), mc_samples=3, train=train)
        assert set(res) == {"tanh β=2", "mc σ=0.1"} and set(res["tanh β=2"]) == {"2", "4"}
    assert not net.training
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, fit_free[k])                    # BN statistics untouched
    torch.testing.assert_close(net[2].weight.grad, torch.ones_like(net[2].weight))
    assert net[4].weight.grad is None


def test_gradient_mismatch_callback_tracks_training():
    net = tiny_net()
    x, y = tiny_data()
    gm = A.GradientMismatch(x[:16], y[:16], betas=(1.0, 5.0), mc_samples=4)
    fit(net, (x, y), epochs=2, lr=0.01, batch_size=16, callbacks=[gm], progress=False)
    assert gm.epochs == [0, 1, 2]
    assert gm.references == ["tanh β=1", "tanh β=5", "mc σ=0.1"]
    assert gm.layer_names == ["2", "4"]
    series = gm.series("cosine", "tanh β=5", "2")
    assert len(series) == 3 and all(-1 <= c <= 1 for c in series)
    mean = gm.series("cosine", "tanh β=5")
    expected = [np.mean([r["tanh β=5"][n]["cosine"] for n in ("2", "4")]) for r in gm.results]
    np.testing.assert_allclose(mean, expected)
    with pytest.raises(ValueError, match="metric"):
        gm.series("angle")


def test_abc_flip_ratio_counts_flips_of_its_shifted_bases_not_of_w():
    # issue 8: the figure's caption says "binary weights"; for ABC-Net those are the M bases
    from bnnlab.layers import AbcLinear
    layer = AbcLinear(4, 1, bias=False, num_weight_bases=1, num_act_bases=1)
    model = torch.nn.Sequential(layer)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))  # bases sign(W - 2.5): - - + +
    before = A.weight_signs(model)
    assert before["0"].shape == (1, 1, 4) and before["0"].flatten().tolist() == [-1, -1, 1, 1]
    with torch.no_grad():
        layer.weight[0, 3] = 10.0  # sign(W) unchanged; the mean moves to 4: - - - +
    after = A.weight_signs(model)
    assert after["0"].flatten().tolist() == [-1, -1, -1, 1]
    assert A.flip_ratio(before, after) == 0.25
    assert A.flip_ratio(torch.tensor([1.0, 2, 3, 4]), torch.tensor([1.0, 2, 3, 10])) == 0.0
