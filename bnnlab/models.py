"""Small reference networks, sized to train in seconds on two CPU cores, each with a float twin.

Every builder takes ``binary=True`` (the BNN) or ``binary=False`` (its *float twin*: the same
graph where each binary layer is replaced by its torch layer, preceded by a real activation
where the binary layer binarises its input). Comparing the two isolates the cost of
binarisation.

* :func:`binary_mlp` and :func:`binary_cnn` are **flat** :class:`torch.nn.Sequential` models
  made only of ``nn.Flatten``, ``nn.Linear``, ``nn.Conv2d``, :class:`~bnnlab.layers.BinaryLinear`,
  :class:`~bnnlab.layers.BinaryConv2d` (``pad_value=1.0``), ``nn.BatchNorm1d/2d``,
  ``nn.MaxPool2d`` and ``nn.ReLU`` / ``nn.Hardtanh`` / ``nn.Identity``. Their first and last
  layers are float; every binary layer binarises its own input (``input_quantizer="ste_sign"``),
  which is the binary activation of the BN output before it. The packed exporter
  (:mod:`bnnlab.packed`) relies on this structure.
* :func:`tiny_bireal` and :func:`tiny_reactnet` stack :class:`~bnnlab.blocks.BiRealBlock` /
  :class:`~bnnlab.blocks.ReActBlock` between a float stem and a float classifier.

What stays real in every model: the first layer (it sees the raw pixels), the last layer (the
logits), BatchNorm, pooling, and the shortcuts of the residual blocks.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from bnnlab._validation import check_choice, check_int
from bnnlab.blocks import BiRealBlock, ReActBlock
from bnnlab.layers import BinaryConv2d, BinaryLinear

__all__ = ["binary_mlp", "binary_cnn", "tiny_bireal", "tiny_reactnet", "count_parameters",
           "weight_clip_sentence"]

_ACTIVATIONS = {"relu": nn.ReLU, "hardtanh": nn.Hardtanh, "identity": nn.Identity}


def _widths(values: Any, argname: str) -> tuple[int, ...]:
    """``hidden``/``channels``: one int or a non-empty sequence of ints, each >= 1."""
    if isinstance(values, int) and not isinstance(values, bool):
        values = (values,)
    if not isinstance(values, Sequence) or isinstance(values, str):
        raise TypeError(f"{argname} must be a sequence of ints, got {type(values).__name__}")
    check_int(len(values), f"len({argname})", min_value=1)
    return tuple(check_int(v, argname, min_value=1) for v in values)


def _activation(name: Any, argname: str = "activation") -> nn.Module:
    return _ACTIVATIONS[check_choice(name, argname, sorted(_ACTIVATIONS))]()


def _join(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def weight_clip_sentence(models: Mapping[str, nn.Module]) -> str:
    r"""The report's sentence on latent-weight clipping, read from the models themselves.

    For each named model, the ``weight_clip`` of its binary layers (those with a
    ``weight_quantizer``; :func:`bnnlab.train.fit` applies it after every optimiser step through
    :func:`bnnlab.layers.clip_weights_`) decides where the model goes: clipped to
    :math:`[-c, c]`, not clipped, or clipped in some layers only. Models without binary layers
    are skipped. The text is LaTeX, e.g. ``"latent weights are clipped to $[-1, 1]$ after each
    step in BinaryNet and XNOR-Net, as in Larq; Bi-Real and ReActNet are trained without
    clipping"``.

    Args:
        models: ``{label: model}`` in the order the sentence should name them.

    Returns:
        The sentence (no capital, no final full stop), or ``""`` if no model has binary layers.
    """
    if not isinstance(models, Mapping):
        raise TypeError(f"models must be a mapping of label -> nn.Module, got {type(models).__name__}")
    clipped: dict[float, list[str]] = {}
    unclipped: list[str] = []
    mixed: list[str] = []
    for label, model in models.items():
        if not isinstance(model, nn.Module):
            raise TypeError(f"models[{label!r}] must be an nn.Module, got {type(model).__name__}")
        clips = {getattr(m, "weight_clip", None) for m in model.modules()
                 if getattr(m, "weight_quantizer", None) is not None}
        if not clips:
            continue
        if clips == {None}:
            unclipped.append(str(label))
        elif len(clips) == 1:
            clipped.setdefault(float(next(c for c in clips if c is not None)), []).append(str(label))
        else:
            mixed.append(str(label))
    parts = [f"latent weights are clipped to $[-{c:g}, {c:g}]$ after each step in {_join(names)}"
             for c, names in clipped.items()]
    if parts:
        parts[-1] += ", as in Larq"
    if unclipped:
        verb = "is" if len(unclipped) == 1 else "are"
        parts.append(f"{_join(unclipped)} {verb} trained without clipping")
    if mixed:
        parts.append(f"{_join(mixed)} clip{'s' if len(mixed) == 1 else ''} only some of "
                     f"{'its' if len(mixed) == 1 else 'their'} binary layers")
    return "; ".join(parts)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of ``model`` (BN running statistics excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def binary_mlp(in_features: int = 784, hidden: Sequence[int] = (512, 512),
               num_classes: int = 10, *, binary: bool = True, weight_clip: float | None = 1.0,
               input_quantizer: Any = "ste_sign", weight_quantizer: Any = "ste_sign",
               activation: str = "relu", head_activation: str = "hardtanh") -> nn.Sequential:
    r"""Binary MLP ``in_features - hidden[0] - ... - hidden[-1] - num_classes`` (BinaryNet style).

    Layers (binary version, :math:`h_i` = ``hidden[i]``)::

        Flatten, Linear(in, h0), BN(h0),                        # float first layer
        [BinaryLinear(h_i, h_{i+1}), BN(h_{i+1})] * (len(hidden) - 1),
        <head_activation>, Linear(h_last, num_classes)          # float last layer

    Each ``BinaryLinear`` computes :math:`\operatorname{sign}(W) \cdot \operatorname{sign}(x)`
    of the BN output before it (sign(0) = +1, STE clip 1). Linear layers followed by BN have no
    bias. The float twin (``binary=False``) replaces each ``BinaryLinear`` by
    ``activation, nn.Linear``; everything else is identical.

    Args:
        in_features: input size (784 for 28×28, 64 for 8×8 digits). Inputs of any shape
            ``(N, *)`` are flattened. Default: ``784``.
        hidden: hidden widths; ``len(hidden) - 1`` binary layers. Default: ``(512, 512)``.
        num_classes: outputs (logits). Default: ``10``.
        binary: ``False`` builds the float twin. Default: ``True``.
        weight_clip: latent weight clip of the binary layers (applied by
            :func:`bnnlab.train.fit`). Default: ``1.0``.
        input_quantizer, weight_quantizer: binarisers of the binary layers. Default:
            ``"ste_sign"`` (the packed exporter needs ``"ste_sign"`` inputs).
        activation: the float twin's activation where the BNN has its signs: ``"relu"``,
            ``"hardtanh"`` or ``"identity"``. Default: ``"relu"``.
        head_activation: activation before the float classifier, in both twins (the BNN's
            last BN output is otherwise fed linearly to the classifier). Default: ``"hardtanh"``.

    Returns:
        A flat :class:`torch.nn.Sequential`.

    Examples::

        >>> net = binary_mlp(64, hidden=(128, 128))
        >>> net(torch.rand(5, 1, 8, 8)).shape
        torch.Size([5, 10])
    """
    in_features = check_int(in_features, "in_features", min_value=1)
    hidden = _widths(hidden, "hidden")
    num_classes = check_int(num_classes, "num_classes", min_value=1)
    layers: list[nn.Module] = [nn.Flatten(), nn.Linear(in_features, hidden[0], bias=False),
                               nn.BatchNorm1d(hidden[0])]
    for h_in, h_out in zip(hidden[:-1], hidden[1:], strict=True):
        if binary:
            layers.append(BinaryLinear(h_in, h_out, bias=False, input_quantizer=input_quantizer,
                                       weight_quantizer=weight_quantizer,
                                       weight_clip=weight_clip))
        else:
            layers += [_activation(activation), nn.Linear(h_in, h_out, bias=False)]
        layers.append(nn.BatchNorm1d(h_out))
    layers += [_activation(head_activation, "head_activation"),
               nn.Linear(hidden[-1], num_classes)]
    return nn.Sequential(*layers)


def binary_cnn(in_channels: int = 1, image_size: int = 28, num_classes: int = 10, *,
               binary: bool = True, channels: Sequence[int] = (16, 64, 64), hidden: int = 128,
               weight_clip: float | None = 1.0, input_quantizer: Any = "ste_sign",
               weight_quantizer: Any = "ste_sign", activation: str = "relu",
               head_activation: str = "hardtanh") -> nn.Sequential:
    r"""Small binary CNN for 28×28 (Fashion-MNIST) or 32×32 (CIFAR-sized) images.

    Layers (binary version, :math:`c_i` = ``channels[i]``, every conv 3×3 with padding 1)::

        Conv2d(in, c0), MaxPool(2), BN(c0),                         # float first layer
        [BinaryConv2d(c_i, c_{i+1}, pad_value=1), MaxPool(2), BN] * (len(channels) - 1),
        Flatten, BinaryLinear(c_last * s * s, hidden), BN(hidden),
        <head_activation>, Linear(hidden, num_classes)              # float last layer

    with :math:`s = \lfloor image\_size / 2^{len(channels)} \rfloor` (3 for 28, 4 for 32 with
    three stages). Binary convolutions pad their binarised input with +1 (``pad_value=1.0``),
    which is exactly what the packed kernel computes. Conv/linear layers followed by BN have no
    bias. The float twin replaces each binary layer by ``activation, nn.Conv2d/nn.Linear``
    (zero padding).

    Args:
        in_channels: input channels (1 grey, 3 colour). Default: ``1``.
        image_size: input height = width, 28 or 32 (any size ≥ :math:`2^{len(channels)}` works).
            Default: ``28``.
        num_classes: outputs. Default: ``10``.
        binary: ``False`` builds the float twin. Default: ``True``.
        channels: widths of the conv stages. Default: ``(16, 64, 64)`` (as accurate as
            ``(32, 64, 64)`` on Fashion-MNIST, ~30 % cheaper to train).
        hidden: width of the binary fully connected layer. Default: ``128``.
        weight_clip, input_quantizer, weight_quantizer, activation, head_activation: as
            :func:`binary_mlp`.

    Returns:
        A flat :class:`torch.nn.Sequential`.
    """
    in_channels = check_int(in_channels, "in_channels", min_value=1)
    image_size = check_int(image_size, "image_size", min_value=1)
    num_classes = check_int(num_classes, "num_classes", min_value=1)
    channels = _widths(channels, "channels")
    hidden = check_int(hidden, "hidden", min_value=1)
    side = image_size >> len(channels)
    if side < 1:
        raise ValueError(f"image_size={image_size} is too small for {len(channels)} pooling "
                         f"stages (needs >= {2 ** len(channels)})")

    def binary_or_float(bin_cls, float_cls, *args, **kw):
        if binary:
            extra = {"pad_value": 1.0} if bin_cls is BinaryConv2d else {}
            return [bin_cls(*args, **kw, input_quantizer=input_quantizer,
                            weight_quantizer=weight_quantizer, weight_clip=weight_clip, **extra)]
        return [_activation(activation), float_cls(*args, **kw)]

    layers: list[nn.Module] = [nn.Conv2d(in_channels, channels[0], 3, padding=1, bias=False),
                               nn.MaxPool2d(2), nn.BatchNorm2d(channels[0])]
    for c_in, c_out in zip(channels[:-1], channels[1:], strict=True):
        layers += binary_or_float(BinaryConv2d, nn.Conv2d, c_in, c_out, 3, padding=1, bias=False)
        layers += [nn.MaxPool2d(2), nn.BatchNorm2d(c_out)]
    layers.append(nn.Flatten())
    layers += binary_or_float(BinaryLinear, nn.Linear, channels[-1] * side * side, hidden,
                              bias=False)
    layers += [nn.BatchNorm1d(hidden), _activation(head_activation, "head_activation"),
               nn.Linear(hidden, num_classes)]
    return nn.Sequential(*layers)


def _stem(in_channels: int, width: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)]


def _head(width: int, num_classes: int) -> list[nn.Module]:
    return [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes)]


def tiny_bireal(in_channels: int = 1, num_classes: int = 10, *, width: int = 16,
                binary: bool = True, blocks_per_stage: int = 2, weight_clip: float | None = None,
                input_quantizer: Any = "approx_sign",
                weight_quantizer: Any = "magnitude_aware_sign",
                activation: str = "hardtanh") -> nn.Sequential:
    r"""A three-stage Bi-Real Net (widths ``w, 2w, 4w``) for small images (8×8 to 32×32).

    Layers::

        Conv2d(in, w, 3) + BN                                 # float stem
        BiRealBlock(w, w) * n                                 # stage 1
        BiRealBlock(w, 2w, stride 2), BiRealBlock(2w, 2w) * (n-1)
        BiRealBlock(2w, 4w, stride 2), BiRealBlock(4w, 4w) * (n-1)
        AdaptiveAvgPool(1), Flatten, Linear(4w, num_classes)  # float head

    Binary: every 3×3 convolution of the blocks (ApproxSign activations, magnitude-aware
    weights). Real: stem, head, BN, and the shortcuts (the 1×1 downsampling convs included).

    Args:
        in_channels: input channels. Default: ``1``.
        num_classes: outputs. Default: ``10``.
        width: :math:`w`. Default: ``16``.
        binary: ``False`` builds the float twin. Default: ``True``.
        blocks_per_stage: :math:`n`, Bi-Real units per stage. Default: ``2``.
        weight_clip, input_quantizer, weight_quantizer, activation: see
            :class:`~bnnlab.blocks.BiRealBlock`.

    Returns:
        :class:`torch.nn.Sequential` (input any :math:`(N, C_{in}, H, W)` with H, W ≥ 4).
    """
    in_channels = check_int(in_channels, "in_channels", min_value=1)
    num_classes = check_int(num_classes, "num_classes", min_value=1)
    width = check_int(width, "width", min_value=1)
    n = check_int(blocks_per_stage, "blocks_per_stage", min_value=1)
    kw = dict(binary=binary, input_quantizer=input_quantizer, weight_quantizer=weight_quantizer,
              weight_clip=weight_clip, activation=activation)
    layers = _stem(in_channels, width)
    c = width
    for stage in range(3):
        c_out = width * 2 ** stage
        for i in range(n):
            stride = 2 if (stage > 0 and i == 0) else 1
            layers.append(BiRealBlock(c, c_out, stride, **kw))
            c = c_out
    return nn.Sequential(*layers, *_head(c, num_classes))


def tiny_reactnet(in_channels: int = 1, num_classes: int = 10, *, width: int = 16,
                  binary: bool = True, weight_clip: float | None = None,
                  weight_quantizer: Any = "magnitude_aware_sign",
                  gradients: str = "official") -> nn.Sequential:
    r"""A small ReActNet-A (MobileNet-like, every block binary) for small images.

    Layers::

        Conv2d(in, w, 3) + BN                                 # float stem
        ReActBlock(w, w), ReActBlock(w, 2w, stride 2), ReActBlock(2w, 2w),
        ReActBlock(2w, 4w, stride 2), ReActBlock(4w, 4w)
        AdaptiveAvgPool(1), Flatten, Linear(4w, num_classes)  # float head

    Binary: every 3×3 and 1×1 convolution inside the blocks (RSign activations with learnable
    thresholds, magnitude-aware weights). Real: stem, head, BN, RPReLU, the shortcuts.

    Args:
        in_channels: input channels. Default: ``1``.
        num_classes: outputs. Default: ``10``.
        width: :math:`w`. Default: ``16``.
        binary: ``False`` builds the float twin. Default: ``True``.
        weight_clip, weight_quantizer, gradients: see :class:`~bnnlab.blocks.ReActBlock`
            (``gradients="official"``, the default: the official ReActNet code's surrogates).

    Returns:
        :class:`torch.nn.Sequential` (input any :math:`(N, C_{in}, H, W)` with H, W ≥ 4).
    """
    in_channels = check_int(in_channels, "in_channels", min_value=1)
    num_classes = check_int(num_classes, "num_classes", min_value=1)
    width = check_int(width, "width", min_value=1)
    kw = dict(binary=binary, weight_quantizer=weight_quantizer, weight_clip=weight_clip,
              gradients=gradients)
    w = width
    blocks = [ReActBlock(w, w, **kw), ReActBlock(w, 2 * w, 2, **kw),
              ReActBlock(2 * w, 2 * w, **kw), ReActBlock(2 * w, 4 * w, 2, **kw),
              ReActBlock(4 * w, 4 * w, **kw)]
    return nn.Sequential(*_stem(in_channels, w), *blocks, *_head(4 * w, num_classes))


# ---------------------------------------------------------------------------------------------
# CIFAR-size reference architectures (issue 9): BinaryNet's VGG-small and a ResNet-18 Bi-Real
# ---------------------------------------------------------------------------------------------
def vgg_small(in_channels: int = 3, image_size: int = 32, num_classes: int = 10, *,
              binary: bool = True, width: int = 128, hidden: int = 1024,
              weight_clip: float | None = 1.0, input_quantizer: Any = "ste_sign",
              weight_quantizer: Any = "ste_sign", activation: str = "hardtanh") -> nn.Sequential:
    r"""BinaryNet's CIFAR-10 network (Courbariaux et al. 2016, "VGG-small"), with a float twin.

    Layers (:math:`w` = ``width``; every conv 3×3 with padding 1)::

        Conv2d(in, w) + BN                                        # float first layer
        BinaryConv2d(w, w),   MaxPool(2), BN
        BinaryConv2d(w, 2w),  BN,  BinaryConv2d(2w, 2w), MaxPool(2), BN
        BinaryConv2d(2w, 4w), BN,  BinaryConv2d(4w, 4w), MaxPool(2), BN
        Flatten, BinaryLinear(4w·s², hidden), BN, BinaryLinear(hidden, hidden), BN,
        Linear(hidden, num_classes)                               # float last layer

    with :math:`s` = ``image_size // 8``. The paper's sizes are ``width=128, hidden=1024``
    (about 14 M parameters); smaller widths give the same graph for CPU runs. Binary convs
    pad with +1 (``pad_value=1.0``, what the packed kernels compute). The float twin replaces
    each binary layer by ``activation`` and its torch layer.

    Args:
        in_channels, image_size, num_classes: input channels, side, outputs.
        binary: ``False`` builds the float twin. Default: ``True``.
        width: :math:`w`. Default: ``128``. hidden: FC width. Default: ``1024``.
        weight_clip, input_quantizer, weight_quantizer: of the binary layers.
        activation: the float twin's activation. Default: ``"hardtanh"``.
    """
    in_channels = check_int(in_channels, "in_channels", min_value=1)
    image_size = check_int(image_size, "image_size", min_value=1)
    num_classes = check_int(num_classes, "num_classes", min_value=1)
    w = check_int(width, "width", min_value=1)
    hidden = check_int(hidden, "hidden", min_value=1)
    side = image_size // 8
    if side < 1:
        raise ValueError(f"image_size must be >= 8, got {image_size}")

    def layer(cls: Any, float_cls: Any, *args: Any, **kw: Any) -> list[nn.Module]:
        if binary:
            extra = {"pad_value": 1.0} if cls is BinaryConv2d else {}
            return [cls(*args, **kw, input_quantizer=input_quantizer,
                        weight_quantizer=weight_quantizer, weight_clip=weight_clip, **extra)]
        return [_activation(activation), float_cls(*args, **kw)]

    def conv(c_in: int, c_out: int) -> list[nn.Module]:
        return layer(BinaryConv2d, nn.Conv2d, c_in, c_out, 3, padding=1, bias=False)

    layers: list[nn.Module] = [nn.Conv2d(in_channels, w, 3, padding=1, bias=False),
                               nn.BatchNorm2d(w)]
    layers += [*conv(w, w), nn.MaxPool2d(2), nn.BatchNorm2d(w)]
    layers += [*conv(w, 2 * w), nn.BatchNorm2d(2 * w)]
    layers += [*conv(2 * w, 2 * w), nn.MaxPool2d(2), nn.BatchNorm2d(2 * w)]
    layers += [*conv(2 * w, 4 * w), nn.BatchNorm2d(4 * w)]
    layers += [*conv(4 * w, 4 * w), nn.MaxPool2d(2), nn.BatchNorm2d(4 * w)]
    layers.append(nn.Flatten())
    layers += [*layer(BinaryLinear, nn.Linear, 4 * w * side * side, hidden, bias=False),
               nn.BatchNorm1d(hidden)]
    layers += [*layer(BinaryLinear, nn.Linear, hidden, hidden, bias=False),
               nn.BatchNorm1d(hidden)]
    layers += [_activation(activation), nn.Linear(hidden, num_classes)]
    return nn.Sequential(*layers)


def resnet18_bireal(in_channels: int = 3, num_classes: int = 10, *, binary: bool = True,
                    width: int = 64, block: str = "bireal", weight_clip: float | None = None,
                    weight_quantizer: Any = "magnitude_aware_sign") -> nn.Sequential:
    r"""ResNet-18-style binary network for 32×32 images: Bi-Real Net-18 (Liu et al. 2018) or
    its ReActNet version (Liu et al. 2020), with a float twin.

    Layers (:math:`w` = ``width``; CIFAR stem: one 3×3 conv, no max-pool)::

        Conv2d(in, w, 3) + BN                                      # float stem
        stage k = 1..4, width w·2^(k-1), stride 2 at the start of stages 2-4:
            block="bireal":   4 BiRealBlock units (ResNet-18's two basic blocks, each 3×3
                              conv with its own real shortcut, as in Bi-Real Net)
            block="reactnet": 2 ReActBlock (binary 3×3 then 1×1, RSign + RPReLU)
        AdaptiveAvgPool(1), Flatten, Linear(8w, num_classes)       # float head

    ``width=64`` gives ResNet-18's widths (64 … 512). Real: stem, head, BN, shortcuts.

    Args:
        in_channels, num_classes: input channels and outputs.
        binary: ``False`` builds the float twin. Default: ``True``.
        width: :math:`w`. Default: ``64``.
        block: ``"bireal"`` or ``"reactnet"``. Default: ``"bireal"``.
        weight_clip, weight_quantizer: of the binary convolutions.
    """
    in_channels = check_int(in_channels, "in_channels", min_value=1)
    num_classes = check_int(num_classes, "num_classes", min_value=1)
    w = check_int(width, "width", min_value=1)
    if block not in ("bireal", "reactnet"):
        raise ValueError(f"block must be 'bireal' or 'reactnet', got {block!r}")
    layers = _stem(in_channels, w)
    c = w
    for stage in range(4):
        c_out = w * 2 ** stage
        units = 4 if block == "bireal" else 2
        for i in range(units):
            stride = 2 if (stage > 0 and i == 0) else 1
            if block == "bireal":
                layers.append(BiRealBlock(c, c_out, stride, binary=binary,
                                          weight_quantizer=weight_quantizer,
                                          weight_clip=weight_clip))
            else:
                layers.append(ReActBlock(c, c_out, stride, binary=binary,
                                         weight_quantizer=weight_quantizer,
                                         weight_clip=weight_clip))
            c = c_out
    return nn.Sequential(*layers, *_head(c, num_classes))


__all__ += ["vgg_small", "resnet18_bireal"]
