r"""The ablation ladder: one backbone, one idea added per rung, equal data and budget.

Rungs (:data:`RUNGS`, in order; each keeps everything of the rung before it unless said)::

    float      float twin: real 3x3 convs, BN, real shortcuts, ReLU after each addition (a
               ResNet with one conv per unit, as Bi-Real's; the upper reference)
    binarynet  BinaryNet: sign(x) with the clipped STE, sign(W), latent weights clipped to [-1, 1],
               no shortcuts (a plain binary stack, as the 2016 paper)
    xnor       + XNOR-Net scales: alpha_o = mean|W_o| per output channel, the K-map of mean|x|
    bireal     + Bi-Real: a real shortcut around every binary conv, ApproxSign activations,
               magnitude-aware weights (alpha_o sign W; the K-map dropped, no weight clip)
    reactnet   + ReActNet: RSign (a learned threshold before the sign; ApproxSign surrogate as in
               ReActNet's code) and RPReLU after every residual addition
    twostep    + two-step training: binary activations and real weights first, then binary
               weights from those (Liu et al. 2020); the epoch cap is split between the steps
    distill    + distillation: the loss is KL(p_teacher || p_student), the teacher being the
               float rung of the same seed (ReActNet's distributional loss; Martinez et al. 2020)

The backbone: a float stem (3x3 conv + BN), three stages of ``blocks`` units of widths
``w, 2w, 4w`` (stride 2 at the start of stages 2 and 3), global average pooling and a float
linear head. A unit is ``post(BN(conv3x3(q(x))) + shortcut(x))``; the rungs choose ``q``, the conv,
``shortcut`` and ``post``.

Budget, equal for all rungs: Adam (no weight decay, none on binary latent weights), the learning
rate halved when validation accuracy has not improved for ``lr_patience`` epochs, training
stopped when it has not improved for ``patience`` epochs or at ``max_epochs`` (the cap), and
the weights of the best validation epoch restored before the one test evaluation. A run that
hits the cap was still improving (or at least not yet stopped) and is counted as such.

A run is a pure function of its JSON spec (:func:`run_rung`), so the sweep engine of
:mod:`bnnlab.experiments` can run :func:`ladder_specs` on Dask. :func:`run_ladder` runs them
serially here, one JSON file per run, written atomically, so a killed ladder resumes.

Command line::

    python -m bnnlab ladder --profile quick --out paper/generated/quick/ladder
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bnnlab._validation import check_choice, check_int, check_real
from bnnlab.blocks import LearnableBias, RPReLU
from bnnlab.layers import BinaryConv2d, XnorConv2d
from bnnlab.quantizers import ApproxSign
from bnnlab.train import Callback, EarlyStopping, History, evaluate, fit

__all__ = [
    "RUNGS",
    "RUNG_LABELS",
    "PROFILES",
    "SCHEMA",
    "rung_spec",
    "ladder_specs",
    "spec_hash",
    "build_model",
    "load_data",
    "run_rung",
    "markdown_table",
    "update_readme",
    "ladder_runner",
    "run_ladder",
    "load_ladder",
    "main",
]

SCHEMA = "bnnlab.ladder/1"

#: rung names, in ladder order
RUNGS: tuple[str, ...] = ("float", "binarynet", "xnor", "bireal", "reactnet", "twostep",
                          "distill")

#: rung -> label of the report (the idea the rung adds)
RUNG_LABELS: dict[str, str] = {
    "float": "Float twin",
    "binarynet": "BinaryNet (sign, STE)",
    "xnor": "+ XNOR scales",
    "bireal": "+ Bi-Real shortcuts",
    "reactnet": "+ ReActNet RSign/RPReLU",
    "twostep": "+ two-step training",
    "distill": "+ distillation",
}

#: rung -> (what the rung's model is, the paper)
RUNG_SOURCES: dict[str, str] = {
    "float": "hubara2016binarized",
    "binarynet": "hubara2016binarized",
    "xnor": "rastegari2016xnor",
    "bireal": "liu2018bireal",
    "reactnet": "liu2020reactnet",
    "twostep": "liu2020reactnet",
    "distill": "martinez2020training",
}

# The architecture of each rung: (conv, activation quantizer, shortcut, post, weight clip)
_ARCH: dict[str, dict[str, Any]] = {
    "float": dict(conv="float", act="real", shortcut=True, post="relu", clip=None),
    "binarynet": dict(conv="binary", act="ste", shortcut=False, post="none", clip=1.0),
    "xnor": dict(conv="xnor", act="ste", shortcut=False, post="none", clip=1.0),
    "bireal": dict(conv="magnitude", act="approx", shortcut=True, post="none", clip=None),
    "reactnet": dict(conv="magnitude", act="rsign", shortcut=True, post="rprelu", clip=None),
    "twostep": dict(conv="magnitude", act="rsign", shortcut=True, post="rprelu", clip=None),
    "distill": dict(conv="magnitude", act="rsign", shortcut=True, post="rprelu", clip=None),
}

#: profile -> data, backbone and budget (every rung of a profile gets the same)
PROFILES: dict[str, dict[str, Any]] = {
    # CI: a few minutes on two shared cores, one seed; a smoke test of the whole pipeline,
    # not a result (most runs hit their small cap, and the report says so).
    "quick": dict(dataset="fashion-mnist", n_train=2000, val_size=1000, n_test=2000, pool=2,
                  width=8, blocks=1, max_epochs=8, patience=2, lr_patience=1, min_delta=0.0,
                  lr=2e-3, batch_size=100, seeds=(0,)),
    # This machine: 7 rungs x 3 seeds on 6,000 images (14x14), through the sweep engine's
    # LocalCluster. One epoch costs 6-7 s on one core. The budget runs every rung to
    # convergence: the learning rate halves after 2 epochs without a gain of more than
    # ``min_delta`` (0.2 points, 4 of the 2,000 validation images: smaller gains are noise),
    # training stops after 5, so a run ends only once two halvings in a row brought nothing;
    # the cap of 40 epochs is a safety net that a converging run does not reach.
    "full": dict(dataset="fashion-mnist", n_train=6000, val_size=2000, n_test=10000, pool=2,
                 width=16, blocks=1, max_epochs=40, patience=5, lr_patience=2, min_delta=0.002,
                 lr=2e-3, batch_size=100, seeds=(0, 1, 2)),
    # A GPU or a cluster: full-size Fashion-MNIST, a deeper backbone, published-size budgets.
    "paper": dict(dataset="fashion-mnist", n_train=None, val_size=5000, n_test=None, pool=1,
                  width=32, blocks=2, max_epochs=120, patience=12, lr_patience=4,
                  min_delta=0.001, lr=1e-3, batch_size=128, seeds=(0, 1, 2, 3, 4)),
}

_SPEC_KEYS = ("rung", "seed", "dataset", "n_train", "val_size", "n_test", "pool", "width",
              "blocks", "max_epochs", "patience", "lr_patience", "min_delta", "lr", "batch_size")


# =============================================================================================
# Specs
# =============================================================================================
def rung_spec(rung: str, profile: str = "quick", seed: int = 0, **overrides: Any) -> dict:
    """The JSON spec of one run: a rung of a profile with one seed (and optional overrides).

    Args:
        rung: a name of :data:`RUNGS`.
        profile: a name of :data:`PROFILES`. Default: ``"quick"``.
        seed: seed of the initialisation, the shuffling and the train/validation partition.
        **overrides: replace profile entries (``max_epochs=3``, ``n_train=500``, ...).

    Returns:
        A plain dict (JSON-able); ``distill`` specs carry their teacher's spec under
        ``"teacher"``.
    """
    check_choice(rung, "rung", RUNGS)
    check_choice(profile, "profile", tuple(PROFILES))
    check_int(seed, "seed", min_value=0)
    base = {k: v for k, v in PROFILES[profile].items() if k != "seeds"}
    unknown = sorted(set(overrides) - set(base))
    if unknown:
        raise ValueError(f"overrides: unknown keys {unknown}; expected some of {sorted(base)}")
    base.update(overrides)
    spec = {"kind": "ladder", "profile": profile, "rung": rung, "seed": int(seed), **base}
    if rung == "distill":
        spec["teacher"] = {k: v for k, v in spec.items() if k != "teacher"} | {"rung": "float"}
    return spec


def ladder_specs(profile: str = "quick", seeds: Iterable[int] | None = None,
                 **overrides: Any) -> list[dict]:
    """Every run of the ladder: rungs in order, for each seed (default: the profile's seeds)."""
    check_choice(profile, "profile", tuple(PROFILES))
    seeds = tuple(PROFILES[profile]["seeds"] if seeds is None else seeds)
    if not seeds:
        raise ValueError("seeds must not be empty")
    return [rung_spec(r, profile, s, **overrides) for s in seeds for r in RUNGS]


def spec_hash(spec: Mapping) -> str:
    """First 16 hex digits of the SHA-256 of the canonical JSON of ``spec``."""
    canon = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()[:16]


def _check_spec(spec: Any) -> dict:
    if not isinstance(spec, Mapping):
        raise TypeError(f"spec must be a mapping, got {type(spec).__name__}")
    missing = [k for k in _SPEC_KEYS if k not in spec]
    if missing:
        raise ValueError(f"spec: missing keys {missing}")
    check_choice(spec["rung"], "spec['rung']", RUNGS)
    for k in ("seed", "width", "blocks", "max_epochs", "patience", "lr_patience", "batch_size",
              "pool", "val_size"):
        check_int(spec[k], f"spec[{k!r}]", min_value=0 if k in ("seed", "patience") else 1)
    check_real(spec["lr"], "spec['lr']", min_value=0.0, include_min=False)
    check_real(spec["min_delta"], "spec['min_delta']", min_value=0.0, max_value=1.0)
    return dict(spec)


# =============================================================================================
# Model
# =============================================================================================
class RSignApprox(nn.Sequential):
    r"""ReActNet's RSign as its code computes it: a learned shift, then ApproxSign.

    :math:`q(x)_c = \operatorname{sign}(x_c + b_c)` (the paper's threshold is :math:`-b_c`),
    surrogate :math:`(2 - 2|x_c + b_c|)\,\mathbb{1}\{|x_c + b_c| \le 1\}` (Bi-Real's), which
    also trains :math:`b_c`.
    """

    precision = 1

    def __init__(self, num_channels: int) -> None:
        super().__init__(LearnableBias(num_channels), ApproxSign())


class LadderUnit(nn.Module):
    r"""One unit of the ladder backbone: :math:`y = \mathrm{post}(\mathrm{BN}(W \star q(x)) + s(x))`.

    Args:
        c_in, c_out, stride: the 3×3 convolution's widths and stride.
        arch: one entry of the rung table (conv kind, activation quantizer, shortcut, post,
            weight clip).
        binary_weights: ``False`` keeps the weights real (step 1 of two-step training).
    """

    def __init__(self, c_in: int, c_out: int, stride: int, arch: Mapping[str, Any],
                 binary_weights: bool = True) -> None:
        super().__init__()
        conv = arch["conv"]
        kw = dict(stride=stride, padding=1, bias=False)
        if conv == "float":
            self.conv: nn.Module = nn.Conv2d(c_in, c_out, 3, **kw)  # type: ignore[arg-type]
        else:
            act: Any = {"ste": "ste_sign", "approx": "approx_sign"}.get(arch["act"])
            if arch["act"] == "rsign":
                act = RSignApprox(c_in)
            wq: Any = ("ste_sign" if conv in ("binary", "xnor") else "magnitude_aware_sign")
            cls = XnorConv2d if conv == "xnor" else BinaryConv2d
            self.conv = cls(c_in, c_out, 3, **kw,  # type: ignore[arg-type]
                            input_quantizer=act, weight_quantizer=wq if binary_weights else None,
                            weight_clip=arch["clip"], pad_value=1.0)
        self.bn = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module | None = None
        if arch["shortcut"]:
            if stride == 1 and c_in == c_out:
                self.shortcut = nn.Identity()
            else:
                self.shortcut = nn.Sequential(
                    nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False),
                    nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        post = arch["post"]
        self.post: nn.Module = (nn.ReLU() if post == "relu" else RPReLU(c_out)
                                if post == "rprelu" else nn.Identity())

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn(self.conv(x))
        if self.shortcut is not None:
            y = y + self.shortcut(x)
        return self.post(y)


def build_model(spec: Mapping, *, binary_weights: bool = True) -> nn.Sequential:
    """The rung's network for 1-channel images, 10 classes (see the module docstring)."""
    spec = _check_spec(spec)
    arch = _ARCH[spec["rung"]]
    w, n = spec["width"], spec["blocks"]
    layers: list[nn.Module] = [nn.Conv2d(1, w, 3, padding=1, bias=False), nn.BatchNorm2d(w)]
    if arch["conv"] == "float":
        layers.append(nn.ReLU())
    c = w
    for stage in range(3):
        c_out = w * 2 ** stage
        for i in range(n):
            stride = 2 if (stage > 0 and i == 0) else 1
            layers.append(LadderUnit(c, c_out, stride, arch, binary_weights))
            c = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10)]
    return nn.Sequential(*layers)


def _binarize_weights_(model: nn.Module) -> None:
    """Step 2 of two-step training: give every binary conv its magnitude-aware weight sign."""
    from bnnlab.quantizers import MagnitudeAwareSign

    for m in model.modules():
        if isinstance(m, BinaryConv2d) and m.weight_quantizer is None:
            m.register_module("weight_quantizer", MagnitudeAwareSign())


# =============================================================================================
# Data
# =============================================================================================
def load_data(spec: Mapping):
    """The spec's Fashion-MNIST split (:func:`bnnlab.data.load_fashion_mnist`), standardised and
    average-pooled by ``spec["pool"]``; the test part is the same for every seed."""
    from bnnlab.data import Split, load_fashion_mnist

    if spec["dataset"] != "fashion-mnist":
        raise ValueError(f"spec['dataset']: only 'fashion-mnist' is available offline, got "
                         f"{spec['dataset']!r}")
    split = load_fashion_mnist(normalize="standard", val_size=spec["val_size"],
                               n_train=spec["n_train"], n_test=spec["n_test"], seed=spec["seed"])
    p = int(spec["pool"])
    if p == 1:
        return split

    def pool(pair):
        return F.avg_pool2d(pair[0], p), pair[1]

    return Split(pool(split.train), pool(split.val), pool(split.test), name=split.name,
                 num_classes=split.num_classes, classes=split.classes,
                 info=dict(split.info, pool=p))


# =============================================================================================
# Training
# =============================================================================================
class _HalveOnPlateau(Callback):
    """Halve the learning rate of ``opt`` when val_acc has not improved by more than
    ``min_delta`` for ``patience`` epochs (the rule :class:`~bnnlab.train.EarlyStopping` uses)."""

    def __init__(self, opt: torch.optim.Optimizer, patience: int, min_delta: float = 0.0) -> None:
        self.opt, self.patience, self.min_delta = opt, patience, float(min_delta)
        self.best = -math.inf
        self.wait = 0

    def on_epoch_end(self, epoch, history, model) -> bool:
        v = history.val_acc[-1]
        if v > self.best + self.min_delta:
            self.best, self.wait = v, 0
        else:
            self.wait += 1
            if self.wait >= self.patience:
                for g in self.opt.param_groups:
                    g["lr"] *= 0.5
                self.wait = 0
        return False


class _Distilled(nn.Module):
    """The student, with a frozen teacher whose logits of the same batch the loss reads."""

    def __init__(self, student: nn.Module, teacher: nn.Module) -> None:
        super().__init__()
        self.student = student
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.teacher_logits: Tensor | None = None

    def train(self, mode: bool = True):
        self.training = mode
        self.student.train(mode)
        self.teacher.eval()
        return self

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            self.teacher_logits = self.teacher(x)
        return self.student(x)

    def loss(self, out: Tensor, y: Tensor) -> Tensor:
        """ReActNet's distributional loss: KL(p_teacher || p_student), batch mean."""
        if self.teacher_logits is None:
            raise ValueError("distillation loss: call forward() before loss() (no teacher logits)")
        p_t = F.softmax(self.teacher_logits, dim=1)
        return F.kl_div(F.log_softmax(out, dim=1), p_t, reduction="batchmean")


def _fit_step(model: nn.Module, split, spec: Mapping, epochs: int, seed: int,
              loss: Any = "cross_entropy") -> tuple[History, int | None, bool]:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=float(spec["lr"]), weight_decay=0.0)
    delta = float(spec["min_delta"])
    stopper = EarlyStopping(monitor="val_acc", patience=int(spec["patience"]), min_delta=delta,
                            restore_best=True)
    halve = _HalveOnPlateau(opt, int(spec["lr_patience"]), delta)
    hist = fit(model, split, epochs=epochs, optimizer=opt, batch_size=int(spec["batch_size"]),
               loss=loss, callbacks=[halve, stopper],
               progress=False, seed=seed, clip_weights=True)
    # stopped: the patience ran out (possibly in the cap's own last epoch); otherwise the run
    # hit the cap while its validation accuracy was still improving within the patience
    return hist, stopper.best_epoch, bool(stopper.stop_training)


def _train(spec: Mapping, split, teacher: nn.Module | None = None) -> tuple[nn.Module, dict]:
    """Train the spec's model on ``split``; return it (best weights) and the training record."""
    torch.manual_seed(int(spec["seed"]))
    rung, cap, seed = spec["rung"], int(spec["max_epochs"]), int(spec["seed"])
    two_step = rung in ("twostep", "distill")
    student = build_model(spec, binary_weights=not two_step)
    model: nn.Module = student
    loss: Any = "cross_entropy"
    if rung == "distill":
        if teacher is None:
            raise ValueError("the distill rung needs its teacher")
        model = _Distilled(student, teacher)
        loss = model.loss
    steps: list[dict] = []
    if two_step:
        e1 = max(1, cap // 2)
        h1, b1, s1 = _fit_step(model, split, spec, e1, seed, loss)
        steps.append({"step": 1, "history": h1.as_dict(), "best_epoch": b1,
                      "stopped_early": s1, "cap": e1})
        _binarize_weights_(student)
        e2 = max(1, cap - e1)
        h2, b2, s2 = _fit_step(model, split, spec, e2, seed + 1000, loss)
        steps.append({"step": 2, "history": h2.as_dict(), "best_epoch": b2,
                      "stopped_early": s2, "cap": e2})
    else:
        h, b, st = _fit_step(model, split, spec, cap, seed, loss)
        steps.append({"step": 1, "history": h.as_dict(), "best_epoch": b,
                      "stopped_early": st, "cap": cap})
    return student, {"steps": steps}


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _teacher(spec: Mapping, split, teacher_dir: Path | None) -> nn.Module:
    """The float rung of the same seed: loaded from ``teacher_dir`` or trained (deterministic)."""
    tspec = dict(spec["teacher"])
    path = None if teacher_dir is None else Path(teacher_dir) / f"{spec_hash(tspec)}.safetensors"
    model: nn.Module = build_model(tspec)
    if path is not None and path.is_file():
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(path)))
        return model.eval()
    model, _ = _train(tspec, split)
    if path is not None:
        _save_weights(model, path)
    return model.eval()


def _state(model: nn.Module) -> dict[str, Tensor]:
    # contiguous copies: safetensors refuses views and tensors that share storage
    return {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}


def _save_weights(model: nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    save_file(_state(model), str(tmp))
    os.replace(tmp, path)


def weights_sha256(model: nn.Module) -> str:
    """SHA-256 of the model's state dict as safetensors bytes (names sorted, so deterministic).

    The float rung's record carries it as ``weights_sha256`` and the distill rung's as
    ``teacher_sha256``, so :func:`run_ladder` can prove every student learnt from its seed's
    own float run (a cached teacher from other code would show as a mismatch)."""
    from safetensors.torch import save

    return hashlib.sha256(save(_state(model))).hexdigest()


def teacher_cache_dir() -> Path:
    """Where the ``"ladder"`` runner caches float weights for the distill rung.

    ``$BNNLAB_LADDER_TEACHERS`` if set, else ``ladder-teachers`` in the data cache
    (:func:`bnnlab.data.default_cache_dir`). Workers of one machine (a LocalCluster) share it;
    on a cluster each node trains a teacher it has not seen (same seed, same weights)."""
    from bnnlab.data import default_cache_dir

    env = os.environ.get("BNNLAB_LADDER_TEACHERS")
    return Path(env) if env else default_cache_dir() / "ladder-teachers"


def run_rung(spec: Mapping, *, teacher_dir=None, num_threads: int | None = 1) -> dict:
    """Train one rung with one seed and evaluate it: a pure function of ``spec``.

    Args:
        spec: from :func:`rung_spec` / :func:`ladder_specs`.
        teacher_dir: where float rungs save their weights and the distill rung looks for its
            teacher (a cache: without it the teacher is trained again, with the same result).
        num_threads: torch threads during the run (restored). Default: ``1``.

    Returns:
        A JSON-able record: ``spec``, ``rung``, ``label``, ``seed``, ``steps`` (per training
        step: ``history``, ``best_epoch``, ``stopped_early``, ``cap``), ``best_epoch``,
        ``epochs_run`` (all steps), ``stopped_early`` (the last step's patience ran out, at
        the cap's last epoch included) and ``hit_cap`` (its negation: the cap ended a run
        whose validation accuracy was still improving within the patience),
        ``val_acc`` and ``test_acc`` at the best epoch, ``params``, ``seconds``.
    """
    spec = _check_spec(spec)
    old = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(int(num_threads))
    t0 = time.perf_counter()
    try:
        split = load_data(spec)
        teacher = _teacher(spec, split, teacher_dir) if spec["rung"] == "distill" else None
        model, rec = _train(spec, split, teacher)
        if spec["rung"] == "float" and teacher_dir is not None:
            _save_weights(model, Path(teacher_dir) / f"{spec_hash(spec)}.safetensors")
        shas = ({"weights_sha256": weights_sha256(model)} if spec["rung"] == "float" else
                {"teacher_sha256": weights_sha256(teacher)} if teacher is not None else {})
        val = evaluate(model, *split.val)["accuracy"]
        test = evaluate(model, *split.test)["accuracy"]
    finally:
        torch.set_num_threads(old)
    last = rec["steps"][-1]
    return {
        "schema": SCHEMA, "spec": spec, "hash": spec_hash(spec), "rung": spec["rung"],
        "label": RUNG_LABELS[spec["rung"]], "seed": spec["seed"], "steps": rec["steps"],
        "best_epoch": last["best_epoch"],
        "epochs_run": sum(len(s["history"]["epoch"]) for s in rec["steps"]),
        "stopped_early": bool(last["stopped_early"]), "hit_cap": not last["stopped_early"],
        "val_acc": float(val), "test_acc": float(test), "params": _params(model),
        "seconds": time.perf_counter() - t0, "torch": torch.__version__,
        "threads": int(num_threads) if num_threads is not None else old, **shas,
    }


def ladder_runner(spec: dict[str, Any]) -> dict[str, Any]:
    """The runner ``"ladder"`` of :mod:`bnnlab.runs`: :func:`run_rung` on a sweep spec.

    ``spec`` is a ladder spec plus ``"runner"``; the run is on the executor's torch threads
    (the sweep sets them). Float runs leave their weights in :func:`teacher_cache_dir`, where
    the distill rung of the same seed finds its teacher; where it is missing (another node, or
    the float run still in flight) the teacher is trained again (same seed, same weights).
    """
    rung = {k: v for k, v in spec.items() if k != "runner"}
    return run_rung(rung, teacher_dir=teacher_cache_dir(), num_threads=None)


# =============================================================================================
# The ladder
# =============================================================================================
def _write_json(path: Path, payload: Mapping) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=True))
    os.replace(tmp, path)


def run_ladder(profile: str = "quick", out="ladder", seeds: Iterable[int] | None = None, *,
               overrides: Mapping[str, Any] | None = None,
               log: Callable[[str], None] = print, client: Any = None,
               scheduler: str | None = None, workers: int | None = None) -> list[dict]:
    """Run every spec of :func:`ladder_specs`, one ``<hash>.json`` per run in ``out/runs``.

    Runs whose file exists are loaded, not rerun (resume). Writes ``out/ladder.json`` (profile,
    machine, wall time) at the end.

    By default the runs execute serially in this process (the float twins' weights are cached
    in ``out/weights`` for the distill rung). With ``client`` (a :class:`distributed.Client`),
    ``scheduler`` (an address) or ``workers`` (an embedded :class:`~distributed.LocalCluster`),
    the missing runs are submitted to Dask by :func:`bnnlab.sweep.run_sweep` through the
    registered runner ``"ladder"``; their records land in the results store ``out/store``
    (resumable as well) and are copied to ``out/runs``.

    Returns:
        The records, in :func:`ladder_specs` order.
    """
    out = Path(out)
    specs = ladder_specs(profile, seeds, **dict(overrides or {}))
    records = []
    t0 = time.perf_counter()
    missing = sum(not (out / "runs" / f"{spec_hash(s)}.json").is_file() for s in specs)
    earlier = _earlier_wall_seconds(out, specs)
    load0 = os.getloadavg()[0]
    if client is not None or scheduler is not None or workers is not None:
        _run_on_dask(specs, out, client=client, scheduler=scheduler, workers=workers, log=log)
    for i, spec in enumerate(specs, 1):
        path = out / "runs" / f"{spec_hash(spec)}.json"
        if path.is_file():
            rec = json.loads(path.read_text())
            log(f"[ladder] {i}/{len(specs)} {spec['rung']} seed {spec['seed']}: done before")
        else:
            rec = run_rung(spec, teacher_dir=out / "weights")
            _write_json(path, rec)
            log(f"[ladder] {i}/{len(specs)} {spec['rung']:<9} seed {spec['seed']}: test "
                f"{rec['test_acc']:.4f}, best epoch {rec['best_epoch']}/{rec['epochs_run']}"
                f"{' (cap)' if rec['hit_cap'] else ''}, {rec['seconds']:.0f} s")
        records.append(rec)
    _check_teachers(records)
    _write_json(out / "ladder.json", {
        "schema": SCHEMA, "profile": profile, "seeds": sorted({s["seed"] for s in specs}),
        "rungs": list(RUNGS), "labels": RUNG_LABELS, "sources": RUNG_SOURCES,
        "settings": {k: v for k, v in specs[0].items()
                     if k not in ("rung", "seed", "kind", "teacher")},
        "runs": [spec_hash(s) for s in specs],
        # the wall time of the invocations that ran something (a resume that runs nothing
        # keeps the time of the ladder it found)
        "wall_seconds": earlier + (time.perf_counter() - t0 if missing else 0.0),
        "run_seconds": sum(r["seconds"] for r in records),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    # 1-minute load average when the invocation started and ended (how busy
                    # the machine was: the wall time depends on it)
                    "load_average": [load0, os.getloadavg()[0]] if missing else
                    _earlier_load(out, specs),
                    "python": platform.python_version(), "torch": torch.__version__},
    })
    return records


def _check_teachers(records: Sequence[Mapping]) -> None:
    """Every distill record's teacher must be its seed's float run (same weights' SHA-256)."""
    floats = {r["seed"]: r.get("weights_sha256") for r in records if r["rung"] == "float"}
    for r in records:
        want, got = floats.get(r["seed"]), r.get("teacher_sha256")
        if r["rung"] == "distill" and want and got and want != got:
            raise RuntimeError(
                f"ladder: the distill run of seed {r['seed']} learnt from a teacher whose weights "
                f"differ from that seed's float run (SHA-256 {got[:12]} vs {want[:12]}): a stale "
                f"teacher cache from other code; delete {teacher_cache_dir()} (or the run's "
                f"out/weights) and its record, then run again")


def _load_text(machine: Mapping) -> str:
    """`` at load average A–B`` from a ladder.json ``machine`` entry (empty for old files)."""
    load = machine.get("load_average")
    if not load:
        return ""
    lo, hi = min(load), max(load)
    return f" at load average {lo:.1f}" + (f"–{hi:.1f}" if hi - lo >= 0.05 else "")


def _earlier_meta(out: Path, specs: Sequence[Mapping]) -> dict:
    """``out/ladder.json`` of an earlier invocation on the same runs ({} when none or bad)."""
    try:
        meta = json.loads((out / "ladder.json").read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(meta, dict) or not set(meta.get("runs", [])) <= {spec_hash(s) for s in specs}:
        return {}
    return meta


def _earlier_load(out: Path, specs: Sequence[Mapping]) -> list[float]:
    """The load averages an earlier invocation recorded for the same runs ([] when none)."""
    try:
        return [float(v) for v in _earlier_meta(out, specs)["machine"]["load_average"]]
    except (KeyError, TypeError, ValueError):
        return []


def _earlier_wall_seconds(out: Path, specs: Sequence[Mapping]) -> float:
    """The wall time recorded by an earlier invocation on the same runs (0 when none)."""
    wall = _earlier_meta(out, specs).get("wall_seconds", 0.0)
    return float(wall) if isinstance(wall, (int, float)) and math.isfinite(wall) else 0.0


def _run_on_dask(specs: list[dict], out: Path, *, client: Any, scheduler: str | None,
                 workers: int | None, log: Callable[[str], None]) -> None:
    """Submit the specs without a ``runs/<hash>.json`` to Dask; copy their records there."""
    from bnnlab import runs, sweep

    todo = [s for s in specs if not (out / "runs" / f"{spec_hash(s)}.json").is_file()]
    if not todo:
        return
    store = runs.ResultStore(out / "store")
    sweep_specs = [{"runner": "ladder", **s} for s in todo]
    report = sweep.run_sweep(sweep_specs, store, client=client, scheduler=scheduler,
                             workers=workers, log=log)
    if report.failed:
        raise RuntimeError(f"ladder: {len(report.failed)} run(s) failed on Dask: "
                           + "; ".join(report.failed.values()))
    for spec, sweep_spec in zip(todo, sweep_specs, strict=True):
        record = store.get(sweep_spec)
        if record is None:  # pragma: no cover - run_sweep reports every missing run as failed
            raise RuntimeError(f"ladder: no record for {spec['rung']} seed {spec['seed']}")
        _write_json(out / "runs" / f"{spec_hash(spec)}.json", record["result"])


def load_ladder(out) -> dict | None:
    """``{"meta": ladder.json, "runs": [records]}`` of a finished ladder directory, or ``None``."""
    out = Path(out)
    meta_path = out / "ladder.json"
    if not meta_path.is_file():
        return None
    meta = json.loads(meta_path.read_text())
    if meta.get("schema") != SCHEMA:
        raise ValueError(f"{meta_path}: schema {meta.get('schema')!r}, expected {SCHEMA!r}")
    runs = []
    for h in meta["runs"]:
        p = out / "runs" / f"{h}.json"
        if not p.is_file():
            raise ValueError(f"{out}: run {h} listed in ladder.json is missing")
        runs.append(json.loads(p.read_text()))
    return {"meta": meta, "runs": runs}


def markdown_table(out) -> str:
    """The finished ladder in ``out`` as a Markdown table (the README's): per rung the test
    accuracy (mean ± sd over seeds), the step from the rung before (paired by seed, 95 %
    t-interval) with its verdict, the stopped-early / hit-cap counts and the mean best epoch,
    followed by one line naming the profile, the seeds and the wall time.

    Raises:
        ValueError: ``out`` holds no finished ladder (no ``ladder.json``).
    """
    from bnnlab import figures

    lad = load_ladder(out)
    if lad is None:
        raise ValueError(f"out: {out} holds no finished ladder (no ladder.json)")
    rows = figures.ladder_stats({"ladder": lad})
    lines = ["| rung | test accuracy (%) | step (points, 95 % CI) | verdict | stopped / capped "
             "| best epoch |", "|---|---:|---|---|---:|---:|"]
    for r in rows:
        d = r["diff"]
        if r["verdict"] == "first":
            step = "–"
        else:
            ci = "" if math.isnan(d["lo"]) else f" [{d['lo'] * 100:+.1f}, {d['hi'] * 100:+.1f}]"
            step = f"{d['mean'] * 100:+.1f}{ci}"
        acc = f"{r['mean'] * 100:.1f}" + ("" if r["n"] < 2 else f" ± {r['sd'] * 100:.1f}")
        flag = " †" if r["under_trained"] else ""
        lines.append(f"| {r['label']}{flag} | {acc} | {step} | "
                     f"{'reference' if r['verdict'] == 'first' else r['verdict']} | "
                     f"{r['stopped']} / {r['capped']} | {r['best_epoch']:.1f} |")
    meta = lad["meta"]
    s = meta["settings"]
    lines.append("")
    lines.append(f"Profile `{meta['profile']}`: {len(meta['seeds'])} seed(s) per rung, "
                 f"{'all' if s['n_train'] is None else s['n_train']} training images "
                 f"({28 // int(s['pool'])}×{28 // int(s['pool'])}), at most {s['max_epochs']} "
                 f"epochs (learning rate halved after {s['lr_patience']} and training stopped "
                 f"after {s['patience']} epochs without a validation gain above "
                 f"{float(s.get('min_delta', 0.0)) * 100:.1f} points); {len(lad['runs'])} runs, "
                 f"{meta['wall_seconds'] / 60:.1f} min wall time on {meta['machine']['cpus']} "
                 f"CPU(s){_load_text(meta['machine'])}. † under-trained: most seeds hit the epoch "
                 f"cap.")
    return "\n".join(lines) + "\n"


README_BEGIN = "<!-- ladder:begin"
README_END = "<!-- ladder:end -->"


def update_readme(readme, out, *, check: bool = False) -> bool:
    """Rewrite the ``<!-- ladder:begin ... -->`` / ``<!-- ladder:end -->`` block of ``readme``
    with :func:`markdown_table` of the finished ladder in ``out``.

    Returns True when the block already matched. With ``check=True`` nothing is written.

    Raises:
        ValueError: ``readme`` has no such block, or ``out`` holds no finished ladder.
    """
    from bnnlab._readme import update_block

    table = markdown_table(out)   # refuses an unfinished ladder before the README is read
    return update_block(readme, out, README_BEGIN, README_END, lambda source: (
        f"{README_BEGIN} generated from {source} by `python -m bnnlab ladder --out {source} "
        f"--update-readme README.md`; do not edit -->\n" + table + README_END), check=check)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bnnlab ladder [--profile quick|full|paper] [--out DIR] [--seeds N ...]``."""
    parser = argparse.ArgumentParser(prog="python -m bnnlab ladder",
                                     description="Run the ablation ladder (one JSON per run).")
    parser.add_argument("--profile", choices=tuple(PROFILES), default="quick")
    parser.add_argument("--out", type=Path, default=Path("paper/generated/results/ladder"))
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--list", action="store_true", help="print the specs and exit")
    parser.add_argument("--markdown", action="store_true",
                        help="print the finished ladder in --out as a Markdown table and exit")
    parser.add_argument("--update-readme", type=Path, default=None, metavar="README",
                        help="rewrite README's generated ladder block from the ladder in --out")
    parser.add_argument("--scheduler", default=None,
                        help="run the missing runs on this Dask scheduler (tcp://host:8786)")
    parser.add_argument("--workers", type=int, default=None,
                        help="run the missing runs on an embedded Dask LocalCluster of N workers")
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.list:
        for s in ladder_specs(args.profile, args.seeds):
            print(spec_hash(s), json.dumps(s, sort_keys=True))
        return 0
    if args.markdown or args.update_readme is not None:
        try:
            if args.update_readme is not None:
                same = update_readme(args.update_readme, args.out)
                print(f"[ladder] {args.update_readme}: "
                      f"{'already up to date' if same else 'ladder block rewritten'}")
            else:
                print(markdown_table(args.out), end="")
        except ValueError as e:
            parser.error(str(e))
        return 0
    t0 = time.perf_counter()
    recs = run_ladder(args.profile, args.out, args.seeds, log=lambda s: print(s, flush=True),
                      scheduler=args.scheduler, workers=args.workers)
    print(f"[ladder] {len(recs)} runs in {(time.perf_counter() - t0) / 60:.1f} min -> {args.out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
