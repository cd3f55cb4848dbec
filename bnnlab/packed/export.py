"""export(): a trained model to a PackedModel (module replacement, fused flat chains).

Part of :mod:`bnnlab.packed` (see its docstring for the rules and the format)."""
from __future__ import annotations

import copy
import io
from typing import Any

import torch
from torch import Tensor, nn

from bnnlab import quantizers as Q
from bnnlab.blocks import BiRealBlock
from bnnlab.layers import (
    BinaryConv2d,
    BinaryLinear,
)
from bnnlab.packed.fold import _direction, _fold, _fold_entry
from bnnlab.packed.layers import (
    _PM1_QUANTIZERS,
    PackedConv2d,
    PackedFlatten,
    PackedLinear,
    PackedMaxPool2d,
    PackedSign,
    _contains_binary,
    _contains_packed,
    _is_binary,
    _layer_name,
    _PackedLayer,
    _refuse,
)
from bnnlab.packed.model import PackedModel
from bnnlab.packed.residual import PackedResidualConv, chain_units

# =============================================================================== export






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


def _replace(module: nn.Module, prefix: str, fuse: bool = False,
             notes: list[str] | None = None) -> nn.Module:
    """Module replacement, in place on a (copied) module tree; with ``fuse``, Bi-Real units
    become :class:`PackedResidualConv` where that is proved exact (``notes`` says which)."""
    if _is_binary(module):
        return _convert(module, prefix)
    if fuse and isinstance(module, BiRealBlock):
        unit, note = PackedResidualConv.from_block(module, name=prefix)
        if notes is not None:
            notes.append(note if unit is not None else f"{prefix}: BiRealBlock not fused ({note})")
        if unit is not None:
            return unit
    for name, child in list(module.named_children()):
        full = f"{prefix}.{name}" if prefix else name
        if _is_binary(child) or _contains_binary(child):
            module._modules[name] = _replace(child, full, fuse, notes)
    return module


def _plan_sequential(seq: nn.Sequential, fuse: bool) -> tuple[list[Any], list[str]]:
    items: list[Any] = []
    notes: list[str] = []
    for name, child in seq.named_children():
        if _is_binary(child):
            items.append(_convert(child, name))
        elif _contains_binary(child):
            items.append(_replace(child, name, fuse, notes))
        else:
            items.append(child)
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
        stages = chain_units(stages, notes)
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
        notes = ["module replacement (no fusion of flat chains)"]
        body = _replace(work, "", fuse, notes)
        packed = PackedModel(body, kind="modules", source_state_dict_bytes=src_bytes,
                             notes=notes)
    if example_input is not None:
        packed.check_against(model, example_input, rtol=rtol, atol=atol)
    return packed
