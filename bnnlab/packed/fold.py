"""Folding float modules between binary layers into integer thresholds (and into PackedSign in front of a chain).

Part of :mod:`bnnlab.packed` (see its docstring for the rules and the format)."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from bnnlab import quantizers as Q
from bnnlab.blocks import LearnableBias, RPReLU
from bnnlab.packed.layers import PackedConv2d, PackedLinear, PackedMaxPool2d, PackedSign, _draws_in_eval, _pair_list

# =============================================================================== folding
_PARAM_FREE = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.ReLU,
               nn.ReLU6, nn.Hardtanh, nn.LeakyReLU, nn.ELU, nn.CELU, nn.SELU, nn.Tanh,
               nn.Sigmoid, nn.Hardsigmoid, nn.Softsign, nn.GELU, nn.SiLU, nn.Hardswish,
               nn.Mish, nn.Softplus, nn.Tanhshrink, nn.Hardshrink, nn.Softshrink,
               Q.SteSign, Q.ApproxSign, Q.SwishSign)


def _elementwise(m: Any, channels: int, after_flatten: bool) -> bool:
    """Is ``m`` (in eval mode) a function of each element and its channel only?"""
    if isinstance(m, _PARAM_FREE):
        return True
    if isinstance(m, Q.StochasticSign):
        return not _draws_in_eval(m)
    if after_flatten:
        return False
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return (m.track_running_stats and m.running_mean is not None
                and m.num_features == channels)
    if isinstance(m, nn.PReLU):
        return m.num_parameters in (1, channels)
    if isinstance(m, (LearnableBias, RPReLU)):
        return m.num_channels == channels
    if isinstance(m, Q.RSign):
        return m.num_channels == channels and m.channel_dim in (1, -3, -1)
    return False


def _monotone(values: np.ndarray) -> np.ndarray | None:
    """Per column of ``values`` (n, C): +1 non-decreasing, -1 non-increasing; None if neither."""
    if not np.isfinite(values).all():
        return None
    diff = np.diff(values, axis=0)
    inc, dec = (diff >= 0).all(axis=0), (diff <= 0).all(axis=0)
    if not (inc | dec).all():
        return None
    return np.where(inc, 1, -1)


def _direction(m: Any, c: int) -> np.ndarray | None:
    """Per-channel monotonicity (+1, -1, 0 = constant) under float32 evaluation, or None."""
    up = np.ones(c, np.int64)
    if isinstance(m, (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.ReLU, nn.ReLU6,
                      LearnableBias, Q.SteSign, Q.ApproxSign, Q.SwishSign, Q.RSign)):
        return up
    if isinstance(m, Q.StochasticSign):
        return None if _draws_in_eval(m) else up
    if isinstance(m, nn.Hardtanh):
        return up if m.min_val <= m.max_val else None
    if isinstance(m, nn.LeakyReLU):
        return up if m.negative_slope >= 0 else None
    if isinstance(m, nn.PReLU):
        return up if bool((m.weight >= 0).all()) else None
    if isinstance(m, RPReLU):
        return up if bool((m.slope >= 0).all()) else None
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        if not m.affine:
            return up
        w = m.weight.detach().numpy()
        return np.where(w > 0, 1, np.where(w < 0, -1, 0)).astype(np.int64)
    return None


def _f32_keys(v: np.ndarray) -> np.ndarray:
    """float32 -> int64 keys in the same order (-0.0 and +0.0 share key 0)."""
    b = np.asarray(v, np.float32).view(np.int32).astype(np.int64)
    return np.where(b >= 0, b, -(b & 0x7FFFFFFF))


def _keys_f32(k: np.ndarray) -> np.ndarray:
    k = np.asarray(k, np.int64)
    b = np.where(k >= 0, k, (-k) | 0x80000000).astype(np.uint32)
    return b.view(np.float32)


def _float_thresholds(chain: list[nn.Module], c: int, ndim: int, l2: Any) -> Any:
    """Exact per-channel float thresholds of ``v -> sign(chain(v) [- τ of l2])``, or None."""
    direction = np.ones(c, np.int64)
    for m in chain:
        d = _direction(m, c)
        if d is None:
            return None
        direction = direction * d
    view = (1, -1, 1, 1) if ndim == 4 else (1, -1)

    def positive(v: np.ndarray) -> np.ndarray:
        y = torch.from_numpy(np.asarray(v, np.float32).reshape(view).copy())
        with torch.no_grad():
            for m in chain:
                y = m.eval()(y)
            if l2.input_mode == "rsign":
                y = y - l2.tau.reshape(view)
        return (y >= 0).reshape(-1).numpy()

    big = np.float32(np.finfo(np.float32).max)
    p_lo, p_hi = positive(np.full(c, -big)), positive(np.full(c, big))
    lo = np.full(c, int(_f32_keys(np.array(-big))))
    hi = np.full(c, int(_f32_keys(np.array(big))))
    # bisection towards the boundary key, keeping positive(lo) != positive(hi)
    want_hi = direction >= 0                       # increasing: positive(hi) is True
    while True:
        gap = hi - lo > 1
        if not gap.any():
            break
        mid = (lo + hi) // 2
        pm = positive(_keys_f32(mid))
        move_hi = np.where(want_hi, pm, ~pm) & gap
        hi = np.where(move_hi, mid, hi)
        lo = np.where(~move_hi & gap, mid, lo)
    thr = np.where(want_hi, _keys_f32(hi), -_keys_f32(lo)).astype(np.float32)
    negate = direction < 0
    always = np.where(direction > 0, p_lo, np.where(direction < 0, p_hi, p_lo))
    never = np.where(direction > 0, ~p_hi, np.where(direction < 0, ~p_lo, ~p_lo))
    thr = np.where(always, -np.inf, np.where(never, np.inf, thr)).astype(np.float32)
    # verify the rule on points around each threshold and spread over the range
    rng = np.random.default_rng(0)
    probes = [np.zeros(c, np.float32), np.full(c, -big), np.full(c, big)]
    finite = np.isfinite(thr)
    base = np.where(finite, np.where(negate, -thr, thr), 0).astype(np.float32)
    for step in (-2, -1, 0, 1, 2):
        probes.append(_keys_f32(_f32_keys(base) + step))
    for scale in (1e-3, 1.0, 1e3, 1e6):
        probes.append((rng.standard_normal(c) * scale).astype(np.float32))
    for v in probes:
        rule = np.where(negate, -v, v) >= thr
        if not np.array_equal(positive(v), rule):
            return None
    return thr, negate


def _fold_entry(segment: list[Any], layer: Any) -> Any:
    """Stages replacing the float ``segment`` in front of ``layer`` (which then takes bits)."""
    if not segment or layer.beta is not None:
        return None
    conv = isinstance(layer, PackedConv2d)
    c = layer.in_channels if conv else layer.in_features
    pool_at = None
    for i, m in enumerate(segment):
        if isinstance(m, nn.MaxPool2d):
            if not conv or pool_at is not None or m.ceil_mode or m.return_indices \
                    or m.dilation not in (1, (1, 1)):
                return None
            pool_at = i
        elif _direction(m, c) is None or not _elementwise(m, c, after_flatten=False):
            return None
    chain = [m for i, m in enumerate(segment) if i != pool_at]
    found = _float_thresholds(chain, c, 4 if conv else 2, layer)
    if found is None:
        return None
    thr, negate = found
    stages: list[nn.Module] = [PackedSign(thr, negate, 4 if conv else 2)]
    if pool_at is not None:
        s1 = np.ones(c, np.int64)
        for m in segment[:pool_at]:
            s1 = s1 * _direction(m, c)
        s_all = np.where(negate, -1, 1)
        const = ~np.isfinite(thr)
        or_channels = (np.where(s1 == 0, 1, s1) != s_all) & ~const
        m = segment[pool_at]
        stride = m.stride if m.stride is not None else m.kernel_size
        stages.append(PackedMaxPool2d(c, _pair_list(m.kernel_size), _pair_list(stride),
                                      _pair_list(m.padding),
                                      or_channels))
    return stages


def _fold(l1: Any, segment: list[Any], l2: Any) -> Any:
    """Fold ``l1 -> segment -> sign of l2's input`` into thresholds; None if not exactly possible.

    Returns ``((threshold, flip, pool, flatten), "")`` or ``(None, reason)``: thresholds on
    l1's integer output d (every value d can take is evaluated through the torch modules), a
    :class:`PackedMaxPool2d` (or None) with its per-channel OR flags, and the ``(C, HW)`` of a
    flatten feeding the dense l2 (or None).
    """
    if l1.beta is not None or l2.beta is not None:
        return None, "XNOR-Net input scaling (β / K-map) needs the real input"
    if l1.gamma is not None and l1.gamma.dim() == 3 and l1.gamma.shape[1:] != (1, 1):
        return None, "a spatial (factorised) Γ is not per channel"
    conv1 = isinstance(l1, PackedConv2d)
    c = l1.out_channels if conv1 else l1.out_features
    pool_at, flatten_at = None, None
    for i, m in enumerate(segment):
        if isinstance(m, nn.MaxPool2d):
            if not conv1 or pool_at is not None or m.ceil_mode or m.return_indices:
                return None, "unsupported max-pool"
            if m.dilation not in (1, (1, 1)):
                return None, "dilated max-pool"
            pool_at = i
        elif isinstance(m, nn.Flatten):
            if flatten_at is not None or (m.start_dim, m.end_dim) != (1, -1):
                return None, "unsupported flatten"
            flatten_at = i
        elif not _elementwise(m, c, after_flatten=flatten_at is not None and conv1):
            return None, f"{type(m).__name__} is not an element-wise per-channel function"
    if conv1 and flatten_at is not None and pool_at is not None and pool_at > flatten_at:
        return None, "max-pool after flatten"
    flatten = None
    if isinstance(l2, PackedConv2d):
        if not conv1 or flatten_at is not None or l2.in_channels != c:
            return None, "layer shapes do not chain"
    else:
        if conv1:
            if flatten_at is None or l2.in_features % c:
                return None, "a conv feeds a dense layer without nn.Flatten()"
            if l2.input_mode == "rsign":
                return None, "RSign after a flatten is per feature, not per channel"
            flatten = (c, l2.in_features // c)
        elif l2.in_features != c:
            return None, "layer shapes do not chain"
    if l2.input_mode == "rsign" and l2.tau.shape[0] != c:
        return None, "RSign does not match the channels"

    k = l1.in_features if isinstance(l1, PackedLinear) else \
        l1.in_channels * l1.kernel_size[0] * l1.kernel_size[1]
    # every value d can take: -k, -k + 2, ..., k; with zero padding the out-of-image taps add
    # nothing, so d has either parity at the border
    step = 1 if conv1 and l1.pad_value == 0.0 else 2
    grid = torch.arange(-k, k + 1, step, dtype=torch.float32)
    view = (1, -1, 1, 1) if conv1 else (1, -1)
    ones = [1] * (len(view) - 2)
    y = grid.reshape(-1, 1, *ones).expand(grid.shape[0], c, *ones)
    with torch.no_grad():
        y = l1._epilogue(y.contiguous(), None, view)
        e1 = None
        for i, m in enumerate(segment):
            if i == pool_at:
                e1 = y.reshape(y.shape[0], c).numpy().astype(np.float64)
                continue
            if i == flatten_at:
                y = y.reshape(y.shape[0], -1)
                continue
            y = m.eval()(y)
        if l2.input_mode == "rsign":
            y = y - l2.tau.reshape(view)
        g = (y >= 0).reshape(y.shape[0], c).numpy()
    s_g = _monotone(g.astype(np.int8))
    if s_g is None:
        return None, "the sign of the chain is not a single step in d"
    d = grid.numpy().astype(np.float64)
    thr = np.empty(c, np.float64)
    flip = s_g < 0
    for ch in range(c):
        col = g[:, ch]
        if not flip[ch]:
            thr[ch] = d[np.argmax(col)] if col.any() else math.inf
        else:
            thr[ch] = d[len(col) - 1 - np.argmax(col[::-1])]
    pool = None
    if pool_at is not None:
        if e1 is None:
            raise ValueError("fold: the max-pool's input epilogue was not recorded")
        s1 = _monotone(e1)
        if s1 is None:
            return None, "the function before the max-pool is not monotone"
        const = g.all(axis=0) | (~g).all(axis=0)
        or_channels = (s1 != s_g) & ~const
        m = segment[pool_at]
        stride = m.stride if m.stride is not None else m.kernel_size
        pool = PackedMaxPool2d(c, _pair_list(m.kernel_size), _pair_list(stride), _pair_list(m.padding),
                               or_channels)
    return (thr, flip, pool, flatten), ""
