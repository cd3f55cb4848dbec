r"""Stateless binarisation ops: the ``torch.nn.functional`` of bnnlab.

Modules in :mod:`bnnlab.quantizers`, :mod:`bnnlab.layers` and :mod:`bnnlab.blocks` keep
hyperparameters and call these functions. Import as ``from bnnlab import functional as BF``
(``F`` stays torch's).

Every binariser here follows two house rules:

* **Tie rule.** :math:`\operatorname{sign}(0) = +1` (also for ``-0.0``), so outputs are always in
  :math:`\{-1, +1\}` and can be bit-packed. :func:`torch.sign` maps 0 to 0 and is never used.
  NaN inputs propagate to NaN outputs rather than silently becoming :math:`\pm 1`.
* **Surrogate gradients are larq's, exactly** (``larq/quantizers.py``), so results compare with
  the literature. With :math:`c` the clip value:

  ========================  =====================================================================
  op                        :math:`\partial q / \partial x` used in the backward pass
  ========================  =====================================================================
  :func:`ste_sign`          :math:`\mathbb{1}\{|x| \le c\}` (identity if ``clip_value=None``)
  :func:`approx_sign`       :math:`(2 - 2|x|)\,\mathbb{1}\{|x| \le 1\}`
  :func:`swish_sign`        :math:`\beta(2 - \beta x \tanh(\beta x / 2)) / (1 + \cosh \beta x)`
  :func:`ste_heaviside`     :math:`\mathbb{1}\{|x| \le c\}`
  ========================  =====================================================================

The only custom autograd code is :class:`_Surrogate`: "forward this, backward that". Smooth parts
(scales, thresholds) are plain compositions, so autograd derives their gradients.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from bnnlab._validation import check_bool, check_choice, check_int, check_real

__all__ = [
    "sign",
    "ste_sign",
    "approx_sign",
    "swish_sign",
    "ste_heaviside",
    "magnitude_aware_sign",
    "stochastic_sign",
    "rsign",
    "scaled_sign",
    "xnor_weight_scale",
    "abc_activation",
    "abc_activation_sign",
    "NOISES",
    "RSIGN_GRADIENTS",
]

#: Noise distributions understood by :func:`stochastic_sign`.
NOISES = ("uniform", "normal", "laplace")

#: Surrogate gradients of :func:`rsign`.
RSIGN_GRADIENTS = ("ste", "approx_sign")


# --------------------------------------------------------------------------- helpers
class _Surrogate(torch.autograd.Function):
    """Forward ``forward_fn(x)``; backward ``grad_output * grad_fn(x)``.

    This is bnnlab's one way of attaching a pseudo-gradient to a piecewise-constant op (no
    ``x + (q - x).detach()`` trick anywhere). ``forward_fn`` and ``grad_fn`` are pure functions of
    the saved input ``x``; neither may modify it.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, forward_fn: Callable[[Tensor], Tensor],
                grad_fn: Callable[[Tensor], Tensor]) -> Tensor:
        ctx.save_for_backward(x)
        ctx.surrogate = grad_fn
        return forward_fn(x)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, None, None]:
        (x,) = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None
        return grad_output * ctx.surrogate(x).to(grad_output.dtype), None, None


def _ste_mask(clip_value: float | None) -> Callable[[Tensor], Tensor]:
    if clip_value is None:
        return torch.ones_like
    return lambda x: x.abs() <= clip_value


def _nan_to(x: Tensor, y: Tensor) -> Tensor:
    # Propagate NaN from x into y (a comparison would silently map NaN to one of the two levels).
    # Detached: a piecewise-constant forward has no gradient path of its own.
    return torch.where(torch.isnan(x), x.detach(), y) if x.is_floating_point() else y


# --------------------------------------------------------------------------- forward-only
def sign(x: Tensor) -> Tensor:
    r"""Sign that is never zero: :math:`\operatorname{sign}(0) = +1`.

    .. math::
        \operatorname{sign}(x) = \begin{cases} +1 & x \ge 0 \\ -1 & x < 0 \end{cases}

    :func:`torch.sign` maps 0 to 0, which is not binary and cannot be bit-packed. Every binariser
    in bnnlab goes through this function. ``-0.0`` maps to :math:`+1`; NaN stays NaN. The output
    carries **no gradient** (it is piecewise constant); train with :func:`ste_sign` or a sibling.

    Args:
        x: input of any shape and dtype.

    Shape:
        - Input: :math:`(*)`. Output: :math:`(*)`, same dtype.

    Examples::

        >>> sign(torch.tensor([-0.5, -0.0, 0.0, 2.0]))
        tensor([-1.,  1.,  1.,  1.])
    """
    one = torch.ones_like(x)
    return _nan_to(x, torch.where(x >= 0, one, -one))


def _heaviside(x: Tensor) -> Tensor:
    return _nan_to(x, (x > 0).to(x.dtype))


# --------------------------------------------------------------------------- binarisers
def ste_sign(x: Tensor, clip_value: float | None = 1.0) -> Tensor:
    r"""Binarise to :math:`\{-1, +1\}` with a clipped straight-through gradient.

    .. math::
        q(x) = \operatorname{sign}(x), \qquad
        \frac{\partial q}{\partial x} := \mathbb{1}\{\lvert x \rvert \le c\}

    Tie rule: :math:`q(0) = +1`. The gradient is passed at exactly :math:`|x| = c`.

    Args:
        x: input of any shape.
        clip_value: :math:`c \ge 0`. ``None`` lets every gradient through (identity). Default: ``1.0``.

    References:
        Courbariaux et al., *Binarized Neural Networks: Training Deep Neural Networks with Weights
        and Activations Constrained to +1 or -1*, 2016, arXiv:1602.02830. (larq ``ste_sign``.)
    """
    clip_value = check_real(clip_value, "clip_value", min_value=0.0, allow_none=True)
    return _Surrogate.apply(x, sign, _ste_mask(clip_value))


def _approx_sign_grad(x: Tensor) -> Tensor:
    a = x.abs()
    return torch.where(a <= 1, 2 - 2 * a, torch.zeros_like(a))


def approx_sign(x: Tensor) -> Tensor:
    r"""Binarise with Bi-Real Net's piecewise-polynomial (ApproxSign) gradient.

    .. math::
        q(x) = \operatorname{sign}(x), \qquad
        \frac{\partial q}{\partial x} := (2 - 2\lvert x \rvert)\,\mathbb{1}\{\lvert x \rvert \le 1\}

    The surrogate is the derivative of
    :math:`F(x) = -1` for :math:`x < -1`, :math:`2x + x^2` on :math:`[-1, 0)`,
    :math:`2x - x^2` on :math:`[0, 1)`, :math:`+1` for :math:`x \ge 1`,
    a second-order fit of :math:`\operatorname{sign}`. Tie rule: :math:`q(0) = +1`.

    Args:
        x: input of any shape.

    References:
        Liu et al., *Bi-Real Net: Enhancing the Performance of 1-bit CNNs with Improved
        Representational Capability and Advanced Training Algorithm*, ECCV 2018, arXiv:1808.00278.
        (larq ``approx_sign``.)
    """
    return _Surrogate.apply(x, sign, _approx_sign_grad)


def swish_sign(x: Tensor, beta: float = 5.0) -> Tensor:
    r"""Binarise with BNN+'s SignSwish gradient.

    .. math::
        q(x) = \operatorname{sign}(x), \qquad
        \frac{\partial q}{\partial x} :=
        \frac{\beta\,(2 - \beta x \tanh(\beta x / 2))}{1 + \cosh(\beta x)}

    The surrogate is the derivative of
    :math:`SS_\beta(x) = 2\sigma(\beta x)\,[1 + \beta x (1 - \sigma(\beta x))] - 1`;
    larger :math:`\beta` approaches :math:`\operatorname{sign}`. It is not clipped: it becomes
    slightly negative for :math:`|x| \gtrsim 2.4/\beta` and decays to 0.
    Tie rule: :math:`q(0) = +1`.

    Args:
        x: input of any shape.
        beta: :math:`\beta > 0`. Default: ``5.0`` (larq's).

    References:
        Darabi et al., *BNN+: Improved Binary Network Training*, 2018, arXiv:1812.11800.
        (larq ``swish_sign``.)
    """
    beta = check_real(beta, "beta", min_value=0.0, include_min=False)

    def grad(t: Tensor) -> Tensor:
        bx = beta * t
        return beta * (2 - bx * torch.tanh(bx * 0.5)) / (1 + torch.cosh(bx))

    return _Surrogate.apply(x, sign, grad)


def ste_heaviside(x: Tensor, clip_value: float | None = 1.0) -> Tensor:
    r"""Binarise to :math:`\{0, 1\}` with a clipped straight-through gradient.

    .. math::
        q(x) = \begin{cases} 1 & x > 0 \\ 0 & x \le 0 \end{cases}, \qquad
        \frac{\partial q}{\partial x} := \mathbb{1}\{\lvert x \rvert \le c\}

    Tie rule (as larq's ``heaviside``): :math:`q(0) = 0`, unlike :func:`sign`.

    Args:
        x: input of any shape.
        clip_value: :math:`c \ge 0`. ``None`` lets every gradient through. Default: ``1.0``.

    References:
        larq ``ste_heaviside`` (``larq/quantizers.py``); the STE as in Courbariaux et al., 2016,
        arXiv:1602.02830.
    """
    clip_value = check_real(clip_value, "clip_value", min_value=0.0, allow_none=True)
    return _Surrogate.apply(x, _heaviside, _ste_mask(clip_value))


def xnor_weight_scale(w: Tensor, detach: bool = False) -> Tensor:
    r"""XNOR-Net's per-output-channel weight scale :math:`\alpha_o = \operatorname{mean}|W_o|`.

    .. math::
        \alpha_o = \frac{1}{K} \sum_{k} \lvert W_{o,k} \rvert

    The mean runs over every dim but dim 0 (torch layout: ``(C_out, ...)``). A 1-D (or 0-d)
    tensor has one element per channel, so :math:`\alpha = |W|`.

    Args:
        w: latent weight, shape :math:`(C_{out}, *)`.
        detach: if ``True``, no gradient flows through :math:`\alpha` (Bi-Real's magnitude-aware
            sign, larq's ``stop_gradient``); if ``False`` (XNOR-Net) it does. Default: ``False``.

    Shape:
        - Input: :math:`(C_{out}, *)`. Output: :math:`(C_{out}, 1, \dots, 1)`, same ndim.

    References:
        Rastegari et al., *XNOR-Net: ImageNet Classification Using Binary Convolutional Neural
        Networks*, ECCV 2016, arXiv:1603.05279.
    """
    a = w.abs()
    if w.ndim >= 2:
        a = a.mean(dim=tuple(range(1, w.ndim)), keepdim=True)
    return a.detach() if detach else a


def magnitude_aware_sign(w: Tensor, clip_value: float | None = 1.0, *,
                         scale_gradient: bool = True) -> Tensor:
    r"""Bi-Real Net's magnitude-aware weight binariser: :math:`\alpha_o \cdot \operatorname{sign}(W)`.

    .. math::
        q(W)_o = \operatorname{sg}(\alpha_o)\,\operatorname{sign}(W_o), \quad
        \alpha_o = \operatorname{mean}\lvert W_o \rvert, \qquad
        \frac{\partial q_o}{\partial W_o} := \alpha_o\,\mathbb{1}\{\lvert W_o \rvert \le c\}

    :math:`\operatorname{sg}` is stop-gradient: the scale is a constant in the backward pass.
    :math:`\alpha_o` is taken per output channel, over every dim but dim 0 (torch layout; larq's
    channels-last version reduces over every axis but the last). Tie rule: sign(0) = +1.

    With ``scale_gradient=False`` the surrogate is :math:`\mathbb{1}\{\lvert W_o \rvert \le c\}`
    without the factor :math:`\alpha_o`: the official Bi-Real Net and ReActNet code
    (``HardBinaryConv``: ``alpha*sign(W)`` detached, minus ``clamp(W, -1, 1)`` detached, plus
    ``clamp(W, -1, 1)``). The forward is the same.

    Args:
        w: latent weight, shape :math:`(C_{out}, *)`.
        clip_value: :math:`c \ge 0` of the STE. ``None``: no clipping. Default: ``1.0``.
        scale_gradient: multiply the surrogate by :math:`\alpha_o` (larq). Default: ``True``.

    References:
        Liu et al., *Bi-Real Net*, ECCV 2018, arXiv:1808.00278. (larq ``magnitude_aware_sign``.)
        Liu et al., *ReActNet*, ECCV 2020, arXiv:2003.03488 (official code, ``scale_gradient=False``).
    """
    scale_gradient = check_bool(scale_gradient, "scale_gradient")
    if scale_gradient:
        return xnor_weight_scale(w, detach=True) * ste_sign(w, clip_value)
    clip_value = check_real(clip_value, "clip_value", min_value=0.0, allow_none=True)
    return _Surrogate.apply(w, lambda t: xnor_weight_scale(t, detach=True) * sign(t),
                            _ste_mask(clip_value))


def _draw_noise(x: Tensor, noise: str, generator: torch.Generator | None) -> Tensor:
    if noise == "uniform":
        return torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device) * 2 - 1
    if noise == "normal":
        return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    # Laplace(0, 1) = difference of two Exp(1) draws. Fresh tensors, not part of any graph.
    e1 = torch.empty(x.shape, dtype=x.dtype, device=x.device).exponential_(generator=generator)
    e2 = torch.empty(x.shape, dtype=x.dtype, device=x.device).exponential_(generator=generator)
    return e1 - e2


def stochastic_sign(x: Tensor, noise: str = "uniform", scale: float = 1.0, training: bool = True,
                    clip_value: float | None = 1.0,
                    generator: torch.Generator | None = None) -> Tensor:
    r"""Stochastic binarisation: the sign of the input plus fresh noise.

    .. math::
        q(x) = \operatorname{sign}(x + s\,\varepsilon), \quad \varepsilon \text{ i.i.d. per
        element}, \qquad \frac{\partial q}{\partial x} := \mathbb{1}\{\lvert x \rvert \le c\}

    so :math:`P(q = +1) = P(\varepsilon \ge -x/s) = 1 - F_\varepsilon(-x/s)`. The noise is
    ``"uniform"`` on :math:`[-1, 1)` (with :math:`s = 1` this is BNN's stochastic binarisation,
    :math:`P(+1) = \operatorname{clip}((x + 1)/2, 0, 1)`, the hard sigmoid), ``"normal"``
    :math:`\mathcal{N}(0, 1)` or ``"laplace"`` (location 0, scale 1). A fresh
    :math:`\varepsilon` is drawn for every element on every call. With ``training=False`` the
    output is the deterministic :math:`\operatorname{sign}(x)`. The surrogate is the STE on
    :math:`x` (not on :math:`x + s\varepsilon`). Tie rule: :math:`\operatorname{sign}(0) = +1`.

    Args:
        x: input of any shape.
        noise: ``"uniform"``, ``"normal"`` or ``"laplace"``. Default: ``"uniform"``.
        scale: noise scale :math:`s \ge 0` (0 gives :func:`ste_sign`). Default: ``1.0``.
        training: draw noise if ``True``; deterministic sign if ``False``. Default: ``True``.
        clip_value: :math:`c \ge 0` of the STE; ``None`` for the identity. Default: ``1.0``.
        generator: optional :class:`torch.Generator` for the draws (on ``x``'s device).

    References:
        Courbariaux et al., *BinaryConnect*, NeurIPS 2015, arXiv:1511.00363, and *Binarized Neural
        Networks*, 2016, arXiv:1602.02830 (stochastic binarisation with the hard sigmoid).
    """
    noise = check_choice(noise, "noise", NOISES)
    scale = check_real(scale, "scale", min_value=0.0)
    clip_value = check_real(clip_value, "clip_value", min_value=0.0, allow_none=True)
    if not training or scale == 0:
        return ste_sign(x, clip_value)
    eps = _draw_noise(x, noise, generator)
    return _Surrogate.apply(x, lambda t: sign(t + scale * eps), _ste_mask(clip_value))


def _per_channel(t: Tensor, x: Tensor, channel_dim: int, argname: str) -> Tensor:
    """Reshape a 1-D per-channel tensor of length C to broadcast along ``x``'s ``channel_dim``."""
    if t.ndim != 1:
        return t  # a scalar or an already-broadcastable tensor: torch's broadcasting decides
    channel_dim = check_int(channel_dim, "channel_dim")
    if not -x.ndim <= channel_dim < x.ndim:
        raise ValueError(f"channel_dim={channel_dim} is out of range for an input with "
                         f"{x.ndim} dims")
    dim = channel_dim % x.ndim
    if t.shape[0] not in (1, x.shape[dim]):
        raise ValueError(f"{argname} has {t.shape[0]} entries but the input has "
                         f"{x.shape[dim]} channels along channel_dim={channel_dim}")
    shape = [1] * x.ndim
    shape[dim] = t.shape[0]
    return t.reshape(shape)


def rsign(x: Tensor, threshold: Tensor | float, clip_value: float | None = 1.0,
          channel_dim: int = 1, *, gradient: str = "ste") -> Tensor:
    r"""ReActNet's RSign: a sign with a learnable per-channel threshold :math:`\tau_c`.

    .. math::
        q(x)_c = \operatorname{sign}(x_c - \tau_c), \qquad
        \frac{\partial q_c}{\partial x_c} := \mathbb{1}\{\lvert x_c - \tau_c \rvert \le c\},
        \qquad \frac{\partial q_c}{\partial \tau_c} := -\frac{\partial q_c}{\partial x_c}

    with ``gradient="ste"``; ``gradient="approx_sign"`` uses Bi-Real's ApproxSign surrogate on
    :math:`t = x_c - \tau_c` instead, :math:`(2 - 2|t|)\,\mathbb{1}\{|t| \le 1\}` (what the
    official ReActNet code trains with; ``clip_value`` is then unused).

    so :math:`\partial L/\partial \tau_c = -\sum (\partial L / \partial x_c)` over every element
    of channel :math:`c`. (ReActNet's paper calls :math:`\tau` "α"; renamed so it does not clash
    with XNOR-Net's scale.) Tie rule: :math:`x_c = \tau_c` gives :math:`+1`.

    Args:
        x: input, channels along ``channel_dim``.
        threshold: :math:`\tau`; a 1-D tensor of length C (reshaped to broadcast along
            ``channel_dim``), a scalar, or any tensor that broadcasts against ``x``.
        clip_value: :math:`c \ge 0` of the STE on :math:`x - \tau`; ``None``: identity.
            Default: ``1.0``.
        channel_dim: the channel dim of ``x`` for a 1-D ``threshold``. Default: ``1``
            (``(N, C)`` and ``(N, C, H, W)``).
        gradient: ``"ste"`` or ``"approx_sign"``, the surrogate (above). Default: ``"ste"``.

    References:
        Liu et al., *ReActNet: Towards Precise Binary Neural Network with Generalized Activation
        Functions*, ECCV 2020, arXiv:2003.03488.
    """
    gradient = check_choice(gradient, "gradient", RSIGN_GRADIENTS)
    threshold = torch.as_tensor(threshold, device=x.device)
    shifted = x - _per_channel(threshold, x, channel_dim, "threshold")
    if gradient == "approx_sign":
        return approx_sign(shifted)
    return ste_sign(shifted, clip_value)


def scaled_sign(x: Tensor, scale: Tensor | float, clip_value: float | None = 1.0) -> Tensor:
    r"""A sign scaled by :math:`s`: :math:`q(x) = s \cdot \operatorname{sign}(x)`.

    .. math::
        \frac{\partial q}{\partial x} := s\,\mathbb{1}\{\lvert x \rvert \le c\}, \qquad
        \frac{\partial q}{\partial s} = \operatorname{sign}(x)

    The gradient to a tensor ``scale`` is exact (the output is linear in :math:`s`), so :math:`s`
    can be learned. Tie rule: :math:`q(0) = +s`.

    Args:
        x: input of any shape.
        scale: :math:`s`, a float or a tensor broadcasting against ``x``.
        clip_value: :math:`c \ge 0` of the STE; ``None``: identity. Default: ``1.0``.

    References:
        Rastegari et al., *XNOR-Net*, ECCV 2016, arXiv:1603.05279 (scaled binary values);
        larq's ``_scaled_sign`` (:math:`1.3 \cdot` ste_sign, used in its docs plots).
    """
    return scale * ste_sign(x, clip_value)


def abc_activation(x: Tensor, shift: Tensor | float) -> Tensor:
    r"""ABC-Net's shifted, clipped activation, centred: :math:`h_v(x) - \tfrac12`.

    .. math::
        h_v(x) = \operatorname{clip}(x + v, 0, 1), \qquad
        \frac{\partial h_v}{\partial x} = \frac{\partial h_v}{\partial v} =
        \mathbb{1}\{0 \le x + v \le 1\}

    (torch's ``clamp`` passes the gradient on the closed interval). Binarising it with a sign
    gives the paper's activation base :math:`H_v(x) = 2\,\mathbb{1}\{h_v(x) \ge 0.5\} - 1`
    (:func:`abc_activation_sign`).

    Args:
        x: input of any shape.
        shift: :math:`v`, a float or a tensor broadcasting against ``x``.

    References:
        Lin, Zhao, Pan, *Towards Accurate Binary Convolutional Neural Network*, NeurIPS 2017,
        arXiv:1711.11294, Sec. 3.2.
    """
    return torch.clamp(x + shift, 0.0, 1.0) - 0.5


def abc_activation_sign(x: Tensor, shift: Tensor | float) -> Tensor:
    r"""ABC-Net's binary activation base :math:`H_v(x) = \operatorname{sign}(\operatorname{clip}(x + v, 0, 1) - 0.5)`.

    .. math::
        H_v(x) = \begin{cases} +1 & x + v \ge 0.5 \\ -1 & x + v < 0.5 \end{cases}, \qquad
        \frac{\partial H_v}{\partial x} = \frac{\partial H_v}{\partial v} :=
        \mathbb{1}\{0 \le x + v \le 1\}

    The straight-through estimator through the clip, as the paper trains it. Tie rule:
    :math:`x + v = 0.5` gives :math:`+1` (the paper's :math:`\mathbb{1}\{h \ge 0.5\}`).
    It is :func:`ste_sign` (clip 1, which never binds on :math:`[-0.5, 0.5]`) of
    :func:`abc_activation`.

    Args:
        x: input of any shape.
        shift: :math:`v`, a float or a tensor broadcasting against ``x`` (learnable in ABC-Net).

    References:
        Lin, Zhao, Pan, *Towards Accurate Binary Convolutional Neural Network*, NeurIPS 2017,
        arXiv:1711.11294, Sec. 3.2.
    """
    return ste_sign(abc_activation(x, shift), 1.0)
