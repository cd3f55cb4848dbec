r"""Building blocks of modern BNNs: learnable shifts, RPReLU, Bi-Real and ReActNet blocks.

Notation (README): :math:`\tau_c` RSign threshold (:class:`bnnlab.quantizers.RSign`),
:math:`\gamma_c, \zeta_c, \kappa_c` RPReLU input shift, output shift and negative slope
(ReActNet's :math:`\gamma, \zeta, \beta` — :math:`\beta` renamed :math:`\kappa`, code name
``slope``). Every block takes ``binary=False`` to build its float twin: the same graph with
:class:`torch.nn.Conv2d` instead of the binary convolution and a real activation (or a
learnable shift) where the binary block has its sign.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from bnnlab._validation import check_choice, check_int, check_real
from bnnlab.layers import BinaryConv2d
from bnnlab.quantizers import MagnitudeAwareSign, RSign, get_quantizer

__all__ = ["LearnableBias", "RPReLU", "BiRealBlock", "ReActBlock", "REACT_GRADIENTS"]

#: Surrogate-gradient variants of :class:`ReActBlock`: the official code's, and larq's.
REACT_GRADIENTS = ("official", "larq")


def _per_channel(p: Tensor, x: Tensor) -> Tensor:
    """View a (C,) parameter so that it broadcasts along dim 1 of ``x``."""
    if x.dim() < 2 or x.shape[1] != p.shape[0]:
        raise ValueError(f"input must have {p.shape[0]} channels in dim 1, got shape "
                         f"{tuple(x.shape)}")
    return p.view(1, -1, *([1] * (x.dim() - 2)))


def _activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "hardtanh":
        return nn.Hardtanh()
    if name == "identity":
        return nn.Identity()
    raise ValueError(f"activation must be 'relu', 'hardtanh' or 'identity', got {name!r}")


class LearnableBias(nn.Module):
    r"""A learnable per-channel shift: :math:`y_{n,c,\dots} = x_{n,c,\dots} + b_c`.

    ReActNet places one before every sign (the ``move`` layers of its code) and inside RPReLU.

    Args:
        num_channels: :math:`C`, the size of dimension 1 of the input.

    Attributes:
        bias: :class:`~torch.nn.Parameter` of shape ``(C,)``, initialised to 0.

    Shape:
        - Input: :math:`(N, C)` or :math:`(N, C, *)`. Output: same shape.

    Examples::

        >>> LearnableBias(3)(torch.zeros(2, 3, 4, 4)).abs().sum().item()
        0.0
    """

    def __init__(self, num_channels: int) -> None:
        super().__init__()
        self.num_channels = check_int(num_channels, "num_channels", min_value=1)
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: Tensor) -> Tensor:
        return x + _per_channel(self.bias, x)

    def extra_repr(self) -> str:
        return f"num_channels={self.num_channels}"


class RPReLU(nn.Module):
    r"""ReActNet's RPReLU: per-channel shift, PReLU, shift.

    .. math::
        f(x)_c = \begin{cases} x_c - \gamma_c + \zeta_c & x_c > \gamma_c \\
                               \kappa_c (x_c - \gamma_c) + \zeta_c & x_c \le \gamma_c \end{cases}

    i.e. ``F.prelu(x - gamma, slope) + zeta``. Smooth except at :math:`x_c = \gamma_c`, so every
    parameter gets its ordinary autograd gradient.

    Args:
        num_channels: :math:`C` (dimension 1 of the input).
        init_slope: initial :math:`\kappa_c` (the paper's :math:`\beta_c`). Default: ``0.25``
            (as :class:`torch.nn.PReLU`).

    Attributes:
        gamma: input shift :math:`\gamma_c`, shape ``(C,)``, init 0.
        zeta: output shift :math:`\zeta_c`, shape ``(C,)``, init 0.
        slope: negative slope :math:`\kappa_c`, shape ``(C,)``, init ``init_slope``.

    Shape:
        - Input: :math:`(N, C)` or :math:`(N, C, *)`. Output: same shape.

    References:
        Liu et al., *ReActNet*, ECCV 2020, arXiv:2003.03488.
    """

    def __init__(self, num_channels: int, init_slope: float = 0.25) -> None:
        super().__init__()
        self.num_channels = check_int(num_channels, "num_channels", min_value=1)
        init_slope = check_real(init_slope, "init_slope")
        self.gamma = nn.Parameter(torch.zeros(num_channels))
        self.zeta = nn.Parameter(torch.zeros(num_channels))
        self.slope = nn.Parameter(torch.full((num_channels,), float(init_slope)))

    def forward(self, x: Tensor) -> Tensor:
        return F.prelu(x - _per_channel(self.gamma, x), self.slope) + _per_channel(self.zeta, x)

    def extra_repr(self) -> str:
        return f"num_channels={self.num_channels}"


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    """Bi-Real / ReActNet real-valued shortcut: identity, or AvgPool(2) -> 1x1 conv -> BN."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    layers: list[nn.Module] = []
    if stride == 2:
        layers.append(nn.AvgPool2d(kernel_size=2, stride=2, ceil_mode=True,
                                   count_include_pad=False))
    layers += [nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)]
    return nn.Sequential(*layers)


class BiRealBlock(nn.Module):
    r"""Bi-Real Net unit: a binary 3×3 convolution with a real-valued shortcut around it.

    .. math::
        y = \mathrm{BN}\bigl(W_b \star \operatorname{sign}(x)\bigr) + s(x)

    where :math:`s` is the identity, or :math:`\mathrm{BN}(\mathrm{Conv}_{1\times1}(\mathrm{AvgPool}_2(x)))`
    (real-valued) when the stride is 2 or the width changes. The real activations :math:`x`
    flow through every shortcut, so the network keeps full-precision information between
    binary convolutions (Bi-Real Net stacks two of these per ResNet basic block)::

        x ──q_x──BConv3x3──BN──(+)──► y
        └──────[AvgPool─Conv1x1─BN]─┘

    Args:
        in_channels, out_channels: widths.
        stride: 1 or 2. Default: ``1``.
        binary: ``False`` builds the float twin (``nn.Conv2d``, ``activation`` instead of the
            sign). Default: ``True``.
        input_quantizer: binariser of the activations. Default: ``"approx_sign"`` (Bi-Real's
            piecewise-polynomial surrogate).
        weight_quantizer: binariser of the weights. Default: ``"magnitude_aware_sign"``
            (mean |W| per output channel × sign W, as Bi-Real Net).
        weight_clip: latent weight clip of the binary conv. Default: ``None``.
        pad_value: padding value of the binarised input (``1.0`` is what the packed kernel
            computes; ``0.0`` is torch's zero padding). Default: ``1.0``.
        activation: float twin's activation, ``"hardtanh"``, ``"relu"`` or ``"identity"``.
            Default: ``"hardtanh"``.

    Shape:
        - Input: :math:`(N, C_{in}, H, W)`. Output: :math:`(N, C_{out}, \lceil H/s \rceil, \lceil W/s \rceil)`.

    References:
        Liu et al., *Bi-Real Net*, ECCV 2018, arXiv:1808.00278.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, *,
                 binary: bool = True, input_quantizer: Any = "approx_sign",
                 weight_quantizer: Any = "magnitude_aware_sign", weight_clip: float | None = None,
                 pad_value: float = 1.0, activation: str = "hardtanh") -> None:
        super().__init__()
        check_int(in_channels, "in_channels", min_value=1)
        check_int(out_channels, "out_channels", min_value=1)
        stride = check_choice(check_int(stride, "stride"), "stride", (1, 2))
        self.in_channels, self.out_channels, self.stride, self.binary = (
            in_channels, out_channels, stride, bool(binary))
        self.act: nn.Module
        self.conv: nn.Module
        if binary:
            self.act = nn.Identity()
            self.conv = BinaryConv2d(in_channels, out_channels, 3, stride=stride, padding=1,
                                     bias=False, input_quantizer=input_quantizer,
                                     weight_quantizer=weight_quantizer, weight_clip=weight_clip,
                                     pad_value=pad_value)
        else:
            self.act = _activation(activation)
            self.conv = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1,
                                  bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.shortcut = _shortcut(in_channels, out_channels, stride)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(self.act(x))) + self.shortcut(x)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}, binary={self.binary}"


class ReActBlock(nn.Module):
    r"""ReActNet-A block (MobileNet-style, all convolutions binary), simplified for CPU size.

    Two halves, each a binary convolution with a real shortcut and an RPReLU:

    .. math::
        h &= \operatorname{RPReLU}_1\bigl(\mathrm{BN}_1(W^{3\times3}_b \star
             \operatorname{RSign}_1(x)) + \mathrm{AvgPool}_s(x)\bigr) \\
        y &= \operatorname{RPReLU}_2\bigl(\mathrm{BN}_2(W^{1\times1}_b \star \operatorname{RSign}_2(h)) + h\bigr)

    When ``out_channels == 2 * in_channels`` the 1×1 part is two binary 1×1 convolutions whose
    outputs each add :math:`h` and are concatenated (ReActNet's channel doubling, so no real
    1×1 convolution is needed on the shortcut)::

        x ──RSign──BConv3x3(s)──BN──(+)──RPReLU──► h
        └───────────[AvgPool]──────┘
        h ──RSign──BConv1x1──BN──(+)──RPReLU──► y      (× 2 and concatenated when widening)
        └──────────────────────────┘

    Args:
        in_channels, out_channels: widths; ``out_channels`` is ``in_channels`` or twice it.
        stride: 1 or 2 (the 3×3 convolution's; the shortcut average-pools). Default: ``1``.
        binary: ``False`` builds the float twin: ``nn.Conv2d`` and a :class:`LearnableBias`
            in place of each RSign (the RPReLUs remain the non-linearity). Default: ``True``.
        weight_quantizer: binariser of the weights. Default: ``"magnitude_aware_sign"``.
        weight_clip: latent weight clip of the binary convs. Default: ``None``.
        pad_value: padding value of the binarised input of the 3×3 conv. Default: ``1.0``.
        gradients: the surrogate gradients. ``"official"`` (default), as the official ReActNet
            code trains: RSign with the ApproxSign surrogate
            :math:`(2 - 2|t|)\,\mathbb{1}\{|t| \le 1\}` on :math:`t = x - \tau`, and the
            magnitude-aware weight sign with the unscaled surrogate
            :math:`\mathbb{1}\{|W| \le 1\}` (``MagnitudeAwareSign(scale_gradient=False)``). It is
            the default because the block claims to be ReActNet's, and the paper's numbers come
            from that code. ``"larq"``: the straight-through estimator
            :math:`\mathbb{1}\{|t| \le 1\}` for RSign and larq's ``magnitude_aware_sign``,
            whose surrogate is scaled by :math:`\alpha_o`. Either way the forward is the same;
            a ``weight_quantizer`` given as a module or class is used as it is.

    Shape:
        - Input: :math:`(N, C_{in}, H, W)`. Output: :math:`(N, C_{out}, \lceil H/s \rceil, \lceil W/s \rceil)`.

    References:
        Liu et al., *ReActNet*, ECCV 2020, arXiv:2003.03488.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, *,
                 binary: bool = True, weight_quantizer: Any = "magnitude_aware_sign",
                 weight_clip: float | None = None, pad_value: float = 1.0,
                 gradients: str = "official") -> None:
        super().__init__()
        check_int(in_channels, "in_channels", min_value=1)
        check_int(out_channels, "out_channels", min_value=1)
        stride = check_choice(check_int(stride, "stride"), "stride", (1, 2))
        if out_channels not in (in_channels, 2 * in_channels):
            raise ValueError(f"out_channels must be in_channels ({in_channels}) or twice it, "
                             f"got {out_channels}")
        self.in_channels, self.out_channels, self.stride, self.binary = (
            in_channels, out_channels, stride, bool(binary))
        self.gradients = check_choice(gradients, "gradients", REACT_GRADIENTS)
        official = self.gradients == "official"
        # validate the spec once, with the right argname; each conv gets its own instance
        get_quantizer(weight_quantizer, argname="weight_quantizer")
        # the official code's unscaled weight surrogate, for the name only (modules/classes as is)
        unscaled = official and isinstance(weight_quantizer, str) and \
            weight_quantizer == "magnitude_aware_sign"
        c = in_channels

        def weight_q() -> Any:  # a fresh instance for each conv
            return MagnitudeAwareSign(scale_gradient=False) if unscaled else weight_quantizer

        def conv(k: int, s: int, sign: nn.Module | None) -> nn.Module:
            if binary:
                # The RSign is the conv's own input quantizer, so summary(), the analysis
                # tools and the exporter see a binary-input layer (1-bit MACs).
                return BinaryConv2d(c, c, k, stride=s, padding=k // 2, bias=False,
                                    input_quantizer=sign, weight_quantizer=weight_q(),
                                    weight_clip=weight_clip,
                                    pad_value=pad_value if k > 1 else 0.0)
            return nn.Conv2d(c, c, k, stride=s, padding=k // 2, bias=False)

        # Binary: RSign_1 / RSign_2 live inside the convs (sign1/sign2 are identities; the
        # pointwise convs of a widening block share one RSign module, as in ReActNet).
        # Float twin: a LearnableBias shift stands where each RSign is.
        rsign_gradient = "approx_sign" if official else "ste"
        sign_a = RSign(c, gradient=rsign_gradient) if binary else None
        sign_b = RSign(c, gradient=rsign_gradient) if binary else None
        self.sign1 = nn.Identity() if binary else LearnableBias(c)
        self.conv3x3 = conv(3, stride, sign_a)
        self.bn1 = nn.BatchNorm2d(c)
        self.pool = nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False) \
            if stride == 2 else nn.Identity()
        self.act1 = RPReLU(c)
        self.sign2 = nn.Identity() if binary else LearnableBias(c)
        n_pw = out_channels // in_channels
        self.pointwise = nn.ModuleList([conv(1, 1, sign_b) for _ in range(n_pw)])
        self.bn2 = nn.ModuleList([nn.BatchNorm2d(c) for _ in range(n_pw)])
        self.act2 = RPReLU(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        h = self.bn1(self.conv3x3(self.sign1(x))) + self.pool(x)
        h = self.act1(h)
        hb = self.sign2(h)
        outs = [bn(pw(hb)) + h for pw, bn in zip(self.pointwise, self.bn2, strict=True)]
        y = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
        return self.act2(y)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, stride={self.stride}, "
                f"binary={self.binary}, gradients={self.gradients!r}")
