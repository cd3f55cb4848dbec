r"""PackedResidualConv: a Bi-Real unit ``BN(conv(sign x)) + shortcut(x)`` in one kernel call.

Part of :mod:`bnnlab.packed` (see its docstring for the rules and the format).

:class:`~bnnlab.blocks.BiRealBlock` computes, in eval mode,

.. math::
    y = \mathrm{BN}\bigl(\alpha \odot (W_b \star \operatorname{sign} x)\bigr) + s(x)

as three torch ops after the binary conv (the affine epilogue, BatchNorm, the add). Here one
kernel call does all of it: the conv's float epilogue, then one contiguous pass in C for the
BatchNorm and the add (and, inside a :class:`PackedResidualChain`, the next unit's sign
packing) (:func:`bnnlab.kernels.prepare_conv2d` with ``post_scale`` / ``post_offset`` /
``post_fma`` and the call's ``residual``); only the shortcut :math:`s` (identity, or AvgPool
→ 1×1 conv → BN) stays float, run by :func:`bnnlab.packed.fastops.fast_call` (the same
float32 bits as the torch modules with less overhead; the export notes say so).

Exactness: the BatchNorm becomes ``v * a + b`` per channel with ``a``, ``b`` computed as
torch's eval BatchNorm computes them; which rounding torch uses (one fused multiply-add or
two roundings) is not assumed but *proved* at export: the kernel's value table
(:meth:`~bnnlab.kernels.Conv2dPlan.epilogue_values`, every attainable dot product of every
channel) must equal torch's BatchNorm applied to the unfused epilogue's values, bit for bit,
for one of the candidate forms; otherwise the block is not fused (module replacement as
before, noted). The residual add is the same IEEE float32 add as torch's ``+``.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from bnnlab import kernels
from bnnlab.packed.fastops import fast_call, supports_avgpool
from bnnlab.packed.layers import PackedConv2d


def _bn_candidates(bn: nn.BatchNorm2d) -> list[tuple[np.ndarray, np.ndarray, bool]]:
    """(a, b, fma) forms of an eval BatchNorm as ``v * a + b`` per channel, most likely first
    (torch's CPU kernel: a = weight / sqrt(var + eps) in float32, b = bias - mean * a)."""
    f = np.float32
    c = bn.num_features
    var = bn.running_var.detach().numpy().astype(f)            # type: ignore[union-attr]
    mean = bn.running_mean.detach().numpy().astype(f)          # type: ignore[union-attr]
    w = bn.weight.detach().numpy().astype(f) if bn.affine else np.ones(c, f)
    bias = bn.bias.detach().numpy().astype(f) if bn.affine else np.zeros(c, f)
    with np.errstate(all="ignore"):
        inv = (f(1.0) / np.sqrt(var + f(bn.eps))).astype(f)
        a = (inv * w).astype(f)
        b_fused = (bias.astype(np.float64) - mean.astype(np.float64) * a.astype(np.float64)).astype(f)
        b_two = (bias - (mean * a).astype(f)).astype(f)
    out = []
    for b in (b_fused, b_two):
        for fma in (True, False):
            if np.isfinite(a).all() and np.isfinite(b).all():
                out.append((a, b, fma))
    return out


def _torch_bn_table(bn: nn.BatchNorm2d, values: np.ndarray) -> np.ndarray:
    """torch's eval BatchNorm on ``values`` (O, L) laid out as one (1, O, L, 1) batch."""
    with torch.no_grad():
        return bn(torch.from_numpy(values)[None, :, :, None]).numpy()[0, :, :, 0]


def _shortcut_note(shortcut: nn.Module) -> str:
    """What :func:`~bnnlab.packed.fastops.fast_call` does with a unit's shortcut, for the
    export notes."""
    if type(shortcut) is nn.Identity:
        return ""
    parts = list(shortcut) if type(shortcut) is nn.Sequential else [shortcut]
    names = " -> ".join(type(m).__name__ for m in parts)
    pools = [m for m in parts if supports_avgpool(m)]
    how = "; its AvgPool2d as strided numpy adds in torch's order" if pools else ""
    return f"; shortcut {names}: direct torch calls{how} (same bits)"


class PackedResidualConv(nn.Module):
    r"""``BN(conv(sign x)) + shortcut(x)`` with the BatchNorm and the add in the conv's epilogue.

    Built by :meth:`from_block` (used by :func:`~bnnlab.packed.export`); equals the source
    :class:`~bnnlab.blocks.BiRealBlock` (its packed conv, torch BatchNorm and add) bit for bit.

    Attributes:
        conv: the :class:`~bnnlab.packed.PackedConv2d` (input packing, weights).
        shortcut: the float shortcut module (``nn.Identity`` or AvgPool → Conv1×1 → BN).
        plan: the :class:`~bnnlab.kernels.Conv2dPlan` with the BatchNorm as post-op.

    Shape:
        Input :math:`(N, C_{in}, H, W)` float32; output :math:`(N, C_{out}, H_o, W_o)` float32.
    """

    def __init__(self, conv: PackedConv2d, shortcut: nn.Module, plan: kernels.Conv2dPlan) -> None:
        super().__init__()
        self.conv = conv
        self.shortcut = shortcut
        self.plan = plan
        self._identity = type(shortcut) is nn.Identity
        # the shortcut's float ops called directly (same bits; bnnlab.packed.fastops)
        self._shortcut_fn: Any = None if self._identity else fast_call(shortcut)
        self.train(False)

    @classmethod
    def from_block(cls, block: Any, *, name: str = "") -> tuple[PackedResidualConv | None, str]:
        """``(module, note)``: the fused unit, or ``None`` and why it is not fused."""
        from bnnlab.blocks import BiRealBlock
        from bnnlab.layers import BinaryConv2d

        if type(block) is not BiRealBlock or not block.binary:
            return None, "not a binary BiRealBlock"
        if type(block.act) is not nn.Identity or not isinstance(block.conv, BinaryConv2d):
            return None, "the block's activation or conv is not the Bi-Real one"
        bn = block.bn
        if type(bn) is not nn.BatchNorm2d or not bn.track_running_stats \
                or bn.running_mean is None or bn.running_var is None:
            return None, "its BatchNorm has no running statistics"
        if bn.weight is not None and bn.weight.dtype != torch.float32:
            return None, "its BatchNorm is not float32"
        conv = PackedConv2d.from_binary(block.conv, name=f"{name}.conv" if name else "conv")
        if not conv._affine_only or conv.pad_value == 0.0:
            return None, "its conv needs a float epilogue beyond alpha and bias, or zero padding"
        pre_plan = conv._kernel_plan()
        _, pre = pre_plan.epilogue_values(post=False)
        want = _torch_bn_table(bn, pre)
        for a, b, fma in _bn_candidates(bn):
            plan = kernels.prepare_conv2d(conv.weight, stride=conv.stride, padding=conv.padding,
                                          pad_value=conv.pad_value, alpha=pre_plan.affine,
                                          post_scale=a, post_offset=b, post_fma=fma)
            if np.array_equal(plan.epilogue_values()[1], want):
                unit = cls(conv, block.shortcut, plan)
                return unit, (f"{name}: BiRealBlock fused (conv -> BatchNorm -> + shortcut in "
                              f"one kernel call, {'fma' if fma else 'two roundings'}; "
                              "proved on every attainable dot product)"
                              f"{_shortcut_note(block.shortcut)}")
        return None, "torch's BatchNorm arithmetic is not reproduced on every attainable value"

    def extra_repr(self) -> str:
        return f"fused_bn=True, post_fma={self.plan.post_fma}"

    def train(self, mode: bool = True) -> Any:
        """Inference-only: stays in eval mode."""
        return super().train(False)

    def _run(self, x: Tensor, bits: kernels.PackedActivations | None, emit: bool,
             xa: np.ndarray | None = None) -> tuple[np.ndarray, kernels.PackedActivations | None]:
        """(output array, its packed signs when ``emit``). The input is ``xa`` (the previous
        unit's output array, inside a chain) or else ``x``; ``bits``: this unit's packed input
        signs when the previous unit emitted them (else the input is packed here). The output
        stays the kernel's array, so an identity shortcut of the next unit passes it as the
        residual without a tensor round trip."""
        if self._identity:
            res: Any = x if xa is None else xa
        else:
            if xa is not None:
                x = torch.from_numpy(xa)
            res = self._shortcut_fn(x)
        if bits is None:
            bits = self.conv._pack(x if xa is None else torch.from_numpy(xa))
        if emit:
            return self.plan(bits, residual=res, emit_bits=True)
        return self.plan(bits, residual=res), None

    def forward(self, x: Tensor) -> Tensor:
        if isinstance(x, Tensor) and x.dim() == 3:
            return self.forward(x.unsqueeze(0)).squeeze(0)
        return torch.from_numpy(self._run(x, None, False)[0])


class PackedResidualChain(nn.Module):
    r"""Consecutive :class:`PackedResidualConv` units in which each unit's epilogue also
    packs the signs of its output for the next unit (one pass over the output instead of a
    separate packing call): the same outputs as running the units one after the other.

    Built by :func:`~bnnlab.packed.export` for runs of fused units whose successors binarise
    with the plain sign (``input=sign``).
    """

    def __init__(self, units: list[PackedResidualConv]) -> None:
        super().__init__()
        if len(units) < 2:
            raise ValueError(f"a chain needs at least 2 units, got {len(units)}")
        for a, b in zip(units[:-1], units[1:], strict=True):
            if not can_chain(a, b):
                raise ValueError(f"unit {b.conv.name!r} cannot take the packed signs of "
                                 f"{a.conv.name!r}")
        self.units = nn.ModuleList(units)
        self.train(False)

    def train(self, mode: bool = True) -> Any:
        """Inference-only: stays in eval mode."""
        return super().train(False)

    def forward(self, x: Tensor) -> Tensor:
        if isinstance(x, Tensor) and x.dim() == 3:
            return self.forward(x.unsqueeze(0)).squeeze(0)
        units: Any = self.units._modules.values()
        # the packed signs and the output array of one unit feed the next
        bits: kernels.PackedActivations | None = None
        xa: np.ndarray | None = None
        last = len(units) - 1
        for i, unit in enumerate(units):
            xa, bits = unit._run(x, bits, i < last, xa)
        return torch.from_numpy(xa)


def can_chain(a: Any, b: Any) -> bool:
    """Can unit ``b`` take the packed signs that unit ``a`` emits as its own packed input?"""
    return isinstance(a, PackedResidualConv) and isinstance(b, PackedResidualConv) \
        and b.conv.input_mode == "sign" and b.conv.tau is None \
        and a.conv.out_channels == b.conv.in_channels and a.plan.layout == "nchw"


def chain_units(stages: list[Any], notes: list[str]) -> list[Any]:
    """Merge runs of chainable :class:`PackedResidualConv` stages into
    :class:`PackedResidualChain` stages."""
    out: list[Any] = []
    run: list[Any] = []

    def flush() -> None:
        if len(run) >= 2:
            out.append(PackedResidualChain(list(run)))
            notes.append(f"{run[0].conv.name} .. {run[-1].conv.name}: {len(run)} fused Bi-Real "
                         "units chained (each epilogue packs the next unit's input signs)")
        else:
            out.extend(run)
        run.clear()

    for st in stages:
        if run and can_chain(run[-1], st):
            run.append(st)
            continue
        flush()
        if isinstance(st, PackedResidualConv):
            run.append(st)
        else:
            out.append(st)
    flush()
    return out
