"""Packed inference layers: PackedLinear / PackedConv2d (from trained binary layers), and the
bit max-pool, flatten and sign stages.

Part of :mod:`bnnlab.packed` (see its docstring for the rules and the format)."""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bnnlab import kernels
from bnnlab import quantizers as Q
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
        if self.threshold is None:
            raise ValueError(f"{self._who()}: only fused layers have thresholds")
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

    def _geometry(self) -> tuple:
        """The kernel geometry the plan depends on (conv: stride, padding, pad value)."""
        return ()

    def _make_plan(self, prepared: Any, pool: kernels.MaxPoolSpec | None) -> Any:
        raise NotImplementedError  # pragma: no cover

    def _kernel_plan(self, pool: kernels.MaxPoolSpec | None = None) -> Any:
        """The :mod:`bnnlab.kernels` plan of this layer's fast epilogue (fused threshold or
        affine-only float), validated once and rebuilt whenever the weight, geometry,
        epilogue or ``pool`` changes (the key holds them by identity)."""
        prepared = self._thresholds() if self.fused else \
            (self._affine_args()[0] if self._affine_only else None)
        key = (prepared, self.weight, self._geometry(), pool)
        plans = self.__dict__.setdefault("_plans", {})
        plan = plans.get(key)
        if plan is None:
            if len(plans) >= 8:
                plans.clear()
            plan = self._make_plan(prepared, pool)
            plans[key] = plan
        return plan

    @property
    def _affine_only(self) -> bool:
        return self.alpha_x is None and self.beta is None and self.gamma is None \
            and self.d_offset == 0

    def _binarize(self, x: Tensor, channel_shape: tuple[int, ...]) -> Tensor:
        if x.dtype != torch.float32:
            raise TypeError(f"{self._who()}: input must be float32, got {x.dtype}")
        if self.input_mode == "rsign":
            if self.tau is None:
                raise ValueError(f"{self._who()}: input mode 'rsign' needs its threshold tau")
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
            if x is None:
                raise ValueError(f"{self._who()}: XNOR-Net input scaling needs the real input x")
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
        x2 = self._binarize(x.reshape(-1, self.in_features), (1, -1))
        return kernels.pack_signs(x2, strict=self.input_mode == "binary")

    def int_forward(self, x: Any) -> np.ndarray:
        """The integer part :math:`d = x_b W_b^\\top`, int32 ``(N, out_features)``."""
        d = kernels.xnor_matmul(self._pack(x), self.weight)
        return d - np.int32(self.d_offset) if self.d_offset else d

    def _make_plan(self, prepared: Any, pool: kernels.MaxPoolSpec | None) -> Any:
        if isinstance(prepared, kernels.Thresholds):
            return kernels.prepare_matmul(self.weight, threshold=prepared)
        return kernels.prepare_matmul(self.weight, alpha=prepared)

    def forward(self, x: Any) -> Any:
        if type(x) is kernels.PackedBits and not self.fused and self._affine_only \
                and x.k == self.weight.k:
            # packed input (a PackedFlatten's output): straight to the kernel
            return torch.from_numpy(self._kernel_plan()(x))
        lead = tuple(x.shape[:-1]) if isinstance(x, Tensor) else None
        if self.folded_bn and lead is not None and len(lead) != 1:
            raise ValueError(f"{self._who()}: a BatchNorm1d folded into this layer normalises "
                             f"dim 1, so the input must be 2-D, got {tuple(x.shape)}")
        a = self._pack(x)
        if self.fused:
            return self._kernel_plan()(a)
        if self._affine_only:
            y = torch.from_numpy(self._kernel_plan()(a))
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
        xb = self._binarize(x, (1, -1, 1, 1))
        return kernels.pack_nhwc(xb, strict=self.input_mode == "binary")

    def int_forward(self, x: Any) -> np.ndarray:
        """The integer part :math:`d`, int32 ``(N, C_out, H_o, W_o)`` (inputs as forward)."""
        if isinstance(x, Tensor) and x.dim() == 3:
            return self.int_forward(x.unsqueeze(0))[0]
        return kernels.conv2d_packed(self._pack(x), self.weight, self.stride, self.padding,
                                     self.pad_value)

    def _geometry(self) -> tuple:
        return (self.stride, self.padding, self.pad_value)

    def _make_plan(self, prepared: Any, pool: kernels.MaxPoolSpec | None) -> Any:
        if isinstance(prepared, kernels.Thresholds):
            return kernels.prepare_conv2d(self.weight, stride=self.stride, padding=self.padding,
                                          pad_value=self.pad_value, threshold=prepared, pool=pool)
        return kernels.prepare_conv2d(self.weight, stride=self.stride, padding=self.padding,
                                      pad_value=self.pad_value, alpha=prepared)

    def _fast_pooled(self, x: Any, pool: kernels.MaxPoolSpec) -> Any:
        """Fused forward followed by a :class:`PackedMaxPool2d` (its ``spec``), one kernel
        call through the cached plan."""
        return self._kernel_plan(pool)(self._pack(x))

    _forward_pooled = _fast_pooled

    def forward(self, x: Any) -> Any:
        if isinstance(x, Tensor) and x.dim() == 3:
            return self.forward(x.unsqueeze(0)).squeeze(0)
        px = self._pack(x)
        if self.fused:
            return self._kernel_plan()(px)
        if self._affine_only:
            return torch.from_numpy(self._kernel_plan()(px))
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
            return self._pack_plan(None)(x)
        return kernels.pack_rows_affine(x, self._affine)

    def _pack_plan(self, pool: kernels.MaxPoolSpec | None) -> kernels.PackPlan:
        """The packer plan (affine sign, optional bit max-pool), cached per ``pool``."""
        plans = self.__dict__.setdefault("_plans", {})
        key = (self._affine, pool)
        plan = plans.get(key)
        if plan is None:
            if len(plans) >= 8:
                plans.clear()
            plan = kernels.prepare_pack_nhwc(self.channels, scale=self._affine, pool=pool)
            plans[key] = plan
        return plan

    def _forward_pooled(self, x: Tensor, pool: kernels.MaxPoolSpec) -> Any:
        """forward followed by a :class:`PackedMaxPool2d` (its ``spec``), in one kernel call."""
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"PackedSign expects a 4-D float tensor with {self.channels} "
                             "channels in dim 1")
        return self._pack_plan(pool)(x)

    _fast_pooled = _forward_pooled


def _pair2(v: Any) -> tuple[int, int]:
    """An int or a pair as a tuple of two ints."""
    if isinstance(v, (tuple, list)):
        return (int(v[0]), int(v[1]))
    return (int(v), int(v))


def _pair_list(v: Any) -> list[int]:
    return [int(v[0]), int(v[1])] if isinstance(v, (tuple, list)) else [int(v), int(v)]


def _np(t: Tensor) -> np.ndarray:
    return t.detach().cpu().to(torch.float32).numpy()



def _is_binary(m: Any) -> bool:
    return isinstance(m, _BinaryMixin)


def _contains_binary(m: Any) -> bool:
    return any(_is_binary(s) for s in m.modules())


def _contains_packed(m: Any) -> bool:
    return any(isinstance(s, _PackedLayer) for s in m.modules())
