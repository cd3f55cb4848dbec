"""``python -m bnnlab export``.

Part of :mod:`bnnlab.packed` (see its docstring for the rules and the format)."""
from __future__ import annotations

import argparse
import sys

import torch
from torch import nn

from bnnlab.packed.export import export


# =============================================================================== CLI
def _calibrate(model: nn.Module, shape: tuple, steps: int, seed: int) -> None:
    """Set non-trivial BatchNorm statistics: a few train-mode forwards on random data."""
    g = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(steps):
            model(torch.randn(*shape, generator=g))
    model.eval()


def main(argv: list[str] | None = None) -> int:
    """``python -m bnnlab export``: export a reference model to a packed file."""
    from bnnlab import models

    p = argparse.ArgumentParser(
        prog="python -m bnnlab export",
        description="Export a reference binary model (models.binary_mlp / binary_cnn) to the "
                    "pickle-free packed format and print its size next to the float32 "
                    "state_dict's.")
    p.add_argument("model", choices=("binary_mlp", "binary_cnn"))
    p.add_argument("out", help="output file (e.g. cnn.bnnpk)")
    p.add_argument("--weights", help="state_dict saved with torch.save (loaded with "
                                     "weights_only=True)")
    p.add_argument("--random", action="store_true",
                   help="no trained weights: random init + BN statistics from random data (demo)")
    p.add_argument("--in-channels", type=int, default=1)
    p.add_argument("--image-size", type=int, default=28)
    p.add_argument("--in-features", type=int, default=784)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-fuse", action="store_true", help="do not fuse binary chains")
    p.add_argument("--no-fold-bn", action="store_true",
                   help="keep the BatchNorm after the last binary layer as a float stage "
                        "(bit-exact logits) instead of folding it into the layer's epilogue")
    args = p.parse_args(argv)
    if (args.weights is None) == (not args.random):
        p.error("give exactly one of --weights FILE or --random")
    torch.manual_seed(args.seed)
    try:
        if args.model == "binary_cnn":
            model = models.binary_cnn(args.in_channels, args.image_size, args.num_classes)
            shape: tuple[int, ...] = (8, args.in_channels, args.image_size, args.image_size)
        else:
            model = models.binary_mlp(args.in_features, num_classes=args.num_classes)
            shape = (8, args.in_features)
        if args.weights:
            state = torch.load(args.weights, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        else:
            _calibrate(model, shape, 4, args.seed)
        model.eval()
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(args.seed + 1))
        packed = export(model, x, fuse=not args.no_fuse, fold_float_bn=not args.no_fold_bn)
        n = packed.save(args.out)
    except (ValueError, TypeError, OSError, RuntimeError) as exc:
        print(f"bnnlab export: error: {exc}", file=sys.stderr)
        return 2
    s = packed.sizes()
    for line in packed.notes:
        print(f"  {line}")
    print(f"wrote {args.out}: {n} bytes; float32 state_dict {s['float_state_dict_bytes']} bytes "
          f"({s['ratio']:.1f}x smaller); packed binary weights {s['packed_weight_bytes']} bytes "
          f"vs {s['float_weight_bytes']} as float32 ({s['weight_ratio']:.1f}x)")
    return 0
