r"""Per-layer bits, memory and multiply-accumulates of a (binary) model: larq's summary for torch.

:func:`summary` runs one forward pass (batch 1, eval mode, no grad) with hooks and returns a
:class:`Summary`: one :class:`LayerRecord` per layer plus totals. Computing and printing are
separate: ``str(summary)`` renders the table, :meth:`Summary.to_rows` / :meth:`Summary.to_dict`
give plain data for tables and plots.

**What is counted** (the theoretical figures; :mod:`bnnlab.packed` measures the real ones):

* *MACs* (multiply-accumulates, one sample): ``nn.Linear`` and every ``nn.Conv*d`` (with their
  binary subclasses): ``(# output elements) · K`` with ``K = weight[0].numel()``
  (:math:`C_{in}/g \cdot k_h k_w` for a conv, ``in_features`` for a linear layer); transposed
  convolutions: ``(# input elements) · weight[0].numel()``. A layer called twice counts twice.
  Other layers (BatchNorm, pooling, activations, quantizers, RNNs, attention) count 0.
  Scale factors, BatchNorm, bias additions and the XNOR-Net ``K``-map are not counted.
* A MAC is **binary** (1-bit) when the layer's input *and* its weights are binary: the
  ``input_quantizer`` and the ``weight_quantizer`` both have ``precision == 1``. Otherwise it
  is a float (32-bit) MAC, e.g. binary weights on float inputs (larq: the MAC precision is the
  larger of the two). ABC-Net with :math:`M` weight bases and :math:`N` activation bases does
  :math:`M \cdot N` binary convolutions: :math:`M N` binary MACs per MAC (when not binary, its
  bases fold into one float weight and one float input: 1 float MAC per MAC).
* *Input precision*: 1 if the layer has a binary ``input_quantizer`` (``precision == 1``; for
  ABC-Net it binarises each activation base), else 32.
* *Weights by bit width* (what inference stores): the ``weight`` of a layer whose
  ``weight_quantizer`` has ``precision == 1`` counts as 1-bit numbers, every other parameter as
  32-bit (bias, BatchNorm, learnable thresholds, shifts and scales). ABC-Net stores :math:`M` bit
  planes (:math:`M \cdot` ``weight.numel()`` 1-bit numbers; its scales :math:`\alpha`,
  ``weight_scales``, and activation shifts and scales are parameters, counted as 32-bit; the
  fixed ``weight_shifts`` buffer is not needed once the planes are stored). XNOR-Net and
  magnitude-aware weights also store one scale :math:`\alpha_o = \operatorname{mean}|W_o|` per
  output channel (32-bit), which is not a parameter. So these counts can differ from
  ``params`` (the ``nn.Parameter`` elements torch counts).
* *BatchNorm*: its affine ``weight`` and ``bias`` (:math:`2C`) are counted as 32-bit numbers;
  ``running_mean``/``running_var`` are buffers and are not counted, because at inference they
  fold with weight and bias into one scale and one shift per channel (larq counts the same
  :math:`2C` by fusing the pairs). No other buffer is counted.
* *Memory*: packed = 1 bit per binary number + 32 bits per float number (no padding of rows to
  64-bit words); float32 = 32 bits per parameter. Compression ratio = float32 / packed.

**Cost model** (stated in ``str(summary)`` as well): one 64-bit XNOR-popcount word operation does
``binary_ops_per_float_op`` (default 64) binary MACs in the time of one float MAC, so

.. math::
    \text{speed-up} = \frac{\text{MACs of the float model}}
                           {\text{32-bit MACs} + \text{1-bit MACs} / r}, \qquad r = 64

(Bi-Real Net divides binary operations by 64; XNOR-Net's "58x" counts ~64 binary operations per
float operation with its scaling overhead; pass ``binary_ops_per_float_op=58`` to use it). It
ignores memory traffic and non-MAC layers: a real kernel rarely reaches it (see
:mod:`bnnlab.bench`).

Examples::

    >>> from bnnlab.layers import BinaryLinear
    >>> s = summary(nn.Sequential(nn.Linear(10, 4), nn.BatchNorm1d(4), BinaryLinear(4, 2)), (10,))
    >>> s.records[2].binary_macs, s.total_macs
    (8, 48)
    >>> print(s)  # doctest: +SKIP
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn
from torch.nn.parameter import is_lazy

from bnnlab import layers as _layers
from bnnlab import quantizers as _quantizers

__all__ = ["LayerRecord", "Summary", "summary"]

_MAC_TYPES = (nn.Linear, nn.modules.conv._ConvNd)


@dataclass(frozen=True)
class LayerRecord:
    """One row of a :class:`Summary` (all counts for one sample, i.e. batch 1).

    Attributes:
        name: the module's name in ``model.named_modules()`` (``""`` for the model itself).
        type: its class name.
        output_shape: shape of its (first tensor) output without the batch dimension, ``None``
            if it was not called in the forward pass.
        input_precision: ``1`` if its input is binarised by the layer, else ``32``.
        weight_bits: numbers stored for inference by bit width, ``{1: n1, 32: n32}`` (both keys
            always present; other widths if a quantizer has another precision).
        params: ``nn.Parameter`` elements owned by the layer (shared parameters counted once).
        trainable_params: those with ``requires_grad``.
        macs: MACs of the float-equivalent layer.
        binary_macs: 1-bit (XNOR-popcount) MACs.
        float_macs: 32-bit MACs.
        calls: how many times the forward pass called it.
    """

    name: str
    type: str
    output_shape: tuple[int, ...] | None
    input_precision: int
    weight_bits: dict[int, int]
    params: int
    trainable_params: int
    macs: int
    binary_macs: int
    float_macs: int
    calls: int

    @property
    def memory_bits(self) -> int:
        """Packed storage in bits: sum of bit width x count."""
        return sum(bits * n for bits, n in self.weight_bits.items())

    @property
    def memory_bytes(self) -> float:
        """Packed storage in bytes (``memory_bits / 8``)."""
        return self.memory_bits / 8

    @property
    def float32_bytes(self) -> int:
        """Storage if every parameter were float32 (``4 * params``)."""
        return 4 * self.params

    def to_row(self) -> dict[str, Any]:
        """Plain dict (``weight_bits`` flattened to ``weights_1bit``, ``weights_32bit``, ...)."""
        row: dict[str, Any] = {
            "name": self.name, "type": self.type,
            "output_shape": None if self.output_shape is None else list(self.output_shape),
            "input_precision": self.input_precision,
        }
        for bits in sorted(self.weight_bits):
            row[f"weights_{bits}bit"] = self.weight_bits[bits]
        row.update(params=self.params, trainable_params=self.trainable_params,
                   memory_bytes=self.memory_bytes, float32_bytes=self.float32_bytes,
                   macs=self.macs, binary_macs=self.binary_macs, float_macs=self.float_macs,
                   calls=self.calls)
        return row


@dataclass(frozen=True)
class Summary:
    """Result of :func:`summary`: per-layer records, totals and a readable ``__str__``.

    Attributes:
        records: one :class:`LayerRecord` per layer, in ``named_modules()`` order.
        input_shape: the shape of one sample (no batch dimension).
        binary_ops_per_float_op: :math:`r` of the cost model (module docstring).
    """

    records: tuple[LayerRecord, ...]
    input_shape: tuple[int, ...]
    binary_ops_per_float_op: float = 64.0

    # ------------------------------------------------------------------ totals
    @property
    def total_params(self) -> int:
        """All parameters of the model (each shared parameter once)."""
        return sum(r.params for r in self.records)

    @property
    def trainable_params(self) -> int:
        return sum(r.trainable_params for r in self.records)

    @property
    def weight_bits(self) -> dict[int, int]:
        """Stored numbers by bit width, summed over the layers."""
        out = {1: 0, 32: 0}
        for r in self.records:
            for b, n in r.weight_bits.items():
                out[b] = out.get(b, 0) + n
        return out

    @property
    def memory_bits(self) -> int:
        return sum(r.memory_bits for r in self.records)

    @property
    def memory_bytes(self) -> float:
        """Model size with binary weights packed 1 bit each (theoretical, no word padding)."""
        return self.memory_bits / 8

    @property
    def float32_bytes(self) -> int:
        """Model size with every parameter in float32."""
        return sum(r.float32_bytes for r in self.records)

    @property
    def compression_ratio(self) -> float:
        """``float32_bytes / memory_bytes`` (``nan`` for a model without parameters)."""
        return self.float32_bytes / self.memory_bytes if self.memory_bits else math.nan

    @property
    def total_macs(self) -> int:
        """MACs of the float-equivalent model (one sample)."""
        return sum(r.macs for r in self.records)

    @property
    def binary_macs(self) -> int:
        return sum(r.binary_macs for r in self.records)

    @property
    def float_macs(self) -> int:
        return sum(r.float_macs for r in self.records)

    @property
    def binary_mac_ratio(self) -> float:
        """Share of MACs that are binary: ``binary / (binary + float)`` (``nan`` if none)."""
        n = self.binary_macs + self.float_macs
        return self.binary_macs / n if n else math.nan

    @property
    def speedup(self) -> float:
        """Cost-model speed-up: ``total_macs / (float_macs + binary_macs / r)`` (``nan`` if no
        MACs)."""
        cost = self.float_macs + self.binary_macs / self.binary_ops_per_float_op
        return self.total_macs / cost if cost else math.nan

    def totals(self) -> dict[str, Any]:
        """The total rows as a dict."""
        return {
            "total_params": self.total_params,
            "trainable_params": self.trainable_params,
            "non_trainable_params": self.total_params - self.trainable_params,
            **{f"weights_{b}bit": n for b, n in sorted(self.weight_bits.items())},
            "memory_bytes": self.memory_bytes,
            "float32_bytes": self.float32_bytes,
            "compression_ratio": self.compression_ratio,
            "total_macs": self.total_macs,
            "binary_macs": self.binary_macs,
            "float_macs": self.float_macs,
            "binary_mac_ratio": self.binary_mac_ratio,
            "speedup": self.speedup,
            "binary_ops_per_float_op": self.binary_ops_per_float_op,
        }

    def to_rows(self) -> list[dict[str, Any]]:
        """One plain dict per layer (see :meth:`LayerRecord.to_row`), e.g. for a DataFrame."""
        rows = [r.to_row() for r in self.records]
        widths = self.weight_bits
        for row in rows:  # every row has every bit-width column
            for b in widths:
                row.setdefault(f"weights_{b}bit", 0)
        return rows

    def to_dict(self) -> dict[str, Any]:
        """``{"input_shape", "binary_ops_per_float_op", "records", "totals"}`` (plain types)."""
        return {"input_shape": list(self.input_shape),
                "binary_ops_per_float_op": self.binary_ops_per_float_op,
                "records": self.to_rows(), "totals": self.totals()}

    # ------------------------------------------------------------------ printing
    def __str__(self) -> str:
        widths = sorted(self.weight_bits)
        header = ["Layer", "Input prec.", "Outputs", *[f"# {b}-bit" for b in widths],
                  "Memory (KiB)", "1-bit MACs", "32-bit MACs"]
        body = []
        for r in self.records:
            shape = "-" if r.output_shape is None else str((-1, *r.output_shape))
            label = f"{r.name} ({r.type})" if r.name else f"({r.type})"
            body.append([label, str(r.input_precision), shape,
                         *[_int(r.weight_bits.get(b, 0)) for b in widths],
                         f"{r.memory_bytes / 1024:.2f}", _int(r.binary_macs), _int(r.float_macs)])
        total = self.weight_bits
        body.append(["Total", "", "", *[_int(total.get(b, 0)) for b in widths],
                     f"{self.memory_bytes / 1024:.2f}", _int(self.binary_macs),
                     _int(self.float_macs)])
        cols = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

        def fmt(row):
            return " | ".join(c.ljust(w) if i == 0 else c.rjust(w)
                              for i, (c, w) in enumerate(zip(row, cols, strict=True)))

        rule = "-+-".join("-" * w for w in cols)
        lines = [fmt(header), rule, *[fmt(r) for r in body[:-1]], rule, fmt(body[-1]), ""]
        ratio = self.binary_ops_per_float_op
        r_text = f"{ratio:g}"
        stats = [
            ("Total params", _int(self.total_params)),
            ("Trainable params", _int(self.trainable_params)),
            ("Non-trainable params", _int(self.total_params - self.trainable_params)),
            ("Model size (packed)", f"{self.memory_bytes / 1024:.2f} KiB "
                                    f"({_bytes(self.memory_bytes)} bytes)"),
            ("Model size (float32)", f"{self.float32_bytes / 1024:.2f} KiB "
                                     f"({self.float32_bytes:,} bytes)"),
            ("Compression ratio of memory", _ratio(self.compression_ratio)),
            ("Number of MACs (float model)", _int(self.total_macs)),
            ("  1-bit / 32-bit MACs", f"{_int(self.binary_macs)} / {_int(self.float_macs)}"),
            ("Ratio of MACs that are binarised", _ratio(self.binary_mac_ratio, 4)),
            ("Estimated speed-up (cost model)", _ratio(self.speedup) + "x"
             if not math.isnan(self.speedup) else "n/a"),
        ]
        w = max(len(k) for k, _ in stats)
        lines += [f"{k.ljust(w)}  {v}" for k, v in stats]
        lines += [
            "",
            f"Cost model: speed-up = MACs / (32-bit MACs + 1-bit MACs / {r_text}), i.e. one "
            f"XNOR-popcount word op",
            f"  = {r_text} binary MACs = one float MAC (Bi-Real Net divides by 64; XNOR-Net's "
            "58x: binary_ops_per_float_op=58);",
            "  memory traffic and non-MAC layers are ignored.",
            "Memory: 1 bit per binary weight, 32 bits per other parameter (BatchNorm: weight and "
            "bias;",
            "  running stats fold into them), no padding to 64-bit words; 1 KiB = 1024 bytes.",
            f"Counts per sample: input shape {(-1, *self.input_shape)}, batch 1 in the pass.",
        ]
        return "\n".join(lines)

    def _repr_pretty_(self, p, cycle):  # IPython shows the table
        p.text(str(self))


def _int(n: int) -> str:
    return f"{n:,}"


def _bytes(x: float) -> str:
    return f"{x:,.0f}" if float(x).is_integer() else f"{x:,.3f}"


def _ratio(x: float, digits: int = 2) -> str:
    return "n/a" if math.isnan(x) else f"{x:.{digits}f}"


# ---------------------------------------------------------------------------- counting
def _precision(quantizer: Any) -> int:
    if quantizer is None:
        return 32
    p = getattr(quantizer, "precision", None)
    return int(p) if isinstance(p, numbers.Integral) and not isinstance(p, bool) else 32


def _family(module: nn.Module, *names: str) -> bool:
    classes = tuple(c for c in (getattr(_layers, n, None) for n in names) if isinstance(c, type))
    return bool(classes) and isinstance(module, classes)


def _is_abc(module: nn.Module) -> bool:
    return _family(module, "AbcLinear", "AbcConv1d", "AbcConv2d")


def _weight_precision(module: nn.Module) -> int:
    return _precision(getattr(module, "weight_quantizer", None))


def _weight_bases(module: nn.Module) -> int:
    """M: binary weight planes stored per weight (ABC-Net with binary weights), else 1."""
    if _is_abc(module) and _weight_precision(module) == 1:
        return int(cast(int, module.num_weight_bases))
    return 1


def _act_bases(module: nn.Module) -> int:
    """N: binary activation bases (ABC-Net), else 1."""
    return int(cast(int, module.num_act_bases)) if _is_abc(module) else 1


def _derived_scales(module: nn.Module) -> int:
    """32-bit numbers that binary inference stores but that are not parameters: XNOR-Net's and
    the magnitude-aware sign's alpha_o = mean|W_o| (one per output channel). ABC-Net's alpha
    is a parameter (``weight_scales``), already counted."""
    if _weight_precision(module) != 1:
        return 0
    per_channel = _family(module, "XnorLinear", "XnorConv1d", "XnorConv2d") or isinstance(
        getattr(module, "weight_quantizer", None), _quantizers.MagnitudeAwareSign)
    return int(cast(torch.Tensor, module.weight).shape[0]) if per_channel else 0


def _check_input_shape(input_shape: Any) -> tuple[int, ...]:
    if not isinstance(input_shape, tuple | list | torch.Size):
        raise TypeError(f"input_shape must be a tuple of positive ints (one sample, without the "
                        f"batch dimension); got {type(input_shape).__name__}")
    if len(input_shape) == 0:
        raise ValueError("input_shape must not be empty (one sample's shape, without the batch "
                         "dimension)")
    out = []
    for d in input_shape:
        if isinstance(d, bool) or not isinstance(d, numbers.Integral):
            raise TypeError(f"input_shape must contain ints; got {d!r} in {input_shape!r}")
        if d < 1:
            raise ValueError(f"input_shape must contain positive ints; got {tuple(input_shape)}")
        out.append(int(d))
    return tuple(out)


def _first_tensor(obj: Any) -> torch.Tensor | None:
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, Sequence) and not isinstance(obj, str):
        for item in obj:
            t = _first_tensor(item)
            if t is not None:
                return t
    return None


def summary(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    binary_ops_per_float_op: float = 64,
    dtype: torch.dtype | None = None,
) -> Summary:
    r"""Count bits, memory and MACs of ``model`` layer by layer (larq's ``models.summary``).

    Runs ``model(torch.zeros(1, *input_shape))`` once in eval mode under ``torch.no_grad()``
    with forward hooks, then restores every module's ``training`` flag and the global RNG state.
    The model is not otherwise changed (no BatchNorm statistics are updated).

    Layers listed: every ``nn.Linear``/``nn.Conv*d`` (with its quantizers, whose parameters it
    owns), every leaf module, and every container that owns parameters directly. See the module
    docstring for what is counted and the cost model.

    Args:
        model: the model (an ``nn.Module``).
        input_shape: shape of **one sample, without the batch dimension**, e.g. ``(1, 28, 28)``
            for MNIST images (the pass uses batch 1, so the counts are per sample).
        binary_ops_per_float_op: :math:`r`, binary MACs per float MAC in the cost model
            (64: one 64-bit XNOR-popcount word; XNOR-Net's estimate corresponds to 58).
            Default: ``64``.
        dtype: dtype of the zero input. Default: the dtype of the model's first floating-point
            parameter, else ``torch.float32``.

    Returns:
        A :class:`Summary`; ``print(summary(...))`` shows the table.

    Raises:
        TypeError/ValueError: a bad argument (the message names it); ``ValueError`` naming
        ``input_shape`` if the forward pass fails (e.g. a batch dimension was included).

    Examples::

        >>> from bnnlab.layers import BinaryLinear
        >>> s = summary(nn.Sequential(nn.Flatten(), BinaryLinear(784, 10)), (1, 28, 28))
        >>> s.binary_macs, s.memory_bytes          # 7840 1-bit weights + 10 float biases
        (7840, 1020.0)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module; got {type(model).__name__}")
    shape = _check_input_shape(input_shape)
    r = binary_ops_per_float_op
    if isinstance(r, bool) or not isinstance(r, numbers.Real):
        raise TypeError(f"binary_ops_per_float_op must be a positive number; got "
                        f"{type(r).__name__}")
    if not (math.isfinite(r) and r > 0):
        raise ValueError(f"binary_ops_per_float_op must be a positive finite number; got {r!r}")
    if dtype is not None and not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype or None; got {type(dtype).__name__}")

    params = list(model.parameters())
    device = params[0].device if params else torch.device("cpu")
    if dtype is None:
        dtype = next((p.dtype for p in params if not is_lazy(p) and p.is_floating_point()),
                     torch.float32)

    # --- which modules get a record
    recorded: dict[str, nn.Module] = {}
    mac_prefixes: list[str] = []
    for name, mod in model.named_modules():
        if any(name == p or name.startswith(p + ".") or p == "" for p in mac_prefixes):
            continue  # inside a Linear/Conv (its quantizers): the layer owns them
        is_mac = isinstance(mod, _MAC_TYPES)
        if (is_mac or not any(True for _ in mod.children())
                or any(True for _ in mod.parameters(recurse=False))):
            recorded[name] = mod
        if is_mac:
            mac_prefixes.append(name)

    # --- hooks
    stats: dict[str, dict[str, Any]] = {n: {"calls": 0, "shape": None, "macs": 0}
                                        for n in recorded}

    def make_hook(name: str, mod: nn.Module):
        def hook(module, inputs, output):
            st = stats[name]
            st["calls"] += 1
            out = _first_tensor(output)
            if st["shape"] is None and out is not None:
                st["shape"] = tuple(out.shape[1:]) if out.dim() else ()
            if isinstance(module, _MAC_TYPES):
                k = module.weight[0].numel()
                if isinstance(module, nn.modules.conv._ConvTransposeNd):
                    x = _first_tensor(inputs)
                    st["macs"] += (x.numel() if x is not None else 0) * k
                elif out is not None:
                    st["macs"] += out.numel() * k
        return hook

    handles = [mod.register_forward_hook(make_hook(n, mod)) for n, mod in recorded.items()]
    modes = {mod: mod.training for mod in model.modules()}
    cuda = [device] if device.type == "cuda" else []
    try:
        model.eval()
        with torch.no_grad(), torch.random.fork_rng(devices=cuda):
            try:
                model(torch.zeros((1, *shape), dtype=dtype, device=device))
            except (RuntimeError, ValueError, TypeError, IndexError) as exc:
                raise ValueError(
                    f"the forward pass on torch.zeros(1, *input_shape) failed for "
                    f"input_shape={shape}: {exc} (input_shape is one sample's shape, without "
                    f"the batch dimension)") from exc
    finally:
        for h in handles:
            h.remove()
        for mod, mode in modes.items():
            mod.training = mode

    # --- owner record of every parameter (nearest recorded ancestor-or-self); shared once
    owner_params: dict[str, list[tuple[str, nn.Parameter]]] = {n: [] for n in recorded}
    seen: set[int] = set()
    names_by_len = sorted(recorded, key=len, reverse=True)
    for mname, mod in model.named_modules():
        for pname, p in mod.named_parameters(recurse=False):
            if id(p) in seen or is_lazy(p):  # a lazy parameter never called has no size yet
                continue
            seen.add(id(p))
            owner = next(n for n in names_by_len
                         if n == "" or mname == n or mname.startswith(n + "."))
            owner_params[owner].append((f"{mname}.{pname}" if mname else pname, p))

    records = []
    for name, mod in recorded.items():
        st = stats[name]
        weight_bits: dict[int, int] = {1: 0, 32: 0}
        n_params = n_train = 0
        is_mac = isinstance(mod, _MAC_TYPES)
        w_prec = _weight_precision(mod) if is_mac else 32
        own_weight = getattr(mod, "weight", None) if is_mac else None
        for _, p in owner_params[name]:
            n_params += p.numel()
            n_train += p.numel() if p.requires_grad else 0
            if p is own_weight and w_prec != 32:
                weight_bits[w_prec] = weight_bits.get(w_prec, 0) + _weight_bases(mod) * p.numel()
            else:
                weight_bits[32] += p.numel()
        if is_mac:
            weight_bits[32] += _derived_scales(mod)
        in_prec = _precision(getattr(mod, "input_quantizer", None))
        macs = st["macs"]
        binary = is_mac and in_prec == 1 and w_prec == 1
        records.append(LayerRecord(
            name=name, type=type(mod).__name__, output_shape=st["shape"],
            input_precision=in_prec, weight_bits=weight_bits, params=n_params,
            trainable_params=n_train, macs=macs,
            binary_macs=macs * _weight_bases(mod) * _act_bases(mod) if binary else 0,
            float_macs=0 if binary else macs, calls=st["calls"]))
    return Summary(tuple(records), shape, float(r))
