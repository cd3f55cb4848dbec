r"""Quantizer modules: hyperparameters (and learnable thresholds/scales) around :mod:`bnnlab.functional`.

A quantizer maps a latent real tensor to its binarised value in the forward pass and defines the
pseudo-gradient of the backward pass. Layers take them as ``input_quantizer=`` /
``weight_quantizer=``, either as a module or by larq's snake_case name (see :data:`BY_NAME` and
:func:`get_quantizer`)::

    >>> from bnnlab.quantizers import get_quantizer
    >>> get_quantizer("ste_sign")
    SteSign(clip_value=1.0)

Every quantizer's docstring states the forward formula, the surrogate gradient, the tie rule at 0
and the paper. The formulas are those of :mod:`bnnlab.functional` (larq's, exactly).
"""
from __future__ import annotations

import inspect
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from bnnlab import functional as BF
from bnnlab._validation import check_bool, check_choice, check_int, check_real

__all__ = [
    "Quantizer",
    "SteSign",
    "ApproxSign",
    "SwishSign",
    "SteHeaviside",
    "MagnitudeAwareSign",
    "StochasticSign",
    "RSign",
    "ScaledSign",
    "BY_NAME",
    "get_quantizer",
]


class Quantizer(nn.Module):
    """Base class of bnnlab's quantizers.

    Subclasses set the class attribute ``precision`` (bits per output element; ``1`` for every
    binariser here), which :mod:`bnnlab.summary` reads to count bits.
    """

    precision: ClassVar[int | None] = None


class _ClipValueQuantizer(Quantizer):
    """A 1-bit quantizer whose only hyperparameter is the STE's ``clip_value`` (checked, stored,
    shown in the repr); subclasses define ``forward``."""

    precision = 1

    def __init__(self, clip_value: float | None = 1.0) -> None:
        super().__init__()
        self.clip_value = check_real(clip_value, "clip_value", min_value=0.0, allow_none=True)

    def extra_repr(self) -> str:
        return f"clip_value={self.clip_value}"


class SteSign(_ClipValueQuantizer):
    r"""Binarise to :math:`\{-1, +1\}` with a clipped straight-through gradient.

    .. math::
        q(x) = \begin{cases} +1 & x \ge 0 \\ -1 & x < 0 \end{cases}
        \qquad
        \frac{\partial q}{\partial x} := \begin{cases} 1 & \lvert x \rvert \le c \\
                                                        0 & \lvert x \rvert > c \end{cases}

    Tie rule: :math:`q(0) = +1`; the forward pass never returns 0, so outputs can be bit-packed.

    Args:
        clip_value: :math:`c \ge 0`. ``None`` disables clipping (identity gradient). Default: ``1.0``.

    Shape:
        - Input: :math:`(*)`. Output: :math:`(*)`, same shape, values in :math:`\{-1, +1\}`.

    Examples::

        >>> SteSign()(torch.tensor([-0.3, 0.0, 2.0]))
        tensor([-1.,  1.,  1.])

    References:
        Courbariaux et al., *Binarized Neural Networks*, 2016, arXiv:1602.02830.
    """

    def forward(self, x: Tensor) -> Tensor:
        return BF.ste_sign(x, self.clip_value)


class ApproxSign(Quantizer):
    r"""Binarise to :math:`\{-1, +1\}` with Bi-Real Net's ApproxSign gradient.

    .. math::
        q(x) = \operatorname{sign}(x), \qquad
        \frac{\partial q}{\partial x} := (2 - 2\lvert x \rvert)\,\mathbb{1}\{\lvert x \rvert \le 1\}

    (the derivative of the piecewise-quadratic fit :math:`F(x) = 2x - x\lvert x \rvert` on
    :math:`[-1, 1]`, :math:`\pm 1` outside). Tie rule: :math:`q(0) = +1`.

    Shape:
        - Input: :math:`(*)`. Output: :math:`(*)`, values in :math:`\{-1, +1\}`.

    Examples::

        >>> ApproxSign()(torch.tensor([-0.3, 0.0, 2.0]))
        tensor([-1.,  1.,  1.])

    References:
        Liu et al., *Bi-Real Net*, ECCV 2018, arXiv:1808.00278.
    """

    precision = 1

    def forward(self, x: Tensor) -> Tensor:
        return BF.approx_sign(x)

    def extra_repr(self) -> str:
        return "grad=(2-2|x|)*1{|x|<=1}"


class SwishSign(Quantizer):
    r"""Binarise to :math:`\{-1, +1\}` with BNN+'s SignSwish gradient.

    .. math::
        q(x) = \operatorname{sign}(x), \qquad
        \frac{\partial q}{\partial x} :=
        \frac{\beta\,(2 - \beta x \tanh(\beta x / 2))}{1 + \cosh(\beta x)}

    Tie rule: :math:`q(0) = +1`.

    Args:
        beta: sharpness :math:`\beta > 0`. Default: ``5.0`` (larq's).

    Shape:
        - Input: :math:`(*)`. Output: :math:`(*)`, values in :math:`\{-1, +1\}`.

    References:
        Darabi et al., *BNN+: Improved Binary Network Training*, 2018, arXiv:1812.11800.
    """

    precision = 1

    def __init__(self, beta: float = 5.0) -> None:
        super().__init__()
        self.beta = check_real(beta, "beta", min_value=0.0, include_min=False)

    def forward(self, x: Tensor) -> Tensor:
        return BF.swish_sign(x, self.beta)

    def extra_repr(self) -> str:
        return f"beta={self.beta}"


class SteHeaviside(_ClipValueQuantizer):
    r"""Binarise to :math:`\{0, 1\}` with a clipped straight-through gradient.

    .. math::
        q(x) = \begin{cases} 1 & x > 0 \\ 0 & x \le 0 \end{cases}, \qquad
        \frac{\partial q}{\partial x} := \mathbb{1}\{\lvert x \rvert \le c\}

    Tie rule (larq's): :math:`q(0) = 0`. Outputs are 0/1, not :math:`\pm 1`: the packed
    (XNOR) kernels do not apply.

    Args:
        clip_value: :math:`c \ge 0`; ``None`` disables clipping. Default: ``1.0``.

    Shape:
        - Input: :math:`(*)`. Output: :math:`(*)`, values in :math:`\{0, 1\}`.

    References:
        larq ``SteHeaviside``; STE as in Courbariaux et al., 2016, arXiv:1602.02830.
    """

    def forward(self, x: Tensor) -> Tensor:
        return BF.ste_heaviside(x, self.clip_value)


class MagnitudeAwareSign(_ClipValueQuantizer):
    r"""Bi-Real Net's magnitude-aware sign for weights: :math:`\alpha_o \operatorname{sign}(W_o)`.

    .. math::
        q(W)_o = \operatorname{sg}(\alpha_o)\operatorname{sign}(W_o),\quad
        \alpha_o = \operatorname{mean}\lvert W_o \rvert, \qquad
        \frac{\partial q_o}{\partial W_o} := \alpha_o\,\mathbb{1}\{\lvert W_o \rvert \le c\}

    :math:`\alpha_o` is per output channel (mean over every dim but dim 0, torch layout) and
    carries no gradient. Tie rule: :math:`\operatorname{sign}(0) = +1`. Outputs are
    :math:`\{-\alpha_o, +\alpha_o\}`.

    With ``scale_gradient=False`` the surrogate drops the factor :math:`\alpha_o`,
    :math:`\mathbb{1}\{\lvert W_o \rvert \le c\}`, as the official Bi-Real Net / ReActNet
    code computes it (same forward).

    Args:
        clip_value: :math:`c \ge 0` of the STE; ``None`` disables clipping. Default: ``1.0``.
        scale_gradient: multiply the surrogate by :math:`\alpha_o` (larq). Default: ``True``.

    Shape:
        - Input: :math:`(C_{out}, *)`. Output: same shape.

    References:
        Liu et al., *Bi-Real Net*, ECCV 2018, arXiv:1808.00278.
    """

    def __init__(self, clip_value: float | None = 1.0, *, scale_gradient: bool = True) -> None:
        super().__init__(clip_value)
        self.scale_gradient = check_bool(scale_gradient, "scale_gradient")

    def forward(self, x: Tensor) -> Tensor:
        return BF.magnitude_aware_sign(x, self.clip_value, scale_gradient=self.scale_gradient)

    def extra_repr(self) -> str:
        return super().extra_repr() + ("" if self.scale_gradient else ", scale_gradient=False")


class StochasticSign(Quantizer):
    r"""Stochastic binarisation: :math:`q(x) = \operatorname{sign}(x + s\,\varepsilon)`.

    .. math::
        q(x) = \operatorname{sign}(x + s\,\varepsilon), \qquad
        \frac{\partial q}{\partial x} := \mathbb{1}\{\lvert x \rvert \le c\}

    A fresh :math:`\varepsilon` is drawn per element and per call while training (uniform on
    :math:`[-1, 1)`, standard normal or standard Laplace), so
    :math:`P(q = +1) = 1 - F_\varepsilon(-x/s)`; uniform noise with :math:`s = 1` is BNN's
    hard-sigmoid stochastic binarisation. In eval mode the output is the deterministic
    :math:`\operatorname{sign}(x)`, unless ``stochastic_eval=True``. Tie rule:
    :math:`\operatorname{sign}(0) = +1`.

    Args:
        noise: ``"uniform"``, ``"normal"`` or ``"laplace"``. Default: ``"uniform"``.
        scale: noise scale :math:`s \ge 0`. Default: ``1.0``.
        clip_value: :math:`c \ge 0` of the STE; ``None`` disables clipping. Default: ``1.0``.
        stochastic_eval: keep drawing noise in eval mode. Default: ``False``.
        generator: optional :class:`torch.Generator` for reproducible draws (not saved in the
            state dict; a module holding one cannot be deep-copied).

    Shape:
        - Input: :math:`(*)`. Output: :math:`(*)`, values in :math:`\{-1, +1\}`.

    References:
        Courbariaux et al., *BinaryConnect*, NeurIPS 2015, arXiv:1511.00363; *Binarized Neural
        Networks*, 2016, arXiv:1602.02830.
    """

    precision = 1

    def __init__(self, noise: str = "uniform", scale: float = 1.0, clip_value: float | None = 1.0,
                 stochastic_eval: bool = False, *,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.noise = check_choice(noise, "noise", BF.NOISES)
        self.scale = check_real(scale, "scale", min_value=0.0)
        self.clip_value = check_real(clip_value, "clip_value", min_value=0.0, allow_none=True)
        self.stochastic_eval = check_bool(stochastic_eval, "stochastic_eval")
        self.generator = generator

    def forward(self, x: Tensor) -> Tensor:
        return BF.stochastic_sign(x, self.noise, self.scale, self.training or self.stochastic_eval,
                                  self.clip_value, self.generator)

    def extra_repr(self) -> str:
        return (f"noise={self.noise!r}, scale={self.scale}, clip_value={self.clip_value}, "
                f"stochastic_eval={self.stochastic_eval}")


class RSign(Quantizer):
    r"""ReActNet's RSign: sign with a learnable per-channel threshold :math:`\tau_c`.

    .. math::
        q(x)_c = \operatorname{sign}(x_c - \tau_c), \qquad
        \frac{\partial q_c}{\partial x_c} := \mathbb{1}\{\lvert x_c - \tau_c \rvert \le c\},
        \qquad \frac{\partial L}{\partial \tau_c} = -\sum \frac{\partial L}{\partial x_c}

    ``threshold`` is a :class:`~torch.nn.Parameter` of shape ``(num_channels,)``, initialised to
    0 (so an untrained RSign is :class:`SteSign`). Tie rule: :math:`x_c = \tau_c` gives :math:`+1`.

    Args:
        num_channels: number of channels C.
        clip_value: :math:`c \ge 0` of the STE on :math:`x - \tau`; ``None``: identity.
            Default: ``1.0``.
        channel_dim: the channel dim of the input. Default: ``1`` (``(N, C)``, ``(N, C, H, W)``).
        gradient: the surrogate on :math:`x - \tau`: ``"ste"`` (above) or ``"approx_sign"``
            (:math:`(2 - 2|t|)\,\mathbb{1}\{|t| \le 1\}`, the official ReActNet code's; then
            ``clip_value`` is unused). Default: ``"ste"``.

    Shape:
        - Input: :math:`(*, C, *)` with C at ``channel_dim``. Output: same shape, :math:`\{-1, +1\}`.

    Examples::

        >>> q = RSign(3)
        >>> q(torch.randn(2, 3, 4, 4)).shape
        torch.Size([2, 3, 4, 4])

    References:
        Liu et al., *ReActNet*, ECCV 2020, arXiv:2003.03488 (the paper's α is bnnlab's τ).
    """

    precision = 1

    def __init__(self, num_channels: int, clip_value: float | None = 1.0, channel_dim: int = 1, *,
                 gradient: str = "ste", device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.num_channels = check_int(num_channels, "num_channels", min_value=1)
        self.clip_value = check_real(clip_value, "clip_value", min_value=0.0, allow_none=True)
        self.channel_dim = check_int(channel_dim, "channel_dim")
        self.gradient = check_choice(gradient, "gradient", BF.RSIGN_GRADIENTS)
        self.threshold = nn.Parameter(torch.zeros(num_channels, device=device, dtype=dtype))

    def forward(self, x: Tensor) -> Tensor:
        return BF.rsign(x, self.threshold, self.clip_value, channel_dim=self.channel_dim,
                        gradient=self.gradient)

    def extra_repr(self) -> str:
        s = (f"num_channels={self.num_channels}, clip_value={self.clip_value}, "
             f"channel_dim={self.channel_dim}")
        return s if self.gradient == "ste" else s + f", gradient={self.gradient!r}"


class ScaledSign(Quantizer):
    r"""A sign scaled by a (learnable) scalar :math:`s`: :math:`q(x) = s\,\operatorname{sign}(x)`.

    .. math::
        q(x) = s \operatorname{sign}(x), \qquad
        \frac{\partial q}{\partial x} := s\,\mathbb{1}\{\lvert x \rvert \le c\}, \qquad
        \frac{\partial q}{\partial s} = \operatorname{sign}(x)

    With ``learnable=True`` (default) ``scale`` is a 0-d :class:`~torch.nn.Parameter`; otherwise
    a buffer. Tie rule: :math:`q(0) = +s`. For XNOR-Net's per-output-channel
    :math:`\alpha_o = \operatorname{mean}|W_o|` use :func:`bnnlab.functional.xnor_weight_scale`
    (or :class:`MagnitudeAwareSign`, its stop-gradient form).

    Args:
        scale: initial :math:`s`. Default: ``1.0``.
        clip_value: :math:`c \ge 0` of the STE; ``None``: identity. Default: ``1.0``.
        learnable: make :math:`s` a parameter. Default: ``True``.

    Shape:
        - Input: :math:`(*)`. Output: :math:`(*)`, values in :math:`\{-s, +s\}`.

    References:
        Rastegari et al., *XNOR-Net*, ECCV 2016, arXiv:1603.05279; Bulat and Tzimiropoulos,
        *XNOR-Net++*, BMVC 2019, arXiv:1909.13863 (learned scales); larq's ``_scaled_sign``.
    """

    precision = 1

    def __init__(self, scale: float = 1.0, *, clip_value: float | None = 1.0,
                 learnable: bool = True, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        scale = check_real(scale, "scale")
        self.clip_value = check_real(clip_value, "clip_value", min_value=0.0, allow_none=True)
        self.learnable = check_bool(learnable, "learnable")
        value = torch.tensor(float(scale), device=device, dtype=dtype)
        if self.learnable:
            self.scale = nn.Parameter(value)
        else:
            self.register_buffer("scale", value)

    def forward(self, x: Tensor) -> Tensor:
        return BF.scaled_sign(x, self.scale, self.clip_value)

    def extra_repr(self) -> str:
        return (f"scale={self.scale.detach().item():.4g}, clip_value={self.clip_value}, "
                f"learnable={self.learnable}")


#: larq's snake_case names -> quantizer classes. The single source of truth for names: layers,
#: notebook dropdowns, figure legends and parametrized tests all read it.
BY_NAME: dict[str, type[Quantizer]] = {
    "ste_sign": SteSign,
    "approx_sign": ApproxSign,
    "swish_sign": SwishSign,
    "ste_heaviside": SteHeaviside,
    "magnitude_aware_sign": MagnitudeAwareSign,
    "stochastic_sign": StochasticSign,
    "rsign": RSign,
    "scaled_sign": ScaledSign,
}


def _required_args(cls: type) -> list[str]:
    params = inspect.signature(cls).parameters.values()
    return [p.name for p in params if p.default is inspect.Parameter.empty
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def get_quantizer(spec: Any, *, argname: str = "quantizer") -> nn.Module | None:
    """Resolve a quantizer spec, as layers do for ``input_quantizer=`` / ``weight_quantizer=``.

    Args:
        spec: ``None`` (returns ``None``: no quantization); a name from :data:`BY_NAME`
            (instantiated with its defaults); an :class:`~torch.nn.Module` instance (returned
            as is, not copied); or an :class:`~torch.nn.Module` subclass (instantiated with no
            arguments).
        argname: the caller's argument name, used in error messages. Default: ``"quantizer"``.

    Raises:
        ValueError: unknown name, or a name/class that needs constructor arguments
            (``"rsign"`` needs ``num_channels``: pass ``RSign(C)``).
        TypeError: any other kind of ``spec``.

    Examples::

        >>> get_quantizer("approx_sign")
        ApproxSign(grad=(2-2|x|)*1{|x|<=1})
        >>> get_quantizer(None) is None
        True
    """
    if spec is None:
        return None
    if isinstance(spec, str):
        if spec not in BY_NAME:
            raise ValueError(f"{argname}: unknown quantizer {spec!r}; expected one of "
                             f"{', '.join(map(repr, BY_NAME))}, a Quantizer instance or None")
        cls: type[nn.Module] = BY_NAME[spec]
    elif isinstance(spec, nn.Module):
        return spec
    elif isinstance(spec, type) and issubclass(spec, nn.Module):
        cls = spec
    else:
        raise TypeError(f"{argname} must be None, a quantizer name ({', '.join(BY_NAME)}), an "
                        f"nn.Module instance or subclass, got {type(spec).__name__}")
    missing = _required_args(cls)
    if missing:
        raise ValueError(f"{argname}: {cls.__name__} needs {', '.join(missing)}; pass an instance "
                         f"instead, e.g. {argname}={cls.__name__}({', '.join(missing)}=...)")
    return cls()
