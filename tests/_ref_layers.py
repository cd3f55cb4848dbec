"""NumPy oracles for bnnlab.layers. Used only by tests; deliberately naive, independent of bnnlab."""
from __future__ import annotations

import numpy as np
from _ref_sign import sign as _ref_sign


def sign(x):
    """sign with sign(0) = +1, float64."""
    return _ref_sign(x, dtype=np.float64)


def ste_grad(x, c=1.0):
    """Straight-through estimator mask 1{|x| <= c}."""
    return (np.abs(x) <= c).astype(float)


def linear(x, w, b=None):
    y = x @ w.T
    return y if b is None else y + b


def _pairs(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def pad2d(x, pads, value):
    """Pad the last two axes of (N, C, H, W); pads = ((top, bottom), (left, right))."""
    return np.pad(x, ((0, 0), (0, 0), pads[0], pads[1]), mode="constant", constant_values=value)


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, pad_value=0.0):
    """Direct (looped) cross-correlation, torch layout.

    x: (N, C, H, W); w: (O, C // groups, kh, kw); padding: int, (ph, pw) or ((t, b), (l, r)).
    The padded border holds ``pad_value``.
    """
    sh, sw = _pairs(stride)
    dh, dw = _pairs(dilation)
    if isinstance(padding, int):
        pads = ((padding, padding), (padding, padding))
    elif isinstance(padding[0], int):
        pads = ((padding[0], padding[0]), (padding[1], padding[1]))
    else:
        pads = tuple(tuple(p) for p in padding)
    xp = pad2d(x, pads, pad_value)
    n, c, h, wd = xp.shape
    o, cg, kh, kw = w.shape
    og = o // groups
    ho = (h - dh * (kh - 1) - 1) // sh + 1
    wo = (wd - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n, o, ho, wo))
    for oc in range(o):
        g = oc // og
        for i in range(ho):
            for j in range(wo):
                acc = np.zeros(n)
                for ci in range(cg):
                    for a in range(kh):
                        for bb in range(kw):
                            acc += xp[:, g * cg + ci, i * sh + a * dh, j * sw + bb * dw] * w[oc, ci, a, bb]
                out[:, oc, i, j] = acc
    if b is not None:
        out += np.asarray(b).reshape(1, -1, 1, 1)
    return out


def conv1d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, pad_value=0.0):
    """1-D version through :func:`conv2d` with a unit height. padding: int or (left, right)."""
    pads = ((0, 0), (padding, padding) if isinstance(padding, int) else tuple(padding))
    y = conv2d(x[:, :, None, :], w[:, :, None, :], b, (1, stride), pads, (1, dilation), groups,
               pad_value)
    return y[:, :, 0, :]


def xnor_alpha(w):
    """XNOR-Net alpha: mean |W| per output channel, shape (O,)."""
    return np.abs(w).reshape(len(w), -1).mean(axis=1)


def xnor_beta_dense(x):
    """XNOR-Net beta for a dense layer: mean |x| over features, per sample, shape (N, 1)."""
    return np.abs(x).mean(axis=-1, keepdims=True)


def xnor_kmap(x, kernel_size, stride=1, padding=0, dilation=1, groups=1, out_channels=None):
    """beta of every receptive field: mean |x| over the (C_g, kh, kw) window, zero padded.

    Returns (N, out_channels, H_out, W_out); each output channel uses its group's input channels.
    """
    kh, kw = _pairs(kernel_size)
    sh, sw = _pairs(stride)
    dh, dw = _pairs(dilation)
    ph, pw = _pairs(padding)
    xp = pad2d(np.abs(x), ((ph, ph), (pw, pw)), 0.0)
    n, c, h, wd = xp.shape
    cg = c // groups
    out_channels = groups if out_channels is None else out_channels
    og = out_channels // groups
    ho = (h - dh * (kh - 1) - 1) // sh + 1
    wo = (wd - dw * (kw - 1) - 1) // sw + 1
    k = np.zeros((n, out_channels, ho, wo))
    for oc in range(out_channels):
        g = oc // og
        for i in range(ho):
            for j in range(wo):
                win = xp[:, g * cg:(g + 1) * cg, i * sh:i * sh + dh * (kh - 1) + 1:dh,
                         j * sw:j * sw + dw * (kw - 1) + 1:dw]
                k[:, oc, i, j] = win.reshape(n, -1).mean(axis=1)
    return k


def abc_shifts(m):
    """u_m = -1 + 2 m / (M - 1), m = 0..M-1; [0] for M = 1."""
    return np.array([0.0]) if m == 1 else np.array([-1.0 + 2.0 * i / (m - 1) for i in range(m)])


def abc_shifted_weights(w, m):
    """(M, *w.shape): W - mean_o(W) + u_m std_o(W), statistics per output channel (population std)."""
    flat = w.reshape(len(w), -1)
    mean = flat.mean(axis=1).reshape(-1, *([1] * (w.ndim - 1)))
    std = flat.std(axis=1).reshape(-1, *([1] * (w.ndim - 1)))
    return np.stack([w - mean + u * std for u in abc_shifts(m)])


def abc_lstsq_scales(w, bases):
    """Per output channel least squares of W_o ~ sum_m alpha_m B_m,o; returns (M, O)."""
    m, o = bases.shape[0], bases.shape[1]
    alpha = np.zeros((m, o))
    for oc in range(o):
        design = bases[:, oc].reshape(m, -1).T  # (K, M)
        alpha[:, oc] = np.linalg.lstsq(design, w[oc].reshape(-1), rcond=None)[0]
    return alpha


# ABC-Net as the paper writes it (Lin et al. 2017): whole-tensor statistics, one alpha per base,
# H_v(x) = sign(clip(x + v, 0, 1) - 0.5) with the gradient passed for 0 <= x + v <= 1.
def abc_shifted_weights_paper(w, m):
    """(M, *w.shape): W - mean(W) + u_m std(W), statistics of the whole tensor (population std)."""
    return np.stack([w - w.mean() + u * w.std() for u in abc_shifts(m)])


def abc_lstsq_scales_paper(w, bases):
    """Least squares of W ~ sum_m alpha_m B_m over the whole tensor; returns (M,)."""
    design = bases.reshape(bases.shape[0], -1).T  # (K, M)
    return np.linalg.lstsq(design, w.reshape(-1), rcond=None)[0]


def abc_act_paper(x, v):
    """H_v(x) = 2 * 1{clip(x + v, 0, 1) >= 0.5} - 1."""
    return np.where(np.clip(x + v, 0.0, 1.0) >= 0.5, 1.0, -1.0)


def abc_act_paper_grad(x, v):
    """dH_v/dx := 1{0 <= x + v <= 1}."""
    t = x + v
    return ((t >= 0) & (t <= 1)).astype(float)
