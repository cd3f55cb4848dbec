"""NumPy oracles for bnnlab's quantizers. Used only by tests; deliberately naive.

Written from the formulas in larq's ``larq/quantizers.py`` (REFERENCES.md §2.2) and the papers,
never by calling bnnlab. Each ``*_grad`` is d q / d x (to be multiplied by the upstream gradient).
"""
from __future__ import annotations

import math

import numpy as np
from _ref_sign import sign as _ref_sign


# ---------------------------------------------------------------- forward
def sign(x):
    return _ref_sign(x, dtype=np.asarray(x).dtype)


def heaviside(x):
    x = np.asarray(x)
    return np.where(x > 0, 1.0, 0.0).astype(x.dtype)


def xnor_scale(w):
    """mean |W| per output channel (dim 0), shape (C_out, 1, ..., 1)."""
    w = np.asarray(w)
    if w.ndim < 2:
        return np.abs(w)
    out = np.empty((w.shape[0],) + (1,) * (w.ndim - 1), dtype=np.float64)
    for o in range(w.shape[0]):
        out[o] = np.mean(np.abs(w[o].astype(np.float64)))
    return out


def magnitude_aware_sign(w):
    return xnor_scale(w) * sign(w)


# ---------------------------------------------------------------- surrogate gradients
def ste_grad(x, c=1.0):
    x = np.asarray(x, dtype=np.float64)
    if c is None:
        return np.ones_like(x)
    return np.where(np.abs(x) <= c, 1.0, 0.0)


def approx_sign_grad(x):
    x = np.asarray(x, dtype=np.float64)
    return np.where(np.abs(x) <= 1.0, 2.0 - 2.0 * np.abs(x), 0.0)


def swish_sign_grad(x, beta=5.0):
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    for i, v in np.ndenumerate(x):
        b = beta * v
        if abs(b) > 700:  # cosh overflows; the limit is 0
            out[i] = 0.0
        else:
            out[i] = beta * (2.0 - b * math.tanh(b / 2.0)) / (1.0 + math.cosh(b))
    return out


def magnitude_aware_sign_grad(w, c=1.0):
    return xnor_scale(w) * ste_grad(w, c)


# ---------------------------------------------------------------- primitives whose derivative is the surrogate
def hardtanh(x, c=1.0):
    """Integral of the clipped STE: clip(x, -c, c)."""
    return np.clip(np.asarray(x, dtype=np.float64), -c, c)


def approx_sign_primitive(x):
    """Bi-Real Net's piecewise polynomial F(x)."""
    x = np.asarray(x, dtype=np.float64)
    return np.where(x < -1, -1.0, np.where(x < 0, 2 * x + x * x, np.where(x < 1, 2 * x - x * x, 1.0)))


def swish_sign_primitive(x, beta=5.0):
    """BNN+'s SS_beta(x) = 2 sigma(beta x) (1 + beta x (1 - sigma(beta x))) - 1."""
    x = np.asarray(x, dtype=np.float64)
    s = 1.0 / (1.0 + np.exp(-beta * x))
    return 2.0 * s * (1.0 + beta * x * (1.0 - s)) - 1.0


# ---------------------------------------------------------------- noise CDFs (stochastic sign)
def noise_cdf(noise, t):
    t = np.asarray(t, dtype=np.float64)
    if noise == "uniform":  # U[-1, 1)
        return np.clip((t + 1.0) / 2.0, 0.0, 1.0)
    if noise == "normal":
        return np.array([0.5 * (1.0 + math.erf(v / math.sqrt(2.0))) for v in t.ravel()]).reshape(t.shape)
    if noise == "laplace":  # location 0, scale 1
        return np.where(t < 0, 0.5 * np.exp(np.minimum(t, 0)), 1.0 - 0.5 * np.exp(-np.maximum(t, 0)))
    raise ValueError(noise)


def p_plus_one(x, noise, scale=1.0):
    """P(sign(x + scale * eps) = +1) = P(eps >= -x / scale) = 1 - F(-x / scale)."""
    return 1.0 - noise_cdf(noise, -np.asarray(x, dtype=np.float64) / scale)


# ---------------------------------------------------------------- test grid
def edge_values(dtype, clip=1.0):
    """Exact zeros (both signs), +-clip, the neighbours of +-clip in ``dtype`` and a smooth body."""
    dtype = np.dtype(dtype)
    c = dtype.type(clip)
    inf = dtype.type(np.inf)
    edges = [0.0, -0.0, c, -c, np.nextafter(c, inf), -np.nextafter(c, inf),
             np.nextafter(c, dtype.type(0)), -np.nextafter(c, dtype.type(0)),
             np.nextafter(dtype.type(0), inf), -np.nextafter(dtype.type(0), inf),
             1.0, -1.0, np.nextafter(dtype.type(1), inf), -np.nextafter(dtype.type(1), inf),
             2.0, -2.0, 0.5, -0.5, 1e-3, -1e-3, 40.0, -40.0]
    body = np.linspace(-2.5, 2.5, 26)
    return np.concatenate([np.array(edges, dtype=dtype), body.astype(dtype)])


def grid(shape, dtype, clip=1.0, seed=0):
    """An array of ``shape`` whose first elements are :func:`edge_values`, the rest N(0, 1)."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    flat = rng.standard_normal(n).astype(dtype)
    edges = edge_values(dtype, clip)
    k = min(n, len(edges))
    flat[:k] = edges[:k]
    return flat.reshape(shape)
