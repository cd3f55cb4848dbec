r"""Export a packed model as self-contained C: a laptop, a 32-bit ARM board, a Cortex-M MCU.

:func:`to_c` writes ``NAME.h`` and ``NAME.c`` (C99, no dynamic allocation, no header beyond
``<stdint.h>`` and ``<string.h>``), plus an example program, its ``Makefile`` and a README::

    #define BNN_MODEL_INPUT_SIZE  784      /* floats, the model's NCHW order */
    #define BNN_MODEL_OUTPUT_SIZE 10       /* floats: the logits */
    #define BNN_MODEL_ARENA_BYTES 12544    /* static scratch, sized at export */
    void bnn_model_predict(const float *input, float *output);
    int  bnn_model_argmax(const float *input);

What the C computes is what :class:`~bnnlab.packed.PackedModel` computes, stage by stage:

* binary layers: ``static const`` packed words (``--word-bits 32`` for 32-bit targets, 64 for
  64-bit ones), bit layout as bnnlab's (bit 1 ⇔ −1, least significant first, padding 0) and
  :math:`d = K - 2\,\mathrm{popcount}(a \oplus w)`; a fused BatchNorm + sign is the packed
  model's per-channel integer threshold (``popcount > lim`` XOR flip); a float epilogue is
  ``d [* α_q] [* α_x] [* Γ] [+ b]`` in float32 in the same order as the packed model, one
  rounding per step (so the generated C must be compiled without FMA contraction; GCC in
  ``-std=c99`` mode contracts nothing);
* the float binarisation in front of a chain (:class:`~bnnlab.packed.PackedSign`) is one exact
  float comparison per element (``x >= u`` or ``-x >= u``), so its bits equal the packed
  model's for the same float input; after a float ``Conv2d`` it runs inside the convolution
  loop, so the float feature map is never stored (the arena holds bits);
* max-pool and flatten on bits as the packed model; float layers (first and last ``Linear`` /
  ``Conv2d``, ``BatchNorm`` folded to one per-channel ``x * s + t``, pooling, ReLU, Hardtanh,
  LeakyReLU, Identity, Dropout, Flatten) as plain float loops. Their float sums are not in
  torch's order: logits agree to float rounding (the tests ask ``1e-4``), not bit for bit.

Popcount: ``__builtin_popcount(ll)`` where the target has a popcount instruction (x86 built
with ``-mpopcnt`` / ``-march=native``, AArch64), an inline SWAR count elsewhere (on targets
without the instruction GCC's builtin calls libgcc, which profiled at 45 % of the host run time).

Refused, with a :class:`ValueError` naming the stage: models made by module replacement
(residual blocks), XNOR-Net input scaling (β / K-map), ``Tanh`` / ``Sigmoid`` (they need
``<math.h>``), pooling with ``ceil_mode``, and any stage kind this back end does not know.

Inputs must be finite (the packed model raises on NaN/inf; the C code cannot raise and gives an
unspecified, memory-safe result).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bnnlab import kernels
from bnnlab._validation import check_choice, check_int
from bnnlab.packed import c_runtime

__all__ = ["CExport", "to_c", "memory_report", "infer_input_shape", "run_host", "run_mps2",
           "cortex_m_size", "host_latency", "reference_deployment", "main"]


def _refuse(where: str, why: str) -> ValueError:
    return ValueError(f"cannot export {where} to C: {why}")


# =========================================================================== literals
def _f32(v: float) -> str:
    f = float(np.float32(v))
    if not math.isfinite(f):
        raise ValueError(f"non-finite float {f}")
    return f.hex() + "f"


def _lines(items: list[str], per: int) -> str:
    rows = [", ".join(items[i:i + per]) for i in range(0, len(items), per)]
    return "    " + ",\n    ".join(rows) if rows else "    0"


def _words(bits: np.ndarray, word_bits: int) -> np.ndarray:
    """Bool ``(..., n)`` -> words ``(..., ceil(n / word_bits))``, bit j%wb of word j//wb."""
    lead, n = bits.shape[:-1], bits.shape[-1]
    nw = -(-n // word_bits)
    padded = np.zeros((*lead, nw * word_bits), np.uint8)
    padded[..., :n] = bits
    b = np.packbits(padded, axis=-1, bitorder="little")
    return b.view("<u8" if word_bits == 64 else "<u4").reshape(*lead, nw)


@dataclass
class _Emitter:
    prefix: str
    word_bits: int
    decls: list[str] = field(default_factory=list)
    parts: set[str] = field(default_factory=set)
    flash: dict[str, int] = field(default_factory=lambda: {"weights": 0, "parameters": 0})

    def array(self, name: str, ctype: str, values: list[str], nbytes: int, kind: str) -> str:
        self.decls.append(f"static const {ctype} {name}[{max(1, len(values))}] = {{\n"
                          f"{_lines(values, 8)}\n}};")
        self.flash[kind] += nbytes
        return name

    def floats(self, name: str, arr: Any, kind: str = "parameters") -> str:
        a = np.asarray(arr, np.float32).reshape(-1)
        if not np.isfinite(a).all():
            raise ValueError(f"{name}: non-finite parameter")
        return self.array(name, "float", [_f32(float(v)) for v in a], 4 * a.size, kind)

    def wordarr(self, name: str, words: np.ndarray, kind: str = "weights") -> str:
        w = np.asarray(words).reshape(-1)
        fmt = "UINT64_C(0x{:016x})" if self.word_bits == 64 else "UINT32_C(0x{:08x})"
        return self.array(name, "bnn_word", [fmt.format(int(v)) for v in w],
                          w.size * self.word_bits // 8, kind)

    def ints(self, name: str, vals: Any, ctype: str = "int32_t", size: int = 4) -> str:
        v = [str(int(x)) for x in np.asarray(vals).reshape(-1)]
        return self.array(name, ctype, v, size * len(v), "parameters")


# =========================================================================== shapes
@dataclass
class _T:
    """The running tensor of one sample: float (shape) or bits (NHWC (C, H, W) / row (K,))."""

    bits: bool
    shape: tuple[int, ...]
    layout: tuple[int, int] | None = None   # bit row made by a PackedFlatten: (C, HW)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def words(self, word_bits: int) -> int:
        if len(self.shape) == 3:
            c, h, w = self.shape
            return h * w * -(-c // word_bits)
        if self.layout is not None:
            c, hw = self.layout
            return hw * -(-c // word_bits)
        return -(-self.shape[0] // word_bits)


def _pair(v: Any) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _out_hw(h: int, w: int, k: Any, s: Any, p: Any, d: Any = (1, 1)) -> tuple[int, int]:
    return ((h + 2 * p[0] - d[0] * (k[0] - 1) - 1) // s[0] + 1,
            (w + 2 * p[1] - d[1] * (k[1] - 1) - 1) // s[1] + 1)


# =========================================================================== stages
def _stage_list(model: nn.Module) -> list[nn.Module]:
    from bnnlab import packed as P

    if not isinstance(model, P.PackedModel):
        raise TypeError(f"model must be a bnnlab.packed.PackedModel, got {type(model).__name__}")
    if model.kind != "sequential" or not isinstance(model.body, nn.Sequential):
        raise _refuse("this PackedModel", "only flat nn.Sequential exports (kind 'sequential') "
                                          "can be written as C; module replacement keeps "
                                          "torch blocks (residual shortcuts) that C cannot run")
    return list(model.body)


def _who(i: int, m: nn.Module) -> str:
    name = getattr(m, "name", "") or ""
    return f"stage {i} ({type(m).__name__}{' ' + repr(name) if name else ''})"


def _thresholds(thr: np.ndarray, flip: np.ndarray, k: int) -> np.ndarray:
    """Integer limits: output -1 iff (popcount > lim) XOR flip (as kernels.prepare_thresholds)."""
    t = np.clip(np.where(flip, np.floor(thr), np.ceil(thr)), -k - 1, k + 1).astype(np.int64)
    return np.where(flip, (k - t - 1) // 2, (k - t) // 2).astype(np.int64)


# Public attributes of the packed stages this back end reads (or knows to be caches). A packed
# stage carrying any other attribute with a non-default value was made by a newer packed.py
# whose meaning the C code would not reproduce: it is refused by name instead of ignored.
_KNOWN_ATTRS = {
    "PackedLinear": {"alpha_q", "alpha_x", "beta", "bias", "d_offset", "flip", "folded_bn",
                     "gamma", "in_features", "input_mode", "name", "nhwc", "out_features", "tau",
                     "threshold", "training", "weight"},
    "PackedConv2d": {"alpha_q", "alpha_x", "beta", "bias", "d_offset", "flip", "folded_bn",
                     "gamma", "in_channels", "input_mode", "kernel_size", "name", "out_channels",
                     "pad_value", "padding", "stride", "tau", "threshold", "training", "weight"},
    "PackedSign": {"channels", "ndim", "negate", "threshold", "training"},
    "PackedMaxPool2d": {"channels", "kernel_size", "or_channels", "padding", "spec", "stride",
                        "training"},
    "PackedFlatten": {"channels", "hw", "training"},
}


def _check_known(m: nn.Module, where: str) -> None:
    known = _KNOWN_ATTRS.get(type(m).__name__)
    if known is None:
        return
    for key, value in vars(m).items():
        if key.startswith("_") or key in known:
            continue
        if value is None or value is False or (isinstance(value, (int, float)) and value == 0):
            continue
        raise _refuse(where, f"attribute {key!r}={value!r} is unknown to the C back end (made "
                             "by a newer bnnlab.packed); update bnnlab.packed.c_export")
    if any(True for _ in m.parameters(recurse=False)) or any(True for _ in m.buffers(False)):
        raise _refuse(where, "the packed stage holds torch parameters or buffers the C back end "
                             "does not know")


class _Builder:
    def __init__(self, em: _Emitter, input_shape: tuple[int, ...]) -> None:
        self.em = em
        self.t = _T(False, tuple(input_shape))
        self.cur = "input"                 # C expression of the current buffer
        self.cur_kind: Any = "in"          # "in", ("f", i) or ("w", i)
        self.fmax = [0, 0]                 # floats per half of the float arena
        self.wmax = [0, 0]                 # words per half of the word arena
        self.body: list[str] = []
        self.float_ops = 0
        self.binary_ops = 0
        self.largest = self.t.size         # elements of the largest activation (float twin)

    # ------------------------------------------------------------- buffers
    def _next(self, bits: bool, n: int) -> str:
        kind = "w" if bits else "f"
        prev = self.cur_kind
        idx = 1 - prev[1] if (isinstance(prev, tuple) and prev[0] == kind) else 0
        if bits:
            self.wmax[idx] = max(self.wmax[idx], n)
        else:
            self.fmax[idx] = max(self.fmax[idx], n)
        self.cur_kind = (kind, idx)
        return f"{self.em.prefix}_{'wbuf' if bits else 'fbuf'}{idx}"

    def _set(self, t: _T, dst: str) -> None:
        self.t, self.cur = t, dst
        self.largest = max(self.largest, t.size)

    # ------------------------------------------------------------- stages
    def add(self, i: int, m: nn.Module) -> None:
        from bnnlab import packed as P

        where = _who(i, m)
        _check_known(m, where)
        t = self.t
        if isinstance(m, P.PackedSign):
            self._packed_sign(i, m, where)
        elif isinstance(m, (P.PackedLinear, P.PackedConv2d)):
            self._packed_layer(i, m, where)
        elif isinstance(m, P.PackedMaxPool2d):
            if not (t.bits and len(t.shape) == 3 and t.shape[0] == m.channels):
                raise _refuse(where, f"expects packed maps with {m.channels} channels, got "
                                     f"{'bits' if t.bits else 'floats'} {t.shape}")
            c, h, w = t.shape
            ho, wo = _out_hw(h, w, m.kernel_size, m.stride, m.padding)
            if ho < 1 or wo < 1:
                raise _refuse(where, f"input {h}x{w} is too small")
            orw = "NULL"
            if np.asarray(m.or_channels).any():
                orw = self.em.wordarr(f"{self.em.prefix}_s{i}_or",
                                      _words(np.asarray(m.or_channels, bool), self.em.word_bits),
                                      "parameters")
            nt = _T(True, (c, ho, wo))
            dst = self._next(True, nt.words(self.em.word_bits))
            (kh, kw), (sy, sx), (py, px) = m.kernel_size, m.stride, m.padding
            self.body.append(f"bnn_maxpool_bits({self.cur}, {c}, {h}, {w}, {kh}, {kw}, {sy}, "
                             f"{sx}, {py}, {px}, {orw}, {dst});")
            self.em.parts.add("maxpool_bits")
            self._set(nt, dst)
        elif isinstance(m, P.PackedFlatten):
            if not (t.bits and len(t.shape) == 3 and t.shape[0] == m.channels
                    and t.shape[1] * t.shape[2] == m.hw):
                raise _refuse(where, f"expects packed maps ({m.channels} channels, H*W = {m.hw}), "
                                     f"got {'bits' if t.bits else 'floats'} {t.shape}")
            self.t = _T(True, (t.size,), (m.channels, m.hw))
        else:
            self._float(i, m, where)

    def _packed_sign(self, i: int, m: Any, where: str) -> None:
        t = self.t
        if t.bits or t.shape[0] != m.channels or len(t.shape) != (3 if m.ndim == 4 else 1):
            raise _refuse(where, f"expects a float {m.ndim}-D input with {m.channels} channels, "
                                 f"got {'bits' if t.bits else 'floats'} {t.shape}")
        self._pack_into_bits(t, *self._sign_arrays(i, m))

    def _sign_arrays(self, i: int, m: Any) -> tuple[str, str]:
        """A PackedSign's per-channel test as C arrays (threshold, mode; see bnn_pack)."""
        thr = m.threshold.reshape(-1).numpy().astype(np.float32)
        neg = np.asarray(m.negate, bool)
        finite = np.isfinite(thr)
        mode = np.where(finite, np.where(neg, 1, 0), np.where(thr < 0, 2, 3))
        u = np.where(finite, thr, 0).astype(np.float32)
        p = f"{self.em.prefix}_s{i}"
        return (self.em.floats(f"{p}_thr", u), self.em.ints(f"{p}_mode", mode, "uint8_t", 1))

    def _pack_into_bits(self, t: _T, thr: str, mode: str) -> None:
        c = t.shape[0]
        hw = t.size // c
        nt = _T(True, t.shape)
        dst = self._next(True, nt.words(self.em.word_bits))
        self.body.append(f"bnn_pack({self.cur}, {c}, {hw}, {thr}, {mode}, {dst});")
        self.em.parts.add("pack")
        self._set(nt, dst)

    def _packed_layer(self, i: int, m: Any, where: str) -> None:
        from bnnlab import packed as P

        em, wb, p = self.em, self.em.word_bits, f"{self.em.prefix}_s{i}"
        if m.beta is not None:
            raise _refuse(where, f"XNOR-Net input scaling (beta={m.beta!r}) needs the real input "
                                 "beside the bits; not in the C back end")
        if m.input_mode not in ("sign", "rsign", "binary"):
            raise _refuse(where, f"input mode {m.input_mode!r} is not known to the C back end")
        conv = isinstance(m, P.PackedConv2d)
        if conv and float(m.pad_value) not in (1.0, -1.0) and tuple(m.padding) != (0, 0):
            raise _refuse(where, f"pad_value={m.pad_value} is not ±1")
        t = self.t
        # ---- the input, as bits
        cin = m.in_channels if conv else m.in_features
        if not t.bits:
            want = 3 if conv else 1
            if len(t.shape) != want or t.shape[0] != cin:
                raise _refuse(where, f"expects a float input with {cin} channels ({want}-D), "
                                     f"got {t.shape}")
            thr = "NULL"
            if m.input_mode == "rsign":
                thr = em.floats(f"{p}_tau", m.tau.reshape(-1).numpy())
            self._pack_into_bits(t, thr, "NULL")
            t = self.t
        # ---- weights in the C layout, true K
        if conv:
            if not (t.bits and len(t.shape) == 3 and t.shape[0] == cin):
                raise _refuse(where, f"expects packed maps with {cin} channels, got {t.shape}")
            signs = kernels.unpack_conv_weights(m.weight)             # (O, C, kh, kw)
            o = m.out_channels
            kh, kw = m.kernel_size
            k = cin * kh * kw
            bits = np.ascontiguousarray(signs.transpose(0, 2, 3, 1) < 0)  # (O, kh, kw, C)
            words = _words(bits, wb)
        else:
            o, k = m.out_features, m.in_features
            signs = kernels.unpack_signs(m.weight)                     # (O, weight.k)
            if m.nhwc is not None:
                c, hw = m.nhwc
                if not (t.bits and t.layout == (c, hw)):
                    raise _refuse(where, f"expects the output of a PackedFlatten ({c} channels, "
                                         f"H*W = {hw}), got {t.shape}")
                cpad = signs.shape[1] // hw
                bits = signs.reshape(o, hw, cpad)[:, :, :c] < 0
                words = _words(bits, wb).reshape(o, -1)
            else:
                if not (t.bits and len(t.shape) == 1 and t.layout is None and t.shape[0] == k):
                    raise _refuse(where, f"expects a packed row of {k} bits, got {t.shape}")
                words = _words(signs[:, :k] < 0, wb)
        wname = em.wordarr(f"{p}_w", words)
        self.binary_ops += o * k * (self._hw_out(m, t) if conv else 1)
        # ---- epilogue
        epi = [str(k)]
        if m.fused:
            lim = _thresholds(np.asarray(m.threshold, np.float64), np.asarray(m.flip, bool), k)
            if np.abs(lim).max(initial=0) >= 2 ** 31:
                raise _refuse(where, "threshold out of int32 range")
            epi.append(em.ints(f"{p}_lim", lim))
            flip = np.asarray(m.flip, bool)
            epi.append(em.wordarr(f"{p}_flip", _words(flip, wb), "parameters")
                       if flip.any() else "NULL")
            epi += ["NULL"] * 4 + ["0"]
        else:
            epi += ["NULL", "NULL"]
            for key in ("alpha_q", "alpha_x", "gamma", "bias"):
                v = getattr(m, key)
                if key == "bias":
                    continue
                epi.append("NULL" if v is None else em.floats(f"{p}_{key}", v.reshape(-1).numpy()))
            epi.append("NULL" if m.bias is None else em.floats(f"{p}_bias", m.bias.numpy()))
            epi.append(str(self._gamma_mode(m, t, where)))
        em.decls.append(f"static const struct bnn_epi {p}_epi = {{{', '.join(epi)}}};")
        # ---- the call
        if conv:
            c, h, w = t.shape
            ho, wo = _out_hw(h, w, m.kernel_size, m.stride, m.padding)
            if ho < 1 or wo < 1:
                raise _refuse(where, f"input {h}x{w} is too small for the kernel")
            nt = _T(bool(m.fused), (o, ho, wo))
            (sy, sx), (py, px) = m.stride, m.padding
            padneg = 1 if (float(m.pad_value) == -1.0 and (py, px) != (0, 0)) else 0
            dst = self._next(nt.bits, nt.words(wb) if nt.bits else nt.size)
            ob, of = (dst, "NULL") if nt.bits else ("NULL", dst)
            self.body.append(f"bnn_conv({self.cur}, {c}, {h}, {w}, {wname}, {o}, {kh}, {kw}, "
                             f"{sy}, {sx}, {py}, {px}, {padneg}, &{p}_epi, {ob}, {of});")
            em.parts.add("conv")
        else:
            nt = _T(bool(m.fused), (o,))
            dst = self._next(nt.bits, nt.words(wb) if nt.bits else nt.size)
            ob, of = (dst, "NULL") if nt.bits else ("NULL", dst)
            self.body.append(f"bnn_dense({self.cur}, {words.shape[1]}, {wname}, {o}, &{p}_epi, "
                             f"{ob}, {of});")
            em.parts.add("dense")
        self._set(nt, dst)

    @staticmethod
    def _hw_out(m: Any, t: _T) -> int:
        ho, wo = _out_hw(t.shape[1], t.shape[2], m.kernel_size, m.stride, m.padding)
        return max(ho, 0) * max(wo, 0)

    def _gamma_mode(self, m: Any, t: _T, where: str) -> int:
        g = m.gamma
        if g is None:
            return 0
        from bnnlab import packed as P

        o = m.out_channels if isinstance(m, P.PackedConv2d) else m.out_features
        n = int(g.numel())
        if n == 1:
            return 0
        if n == o and (g.dim() == 1 or tuple(g.shape[1:]) == (1, 1)):
            return 1
        if isinstance(m, P.PackedConv2d) and g.dim() == 3:
            ho, wo = _out_hw(t.shape[1], t.shape[2], m.kernel_size, m.stride, m.padding)
            if tuple(g.shape) == (o, ho, wo):
                return 2
        raise _refuse(where, f"XNOR-Net++ scale of shape {tuple(g.shape)} does not broadcast to "
                             "the output")

    def _float(self, i: int, m: Any, where: str, sign: Any = None) -> None:
        em, t, p = self.em, self.t, f"{self.em.prefix}_s{i}"
        tp = type(m)
        if t.bits:
            raise _refuse(where, "a float module after packed bits (the packed model unpacks "
                                 "nothing)")
        if tp in (nn.Identity, nn.Dropout):
            return
        if tp is nn.Flatten:
            if (m.start_dim, m.end_dim) != (1, -1):
                raise _refuse(where, "only Flatten(1, -1)")
            self.t = _T(False, (t.size,))
            return
        if tp is nn.Linear:
            if t.size != m.in_features:
                raise _refuse(where, f"expects {m.in_features} features, got {t.shape}")
            w = em.floats(f"{p}_w", m.weight.detach().numpy(), "weights")
            b = "NULL" if m.bias is None else em.floats(f"{p}_b", m.bias.detach().numpy())
            nt = _T(False, (m.out_features,))
            dst = self._next(False, nt.size)
            self.body.append(f"bnn_linear_f({self.cur}, {m.in_features}, {m.out_features}, {w}, "
                             f"{b}, {dst});")
            self.float_ops += m.in_features * m.out_features
            em.parts.add("linear_f")
            self._set(nt, dst)
            return
        if tp is nn.Conv2d:
            if m.padding_mode != "zeros" or isinstance(m.padding, str):
                raise _refuse(where, f"padding {m.padding!r} / {m.padding_mode!r}")
            if len(t.shape) != 3 or t.shape[0] != m.in_channels:
                raise _refuse(where, f"expects ({m.in_channels}, H, W), got {t.shape}")
            c, h, w_ = t.shape
            k, s, pd, d = (_pair(m.kernel_size), _pair(m.stride), _pair(m.padding),
                           _pair(m.dilation))
            ho, wo = _out_hw(h, w_, k, s, pd, d)
            if ho < 1 or wo < 1:
                raise _refuse(where, f"input {h}x{w_} is too small")
            w = em.floats(f"{p}_w", m.weight.detach().numpy(), "weights")
            b = "NULL" if m.bias is None else em.floats(f"{p}_b", m.bias.detach().numpy())
            nt = _T(False, (m.out_channels, ho, wo))
            self.float_ops += nt.size * (c // m.groups) * k[0] * k[1]
            em.parts.add("conv_f")
            call = (f"bnn_conv_f({self.cur}, {c}, {h}, {w_}, {w}, {b}, {m.out_channels}, {k[0]}, "
                    f"{k[1]}, {s[0]}, {s[1]}, {pd[0]}, {pd[1]}, {d[0]}, {d[1]}, {m.groups}, ")
            if sign is not None:               # binarised on the fly: no float map in RAM
                self.largest = max(self.largest, nt.size)
                thr, mode = self._sign_arrays(i + 1, sign)
                nb = _T(True, nt.shape)
                dst = self._next(True, nb.words(em.word_bits))
                self.body.append(call + f"NULL, {thr}, {mode}, {dst});")
                self._set(nb, dst)
                return
            dst = self._next(False, nt.size)
            self.body.append(call + f"{dst}, NULL, NULL, NULL);")
            self._set(nt, dst)
            return
        if tp in (nn.BatchNorm1d, nn.BatchNorm2d):
            if not m.track_running_stats or m.running_mean is None:
                raise _refuse(where, "no running statistics")
            c = m.num_features
            if t.shape[0] != c or len(t.shape) != (3 if tp is nn.BatchNorm2d else 1):
                raise _refuse(where, f"expects {c} channels, got {t.shape}")
            f32 = np.float32
            var = m.running_var.detach().numpy().astype(f32)
            mean = m.running_mean.detach().numpy().astype(f32)
            inv = (f32(1.0) / np.sqrt(var + f32(m.eps))).astype(f32)
            g = m.weight.detach().numpy().astype(f32) if m.affine else np.ones(c, f32)
            bb = m.bias.detach().numpy().astype(f32) if m.affine else np.zeros(c, f32)
            scale = (inv * g).astype(f32)
            shift = (bb - mean * scale).astype(f32)
            sn = em.floats(f"{p}_scale", scale)
            hn = em.floats(f"{p}_shift", shift)
            dst = self._next(False, t.size)
            self.body.append(f"bnn_affine_f({self.cur}, {c}, {t.size // c}, {sn}, {hn}, {dst});")
            em.parts.add("affine_f")
            self._set(_T(False, t.shape), dst)
            return
        if tp in (nn.MaxPool2d, nn.AvgPool2d):
            if m.ceil_mode:
                raise _refuse(where, "ceil_mode=True")
            if len(t.shape) != 3:
                raise _refuse(where, f"expects (C, H, W), got {t.shape}")
            kind = 0 if tp is nn.MaxPool2d else 1
            if kind == 0 and m.return_indices:
                raise _refuse(where, "return_indices=True")
            if kind == 1 and m.divisor_override is not None:
                raise _refuse(where, "divisor_override")
            c, h, w_ = t.shape
            k = _pair(m.kernel_size)
            s = _pair(m.stride if m.stride is not None else m.kernel_size)
            pd = _pair(m.padding)
            d = _pair(m.dilation) if kind == 0 else (1, 1)
            ho, wo = _out_hw(h, w_, k, s, pd, d)
            if ho < 1 or wo < 1:
                raise _refuse(where, f"input {h}x{w_} is too small")
            cp = int(bool(getattr(m, "count_include_pad", True)))
            nt = _T(False, (c, ho, wo))
            dst = self._next(False, nt.size)
            self.body.append(f"bnn_pool_f({self.cur}, {c}, {h}, {w_}, {k[0]}, {k[1]}, {s[0]}, "
                             f"{s[1]}, {pd[0]}, {pd[1]}, {d[0]}, {d[1]}, {kind}, {cp}, {dst});")
            em.parts.add("pool_f")
            self._set(nt, dst)
            return
        if tp is nn.AdaptiveAvgPool2d:
            if len(t.shape) != 3:
                raise _refuse(where, f"expects (C, H, W), got {t.shape}")
            c, h, w_ = t.shape
            size = m.output_size if isinstance(m.output_size, (tuple, list)) else \
                (m.output_size, m.output_size)
            oh = h if size[0] is None else int(size[0])
            ow = w_ if size[1] is None else int(size[1])
            nt = _T(False, (c, oh, ow))
            dst = self._next(False, nt.size)
            self.body.append(f"bnn_adaptive_avg_f({self.cur}, {c}, {h}, {w_}, {oh}, {ow}, "
                             f"{dst});")
            em.parts.add("adaptive_avg_f")
            self._set(nt, dst)
            return
        acts: dict[type, tuple[int, float, float]] = {nn.ReLU: (0, 0.0, 0.0)}
        if tp is nn.Hardtanh:
            acts[tp] = (1, float(m.min_val), float(m.max_val))
        if tp is nn.LeakyReLU:
            acts[tp] = (2, float(m.negative_slope), 0.0)
        if tp in acts:
            kind, lo, hi = acts[tp]
            dst = self._next(False, t.size)
            self.body.append(f"bnn_act_f({self.cur}, {t.size}, {kind}, {_f32(lo)}, {_f32(hi)}, "
                             f"{dst});")
            em.parts.add("act_f")
            self._set(_T(False, t.shape), dst)
            return
        if tp in (nn.Tanh, nn.Sigmoid):
            raise _refuse(where, f"{tp.__name__} needs <math.h>; the exported C depends on "
                                 "<stdint.h> and <string.h> only")
        raise _refuse(where, "no C code for this module (supported float stages: Linear, "
                             "Conv2d, BatchNorm1d/2d, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, "
                             "ReLU, Hardtanh, LeakyReLU, Identity, Dropout, Flatten)")


# =========================================================================== result
@dataclass
class CExport:
    """What :func:`to_c` wrote and the memory it needs.

    Attributes:
        prefix: the C name prefix (``NAME``).
        header, source: paths of ``NAME.h`` and ``NAME.c``.
        files: every file written (header, source, example, Makefile, README).
        input_shape: the NCHW (or flat) shape of one input sample.
        input_size, output_size, arena_bytes: the header's three constants.
        memory: :func:`memory_report`'s dict for this export.
    """

    prefix: str
    header: Path
    source: Path
    files: list[Path]
    input_shape: tuple[int, ...]
    input_size: int
    output_size: int
    arena_bytes: int
    memory: dict

    def report(self) -> str:
        """The memory report as printed by the CLI."""
        return format_memory(self.memory)


# Approximate Thumb-2 code size (-Os, Cortex-M4) of each runtime kernel and of the generated
# predict function per stage; an estimate only: the tests compare it with arm-none-eabi-size.
_CODE_BYTES = {"base": 0, "popcount": 60, "valid_bits": 30, "bit": 20, "pack": 150, "emit": 150,
               "dense": 110, "conv": 330, "maxpool_bits": 260, "linear_f": 90, "conv_f": 380,
               "affine_f": 80, "pool_f": 330, "adaptive_avg_f": 220, "act_f": 120}
_CODE_PER_CALL = 40
_STACK_BYTES = 256


def memory_report(model: nn.Module, input_shape: tuple[int, ...], *,
                  word_bits: int = 32) -> dict:
    """Flash and RAM of the C export of ``model`` beside the float32 model's.

    Binary C: flash = packed weights + other parameters (thresholds, float layers, folded BN)
    + a code estimate; RAM = the static arena (two ping-pong halves for floats and two for
    words, sized for the largest activation) + a stack estimate. Float32 C (the same network
    with every binary weight stored as float32 and every activation a float): flash = 4 bytes
    per weight and parameter + the same code estimate; RAM = two float buffers of the largest
    activation + the same stack estimate.
    """
    built = _build(model, tuple(input_shape), "m", word_bits)
    return built[2]


def _float_twin_bytes(stages: list[Any], em: _Emitter) -> int:
    """float32 bytes of the weights and parameters with binary weights stored as floats."""
    from bnnlab import packed as P

    total = 0
    for m in stages:
        if isinstance(m, (P.PackedLinear, P.PackedConv2d)):
            total += int(m.float_weight_bytes())
            for key in ("alpha_q", "alpha_x", "gamma", "bias", "tau"):
                v = getattr(m, key)
                if v is not None:
                    total += 4 * int(v.numel())
            if m.fused:                              # the BN it replaced: 4 floats per channel
                total += 4 * 4 * (m.out_channels if isinstance(m, P.PackedConv2d)
                                  else m.out_features)
        elif isinstance(m, P.PackedSign):
            total += 4 * 4 * m.channels             # the BN it replaced
        else:
            total += sum(4 * int(p.numel()) for p in m.parameters())
            total += sum(4 * int(b.numel()) for b in m.buffers() if b.dtype.is_floating_point)
    return total


def _build(model: nn.Module, input_shape: tuple[int, ...], prefix: str,
           word_bits: int) -> tuple[_Emitter, _Builder, dict]:
    from bnnlab import packed as P

    stages = _stage_list(model)
    if not input_shape or any(isinstance(v, bool) or not isinstance(v, int) or v < 1
                              for v in input_shape) or len(input_shape) not in (1, 3):
        raise ValueError(f"input_shape must be (C, H, W) or (F,) positive ints, got "
                         f"{input_shape!r}")
    em = _Emitter(prefix, word_bits)
    b = _Builder(em, input_shape)
    i = 0
    while i < len(stages):
        m, nxt = stages[i], stages[i + 1] if i + 1 < len(stages) else None
        if type(m) is nn.Conv2d and isinstance(nxt, P.PackedSign) and nxt.ndim == 4 \
                and nxt.channels == m.out_channels and not b.t.bits:
            _check_known(nxt, _who(i + 1, nxt))
            b._float(i, m, _who(i, m), sign=nxt)          # conv + binarisation in one pass
            i += 2
            continue
        b.add(i, m)
        i += 1
    if b.t.bits:
        raise _refuse("this PackedModel", "it ends on packed bits; the last stage must be float")
    if b.cur == "input":
        raise _refuse("this PackedModel", "no stage computes anything")
    arena = 4 * (b.fmax[0] + b.fmax[1]) + word_bits // 8 * (b.wmax[0] + b.wmax[1])
    code = sum(_CODE_BYTES[n] for n in c_runtime_parts(em.parts)) + \
        _CODE_PER_CALL * len(b.body) + 200
    flash = em.flash["weights"] + em.flash["parameters"] + code
    # float twin: every activation a float, two buffers of the largest one
    biggest = b.largest
    fl_params = _float_twin_bytes(stages, em)
    mem: dict[str, Any] = {
        "word_bits": word_bits,
        "weights_bytes": em.flash["weights"],
        "parameters_bytes": em.flash["parameters"],
        "code_estimate_bytes": code,
        "flash_bytes": flash,
        "arena_bytes": arena,
        "stack_estimate_bytes": _STACK_BYTES,
        "ram_bytes": arena + _STACK_BYTES,
        "float32_flash_bytes": fl_params + code,
        "float32_ram_bytes": 2 * 4 * biggest + _STACK_BYTES,
        "binary_ops": b.binary_ops,
        "float_ops": b.float_ops,
    }
    mem["flash_ratio"] = mem["float32_flash_bytes"] / flash
    mem["ram_ratio"] = mem["float32_ram_bytes"] / mem["ram_bytes"]
    return em, b, mem


def c_runtime_parts(names: set[str]) -> set[str]:
    """The runtime parts ``names`` pull in (with their dependencies)."""
    need = {"base"}
    todo = list(names)
    while todo:
        n = todo.pop()
        if n not in need:
            need.add(n)
            todo.extend(c_runtime._PARTS[n][0])
    return need


def format_memory(mem: dict) -> str:
    """The memory report as a few printable lines."""
    def kib(n: float) -> str:
        return f"{n / 1024:.1f} KiB"

    return "\n".join([
        f"  flash: {kib(mem['flash_bytes'])} (binary weights {kib(mem['weights_bytes'])}, other "
        f"parameters {kib(mem['parameters_bytes'])}, code ~{kib(mem['code_estimate_bytes'])}) "
        f"vs float32 {kib(mem['float32_flash_bytes'])} ({mem['flash_ratio']:.1f}x smaller)",
        f"  RAM:   {kib(mem['ram_bytes'])} (arena {kib(mem['arena_bytes'])}, stack "
        f"~{kib(mem['stack_estimate_bytes'])}) vs float32 {kib(mem['float32_ram_bytes'])} "
        f"({mem['ram_ratio']:.1f}x smaller)",
    ])


# =========================================================================== files
def _header(prefix: str, up: str, n_in: int, n_out: int, arena: int,
            input_shape: tuple[int, ...]) -> str:
    return f"""/* {prefix}.h: a binary neural network exported by bnnlab (python -m bnnlab export-c).
   C99, no dynamic allocation; depends on <stdint.h> and <string.h> only.
   Input: {n_in} floats, one sample of shape {tuple(input_shape)} in NCHW order; inputs must be
   finite. Output: {n_out} float logits. Not reentrant: the scratch arena is one static buffer. */
#ifndef {up}_H
#define {up}_H

#ifdef __cplusplus
extern "C" {{
#endif

#define {up}_INPUT_SIZE {n_in}
#define {up}_OUTPUT_SIZE {n_out}
#define {up}_ARENA_BYTES {arena}

void {prefix}_predict(const float *input, float *output);
int {prefix}_argmax(const float *input);

#ifdef __cplusplus
}}
#endif

#endif /* {up}_H */
"""


def _source(em: _Emitter, b: _Builder, up: str) -> str:
    pre = em.prefix
    bufs = []
    for i in (0, 1):
        if b.fmax[i]:
            bufs.append(f"static float {pre}_fbuf{i}[{b.fmax[i]}];")
        if b.wmax[i]:
            bufs.append(f"static bnn_word {pre}_wbuf{i}[{b.wmax[i]}];")
    body = "\n    ".join(b.body)
    return f"""/* {pre}.c: generated by bnnlab (python -m bnnlab export-c); do not edit.
   Word size {em.word_bits} bits; see {pre}.h. */
#include <stdint.h>
#include <string.h>
#include "{pre}.h"

#define BNN_WORD_BITS {em.word_bits}
{c_runtime.runtime(em.parts)}
/* ---------------------------------------------------------------- parameters */
{chr(10).join(em.decls)}

/* ---------------------------------------------------------------- scratch arena
   ({up}_ARENA_BYTES bytes in all: ping-pong buffers for floats and for packed words) */
{chr(10).join(bufs)}

void {pre}_predict(const float *input, float *output)
{{
    {body}
    memcpy(output, {b.cur}, sizeof(float) * {up}_OUTPUT_SIZE);
}}

int {pre}_argmax(const float *input)
{{
    float y[{up}_OUTPUT_SIZE];
    int i, best = 0;
    {pre}_predict(input, y);
    for (i = 1; i < {up}_OUTPUT_SIZE; i++) {{
        if (y[i] > y[best]) {{
            best = i;
        }}
    }}
    return best;
}}
"""


def _example(prefix: str, up: str) -> str:
    return f"""/* example.c: run {prefix} on inputs read from a file of float32 samples (or zeros).
   usage: ./example [inputs.f32]   prints the arg-max and the logits of each sample */
#include <stdio.h>
#include "{prefix}.h"

int main(int argc, char **argv)
{{
    static float x[{up}_INPUT_SIZE];
    float y[{up}_OUTPUT_SIZE];
    FILE *f = argc > 1 ? fopen(argv[1], "rb") : NULL;
    int n = 0, i;
    if (argc > 1 && f == NULL) {{
        perror(argv[1]);
        return 1;
    }}
    while (f == NULL ? n == 0 : fread(x, sizeof(float), {up}_INPUT_SIZE, f) == {up}_INPUT_SIZE) {{
        {prefix}_predict(x, y);
        printf("%d %d", n, {prefix}_argmax(x));
        for (i = 0; i < {up}_OUTPUT_SIZE; i++) {{
            printf(" %.9g", (double)y[i]);
        }}
        printf("\\n");
        n++;
    }}
    if (f != NULL) {{
        fclose(f);
    }}
    return 0;
}}
"""


def _makefile(prefix: str) -> str:
    return f"""# Build the example (host). Cross builds: make CC=arm-linux-gnueabihf-gcc, or
#   arm-none-eabi-gcc -mcpu=cortex-m4 -mthumb -Os -std=c99 -c {prefix}.c  (the model alone)
CC     ?= cc
CFLAGS ?= -std=c99 -O2 -Wall -Wextra -pedantic

example: example.c {prefix}.c {prefix}.h
\t$(CC) $(CFLAGS) -o $@ example.c {prefix}.c

clean:
\trm -f example
"""


def _readme(prefix: str, up: str, mem: dict, input_shape: tuple[int, ...], word_bits: int,
            notes: list[str]) -> str:
    return f"""# {prefix}: a binary neural network as plain C

Generated by `python -m bnnlab export-c` (bnnlab). Files: `{prefix}.h`, `{prefix}.c` (C99, no
dynamic allocation, `<stdint.h>` and `<string.h>` only), `example.c`, `Makefile`.

```c
#include "{prefix}.h"
float x[{up}_INPUT_SIZE];   /* one sample {tuple(input_shape)}, NCHW, finite */
float y[{up}_OUTPUT_SIZE];  /* logits */
{prefix}_predict(x, y);
int label = {prefix}_argmax(x);
```

Packed words are {word_bits}-bit (`--word-bits 32` for 32-bit targets). Compile without
floating-point contraction (GCC: `-std=c99` or `-ffp-contract=off`) to get the packed model's
float epilogues bit for bit. `make && ./example inputs.f32` runs the example on a file of
float32 samples.

Memory (computed at export):

{format_memory(mem)}

Export notes:
{chr(10).join('- ' + n for n in notes) if notes else '- none'}
"""


def infer_input_shape(model: nn.Module) -> tuple[int, ...]:
    """The input shape of one sample, where the stages determine it.

    A first dense stage (``Linear``, ``PackedLinear``, or ``Flatten`` then one of them) gives
    ``(in_features,)``; a first conv (float or packed) gives ``(C, S, S)`` with the smallest
    square size S for which every later stage's shape matches (a flatten feeding a dense
    layer fixes it). ValueError where it stays ambiguous: pass ``input_shape``.
    """
    from bnnlab import packed as P

    stages = _stage_list(model)
    first = next((m for m in stages if type(m) not in (nn.Identity, nn.Dropout, nn.Flatten)),
                 None)
    if isinstance(first, nn.Linear):
        return (first.in_features,)
    if isinstance(first, P.PackedLinear):
        return (first.in_features,)
    if isinstance(first, P.PackedSign) and first.ndim == 2:
        return (first.channels,)
    channels = None
    if isinstance(first, (nn.Conv2d, P.PackedConv2d)):
        channels = first.in_channels
    elif isinstance(first, (P.PackedSign, nn.BatchNorm2d)):
        channels = first.channels if isinstance(first, P.PackedSign) else first.num_features
    if channels is None:
        raise ValueError("cannot infer the input shape from the first stage "
                         f"({type(first).__name__}); pass input_shape")
    has_flatten = any(isinstance(m, (nn.Flatten, P.PackedFlatten)) for m in stages)
    if not has_flatten:
        raise ValueError("cannot infer the image size of a model without a flatten; pass "
                         "input_shape=(C, H, W)")
    fits: list[int] = []
    for s in range(1, 513):
        try:
            _build(model, (channels, s, s), "probe", 32)
        except ValueError:
            if fits:
                break
            continue
        fits.append(s)
    if len(fits) == 1:
        return (channels, fits[0], fits[0])
    if not fits:
        raise ValueError("no square input size up to 512 fits this model; pass input_shape")
    raise ValueError(f"the input size is ambiguous: square images of {fits[0]} to {fits[-1]} "
                     f"pixels fit this model (pooling rounds down); pass input_shape=({channels}, H, W) "
                     "(CLI: --input-shape C,H,W)")


def to_c(model: nn.Module, outdir: str | os.PathLike, *, input_shape: Any = None,
         prefix: str = "bnn_model", word_bits: int = 32) -> CExport:
    """Write ``model`` (a sequential :class:`~bnnlab.packed.PackedModel`) as C into ``outdir``.

    Args:
        model: the packed model (:func:`bnnlab.packed.export` of a flat ``nn.Sequential``, or
            :func:`bnnlab.packed.load` of a saved file).
        outdir: folder to create or fill (``NAME.h``, ``NAME.c``, ``example.c``, ``Makefile``,
            ``README.md``).
        input_shape: one sample's shape, ``(C, H, W)`` or ``(F,)``. Default: inferred
            (:func:`infer_input_shape`).
        prefix: the C identifier prefix ``NAME`` (``NAME_predict``, ``NAME_INPUT_SIZE`` upper
            case). Default: ``"bnn_model"``.
        word_bits: 32 (32-bit targets: Cortex-M, ARMv7) or 64. Default: ``32``.

    Returns:
        :class:`CExport` (paths, header constants, memory report).

    Raises:
        TypeError: ``model`` is not a PackedModel.
        ValueError: a stage C cannot reproduce (the message names it), bad arguments.
    """
    if not isinstance(prefix, str) or not prefix.isidentifier() or not prefix.isascii():
        raise ValueError(f"prefix must be a C identifier, got {prefix!r}")
    word_bits = check_choice(word_bits, "word_bits", (32, 64))
    if not isinstance(outdir, (str, os.PathLike)):
        raise TypeError(f"outdir must be a str or os.PathLike, got {type(outdir).__name__}")
    _stage_list(model)
    if input_shape is None:
        shape = infer_input_shape(model)
    else:
        if not isinstance(input_shape, (tuple, list)):
            raise TypeError(f"input_shape must be a tuple, got {type(input_shape).__name__}")
        shape = tuple(check_int(v, "input_shape", min_value=1) for v in input_shape)
    em, b, mem = _build(model, shape, prefix, word_bits)
    up = prefix.upper()
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    n_in = int(np.prod(shape))
    n_out = b.t.size
    arena = mem["arena_bytes"]
    files = {
        f"{prefix}.h": _header(prefix, up, n_in, n_out, arena, shape),
        f"{prefix}.c": _source(em, b, up),
        "example.c": _example(prefix, up),
        "Makefile": _makefile(prefix),
        "README.md": _readme(prefix, up, mem, shape, word_bits,
                             [str(n) for n in getattr(model, "notes", [])]),
    }
    paths = []
    for name, text in files.items():
        path = out / name
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return CExport(prefix, out / f"{prefix}.h", out / f"{prefix}.c", paths, shape, n_in, n_out,
                   arena, mem)


# =========================================================================== running it
STRICT_CFLAGS = ("-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic")


def _inputs(res: CExport, x: Any) -> np.ndarray:
    arr = np.ascontiguousarray(np.asarray(x, np.float32)).reshape(-1, res.input_size)
    if not np.isfinite(arr).all():
        raise ValueError("x must be finite")
    return arr


def _run(cmd: list[str], timeout: float, **kw: Any) -> str:
    import subprocess

    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,  # noqa: S603
                          **kw)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed ({proc.returncode}):\n"
                           f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return proc.stdout


def _parse(out: str, n: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    rows = [line.split() for line in out.splitlines() if line[:1].isdigit()]
    if len(rows) != n:
        raise RuntimeError(f"expected {n} result lines, got {len(rows)}:\n{out[-2000:]}")
    pred = np.array([int(r[1]) for r in rows])
    logits = np.array([[float(v) for v in r[2:2 + n_out]] for r in rows], np.float32)
    return pred, logits


def run_host(res: CExport, x: Any, *, cc: str = "gcc", cflags: Any = STRICT_CFLAGS, extra: Any = (),
             emulator: Any = (), timeout: float = 600.0) -> tuple[np.ndarray, np.ndarray]:
    """Compile the export's ``example.c`` with ``cc`` and run it on the samples ``x``.

    Args:
        res: :func:`to_c`'s result.
        x: float32 samples, ``(N, *input_shape)``.
        cc, cflags, extra: compiler and flags (``extra`` appended, e.g. sanitizers or
            ``-static`` for a cross compiler).
        emulator: command prefix to run the program (e.g. ``("qemu-arm", "-L", sysroot)``).

    Returns:
        ``(predictions (N,), logits (N, OUTPUT_SIZE))`` printed by the C program.
    """
    arr = _inputs(res, x)
    d = res.source.parent
    exe = d / f"example_{Path(cc).name}"
    _run([cc, *cflags, *extra, "-o", str(exe), str(d / "example.c"), str(res.source)], timeout)
    arr.astype("<f4").tofile(d / "inputs.f32")
    out = _run([*emulator, str(exe), str(d / "inputs.f32")], timeout)
    return _parse(out, arr.shape[0], res.output_size)


def cortex_m_size(res: CExport, *, cpu: str = "cortex-m4", timeout: float = 300.0) -> dict:
    """Build ``NAME.c`` alone with ``arm-none-eabi-gcc -mcpu=cpu -mthumb -Os -Werror`` and
    read ``arm-none-eabi-size``: ``{"text", "data", "bss", "flash", "ram"}`` bytes (flash =
    text + data, RAM = data + bss; the stack is not included)."""
    d = res.source.parent
    obj = d / f"{res.prefix}_{cpu}.o"
    _run(["arm-none-eabi-gcc", f"-mcpu={cpu}", "-mthumb", "-Os", *STRICT_CFLAGS[:1],
          *STRICT_CFLAGS[2:], "-c", "-o", str(obj), str(res.source)], timeout)
    out = _run(["arm-none-eabi-size", str(obj)], timeout).splitlines()[-1].split()
    text, data, bss = (int(v) for v in out[:3])
    return {"text": text, "data": data, "bss": bss, "flash": text + data, "ram": data + bss}


def host_latency(res: CExport, x: Any, *, repeats: int = 200, cc: str = "gcc",
                 timeout: float = 600.0) -> float:
    """Median seconds of one ``NAME_predict`` call on the host (``cc -O2``, one core), over
    ``repeats`` calls cycling through the samples ``x`` (a timing program beside the export,
    ``clock_gettime(CLOCK_MONOTONIC)``; medians of batches of 10 calls)."""
    arr = _inputs(res, x)
    repeats = check_int(repeats, "repeats", min_value=10)
    d = res.source.parent
    up = res.prefix.upper()
    (d / "timing.c").write_text(f"""#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "{res.prefix}.h"
static float x[{arr.shape[0]}][{up}_INPUT_SIZE];
static int cmp(const void *a, const void *b)
{{
    double u = *(const double *)a, v = *(const double *)b;
    return (u > v) - (u < v);
}}
int main(int argc, char **argv)
{{
    static double t[{repeats // 10}];
    float y[{up}_OUTPUT_SIZE];
    volatile float sink = 0.0f;
    FILE *f = fopen(argv[argc - 1], "rb");
    int i, j;
    if (f == NULL || fread(x, sizeof x, 1, f) != 1) {{
        return 1;
    }}
    fclose(f);
    for (i = 0; i < {repeats // 10}; i++) {{
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        for (j = 0; j < 10; j++) {{
            {res.prefix}_predict(x[(i * 10 + j) % {arr.shape[0]}], y);
            sink += y[0];
        }}
        clock_gettime(CLOCK_MONOTONIC, &b);
        t[i] = ((double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec)) / 10.0;
    }}
    qsort(t, {repeats // 10}, sizeof(double), cmp);
    printf("%.9g\\n", t[{repeats // 20}]);
    return (int)(sink != sink);
}}
""", encoding="utf-8")
    exe = d / "timing"
    arr.astype("<f4").tofile(d / "timing_inputs.f32")
    _run([cc, "-std=c99", "-O2", "-o", str(exe), str(d / "timing.c"), str(res.source)], timeout)
    return float(_run([str(exe), str(d / "timing_inputs.f32")], timeout).split()[0])


_MPS2_LD = """MEMORY
{
  FLASH (rx)  : ORIGIN = 0x00000000, LENGTH = 4M
  RAM   (rwx) : ORIGIN = 0x20000000, LENGTH = 4M
}
ENTRY(reset)
SECTIONS
{
  .text : { KEEP(*(.vectors)) *(.text*) *(.rodata*) . = ALIGN(4); } > FLASH
  .ARM.exidx : { *(.ARM.exidx*) } > FLASH
  __etext = .;
  .data : AT(__etext) { __data_start__ = .; *(.data*) . = ALIGN(4); __data_end__ = .; } > RAM
  .bss (NOLOAD) : { __bss_start__ = .; *(.bss*) *(COMMON) . = ALIGN(4); __bss_end__ = .; } > RAM
  end = .;
  __end__ = .;
  __stack_top = ORIGIN(RAM) + LENGTH(RAM);
}
"""

_MPS2_STARTUP = """/* minimal start-up for qemu's mps2-an385 (Cortex-M3) with newlib semihosting */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
extern uint32_t __etext, __data_start__, __data_end__, __bss_start__, __bss_end__;
extern uint32_t __stack_top;
extern void initialise_monitor_handles(void);
int main(void);
void reset(void);
void _init(void);
void _fini(void);
__attribute__((section(".vectors"), used))
const void *const bnn_vectors[2] = {&__stack_top, (const void *)reset};
void _init(void) {}
void _fini(void) {}
void reset(void)
{
    memcpy(&__data_start__, &__etext, (size_t)((char *)&__data_end__ - (char *)&__data_start__));
    memset(&__bss_start__, 0, (size_t)((char *)&__bss_end__ - (char *)&__bss_start__));
    initialise_monitor_handles();
    exit(main());
}
"""


def run_mps2(res: CExport, x: Any, *, timeout: float = 300.0) -> tuple[np.ndarray, np.ndarray]:
    """Run the model on the emulated Cortex-M3 board ``mps2-an385`` (qemu, semihosting).

    The samples ``x`` are embedded in the program as ``static const`` floats; it is built with
    ``arm-none-eabi-gcc -mcpu=cortex-m3 -mthumb -Os`` and newlib's ``rdimon.specs`` (a
    two-entry vector table and a tiny linker script, as newlib's own start-up locks up on
    this board) and run with ``qemu-system-arm -M mps2-an385 -nographic -semihosting``. It
    prints each arg-max and the logits' float32 bit patterns.

    Returns:
        ``(predictions (N,), logits (N, OUTPUT_SIZE))``.
    """
    arr = _inputs(res, x)
    d = res.source.parent
    up = res.prefix.upper()
    data = ",\n".join("  {" + ", ".join(_f32(v) for v in row) + "}" for row in arr)
    main_c = f"""#include <stdio.h>
#include <string.h>
#include <stdint.h>
#include "{res.prefix}.h"
static const float inputs[{arr.shape[0]}][{up}_INPUT_SIZE] = {{
{data}
}};
int main(void)
{{
    float y[{up}_OUTPUT_SIZE];
    int n, i;
    for (n = 0; n < {arr.shape[0]}; n++) {{
        {res.prefix}_predict(inputs[n], y);
        printf("%d %d", n, {res.prefix}_argmax(inputs[n]));
        for (i = 0; i < {up}_OUTPUT_SIZE; i++) {{
            uint32_t b;
            memcpy(&b, &y[i], sizeof b);
            printf(" %08lx", (unsigned long)b);
        }}
        printf("\\n");
    }}
    return 0;
}}
"""
    (d / "mcu_main.c").write_text(main_c, encoding="utf-8")
    (d / "mcu_startup.c").write_text(_MPS2_STARTUP, encoding="utf-8")
    (d / "mps2.ld").write_text(_MPS2_LD, encoding="utf-8")
    elf = d / "mcu.elf"
    _run(["arm-none-eabi-gcc", "-mcpu=cortex-m3", "-mthumb", "-Os", "-std=c99", "-Wall",
          "-Wextra", "-Werror", "--specs=rdimon.specs", "-nostartfiles", "-T", str(d / "mps2.ld"),
          "-o", str(elf), str(d / "mcu_startup.c"), str(d / "mcu_main.c"), str(res.source)],
         timeout)
    out = _run(["qemu-system-arm", "-M", "mps2-an385", "-nographic", "-semihosting",
                "-kernel", str(elf)], timeout)
    rows = [line.split() for line in out.splitlines() if line[:1].isdigit()]
    if len(rows) != arr.shape[0]:
        raise RuntimeError(f"expected {arr.shape[0]} lines from the board, got:\n{out[-2000:]}")
    pred = np.array([int(r[1]) for r in rows])
    bits = np.array([[int(v, 16) for v in r[2:2 + res.output_size]] for r in rows], np.uint32)
    return pred, bits.view(np.float32)


def reference_deployment(workdir: str | os.PathLike | None = None, *, seed: int = 0) -> dict:
    """Flash and RAM of the reference CNN (``models.binary_cnn()``, 28×28) exported as C.

    The sizes do not depend on the weight values, so the model is not trained: seeded
    initialisation, BatchNorm statistics from a few train-mode passes over random images.
    Returns :func:`memory_report`'s dict for 32-bit words plus ``"cortex_m4"``
    (:func:`cortex_m_size`, or ``None`` without ``arm-none-eabi-gcc``) and ``"parameters"``.
    """
    import shutil
    import tempfile

    from bnnlab import models
    from bnnlab import packed as P

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = models.binary_cnn()
    net.train()
    with torch.no_grad():
        for _ in range(4):
            net(torch.randn(16, 1, 28, 28, generator=gen))
    net.eval()
    pk = P.export(net, torch.randn(4, 1, 28, 28, generator=gen))
    with tempfile.TemporaryDirectory() as tmp:
        res = to_c(pk, workdir if workdir is not None else tmp, input_shape=(1, 28, 28))
        out = dict(res.memory)
        out["cortex_m4"] = cortex_m_size(res) if shutil.which("arm-none-eabi-gcc") else None
    out["parameters"] = sum(int(p.numel()) for p in net.parameters())
    return out


# =========================================================================== CLI
def main(argv: list[str] | None = None) -> int:
    """``python -m bnnlab export-c MODEL.bnn OUTDIR [--word-bits 32|64] [--prefix NAME]``."""
    from bnnlab import packed as P

    p = argparse.ArgumentParser(
        prog="python -m bnnlab export-c",
        description="Write a packed model file (PackedModel.save, python -m bnnlab export) as "
                    "self-contained C99 (NAME.h, NAME.c, an example, a Makefile) and print its "
                    "flash/RAM next to the float32 model's.")
    p.add_argument("model", help="packed model file (PackedModel.save)")
    p.add_argument("outdir", help="output folder")
    p.add_argument("--word-bits", type=int, choices=(32, 64), default=32,
                   help="packed word size: 32 for 32-bit targets (default), 64")
    p.add_argument("--prefix", default="bnn_model", help="C name prefix (default: bnn_model)")
    p.add_argument("--input-shape", default=None,
                   help="one sample's shape, e.g. 1,28,28 or 784 (default: inferred)")
    args = p.parse_args(argv)
    try:
        shape = None
        if args.input_shape:
            shape = tuple(int(v) for v in args.input_shape.split(","))
        model = P.load(args.model)
        res = to_c(model, args.outdir, input_shape=shape, prefix=args.prefix,
                   word_bits=args.word_bits)
    except (ValueError, TypeError, OSError) as exc:
        print(f"bnnlab export-c: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {', '.join(str(f) for f in res.files)}")
    print(f"  {res.prefix.upper()}_INPUT_SIZE={res.input_size} "
          f"{res.prefix.upper()}_OUTPUT_SIZE={res.output_size} "
          f"{res.prefix.upper()}_ARENA_BYTES={res.arena_bytes} (input shape {res.input_shape})")
    print(res.report())
    return 0
