r"""Looking inside a binary network: sign statistics, flip ratio and gradient mismatch.

Pure functions (tensors in, numbers/arrays out) and :func:`bnnlab.train.fit` callbacks that
record them during training; :mod:`bnnlab.plots` draws them and :mod:`bnnlab.widgets` makes them
interactive. Nothing here imports plotly or ipywidgets.

Three questions, three groups:

* **What do the signs look like?** :func:`fraction_positive`, :func:`channel_balance`,
  :func:`flip_distance`, :func:`histogram`, :func:`collect_preactivations`, :func:`sign_stats`
  and the :class:`SignStats` callback (per-epoch snapshots for the sign-distribution explorer).
* **Are the binary weights still moving?** :func:`flip_ratio` and the :class:`FlipRatio` callback
  (larq's ``flip_ratio`` metric: share of binary weights whose sign changed since the last look).
* **How wrong is the fake gradient?** At the level of one function, the surrogate
  :math:`\tilde q'(x)` of a quantizer is compared with the derivative of the smoothed forward
  :math:`\frac{d}{dx}\mathbb{E}[\operatorname{sign}(x + s\varepsilon)] = 2 p_\varepsilon(x)`
  (:func:`smoothed_sign_derivative`, :func:`surrogate_mismatch`). At the level of a network, the
  STE gradient of the loss w.r.t. each layer's latent weights is compared with the gradient of a
  :math:`\tanh(\beta x)`-relaxed twin and with a Monte-Carlo estimate of the gradient of the
  stochastically smoothed network (:func:`gradient_mismatch`, the :class:`GradientMismatch`
  callback).

Conventions: :math:`\operatorname{sign}(0) = +1` (:func:`bnnlab.functional.sign`); "binary
layers" are the modules exposing a ``weight_quantizer`` or ``input_quantizer`` attribute
(:func:`binary_layers`); weights are in torch layout, output channel first (dim 0), activations
have their channel at dim 1.

References:
    Courbariaux et al., *Binarized Neural Networks*, 2016, arXiv:1602.02830 (STE, stochastic
    binarisation); Helwegen et al., *Latent Weights Do Not Exist*, NeurIPS 2019,
    arXiv:1906.02107 (flip ratio; larq's ``FlipRatio`` metric); Liu et al., *Bi-Real Net*, ECCV
    2018, arXiv:1808.00278 (ApproxSign as a closer fit to sign); Yin et al., *Understanding
    Straight-Through Estimator in Training Activation Quantized Neural Nets*, ICLR 2019,
    arXiv:1903.05662 (coarse gradient vs. true gradient of the expected loss); Nesterov and
    Spokoiny, *Random Gradient-Free Minimization of Convex Functions*, 2017 (Gaussian smoothing
    estimator).
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from bnnlab import quantizers as Q
from bnnlab._validation import check_choice, check_instance, check_real
from bnnlab.functional import sign

__all__ = [
    # selection
    "binary_layers",
    # sign statistics
    "DEFAULT_BINS",
    "fraction_positive",
    "channel_balance",
    "flip_distance",
    "histogram",
    "collect_preactivations",
    "LayerSignStats",
    "sign_stats",
    "SignHistory",
    "SignStats",
    # flip ratio
    "weight_signs",
    "flip_ratio",
    "FlipRatio",
    # function-level gradient mismatch
    "NOISES",
    "smoothed_sign",
    "smoothed_sign_derivative",
    "surrogate_curves",
    "surrogate_mismatch",
    "mismatch_curves",
    "EXPLORER_QUANTIZERS",
    "make_quantizer",
    # network-level gradient mismatch
    "TanhRelaxation",
    "relaxed",
    "latent_gradients",
    "relaxed_gradients",
    "smoothed_gradients",
    "gradient_similarity",
    "gradient_mismatch",
    "GradientMismatch",
]


# =============================================================================================
# Helpers and layer selection
# =============================================================================================
def _as_tensor(x, argname: str) -> Tensor:
    if isinstance(x, Tensor):
        return x.detach()
    if isinstance(x, np.ndarray) or isinstance(x, (list, tuple, float, int)):
        return torch.as_tensor(np.asarray(x, dtype=np.float64))
    raise TypeError(f"{argname} must be a tensor or an array, got {type(x).__name__}")


def binary_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The binary layers of ``model``, by name, in ``named_modules()`` order.

    A binary layer is any module exposing an ``input_quantizer`` or ``weight_quantizer``
    attribute that is not ``None`` (every layer of :mod:`bnnlab.layers`; duck typing, so user
    layers that follow the same convention count too).

    Args:
        model: the network.

    Returns:
        ``{name: module}``; empty for a float model (a model that is itself a binary layer is
        listed under the name ``""``, as in ``named_modules()``).
    """
    check_instance(model, "model", nn.Module)
    out: dict[str, nn.Module] = {}
    for name, m in model.named_modules():
        if (getattr(m, "weight_quantizer", None) is not None
                or getattr(m, "input_quantizer", None) is not None):
            out[name] = m
    return out


def _select(model: nn.Module, layers, *, need_weight: bool) -> dict[str, nn.Module]:
    """Resolve a ``layers=`` argument: None (all binary layers), names, or a dict."""
    found = binary_layers(model)
    if layers is None:
        chosen = found
    elif isinstance(layers, Mapping):
        chosen = dict(layers)
    else:
        if isinstance(layers, str):
            layers = [layers]
        modules = dict(model.named_modules())
        chosen = {}
        for name in layers:
            if name not in modules:
                raise ValueError(f"layers: no module named {name!r} in the model "
                                 f"(binary layers: {', '.join(found) or 'none'})")
            chosen[name] = modules[name]
    if need_weight:
        chosen = {n: m for n, m in chosen.items()
                  if isinstance(getattr(m, "weight", None), Tensor)
                  and getattr(m, "weight_quantizer", None) is not None}
    return chosen


def _check_edges(bins) -> np.ndarray:
    edges = np.asarray(bins, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2 or not np.all(np.diff(edges) > 0):
        raise ValueError("bins must be a 1-D increasing sequence of at least 2 bin edges")
    return edges


# =============================================================================================
# Sign statistics
# =============================================================================================
#: Fixed bin edges for latent-weight histograms: 60 bins of width 0.05 on [-1.5, 1.5].
DEFAULT_BINS = np.linspace(-1.5, 1.5, 61)


def fraction_positive(x, dim: int | None = None):
    r"""Share of entries that binarise to +1: :math:`\frac{1}{n}\sum \mathbb{1}\{x \ge 0\}`.

    Exact zeros count as +1 (:math:`\operatorname{sign}(0) = +1`).

    Args:
        x: tensor or array.
        dim: ``None`` for one number over all entries, or the channel dim: one value per index
            of that dim, averaged over all the other dims (``0`` for weights ``(C_out, ...)``,
            ``1`` for activations ``(N, C, ...)``).

    Returns:
        A float (``dim=None``) or a 1-D ``np.ndarray`` of length ``x.shape[dim]``.

    Examples::

        >>> fraction_positive(torch.tensor([-1.0, 0.0, 2.0, -3.0]))
        0.5
    """
    t = _as_tensor(x, "x")
    if t.numel() == 0:
        raise ValueError("x is empty")
    pos = (sign(t.double()) > 0).double()
    if dim is None:
        return float(pos.mean())
    if isinstance(dim, bool) or not isinstance(dim, int) or not -t.ndim <= dim < t.ndim:
        raise ValueError(f"dim must be an int in [-{t.ndim}, {t.ndim}), got {dim!r}")
    return pos.movedim(dim, 0).reshape(t.shape[dim], -1).mean(dim=1).numpy()


def channel_balance(x, dim: int = 0) -> np.ndarray:
    r"""Balance of the signs per channel: :math:`b_c = \operatorname{mean}\,\operatorname{sign}(x_c)
    = 2 p_c - 1 \in [-1, 1]`.

    0 is a perfectly balanced channel (as many +1 as −1, the maximum-entropy state that
    binarised weights should reach); ±1 is a channel stuck at one sign.

    Args:
        x: tensor or array.
        dim: channel dim (``0`` for weights, ``1`` for activations). Default: ``0``.

    Returns:
        ``np.ndarray`` of length ``x.shape[dim]``.
    """
    return 2.0 * fraction_positive(x, dim=dim) - 1.0


def flip_distance(w) -> np.ndarray:
    r"""Distance of each latent weight to its flip point: :math:`|W|`.

    A sign-binarised weight flips when its latent value crosses 0; the smaller :math:`|W|`, the
    smaller the update that flips it (the weights near 0 are the "unstable" ones; with weight
    clip :math:`c` the largest possible distance is :math:`c`).

    Returns:
        ``np.ndarray`` (float64) of the same shape as ``w``.
    """
    return _as_tensor(w, "w").double().abs().numpy()


def histogram(x, bins=DEFAULT_BINS) -> np.ndarray:
    """Counts of ``x`` in fixed bins; values outside the range go into the first/last bin.

    Clipping keeps ``counts.sum() == x.size`` and bins identical across epochs (what the
    sign-distribution explorer's slider needs). Bins are ``[e_i, e_{i+1})``, the last one closed.

    Args:
        x: tensor or array (flattened).
        bins: increasing bin edges. Default: :data:`DEFAULT_BINS`.

    Returns:
        ``np.ndarray`` of int64 counts, length ``len(bins) - 1``.
    """
    edges = _check_edges(bins)
    v = _as_tensor(x, "x").double().reshape(-1).numpy()
    v = v[~np.isnan(v)]
    counts, _ = np.histogram(np.clip(v, edges[0], edges[-1]), bins=edges)
    return counts.astype(np.int64)


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    was = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was)


@torch.no_grad()
def collect_preactivations(model: nn.Module, x: Tensor, layers=None) -> dict[str, Tensor]:
    """Inputs of the binary layers on a probe batch, before their input quantizer.

    Registers a forward pre-hook on each layer, runs ``model(x)`` in eval mode and without
    gradients (batch-norm statistics are not touched; the training flag is restored), then
    removes the hooks. The recorded tensor is what the layer received, i.e. what its
    ``input_quantizer`` is about to binarise (for ReActNet's RSign the threshold is not yet
    subtracted).

    Args:
        model: the network.
        x: a probe batch.
        layers: ``None`` (all :func:`binary_layers`) or an iterable of module names.

    Returns:
        ``{name: detached tensor}`` (the first call's input if a layer runs several times).
    """
    check_instance(model, "model", nn.Module)
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a tensor, got {type(x).__name__}")
    chosen = _select(model, layers, need_weight=False)
    seen: dict[str, Tensor] = {}

    def hook_for(name):
        def hook(module, args):
            if name not in seen and args and isinstance(args[0], Tensor):
                seen[name] = args[0].detach().clone()
        return hook

    handles = [m.register_forward_pre_hook(hook_for(n)) for n, m in chosen.items()]
    try:
        with _eval_mode(model):
            model(x)
    finally:
        for h in handles:
            h.remove()
    return {n: seen[n] for n in chosen if n in seen}


@dataclass
class LayerSignStats:
    """Sign statistics of one binary layer (what :func:`sign_stats` returns per layer).

    Attributes:
        fraction_positive: share of latent weights with :math:`W \\ge 0`.
        channel_fraction: the same per output channel (dim 0), ``np.ndarray``.
        balance: :func:`channel_balance` of the weights, ``np.ndarray``.
        mean_distance: mean :math:`|W|` (distance to the flip point).
        near_flip: share of weights with :math:`|W| <` ``eps``.
        weight_counts: :func:`histogram` of the latent weights on ``edges``.
        edges: the bin edges.
        input_fraction_positive: share of pre-activations :math:`\\ge 0` (``nan`` without probe).
        input_channel_fraction: the same per input channel (dim 1), or ``None``.
        input_counts: histogram of the pre-activations on ``edges``, or ``None``.
    """

    fraction_positive: float
    channel_fraction: np.ndarray
    balance: np.ndarray
    mean_distance: float
    near_flip: float
    weight_counts: np.ndarray
    edges: np.ndarray
    input_fraction_positive: float = math.nan
    input_channel_fraction: np.ndarray | None = None
    input_counts: np.ndarray | None = None


def sign_stats(model: nn.Module, x: Tensor | None = None, *, bins=DEFAULT_BINS, layers=None,
               eps: float = 1e-2) -> dict[str, LayerSignStats]:
    """Sign statistics of every binary layer's latent weights (and inputs, given a probe batch).

    Args:
        model: the network.
        x: optional probe batch; if given, the layers' pre-activations are collected with
            :func:`collect_preactivations` and summarised too.
        bins: histogram bin edges (weights and pre-activations). Default: :data:`DEFAULT_BINS`.
        layers: ``None`` (all binary layers with a weight quantizer) or module names.
        eps: threshold of :attr:`LayerSignStats.near_flip`. Default: ``1e-2``.

    Returns:
        ``{name: LayerSignStats}``.
    """
    check_instance(model, "model", nn.Module)
    edges = _check_edges(bins)
    if not (isinstance(eps, (int, float)) and eps >= 0):
        raise ValueError(f"eps must be a float >= 0, got {eps!r}")
    chosen = _select(model, layers, need_weight=True)
    pre = collect_preactivations(model, x, list(chosen)) if x is not None else {}
    out = {}
    for name, m in chosen.items():
        w = cast(Tensor, m.weight).detach()
        dist = flip_distance(w)
        st = LayerSignStats(
            fraction_positive=fraction_positive(w),
            channel_fraction=fraction_positive(w, dim=0),
            balance=channel_balance(w, dim=0),
            mean_distance=float(dist.mean()),
            near_flip=float((dist < eps).mean()),
            weight_counts=histogram(w, edges),
            edges=edges,
        )
        if name in pre:
            a = pre[name]
            st.input_fraction_positive = fraction_positive(a)
            st.input_channel_fraction = fraction_positive(a, dim=1) if a.ndim >= 2 else None
            st.input_counts = histogram(a, edges)
        out[name] = st
    return out


@dataclass
class SignHistory:
    """Per-epoch sign statistics recorded by :class:`SignStats`.

    Attributes:
        edges: the fixed histogram bin edges.
        epochs: the epoch of each snapshot (0 = before training).
        layers: ``{name: {key: [one value per snapshot]}}`` with keys ``"weight_counts"``
            (``np.ndarray`` of counts), ``"fraction_positive"`` (float), ``"channel_fraction"``
            (``np.ndarray``), ``"mean_distance"``, ``"near_flip"`` and, with a probe batch,
            ``"input_counts"`` and ``"input_fraction_positive"``.
    """

    edges: np.ndarray
    epochs: list[int] = field(default_factory=list)
    layers: dict[str, dict[str, list]] = field(default_factory=dict)

    @property
    def centers(self) -> np.ndarray:
        """Bin centres (for bar plots)."""
        return (self.edges[:-1] + self.edges[1:]) / 2

    def series(self, layer: str, key: str = "fraction_positive") -> list:
        """One key of one layer over the snapshots."""
        if layer not in self.layers:
            raise ValueError(f"layer must be one of {list(self.layers)}, got {layer!r}")
        if key not in self.layers[layer]:
            raise ValueError(f"key must be one of {list(self.layers[layer])}, got {key!r}")
        return self.layers[layer][key]


class SignStats:
    """:func:`bnnlab.train.fit` callback: a :func:`sign_stats` snapshot before training and
    after every ``every``-th epoch, kept in :attr:`history` (a :class:`SignHistory`).

    Args:
        probe: optional input batch; if given, pre-activation histograms are recorded too
            (one extra forward pass in eval mode per snapshot).
        bins: fixed histogram bin edges. Default: :data:`DEFAULT_BINS`.
        layers: ``None`` (all binary layers with a weight quantizer) or module names.
        every: snapshot every ``every`` epochs. Default: ``1``.

    Examples::

        >>> stats = SignStats()
        >>> fit(net, ds, epochs=3, callbacks=[stats], progress=False)
        >>> stats.history.epochs
        [0, 1, 2, 3]
    """

    stop_training = False

    def __init__(self, probe: Tensor | None = None, *, bins=DEFAULT_BINS, layers=None,
                 every: int = 1) -> None:
        if probe is not None and not isinstance(probe, Tensor):
            raise TypeError(f"probe must be a tensor or None, got {type(probe).__name__}")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive int, got {every!r}")
        self.probe, self.layers, self.every = probe, layers, every
        self.history = SignHistory(edges=_check_edges(bins))

    def snapshot(self, model: nn.Module, epoch: int) -> None:
        """Record the statistics of ``model`` as epoch ``epoch``."""
        stats = sign_stats(model, self.probe, bins=self.history.edges, layers=self.layers)
        h = self.history
        h.epochs.append(int(epoch))
        for name, st in stats.items():
            rec = h.layers.setdefault(name, {})
            values = {"weight_counts": st.weight_counts,
                      "fraction_positive": st.fraction_positive,
                      "channel_fraction": st.channel_fraction,
                      "mean_distance": st.mean_distance, "near_flip": st.near_flip}
            if st.input_counts is not None:
                values["input_counts"] = st.input_counts
                values["input_fraction_positive"] = st.input_fraction_positive
            for key, v in values.items():
                rec.setdefault(key, []).append(v)

    def on_train_begin(self, model, history) -> None:
        if not self.history.epochs:
            self.snapshot(model, 0)

    def on_epoch_end(self, epoch, history, model) -> None:
        if epoch % self.every == 0:
            self.snapshot(model, epoch)


# =============================================================================================
# Flip ratio
# =============================================================================================
@torch.no_grad()
def weight_signs(model: nn.Module, layers=None) -> dict[str, Tensor]:
    """Signs (int8, ±1) of the latent weights of the binary layers.

    The sign of the latent weight is the sign of the binary weight for every sign-type weight
    quantizer (``ste_sign``, ``magnitude_aware_sign`` and XNOR-Net's :math:`\\alpha\\,
    \\operatorname{sign}(W)` with :math:`\\alpha > 0`). ABC-Net's binary weights are its
    :math:`M` shifted bases :math:`\\operatorname{sign}(W - \\bar W + u_m \\sigma_W)`, which flip
    at other points than :math:`W`: for an ABC-Net layer these are the signs returned, shape
    ``(M, *weight.shape)``, so a flip ratio counts flips of the binary weights the layer uses.

    Returns:
        ``{name: int8 tensor}`` (a copy).
    """
    check_instance(model, "model", nn.Module)
    return {n: sign(_binary_weight_values(m)).to(torch.int8)
            for n, m in _select(model, layers, need_weight=True).items()}


def _binary_weight_values(module: nn.Module) -> Tensor:
    """Real values whose signs are the layer's binary weights: ABC-Net's shifted bases, else W."""
    shifted = getattr(module, "shifted_weights", None)
    return shifted().detach() if callable(shifted) else cast(Tensor, module.weight).detach()


def flip_ratio(prev, cur) -> float:
    r"""Share of binary weights whose sign changed: :math:`\frac{1}{n}\sum
    \mathbb{1}\{\operatorname{sign}(w^{\text{prev}}_i) \ne \operatorname{sign}(w^{\text{cur}}_i)\}`.

    Works on latent or already binarised values (exact zeros count as +1). A dict of tensors
    (e.g. two :func:`weight_signs` snapshots) gives the ratio over all their entries together.

    Args:
        prev, cur: tensors/arrays of the same shape, or dicts of them with the same keys.

    Returns:
        A float in [0, 1].

    Examples::

        >>> flip_ratio(torch.tensor([1.0, -2.0, 0.0, 3.0]), torch.tensor([0.5, 1.0, -1.0, 3.0]))
        0.5
    """
    if isinstance(prev, Mapping) or isinstance(cur, Mapping):
        if not (isinstance(prev, Mapping) and isinstance(cur, Mapping)) or set(prev) != set(cur):
            raise ValueError("prev and cur must be two dicts with the same keys")
        flips = total = 0
        for k in prev:
            a, b = _as_tensor(prev[k], "prev"), _as_tensor(cur[k], "cur")
            if a.shape != b.shape:
                raise ValueError(f"prev[{k!r}] has shape {tuple(a.shape)} but cur[{k!r}] has "
                                 f"{tuple(b.shape)}")
            flips += int((sign(a.double()) != sign(b.double())).sum())
            total += a.numel()
        if total == 0:
            raise ValueError("prev and cur are empty")
        return flips / total
    a, b = _as_tensor(prev, "prev"), _as_tensor(cur, "cur")
    if a.shape != b.shape:
        raise ValueError(f"prev has shape {tuple(a.shape)} but cur has shape {tuple(b.shape)}")
    if a.numel() == 0:
        raise ValueError("prev and cur are empty")
    return float((sign(a.double()) != sign(b.double())).double().mean())


class FlipRatio:
    """:func:`bnnlab.train.fit` callback: flip ratio of each binary layer per step or per epoch.

    At the start of training the signs of the latent weights are stored; after every optimiser
    step (``every="step"``) or every epoch (``every="epoch"``) the share of weights whose sign
    changed since the previous look is appended to :attr:`history` (per layer) and
    :attr:`total` (all layers together, weighted by size). Per-step ratios are larq's
    ``flip_ratio`` metric; per-epoch ratios count a weight that flipped twice as unchanged.

    Args:
        every: ``"step"`` or ``"epoch"``. Default: ``"epoch"``.
        layers: ``None`` (all binary layers with a weight quantizer) or module names.

    Attributes:
        history: ``{layer name: [ratio per step/epoch]}``.
        total: ``[ratio over all layers per step/epoch]``.
        steps: the global batch index (``every="step"``) or epoch number of each entry.
    """

    stop_training = False

    def __init__(self, every: str = "epoch", layers=None) -> None:
        if every not in ("step", "epoch"):
            raise ValueError(f"every must be 'step' or 'epoch', got {every!r}")
        self.every, self.layers = every, layers
        self.history: dict[str, list[float]] = {}
        self.total: list[float] = []
        self.steps: list[int] = []
        self._prev: dict[str, Tensor] | None = None

    def _record(self, model, step: int) -> None:
        cur = weight_signs(model, self.layers)
        if self._prev is not None:
            for name, s in cur.items():
                if name in self._prev:
                    self.history.setdefault(name, []).append(flip_ratio(self._prev[name], s))
            common = {k: v for k, v in cur.items() if k in self._prev}
            self.total.append(flip_ratio({k: self._prev[k] for k in common}, common))
            self.steps.append(int(step))
        self._prev = cur

    def on_train_begin(self, model, history) -> None:
        self._prev = weight_signs(model, self.layers)

    def on_batch_end(self, batch, loss, model) -> None:
        if self.every == "step":
            self._record(model, batch + 1)

    def on_epoch_end(self, epoch, history, model) -> None:
        if self.every == "epoch":
            self._record(model, epoch)


# =============================================================================================
# Gradient mismatch, function level
# =============================================================================================
#: Noise laws of the smoothed sign :math:`\mathbb{E}[\operatorname{sign}(x + s\varepsilon)]`.
NOISES = ("uniform", "normal", "logistic", "laplace")


def _grid(x) -> np.ndarray:
    return _as_tensor(x, "x").double().numpy()


def smoothed_sign(x, noise: str = "uniform", scale: float = 1.0) -> np.ndarray:
    r"""The smoothed forward :math:`\bar q_s(x) = \mathbb{E}[\operatorname{sign}(x + s\varepsilon)]
    = 2F_\varepsilon(x/s) - 1` for symmetric noise :math:`\varepsilon`.

    ============  ===============================  ===============================================
    ``noise``     law of :math:`s\varepsilon`        :math:`\bar q_s(x)`
    ============  ===============================  ===============================================
    uniform       :math:`U[-s, s]`                   :math:`\operatorname{clip}(x/s, -1, 1)`
    normal        :math:`\mathcal{N}(0, s^2)`        :math:`\operatorname{erf}(x / (s\sqrt2))`
    logistic      logistic, scale :math:`s`          :math:`\tanh(x / (2s))`
    laplace       Laplace, scale :math:`s`           :math:`\operatorname{sign}(x)(1-e^{-|x|/s})`
    ============  ===============================  ===============================================

    Uniform, normal and Laplace noise are those of :class:`bnnlab.quantizers.StochasticSign`
    with the same ``scale``.

    Returns:
        ``np.ndarray`` (float64) of the shape of ``x``.
    """
    check_choice(noise, "noise", NOISES)
    s = check_real(scale, "scale", min_value=0.0, include_min=False)
    v = _grid(x)
    if noise == "uniform":
        return np.clip(v / s, -1.0, 1.0)
    if noise == "normal":
        return np.vectorize(math.erf, otypes=[np.float64])(v / (s * math.sqrt(2.0)))
    if noise == "logistic":
        return np.tanh(v / (2.0 * s))
    return np.sign(v) * -np.expm1(-np.abs(v) / s)


def smoothed_sign_derivative(x, noise: str = "uniform", scale: float = 1.0) -> np.ndarray:
    r"""Derivative of the smoothed sign: :math:`\bar q_s'(x) = 2 p_{s\varepsilon}(x)`.

    ============  ====================================================
    ``noise``     :math:`\bar q_s'(x)`
    ============  ====================================================
    uniform       :math:`\frac{1}{s}\mathbb{1}\{|x| \le s\}`
    normal        :math:`\frac{2}{s}\varphi(x/s)`, :math:`\varphi` the standard normal pdf
    logistic      :math:`\frac{1}{2s}\operatorname{sech}^2(x / (2s))`
    laplace       :math:`\frac{1}{s} e^{-|x|/s}`
    ============  ====================================================

    Each integrates to 2 over the real line (the jump of sign from −1 to +1). At :math:`|x| = s`
    the uniform case takes the value :math:`1/s` (closed interval, as the STE's clip).

    Returns:
        ``np.ndarray`` (float64) of the shape of ``x``.
    """
    check_choice(noise, "noise", NOISES)
    s = check_real(scale, "scale", min_value=0.0, include_min=False)
    v = _grid(x)
    if noise == "uniform":
        return (np.abs(v) <= s).astype(np.float64) / s
    if noise == "normal":
        return 2.0 / s * np.exp(-0.5 * (v / s) ** 2) / math.sqrt(2.0 * math.pi)
    if noise == "logistic":
        return 1.0 / (2.0 * s) / np.cosh(v / (2.0 * s)) ** 2
    return np.exp(-np.abs(v) / s) / s


def surrogate_curves(quantizer: nn.Module, x) -> tuple[np.ndarray, np.ndarray]:
    r"""The forward map :math:`q(x)` and the surrogate :math:`\tilde q'(x)` of a quantizer.

    The surrogate is read off autograd: :math:`\partial (\sum_i q(x_i)) / \partial x_i`, in
    float64. The quantizer is applied as it is (its training/eval mode is not changed), and
    elementwise quantizers are assumed. Pure: computes, never plots.

    Args:
        quantizer: a module or a name of :data:`bnnlab.quantizers.BY_NAME`.
        x: 1-D grid (tensor or array).

    Returns:
        ``(q, dq)``: two float64 ``np.ndarray`` of the shape of ``x``.
    """
    q = Q.get_quantizer(quantizer, argname="quantizer")
    if q is None:
        raise ValueError("quantizer must not be None")
    t = _as_tensor(x, "x").double().clone().requires_grad_()
    y = q(t)
    (g,) = torch.autograd.grad(y.sum(), t, allow_unused=True)
    g = torch.zeros_like(t) if g is None else g
    return y.detach().numpy().astype(np.float64), g.detach().numpy().astype(np.float64)


def _default_grid(quantizer: nn.Module, scale: float) -> np.ndarray:
    half = max(4.0, 12.0 * scale)
    knots = [0.0, scale, -scale]
    c = getattr(quantizer, "clip_value", None)
    if isinstance(c, (int, float)):
        knots += [float(c), -float(c)]
    return np.union1d(np.linspace(-half, half, 8001), np.array(knots))


def mismatch_curves(quantizer: nn.Module, noise: str = "uniform", scale: float = 1.0, *,
                    x=None, normalize: bool = False) -> dict:
    r"""Everything the quantizer explorer draws: :math:`q`, :math:`\tilde q'`, :math:`\bar q_s'`
    on a grid, and the mismatch :math:`\int |\tilde q' - \bar q_s'|\,dx` (trapezoid rule).

    The reference derivative is scaled by the forward's half-range
    :math:`(q(x_{\max}) - q(x_{\min}))/2` (1 for sign, 1/2 for the {0, 1} Heaviside). With
    ``normalize=True`` both curves are rescaled to integrate to that same total on the grid,
    which compares shapes only (then STE with clip :math:`c` matches uniform noise with
    :math:`s = c` for every :math:`c`; without it they match only at :math:`c = s = 1`, since
    the STE integrates to :math:`2c`).

    Args:
        quantizer: module or name.
        noise: one of :data:`NOISES`. Default: ``"uniform"``.
        scale: noise scale :math:`s > 0`. Default: ``1.0``.
        x: the grid; default: 8,001 points on :math:`[-L, L]`, :math:`L = \max(4, 12s)`, plus
            the knots :math:`0, \pm s, \pm c`.
        normalize: compare shapes only. Default: ``False``.

    Returns:
        dict with ``x``, ``q``, ``surrogate``, ``smoothed`` (``np.ndarray``) and ``mismatch``
        (float).
    """
    q = Q.get_quantizer(quantizer, argname="quantizer")
    if q is None:
        raise ValueError("quantizer must not be None")
    check_choice(noise, "noise", NOISES)
    s = check_real(scale, "scale", min_value=0.0, include_min=False)
    grid = _default_grid(q, s) if x is None else _grid(x)
    if grid.ndim != 1 or grid.size < 2 or not np.all(np.diff(grid) > 0):
        raise ValueError("x must be a 1-D increasing grid of at least 2 points")
    fwd, sur = surrogate_curves(q, grid)
    amplitude = (fwd[-1] - fwd[0]) / 2.0
    ref = amplitude * smoothed_sign_derivative(grid, noise, s)
    if normalize:
        total = 2.0 * amplitude
        area_s, area_r = np.trapezoid(sur, grid), np.trapezoid(ref, grid)
        sur = sur * (total / area_s) if area_s else sur
        ref = ref * (total / area_r) if area_r else ref
    mismatch = float(np.trapezoid(np.abs(sur - ref), grid))
    return {"x": grid, "q": fwd, "surrogate": sur, "smoothed": ref, "mismatch": mismatch}


def surrogate_mismatch(quantizer: nn.Module, noise: str = "uniform", scale: float = 1.0, *,
                       x=None, normalize: bool = False) -> float:
    r"""L1 distance between a quantizer's surrogate and the smoothed sign's derivative.

    .. math::
        m(q, \varepsilon, s) = \int_{-L}^{L} \lvert \tilde q'(x) - \bar q_s'(x) \rvert\,dx

    by the trapezoid rule on the grid of :func:`mismatch_curves` (see there for ``x`` and
    ``normalize``). 0 means the surrogate is exactly the gradient of the smoothed forward, i.e.
    the STE is then the true gradient of the expected output under that noise (e.g. STE clip 1
    vs uniform noise on [−1, 1], BNN's stochastic binarisation).

    Examples::

        >>> surrogate_mismatch(SteSign(clip_value=1.0), "uniform", 1.0)
        0.0
    """
    return mismatch_curves(quantizer, noise, scale, x=x, normalize=normalize)["mismatch"]


#: Quantizers the explorer offers: name -> factory(clip_value, beta) (elementwise ones only).
EXPLORER_QUANTIZERS: dict[str, Callable[[float | None, float], nn.Module]] = {
    "ste_sign": lambda clip_value, beta: Q.SteSign(clip_value=clip_value),
    "approx_sign": lambda clip_value, beta: Q.ApproxSign(),
    "swish_sign": lambda clip_value, beta: Q.SwishSign(beta=beta),
    "ste_heaviside": lambda clip_value, beta: Q.SteHeaviside(clip_value=clip_value),
}


def make_quantizer(name: str, *, clip_value: float | None = 1.0, beta: float = 5.0) -> nn.Module:
    """Build an explorer quantizer from its name and the explorer's parameters.

    Args:
        name: a key of :data:`EXPLORER_QUANTIZERS`.
        clip_value: STE clip (ignored by ``approx_sign`` and ``swish_sign``).
        beta: SwishSign's :math:`\\beta` (ignored by the others).
    """
    if name not in EXPLORER_QUANTIZERS:
        raise ValueError(f"name must be one of {list(EXPLORER_QUANTIZERS)}, got {name!r}")
    return EXPLORER_QUANTIZERS[name](clip_value, beta)


# =============================================================================================
# Gradient mismatch, network level
# =============================================================================================
class TanhRelaxation(nn.Module):
    r"""A smooth stand-in for a sign-type quantizer: :math:`m \tanh(\beta (x - \tau))`.

    :math:`m = |q(x)|` is the magnitude the wrapped quantizer outputs (1 for sign, XNOR's or the
    magnitude-aware sign's :math:`\alpha`, a scaled sign's :math:`s`), taken without gradient as
    those quantizers do; :math:`\tau` is the threshold of an RSign (0 otherwise). A {0, 1}
    Heaviside becomes :math:`(1 + \tanh(\beta x))/2`. As :math:`\beta \to \infty` the forward
    tends to the quantizer's (except exactly at the threshold); its gradient is the exact
    :math:`m\beta\,\operatorname{sech}^2(\beta(x - \tau))`.

    Args:
        quantizer: the module being relaxed.
        beta: sharpness :math:`\beta > 0`.
    """

    def __init__(self, quantizer: nn.Module, beta: float) -> None:
        super().__init__()
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0 < beta < math.inf:
            raise ValueError(f"beta must be a finite float > 0, got {beta!r}")
        self.quantizer, self.beta = quantizer, float(beta)

    def forward(self, x: Tensor) -> Tensor:
        q = self.quantizer
        if isinstance(q, Q.SteHeaviside):
            return 0.5 * (1.0 + torch.tanh(self.beta * x))
        with torch.no_grad():
            m = q(x).abs()
        tau = getattr(q, "threshold", None)
        if isinstance(tau, Tensor) and tau.ndim == 1 and x.ndim >= 2:
            shape = [1] * x.ndim
            shape[getattr(q, "channel_dim", 1) % x.ndim] = -1
            x = x - tau.reshape(shape)
        elif isinstance(tau, Tensor):
            x = x - tau
        return m * torch.tanh(self.beta * x)

    def extra_repr(self) -> str:
        return f"beta={self.beta}"


@contextlib.contextmanager
def relaxed(model: nn.Module, beta: float, layers=None):
    """Context manager: the binary layers' ``input_quantizer`` and ``weight_quantizer`` are
    wrapped in :class:`TanhRelaxation` (same ``beta``) and put back on exit.

    Every layer of :mod:`bnnlab.layers` binarises through these two modules (ABC-Net applies
    its ``weight_quantizer`` to each shifted base, so each base is relaxed); a user layer that
    calls a binariser directly would keep its sign and STE.
    """
    check_instance(model, "model", nn.Module)
    swapped = []
    try:
        for m in _select(model, layers, need_weight=False).values():
            for attr in ("input_quantizer", "weight_quantizer"):
                q = getattr(m, attr, None)
                if isinstance(q, nn.Module):
                    setattr(m, attr, TanhRelaxation(q, beta))
                    swapped.append((m, attr, q))
        yield model
    finally:
        for m, attr, q in reversed(swapped):
            setattr(m, attr, q)


@contextlib.contextmanager
def _untouched(model: nn.Module, train: bool):
    """Run with a given mode; restore mode, buffers (BN statistics) and parameter grads."""
    was = model.training
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    grads = [(p, None if p.grad is None else p.grad.detach().clone()) for p in model.parameters()]
    model.train(train)
    try:
        yield model
    finally:
        model.train(was)
        with torch.no_grad():
            for b, v in buffers:
                b.copy_(v)
        for p, g in grads:
            p.grad = g


def _loss_fn(loss) -> Callable[[Tensor, Tensor], Tensor]:
    if loss is None or loss == "cross_entropy":
        return F.cross_entropy
    if loss == "mse":
        return F.mse_loss
    if callable(loss):
        return loss
    raise ValueError(f"loss must be 'cross_entropy', 'mse' or a callable, got {loss!r}")


def _check_xy(x, y) -> None:
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise TypeError("x and y must be tensors")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} rows but y has {y.shape[0]}")


def latent_gradients(model: nn.Module, x: Tensor, y: Tensor, *, loss="cross_entropy",
                     layers=None, train: bool = True) -> dict[str, Tensor]:
    r"""The gradient the optimiser sees: :math:`\partial L / \partial W` of each binary layer's
    latent weights, through the quantizers' surrogates (the STE gradient).

    The model's mode, buffers and existing ``.grad`` are left as they were.

    Args:
        model, x, y: network and one batch.
        loss: ``"cross_entropy"``, ``"mse"`` or a callable ``(output, target) -> loss``.
        layers: ``None`` (binary layers with a weight quantizer) or names.
        train: run in training mode (batch-norm batch statistics, stochastic quantizers
            drawing noise: the gradient the optimiser sees) or, if ``False``, in eval mode
            (running statistics). Buffers are restored either way. Default: ``True``.

    Returns:
        ``{name: gradient tensor}`` (same shape as the weight).
    """
    check_instance(model, "model", nn.Module)
    _check_xy(x, y)
    fn = _loss_fn(loss)
    chosen = {n: m for n, m in _select(model, layers, need_weight=True).items()
              if m.weight.requires_grad}
    with _untouched(model, train), torch.enable_grad():
        weights = [cast(Tensor, m.weight) for m in chosen.values()]
        grads = torch.autograd.grad(fn(model(x), y), weights, allow_unused=True)
    return {n: (torch.zeros_like(w) if g is None else g.detach())
            for (n, w), g in zip(zip(chosen, weights, strict=True), grads, strict=True)}


def relaxed_gradients(model: nn.Module, x: Tensor, y: Tensor, beta: float, *,
                      loss="cross_entropy", layers=None, train: bool = True) -> dict[str, Tensor]:
    r"""Exact gradient w.r.t. the latent weights of the :math:`\tanh(\beta\cdot)`-relaxed twin.

    Every ``input_quantizer`` and ``weight_quantizer`` is replaced by
    :class:`TanhRelaxation` (:func:`relaxed`), in the forward as in the backward, so this is the
    true gradient of a smooth network that tends to the binary one as :math:`\beta \to \infty`.
    Deterministic (variance 0); its bias w.r.t. the binary network is the relaxation error.
    Same arguments as :func:`latent_gradients`, plus ``beta``.
    """
    with relaxed(model, beta, layers=None):
        return latent_gradients(model, x, y, loss=loss, layers=layers, train=train)


@torch.no_grad()
def smoothed_gradients(model: nn.Module, x: Tensor, y: Tensor, *, sigma: float = 0.1,
                       n_samples: int = 64, loss="cross_entropy", layers=None,
                       train: bool = True, generator: torch.Generator | None = None,
                       return_stderr: bool = False):
    r"""Monte-Carlo gradient of the stochastically smoothed network (no surrogate involved).

    The smoothed loss is :math:`L_\sigma(W) = \mathbb{E}_\varepsilon[L(W + \sigma\varepsilon)]`,
    :math:`\varepsilon \sim \mathcal{N}(0, I)` added to the latent weights of all selected
    layers at once, with :math:`L` the loss of the *binary* network (so the weights are
    binarised as :math:`\operatorname{sign}(W + \sigma\varepsilon)`: Gaussian stochastic
    binarisation of the weights). Its gradient is estimated with antithetic Gaussian smoothing
    (a central finite difference along random directions, Nesterov–Spokoiny):

    .. math::
        \hat g = \frac{1}{n}\sum_{k=1}^{n} \frac{L(W + \sigma\varepsilon_k)
                 - L(W - \sigma\varepsilon_k)}{2\sigma}\,\varepsilon_k

    which is **unbiased** for :math:`\nabla L_\sigma(W)` (Stein's lemma; no differentiability of
    :math:`L` needed). Its variance per coordinate is

    .. math::
        \operatorname{Var}(\hat g_i) = \frac{1}{n}\Big(\mathbb{E}\Big[\frac{(\Delta L)^2}
        {4\sigma^2}\varepsilon_i^2\Big] - (\nabla_i L_\sigma)^2\Big)
        \;\lesssim\; \frac{\mathbb{E}[(\Delta L)^2]}{4\sigma^2 n},

    the same for every coordinate, so the squared error of the whole vector grows with the
    number of weights :math:`d` as :math:`d\,\mathbb{E}[(\Delta L)^2]/(4\sigma^2 n)`: use it on
    small layers, with large ``n_samples``, and read the returned standard errors (the sample
    standard deviation of the :math:`n` terms over :math:`\sqrt n`). Smaller :math:`\sigma`
    means less smoothing bias w.r.t. the binary network but more variance.

    Args:
        model, x, y: network and one batch.
        sigma: noise std :math:`\sigma > 0` on the latent weights. Default: ``0.1``.
        n_samples: number :math:`n` of antithetic pairs (``2n`` forward passes). Default: ``64``.
        loss, layers, train: as :func:`latent_gradients`.
        generator: :class:`torch.Generator` for reproducible draws.
        return_stderr: also return the per-coordinate standard errors. Default: ``False``.

    Returns:
        ``{name: gradient estimate}`` (and ``{name: standard error}`` if ``return_stderr``).
    """
    check_instance(model, "model", nn.Module)
    _check_xy(x, y)
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not 0 < sigma < math.inf:
        raise ValueError(f"sigma must be a finite float > 0, got {sigma!r}")
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 2:
        raise ValueError(f"n_samples must be an int >= 2, got {n_samples!r}")
    fn = _loss_fn(loss)
    chosen = _select(model, layers, need_weight=True)
    weights = {n: cast(Tensor, m.weight) for n, m in chosen.items()}
    originals = {n: w.detach().clone() for n, w in weights.items()}
    s1 = {n: torch.zeros_like(w, dtype=torch.float64) for n, w in originals.items()}
    s2 = {n: torch.zeros_like(w, dtype=torch.float64) for n, w in originals.items()}
    with _untouched(model, train):
        try:
            for _ in range(n_samples):
                eps = {n: torch.randn(w.shape, generator=generator, dtype=w.dtype)
                       for n, w in originals.items()}
                values = []
                for direction in (1.0, -1.0):
                    for n, w in weights.items():
                        w.copy_(originals[n] + direction * sigma * eps[n])
                    values.append(float(fn(model(x), y)))
                coeff = (values[0] - values[1]) / (2.0 * sigma)
                for n in weights:
                    term = coeff * eps[n].double()
                    s1[n] += term
                    s2[n] += term * term
        finally:
            for n, w in weights.items():
                w.copy_(originals[n])
    mean = {n: (s1[n] / n_samples).to(originals[n].dtype) for n in weights}
    if not return_stderr:
        return mean
    var = {n: (s2[n] - s1[n] ** 2 / n_samples).clamp_min(0) / (n_samples - 1) for n in weights}
    return mean, {n: (var[n] / n_samples).sqrt().to(originals[n].dtype) for n in weights}


def gradient_similarity(reference: Tensor, estimate: Tensor) -> dict[str, float]:
    r"""How close an estimated gradient is to a reference one.

    * ``cosine``: :math:`\langle g, r\rangle / (\lVert g\rVert\,\lVert r\rVert)` (``nan`` if a
      norm is 0);
    * ``rel_error``: :math:`\lVert g - r\rVert / \lVert r\rVert` (``nan`` if :math:`r = 0`);
    * ``norm_ratio``: :math:`\lVert g\rVert / \lVert r\rVert`.

    Args:
        reference: :math:`r`.
        estimate: :math:`g` (e.g. the STE gradient), same shape.
    """
    r, g = _as_tensor(reference, "reference").double(), _as_tensor(estimate, "estimate").double()
    if r.shape != g.shape:
        raise ValueError(f"reference has shape {tuple(r.shape)} but estimate has {tuple(g.shape)}")
    nr, ng = float(r.norm()), float(g.norm())
    cos = float((r * g).sum()) / (nr * ng) if nr > 0 and ng > 0 else math.nan
    return {"cosine": cos,
            "rel_error": float((g - r).norm()) / nr if nr > 0 else math.nan,
            "norm_ratio": ng / nr if nr > 0 else math.nan}


def gradient_mismatch(model: nn.Module, x: Tensor, y: Tensor, *,
                      betas: Iterable[float] = (1.0, 3.0, 10.0), mc_samples: int = 0,
                      mc_sigma: float = 0.1, loss="cross_entropy", layers=None,
                      train: bool = True,
                      generator: torch.Generator | None = None) -> dict[str, dict[str, dict]]:
    r"""Per layer, how far the STE gradient is from reference gradients.

    References (keys of the result):

    * ``"tanh β=<β>"`` for each ``β`` in ``betas``: :func:`relaxed_gradients`, the exact gradient
      of the :math:`\tanh(\beta\cdot)`-relaxed twin (deterministic, biased by the relaxation);
    * ``"mc σ=<σ>"`` if ``mc_samples > 0``: :func:`smoothed_gradients`, the unbiased but noisy
      Monte-Carlo gradient of the Gaussian-smoothed binary network (see there for the variance).

    Args:
        model, x, y: network and one (small) batch.
        betas: relaxation sharpnesses. Default: ``(1, 3, 10)``.
        mc_samples: antithetic pairs of the Monte-Carlo reference; 0 skips it. Default: ``0``.
        mc_sigma: its noise std. Default: ``0.1``.
        loss, layers, train: as :func:`latent_gradients`.
        generator: for the Monte-Carlo draws.

    Returns:
        ``{reference: {layer: {"cosine", "rel_error", "norm_ratio"}}}`` (see
        :func:`gradient_similarity`; the STE gradient is the estimate).
    """
    ste = latent_gradients(model, x, y, loss=loss, layers=layers, train=train)
    refs: dict[str, dict[str, Tensor]] = {}
    for beta in betas:
        refs[f"tanh β={beta:g}"] = relaxed_gradients(model, x, y, beta, loss=loss,
                                                     layers=layers, train=train)
    if mc_samples:
        refs[f"mc σ={mc_sigma:g}"] = smoothed_gradients(
            model, x, y, sigma=mc_sigma, n_samples=mc_samples, loss=loss, layers=layers,
            train=train, generator=generator)
    return {ref: {n: gradient_similarity(g[n], ste[n]) for n in ste} for ref, g in refs.items()}


class GradientMismatch:
    """:func:`bnnlab.train.fit` callback: :func:`gradient_mismatch` on a fixed probe batch before
    training and after every ``every``-th epoch.

    Args:
        x, y: the probe batch (keep it small: each measurement costs one backward pass per
            ``β`` plus ``2 * mc_samples`` forward passes).
        betas, mc_samples, mc_sigma, loss, layers, train: as :func:`gradient_mismatch`.
        every: measure every ``every`` epochs. Default: ``1``.
        seed: seed of the Monte-Carlo draws (a fresh generator per measurement).

    Attributes:
        epochs: epoch of each measurement (0 = before training).
        results: one :func:`gradient_mismatch` dict per measurement.

    Examples::

        >>> gm = GradientMismatch(*ds.val, betas=(1, 5))
        >>> fit(net, ds, epochs=3, callbacks=[gm], progress=False)
        >>> gm.series("cosine", "tanh β=5", "1")      # layer "1" over the 4 measurements
    """

    stop_training = False

    def __init__(self, x: Tensor, y: Tensor, *, betas: Iterable[float] = (1.0, 3.0, 10.0),
                 mc_samples: int = 0, mc_sigma: float = 0.1, loss="cross_entropy", layers=None,
                 train: bool = True, every: int = 1, seed: int = 0) -> None:
        _check_xy(x, y)
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive int, got {every!r}")
        self.x, self.y = x, y
        self.kw = dict(betas=tuple(betas), mc_samples=mc_samples, mc_sigma=mc_sigma, loss=loss,
                       layers=layers, train=train)
        self.every, self.seed = every, seed
        self.epochs: list[int] = []
        self.results: list[dict] = []

    def measure(self, model: nn.Module, epoch: int) -> None:
        """Measure ``model`` now and record it as epoch ``epoch``."""
        gen = torch.Generator().manual_seed(self.seed + len(self.epochs))
        self.results.append(gradient_mismatch(model, self.x, self.y, generator=gen, **self.kw))
        self.epochs.append(int(epoch))

    def on_train_begin(self, model, history) -> None:
        if not self.epochs:
            self.measure(model, 0)

    def on_epoch_end(self, epoch, history, model) -> None:
        if epoch % self.every == 0:
            self.measure(model, epoch)

    @property
    def references(self) -> list[str]:
        """The reference names (keys of each result)."""
        return list(self.results[0]) if self.results else []

    @property
    def layer_names(self) -> list[str]:
        """The layers measured."""
        return list(next(iter(self.results[0].values()))) if self.results else []

    def series(self, metric: str = "cosine", reference: str | None = None,
               layer: str | None = None) -> list[float]:
        """One metric over the measurements, for one reference and one layer.

        ``reference=None`` takes the first; ``layer=None`` averages over the layers.
        """
        if metric not in ("cosine", "rel_error", "norm_ratio"):
            raise ValueError(f"metric must be 'cosine', 'rel_error' or 'norm_ratio', "
                             f"got {metric!r}")
        if not self.results:
            return []
        reference = self.references[0] if reference is None else reference
        if reference not in self.results[0]:
            raise ValueError(f"reference must be one of {self.references}, got {reference!r}")
        if layer is not None and layer not in self.layer_names:
            raise ValueError(f"layer must be one of {self.layer_names}, got {layer!r}")
        out = []
        for res in self.results:
            per = res[reference]
            vals = [per[layer][metric]] if layer is not None else [v[metric] for v in per.values()]
            out.append(float(np.mean(vals)) if vals else math.nan)
        return out
