"""Command line: ``python -m bnnlab <command> [options]``.

Commands (each module owns its own argument parser, ``--help`` lists the options):

* ``bench``        speed and memory benchmarks: torch float32 vs the packed kernels (:mod:`bnnlab.bench`)
* ``export``       export a trained reference model to a packed file (:mod:`bnnlab.packed`)
* ``export-c``     write a packed model file as self-contained C99 (:mod:`bnnlab.packed.c_export`)
* ``experiments``  train and evaluate the model families, write JSON results (:mod:`bnnlab.experiments`)
* ``ladder``       the ablation ladder: one backbone, one idea per rung (:mod:`bnnlab.ladder`)
* ``figures``      write the report's figures (PDF) and tables (LaTeX) (:mod:`bnnlab.figures`)
* ``sweep``        run every missing spec of a sweep on Dask, one record per run (:mod:`bnnlab.sweep`)
* ``train``        train one model; checkpoints, ``--resume``, DDP under torchrun (:mod:`bnnlab.train`)
"""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "bench": ("bnnlab.bench", "speed and memory benchmarks (torch float32 vs packed kernels)"),
    "export": ("bnnlab.packed", "export a model to the pickle-free packed format"),
    "export-c": ("bnnlab.packed.c_export", "write a packed model file as self-contained C99"),
    "experiments": ("bnnlab.experiments", "train/evaluate the model families, write JSON results"),
    "ladder": ("bnnlab.ladder", "the ablation ladder (one backbone, one idea per rung)"),
    "figures": ("bnnlab.figures", "write the report's figures and tables"),
    # experiments at scale (issue 9)
    "sweep": ("bnnlab.sweep", "run every missing spec of a sweep on Dask (resumable)"),
    "train": ("bnnlab.train", "train one model (checkpoints, --resume, DDP under torchrun)"),
}


def _usage() -> str:
    lines = ["usage: python -m bnnlab <command> [options]", "", "commands:"]
    lines += [f"  {name:<12} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"bnnlab: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
