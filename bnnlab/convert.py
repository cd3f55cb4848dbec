r"""Binarise an existing float model by policy.

:func:`binarize` deep-copies a model and replaces its ``nn.Linear``, ``nn.Conv1d`` and
``nn.Conv2d`` layers by the binary layers of one family, copying their weights;
:func:`binarize_with_report` does the same and also returns a :class:`ConversionReport` that says,
layer by layer, what changed and why the others were left alone.

Which layers are considered ("weight layers"), in the order of ``model.named_modules()``
(registration order, **not** forward order: write your ``__init__`` in forward order, as
``nn.Sequential`` does, for "first" and "last" to mean what you expect):

* ``nn.Linear``, ``nn.Conv1d``, ``nn.Conv2d`` (exactly these types) are **candidates**;
* every other weight layer (``nn.Bilinear``, any other convolution such as ``nn.Conv3d`` or
  ``nn.ConvTranspose2d``, ``nn.RNN``/``nn.LSTM``/``nn.GRU`` and their cells,
  ``nn.MultiheadAttention``, and *subclasses* of the candidate types, e.g. parametrized or
  lazy layers, whose ``forward`` may differ) is left alone and reported as ``"unsupported"``;
* layers that already carry a ``weight_quantizer`` (bnnlab's binary layers) are reported as
  ``"already binary"`` and left as they are.

"First" and "last" are the first and last weight layers of that list (whatever their type), so
a model whose first layer is an ``nn.Conv3d`` keeps nothing else float by accident. A module
registered under several names (shared weights) is converted once and replaced under every name,
so the sharing survives; a ``weight``/``bias`` parameter shared with another module keeps being
shared (the new layer reuses the very same ``nn.Parameter``).

Precedence of the rules for one candidate layer: unsupported by the family
> ``exclude`` > ``keep_first``/``keep_last`` > ``include``.

A pitfall it warns about: sign(ReLU(x)) is always +1. When a binarised layer directly follows a
never-negative activation (``ReLU``, ``ReLU6``, ``Sigmoid``, ``Softplus``, ``Hardsigmoid``,
``Softmax``; possibly through pooling, dropout or flatten) in an ``nn.Sequential`` and the input
quantizer is a sign at 0 (not ABC-Net, whose activation bases have learned shifts), the row's
reason says so and a ``UserWarning`` is issued (unless
``verbose``): such a layer sees the same input for every sample. Train the float model with
``hardtanh`` instead. This static check sees only ``nn.Sequential`` order, not custom ``forward``
code; pass ``example_input=`` (a small batch) to probe the binarised model instead: forward
hooks then find every binary layer whose binarised input is constant over the batch, whatever
the code structure (a ReLU inside a block's ``forward``, or data in [0, 1] reaching a binarised
first layer), and one ``UserWarning`` names them all.

Examples::

    >>> float_mlp = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.BatchNorm1d(256),
    ...                           nn.Linear(256, 256), nn.BatchNorm1d(256), nn.Linear(256, 10))
    >>> model, report = binarize_with_report(float_mlp)
    >>> [row.status for row in report]
    ['kept', 'binarized', 'kept']
    >>> print(report)  # doctest: +SKIP
    (one row per weight layer: name, old type, new type, status, reason)
"""
from __future__ import annotations

import copy
import inspect
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any, cast

import torch
from torch import Tensor, nn

from bnnlab import layers as _layers
from bnnlab import quantizers as _quantizers
from bnnlab._validation import check_bool, check_choice, check_instance, check_real

__all__ = [
    "FAMILIES",
    "ConversionReport",
    "LayerChange",
    "binarize",
    "binarize_with_report",
]

#: Binary layer families: ``layer=`` name -> {torch type: name of the class in ``bnnlab.layers``}.
#: A family without a class for a type (e.g. XNOR-Net has no ``Conv1d``) leaves such layers
#: float and reports them as unsupported.
FAMILIES: dict[str, dict[type[nn.Module], str]] = {
    "binary": {nn.Linear: "BinaryLinear", nn.Conv1d: "BinaryConv1d", nn.Conv2d: "BinaryConv2d"},
    "xnor": {nn.Linear: "XnorLinear", nn.Conv1d: "XnorConv1d", nn.Conv2d: "XnorConv2d"},
    "xnor++": {nn.Linear: "XnorPlusLinear", nn.Conv1d: "XnorPlusConv1d",
               nn.Conv2d: "XnorPlusConv2d"},
    "abc": {nn.Linear: "AbcLinear", nn.Conv1d: "AbcConv1d", nn.Conv2d: "AbcConv2d"},
}

_CANDIDATE_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d)
# Layers that do multiply-accumulates with a weight but that no family converts.
_OTHER_WEIGHT_LAYERS = (
    nn.Bilinear, nn.modules.conv._ConvNd, nn.RNNBase, nn.RNNCellBase, nn.MultiheadAttention,
)

BINARIZED, KEPT, UNSUPPORTED, ALREADY_BINARY = "binarized", "kept", "unsupported", "already binary"

# Input quantizers whose forward is sign(x) (times a positive scale) with the threshold at 0: on an
# input that is never negative they always give +1. (Heaviside, RSign's learnable threshold and
# the stochastic sign's noise in training still see something.)
_SIGN_AT_ZERO = (_quantizers.SteSign, _quantizers.ApproxSign, _quantizers.SwishSign,
                 _quantizers.MagnitudeAwareSign, _quantizers.ScaledSign)
# Activations whose output is never negative, and modules that keep a non-negative input so.
_NON_NEGATIVE = (nn.ReLU, nn.ReLU6, nn.Sigmoid, nn.Softplus, nn.Hardsigmoid, nn.Softmax)
_KEEPS_SIGN = (nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d,
               nn.AlphaDropout, nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d,
               nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d,
               nn.AdaptiveMaxPool2d)
CONSTANT_INPUT = "its input follows a {act}: never negative, so sign(input) is always +1"


@dataclass(frozen=True)
class LayerChange:
    """One row of a :class:`ConversionReport`: what :func:`binarize` did with one weight layer.

    Attributes:
        name: the module's name in ``model.named_modules()`` (first name if it has several).
        old_type: class name before the conversion, e.g. ``"Linear"``.
        new_type: class name after it (equal to ``old_type`` when the layer was left alone).
        status: ``"binarized"``, ``"kept"`` (left float on purpose), ``"unsupported"`` (left
            float because no binary layer of the family reproduces it) or ``"already binary"``.
        reason: why, in words (``""`` for a plain conversion).
        aliases: other names under which the same module is registered.
    """

    name: str
    old_type: str
    new_type: str
    status: str
    reason: str = ""
    aliases: tuple[str, ...] = ()

    @property
    def converted(self) -> bool:
        """``True`` if the layer was replaced by a binary layer."""
        return self.status == BINARIZED


@dataclass(frozen=True)
class ConversionReport:
    """What :func:`binarize_with_report` changed, one :class:`LayerChange` per weight layer.

    Iterating yields the rows in registration order; ``report["fc1"]`` looks one up by name.
    ``str(report)`` is a readable table; :meth:`to_rows` gives plain dicts for tables/plots.

    Attributes:
        layer: the family used (``"binary"``, ``"xnor"``, ``"xnor++"`` or ``"abc"``).
        rows: the rows, in ``named_modules()`` order.
        settings: the other arguments of the call, as ``repr`` strings.
    """

    layer: str
    rows: tuple[LayerChange, ...]
    settings: dict[str, str] = field(default_factory=dict)

    def __iter__(self) -> Iterator[LayerChange]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, name: str) -> LayerChange:
        for row in self.rows:
            if row.name == name or name in row.aliases:
                return row
        raise KeyError(name)

    def _names(self, status: str) -> list[str]:
        return [row.name for row in self.rows if row.status == status]

    @property
    def converted(self) -> list[str]:
        """Names of the layers replaced by binary layers."""
        return self._names(BINARIZED)

    @property
    def kept(self) -> list[str]:
        """Names of the layers left float on purpose (first/last, include/exclude)."""
        return self._names(KEPT)

    @property
    def unsupported(self) -> list[str]:
        """Names of the weight layers left float because the family cannot reproduce them."""
        return self._names(UNSUPPORTED)

    @property
    def already_binary(self) -> list[str]:
        """Names of the layers that were binary before the call."""
        return self._names(ALREADY_BINARY)

    def to_rows(self) -> list[dict[str, Any]]:
        """The rows as plain dicts (keys: the :class:`LayerChange` fields)."""
        return [asdict(row) for row in self.rows]

    def __str__(self) -> str:
        head = (f"binarize(layer={self.layer!r}): {len(self.converted)} of {len(self.rows)} "
                f"weight layers binarized, {len(self.kept)} kept float, "
                f"{len(self.unsupported)} unsupported, {len(self.already_binary)} already binary")
        if self.settings:
            head += "\n  " + ", ".join(f"{k}={v}" for k, v in self.settings.items())
        if not self.rows:
            return head + "\n  (the model has no weight layers)"
        table = [("Layer", "Old type", "New type", "Status", "Reason")]
        for row in self.rows:
            name = row.name + (f" (= {', '.join(row.aliases)})" if row.aliases else "")
            table.append((name, row.old_type, row.new_type, row.status, row.reason))
        widths = [max(len(r[i]) for r in table) for i in range(5)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return head + "\n" + "\n".join(lines)

    def _repr_pretty_(self, p, cycle):  # IPython shows the table
        p.text(str(self))


# --------------------------------------------------------------------------- validation
def _check_quantizer(spec: Any, argname: str) -> None:
    if spec is None or isinstance(spec, nn.Module):
        return
    if isinstance(spec, str):
        if spec not in _quantizers.BY_NAME:
            raise ValueError(f"{argname}={spec!r} is not a known quantizer; choose one of "
                             f"{sorted(_quantizers.BY_NAME)}, a quantizer module/class or None")
        return
    if isinstance(spec, type) and issubclass(spec, nn.Module):
        return
    raise TypeError(f"{argname} must be a quantizer name, an nn.Module instance or class, "
                    f"or None; got {type(spec).__name__}")


def _check_selector(sel: Any, argname: str, known: set[str]) -> Any:
    """Normalise include/exclude to None, a predicate, or a frozenset of names."""
    if sel is None or callable(sel):
        return sel
    if isinstance(sel, str):
        sel = [sel]
    if not isinstance(sel, Iterable):
        raise TypeError(f"{argname} must be None, a module name, an iterable of module names or a "
                        f"predicate (name, module) -> bool; got {type(sel).__name__}")
    names = list(sel)
    for n in names:
        if not isinstance(n, str):
            raise TypeError(f"{argname} must contain module names (str); got {n!r}")
        if n not in known:
            raise ValueError(f"{argname}: {n!r} is not the name of a module of the model "
                             f"(names are those of model.named_modules())")
    return frozenset(names)


def _selected(sel: Any, names: tuple[str, ...], module: nn.Module) -> bool:
    if callable(sel):
        return any(bool(sel(n, module)) for n in names)
    # a name selects itself and everything inside it ("features" selects "features.0")
    return any(n == s or n.startswith(s + ".") for n in names for s in sel)


# --------------------------------------------------------------------------- building
def _in_channels(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return module.in_features
    return int(cast(int, module.in_channels))


def _make_quantizer(spec: Any, module: nn.Module) -> Any:
    """A fresh quantizer spec for one layer: modules are deep-copied (never shared between
    layers); a quantizer that needs ``num_channels`` (``"rsign"``) is built for this layer."""
    if isinstance(spec, nn.Module):
        return copy.deepcopy(spec)
    cls = _quantizers.BY_NAME[spec] if isinstance(spec, str) else spec
    if isinstance(cls, type):
        try:
            params = inspect.signature(cls).parameters
        except (TypeError, ValueError):  # pragma: no cover - builtin signature
            return spec
        p = params.get("num_channels")
        if p is not None and p.default is inspect.Parameter.empty:
            factory = {k: getattr(module.weight, k) for k in ("device", "dtype") if k in params}
            return cls(num_channels=_in_channels(module), **factory)
    return spec


def _accepts(fn: Any, name: str) -> bool:
    """Whether callable ``fn`` (a class: its ``__init__``) takes keyword ``name``."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # pragma: no cover - no signature: let the call decide
        return True
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _ctor_args(old: nn.Module) -> tuple[tuple, dict]:
    factory = {"device": old.weight.device, "dtype": old.weight.dtype}
    if isinstance(old, nn.Linear):
        return (old.in_features, old.out_features), {"bias": old.bias is not None, **factory}
    return ((old.in_channels, old.out_channels, old.kernel_size),
            {"stride": old.stride, "padding": old.padding, "dilation": old.dilation,
             "groups": old.groups, "bias": old.bias is not None,
             "padding_mode": old.padding_mode, **factory})


def _build(cls: type, old: nn.Module, kw: dict[str, Any]) -> nn.Module:
    from_float = getattr(cls, "from_float", None)
    if callable(from_float):
        new = from_float(old, **kw)
    else:
        args, ctor_kw = _ctor_args(old)
        new = cls(*args, **ctor_kw, **kw)
        new.weight.data.copy_(old.weight.data)
        if old.bias is not None:
            new.bias.data.copy_(old.bias.data)
    # Reuse the very Parameter objects when from_float copied them unchanged: keeps weight
    # tying with other modules and the requires_grad flags.
    for pname in ("weight", "bias"):
        p_old, p_new = getattr(old, pname, None), getattr(new, pname, None)
        if (isinstance(p_old, nn.Parameter) and isinstance(p_new, nn.Parameter)
                and p_new is not p_old and p_new.shape == p_old.shape
                and p_new.dtype == p_old.dtype and p_new.device == p_old.device
                and bool((p_new.detach() == p_old.detach()).all())):
            setattr(new, pname, p_old)
    new.train(old.training)
    return new


def _unsupported_reason(module: nn.Module, family: str, pad_value: float) -> str | None:
    """Why ``module`` (a candidate type) cannot be converted, or ``None``."""
    cls_name = FAMILIES[family][type(module)]
    if getattr(_layers, cls_name, None) is None:
        return f"family {family!r} has no {type(module).__name__} layer ({cls_name})"
    if isinstance(module, nn.Conv1d | nn.Conv2d):
        if module.padding_mode != "zeros" and pad_value != 0.0:
            return (f"padding_mode={module.padding_mode!r} cannot be combined with "
                    f"pad_value={pad_value}")
    return None


# --------------------------------------------------------------------------- public API
_DOC_ARGS = r"""
    Args:
        model: the float model (an ``nn.Module``).
        layer: binary family: ``"binary"`` (BinaryNet: :class:`~bnnlab.layers.BinaryLinear`,
            ``BinaryConv1d``, ``BinaryConv2d``), ``"xnor"`` (XNOR-Net), ``"xnor++"``
            (XNOR-Net++) or ``"abc"`` (ABC-Net); see :data:`FAMILIES`. Default: ``"binary"``.
        keep_first: keep the first weight layer float (it sees the real input).
            Default: ``True``.
        keep_last: keep the last weight layer float (it produces the logits).
            Default: ``True``.
        input_quantizer: quantizer of the layer inputs: a name of
            :data:`bnnlab.quantizers.BY_NAME`, a quantizer class, a module (deep-copied for
            each layer, never shared) or ``None`` (float inputs, e.g. binary-weight networks).
            A quantizer class with a required ``num_channels`` argument (``"rsign"``) is built
            with the layer's input channels. Default: ``"ste_sign"``.
        weight_quantizer: quantizer of the weights, same forms. Default: ``"ste_sign"``.
        include: which layers to binarise: ``None`` (all), a module name, an iterable of
            names (a container's name selects every layer inside it) or a predicate
            ``(name, module) -> bool``. Unknown names raise ``ValueError``. Default: ``None``.
        exclude: which layers never to binarise; same forms. Default: ``None``.
        pad_value: ``pad_value`` of the binary convolutions: ``0.0`` (torch's zero padding of
            the binarised input) or ``±1.0`` (what the packed kernels compute).
            Default: ``0.0``.
        layer_kwargs: extra keyword arguments for every new layer (e.g.
            ``{"num_weight_bases": 3}`` for ``"abc"``); a key no layer of the family accepts
            raises ``ValueError``. Default: ``None``.
        example_input: ``None``, or an example batch (a tensor, or a tuple of tensors passed as
            ``model(*example_input)``) that is run once through the *binarised* model, in eval
            mode and without gradients, with a hook on every binary layer: a layer whose
            binarised input takes one value over the whole batch (an input that is never
            negative, under a sign at 0: sign(ReLU(x)) anywhere in a custom ``forward``, or
            data in [0, 1] reaching a binarised first layer) gets a reason in its row and is
            named in one ``UserWarning``. Without it only ``nn.Sequential`` order is inspected.
            Default: ``None``.
        verbose: print the report. Default: ``False``.
"""


def binarize_with_report(
    model: nn.Module,
    *,
    layer: str = "binary",
    keep_first: bool = True,
    keep_last: bool = True,
    input_quantizer: Any = "ste_sign",
    weight_quantizer: Any = "ste_sign",
    include: Any = None,
    exclude: Any = None,
    pad_value: float = 0.0,
    layer_kwargs: dict[str, Any] | None = None,
    example_input: Any = None,
    verbose: bool = False,
) -> tuple[nn.Module, ConversionReport]:
    r"""Return a binarised deep copy of ``model`` and a :class:`ConversionReport`.

    Every ``nn.Linear``/``nn.Conv1d``/``nn.Conv2d`` that the rules select (module docstring) is
    replaced by the layer of the chosen family built with the same arguments (sizes, kernel,
    stride, padding, dilation, groups, bias, padding mode, device, dtype) and the same
    ``weight`` and ``bias`` (the family's ``from_float`` when it has one). ``model`` itself is
    not modified. A replaced layer computes :math:`y = q_w(W) \star q_x(x) + b` (see
    :mod:`bnnlab.layers`), so the copy does **not** compute what the float model did: it is a
    starting point for (re)training. Layers that cannot be binarised are left float and listed
    as ``"unsupported"``, never dropped.
    {args}
    Returns:
        ``(new_model, report)``.

    Raises:
        TypeError/ValueError: a bad argument (the message names it).

    Warns:
        UserWarning: if some weight layers could not be binarised (``"unsupported"`` rows)
        and ``verbose`` is ``False``.

    Examples::

        >>> net = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3),
        ...                     nn.Flatten(), nn.Linear(8 * 24 * 24, 10))
        >>> bnet, report = binarize_with_report(net, pad_value=1.0)
        >>> report.converted
        ['2']
        >>> type(bnet[2]).__name__, type(net[2]).__name__
        ('BinaryConv2d', 'Conv2d')
    """
    return _binarize(model, layer, keep_first, keep_last, input_quantizer, weight_quantizer,
                     include, exclude, pad_value, layer_kwargs, example_input, verbose)


def binarize(
    model: nn.Module,
    *,
    layer: str = "binary",
    keep_first: bool = True,
    keep_last: bool = True,
    input_quantizer: Any = "ste_sign",
    weight_quantizer: Any = "ste_sign",
    include: Any = None,
    exclude: Any = None,
    pad_value: float = 0.0,
    layer_kwargs: dict[str, Any] | None = None,
    example_input: Any = None,
    verbose: bool = False,
) -> nn.Module:
    r"""Return a binarised deep copy of ``model`` (``model`` is not modified).

    The same as :func:`binarize_with_report` without the report: use that function to get
    the :class:`ConversionReport`, or ``verbose=True`` to print it. Layers that cannot be
    binarised are left float and announced with a ``UserWarning`` (unless ``verbose``).
    {args}
    Returns:
        The new model.

    Examples::

        >>> bnet = binarize(nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2)))
        >>> [type(m).__name__ for m in bnet]
        ['Linear', 'BinaryLinear', 'Linear']
    """
    return _binarize(model, layer, keep_first, keep_last, input_quantizer, weight_quantizer,
                     include, exclude, pad_value, layer_kwargs, example_input, verbose)[0]


binarize_with_report.__doc__ = (binarize_with_report.__doc__ or "").replace("{args}", _DOC_ARGS)
binarize.__doc__ = (binarize.__doc__ or "").replace("{args}", _DOC_ARGS)


def _is_sign_at_zero(spec: Any) -> bool:
    """Whether an ``input_quantizer`` spec (name, class or instance) is one of
    :data:`_SIGN_AT_ZERO`."""
    if isinstance(spec, str):
        cls = _quantizers.BY_NAME.get(spec)
    else:
        cls = spec if isinstance(spec, type) else type(spec)
    return cls in _SIGN_AT_ZERO


def _after_non_negative(model: nn.Module, layers: set[int]) -> dict[int, str]:
    """``{id(layer): activation name}`` for the layers of ``layers`` that, inside an
    ``nn.Sequential``, directly follow a never-negative activation (through modules that keep
    the sign, e.g. pooling, dropout, flatten). Only ``nn.Sequential`` order is known; what a
    custom ``forward`` does is not inspected."""
    found: dict[int, str] = {}
    for seq in model.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        act = None
        for child in seq:
            if id(child) in layers and act is not None:
                found[id(child)] = act
            if isinstance(child, _NON_NEGATIVE):
                act = type(child).__name__
            elif not isinstance(child, _KEEPS_SIGN):
                act = None
    return found


CONSTANT_PROBE = ("on example_input its binarised input is {value:+g} everywhere{why}: the layer "
                  "sees the same input for every sample")


def _binarized_inputs(module: nn.Module, x: Tensor) -> Tensor | None:
    """What a binary layer multiplies its weights with: the quantised input, or ABC-Net's stacked
    activation bases; ``None`` for a float input."""
    input_bases = getattr(module, "input_bases", None)
    if callable(input_bases):
        return input_bases(x)
    quantizer = getattr(module, "input_quantizer", None)
    return None if quantizer is None else quantizer(x)


def _probe_constant_inputs(model: nn.Module, args: tuple[Tensor, ...],
                           names: dict[int, str]) -> dict[str, str]:
    """Run ``model(*args)`` once (eval mode, no gradient) and return ``{name: reason}`` for each
    binary layer of ``names`` (``{id(module): name}``) whose binarised input (every ABC-Net
    activation base) took a single value over the whole batch."""
    # per layer: [min of the raw input, per-base minima, per-base maxima]
    seen: dict[int, list[Any]] = {}

    def hook(module: nn.Module, inputs: tuple[Any, ...]) -> None:
        x = inputs[0] if inputs else None
        if not isinstance(x, Tensor) or x.numel() == 0:
            return
        q = _binarized_inputs(module, x)
        if q is None:
            return
        flat = q.reshape(q.shape[0], -1) if hasattr(module, "input_bases") else q.reshape(1, -1)
        lo, hi = flat.min(dim=1).values, flat.max(dim=1).values
        old = seen.get(id(module))
        if old is None:
            seen[id(module)] = [x.min(), lo, hi]
        else:
            seen[id(module)] = [torch.minimum(old[0], x.min()), torch.minimum(old[1], lo),
                                torch.maximum(old[2], hi)]

    modes = {m: m.training for m in model.modules()}
    handles = [m.register_forward_pre_hook(hook) for m in model.modules() if id(m) in names]
    try:
        model.eval()
        with torch.no_grad():
            model(*args)
    except Exception as exc:  # noqa: BLE001 - re-raised naming the argument
        raise ValueError(f"example_input: the binarised model's forward failed on it "
                         f"({type(exc).__name__}: {exc})") from exc
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    found: dict[str, str] = {}
    for key, (xmin, lo, hi) in seen.items():
        if bool((lo == hi).all()):
            why = (f" (its input is never negative, min {float(xmin):.3g})"
                   if float(xmin) >= 0 else "")
            found[names[key]] = CONSTANT_PROBE.format(value=float(hi.max()), why=why)
    return found


def _binarize(model, layer, keep_first, keep_last, input_quantizer, weight_quantizer, include,
              exclude, pad_value, layer_kwargs, example_input, verbose):
    check_instance(model, "model", nn.Module)
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a str, one of {sorted(FAMILIES)}; got "
                        f"{type(layer).__name__}")
    check_choice(layer, "layer", sorted(FAMILIES))
    for argname, value in (("keep_first", keep_first), ("keep_last", keep_last),
                           ("verbose", verbose)):
        check_bool(value, argname)
    _check_quantizer(input_quantizer, "input_quantizer")
    _check_quantizer(weight_quantizer, "weight_quantizer")
    pad_value = check_choice(check_real(pad_value, "pad_value") + 0.0, "pad_value",
                             _layers.PAD_VALUES)
    if layer_kwargs is None:
        layer_kwargs = {}
    if not isinstance(layer_kwargs, dict) or not all(isinstance(k, str) for k in layer_kwargs):
        raise TypeError("layer_kwargs must be a dict of keyword arguments (str keys) or None")
    example_args: tuple[Tensor, ...] | None = None
    if example_input is not None:  # a batch: a tensor, or a tuple of tensors for model(*args)
        example_args = example_input if isinstance(example_input, tuple) else (example_input,)
        check_instance(example_args[0] if example_args else (), "example_input", Tensor)
        for arg in example_args:
            check_instance(arg, "example_input", Tensor)
        if example_args[0].dim() == 0 or example_args[0].shape[0] == 0:
            raise ValueError("example_input must be a non-empty batch, got shape "
                             f"{tuple(example_args[0].shape)}")
    reserved = {"input_quantizer", "weight_quantizer", "pad_value"} & set(layer_kwargs)
    if reserved:
        raise ValueError(f"layer_kwargs must not contain {sorted(reserved)}; use the "
                         f"arguments of binarize itself")
    found = {t: getattr(_layers, n, None) for t, n in FAMILIES[layer].items()}
    classes: dict[type[nn.Module], type] = {t: c for t, c in found.items() if c is not None}
    for key in layer_kwargs:
        if not any(_accepts(c, key) for c in classes.values()):
            raise ValueError(f"layer_kwargs: no layer of family {layer!r} accepts {key!r}")
    # Build one tiny layer of each class with these settings, so that a bad setting raises here
    # (naming it) instead of turning every layer into an "unsupported" row.
    for torch_type, cls in classes.items():
        probe = nn.Linear(4, 4) if torch_type is nn.Linear else torch_type(4, 4, 1)
        kw = {k: v for k, v in layer_kwargs.items() if _accepts(cls, k)}
        kw["input_quantizer"] = _make_quantizer(input_quantizer, probe)
        kw["weight_quantizer"] = _make_quantizer(weight_quantizer, probe)
        if torch_type is not nn.Linear:
            kw["pad_value"] = pad_value
        try:
            _build(cls, probe, kw)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{cls.__name__} cannot be built with layer_kwargs={layer_kwargs!r}, "
                             f"input_quantizer={_short_repr(input_quantizer)}, weight_quantizer="
                             f"{_short_repr(weight_quantizer)}: {exc}") from exc

    try:
        new_model = copy.deepcopy(model)
    except Exception as exc:  # noqa: BLE001 - re-raised with the argument's name
        raise TypeError(f"model could not be deep-copied ({exc})") from exc

    # every name of every module (a shared module appears under several names)
    names_of: dict[int, list[str]] = {}
    for name, mod in new_model.named_modules(remove_duplicate=False):
        names_of.setdefault(id(mod), []).append(name)
    known = {n for ns in names_of.values() for n in ns}
    include = _check_selector(include, "include", known)
    exclude = _check_selector(exclude, "exclude", known)

    # weight layers in registration order; what sits inside a listed one is its business
    weight_layers: list[tuple[str, nn.Module]] = []
    inside: list[str] = []
    for name, mod in new_model.named_modules():
        if any(p == "" or name.startswith(p + ".") for p in inside):
            continue
        if isinstance(mod, _CANDIDATE_TYPES + _OTHER_WEIGHT_LAYERS) or hasattr(
                mod, "weight_quantizer"):
            weight_layers.append((name, mod))
            inside.append(name)

    first = weight_layers[0][1] if weight_layers else None
    last = weight_layers[-1][1] if weight_layers else None
    # {id(layer): the never-negative activation before it}, for the sign(ReLU(x)) pitfall
    # (not ABC-Net: its activation bases sign(x + v_n) have learned shifts spread over [-1, 1])
    after_act = (_after_non_negative(new_model, {id(m) for _, m in weight_layers})
                 if layer != "abc" and example_args is None and _is_sign_at_zero(input_quantizer)
                 else {})  # with example_input, the probe below finds these (and more)
    constant: dict[str, str] = {}  # binarised layer name -> activation before it
    rows: list[LayerChange] = []
    replacements: list[tuple[tuple[str, ...], nn.Module]] = []
    for name, mod in weight_layers:
        all_names = tuple(names_of[id(mod)])
        old_type = type(mod).__name__

        def row(status: str, reason: str = "", new_type: str = old_type) -> None:
            rows.append(LayerChange(name, old_type, new_type, status, reason,  # noqa: B023
                                    all_names[1:]))  # noqa: B023

        if hasattr(mod, "weight_quantizer"):
            row(ALREADY_BINARY, "left as it is")
            continue
        if type(mod) not in _CANDIDATE_TYPES:
            base = next((t for t in _CANDIDATE_TYPES if isinstance(mod, t)), None)
            if isinstance(mod, nn.modules.lazy.LazyModuleMixin):
                row(UNSUPPORTED, "uninitialised lazy module: run a forward pass first")
            elif base is not None:
                row(UNSUPPORTED, f"subclass of nn.{base.__name__} whose forward may differ")
            else:
                row(UNSUPPORTED, f"bnnlab has no binary {old_type}")
            continue
        reason = _unsupported_reason(mod, layer, pad_value)
        if reason is not None:
            row(UNSUPPORTED, reason)
            continue
        if exclude is not None and _selected(exclude, all_names, mod):
            row(KEPT, "excluded by exclude")
            continue
        if keep_first and mod is first:
            row(KEPT, "first weight layer (keep_first=True)")
            continue
        if keep_last and mod is last:
            row(KEPT, "last weight layer (keep_last=True)")
            continue
        if include is not None and not _selected(include, all_names, mod):
            row(KEPT, "not selected by include")
            continue
        cls = getattr(_layers, FAMILIES[layer][type(mod)])
        kw = {k: v for k, v in layer_kwargs.items() if _accepts(cls, k)}
        kw["input_quantizer"] = _make_quantizer(input_quantizer, mod)
        kw["weight_quantizer"] = _make_quantizer(weight_quantizer, mod)
        if isinstance(mod, nn.Conv1d | nn.Conv2d):
            kw["pad_value"] = pad_value
        try:
            new = _build(cls, mod, kw)
        except (ValueError, NotImplementedError) as exc:
            row(UNSUPPORTED, f"{cls.__name__} refused it: {exc}")
            continue
        act = after_act.get(id(mod))
        if act is not None:
            constant[name] = act
        row(BINARIZED, "" if act is None else CONSTANT_INPUT.format(act=act), type(new).__name__)
        replacements.append((all_names, new))

    for all_names, new in replacements:
        for full in all_names:
            if full == "":  # the model itself is the layer
                new_model = new
                continue
            parent_name, _, child = full.rpartition(".")
            parent = new_model.get_submodule(parent_name) if parent_name else new_model
            setattr(parent, child, new)

    probed: dict[str, str] = {}
    if example_args is not None:
        # every binary layer of the result (converted here or already binary), by its row name
        binary_rows = {row.name for row in rows if row.status in (BINARIZED, ALREADY_BINARY)}
        ids = {id(new_model.get_submodule(n) if n else new_model): n for n in binary_rows}
        probed = _probe_constant_inputs(new_model, example_args, ids)
        rows = [replace(row, reason="; ".join(r for r in (row.reason, probed[row.name]) if r))
                if row.name in probed else row for row in rows]

    settings = {
        "keep_first": repr(keep_first), "keep_last": repr(keep_last),
        "input_quantizer": _short_repr(input_quantizer),
        "weight_quantizer": _short_repr(weight_quantizer),
        "pad_value": repr(pad_value),
    }
    if include is not None:
        settings["include"] = _short_repr(include)
    if exclude is not None:
        settings["exclude"] = _short_repr(exclude)
    if layer_kwargs:
        settings["layer_kwargs"] = repr(layer_kwargs)
    if example_args is not None:
        settings["example_input"] = " ".join(f"Tensor{tuple(a.shape)}" for a in example_args)
    report = ConversionReport(layer, tuple(rows), settings)
    if verbose:
        print(report)
    elif report.unsupported:
        listed = "; ".join(f"{r.name} ({r.old_type}: {r.reason})" for r in rows
                           if r.status == UNSUPPORTED)
        warnings.warn(f"binarize: {len(report.unsupported)} weight layer(s) left float because "
                      f"they cannot be binarised: {listed}", UserWarning, stacklevel=3)
    if probed and not verbose:
        listed = ", ".join(probed)
        warnings.warn(f"binarize: on example_input the binarised input of layer(s) {listed} is "
                      f"constant (never negative under a sign at 0: a ReLU, or data in [0, 1], "
                      f"before a binarised layer), so those layers see the same input for every "
                      f"sample and cannot carry information; keep them float, or use an "
                      f"activation with negative outputs (hardtanh) or a centred input",
                      UserWarning, stacklevel=3)
    elif constant and not verbose:
        listed = ", ".join(f"{name} (after a {act})" for name, act in constant.items())
        warnings.warn(f"binarize: the input of binarized layer(s) {listed} is never negative, "
                      f"so input_quantizer={_short_repr(input_quantizer)} always "
                      f"gives +1 there and those layers see the same input for every sample: "
                      f"train the float model with hardtanh (or another activation with "
                      f"negative outputs) before binarising it", UserWarning, stacklevel=3)
    return new_model, report


def _short_repr(value: Any) -> str:
    if isinstance(value, frozenset):
        return repr(sorted(value))
    if callable(value) and not isinstance(value, nn.Module | type):
        return getattr(value, "__name__", type(value).__name__)
    if isinstance(value, type):
        return value.__name__
    return repr(value)
