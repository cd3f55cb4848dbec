r"""Packed inference: trained binary layers and networks running on the packed-bit kernels.

Training layers (:mod:`bnnlab.layers`) keep real latent weights and surrogate gradients; the
modules here hold the *packed* signs (64 per ``uint64`` word, :mod:`bnnlab.kernels`) and are
inference-only (no autograd, always in eval mode).

Two ways in:

* **Module replacement** works for any model, residual ones included (Bi-Real, ReActNet):
  every binary layer becomes a :class:`PackedLinear` / :class:`PackedConv2d` that takes a float
  tensor, packs the sign of its (quantised) input, runs the XNOR-popcount kernel and returns
  the float output :math:`\alpha \odot d + b`, with :math:`d = \langle x_b, W_b\rangle` the
  integer dot product.
* **Fused chains** in flat :class:`torch.nn.Sequential` models (the reference
  ``models.binary_mlp`` / ``models.binary_cnn``): for
  ``BinaryLayer -> [BatchNorm / monotone activations] -> [MaxPool2d] -> [Flatten] -> BinaryLayer``
  the scale, bias, BatchNorm and activations are folded into one integer threshold per output
  channel (with a *flip* where the chain is decreasing, e.g. a negative BN scale), so the kernel
  emits the next layer's packed input directly; a max-pool runs on the packed bits (AND, or OR
  for flipped channels) and a flatten re-lays the bits for the next dense layer. Activations
  are never unpacked to float between two binary layers. In front of the first binary layer
  of a chain, ``[MaxPool2d] / BatchNorm / monotone activations -> sign`` on the float output
  of the first layer becomes one exact per-channel float comparison (:class:`PackedSign`,
  thresholds found by bisection over float32 with the torch modules) plus a max-pool on bits.
  The last binary layer has a float epilogue; float first/last layers and the modules after
  the last binary layer stay torch, except that an eval BatchNorm directly after that layer
  is folded into its epilogue (``export(..., fold_float_bn=True)``, the default; see
  *Exactness*). ``PackedModel.notes`` says what was fused or folded and why not.

Exactness
---------
The integer parts are bit-exact (:math:`d` is an exact integer). Integer thresholds are found by
evaluating *the torch modules themselves* (in eval mode, float32) on every value :math:`d` can
take (:math:`-K, -K+2, \dots, K`) for every channel, so a fused sign reproduces torch's float32
``sign(BN(...))`` including exact ties (sign(0) = +1) and rounding near ties; no threshold is
computed by a separate float formula. For BinaryNet layers (sign weights, no α) the torch layer
output *is* the integer :math:`d`, so the packed model equals the torch model exactly
(``torch.equal`` in the tests; torch may add a conv/linear *bias* inside its accumulation, a
float32 rounding difference). With a per-channel weight scale α (``MagnitudeAwareSign``,
``ScaledSign``) the torch layer sums :math:`\pm\alpha` terms in float32 with its own rounding
while the packed layer computes ``float32(d) * α`` once: outputs agree to float rounding
(``allclose``), not bit for bit.

The default ``fold_float_bn=True`` of :func:`export` (with ``fuse=True``) also folds the eval
BatchNorm that follows the last binary layer of a chain into its float epilogue (one
per-channel ``scale * d + offset``, computed in float64 and rounded once to float32; layer
attribute ``folded_bn``, noted in ``PackedModel.notes``). The integer parts stay bit-exact; the
float outputs then agree with torch to float rounding (``allclose``, predictions identical on
the reference models) rather than bit for bit. ``export(..., fold_float_bn=False)`` keeps the
BatchNorm as a torch stage and the bit-exact behaviour described above.

Export rules (``export`` raises :class:`ValueError` naming the layer, never changes the math):

* input quantizer: ``SteSign``, ``ApproxSign``, ``SwishSign`` (forward = sign), ``StochasticSign``
  (deterministic in eval; refused with ``stochastic_eval=True``), ``RSign`` (sign(x - τ_c), τ
  applied in float32 as torch does), ``ScaledSign`` (s ≠ 0, folded into the output scale; with
  ``pad_value = ±1`` padding only if ``|s| = 1``, since torch pads ``s·sign(x)`` with ±1, not ±s), or
  ``None`` only where the input is the output of a ±1 quantizer module (as in ReActNet; checked
  with ``torch.fx``; the packed layer also refuses non-±1 inputs at run time). Anything else
  (``SteHeaviside``'s {0, 1}, ``MagnitudeAwareSign`` on inputs, custom modules) is refused.
* weight quantizer: anything deterministic in eval mode whose output has rows
  :math:`\pm\alpha_o` (sign, magnitude-aware, scaled, stochastic in eval); ``None`` (real
  weights), ``StochasticSign(stochastic_eval=True)``, any quantizer whose two calls differ, or
  other outputs are refused.
* convolutions: ``groups == 1``, ``dilation == 1``, symmetric padding; ``pad_value`` ±1 or 0.
  Torch's zero padding (``pad_value = 0``, the default of converted models) is reproduced
  exactly: the kernel pads with +1 and subtracts the input-independent contribution of the
  padded taps (:func:`bnnlab.kernels.zero_padding_correction`, per output position and
  channel); fused thresholds are then evaluated on every integer ``d``, both parities.
* XNOR-Net: α (per output channel) is applied in float; β (dense, per sample) and the K-map
  (conv) are computed in float alongside from the real input, exactly as
  :class:`~bnnlab.layers.XnorLinear` / :class:`~bnnlab.layers.XnorConv2d` do; such layers take a
  float input, so they are not fused. XNOR-Net++ Γ (any mode) is applied in float.
* ABC-Net layers, ``BinaryConv1d`` and any other binary layer: refused.
* a model whose parameters are not float32 is refused.

File format (``PackedModel.save``; never pickled)
-------------------------------------------------
A little-endian binary file::

    offset 0        8 bytes   magic b"BNNLABPK"
    offset 8        uint32    format version (FORMAT_VERSION = 1)
    offset 12       uint32    H, length of the compressed header
    offset 16       uint64    Z, length of the compressed payload
    offset 24       H bytes   zlib(UTF-8 JSON header): {"format": "bnnlab.packed", "version": 1,
                              "payload_bytes": P, "source_state_dict_bytes": int | null,
                              "stages": [{"kind", "name", "cfg", "arrays": {name: [dtype,
                              shape, offset]}}]}
    offset 24 + H   Z bytes   zlib(payload): P bytes of arrays, C order, little-endian, each
                              at an 8-byte aligned offset
    end - 32        32 bytes  SHA-256 of every preceding byte

Stage kinds: ``packed_linear``, ``packed_conv2d`` (words ``uint64``, α/bias/τ ``float32``,
fused ``threshold`` ``float32`` (integers or ±inf) and ``flip`` bits; optional cfg
``folded_bn: true`` when a BatchNorm was folded into α/bias, only on unfused layers; files
without it load as before), ``packed_maxpool2d``
(``or_channels`` bits), ``packed_flatten``, ``packed_sign`` (``threshold`` ``float32``,
``negate`` bits), and the float modules ``linear``, ``conv2d``, ``batchnorm1d/2d``,
``maxpool2d``, ``avgpool2d``, ``adaptiveavgpool2d``, ``flatten``, ``relu``, ``hardtanh``,
``leakyrelu``, ``tanh``, ``sigmoid``, ``identity``, ``dropout`` (float32 parameters).
:func:`load` checks the magic, version, lengths and checksum, then every stage kind, its
configuration and each array's dtype and shape against what the kind needs (``ValueError``
otherwise); decompression is bounded by the declared sizes. Only flat-sequential exports
(the reference models) can be saved.

References:
    Courbariaux et al., *Binarized Neural Networks*, 2016 (BN folded into a sign);
    Rastegari et al., *XNOR-Net*, ECCV 2016; Bannink et al., *Larq Compute Engine*, MLSys 2021
    (bit layout, one-padding, fused output thresholds); Umuroglu et al., *FINN*, FPGA 2017
    (BN + sign as an integer threshold).
"""
from __future__ import annotations

import argparse
import builtins
import contextlib
import copy
import functools
import hashlib
import io
import json
import math
import os
import struct
import sys
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bnnlab import kernels
from bnnlab import quantizers as Q
from bnnlab.blocks import LearnableBias, RPReLU
from bnnlab.kernels import IntPair
from bnnlab.layers import (
    AbcConv2d,
    AbcLinear,
    BinaryConv2d,
    BinaryLinear,
    XnorConv2d,
    XnorLinear,
    XnorPlusConv2d,
    XnorPlusLinear,
    _BinaryMixin,
)

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "PackedLinear",
    "PackedConv2d",
    "PackedMaxPool2d",
    "PackedFlatten",
    "PackedSign",
    "PackedModel",
    "export",
    "load",
    "main",
]

FORMAT_VERSION = 1
MAGIC = b"BNNLABPK"
_FORMAT_NAME = "bnnlab.packed"
_DIGEST_BYTES = 32

_SIGN_QUANTIZERS = (Q.SteSign, Q.ApproxSign, Q.SwishSign)
_PM1_QUANTIZERS = (Q.SteSign, Q.ApproxSign, Q.SwishSign, Q.StochasticSign, Q.RSign)


# =============================================================================== helpers
def _layer_name(name: str | None, layer: Any) -> str:
    return f"layer {name!r} ({type(layer).__name__})" if name else type(layer).__name__


def _refuse(where: str, why: str) -> ValueError:
    return ValueError(f"cannot export {where}: {why}")


def _bits_to_words(flags: np.ndarray) -> np.ndarray:
    """Bool vector (n,) -> uint64 words (ceil(n/64),), bit i%64 of word i//64 = flags[i]."""
    n = flags.shape[0]
    buf = np.zeros(kernels.n_words(n) * 8, np.uint8)
    packed = np.packbits(flags.astype(np.uint8), bitorder="little")
    buf[: packed.size] = packed
    return buf.view("<u8").astype(np.uint64)


def _bits_out(cls: Any, words: np.ndarray, length: int) -> Any:
    """Wrap words that are valid by construction (reshaped kernel output) with the kernels'
    unchecked public constructor (the padding-bit re-check would cost microseconds per call)."""
    return cls.trusted(words, length)


def _as_f32(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.detach().to(torch.float32).clone().contiguous()


@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Put ``module`` (and children) in eval mode, restoring every flag afterwards."""
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, flag in flags:
            m.training = flag


def _draws_in_eval(q: Any) -> bool:
    """Does quantizer ``q`` (a StochasticSign) draw noise in eval mode?"""
    return bool(q.stochastic_eval) and float(q.scale) > 0


def _check_float32(layer: Any, where: str) -> None:
    for p in layer.parameters(recurse=False):
        if p.dtype != torch.float32:
            raise _refuse(where, f"parameters must be float32, got {p.dtype}")
        if p.device.type != "cpu":
            raise _refuse(where, f"parameters must be on the CPU, got {p.device}")


# =============================================================================== quantizers
def _check_sign_probe(q: nn.Module, where: str, scale: float = 1.0) -> None:
    """A cheap guard against subclasses whose forward is not the documented sign."""
    probe = torch.tensor([-3.0, -1.0, -1e-30, -0.0, 0.0, 1e-30, 0.5, 2.0])
    with torch.no_grad():
        got = q(probe)
    want = torch.where(probe >= 0, 1.0, -1.0) * scale
    if got.shape != probe.shape or not torch.equal(got.to(torch.float32), want):
        raise _refuse(where, f"input_quantizer {type(q).__name__} does not compute sign(x) "
                             "(sign(0) = +1) in eval mode")


def _input_spec(layer: Any, where: str) -> dict:
    """How the packed layer binarises its input: {"mode", "tau", "scale"}."""
    q = layer.input_quantizer
    if q is None:
        return {"mode": "binary", "tau": None, "scale": 1.0}
    if isinstance(q, Q.StochasticSign):
        if _draws_in_eval(q):
            raise _refuse(where, "StochasticSign(stochastic_eval=True) draws noise at inference; "
                                 "a packed layer is deterministic")
        _check_sign_probe(q, where)
        return {"mode": "sign", "tau": None, "scale": 1.0}
    if isinstance(q, _SIGN_QUANTIZERS):
        _check_sign_probe(q, where)
        return {"mode": "sign", "tau": None, "scale": 1.0}
    if isinstance(q, Q.RSign):
        if q.channel_dim not in ((1, -1) if isinstance(layer, BinaryLinear) else (1, -3)):
            raise _refuse(where, f"RSign(channel_dim={q.channel_dim}) is not per input channel")
        tau = q.threshold.detach()
        if tau.dtype != torch.float32 or not torch.isfinite(tau).all():
            raise _refuse(where, "RSign threshold must be finite float32")
        return {"mode": "rsign", "tau": tau.clone().contiguous(), "scale": 1.0}
    if isinstance(q, Q.ScaledSign):
        scaled: Any = q
        s = float(scaled.scale.detach())
        if not math.isfinite(s) or s == 0.0:
            raise _refuse(where, f"ScaledSign scale must be finite and non-zero, got {s}")
        _check_sign_probe(q, where, scale=s)
        return {"mode": "sign", "tau": None, "scale": s}
    raise _refuse(where, f"input_quantizer {type(q).__name__} is not sign-like (supported: "
                         "SteSign, ApproxSign, SwishSign, StochasticSign in eval, RSign, "
                         "ScaledSign, or None after a ±1 quantizer); e.g. SteHeaviside's {0, 1} "
                         "cannot be packed")


def _weight_signs(layer: Any, where: str) -> tuple[Tensor, Tensor | None]:
    """(±1 weight of the layer's shape, per-output-channel α or None if all ones)."""
    if layer.weight_quantizer is None:
        raise _refuse(where, "weight_quantizer=None: the weights are real, nothing to pack")
    if getattr(layer.weight, "is_meta", False) or isinstance(
            layer.weight, nn.parameter.UninitializedParameter):
        raise _refuse(where, "the weight is not initialised")
    wq = layer.weight_quantizer
    if isinstance(wq, Q.StochasticSign) and _draws_in_eval(wq):
        raise _refuse(where, "weight_quantizer StochasticSign(stochastic_eval=True) draws new "
                             "weights in every call; a packed layer holds one fixed set")
    with torch.no_grad():
        wb = layer.binary_weight().detach()
        again = layer.binary_weight().detach()
    if not torch.equal(wb, again):
        raise _refuse(where, f"weight_quantizer {type(wq).__name__} is not deterministic in "
                             "eval mode (two calls gave different weights); a packed layer holds "
                             "one fixed set")
    if wb.shape != layer.weight.shape:
        raise _refuse(where, f"binary_weight() has shape {tuple(wb.shape)}, expected "
                             f"{tuple(layer.weight.shape)} (one set of ±α bits)")
    if wb.dtype != torch.float32 or not torch.isfinite(wb).all():
        raise _refuse(where, "binary weights must be finite float32")
    rows = wb.reshape(wb.shape[0], -1)
    alpha = rows.abs().amax(dim=1)
    if not torch.equal(rows.abs(), alpha[:, None].expand_as(rows)):
        raise _refuse(where, f"weight_quantizer {type(layer.weight_quantizer).__name__} does not "
                             "give ±α_o per output channel")
    signs = torch.where(rows < 0, -1.0, 1.0).reshape(wb.shape)
    return signs, (None if torch.all(alpha == 1.0) else alpha.clone())


def _packed_pad_value(layer: Any, padding: tuple[int, int], scale: float,
                      where: str) -> float:
    """The pad value of the packed conv, in units of the packed (±1) input.

    Torch pads the *quantised* input ``s * sign(x)`` with ``pad_value``; the packed layer
    computes ``d`` on ``sign(x)`` and multiplies by ``s`` afterwards, so its padded taps must
    hold ``pad_value / s``: ``0`` (zero padding, reproduced exactly by
    :func:`bnnlab.kernels.zero_padding_correction`) or ``±1``. Any other ratio (a
    ``ScaledSign`` with ``|s| != 1`` and ``pad_value = ±1``) is not a binary convolution."""
    if padding == (0, 0):
        return 1.0
    pad = float(layer.pad_value)
    if pad == 0.0:
        return 0.0
    ratio = pad / scale
    if ratio not in (1.0, -1.0):
        raise _refuse(where, f"the input quantizer scales the input by s={scale:g} but "
                             f"pad_value={pad:g} pads the scaled input: the padded taps hold "
                             f"{ratio:g} in units of sign(x), which is not ±1 or 0 (use "
                             "pad_value=0.0, or a sign input quantizer with ±1 padding)")
    return ratio


def _conv_geometry(layer: nn.Conv2d, where: str) -> tuple[tuple[int, int], tuple[int, int]]:
    if layer.groups != 1:
        raise _refuse(where, f"groups={layer.groups} is not supported (the packed conv has "
                             "groups=1)")
    if tuple(layer.dilation) != (1, 1):
        raise _refuse(where, f"dilation={tuple(layer.dilation)} is not supported")
    left, right, top, bottom = layer._reversed_padding_repeated_twice
    if left != right or top != bottom:
        raise _refuse(where, f"asymmetric padding {layer.padding!r} is not supported")
    padding = (int(top), int(left))
    return (int(layer.stride[0]), int(layer.stride[1])), padding


# =============================================================================== packed layers
class _PackedLayer(nn.Module):
    """Shared parts of :class:`PackedLinear` and :class:`PackedConv2d`."""

    weight: Any

    def _n_out(self) -> int:
        """Output features / channels."""
        raise NotImplementedError  # pragma: no cover

    def __init__(self) -> None:
        super().__init__()
        self.name = ""
        self.input_mode = "sign"
        self.tau: Tensor | None = None
        self.alpha_q: Tensor | None = None     # quantizer scale (magnitude-aware α, ScaledSign s)
        self.alpha_x: Tensor | None = None     # XNOR-Net α = mean|W| (float, applied after)
        self.beta: str | None = None           # "dense" or "kmap": XNOR-Net input scaling
        self.gamma: Tensor | None = None       # XNOR-Net++ Γ
        self.bias: Tensor | None = None
        self.d_offset = 0                      # padding bits counted as +1 by the kernel
        self.threshold: np.ndarray | None = None   # fused: +1 iff d >= thr (d <= thr if flip)
        self.flip: np.ndarray | None = None
        self.folded_bn = False                 # alpha_q / bias include a following eval BN
        self._input_scale_factor = 1.0         # ScaledSign s (folded into alpha_q)
        self._prepared: Any = None             # kernels.Thresholds (cached) / (alpha, bias)
        self.train(False)

    # ---------------------------------------------------------------- build
    def _init_from(self, layer: Any, name: str | None, where: str) -> Tensor:
        _check_float32(layer, where)
        spec = _input_spec(layer, where)
        self._input_scale_factor = float(spec["scale"])
        self.name = name or ""
        self.input_mode = spec["mode"]
        self.tau = spec["tau"]
        signs, alpha = _weight_signs(layer, where)
        if spec["scale"] != 1.0:
            base = torch.ones(signs.shape[0]) if alpha is None else alpha
            alpha = base * torch.tensor(spec["scale"], dtype=torch.float32)
        self.alpha_q = alpha
        if isinstance(layer, (XnorLinear, XnorConv2d)):
            self.alpha_x = _as_f32(layer.weight_scale().reshape(-1))
            if layer.input_quantizer is not None and layer.input_scaling:
                self.beta = "dense" if isinstance(layer, XnorLinear) else "kmap"
        if isinstance(layer, (XnorPlusLinear, XnorPlusConv2d)):
            with torch.no_grad():
                try:
                    g = layer.output_scale()
                except RuntimeError as exc:
                    raise _refuse(where, str(exc)) from exc
            self.gamma = _as_f32(g)
        self.bias = _as_f32(layer.bias)
        return signs

    @property
    def fused(self) -> bool:
        """True when the output is the next layer's packed bits (a folded threshold)."""
        return self.threshold is not None

    def _set_threshold(self, threshold: np.ndarray, flip: np.ndarray) -> None:
        self.threshold = np.asarray(threshold, np.float64).copy()
        self.flip = np.asarray(flip, bool).copy()
        self._prepared = None

    def _kernel_threshold(self) -> np.ndarray:
        assert self.threshold is not None, "only fused layers have thresholds"
        return self.threshold + self.d_offset

    def _reduction_length(self) -> int:
        """k of the kernel call (padding bits of a PackedFlatten input included)."""
        raise NotImplementedError  # pragma: no cover

    def _thresholds(self) -> kernels.Thresholds:
        """The fused epilogue, converted once to the kernels' integer form."""
        if not isinstance(self._prepared, kernels.Thresholds):
            self._prepared = kernels.prepare_thresholds(
                self._kernel_threshold(), self.flip, channels=self._n_out(),
                k=self._reduction_length())
        return self._prepared

    def _affine_args(self) -> tuple[kernels.Affine, None]:
        """(alpha, bias) as contiguous float32 arrays (no per-call conversion in the kernel)."""
        if not isinstance(self._prepared, tuple):
            n = self._n_out()
            alpha = np.ones(n, np.float32) if self.alpha_q is None else \
                np.ascontiguousarray(self.alpha_q.numpy(), np.float32)
            bias = None if self.bias is None else np.ascontiguousarray(self.bias.numpy(), np.float32)
            self._prepared = (kernels.prepare_affine(alpha, bias, channels=n), None)
        return self._prepared

    @property
    def _affine_only(self) -> bool:
        return self.alpha_x is None and self.beta is None and self.gamma is None \
            and self.d_offset == 0

    def _binarise(self, x: Tensor, channel_shape: tuple[int, ...]) -> Tensor:
        if x.dtype != torch.float32:
            raise TypeError(f"{self._who()}: input must be float32, got {x.dtype}")
        if self.input_mode == "rsign":
            assert self.tau is not None, "input 'rsign' has a threshold"
            return x - self.tau.reshape(channel_shape)
        return x

    def _flags_repr(self, beta_label: str) -> str:
        """The ``extra_repr`` tail naming the float epilogue's parts (``beta_label`` for β)."""
        s = ""
        if self.alpha_q is not None or self.alpha_x is not None:
            s += ", alpha"
        if self.beta:
            s += f", {beta_label}"
        if self.bias is not None:
            s += ", bias"
        if self.folded_bn:
            s += ", folded_bn"
        if self.fused:
            s += ", fused_threshold"
        return s

    def _who(self) -> str:
        return f"{type(self).__name__}({self.name!r})" if self.name else type(self).__name__

    def _epilogue(self, y: Tensor, x: Tensor | None, view: tuple[int, ...]) -> Tensor:
        """The float part in torch's order: y = d [* α_q] [* α_x] [* β] [* Γ] [+ b]."""
        if self.alpha_q is not None:
            y = y * self.alpha_q.reshape(view)
        if self.alpha_x is not None:
            y = y * self.alpha_x.reshape(view)
        if self.beta is not None:
            assert x is not None, "XNOR-Net input scaling needs the real input"
            y = y * self._input_scale(x)
        if self.gamma is not None:
            y = y * self.gamma
        if self.bias is not None:
            y = y + self.bias.reshape(view)
        return y

    def _input_scale(self, x: Tensor) -> Tensor:  # pragma: no cover - overridden
        raise NotImplementedError

    def packed_weight_bytes(self) -> int:
        """Bytes held by the packed binary weights."""
        return int(self.weight.nbytes)

    def float_weight_bytes(self) -> int:
        """Bytes the same binary weights take as float32 (the latent weight of the source)."""
        return 4 * math.prod(self.weight_shape)

    @property
    def weight_shape(self) -> tuple[int, ...]:
        """The torch weight shape of the source layer."""
        raise NotImplementedError  # pragma: no cover

    def train(self, mode: bool = True) -> Any:
        """Packed layers are inference-only: this keeps them in eval mode."""
        return super().train(False)


class PackedLinear(_PackedLayer):
    weight: kernels.PackedBits           # set by from_binary / load

    r"""Inference-only dense layer on packed signs (a drop-in for a trained binary dense layer).

    .. math::
        y = \alpha \odot (x_b W_b^\top) + b, \qquad x_b = \operatorname{sign}(x),\;
        x_b W_b^\top = K - 2\operatorname{popcount}(x_b \oplus W_b)

    (sign(0) = +1). Built with :meth:`from_binary` from a :class:`~bnnlab.layers.BinaryLinear`,
    :class:`~bnnlab.layers.XnorLinear` or :class:`~bnnlab.layers.XnorPlusLinear`; reproduces
    its eval-mode forward (exactly for sign weights, to float rounding with α; see the module
    docstring). No gradient.

    Memory: the packed weight holds exactly ``ceil(in_features / 64) * 8`` bytes per output row.

    Shape:
        - Input: :math:`(*, H_{in})` float32 (or a :class:`~bnnlab.kernels.PackedBits` of the
          binarised input, inside fused chains).
        - Output: :math:`(*, H_{out})` float32 (or ``PackedBits`` when fused).

    Examples::

        >>> fc = BinaryLinear(100, 10).eval()
        >>> pfc = PackedLinear.from_binary(fc)
        >>> x = torch.randn(4, 100)
        >>> torch.equal(pfc(x), fc(x))
        True
    """

    def __init__(self) -> None:
        super().__init__()
        self.in_features = 0
        self.out_features = 0
        self.nhwc: tuple[int, int] | None = None   # (C, H*W) when fed by a PackedFlatten

    @classmethod
    def from_binary(cls, layer: Any, *, name: str | None = None) -> PackedLinear:
        """Pack a trained binary dense layer (see the module docstring for what is accepted)."""
        where = _layer_name(name, layer)
        if not isinstance(layer, BinaryLinear) or isinstance(layer, AbcLinear):
            raise _refuse(where, "only BinaryLinear, XnorLinear and XnorPlusLinear can be packed "
                                 "as PackedLinear")
        self = cls()
        with _eval_mode(layer):
            signs = self._init_from(layer, name, where)
        self.in_features, self.out_features = int(layer.in_features), int(layer.out_features)
        if self.tau is not None and self.tau.shape[0] != self.in_features:
            raise _refuse(where, "RSign threshold does not have in_features entries")
        self.weight = kernels.pack_signs(signs)
        return self

    def _n_out(self) -> int:
        return self.out_features

    @property
    def weight_shape(self) -> tuple[int, int]:
        return (self.out_features, self.in_features)

    def _reduction_length(self) -> int:
        return self.weight.k

    def extra_repr(self) -> str:
        s = (f"in_features={self.in_features}, out_features={self.out_features}, "
             f"input={self.input_mode}")
        return s + self._flags_repr("beta")

    def _input_scale(self, x: Tensor) -> Tensor:
        return x.abs().mean(dim=-1, keepdim=True)

    def _to_nhwc_input(self, channels: int, hw: int) -> None:
        """Re-lay the weight for a packed NHWC input flattened by :class:`PackedFlatten`."""
        signs = kernels.unpack_signs(self.weight)                      # (O, C*HW), torch order
        o = signs.shape[0]
        cpad = kernels.n_words(channels) * 64
        w = np.ones((o, hw, cpad), np.float32)                        # padding bits: +1 (bit 0)
        w[:, :, :channels] = signs.reshape(o, channels, hw).transpose(0, 2, 1)
        self.weight = kernels.pack_signs(w.reshape(o, hw * cpad))
        self.nhwc = (channels, hw)
        self.d_offset = hw * (cpad - channels)
        self._prepared = None

    def _pack(self, x: Any) -> kernels.PackedBits:
        if isinstance(x, kernels.PackedBits):
            if x.k != self.weight.k:
                raise ValueError(f"{self._who()}: packed input has k={x.k}, "
                                 f"expected {self.weight.k}")
            return x
        if self.nhwc is not None:
            raise TypeError(f"{self._who()} takes the packed output of a PackedFlatten")
        if not isinstance(x, Tensor):
            raise TypeError(f"{self._who()}: input must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"{self._who()}: input must have shape (*, {self.in_features}), "
                             f"got {tuple(x.shape)}")
        x2 = self._binarise(x.reshape(-1, self.in_features), (1, -1))
        return kernels.pack_signs(x2, strict=self.input_mode == "binary")

    def int_forward(self, x: Any) -> np.ndarray:
        """The integer part :math:`d = x_b W_b^\\top`, int32 ``(N, out_features)``."""
        d = kernels.xnor_matmul(self._pack(x), self.weight)
        return d - np.int32(self.d_offset) if self.d_offset else d

    def forward(self, x: Any) -> Any:
        if type(x) is kernels.PackedBits and not self.fused and self._affine_only \
                and x.k == self.weight.k:
            # packed input (a PackedFlatten's output): straight to the kernel
            aff = self._affine_args()[0]
            out = np.empty((x.words.shape[0], self.out_features), np.float32)
            kernels._kernels.gemm_affine(x.words, self.weight.words, x.k, aff.scale, aff.offset,
                                         out, kernels.get_num_threads())
            return torch.from_numpy(out)
        lead = tuple(x.shape[:-1]) if isinstance(x, Tensor) else None
        if self.folded_bn and lead is not None and len(lead) != 1:
            raise ValueError(f"{self._who()}: a BatchNorm1d folded into this layer normalises "
                             f"dim 1, so the input must be 2-D, got {tuple(x.shape)}")
        a = self._pack(x)
        if self.fused:
            return kernels.matmul_threshold(a, self.weight, self._thresholds())
        if self._affine_only:
            y = torch.from_numpy(kernels.matmul_affine(a, self.weight, *self._affine_args()))
        else:
            d = kernels.xnor_matmul(a, self.weight)
            if self.d_offset:
                d -= np.int32(self.d_offset)
            xf = x.reshape(-1, self.in_features) if self.beta else None
            y = self._epilogue(torch.from_numpy(d).to(torch.float32), xf, (1, -1))
        return y if lead is None else y.reshape(*lead, self.out_features)


class PackedConv2d(_PackedLayer):
    weight: kernels.PackedConvWeights    # set by from_binary / load

    r"""Inference-only 2-D convolution on packed signs (drop-in for a trained binary conv).

    .. math::
        y = \alpha \odot \bigl(W_b \star \operatorname{pad}_{v}(x_b)\bigr) + b,
        \qquad x_b = \operatorname{sign}(x)

    with the binarised input padded by ``pad_value`` :math:`v \in \{-1, 0, +1\}` (the source
    layer's ``pad_value`` in units of :math:`x_b`; 0 is torch's zero padding, computed exactly
    with :func:`bnnlab.kernels.zero_padding_correction`). Activations are packed NHWC along
    the channels (:func:`bnnlab.kernels.pack_nhwc`); weights hold
    ``k_h * k_w * ceil(C_in / 64) * 8`` bytes per output channel. Built with :meth:`from_binary`
    from :class:`~bnnlab.layers.BinaryConv2d`, :class:`~bnnlab.layers.XnorConv2d` (α, K-map in
    float) or :class:`~bnnlab.layers.XnorPlusConv2d`. Inference-only.

    Shape:
        - Input: :math:`(N, C_{in}, H, W)` or :math:`(C_{in}, H, W)` float32, or a
          :class:`~bnnlab.kernels.PackedActivations` (fused chains).
        - Output: :math:`(N, C_{out}, H_o, W_o)` float32, or ``PackedActivations`` when fused.
    """

    def __init__(self) -> None:
        super().__init__()
        self.in_channels = 0
        self.out_channels = 0
        self.kernel_size = (1, 1)
        self.stride = (1, 1)
        self.padding = (0, 0)
        self.pad_value = 1.0

    @classmethod
    def from_binary(cls, layer: Any, *, name: str | None = None) -> PackedConv2d:
        """Pack a trained binary conv (see the module docstring for what is accepted)."""
        where = _layer_name(name, layer)
        if not isinstance(layer, BinaryConv2d) or isinstance(layer, AbcConv2d):
            raise _refuse(where, "only BinaryConv2d, XnorConv2d and XnorPlusConv2d can be packed "
                                 "as PackedConv2d")
        stride, padding = _conv_geometry(layer, where)
        if padding != (0, 0) and layer.padding_mode != "zeros":
            raise _refuse(where, f"padding_mode={layer.padding_mode!r} is not supported")
        self = cls()
        with _eval_mode(layer):
            signs = self._init_from(layer, name, where)
        self.in_channels, self.out_channels = int(layer.in_channels), int(layer.out_channels)
        self.kernel_size = (int(layer.kernel_size[0]), int(layer.kernel_size[1]))
        self.stride, self.padding = stride, padding
        self.pad_value = _packed_pad_value(layer, padding, self._input_scale_factor, where)
        if self.tau is not None and self.tau.shape[0] != self.in_channels:
            raise _refuse(where, "RSign threshold does not have in_channels entries")
        self.weight = kernels.pack_conv_weights(signs)
        return self

    def _n_out(self) -> int:
        return self.out_channels

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.out_channels, self.in_channels, *self.kernel_size)

    def _reduction_length(self) -> int:
        return self.in_channels * self.kernel_size[0] * self.kernel_size[1]

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}, padding={self.padding}, pad_value={self.pad_value}, "
             f"input={self.input_mode}")
        return s + self._flags_repr("kmap")

    def _input_scale(self, x: Tensor) -> Tensor:
        # mirror of XnorConv2d.input_scale with groups=1, dilation=1, zero padding
        n, c, h, w = x.shape
        a = x.abs().reshape(n, 1, c, h, w).mean(dim=2)
        pads = (self.padding[1], self.padding[1], self.padding[0], self.padding[0])
        if any(pads):
            a = F.pad(a, pads, mode="constant")
        kh, kw = self.kernel_size
        box = a.new_full((1, 1, kh, kw), 1.0 / (kh * kw))
        return F.conv2d(a, box, None, self.stride, 0, 1, 1)

    def _pack(self, x: Any) -> kernels.PackedActivations:
        if isinstance(x, kernels.PackedActivations):
            if x.channels != self.in_channels:
                raise ValueError(f"{self._who()}: packed input has {x.channels} channels, "
                                 f"expected {self.in_channels}")
            return x
        if not isinstance(x, Tensor):
            raise TypeError(f"{self._who()}: input must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"{self._who()}: input must have shape (N, {self.in_channels}, H, W), "
                             f"got {tuple(x.shape)}")
        xb = self._binarise(x, (1, -1, 1, 1))
        return kernels.pack_nhwc(xb, strict=self.input_mode == "binary")

    def int_forward(self, x: Any) -> np.ndarray:
        """The integer part :math:`d`, int32 ``(N, C_out, H_o, W_o)`` (inputs as forward)."""
        if isinstance(x, Tensor) and x.dim() == 3:
            return self.int_forward(x.unsqueeze(0))[0]
        return kernels.conv2d_packed(self._pack(x), self.weight, self.stride, self.padding,
                                     self.pad_value)

    def _fast_pooled(self, x: Any, pool: kernels.MaxPoolSpec) -> Any:
        """:meth:`_forward_pooled` with the argument checks and output sizes cached per input
        shape and layer geometry (batch-1 latency); anything unusual takes the checked path."""
        if type(x) is kernels.PackedActivations and x.channels == self.in_channels \
                and self.pad_value != 0.0:
            words = x.words
            key = (words.shape, pool, self.weight, self.stride, self.padding, self.pad_value)
            plan: Any = self.__dict__.get("_plan")
            if plan is None or plan[0] != key:
                (sy, sx, py, px, neg), (n, o, oh, ow) = kernels._conv_setup(
                    x, self.weight, self.stride, self.padding, self.pad_value)
                qh, qw = kernels._pool_shape(pool, o, oh, ow, "the conv output")
                plan = (key, (n, qh, qw, kernels.n_words(o)), (sy, sx, py, px, neg),
                        (*pool.kernel_size, *pool.stride, *pool.padding))
                self.__dict__["_plan"] = plan
            th = self._thresholds()
            out = np.empty(plan[1], np.uint64)
            kernels._kernels.conv_threshold_pack_pool(  # type: ignore[call-arg]
                words, self.in_channels, self.weight.words, *plan[2], th.lim, th.flipw, *plan[3],
                pool.or_words, out, kernels.get_num_threads())
            return kernels.PackedActivations.trusted(out, self.out_channels)
        return self._forward_pooled(x, pool)

    def _forward_pooled(self, x: Any, pool: kernels.MaxPoolSpec) -> Any:
        """Fused forward followed by a :class:`PackedMaxPool2d` (its ``spec``), one kernel call."""
        return kernels.conv2d_threshold(self._pack(x), self.weight, self._thresholds(), None,
                                        self.stride, self.padding, self.pad_value, pool=pool)

    def forward(self, x: Any) -> Any:
        if isinstance(x, Tensor) and x.dim() == 3:
            return self.forward(x.unsqueeze(0)).squeeze(0)
        px = self._pack(x)
        if self.fused:
            return kernels.conv2d_threshold(px, self.weight, self._thresholds(), None,
                                            self.stride, self.padding, self.pad_value)
        if self._affine_only:
            y = kernels.conv2d_affine(px, self.weight, *self._affine_args(), self.stride,
                                      self.padding, self.pad_value)
            return torch.from_numpy(y)
        d = kernels.conv2d_packed(px, self.weight, self.stride, self.padding, self.pad_value)
        return self._epilogue(torch.from_numpy(d).to(torch.float32),
                              x if self.beta else None, (1, -1, 1, 1))


class PackedMaxPool2d(nn.Module):
    r"""Max-pooling of packed ±1 feature maps, on the bits.

    The max of ±1 values is +1 iff one of them is +1: with bit 1 meaning -1 that is the AND of
    the bits. Channels listed in ``or_channels`` take the min instead (OR of the bits): a
    max-pool placed *before* a decreasing function (e.g. a BatchNorm with negative scale) of a
    fused chain is a min-pool of the signs. Out-of-image taps never win (as torch's -inf pad).

    Shape:
        :class:`~bnnlab.kernels.PackedActivations` in and out; spatial sizes as
        :class:`torch.nn.MaxPool2d` (``ceil_mode=False``, ``dilation=1``).
    """

    def __init__(self, channels: int, kernel_size: IntPair, stride: IntPair, padding: IntPair,
                 or_channels: Any = None) -> None:
        super().__init__()
        self.channels = int(channels)
        self.kernel_size = _pair2(kernel_size)
        self.stride = _pair2(stride)
        self.padding = _pair2(padding)
        flags = np.zeros(self.channels, bool) if or_channels is None else \
            np.asarray(or_channels, bool)
        if flags.shape != (self.channels,):
            raise ValueError(f"or_channels must have shape ({self.channels},), got {flags.shape}")
        self.or_channels = flags
        self.spec = kernels.prepare_maxpool2d(self.channels, self.kernel_size, self.stride,
                                              self.padding, flags)
        self.train(False)

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, or_channels={int(self.or_channels.sum())}")

    def forward(self, x: kernels.PackedActivations) -> kernels.PackedActivations:
        if not isinstance(x, kernels.PackedActivations) or x.channels != self.channels:
            raise TypeError(f"PackedMaxPool2d expects PackedActivations with {self.channels} "
                            "channels")
        return kernels.maxpool2d_packed(x, self.spec)


class PackedFlatten(nn.Module):
    r"""``nn.Flatten`` for packed NHWC activations feeding a :class:`PackedLinear`.

    Reinterprets the words ``(N, H, W, ceil(C/64))`` of each sample as one packed row of length
    ``H * W * ceil(C/64) * 64`` (no copy). The following :class:`PackedLinear` holds its weight
    in the same NHWC order, with +1 in the padding-bit positions, and subtracts the
    ``H * W * (64 * ceil(C/64) - C)`` matches they add.
    """

    def __init__(self, channels: int, hw: int) -> None:
        super().__init__()
        self.channels, self.hw = int(channels), int(hw)
        self.train(False)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, hw={self.hw}"

    def forward(self, x: kernels.PackedActivations) -> kernels.PackedBits:
        if not isinstance(x, kernels.PackedActivations) or x.channels != self.channels:
            raise TypeError(f"PackedFlatten expects PackedActivations with {self.channels} "
                            "channels")
        n, h, w, nw = x.words.shape
        if h * w != self.hw:
            raise ValueError(f"PackedFlatten: input is {h}x{w}, expected H*W={self.hw} "
                             "(the size the next dense layer was trained for)")
        return _bits_out(kernels.PackedBits, x.words.reshape(n, h * w * nw), h * w * nw * 64)


class PackedSign(nn.Module):
    r"""Binarise a float tensor through a folded chain of monotone per-channel functions.

    Replaces ``[BatchNorm / monotone activations] -> sign`` in front of the first binary layer
    of a fused chain by one comparison per element:

    .. math::
        x_b = +1 \iff s_c\,x \ge u_c \quad (s_c = \pm 1)

    with :math:`u_c` found at export by bisection over every float32 value, evaluating the
    torch modules themselves, so the bits equal torch's ``sign(BN(x))`` exactly (sign(0) = +1);
    :math:`u_c = \mp\infty` for channels whose sign is constant. Computed as the sign of
    ``x * s_c + b_c``: ``x - u_c`` (``s = 1``), ``-x - u_c`` (``s = -1``; both have the exact
    sign of the difference in IEEE arithmetic) or the constant ``b_c = ±1`` (``s = 0``), inside
    the packers :func:`bnnlab.kernels.pack_nhwc_affine` (NHWC for 4-D inputs) /
    :func:`~bnnlab.kernels.pack_rows_affine` (rows for 2-D) without a float temporary, for
    :class:`PackedMaxPool2d` (fused into the same call by :class:`PackedModel`) or the
    packed layer.
    Non-finite inputs raise ValueError (as every packed input).
    """

    def __init__(self, threshold: np.ndarray, negate: np.ndarray, ndim: int) -> None:
        super().__init__()
        if ndim not in (2, 4):
            raise ValueError(f"ndim must be 2 or 4, got {ndim}")
        self.channels = int(len(threshold))
        self.ndim = ndim
        view = (1, -1, 1, 1) if ndim == 4 else (1, -1)
        thr = np.asarray(threshold, np.float32)
        self.threshold = torch.as_tensor(thr).reshape(view)
        self.negate = np.asarray(negate, bool).copy()
        finite = np.isfinite(thr)
        scale = np.where(finite, np.where(self.negate, -1.0, 1.0), 0.0).astype(np.float32)
        offset = np.where(finite, -thr, np.where(thr < 0, 1.0, -1.0)).astype(np.float32)
        self._affine = kernels.prepare_affine(scale, offset, channels=self.channels)
        self.train(False)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, ndim={self.ndim}, negated={int(self.negate.sum())}"

    def forward(self, x: Tensor) -> Any:
        if not isinstance(x, Tensor) or x.dim() != self.ndim or x.shape[1] != self.channels:
            raise ValueError(f"PackedSign expects a {self.ndim}-D float tensor with "
                             f"{self.channels} channels in dim 1")
        # x * s + o in float32 inside the packer (no temporary): x - u, -x - u or ±1
        if self.ndim == 4:
            return kernels.pack_nhwc_affine(x, self._affine)
        return kernels.pack_rows_affine(x, self._affine)

    def _fast_pooled(self, x: Any, pool: kernels.MaxPoolSpec) -> Any:
        """:meth:`_forward_pooled` with the argument checks and output sizes cached per input
        shape (batch-1 latency); anything unusual takes the checked path."""
        if type(x) is Tensor and x.dtype is torch.float32 and x.dim() == 4 \
                and x.shape[1] == self.channels and x.is_contiguous():
            try:
                arr = x.numpy()          # raises for non-CPU / grad / conj / neg tensors
            except (RuntimeError, TypeError):
                arr = None
            if arr is not None:
                key = (arr.shape, pool)
                plan: Any = self.__dict__.get("_plan")
                if plan is None or plan[0] != key:
                    oh, ow = kernels._pool_shape(pool, self.channels, arr.shape[2],
                                                 arr.shape[3], "x")
                    plan = (key, (arr.shape[0], oh, ow, kernels.n_words(self.channels)),
                            (*pool.kernel_size, *pool.stride, *pool.padding))
                    self.__dict__["_plan"] = plan
                out = np.empty(plan[1], np.uint64)
                if kernels._kernels.pack_nchw_affine_pool(  # type: ignore[call-arg]
                        arr, self._affine.scale, self._affine.offset, *plan[2], pool.or_words,
                        out, kernels.get_num_threads()):
                    raise kernels._nonfinite_error("x")
                return kernels.PackedActivations.trusted(out, self.channels)
        return self._forward_pooled(x, pool)

    def _forward_pooled(self, x: Tensor, pool: kernels.MaxPoolSpec) -> Any:
        """forward followed by a :class:`PackedMaxPool2d` (its ``spec``), in one kernel call."""
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"PackedSign expects a 4-D float tensor with {self.channels} "
                             "channels in dim 1")
        return kernels.pack_nhwc_affine(x, self._affine, pool=pool)


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
        assert e1 is not None, "the max-pool's input was recorded"
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


# =============================================================================== export
def _is_binary(m: Any) -> bool:
    return isinstance(m, _BinaryMixin)


def _contains_binary(m: Any) -> bool:
    return any(_is_binary(s) for s in m.modules())


def _contains_packed(m: Any) -> bool:
    return any(isinstance(s, _PackedLayer) for s in m.modules())


def _convert(layer: Any, name: str) -> _PackedLayer:
    if isinstance(layer, BinaryLinear):
        return PackedLinear.from_binary(layer, name=name)
    if isinstance(layer, BinaryConv2d):
        return PackedConv2d.from_binary(layer, name=name)
    raise _refuse(_layer_name(name, layer), "no packed kernel for this layer type (supported: "
                                            "BinaryLinear/Conv2d, XnorLinear/Conv2d, "
                                            "XnorPlusLinear/Conv2d)")


def _check_binary_inputs(model: nn.Module) -> None:
    """Layers with input_quantizer=None must be fed by a ±1 quantizer module (torch.fx)."""
    targets = {n for n, m in model.named_modules() if _is_binary(m) and m.input_quantizer is None}
    if not targets:
        return
    import torch.fx as fx

    class _Tracer(fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> Any:
            return (super().is_leaf_module(m, qualname) or _is_binary(m)
                    or isinstance(m, Q.Quantizer) or not any(True for _ in m.children()))

    try:
        graph = _Tracer().trace(model)
    except Exception as exc:  # noqa: BLE001 - any tracing failure means "cannot verify"
        name = sorted(targets)[0]
        raise _refuse(f"layer {name!r}", "input_quantizer=None and the model cannot be traced "
                                         f"to check that its input is ±1 ({exc})") from exc
    modules = dict(model.named_modules())
    seen = set()
    for node in graph.nodes:
        if node.op == "call_module" and node.target in targets:
            seen.add(node.target)
            src = node.args[0] if node.args else None
            ok = (isinstance(src, fx.Node) and src.op == "call_module"
                  and isinstance(modules.get(src.target), _PM1_QUANTIZERS)
                  and not (isinstance(modules[src.target], Q.StochasticSign)
                           and modules[src.target].stochastic_eval))
            if not ok:
                raise _refuse(f"layer {node.target!r}",
                              "input_quantizer=None but its input is not the output of a ±1 "
                              "quantizer module: the packed layer would binarise a real input")
    for name in sorted(targets - seen):
        raise _refuse(f"layer {name!r}", "input_quantizer=None and the layer is not called on "
                                         "the output of a ±1 quantizer module")


def _replace(module: nn.Module, prefix: str) -> nn.Module:
    """Module replacement, in place on a (copied) module tree."""
    if _is_binary(module):
        return _convert(module, prefix)
    for name, child in list(module.named_children()):
        full = f"{prefix}.{name}" if prefix else name
        if _is_binary(child) or _contains_binary(child):
            module._modules[name] = _replace(child, full)
    return module


def _plan_sequential(seq: nn.Sequential, fuse: bool) -> tuple[list[Any], list[str]]:
    items: list[Any] = []
    for name, child in seq.named_children():
        if _is_binary(child):
            items.append(_convert(child, name))
        elif _contains_binary(child):
            items.append(_replace(child, name))
        else:
            items.append(child)
    notes: list[str] = []
    stages: list[nn.Module] = []
    i = 0
    while i < len(items):
        it = items[i]
        stages.append(it)
        if not (fuse and isinstance(it, _PackedLayer)):
            i += 1
            continue
        j = i + 1
        while j < len(items) and not _contains_packed(items[j]):
            j += 1
        if j >= len(items) or not isinstance(items[j], _PackedLayer):
            notes.append(f"{it.name}: float epilogue (last binary layer of its chain)")
            i += 1
            continue
        segment = items[i + 1:j]
        plan, reason = _fold(it, segment, items[j])
        if plan is None:
            notes.append(f"{it.name} -> {items[j].name}: not fused ({reason}); float in between")
            i += 1
            continue
        thr, flip, pool, flatten = plan
        it._set_threshold(thr, flip)
        if pool is not None:
            stages.append(pool)
        if flatten is not None:
            stages.append(PackedFlatten(*flatten))
            items[j]._to_nhwc_input(*flatten)
        notes.append(f"{it.name} -> {items[j].name}: fused (threshold"
                     f"{', max-pool on bits' if pool is not None else ''}"
                     f"{', flatten' if flatten is not None else ''})")
        i = j
    if fuse:
        stages = _fold_entries(stages, notes)
    return stages, notes


def _emits_bits(m: Any) -> bool:
    return isinstance(m, (PackedSign, PackedMaxPool2d, PackedFlatten)) or \
        (isinstance(m, _PackedLayer) and m.fused)


def _entry_candidate(m: Any) -> bool:
    if isinstance(m, (_PackedLayer, PackedSign, PackedMaxPool2d, PackedFlatten)) or \
            _contains_packed(m):
        return False
    return isinstance(m, nn.MaxPool2d) or _direction(m, 1) is not None


def _fold_entries(stages: list[nn.Module], notes: list[str]) -> list[nn.Module]:
    """Fold the float modules in front of the first binary layer of each chain into PackedSign."""
    out: list[nn.Module] = []
    for st in stages:
        if isinstance(st, _PackedLayer):
            start = len(out)
            while start > 0 and _entry_candidate(out[start - 1]):
                start -= 1
            if start < len(out) and not (start > 0 and _emits_bits(out[start - 1])):
                folded = _fold_entry(out[start:], st)
                if folded is not None:
                    names = ", ".join(type(m).__name__ for m in out[start:])
                    notes.append(f"{st.name}: input sign folded ({names} -> per-channel "
                                 "threshold on floats)")
                    out[start:] = folded
        out.append(st)
    return out


def _fold_float_bn(stages: list[Any], notes: list[str]) -> list[nn.Module]:
    """Fold an eval BatchNorm that directly follows a packed layer with a float epilogue into
    that epilogue: ``BN(α d + b) = (α γ/σ) d + ((b - μ) γ/σ + β)``, σ = sqrt(var + eps),
    computed in float64 and rounded once to float32 (the result then matches torch to float
    rounding, not bit for bit)."""
    out: list[nn.Module] = []
    i = 0
    while i < len(stages):
        st = stages[i]
        out.append(st)
        nxt: Any = stages[i + 1] if i + 1 < len(stages) else None
        i += 1
        if not (isinstance(st, _PackedLayer) and not st.fused and not st.folded_bn):
            continue
        conv = isinstance(st, PackedConv2d)
        want = nn.BatchNorm2d if conv else nn.BatchNorm1d
        c = st._n_out()
        if type(nxt) is not want or not nxt.track_running_stats or nxt.running_mean is None \
                or nxt.running_var is None or nxt.num_features != c:
            continue
        mean = nxt.running_mean.detach().double()
        inv = 1.0 / torch.sqrt(nxt.running_var.detach().double() + float(nxt.eps))
        g = nxt.weight.detach().double() if nxt.affine else torch.ones(c, dtype=torch.float64)
        beta = nxt.bias.detach().double() if nxt.affine else torch.zeros(c, dtype=torch.float64)
        s = g * inv
        alpha = torch.ones(c, dtype=torch.float64) if st.alpha_q is None else st.alpha_q.double()
        bias = torch.zeros(c, dtype=torch.float64) if st.bias is None else st.bias.double()
        scale = (alpha * s).to(torch.float32)
        offset = ((bias - mean) * s + beta).to(torch.float32)
        if not (torch.isfinite(scale).all() and torch.isfinite(offset).all()):
            notes.append(f"{st.name}: following {want.__name__} not folded (non-finite scale)")
            continue
        st.alpha_q, st.bias = scale.contiguous(), offset.contiguous()
        st.folded_bn = True
        st._prepared = None
        notes.append(f"{st.name}: following {want.__name__} folded into the float epilogue "
                     "(logits allclose to torch, not bit-exact; fold_float_bn=False keeps it)")
        i += 1                                         # the BN stage is dropped
    return out


def _state_dict_bytes(model: nn.Module) -> int:
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return len(buf.getvalue())


def export(model: nn.Module, example_input: Tensor | None = None, *, fuse: bool = True,
           fold_float_bn: bool = True, rtol: float = 1e-4,
           atol: float = 1e-4) -> PackedModel:
    r"""Export a trained model for packed inference (eval-mode semantics).

    Every binary layer becomes a :class:`PackedLinear` / :class:`PackedConv2d`; float layers
    (first and last layers, BatchNorm, pooling, shortcuts) stay torch modules (copies, in eval
    mode). In a flat :class:`torch.nn.Sequential`, chains of binary layers are fused (see the
    module docstring) unless ``fuse=False``. The source model is not modified.

    Args:
        model: a module; float32 on the CPU.
        example_input: optional batch. If given, the packed model is run on it and compared
            with ``model.eval()``: outputs must be ``allclose(rtol, atol)`` and the arg-max
            predictions identical, else :class:`ValueError`.
        fuse: fold thresholds between binary layers of flat sequentials. Default: ``True``.
        fold_float_bn: with ``fuse=True``, fold an eval-mode BatchNorm that directly follows a
            binary layer with a float epilogue (the last one of a chain, e.g. the
            ``BatchNorm1d`` after the ``BinaryLinear`` of ``models.binary_cnn``) into that
            epilogue: one per-channel ``scale * d + offset`` (computed in float64, rounded once
            to float32) instead of a separate BatchNorm call. The integer parts stay exact, but
            the float outputs then match torch to float rounding (``allclose``; predictions
            identical in practice) instead of bit for bit. ``False`` keeps the BatchNorm as a
            torch stage (bit-exact logits for sign-weight models). Default: ``True``.
        rtol, atol: tolerances of that check (scaled by the largest output magnitude).

    Returns:
        :class:`PackedModel`.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        ValueError: a layer cannot be packed exactly (the message names it), or the check failed.

    Examples::

        >>> from bnnlab import models
        >>> net = models.binary_cnn().eval()
        >>> pk = export(net, torch.randn(2, 1, 28, 28))   # checked against net on this batch
        >>> n_bytes = pk.save("cnn.bnnpk")
        >>> pk.sizes()["ratio"] > 20
        True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(model, PackedModel):
        raise TypeError("model is already a PackedModel")
    if not isinstance(fuse, bool):
        raise TypeError(f"fuse must be a bool, got {type(fuse).__name__}")
    if not isinstance(fold_float_bn, bool):
        raise TypeError(f"fold_float_bn must be a bool, got {type(fold_float_bn).__name__}")
    for n, p in model.named_parameters():
        if p.dtype != torch.float32 or p.device.type != "cpu":
            raise _refuse(f"parameter {n!r}", f"export needs float32 CPU parameters, got "
                                              f"{p.dtype} on {p.device}")
        if isinstance(p, nn.parameter.UninitializedParameter):
            raise _refuse(f"parameter {n!r}", "uninitialised (lazy) parameter; run a forward first")
    if not _contains_binary(model):
        raise ValueError("model has no binary layer (bnnlab.layers) to pack")
    src_bytes = _state_dict_bytes(model)
    work = copy.deepcopy(model).eval()
    _check_binary_inputs(work)
    if _is_binary(work):
        work = nn.Sequential(work)
    if isinstance(work, nn.Sequential):
        stages, notes = _plan_sequential(work, fuse)
        if fuse and fold_float_bn:
            stages = _fold_float_bn(stages, notes)
        packed = PackedModel(nn.Sequential(*stages), kind="sequential",
                             source_state_dict_bytes=src_bytes, notes=notes)
    else:
        body = _replace(work, "")
        packed = PackedModel(body, kind="modules", source_state_dict_bytes=src_bytes,
                             notes=["module replacement (no fusion)"])
    if example_input is not None:
        packed.check_against(model, example_input, rtol=rtol, atol=atol)
    return packed


# =============================================================================== the model
def _fast_step(m: Any, fresh: bool) -> Any:
    """``m.forward`` or an equivalent direct call of the torch op (batch-1 latency: skips the
    module's Python layers). ``fresh``: the input is a new tensor made by the previous stage
    (a packed layer's float epilogue), so an element-wise activation may run in place.
    Attributes are read at call time, so later edits of the module still apply."""
    t = type(m)
    if t is nn.Conv2d and m.padding_mode == "zeros":
        p = m._parameters

        def conv(x: Any) -> Any:
            return torch.conv2d(x, p["weight"], p["bias"], m.stride, m.padding, m.dilation,
                                m.groups)
        return conv
    if t is nn.Linear:
        p = m._parameters
        return lambda x: F.linear(x, p["weight"], p["bias"])
    if fresh and t is nn.Hardtanh:
        return lambda x: x.clamp_(m.min_val, m.max_val)
    if fresh and t is nn.ReLU:
        return torch.relu_
    return m.forward


class PackedModel(nn.Module):
    r"""A network exported by :func:`export`: packed binary layers plus float torch modules.

    Callable like the source model (float tensor in, float tensor out); inference-only (always
    in eval mode, no gradient).

    Attributes:
        body: the module that runs (an ``nn.Sequential`` of stages for flat exports).
        kind: ``"sequential"`` (flat export, may be fused; can be saved) or ``"modules"``
            (module replacement inside any architecture; cannot be saved).
        notes: one line per binary layer: fused or not, and why; and one per BatchNorm folded
            into a float epilogue (``export(..., fold_float_bn=True)``).
        source_state_dict_bytes: size of ``torch.save(source.state_dict())`` (float32).
    """

    def __init__(self, body: nn.Module, *, kind: str = "sequential",
                 source_state_dict_bytes: int | None = None,
                 notes: list[str] | None = None) -> None:
        super().__init__()
        if kind not in ("sequential", "modules"):
            raise ValueError(f"kind must be 'sequential' or 'modules', got {kind!r}")
        self.body = body
        self.kind = kind
        self.source_state_dict_bytes = source_state_dict_bytes
        self.notes = list(notes or [])
        self.train(False)

    def train(self, mode: bool = True) -> Any:
        """Inference-only: the body always stays in eval mode."""
        return super().train(False)

    def forward(self, x: Tensor) -> Tensor:
        if isinstance(x, Tensor) and x.dim() >= 2 and x.shape[0] == 0:
            # an empty batch: the kernels need >= 1 row; run one zero sample for the output's
            # shape and return none of its rows
            return self.forward(x.new_zeros((1, *x.shape[1:])))[:0]
        # no_grad only where needed (entering it costs microseconds at batch 1)
        with torch.no_grad() if torch.is_grad_enabled() else contextlib.nullcontext():
            if self.kind == "sequential" and isinstance(self.body, nn.Sequential):
                y = x
                for f in self._steps():      # stage.forward: skips nn.Module.__call__ overhead
                    y = f(y)
            else:
                y = self.body(x)
        if not isinstance(y, Tensor):
            raise RuntimeError("the packed model ended on packed bits; the last layer must be "
                               "float")
        return y

    def _steps(self) -> list:
        """The stages' forwards, with ``PackedSign`` (4-D) / fused ``PackedConv2d`` followed
        by a ``PackedMaxPool2d`` merged into one kernel call (same bits, one stage fewer)."""
        mods = tuple(self.body._modules.values())
        cache = self.__dict__.get("_step_cache")
        # modules define no __eq__: the tuple comparison is by identity (a replaced stage,
        # e.g. body[3] = ..., rebuilds the steps)
        if cache is None or cache[0] != mods:
            steps, i = [], 0
            while i < len(mods):
                m = mods[i]
                nxt = mods[i + 1] if i + 1 < len(mods) else None
                if isinstance(nxt, PackedMaxPool2d) and (
                        (isinstance(m, PackedSign) and m.ndim == 4 and m.channels == nxt.channels)
                        or (isinstance(m, PackedConv2d) and m.fused
                            and m.out_channels == nxt.channels)):
                    steps.append(functools.partial(m._fast_pooled, pool=nxt.spec))
                    i += 2
                    continue
                prev = mods[i - 1] if i else None
                steps.append(_fast_step(m, fresh=isinstance(prev, _PackedLayer)
                                        and not prev.fused))
                i += 1
            cache = (mods, steps)
            self.__dict__["_step_cache"] = cache
        return cache[1]

    # ---------------------------------------------------------------- inspection
    def packed_layers(self) -> list[_PackedLayer]:
        """Every packed binary layer, in module order."""
        return [m for m in self.modules() if isinstance(m, _PackedLayer)]

    def memory(self) -> dict:
        """Bytes of the binary weights: packed (held now) and as float32 (the source's)."""
        layers = self.packed_layers()
        packed = sum(m.packed_weight_bytes() for m in layers)
        flt = sum(m.float_weight_bytes() for m in layers)
        return {"packed_weight_bytes": packed, "float_weight_bytes": flt,
                "weight_ratio": flt / packed if packed else float("nan"),
                "binary_layers": len(layers)}

    def sizes(self) -> dict:
        """File size of :meth:`save` vs the float32 ``state_dict`` of the source model.

        Returns:
            dict with ``packed_file_bytes``, ``float_state_dict_bytes`` (``torch.save`` of the
            source model's float32 state_dict, measured at export), ``ratio`` (float / packed),
            and the :meth:`memory` figures.
        """
        packed = len(self.to_bytes())
        flt = self.source_state_dict_bytes
        out = {"packed_file_bytes": packed, "float_state_dict_bytes": flt,
               "ratio": (flt / packed) if flt else float("nan")}
        out.update(self.memory())
        return out

    def check_against(self, model: nn.Module, x: Tensor, *, rtol: float = 1e-4,
                      atol: float = 1e-4) -> dict:
        """Compare with ``model`` (put in eval mode) on ``x``; ValueError if they disagree."""
        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                want = model(x)
        finally:
            model.train(was)
        got = self(x)
        if got.shape != want.shape:
            raise ValueError(f"export check failed: packed output shape {tuple(got.shape)} != "
                             f"{tuple(want.shape)}")
        diff = (got - want).abs().max().item() if got.numel() else 0.0
        scale = max(1.0, want.abs().max().item()) if want.numel() else 1.0
        close = torch.allclose(got, want, rtol=rtol, atol=atol * scale)
        same_pred = True
        if want.dim() == 2 and want.shape[1] > 1:
            same_pred = torch.equal(got.argmax(1), want.argmax(1))
        if not (close and same_pred):
            raise ValueError(f"export check failed: max |packed - torch| = {diff:.3g} "
                             f"(allclose: {close}, same predictions: {same_pred})")
        return {"max_abs_diff": diff, "exact": bool(torch.equal(got, want))}

    # ---------------------------------------------------------------- files
    def to_bytes(self) -> bytes:
        """The saved file's bytes (see the module docstring for the format)."""
        if self.kind != "sequential":
            raise ValueError("only models exported from a flat nn.Sequential can be saved; this "
                             "PackedModel was made by module replacement")
        stages, blobs = [], []
        offset = 0
        for i, m in enumerate(self.body.children()):
            kind, cfg, arrays = _encode_stage(m, str(i))
            table = {}
            for aname, arr in arrays.items():
                arr = np.ascontiguousarray(arr)
                dt = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
                arr = arr.astype(dt, copy=False)
                table[aname] = [arr.dtype.str, list(arr.shape), offset]
                data = arr.tobytes()
                pad = (-len(data)) % 8
                blobs.append(data + b"\0" * pad)
                offset += len(data) + pad
            stages.append({"kind": kind, "name": getattr(m, "name", "") or str(i), "cfg": cfg,
                           "arrays": table})
        header = {"format": _FORMAT_NAME, "version": FORMAT_VERSION, "payload_bytes": offset,
                  "source_state_dict_bytes": self.source_state_dict_bytes, "stages": stages}
        hz = zlib.compress(json.dumps(header, separators=(",", ":")).encode("utf-8"), 9)
        pz = zlib.compress(b"".join(blobs), 9)
        body = MAGIC + struct.pack("<IIQ", FORMAT_VERSION, len(hz), len(pz)) + hz + pz
        return body + hashlib.sha256(body).digest()

    def save(self, path: str | os.PathLike) -> int:
        """Write the pickle-free packed file; returns its size in bytes."""
        data = self.to_bytes()
        with open(os.fspath(path), "wb") as fh:
            fh.write(data)
        return len(data)

    @staticmethod
    def load(path: str | os.PathLike) -> PackedModel:
        """Same as :func:`load`."""
        return load(path)

    @staticmethod
    def from_bytes(data: bytes) -> PackedModel:
        """Parse and validate the bytes of a saved file (see :func:`load`)."""
        return _decode(data)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"


def load(path: str | os.PathLike) -> PackedModel:
    """Load a file written by :meth:`PackedModel.save` (never unpickles).

    Raises:
        ValueError: not a bnnlab packed file, unsupported version, truncated, corrupted
            (checksum), or a stage whose configuration, dtypes or shapes are invalid.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    with open(os.fspath(path), "rb") as fh:
        data = fh.read()
    return _decode(data, where=os.fspath(path))


# =============================================================================== (de)serialise
_FLOAT_KINDS = {
    "flatten": nn.Flatten, "linear": nn.Linear, "conv2d": nn.Conv2d,
    "batchnorm1d": nn.BatchNorm1d, "batchnorm2d": nn.BatchNorm2d, "maxpool2d": nn.MaxPool2d,
    "avgpool2d": nn.AvgPool2d, "adaptiveavgpool2d": nn.AdaptiveAvgPool2d, "relu": nn.ReLU,
    "hardtanh": nn.Hardtanh, "identity": nn.Identity, "dropout": nn.Dropout, "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid, "leakyrelu": nn.LeakyReLU,
}


def _pair2(v: Any) -> tuple[int, int]:
    """An int or a pair as a tuple of two ints."""
    if isinstance(v, (tuple, list)):
        return (int(v[0]), int(v[1]))
    return (int(v), int(v))


def _pair_list(v: Any) -> list[int]:
    return [int(v[0]), int(v[1])] if isinstance(v, (tuple, list)) else [int(v), int(v)]


def _np(t: Tensor) -> np.ndarray:
    return t.detach().cpu().to(torch.float32).numpy()


def _encode_stage(m: Any, where: str) -> tuple[str, dict[str, Any], dict[str, np.ndarray]]:
    if isinstance(m, (PackedLinear, PackedConv2d)):
        cfg: dict[str, Any] = {"input": m.input_mode, "beta": m.beta,
                               "d_offset": int(m.d_offset), "fused": m.fused}
        if m.folded_bn:                       # absent in files without a folded BatchNorm
            cfg["folded_bn"] = True
        arrays = {"weight": m.weight.words}
        for key in ("tau", "alpha_q", "alpha_x", "gamma", "bias"):
            t = getattr(m, key)
            if t is not None:
                arrays[key] = _np(t)
        if m.threshold is not None and m.flip is not None:       # fused
            arrays["threshold"] = m.threshold.astype(np.float32)
            if m.flip.any():
                arrays["flip"] = _bits_to_words(m.flip).view(np.uint8)
        if isinstance(m, PackedLinear):
            cfg.update(in_features=m.in_features, out_features=m.out_features,
                       nhwc=list(m.nhwc) if m.nhwc else None)
            return "packed_linear", cfg, arrays
        cfg.update(in_channels=m.in_channels, out_channels=m.out_channels,
                   kernel_size=list(m.kernel_size), stride=list(m.stride),
                   padding=list(m.padding), pad_value=m.pad_value)
        return "packed_conv2d", cfg, arrays
    if isinstance(m, PackedMaxPool2d):
        cfg = {"channels": m.channels, "kernel_size": list(m.kernel_size),
               "stride": list(m.stride), "padding": list(m.padding)}
        arrays = {"or_channels": _bits_to_words(m.or_channels).view(np.uint8)} \
            if m.or_channels.any() else {}
        return "packed_maxpool2d", cfg, arrays
    if isinstance(m, PackedFlatten):
        return "packed_flatten", {"channels": m.channels, "hw": m.hw}, {}
    if isinstance(m, PackedSign):
        arrays = {"threshold": m.threshold.reshape(-1).numpy().astype(np.float32)}
        if m.negate.any():
            arrays["negate"] = _bits_to_words(m.negate).view(np.uint8)
        return "packed_sign", {"channels": m.channels, "ndim": m.ndim}, arrays
    t = type(m)
    if t is nn.Flatten:
        return "flatten", {"start_dim": m.start_dim, "end_dim": m.end_dim}, {}
    if t is nn.Linear:
        arrays = {"weight": _np(m.weight)}
        if m.bias is not None:
            arrays["bias"] = _np(m.bias)
        return "linear", {"in_features": m.in_features, "out_features": m.out_features}, arrays
    if t is nn.Conv2d:
        if m.padding_mode != "zeros" or isinstance(m.padding, str):
            raise ValueError(f"cannot save stage {where} (Conv2d): padding {m.padding!r} / "
                             f"{m.padding_mode!r} is not supported by the file format")
        arrays = {"weight": _np(m.weight)}
        if m.bias is not None:
            arrays["bias"] = _np(m.bias)
        cfg = {"in_channels": m.in_channels, "out_channels": m.out_channels,
               "kernel_size": list(m.kernel_size), "stride": list(m.stride),
               "padding": list(m.padding), "dilation": list(m.dilation), "groups": m.groups}
        return "conv2d", cfg, arrays
    if t in (nn.BatchNorm1d, nn.BatchNorm2d):
        if not m.track_running_stats or m.running_mean is None:
            raise ValueError(f"cannot save stage {where} ({t.__name__}): no running statistics")
        arrays = {"running_mean": _np(m.running_mean), "running_var": _np(m.running_var)}
        if m.affine:
            arrays["weight"], arrays["bias"] = _np(m.weight), _np(m.bias)
        return t.__name__.lower(), {"num_features": m.num_features, "eps": float(m.eps),
                                    "affine": bool(m.affine)}, arrays
    if t in (nn.MaxPool2d, nn.AvgPool2d):
        stride = m.stride if m.stride is not None else m.kernel_size
        cfg = {"kernel_size": _pair_list(m.kernel_size), "stride": _pair_list(stride),
               "padding": _pair_list(m.padding), "ceil_mode": bool(m.ceil_mode)}
        if t is nn.MaxPool2d:
            if m.return_indices:
                raise ValueError(f"cannot save stage {where} (MaxPool2d): return_indices=True")
            cfg["dilation"] = _pair_list(m.dilation)
        else:
            if m.divisor_override is not None:
                raise ValueError(f"cannot save stage {where} (AvgPool2d): divisor_override")
            cfg["count_include_pad"] = bool(m.count_include_pad)
        return t.__name__.lower(), cfg, {}
    if t is nn.AdaptiveAvgPool2d:
        size = m.output_size
        if not isinstance(size, (tuple, list)):
            size = (size, size)
        if any(s is None for s in size):
            raise ValueError(f"cannot save stage {where} (AdaptiveAvgPool2d): None output size")
        return "adaptiveavgpool2d", {"output_size": [int(s) for s in size]}, {}
    if t is nn.Hardtanh:
        return "hardtanh", {"min_val": float(m.min_val), "max_val": float(m.max_val)}, {}
    if t is nn.LeakyReLU:
        return "leakyrelu", {"negative_slope": float(m.negative_slope)}, {}
    if t is nn.Dropout:
        return "dropout", {"p": float(m.p)}, {}
    for kind in ("relu", "identity", "tanh", "sigmoid"):
        if t is _FLOAT_KINDS[kind]:
            return kind, {}, {}
    if _contains_packed(m):
        raise ValueError(f"cannot save stage {where} ({t.__name__}): it holds packed layers inside "
                         "a block (module replacement); only flat nn.Sequential exports can be "
                         "saved")
    raise ValueError(f"cannot save stage {where} ({t.__name__}): not supported by the packed file "
                     f"format (supported float modules: {', '.join(sorted(_FLOAT_KINDS))})")


class _Reader:
    """Typed access to one stage record, raising ValueError that names the stage."""

    def __init__(self, rec: dict, index: int, payload: memoryview, used: list) -> None:
        self.where = f"stage {index}"
        if not isinstance(rec, dict):
            raise self.err("record is not an object")
        self.rec = rec
        cfg, table = rec.get("cfg"), rec.get("arrays")
        if not isinstance(cfg, dict) or not isinstance(table, dict):
            raise self.err("missing cfg or arrays")
        self.cfg: dict[str, Any] = cfg
        self.table: dict[str, Any] = table
        self.payload = payload
        self.used = used
        self.taken: set = set()
        self.prev: nn.Module | None = None     # the stage decoded before this one

    def err(self, msg: str) -> ValueError:
        return ValueError(f"{self.where}: {msg}")

    def int(self, key: str, minimum: builtins.int = 0) -> builtins.int:
        v = self.cfg.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise self.err(f"cfg {key!r} must be an int >= {minimum}, got {v!r}")
        return v

    def ints(self, key: str, n: builtins.int, minimum: builtins.int = 0) -> Any:
        """``n`` ints >= ``minimum`` as a tuple (a pair for ``n = 2``)."""
        v = self.cfg.get(key)
        if not isinstance(v, list) or len(v) != n or any(
                isinstance(e, bool) or not isinstance(e, int) or e < minimum for e in v):
            raise self.err(f"cfg {key!r} must be {n} ints >= {minimum}, got {v!r}")
        return tuple(v)

    def float(self, key: str) -> builtins.float:
        v = self.cfg.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise self.err(f"cfg {key!r} must be a finite number, got {v!r}")
        return float(v)

    def bool(self, key: str) -> builtins.bool:
        v = self.cfg.get(key)
        if not isinstance(v, bool):
            raise self.err(f"cfg {key!r} must be a bool, got {v!r}")
        return v

    def choice(self, key: str, options: tuple) -> Any:
        v = self.cfg.get(key)
        if v not in options:
            raise self.err(f"cfg {key!r} must be one of {options}, got {v!r}")
        return v

    def array(self, name: str, dtype: str, shape: tuple[Any, ...],
              optional: builtins.bool = False) -> Any:
        if name not in self.table:
            if optional:
                return None
            raise self.err(f"array {name!r} is missing")
        self.taken.add(name)
        entry = self.table[name]
        if (not isinstance(entry, list) or len(entry) != 3 or not isinstance(entry[0], str)
                or not isinstance(entry[1], list) or isinstance(entry[2], bool)
                or not isinstance(entry[2], int)):
            raise self.err(f"array {name!r}: malformed entry {entry!r}")
        dt, shp, off = entry
        if dt != np.dtype(dtype).str:
            raise self.err(f"array {name!r} has dtype {dt}, expected {np.dtype(dtype).str}")
        if tuple(shp) != tuple(shape):
            raise self.err(f"array {name!r} has shape {tuple(shp)}, expected {tuple(shape)}")
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize      # Python ints: no overflow
        if off < 0 or off % 8 or off + nbytes > len(self.payload):
            raise self.err(f"array {name!r}: offset {off} + {nbytes} bytes is outside the payload")
        self.used.append((off, off + nbytes, f"{self.where}/{name}"))
        dt = np.dtype(dtype)
        arr = np.frombuffer(self.payload, dtype=dt, count=nbytes // dt.itemsize,
                            offset=off).reshape(shape)
        return arr.astype(np.dtype(dtype).newbyteorder("="), copy=True)

    def tensor(self, name: str, shape: tuple[Any, ...], optional: builtins.bool = False) -> Any:
        """The float32 array ``name`` as a tensor (``None`` only when ``optional`` and absent)."""
        arr = self.array(name, "<f4", shape, optional)
        if arr is None:
            return None
        if not np.isfinite(arr).all():
            raise self.err(f"array {name!r} contains NaN or inf")
        return torch.from_numpy(arr)

    def finish(self, known_cfg: set) -> None:
        extra = set(self.table) - self.taken
        if extra:
            raise self.err(f"unexpected arrays {sorted(extra)}")
        extra_cfg = set(self.cfg) - known_cfg
        if extra_cfg:
            raise self.err(f"unexpected cfg keys {sorted(extra_cfg)}")


_LAYER_CFG = {"input", "beta", "d_offset", "fused", "folded_bn"}


def _decode_layer(r: _Reader, kind: str) -> nn.Module:
    mode = r.choice("input", ("sign", "rsign", "binary"))
    if kind == "packed_linear":
        m: Any = PackedLinear()
        m.in_features, m.out_features = r.int("in_features", 1), r.int("out_features", 1)
        o, cin = m.out_features, m.in_features
        nhwc = r.cfg.get("nhwc")
        if nhwc is not None:
            if (not isinstance(nhwc, list) or len(nhwc) != 2 or any(
                    isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in nhwc)
                    or nhwc[0] * nhwc[1] != cin):
                raise r.err(f"cfg 'nhwc' must be [C, HW] with C*HW = in_features, got {nhwc!r}")
            m.nhwc = (nhwc[0], nhwc[1])
            k = nhwc[1] * kernels.n_words(nhwc[0]) * 64
        else:
            k = cin
        words = r.array("weight", "<u8", (o, kernels.n_words(k)))
        try:
            m.weight = kernels.PackedBits(words, k)
        except ValueError as exc:
            raise r.err(f"weight: {exc}") from exc
        beta_options = (None, "dense")
        known = _LAYER_CFG | {"in_features", "out_features", "nhwc"}
        view_c = cin
    else:
        m = PackedConv2d()
        m.in_channels, m.out_channels = r.int("in_channels", 1), r.int("out_channels", 1)
        m.kernel_size = r.ints("kernel_size", 2, 1)
        m.stride = r.ints("stride", 2, 1)
        m.padding = r.ints("padding", 2, 0)
        m.pad_value = r.float("pad_value")
        if m.pad_value not in (1.0, -1.0, 0.0):
            raise r.err(f"cfg 'pad_value' must be 1.0, -1.0 or 0.0, got {m.pad_value}")
        m.pad_value += 0.0                    # -0.0 -> 0.0
        o = m.out_channels
        words = r.array("weight", "<u8", (o, *m.kernel_size, kernels.n_words(m.in_channels)))
        try:
            m.weight = kernels.PackedConvWeights(words, m.in_channels)
        except ValueError as exc:
            raise r.err(f"weight: {exc}") from exc
        beta_options = (None, "kmap")
        known = _LAYER_CFG | {"in_channels", "out_channels", "kernel_size", "stride", "padding",
                              "pad_value"}
        view_c = m.in_channels
    m.name = str(r.rec.get("name", ""))
    m.input_mode = mode
    m.folded_bn = r.bool("folded_bn") if "folded_bn" in r.cfg else False
    m.beta = r.choice("beta", beta_options)
    m.d_offset = r.int("d_offset", 0)
    nhwc = getattr(m, "nhwc", None)
    want = 0 if nhwc is None else nhwc[1] * (kernels.n_words(nhwc[0]) * 64 - nhwc[0])
    if m.d_offset != want:
        raise r.err(f"cfg 'd_offset' is {m.d_offset}, the layout needs {want}")
    m.tau = r.tensor("tau", (view_c,), optional=mode != "rsign")
    if (m.tau is None) == (mode == "rsign"):
        raise r.err("array 'tau' must be present exactly for input 'rsign'")
    m.alpha_q = r.tensor("alpha_q", (o,), optional=True)
    m.alpha_x = r.tensor("alpha_x", (o,), optional=True)
    m.bias = r.tensor("bias", (o,), optional=True)
    if "gamma" in r.table:
        entry = r.table["gamma"]
        shp = tuple(entry[1]) if isinstance(entry, list) and len(entry) == 3 and \
            isinstance(entry[1], list) else None
        allowed: list[tuple[Any, ...] | None] = [(1,), (o,)] if kind == "packed_linear" else \
            [(1, 1, 1), (o, 1, 1)]
        if kind == "packed_conv2d" and shp is not None and len(shp) == 3 and shp[0] == o \
                and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in shp):
            allowed.append(shp)
        if shp is None or shp not in allowed:
            raise r.err(f"array 'gamma' has shape {shp}, expected one of {allowed}")
        m.gamma = r.tensor("gamma", shp)
    if r.bool("fused"):
        if m.folded_bn:
            raise r.err("cfg 'folded_bn' is only valid for a layer with a float epilogue "
                        "(fused is true)")
        thr = r.array("threshold", "<f4", (o,)).astype(np.float64)
        if np.isnan(thr).any():
            raise r.err("threshold contains NaN")
        fl = r.array("flip", "|u1", (kernels.n_words(o) * 8,), optional=True)
        flip = np.zeros(o, bool) if fl is None else \
            np.unpackbits(fl, bitorder="little")[:o].astype(bool)
        m._set_threshold(thr, flip)
    r.finish(known)
    return m


def _from_arrays(m: Any, params: dict[str, Tensor | None],
                 buffers: dict[str, Tensor] | None = None) -> nn.Module:
    """Give a module built on the meta device (no memory) its loaded arrays."""
    for key, value in params.items():
        if value is not None:
            setattr(m, key, nn.Parameter(value, requires_grad=False))
    for key, value in (buffers or {}).items():
        setattr(m, key, value)
    return m


def _decode_float(r: _Reader, kind: str) -> nn.Module:
    cls = _FLOAT_KINDS[kind]
    if kind == "flatten":
        m: nn.Module = nn.Flatten(r.cfg.get("start_dim", 1), r.cfg.get("end_dim", -1))
        for key in ("start_dim", "end_dim"):
            v = r.cfg.get(key)
            if isinstance(v, bool) or not isinstance(v, int):
                raise r.err(f"cfg {key!r} must be an int")
        r.finish({"start_dim", "end_dim"})
        return m
    if kind == "linear":
        i, o = r.int("in_features", 1), r.int("out_features", 1)
        weight = r.tensor("weight", (o, i))              # sizes checked against the payload
        bias = r.tensor("bias", (o,), optional=True)
        r.finish({"in_features", "out_features"})
        return _from_arrays(nn.Linear(i, o, bias=bias is not None, device="meta"),
                            {"weight": weight, "bias": bias})
    if kind == "conv2d":
        ci, co, g = r.int("in_channels", 1), r.int("out_channels", 1), r.int("groups", 1)
        ks = r.ints("kernel_size", 2, 1)
        if ci % g or co % g:
            raise r.err("groups must divide the channels")
        weight = r.tensor("weight", (co, ci // g, *ks))
        bias = r.tensor("bias", (co,), optional=True)
        m = nn.Conv2d(ci, co, ks, r.ints("stride", 2, 1), r.ints("padding", 2, 0),
                      r.ints("dilation", 2, 1), g, bias=bias is not None, device="meta")
        r.finish({"in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
                  "groups"})
        return _from_arrays(m, {"weight": weight, "bias": bias})
    if kind in ("batchnorm1d", "batchnorm2d"):
        n = r.int("num_features", 1)
        eps = r.float("eps")
        if eps < 0:
            raise r.err("eps must be >= 0")
        affine = r.bool("affine")
        mean = r.tensor("running_mean", (n,))
        var = r.tensor("running_var", (n,))
        if (var < 0).any():
            raise r.err("running_var must be >= 0")
        weight = r.tensor("weight", (n,)) if affine else None
        bias = r.tensor("bias", (n,)) if affine else None
        r.finish({"num_features", "eps", "affine"})
        return _from_arrays(cls(n, eps=eps, affine=affine, device="meta"),
                            {"weight": weight, "bias": bias},
                            {"running_mean": mean, "running_var": var,
                             "num_batches_tracked": torch.tensor(0, dtype=torch.long)})
    if kind in ("maxpool2d", "avgpool2d"):
        k, s, p = r.ints("kernel_size", 2, 1), r.ints("stride", 2, 1), r.ints("padding", 2, 0)
        if p[0] * 2 > k[0] or p[1] * 2 > k[1]:
            raise r.err("padding must be at most half the kernel size")
        if kind == "maxpool2d":
            m = nn.MaxPool2d(k, s, p, r.ints("dilation", 2, 1), ceil_mode=r.bool("ceil_mode"))
            r.finish({"kernel_size", "stride", "padding", "dilation", "ceil_mode"})
        else:
            m = nn.AvgPool2d(k, s, p, ceil_mode=r.bool("ceil_mode"),
                             count_include_pad=r.bool("count_include_pad"))
            r.finish({"kernel_size", "stride", "padding", "ceil_mode", "count_include_pad"})
        return m
    if kind == "adaptiveavgpool2d":
        m = nn.AdaptiveAvgPool2d(r.ints("output_size", 2, 1))
        r.finish({"output_size"})
        return m
    if kind == "hardtanh":
        lo, hi = r.float("min_val"), r.float("max_val")
        if not lo < hi:
            raise r.err(f"min_val must be < max_val, got {lo} and {hi}")
        r.finish({"min_val", "max_val"})
        return nn.Hardtanh(lo, hi)
    if kind == "leakyrelu":
        m = nn.LeakyReLU(r.float("negative_slope"))
        r.finish({"negative_slope"})
        return m
    if kind == "dropout":
        prob = r.float("p")
        if not 0 <= prob <= 1:
            raise r.err("p must be in [0, 1]")
        r.finish({"p"})
        return nn.Dropout(prob)
    r.finish(set())
    return cls()


def _packed_channels(m: Any | None) -> int | None:
    """Channels of the PackedActivations that stage ``m`` emits (None: it emits none)."""
    if isinstance(m, PackedSign) and m.ndim == 4:
        return m.channels
    if isinstance(m, PackedConv2d) and m.fused:
        return m.out_channels
    if isinstance(m, PackedMaxPool2d):
        return m.channels
    return None


def _decode_stage(r: _Reader) -> nn.Module:
    kind = r.rec.get("kind")
    if kind in ("packed_linear", "packed_conv2d"):
        return _decode_layer(r, kind)
    if kind in ("packed_maxpool2d", "packed_flatten"):
        c = r.int("channels", 1)
        if c != _packed_channels(r.prev):
            raise r.err(f"cfg 'channels' is {c}, but the previous stage does not emit packed "
                        f"activations with {c} channels")
    if kind == "packed_maxpool2d":
        fl = r.array("or_channels", "|u1", (kernels.n_words(c) * 8,), optional=True)
        flags = None if fl is None else np.unpackbits(fl, bitorder="little")[:c].astype(bool)
        pool = PackedMaxPool2d(c, r.ints("kernel_size", 2, 1), r.ints("stride", 2, 1),
                               r.ints("padding", 2, 0), flags)
        r.finish({"channels", "kernel_size", "stride", "padding"})
        return pool
    if kind == "packed_flatten":
        m = PackedFlatten(r.int("channels", 1), r.int("hw", 1))
        r.finish({"channels", "hw"})
        return m
    if kind == "packed_sign":
        c = r.int("channels", 1)
        ndim = r.choice("ndim", (2, 4))
        thr = r.array("threshold", "<f4", (c,))
        if np.isnan(thr).any():
            raise r.err("threshold contains NaN")
        fl = r.array("negate", "|u1", (kernels.n_words(c) * 8,), optional=True)
        negate = np.zeros(c, bool) if fl is None else \
            np.unpackbits(fl, bitorder="little")[:c].astype(bool)
        r.finish({"channels", "ndim"})
        return PackedSign(thr, negate, ndim)
    if kind in _FLOAT_KINDS:
        return _decode_float(r, kind)
    raise r.err(f"unknown stage kind {kind!r}")


_MAX_HEADER = 1 << 20      # decompressed JSON header bytes (a stage takes ~200)
_MAX_DEFLATE_RATIO = 1032  # deflate expands at most ~1032:1 (zlib's technical details)


def _inflate(blob: bytes, limit: int) -> bytes:
    """zlib-decompress at most ``limit`` bytes; ValueError if the stream is longer or broken."""
    d = zlib.decompressobj()
    out = d.decompress(blob, limit + 1)
    if len(out) > limit or d.unconsumed_tail:
        raise ValueError(f"decompresses to more than the declared {limit} bytes")
    if not d.eof or d.unused_data:
        raise ValueError("compressed stream is incomplete or has trailing data")
    return out


def _decode(data: bytes, where: str = "<bytes>") -> PackedModel:
    def bad(msg: str) -> ValueError:
        return ValueError(f"{where}: {msg}")

    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < 8 or data[:8] != MAGIC:
        raise bad("not a bnnlab packed model file (bad magic; expected a file written by "
                  "PackedModel.save)")
    if len(data) < 24:
        raise bad(f"file is truncated ({len(data)} bytes)")
    version, hlen, zlen = struct.unpack("<IIQ", data[8:24])
    if version != FORMAT_VERSION:
        raise bad(f"unsupported format version {version} (this bnnlab reads {FORMAT_VERSION})")
    expected = 24 + hlen + zlen + _DIGEST_BYTES
    if len(data) < expected:
        raise bad(f"file is truncated ({len(data)} bytes, expected {expected})")
    if len(data) > expected:
        raise bad(f"file has {len(data) - expected} trailing bytes (expected {expected} bytes)")
    body, digest = data[:-_DIGEST_BYTES], data[-_DIGEST_BYTES:]
    if hashlib.sha256(body).digest() != digest:
        raise bad("checksum mismatch: the file is corrupted or was modified")
    try:
        header = json.loads(_inflate(data[24:24 + hlen], _MAX_HEADER).decode("utf-8"))
    except (ValueError, zlib.error, UnicodeDecodeError, RecursionError) as exc:
        raise bad(f"invalid header ({type(exc).__name__}: {exc})") from None
    if not isinstance(header, dict) or header.get("format") != _FORMAT_NAME:
        raise bad("not a bnnlab packed model file (header format tag missing)")
    payload_bytes = header.get("payload_bytes")
    if isinstance(payload_bytes, bool) or not isinstance(payload_bytes, int) or payload_bytes < 0:
        raise bad("invalid header: payload_bytes")
    if payload_bytes > _MAX_DEFLATE_RATIO * zlen + 64:
        raise bad(f"invalid header: payload_bytes={payload_bytes} cannot come from {zlen} "
                  "compressed bytes")
    try:
        raw = _inflate(data[24 + hlen:24 + hlen + zlen], payload_bytes)
    except (ValueError, zlib.error) as exc:
        raise bad(f"invalid payload ({exc})") from None
    if len(raw) != payload_bytes:
        raise bad(f"payload has {len(raw)} bytes, the header declares {payload_bytes}")
    if header.get("version") != FORMAT_VERSION:
        raise bad(f"header version {header.get('version')!r} != {FORMAT_VERSION}")
    src = header.get("source_state_dict_bytes")
    if src is not None and (isinstance(src, bool) or not isinstance(src, int) or src < 0):
        raise bad("invalid header: source_state_dict_bytes")
    records = header.get("stages")
    if not isinstance(records, list) or not records:
        raise bad("invalid header: no stages")
    payload = memoryview(raw)
    used: list = []
    stages: list[nn.Module] = []
    for i, rec in enumerate(records):
        try:
            reader = _Reader(rec, i, payload, used)
            reader.prev = stages[-1] if stages else None
            stages.append(_decode_stage(reader))
        except (ValueError, TypeError, RuntimeError, OverflowError) as exc:
            msg = str(exc)
            if not msg.startswith(f"stage {i}:"):
                msg = f"stage {i}: {msg}"
            raise bad(f"invalid packed model file: {msg}") from None
    used.sort()
    for (_, e0, n0), (b1, _, n1) in zip(used, used[1:], strict=False):
        if b1 < e0:
            raise bad(f"invalid packed model file: arrays {n0} and {n1} overlap")
    model = PackedModel(nn.Sequential(*stages), kind="sequential", source_state_dict_bytes=src,
                        notes=["loaded from file"])
    return model


# =============================================================================== CLI
def _calibrate(model: nn.Module, shape: tuple, steps: int, seed: int) -> None:
    """Set non-trivial BatchNorm statistics: a few train-mode forwards on random data."""
    g = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(steps):
            model(torch.randn(*shape, generator=g))
    model.eval()


def main(argv: list[str] | None = None) -> int:
    """``python -m bnnlab export``: export a reference model to a packed file."""
    from bnnlab import models

    p = argparse.ArgumentParser(
        prog="python -m bnnlab export",
        description="Export a reference binary model (models.binary_mlp / binary_cnn) to the "
                    "pickle-free packed format and print its size next to the float32 "
                    "state_dict's.")
    p.add_argument("model", choices=("binary_mlp", "binary_cnn"))
    p.add_argument("out", help="output file (e.g. cnn.bnnpk)")
    p.add_argument("--weights", help="state_dict saved with torch.save (loaded with "
                                     "weights_only=True)")
    p.add_argument("--random", action="store_true",
                   help="no trained weights: random init + BN statistics from random data (demo)")
    p.add_argument("--in-channels", type=int, default=1)
    p.add_argument("--image-size", type=int, default=28)
    p.add_argument("--in-features", type=int, default=784)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-fuse", action="store_true", help="do not fuse binary chains")
    p.add_argument("--no-fold-bn", action="store_true",
                   help="keep the BatchNorm after the last binary layer as a float stage "
                        "(bit-exact logits) instead of folding it into the layer's epilogue")
    args = p.parse_args(argv)
    if (args.weights is None) == (not args.random):
        p.error("give exactly one of --weights FILE or --random")
    torch.manual_seed(args.seed)
    try:
        if args.model == "binary_cnn":
            model = models.binary_cnn(args.in_channels, args.image_size, args.num_classes)
            shape: tuple[int, ...] = (8, args.in_channels, args.image_size, args.image_size)
        else:
            model = models.binary_mlp(args.in_features, num_classes=args.num_classes)
            shape = (8, args.in_features)
        if args.weights:
            state = torch.load(args.weights, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        else:
            _calibrate(model, shape, 4, args.seed)
        model.eval()
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(args.seed + 1))
        packed = export(model, x, fuse=not args.no_fuse, fold_float_bn=not args.no_fold_bn)
        n = packed.save(args.out)
    except (ValueError, TypeError, OSError, RuntimeError) as exc:
        print(f"bnnlab export: error: {exc}", file=sys.stderr)
        return 2
    s = packed.sizes()
    for line in packed.notes:
        print(f"  {line}")
    print(f"wrote {args.out}: {n} bytes; float32 state_dict {s['float_state_dict_bytes']} bytes "
          f"({s['ratio']:.1f}x smaller); packed binary weights {s['packed_weight_bytes']} bytes "
          f"vs {s['float_weight_bytes']} as float32 ({s['weight_ratio']:.1f}x)")
    return 0
