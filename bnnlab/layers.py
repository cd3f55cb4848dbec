r"""Binary layers: BinaryNet, XNOR-Net, XNOR-Net++ and ABC-Net as subclasses of torch's layers.

Every layer here *is* a :class:`torch.nn.Linear` / :class:`torch.nn.Conv1d` /
:class:`torch.nn.Conv2d` (same constructor arguments, names, order and defaults, same
``state_dict`` keys for the latent ``weight`` and ``bias``), plus keyword-only extras:

``input_quantizer``, ``weight_quantizer``
    What binarises the input and the latent weight. Anything :func:`bnnlab.quantizers.get_quantizer`
    accepts: a registry name (``"ste_sign"``, the default), a quantizer class or instance, or
    ``None`` for full precision. They are child modules, so ``print(model)`` lists them.
``weight_clip``
    larq's ``weight_clip`` constraint: :meth:`clip_weights_` clamps the latent weight to
    :math:`[-c, c]`. It is **not** applied by ``forward``; call :func:`clip_weights_` on the model
    after every ``optimizer.step()`` (``bnnlab.train.fit`` does). With the STE's clip at 1, a
    latent weight beyond :math:`\pm 1` gets no gradient and can never flip back ("starved
    weights", larq).
``pad_value`` (convolutions)
    ``0.0`` (default) is torch's zero padding of :math:`\operatorname{sign}(x)`, so padded taps
    are 0. ``+1.0`` / ``-1.0`` pad the *binarised* input with that value, so every tap stays in
    :math:`\{-1, +1\}`: this is what the packed kernels compute (``bnnlab.kernels``).

Families (notation of the README: :math:`x_b = q_x(x)`, :math:`W_b = q_w(W)`, sign(0) = +1):

==========================================  =========================================================================
class                                       forward
==========================================  =========================================================================
:class:`BinaryLinear`, ``BinaryConv1d/2d``  :math:`y = W_b \star x_b + b`
:class:`XnorLinear`, :class:`XnorConv2d`    :math:`y = (W_b \star x_b) \odot \alpha \odot \beta + b` (β: a K-map)
:class:`XnorPlusLinear`, ``...Conv2d``      :math:`y = (W_b \star x_b) \odot \Gamma + b`, Γ learned
:class:`AbcLinear`, :class:`AbcConv2d`      :math:`y = \sum_n \beta_n \sum_m \alpha_m (B_m \star A_n) + b`
==========================================  =========================================================================

Gradients: the signs use their quantizer's surrogate (straight-through estimator for
``"ste_sign"``: :math:`\mathbb{1}\{|x| \le 1\}`); everything else (scales, shifts) is plain
autograd.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Self, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parameter import UninitializedParameter, is_lazy

from bnnlab import functional as BF
from bnnlab._validation import check_bool, check_choice, check_int, check_real
from bnnlab.quantizers import MagnitudeAwareSign, get_quantizer

__all__ = [
    "BinaryLinear",
    "BinaryConv1d",
    "BinaryConv2d",
    "XnorLinear",
    "XnorConv2d",
    "XnorPlusLinear",
    "XnorPlusConv2d",
    "AbcLinear",
    "AbcConv2d",
    "GAMMA_MODES",
    "ABC_FORMULATIONS",
    "clip_weights_",
]

#: Modes of XNOR-Net++'s learned output scale Γ (:class:`XnorPlusLinear`, :class:`XnorPlusConv2d`).
GAMMA_MODES = ("scalar", "channel", "factorised")

#: Values allowed for ``pad_value`` of the binary convolutions.
PAD_VALUES = (0.0, 1.0, -1.0)


def _refuse_double_scale(layer: nn.Module, input_scaling: bool) -> None:
    """XNOR-Net layers apply α = mean|W| (and β / the K-map) themselves: a magnitude-aware sign
    (α·sign) in the same place would apply that scale a second time (issue 8, defect 6)."""
    name = type(layer).__name__
    if isinstance(layer.weight_quantizer, MagnitudeAwareSign):
        raise ValueError(f"{name} already scales its binary weight by alpha = mean|W| per output "
                         f"channel; weight_quantizer=MagnitudeAwareSign would apply alpha twice. "
                         f"Use weight_quantizer='ste_sign' (or BinaryLinear/BinaryConv2d with "
                         f"'magnitude_aware_sign' for Bi-Real's single alpha)")
    if input_scaling and isinstance(layer.input_quantizer, MagnitudeAwareSign):
        raise ValueError(f"{name} already scales its binary input by beta = mean|x| "
                         f"(input_scaling=True); input_quantizer=MagnitudeAwareSign would apply "
                         f"an input scale twice. Use input_quantizer='ste_sign', or "
                         f"input_scaling=False")


def _spread(n: int) -> Tensor:
    """``n`` values evenly spread over [-1, 1]: u_m = -1 + 2 m / (n - 1); n = 1 gives [0]."""
    if n == 1:
        return torch.zeros(1, dtype=torch.float64)
    return torch.tensor([-1.0 + 2.0 * m / (n - 1) for m in range(n)], dtype=torch.float64)


# --------------------------------------------------------------------------- the shared core
if TYPE_CHECKING:  # the mixins are only ever mixed into torch layers
    _ModuleBase = nn.Module
    _ConvBase = nn.modules.conv._ConvNd
else:
    _ModuleBase = _ConvBase = object


class _BinaryMixin(_ModuleBase):
    """Quantizers, weight clip, :meth:`binary_weight` and :meth:`from_float` for every family."""

    #: the torch layer this class binarises (set by each concrete base)
    _float_type: type[nn.Module]

    input_quantizer: nn.Module | None
    weight_quantizer: nn.Module | None
    weight_clip: float | None
    weight: Tensor

    def _init_binary(self, input_quantizer: Any, weight_quantizer: Any, weight_clip: Any) -> None:
        # register_module (not plain assignment) so that a None quantizer still shows in repr
        self.register_module("input_quantizer", get_quantizer(input_quantizer, argname="input_quantizer"))
        self.register_module("weight_quantizer", get_quantizer(weight_quantizer, argname="weight_quantizer"))
        self.weight_clip = check_real(weight_clip, "weight_clip", min_value=0.0, include_min=False,
                                      allow_none=True)

    def _quantize_input(self, input: Tensor) -> Tensor:
        return input if self.input_quantizer is None else self.input_quantizer(input)

    def binary_weight(self) -> Tensor:
        r"""The quantised weight :math:`W_b = q_w(W)` that ``forward`` uses (differentiable).

        With ``weight_quantizer=None`` this is the latent weight itself. XNOR-Net's α and
        XNOR-Net++'s Γ are applied to the output and are *not* part of it.
        """
        return self.weight if self.weight_quantizer is None else self.weight_quantizer(self.weight)

    @torch.no_grad()
    def clip_weights_(self) -> Self:
        r"""Clamp the latent weight in place to :math:`[-c, c]`, ``c = weight_clip``; no-op if ``None``.

        Call it after ``optimizer.step()`` (or call the module-level :func:`clip_weights_` on the
        whole model). Returns ``self``.
        """
        if self.weight_clip is not None:
            self.weight.clamp_(-self.weight_clip, self.weight_clip)
        return self

    def _binary_extra_repr(self, base: str) -> str:
        parts = [base]
        if self.weight_clip is not None:
            parts.append(f"weight_clip={self.weight_clip}")
        if getattr(self, "pad_value", 0.0) != 0.0:
            parts.append(f"pad_value={self.pad_value}")
        return ", ".join(parts)

    def extra_repr(self) -> str:
        return self._binary_extra_repr(super().extra_repr())

    @staticmethod
    def _torch_args(layer: nn.Module) -> dict[str, Any]:
        raise NotImplementedError

    def _after_weight_copy(self) -> None:
        """Hook for layers whose other parameters are initialised from ``weight`` (ABC-Net)."""

    @classmethod
    def from_float(cls, layer: nn.Module, **kwargs: Any) -> Self:
        r"""Binary twin of a float ``layer``: same arguments, with *copies* of its weight and bias.

        Args:
            layer: a :class:`torch.nn.Linear` / ``Conv1d`` / ``Conv2d`` (matching this class).
                Its constructor arguments, device, dtype and train/eval mode are reused.
            **kwargs: the keyword-only extras of this class (``input_quantizer``,
                ``weight_quantizer``, ``weight_clip``, ``pad_value``, ...).

        Examples::

            >>> fc = nn.Linear(8, 4)
            >>> bfc = BinaryLinear.from_float(fc, weight_clip=1.0)
            >>> torch.equal(bfc.weight, fc.weight), bfc.weight is fc.weight
            (True, False)
        """
        if not isinstance(layer, cls._float_type):
            raise TypeError(f"layer must be a {cls._float_type.__module__}.{cls._float_type.__name__},"
                            f" got {type(layer).__name__}")
        args = cls._torch_args(layer)
        clash = sorted(set(kwargs) & (set(args) | {"device", "dtype"}))
        if clash:
            raise TypeError(f"from_float takes {', '.join(clash)} from layer; pass only the "
                            f"keyword-only extras of {cls.__name__}")
        new = cls(**args, device=layer.weight.device, dtype=layer.weight.dtype, **kwargs)
        with torch.no_grad():
            new.weight.copy_(cast(Tensor, layer.weight))
            if layer.bias is not None:
                cast(Tensor, new.bias).copy_(cast(Tensor, layer.bias))
        new._after_weight_copy()
        new.train(layer.training)
        return new


class _BinaryConvMixin(_BinaryMixin, _ConvBase):
    """pad_value handling for the convolutions."""

    pad_value: float
    _conv_fn: Any

    # The constructor of BinaryConv1d / BinaryConv2d: torch's Conv{1,2}d arguments (names, order,
    # defaults) plus the keyword-only binary extras.
    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", device: Any = None, dtype: Any = None, *,
                 input_quantizer: Any = "ste_sign", weight_quantizer: Any = "ste_sign",
                 weight_clip: float | None = None,
                 pad_value: float = 0.0) -> None:
        # (at run time the next class is nn.Conv1d/nn.Conv2d; mypy sees _ConvNd's signature)
        super().__init__(in_channels, out_channels, kernel_size, stride, padding,
                         dilation, groups, bias, padding_mode, device, dtype)  # type: ignore[arg-type]
        self._init_binary(input_quantizer, weight_quantizer, weight_clip)
        self._init_pad_value(pad_value)

    def _init_pad_value(self, pad_value: Any) -> None:
        # 0.0 = torch zero padding; +-1.0 = pad the binarised input with that value
        value = check_choice(check_real(pad_value, "pad_value") + 0.0, "pad_value", PAD_VALUES)
        if value != 0.0 and self.padding_mode != "zeros":
            raise ValueError(f"pad_value={pad_value!r} needs padding_mode='zeros', got "
                             f"padding_mode={self.padding_mode!r}")
        self.pad_value = value

    def _pad_binarized(self, x: Tensor) -> Tensor:
        """Pad ``x`` (last dims) with ``pad_value`` by the layer's padding; only when pad_value != 0."""
        return F.pad(x, self._reversed_padding_repeated_twice, mode="constant", value=self.pad_value)

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if self.pad_value == 0.0:
            return super()._conv_forward(input, weight, bias)
        return self._conv_fn(self._pad_binarized(input), weight, bias, self.stride, 0,
                             self.dilation, self.groups)

    def forward(self, input: Tensor) -> Tensor:
        return self._conv_forward(self._quantize_input(input), self.binary_weight(), self.bias)

    @staticmethod
    def _torch_args(layer: nn.Module) -> dict[str, Any]:
        return dict(in_channels=layer.in_channels, out_channels=layer.out_channels,
                    kernel_size=layer.kernel_size, stride=layer.stride, padding=layer.padding,
                    dilation=layer.dilation, groups=layer.groups, bias=layer.bias is not None,
                    padding_mode=layer.padding_mode)


# --------------------------------------------------------------------------- BinaryNet
class BinaryLinear(_BinaryMixin, nn.Linear):
    r"""Fully connected layer on binarised inputs and binarised weights (BinaryNet).

    .. math::
        y = x_b W_b^\top + b, \qquad x_b = q_x(x),\; W_b = q_w(W)

    With the default ``"ste_sign"`` quantizers, :math:`q(t) = \operatorname{sign}(t)` with
    sign(0) = +1, and the backward pass uses the straight-through estimator
    :math:`\partial q / \partial t := \mathbb{1}\{|t| \le 1\}`, so
    :math:`\partial L / \partial W = (\partial L / \partial W_b) \odot \mathbb{1}\{|W| \le 1\}`.
    The latent weight :math:`W` stays real; the optimiser updates it. With both quantizers
    ``None`` this layer computes exactly :class:`torch.nn.Linear`.

    Same interface as :class:`torch.nn.Linear` (names, order, defaults), plus keyword-only:

    Args:
        input_quantizer: binarises the input; a name from ``bnnlab.quantizers.BY_NAME``, a
            quantizer class or instance, or ``None`` (full precision). Default: ``"ste_sign"``.
        weight_quantizer: binarises ``self.weight``; same choices. Default: ``"ste_sign"``.
        weight_clip: if a number :math:`c > 0`, :meth:`clip_weights_` clamps the latent weight to
            :math:`[-c, c]` (larq's ``weight_clip``). It is not applied by ``forward``: call
            :func:`bnnlab.layers.clip_weights_` on the model after each optimiser step.
            Default: ``None``.

    Shape:
        - Input: :math:`(*, H_{in})`, :math:`H_{in}` = ``in_features``.
        - Output: :math:`(*, H_{out})`, :math:`H_{out}` = ``out_features``.

    Examples::

        >>> fc = BinaryLinear(20, 30, weight_clip=1.0)
        >>> fc(torch.randn(128, 20)).shape
        torch.Size([128, 30])
        >>> fc
        BinaryLinear(
          in_features=20, out_features=30, bias=True, weight_clip=1.0
          (input_quantizer): SteSign(clip_value=1.0)
          (weight_quantizer): SteSign(clip_value=1.0)
        )

    References:
        Courbariaux, Hubara, Soudry, El-Yaniv, Bengio, *Binarized Neural Networks: Training Deep
        Neural Networks with Weights and Activations Constrained to +1 or -1*, 2016,
        arXiv:1602.02830. larq ``QuantDense``.
    """

    _float_type = nn.Linear

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device: Any = None,
                 dtype: Any = None, *, input_quantizer: Any = "ste_sign", weight_quantizer: Any = "ste_sign",
                 weight_clip: float | None = None) -> None:
        super().__init__(in_features, out_features, bias, device, dtype)
        self._init_binary(input_quantizer, weight_quantizer, weight_clip)

    def forward(self, input: Tensor) -> Tensor:
        return F.linear(self._quantize_input(input), self.binary_weight(), self.bias)

    @staticmethod
    def _torch_args(layer: nn.Module) -> dict[str, Any]:
        return dict(in_features=layer.in_features, out_features=layer.out_features,
                    bias=layer.bias is not None)


class BinaryConv1d(_BinaryConvMixin, nn.Conv1d):
    r"""1-D convolution of binarised inputs with binarised weights (BinaryNet).

    .. math::
        y = W_b \star \operatorname{pad}(x_b) + b, \qquad x_b = q_x(x),\; W_b = q_w(W)

    Everything as :class:`BinaryConv2d` with one spatial dimension.

    Same interface as :class:`torch.nn.Conv1d`, plus keyword-only ``input_quantizer``,
    ``weight_quantizer``, ``weight_clip`` and ``pad_value`` (see :class:`BinaryConv2d`).

    Shape:
        - Input: :math:`(N, C_{in}, L_{in})` or :math:`(C_{in}, L_{in})`.
        - Output: :math:`(N, C_{out}, L_{out})` or :math:`(C_{out}, L_{out})`, as ``nn.Conv1d``.

    Examples::

        >>> conv = BinaryConv1d(4, 8, 3, padding=1, pad_value=1.0)
        >>> conv(torch.randn(2, 4, 16)).shape
        torch.Size([2, 8, 16])

    References:
        Courbariaux et al., 2016, arXiv:1602.02830. larq ``QuantConv1D`` (``pad_values``).
    """

    _float_type = nn.Conv1d
    _conv_fn = staticmethod(F.conv1d)


class BinaryConv2d(_BinaryConvMixin, nn.Conv2d):
    r"""2-D convolution of binarised inputs with binarised weights (BinaryNet).

    .. math::
        y = W_b \star \operatorname{pad}(x_b) + b, \qquad x_b = q_x(x),\; W_b = q_w(W)

    :math:`q_x` is ``input_quantizer``, :math:`q_w` is ``weight_quantizer``; with ``"ste_sign"``
    the forward is sign (sign(0) = +1) and the backward the straight-through estimator
    :math:`\mathbb{1}\{|t| \le 1\}`. The latent weight stays real. With both quantizers ``None``
    (and ``pad_value=0``) this layer computes exactly :class:`torch.nn.Conv2d`.

    **Padding.** Zero padding after binarisation puts 0 taps into a ±1 computation, which the
    packed XNOR-popcount kernels cannot represent. ``pad_value=0.0`` keeps torch's semantics
    (any ``padding_mode``); ``pad_value=±1.0`` pads the *binarised* input with that value
    (``F.pad`` then a convolution with ``padding=0``, works with ``padding="same"`` too), which is
    exactly what ``bnnlab.kernels.binary_conv2d`` computes. ``pad_value != 0`` needs
    ``padding_mode="zeros"``.

    Same interface as :class:`torch.nn.Conv2d` (names, order, defaults), plus keyword-only:

    Args:
        input_quantizer: binarises the input; a name from ``bnnlab.quantizers.BY_NAME``, a
            quantizer class or instance, or ``None`` (full precision). Default: ``"ste_sign"``.
        weight_quantizer: binarises ``self.weight``; same choices. Default: ``"ste_sign"``.
        weight_clip: clip constraint :math:`c > 0` applied by :meth:`clip_weights_` (call it after
            each optimiser step, e.g. via :func:`bnnlab.layers.clip_weights_`). Default: ``None``.
        pad_value: ``0.0``, ``1.0`` or ``-1.0``, see above. Default: ``0.0``.

    Shape:
        - Input: :math:`(N, C_{in}, H_{in}, W_{in})` or :math:`(C_{in}, H_{in}, W_{in})`.
        - Output: :math:`(N, C_{out}, H_{out}, W_{out})`, sizes as :class:`torch.nn.Conv2d`.

    Examples::

        >>> conv = BinaryConv2d(16, 32, 3, padding=1, bias=False, pad_value=1.0)
        >>> conv(torch.randn(8, 16, 10, 10)).shape
        torch.Size([8, 32, 10, 10])

    References:
        Courbariaux et al., 2016, arXiv:1602.02830. larq ``QuantConv2D`` (``pad_values``);
        larq-compute-engine's "one-padding".
    """

    _float_type = nn.Conv2d
    _conv_fn = staticmethod(F.conv2d)


# --------------------------------------------------------------------------- XNOR-Net
class XnorLinear(BinaryLinear):
    r"""XNOR-Net fully connected layer: binary product rescaled by α (weights) and β (inputs).

    .. math::
        y = (x_b W_b^\top) \odot \alpha \odot \beta + b, \qquad
        \alpha_o = \tfrac{1}{K} \textstyle\sum_k |W_{o,k}|, \qquad
        \beta = \tfrac{1}{K} \textstyle\sum_k |x_{k}| \text{ (per sample)}

    with :math:`K` = ``in_features``. α scales the binarised weight and is used only when
    ``weight_quantizer`` is not ``None``; β scales the binarised input and is used only when
    ``input_quantizer`` is not ``None`` and ``input_scaling=True``. So
    ``input_quantizer=None`` gives the paper's Binary-Weight-Network, and with both quantizers
    ``None`` the layer is :class:`torch.nn.Linear`. α and β are computed from :math:`W` and
    :math:`x` on every call and gradients flow through them (as in the paper's
    :math:`\partial C / \partial W = \partial C / \partial \tilde W \,(1/n + \alpha\, \partial
    \operatorname{sign}/\partial W)`); the signs use their quantizer's surrogate (STE by default).

    Same interface as :class:`BinaryLinear`, plus keyword-only:

    Args:
        input_scaling: apply β. ``False`` keeps only α. Default: ``True``.

    Shape:
        - Input: :math:`(*, H_{in})`. Output: :math:`(*, H_{out})`.

    Examples::

        >>> fc = XnorLinear(20, 30)
        >>> fc(torch.randn(4, 20)).shape, fc.weight_scale().shape
        (torch.Size([4, 30]), torch.Size([30]))

    References:
        Rastegari, Ordonez, Redmon, Farhadi, *XNOR-Net: ImageNet Classification Using Binary
        Convolutional Neural Networks*, ECCV 2016, arXiv:1603.05279.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device: Any = None,
                 dtype: Any = None, *, input_quantizer: Any = "ste_sign", weight_quantizer: Any = "ste_sign",
                 weight_clip: float | None = None, input_scaling: bool = True) -> None:
        super().__init__(in_features, out_features, bias, device, dtype,
                         input_quantizer=input_quantizer, weight_quantizer=weight_quantizer,
                         weight_clip=weight_clip)
        self.input_scaling = check_bool(input_scaling, "input_scaling")
        _refuse_double_scale(self, self.input_scaling)

    def weight_scale(self) -> Tensor:
        r"""α: :math:`\operatorname{mean}|W|` per output channel, shape ``(out_features,)``."""
        return BF.xnor_weight_scale(self.weight).reshape(-1)

    def input_scale(self, input: Tensor) -> Tensor:
        r"""β: :math:`\operatorname{mean}|x|` over the features of each sample, shape ``(*, 1)``."""
        return input.abs().mean(dim=-1, keepdim=True)

    def forward(self, input: Tensor) -> Tensor:
        y = F.linear(self._quantize_input(input), self.binary_weight())
        if self.weight_quantizer is not None:
            y = y * self.weight_scale()
        if self.input_quantizer is not None and self.input_scaling:
            y = y * self.input_scale(input)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s if self.input_scaling else s + ", input_scaling=False"


class XnorConv2d(BinaryConv2d):
    r"""XNOR-Net 2-D convolution: binary convolution rescaled by α (weights) and the K-map (inputs).

    .. math::
        y = (W_b \star \operatorname{pad}(x_b)) \odot \alpha \odot K + b, \qquad
        \alpha_o = \operatorname{mean}|W_o|, \qquad
        K = A \star k, \quad A = \tfrac{1}{C} \textstyle\sum_c |x_c|, \quad
        k = \tfrac{1}{k_h k_w} \mathbf{1}_{k_h \times k_w}

    α has shape :math:`(C_{out}, 1, 1)`. :math:`K` (the paper's K-map, shape
    :math:`(N, 1, H_{out}, W_{out})`) is the mean of :math:`|x|` over channels, convolved with a
    :math:`k_h \times k_w` averaging box with the layer's stride, dilation and padding (padded like
    the real input: zeros, or ``padding_mode``; ``pad_value`` only concerns :math:`x_b`). It is
    β for every receptive field. With ``groups > 1`` the channel mean runs over each group's
    input channels and scales that group's outputs (``groups=1`` is the paper).

    α is used only when ``weight_quantizer`` is not ``None``, :math:`K` only when
    ``input_quantizer`` is not ``None`` and ``input_scaling=True``: ``input_quantizer=None`` is the
    paper's Binary-Weight-Network and both ``None`` is :class:`torch.nn.Conv2d`. Gradients flow
    through α and :math:`K`; the signs use their quantizer's surrogate (STE by default).

    Same interface as :class:`BinaryConv2d`, plus keyword-only:

    Args:
        input_scaling: apply the K-map. ``False`` keeps only α. Default: ``True``.

    Shape:
        - Input: :math:`(N, C_{in}, H_{in}, W_{in})` or unbatched. Output as :class:`torch.nn.Conv2d`.

    Examples::

        >>> conv = XnorConv2d(3, 8, 3, padding=1)
        >>> x = torch.randn(2, 3, 6, 6)
        >>> conv(x).shape, conv.input_scale(x).shape
        (torch.Size([2, 8, 6, 6]), torch.Size([2, 1, 6, 6]))

    References:
        Rastegari et al., *XNOR-Net*, ECCV 2016, arXiv:1603.05279, Sec. 3.2 and Fig. 2.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", device: Any = None, dtype: Any = None, *,
                 input_quantizer: Any = "ste_sign", weight_quantizer: Any = "ste_sign",
                 weight_clip: float | None = None,
                 pad_value: float = 0.0, input_scaling: bool = True) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, device, dtype, input_quantizer=input_quantizer,
                         weight_quantizer=weight_quantizer, weight_clip=weight_clip,
                         pad_value=pad_value)
        self.input_scaling = check_bool(input_scaling, "input_scaling")
        _refuse_double_scale(self, self.input_scaling)

    def weight_scale(self) -> Tensor:
        r"""α: :math:`\operatorname{mean}|W|` per output channel, shape ``(C_out, 1, 1)``."""
        return BF.xnor_weight_scale(self.weight).reshape(-1, 1, 1)

    def input_scale(self, input: Tensor) -> Tensor:
        r"""The K-map of ``input`` (batched), shape ``(N, 1, H_out, W_out)`` (``(N, C_out, ...)`` if ``groups > 1``)."""
        n, c, h, w = input.shape
        g = self.groups
        a = input.abs().reshape(n, g, c // g, h, w).mean(dim=2)  # (N, G, H, W)
        if any(self._reversed_padding_repeated_twice):
            mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
            a = F.pad(a, self._reversed_padding_repeated_twice, mode=mode)
        kh, kw = self.kernel_size
        box = a.new_full((g, 1, kh, kw), 1.0 / (kh * kw))
        k = F.conv2d(a, box, None, self.stride, 0, self.dilation, g)  # (N, G, H_out, W_out)
        return k if g == 1 else k.repeat_interleave(self.out_channels // g, dim=1)

    def forward(self, input: Tensor) -> Tensor:
        if input.dim() == 3:
            return self.forward(input.unsqueeze(0)).squeeze(0)
        y = self._conv_forward(self._quantize_input(input), self.binary_weight(), None)
        if self.weight_quantizer is not None:
            y = y * self.weight_scale()
        if self.input_quantizer is not None and self.input_scaling:
            y = y * self.input_scale(input)
        return y if self.bias is None else y + self.bias.reshape(-1, 1, 1)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s if self.input_scaling else s + ", input_scaling=False"


# --------------------------------------------------------------------------- XNOR-Net++
class XnorPlusLinear(BinaryLinear):
    r"""XNOR-Net++ fully connected layer: binary product times a learned scale Γ.

    .. math::
        y = (x_b W_b^\top) \odot \Gamma + b

    Γ is a learnable parameter initialised to ones (so the layer starts as
    :class:`BinaryLinear`), trained by backpropagation like any weight; nothing is computed from
    the input. Modes: ``"scalar"`` (one Γ, shape ``(1,)``), ``"channel"`` (one per output
    feature, ``(out_features,)``); ``"factorised"`` is the same as ``"channel"`` for a dense
    layer (no spatial axes to factorise over). The parameter is ``self.gamma``.

    Same interface as :class:`BinaryLinear`, plus keyword-only:

    Args:
        gamma_mode: ``"scalar"``, ``"channel"`` or ``"factorised"``. Default: ``"channel"``.

    Examples::

        >>> fc = XnorPlusLinear(20, 30)
        >>> fc(torch.randn(4, 20)).shape, fc.gamma.shape
        (torch.Size([4, 30]), torch.Size([30]))

    References:
        Bulat, Tzimiropoulos, *XNOR-Net++: Improved Binary Neural Networks*, BMVC 2019,
        arXiv:1909.13863.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device: Any = None,
                 dtype: Any = None, *, input_quantizer: Any = "ste_sign", weight_quantizer: Any = "ste_sign",
                 weight_clip: float | None = None, gamma_mode: str = "channel") -> None:
        super().__init__(in_features, out_features, bias, device, dtype,
                         input_quantizer=input_quantizer, weight_quantizer=weight_quantizer,
                         weight_clip=weight_clip)
        self.gamma_mode = check_choice(gamma_mode, "gamma_mode", GAMMA_MODES)
        n = 1 if gamma_mode == "scalar" else out_features
        self.gamma = nn.Parameter(torch.ones(n, device=device, dtype=dtype))

    def output_scale(self) -> Tensor:
        """Γ, broadcastable to the output ``(*, out_features)``."""
        return self.gamma

    def forward(self, input: Tensor) -> Tensor:
        y = F.linear(self._quantize_input(input), self.binary_weight()) * self.gamma
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return super().extra_repr() + f", gamma_mode={self.gamma_mode!r}"


class XnorPlusConv2d(BinaryConv2d):
    r"""XNOR-Net++ 2-D convolution: binary convolution times a learned scale Γ.

    .. math::
        y = (W_b \star \operatorname{pad}(x_b)) \odot \Gamma + b

    Γ is learned by backpropagation and initialised to ones (the layer starts as
    :class:`BinaryConv2d`). ``gamma_mode``:

    * ``"scalar"``: one value, parameter ``gamma`` of shape ``(1, 1, 1)``;
    * ``"channel"``: one per output channel, ``gamma`` of shape ``(C_out, 1, 1)``;
    * ``"factorised"``: the paper's rank-1 :math:`\Gamma = a \otimes b \otimes c` over
      :math:`(C_{out}, H_{out}, W_{out})`, parameters ``gamma_c`` ``(C_out, 1, 1)``, ``gamma_h``
      ``(1, H_out, 1)`` and ``gamma_w`` ``(1, 1, W_out)``.

    The factorised Γ needs the output spatial size. Pass ``out_size=(H_out, W_out)``; if it is
    ``None``, ``gamma_h`` and ``gamma_w`` are created lazily (torch's
    :class:`~torch.nn.parameter.UninitializedParameter`) at the first ``forward`` or when a
    ``state_dict`` is loaded; **run one forward pass before building the optimiser** (or pass
    ``out_size``). Later inputs must give the same output size (``ValueError`` otherwise).

    Same interface as :class:`BinaryConv2d`, plus keyword-only:

    Args:
        gamma_mode: ``"scalar"``, ``"channel"`` or ``"factorised"``. Default: ``"channel"``.
        out_size: ``(H_out, W_out)`` (or one int for both), only for ``"factorised"``.
            Default: ``None`` (lazy).

    Examples::

        >>> conv = XnorPlusConv2d(3, 8, 3, padding=1, gamma_mode="factorised", out_size=6)
        >>> conv(torch.randn(2, 3, 6, 6)).shape, conv.output_scale().shape
        (torch.Size([2, 8, 6, 6]), torch.Size([8, 6, 6]))

    References:
        Bulat, Tzimiropoulos, *XNOR-Net++: Improved Binary Neural Networks*, BMVC 2019,
        arXiv:1909.13863, Sec. 3 (Γ and its factorisations).
    """

    gamma_h: nn.Parameter | UninitializedParameter
    gamma_w: nn.Parameter | UninitializedParameter

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", device: Any = None, dtype: Any = None, *,
                 input_quantizer: Any = "ste_sign", weight_quantizer: Any = "ste_sign",
                 weight_clip: float | None = None,
                 pad_value: float = 0.0, gamma_mode: str = "channel",
                 out_size: int | tuple[int, int] | None = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, device, dtype, input_quantizer=input_quantizer,
                         weight_quantizer=weight_quantizer, weight_clip=weight_clip,
                         pad_value=pad_value)
        self.gamma_mode = check_choice(gamma_mode, "gamma_mode", GAMMA_MODES)
        fk = {"device": device, "dtype": dtype}
        if gamma_mode != "factorised":
            if out_size is not None:
                raise ValueError("out_size is only used with gamma_mode='factorised', got "
                                 f"out_size={out_size!r} with gamma_mode={gamma_mode!r}")
            self.out_size = None
            n = 1 if gamma_mode == "scalar" else out_channels
            self.gamma = nn.Parameter(torch.ones(n, 1, 1, **fk))
            return
        self.gamma_c = nn.Parameter(torch.ones(out_channels, 1, 1, **fk))
        if out_size is None:
            self.out_size = None
            self.gamma_h = UninitializedParameter(**fk)
            self.gamma_w = UninitializedParameter(**fk)
            self.register_load_state_dict_pre_hook(XnorPlusConv2d._materialize_from_state_dict)
        else:
            size = (out_size, out_size) if isinstance(out_size, int) else tuple(out_size)
            if len(size) != 2:
                raise ValueError(f"out_size must be a positive int or (H_out, W_out), got "
                                 f"{out_size!r}")
            self.out_size = (check_int(size[0], "out_size", min_value=1),
                             check_int(size[1], "out_size", min_value=1))
            self.gamma_h = nn.Parameter(torch.ones(1, self.out_size[0], 1, **fk))
            self.gamma_w = nn.Parameter(torch.ones(1, 1, self.out_size[1], **fk))


    def _materialize(self, h: int, w: int) -> None:
        with torch.no_grad():
            cast(UninitializedParameter, self.gamma_h).materialize((1, h, 1))
            cast(UninitializedParameter, self.gamma_w).materialize((1, 1, w))
            self.gamma_h.fill_(1.0)
            self.gamma_w.fill_(1.0)
        self.out_size = (h, w)

    @staticmethod
    def _materialize_from_state_dict(module: Any, state_dict: Any, prefix: str, *args: Any) -> None:
        if not is_lazy(module.gamma_h):
            return
        h, w = state_dict.get(prefix + "gamma_h"), state_dict.get(prefix + "gamma_w")
        if h is not None and w is not None and not is_lazy(h) and not is_lazy(w):
            module._materialize(h.shape[1], w.shape[2])

    def _save_to_state_dict(self, destination: Any, prefix: str, keep_vars: bool) -> None:
        # as torch's LazyModuleMixin: an uninitialised Γ is saved as is (detach() would raise)
        super()._save_to_state_dict(destination, prefix, True)
        if not keep_vars:
            for name in (*self._parameters, *self._buffers):
                t = destination.get(prefix + name)
                if t is not None and not is_lazy(t):
                    destination[prefix + name] = t.detach()

    def output_scale(self) -> Tensor:
        """Γ, broadcastable to the output: ``(1|C_out, 1, 1)`` or ``(C_out, H_out, W_out)``."""
        if self.gamma_mode != "factorised":
            return self.gamma
        if is_lazy(self.gamma_h):
            raise RuntimeError("the factorised Γ is created at the first forward pass "
                               "(or pass out_size to the constructor)")
        return self.gamma_c * self.gamma_h * self.gamma_w

    def forward(self, input: Tensor) -> Tensor:
        y = self._conv_forward(self._quantize_input(input), self.binary_weight(), None)
        if self.gamma_mode == "factorised":
            h, w = y.shape[-2:]
            if is_lazy(self.gamma_h):
                self._materialize(h, w)
            elif (h, w) != self.out_size:
                raise ValueError(f"this input gives output size {(h, w)}, but the factorised Γ "
                                 f"was built for out_size={self.out_size}")
        y = y * self.output_scale()
        return y if self.bias is None else y + self.bias.reshape(-1, 1, 1)

    def extra_repr(self) -> str:
        s = super().extra_repr() + f", gamma_mode={self.gamma_mode!r}"
        return s + (f", out_size={self.out_size}" if self.gamma_mode == "factorised" else "")


# --------------------------------------------------------------------------- ABC-Net
_SCALE_INITS = ("lstsq", "mean")

#: Formulations of ABC-Net (:class:`AbcLinear`, :class:`AbcConv2d`): the paper's, and bnnlab's
#: earlier per-channel variant.
ABC_FORMULATIONS = ("paper", "per_channel")


class _AbcMixin(_ModuleBase):
    r"""Shared-latent weight bases and shifted activation bases (ABC-Net)."""

    weight: Tensor
    weight_shifts: Tensor
    weight_quantizer: nn.Module | None
    input_quantizer: nn.Module | None

    def _init_abc(self, num_weight_bases: Any, num_act_bases: Any, scale_init: Any,
                  formulation: Any, device: Any, dtype: Any) -> None:
        m = check_int(num_weight_bases, "num_weight_bases", min_value=1)
        n = check_int(num_act_bases, "num_act_bases", min_value=1)
        self.scale_init = check_choice(scale_init, "scale_init", _SCALE_INITS)
        self.formulation = check_choice(formulation, "formulation", ABC_FORMULATIONS)
        self.num_weight_bases, self.num_act_bases = m, n
        dev = self.weight.device if device is None else device
        dt = self.weight.dtype if dtype is None else dtype
        self.register_buffer("weight_shifts", _spread(m).to(device=dev, dtype=dt))
        alpha_shape = (m,) if self.formulation == "paper" else (m, self.weight.shape[0])
        self.weight_scales = nn.Parameter(torch.empty(alpha_shape, device=dev, dtype=dt))
        self.act_shifts = nn.Parameter(torch.empty(n, device=dev, dtype=dt))
        self.act_scales = nn.Parameter(torch.empty(n, device=dev, dtype=dt))
        self._reset_abc()

    def _initial_act_shifts(self) -> Tensor:
        u = _spread(self.num_act_bases)
        # paper: H_v switches at x = 0.5 - v; put these thresholds at u (0 for N = 1)
        return 0.5 - u.flip(0) if self.formulation == "paper" else u

    def _reset_abc(self) -> None:
        with torch.no_grad():
            self.act_shifts.copy_(self._initial_act_shifts())
            self.act_scales.fill_(1.0 / self.num_act_bases)
        self.reset_scales()

    def reset_parameters(self) -> None:
        super().reset_parameters()  # type: ignore[misc]
        if "act_scales" in self._parameters:  # not during torch's own __init__
            self._reset_abc()

    def _after_weight_copy(self) -> None:
        self.reset_scales()

    @torch.no_grad()
    def reset_scales(self) -> None:
        r"""Re-initialise α from the current latent weight (called by :meth:`from_float`).

        ``scale_init="lstsq"``: the least-squares :math:`\min_\alpha \|W - \sum_m \alpha_m B_m\|^2`
        (the paper's linear regression), over the whole tensor (``"paper"``) or per output
        channel (``"per_channel"``); ``"mean"``: :math:`\alpha_m = \operatorname{mean}|W| / M`
        (over the tensor, or per output channel).
        """
        w = self.weight.detach()
        rows = 1 if self.formulation == "paper" else w.shape[0]
        if self.scale_init == "mean":
            mean = w.abs().reshape(rows, -1).mean(1) / self.num_weight_bases  # (rows,)
            self.weight_scales.copy_(mean.reshape(self.weight_scales.shape[1:])
                                     .expand_as(self.weight_scales))
            return
        b = self.weight_bases().detach().reshape(self.num_weight_bases, rows, -1)  # (M, R, K)
        a = b.permute(1, 2, 0).double()  # (R, K, M)
        y = w.reshape(rows, -1, 1).double()  # (R, K, 1)
        sol = torch.linalg.pinv(a) @ y  # (R, M, 1), minimum-norm least squares
        self.weight_scales.copy_(sol[..., 0].T.reshape(self.weight_scales.shape))

    def shifted_weights(self) -> Tensor:
        r""":math:`W - \operatorname{mean}(W) + u_m \operatorname{std}(W)`, shape ``(M, *weight.shape)``.

        Mean and (population, ``correction=0``) standard deviation are taken over the whole
        tensor (``"paper"``) or over each output channel's weights (``"per_channel"``), and
        treated as constants in the backward pass.
        """
        w = self.weight
        dims = tuple(range(w.dim())) if self.formulation == "paper" else tuple(range(1, w.dim()))
        mean = w.mean(dim=dims, keepdim=True).detach()
        std = w.std(dim=dims, keepdim=True, correction=0).detach()
        u = self.weight_shifts.reshape(-1, *([1] * w.dim()))
        return (w - mean).unsqueeze(0) + u * std.unsqueeze(0)

    def weight_bases(self) -> Tensor:
        r"""The binary weight bases :math:`B_m = q_w(W - \bar W + u_m \sigma_W)`, shape ``(M, *weight.shape)``."""
        shifted = self.shifted_weights()
        if self.weight_quantizer is None:
            return shifted
        return torch.stack([self.weight_quantizer(s) for s in shifted.unbind(0)])

    def binary_weight(self) -> Tensor:
        """Same as :meth:`weight_bases`: the M binary bases, shape ``(M, *weight.shape)``."""
        return self.weight_bases()

    def weight_scale(self) -> Tensor:
        r"""α broadcastable to :meth:`weight_bases`: ``(M, 1, ...)`` or ``(M, C_out, 1, ...)``."""
        a = self.weight_scales
        return a.reshape(*a.shape, *([1] * (self.weight.dim() + 1 - a.dim())))

    def effective_weight(self) -> Tensor:
        r""":math:`\sum_m \alpha_m \odot B_m`, shape ``weight.shape``: the weight the layer applies."""
        return (self.weight_scale() * self.weight_bases()).sum(0)

    def input_bases(self, input: Tensor) -> Tensor:
        r"""The activation bases, shape ``(N, *input.shape)``.

        ``"paper"``: :math:`A_n = q_x(\operatorname{clip}(x + v_n, 0, 1) - 0.5)`, with the
        default ``"ste_sign"`` the paper's :math:`H_{v_n}(x)`
        (:func:`bnnlab.functional.abc_activation_sign`); ``"per_channel"``:
        :math:`A_n = q_x(x + v_n)`. With ``input_quantizer=None`` the bases stay real.
        """
        if self.formulation == "paper":
            bases = [BF.abc_activation(input, v) for v in self.act_shifts.unbind(0)]
        else:
            bases = [input + v for v in self.act_shifts.unbind(0)]
        if self.input_quantizer is not None:
            bases = [self.input_quantizer(a) for a in bases]
        return torch.stack(bases)

    def _combine_inputs(self, bases: Tensor) -> Tensor:
        beta = self.act_scales.reshape(-1, *([1] * (bases.dim() - 1)))
        return (beta * bases).sum(0)

    def _abc_repr(self) -> str:
        s = f", num_weight_bases={self.num_weight_bases}, num_act_bases={self.num_act_bases}"
        s += f", formulation={self.formulation!r}" if self.formulation != "paper" else ""
        return s + (f", scale_init={self.scale_init!r}" if self.scale_init != "lstsq" else "")


_ABC_DOC = r"""

    .. math::
        y = \sum_{n=1}^{N} \beta_n \sum_{m=1}^{M} \alpha_m (B_m \star A_n) + b

    **Weight bases** come from the one latent weight :math:`W` (no extra latent copies):
    :math:`B_m = q_w(W - \bar W + u_m \sigma_W)` with fixed shifts
    :math:`u_m = -1 + 2(m-1)/(M-1)` evenly spread over :math:`[-1, 1]` (:math:`u = 0` for
    :math:`M = 1`; buffer ``weight_shifts``). :math:`\alpha_m` (parameter ``weight_scales``) is
    learned, initialised by least squares :math:`W \approx \sum_m \alpha_m B_m`
    (``scale_init="lstsq"``, the paper's linear regression) or :math:`\operatorname{mean}|W|/M`
    (``"mean"``). Call :meth:`reset_scales` after changing the weight by hand (:meth:`from_float`
    does).

    **Activation bases** with learned shifts :math:`v_n` (parameter ``act_shifts``) and learned
    scales :math:`\beta_n` (``act_scales``, initialised to :math:`1/N`).

    ``formulation="paper"`` (default) is Lin et al. (2017): :math:`\bar W, \sigma_W` are the
    mean and population standard deviation of the *whole* weight tensor, one scalar
    :math:`\alpha_m` per base (``weight_scales`` of shape ``(M,)``), and
    :math:`A_n = H_{v_n}(x) = \operatorname{sign}(\operatorname{clip}(x + v_n, 0, 1) - 0.5)`
    (+1 iff :math:`x + v_n \ge 0.5`) whose gradient passes for :math:`0 \le x + v_n \le 1`
    (:func:`bnnlab.functional.abc_activation_sign`; ``input_quantizer`` binarises
    :math:`\operatorname{clip}(x + v_n, 0, 1) - 0.5`). The shifts start at
    :math:`v_n = 0.5 - u_n`, so the thresholds :math:`0.5 - v_n` are spread over :math:`[-1, 1]`
    (:math:`v = 0.5`, the threshold at 0, for :math:`N = 1`).

    ``formulation="per_channel"`` is bnnlab's earlier variant: mean and standard deviation per
    output channel, :math:`\alpha_{m,o}` per base and output channel (``(M, C_out)``), and
    :math:`A_n = q_x(x + v_n)` with :math:`v_n` starting evenly over :math:`[-1, 1]`. It fits
    each channel's weights more closely, at M·C_out scales instead of M.

    Gradients: the signs use their quantizer's surrogate (STE by default), so
    :math:`\partial L/\partial W = \sum_m \alpha_m\, \partial L/\partial B_m \odot
    \mathbb{1}\{|W - \bar W + u_m \sigma_W| \le 1\}`; α, v and β get ordinary gradients.
    The forward uses bilinearity: one product of :math:`\sum_n \beta_n A_n` with
    :math:`\sum_m \alpha_m B_m` (:meth:`effective_weight`), equal to the double sum.
    :meth:`binary_weight` returns the stacked bases ``(M, *weight.shape)``.
"""


class AbcLinear(_AbcMixin, BinaryLinear):
    __doc__ = r"""ABC-Net fully connected layer: M weight bases and N activation bases.""" + _ABC_DOC + r"""
    Same interface as :class:`BinaryLinear`, plus keyword-only:

    Args:
        num_weight_bases: :math:`M \ge 1`. Default: ``3``.
        num_act_bases: :math:`N \ge 1`. Default: ``3``.
        scale_init: ``"lstsq"`` or ``"mean"``. Default: ``"lstsq"``.
        formulation: ``"paper"`` or ``"per_channel"`` (above). Default: ``"paper"``.

    Examples::

        >>> fc = AbcLinear(20, 30, num_weight_bases=3, num_act_bases=2)
        >>> fc(torch.randn(4, 20)).shape, fc.binary_weight().shape
        (torch.Size([4, 30]), torch.Size([3, 30, 20]))

    References:
        Lin, Zhao, Pan, *Towards Accurate Binary Convolutional Neural Network*, NeurIPS 2017,
        arXiv:1711.11294.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device: Any = None,
                 dtype: Any = None, *, input_quantizer: Any = "ste_sign", weight_quantizer: Any = "ste_sign",
                 weight_clip: float | None = None, num_weight_bases: int = 3,
                 num_act_bases: int = 3, scale_init: str = "lstsq",
                 formulation: str = "paper") -> None:
        super().__init__(in_features, out_features, bias, device, dtype,
                         input_quantizer=input_quantizer, weight_quantizer=weight_quantizer,
                         weight_clip=weight_clip)
        self._init_abc(num_weight_bases, num_act_bases, scale_init, formulation, device,
                       dtype)

    def forward(self, input: Tensor) -> Tensor:
        return F.linear(self._combine_inputs(self.input_bases(input)), self.effective_weight(),
                        self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + self._abc_repr()


class AbcConv2d(_AbcMixin, BinaryConv2d):
    __doc__ = r"""ABC-Net 2-D convolution: M weight bases and N activation bases.""" + _ABC_DOC + r"""
    With ``pad_value=±1`` every :math:`A_n` is padded with that value before the convolution.

    Same interface as :class:`BinaryConv2d`, plus keyword-only:

    Args:
        num_weight_bases: :math:`M \ge 1`. Default: ``3``.
        num_act_bases: :math:`N \ge 1`. Default: ``3``.
        scale_init: ``"lstsq"`` or ``"mean"``. Default: ``"lstsq"``.
        formulation: ``"paper"`` or ``"per_channel"`` (above). Default: ``"paper"``.

    Examples::

        >>> conv = AbcConv2d(3, 8, 3, padding=1, num_weight_bases=3, num_act_bases=1)
        >>> conv(torch.randn(2, 3, 6, 6)).shape
        torch.Size([2, 8, 6, 6])

    References:
        Lin, Zhao, Pan, *Towards Accurate Binary Convolutional Neural Network*, NeurIPS 2017,
        arXiv:1711.11294.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", device: Any = None, dtype: Any = None, *,
                 input_quantizer: Any = "ste_sign", weight_quantizer: Any = "ste_sign",
                 weight_clip: float | None = None,
                 pad_value: float = 0.0, num_weight_bases: int = 3, num_act_bases: int = 3,
                 scale_init: str = "lstsq", formulation: str = "paper") -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, device, dtype, input_quantizer=input_quantizer,
                         weight_quantizer=weight_quantizer, weight_clip=weight_clip,
                         pad_value=pad_value)
        self._init_abc(num_weight_bases, num_act_bases, scale_init, formulation, device,
                       dtype)

    def forward(self, input: Tensor) -> Tensor:
        bases = self.input_bases(input)  # (N, *input.shape)
        if self.pad_value == 0.0:
            return nn.Conv2d._conv_forward(self, self._combine_inputs(bases),
                                           self.effective_weight(), self.bias)
        x = self._combine_inputs(self._pad_binarized(bases))  # pad each A_n with pad_value
        return F.conv2d(x, self.effective_weight(), self.bias, self.stride, 0, self.dilation,
                        self.groups)

    def extra_repr(self) -> str:
        return super().extra_repr() + self._abc_repr()


# --------------------------------------------------------------------------- model-level helper
def clip_weights_(model: nn.Module) -> int:
    r"""Apply the ``weight_clip`` constraint of every bnnlab layer in ``model`` (in place).

    Call after each ``optimizer.step()``; layers with ``weight_clip=None`` are left alone.

    Args:
        model: any module (a single layer works too).

    Returns:
        The number of layers whose weight was clipped.

    Examples::

        >>> model = nn.Sequential(BinaryLinear(4, 4, weight_clip=1.0), nn.Linear(4, 2))
        >>> clip_weights_(model)
        1
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    count = 0
    for module in model.modules():
        if isinstance(module, _BinaryMixin) and module.weight_clip is not None:
            module.clip_weights_()
            count += 1
    return count
