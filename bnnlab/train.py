"""A small fit / evaluate loop shared by notebooks, figures and tests (not a framework).

Data stay on CPU tensors and are batched by indexing a seeded permutation: no ``DataLoader``,
no worker processes, so an epoch over 10,000 Fashion-MNIST images costs only the model's
own arithmetic. After every optimiser step the latent-weight constraint of each binary layer
is applied (every module with a ``clip_weights_()`` method, e.g. :class:`~bnnlab.layers.BinaryLinear`
built with ``weight_clip=1.0``).

Examples::

    >>> from bnnlab import data, models, train
    >>> ds = data.load_digits(flatten=True)
    >>> net = models.binary_mlp(64, hidden=(128, 128), num_classes=10)
    >>> hist = train.fit(net, ds, epochs=5, lr=1e-2, progress=False)
    >>> len(hist), sorted(train.evaluate(net, *ds.test))
    (5, ['accuracy', 'loss'])
"""
from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from bnnlab._validation import check_bool, check_choice, check_int, check_real

__all__ = [
    "History",
    "Callback",
    "EarlyStopping",
    "KeepBest",
    "fit",
    "save_checkpoint",
    "load_checkpoint",
    "build_model",
    "CHECKPOINT_FORMAT",
    "evaluate",
    "apply_weight_clip",
    "REFERENCE_SETUPS",
    "ReferenceResult",
    "train_reference",
]


# ---------------------------------------------------------------------------------------------
# History and callbacks
# ---------------------------------------------------------------------------------------------
@dataclass
class History:
    """Per-epoch record of a :func:`fit` run.

    Attributes:
        epoch: epoch numbers, starting at 1.
        train_loss: mean training loss over the epoch's batches (training mode, as the
            weights moved).
        train_acc: running training accuracy over the epoch (``nan`` for regression).
        val_loss, val_acc: loss and accuracy on the validation part at the end of the epoch,
            in eval mode (``nan`` when there is no validation part).
        time: wall-clock seconds of each epoch (training + validation).
        lr: learning rate used during each epoch (first parameter group).
        stopped_early: ``True`` when a callback stopped training.
    """

    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    time: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    stopped_early: bool = False

    _KEYS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "time", "lr")

    def __len__(self) -> int:
        return len(self.epoch)

    @property
    def total_time(self) -> float:
        """Sum of the epoch times in seconds."""
        return float(sum(self.time))

    def as_dict(self) -> dict[str, list]:
        """Plain dict of lists (for JSON, pandas or plotting)."""
        return {k: list(getattr(self, k)) for k in self._KEYS}

    def best(self, metric: str = "val_acc") -> tuple[int, float]:
        """``(epoch, value)`` of the best epoch by ``metric`` (max for ``*_acc``, min for losses)."""
        if metric not in self._KEYS[1:5]:
            raise ValueError(f"metric must be one of {self._KEYS[1:5]}, got {metric!r}")
        values = getattr(self, metric)
        if not values:
            raise ValueError("history is empty")
        sign = -1.0 if metric.endswith("acc") else 1.0
        finite = [(sign * v, i) for i, v in enumerate(values) if not math.isnan(v)]
        if not finite:
            raise ValueError(f"{metric} has no finite values")
        _, i = min(finite)
        return self.epoch[i], values[i]

    def __repr__(self) -> str:
        if not self.epoch:
            return "History(empty)"
        last = {k: getattr(self, k)[-1] for k in ("train_loss", "train_acc", "val_loss", "val_acc")}
        body = ", ".join(f"{k}={v:.4f}" for k, v in last.items())
        return f"History(epochs={len(self)}, {body}, time={self.total_time:.1f}s)"


class Callback:
    """Base class for :func:`fit` callbacks; every hook is optional.

    Any object with some of these methods works (duck typing); subclassing is a convenience.
    A hook stops training by returning ``True`` or by setting ``self.stop_training = True``.

    Hooks:
        ``on_train_begin(model, history)``;
        ``on_batch_end(batch, loss, model)`` with the global batch index and the batch loss
        (a float);
        ``on_epoch_end(epoch, history, model)`` after validation, ``history`` already holds
        the epoch;
        ``on_train_end(model, history)``.
    """

    stop_training: bool = False


class EarlyStopping(Callback):
    """Stop when a validation metric has not improved for ``patience`` epochs.

    Args:
        monitor: ``"val_loss"`` (minimised) or ``"val_acc"`` (maximised). Default: ``"val_loss"``.
        patience: epochs without improvement before stopping. Default: ``3``.
        min_delta: smallest change that counts as an improvement. Default: ``0.0``.
        restore_best: load the weights of the best epoch back into the model when training
            ends. Default: ``True``.
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 3, min_delta: float = 0.0,
                 restore_best: bool = True) -> None:
        if monitor not in ("val_loss", "val_acc", "train_loss", "train_acc"):
            raise ValueError(f"monitor must be 'val_loss', 'val_acc', 'train_loss' or "
                             f"'train_acc', got {monitor!r}")
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"patience must be an int >= 0, got {patience!r}")
        self.monitor, self.patience, self.min_delta = monitor, patience, float(min_delta)
        self.restore_best = restore_best
        self.mode = "max" if monitor.endswith("acc") else "min"
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self._best_state: dict | None = None
        self._wait = 0
        self.stop_training = False

    def on_train_begin(self, model, history) -> None:
        self.best_value, self.best_epoch, self._best_state, self._wait = None, None, None, 0
        self.stop_training = False

    def on_epoch_end(self, epoch, history, model) -> bool:
        value = getattr(history, self.monitor)[-1]
        better = (self.best_value is None
                  or (self.mode == "min" and value < self.best_value - self.min_delta)
                  or (self.mode == "max" and value > self.best_value + self.min_delta))
        if better:
            self.best_value, self.best_epoch, self._wait = value, epoch, 0
            if self.restore_best:
                self._best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            self._wait += 1
            if self._wait > self.patience:
                self.stop_training = True
        return self.stop_training

    def on_train_end(self, model, history) -> None:
        if self.restore_best and self._best_state is not None:
            model.load_state_dict(self._best_state)


class KeepBest:
    """:func:`bnnlab.train.fit` callback: keep a copy of the weights of the best epoch.

    "Best" is judged on ``monitor`` (a validation metric of the
    :class:`History`), never on test data; ties keep the earliest epoch, as
    ``bnnlab.experiments.select_best``. After training, :meth:`restore` loads those weights back.

    Args:
        monitor: ``"val_acc"`` (maximised) or ``"val_loss"`` (minimised). Default: ``"val_acc"``.

    Attributes:
        best_epoch: epoch number of the kept weights (``None`` before the first epoch).
        best_value: its ``monitor`` value.
    """

    stop_training = False

    def __init__(self, monitor: str = "val_acc") -> None:
        if monitor not in ("val_acc", "val_loss"):
            raise ValueError(f"monitor must be 'val_acc' or 'val_loss', got {monitor!r}")
        self.monitor = monitor
        self.mode = "max" if monitor == "val_acc" else "min"
        self.best_epoch: int | None = None
        self.best_value = math.nan
        self._state: dict[str, Tensor] | None = None

    def on_epoch_end(self, epoch, history, model) -> None:
        value = float(getattr(history, self.monitor)[-1])
        if math.isnan(value):
            return
        better = value > self.best_value if self.mode == "max" else value < self.best_value
        if self.best_epoch is None or better:      # strict: ties keep the earliest epoch
            self.best_epoch, self.best_value = int(epoch), value
            self._state = copy.deepcopy(model.state_dict())

    def restore(self, model: nn.Module) -> nn.Module:
        """Load the kept weights into ``model`` (eval mode) and return it."""
        if self._state is None:
            raise RuntimeError("no epoch was recorded: train for at least one epoch with a "
                               "validation part")
        model.load_state_dict(self._state)
        return model.eval()


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------
def apply_weight_clip(model: nn.Module) -> None:
    """Apply the latent-weight constraint of every module that has ``clip_weights_()``."""
    for m in model.modules():
        clip = getattr(m, "clip_weights_", None)
        if callable(clip):
            clip()


def _resolve_loss(loss) -> tuple[Callable[[Tensor, Tensor], Tensor], bool]:
    """-> (loss function, is_classification)."""
    if loss is None or loss == "cross_entropy":
        return F.cross_entropy, True
    if loss == "mse":
        return F.mse_loss, False
    if callable(loss):
        return loss, True
    raise ValueError(f"loss must be 'cross_entropy', 'mse' or a callable, got {loss!r}")


def _make_optimizer(optimizer, params, lr: float, weight_decay: float):
    if isinstance(optimizer, torch.optim.Optimizer):
        return optimizer
    if isinstance(optimizer, str):
        name = optimizer.lower()
        if name == "adam":
            return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
        if name == "adamw":
            return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        if name == "sgd":
            return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
        raise ValueError(f"optimizer must be 'adam', 'adamw', 'sgd', an Optimizer or a "
                         f"callable, got {optimizer!r}")
    if callable(optimizer):
        return optimizer(params)
    raise TypeError(f"optimizer must be a str, a torch.optim.Optimizer or a callable, "
                    f"got {type(optimizer).__name__}")


def _make_schedule(schedule, opt, epochs: int, steps_per_epoch: int):
    """-> (scheduler or None, step per 'batch' or 'epoch')."""
    if schedule is None:
        return None, None
    if schedule == "cosine":
        total = max(1, epochs * steps_per_epoch)
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total), "batch"
    if schedule == "linear":
        total = max(1, epochs * steps_per_epoch)
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1.0 - s / total)), "batch"
    if callable(schedule):
        return schedule(opt), "epoch"
    raise ValueError(f"schedule must be None, 'cosine', 'linear' or a callable, got {schedule!r}")


def _unpack_data(data):
    """Accept a Split-like object (``.train``, optional ``.val``) or a ``(x, y)`` pair."""
    if hasattr(data, "train"):
        train = data.train
        val = getattr(data, "val", None)
    elif isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        train, val = tuple(data), None
    else:
        raise TypeError("data must be a bnnlab.data.Split (or any object with .train/.val "
                        "(x, y) pairs) or a tuple (x, y) of tensors")
    from torch.utils.data import Dataset

    for name, pair in (("data.train", train), ("data.val", val)):
        if pair is None or (name == "data.train" and isinstance(pair, Dataset)):
            continue
        if len(pair) != 2 or not all(isinstance(t, Tensor) for t in pair):
            raise TypeError(f"{name} must be a pair (x, y) of tensors")
        if pair[0].shape[0] != pair[1].shape[0]:
            raise ValueError(f"{name}: x and y have different lengths")
    if val is not None and val[0].shape[0] == 0:
        val = None
    if isinstance(train, Dataset) and len(train) == 0:   # type: ignore[arg-type]
        raise ValueError("data.train is empty")
    return train, val


def _call(cb, hook: str, *args) -> bool:
    fn = getattr(cb, hook, None)
    stop = bool(fn(*args)) if callable(fn) else False
    return stop or bool(getattr(cb, "stop_training", False))


def _correct(out: Tensor, y: Tensor) -> Tensor:
    return (out.argmax(dim=1) == y).sum()


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def _resolve_device(device: str | torch.device | None, model: nn.Module) -> torch.device:
    if device is None:
        return _model_device(model)
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be a str, a torch.device or None, got "
                        f"{type(device).__name__}")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"device: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but torch.cuda.is_available() is False")
    return dev


def _dist_info() -> tuple[int, int]:
    """``(rank, world_size)`` of an initialised process group, else ``(0, 1)``."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


# ---------------------------------------------------------------------------------------------
# Checkpoints (pickle-free: safetensors + JSON metadata)
# ---------------------------------------------------------------------------------------------
CHECKPOINT_FORMAT = "bnnlab.checkpoint/1"


def save_checkpoint(path: str | os.PathLike[str], model: nn.Module, *, optimizer=None,
                    scheduler=None, generator: torch.Generator | None = None,
                    history: History | None = None, epoch: int = 0,
                    extra: dict | None = None) -> Path:
    """Write a pickle-free training checkpoint (a ``.safetensors`` file), atomically.

    Tensors: the model's ``state_dict`` (``model.*``), the optimiser's per-parameter state
    (``optim.<index>.<name>``), the shuffling generator's state and torch's global CPU (and
    CUDA) RNG states (``rng.*``). JSON metadata: the format, ``epoch``, the history, the
    optimiser's non-tensor state and param groups, the scheduler's ``state_dict`` and
    ``extra``. Loaded by :func:`load_checkpoint` (``safetensors`` never unpickles).
    """
    from safetensors.torch import save_file

    path = Path(path)
    tensors: dict[str, Tensor] = {}
    for k, v in model.state_dict().items():
        tensors[f"model.{k}"] = v.detach().cpu().contiguous().clone()
    meta: dict[str, str] = {"format": CHECKPOINT_FORMAT, "epoch": str(int(epoch)),
                            "extra": json.dumps(extra or {})}
    if optimizer is not None:
        sd = optimizer.state_dict()
        plain: dict[str, dict] = {}
        for pid, st in sd["state"].items():
            plain[str(pid)] = {}
            for name, v in st.items():
                if isinstance(v, Tensor):
                    tensors[f"optim.{pid}.{name}"] = v.detach().cpu().contiguous().clone()
                else:
                    plain[str(pid)][name] = v
        meta["optim"] = json.dumps({"state": plain, "param_groups": sd["param_groups"]})
    if scheduler is not None:
        meta["sched"] = json.dumps(scheduler.state_dict())
    if generator is not None:
        tensors["rng.shuffle"] = generator.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    if history is not None:
        meta["history"] = json.dumps({**history.as_dict(),
                                      "stopped_early": history.stopped_early})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | os.PathLike[str], model: nn.Module, *, optimizer=None,
                    scheduler=None, generator: torch.Generator | None = None,
                    history: History | None = None, restore_rng: bool = True) -> int:
    """Load a :func:`save_checkpoint` file into the given objects; return its epoch.

    Raises:
        ValueError: not a bnnlab checkpoint, or its tensors do not fit ``model``.
    """
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    except (OSError, RuntimeError) as exc:
        raise ValueError(f"{path}: not a safetensors checkpoint ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own SafetensorError
        raise ValueError(f"{path}: not a safetensors checkpoint ({exc})") from None
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a {CHECKPOINT_FORMAT} file")
    dev = _model_device(model)
    state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"{path}: does not fit the model ({exc})") from None
    if optimizer is not None and "optim" in meta:
        o = json.loads(meta["optim"])
        st: dict[int, dict] = {}
        for pid, plain in o["state"].items():
            st[int(pid)] = dict(plain)
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, pid, name = k.split(".", 2)
                st.setdefault(int(pid), {})[name] = v.to(dev) if v.ndim else v
        optimizer.load_state_dict({"state": st, "param_groups": o["param_groups"]})
    if scheduler is not None and "sched" in meta:
        scheduler.load_state_dict(json.loads(meta["sched"]))
    if generator is not None and "rng.shuffle" in tensors:
        generator.set_state(tensors["rng.shuffle"])
    if restore_rng:
        torch.set_rng_state(tensors["rng.torch"])
        if "rng.cuda" in tensors and torch.cuda.is_available():
            torch.cuda.set_rng_state(tensors["rng.cuda"])
    if history is not None and "history" in meta:
        h = json.loads(meta["history"])
        for key in History._KEYS:
            getattr(history, key)[:] = h[key]
    return int(meta["epoch"])


def build_model(name: str, **kwargs) -> nn.Module:
    """A model by name: a builder of :mod:`bnnlab.models` (``"binary_mlp"``, ``"vgg_small"``,
    ...) or any ``"package.module:function"`` returning an ``nn.Module``."""
    import importlib

    from bnnlab import models

    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    if ":" in name:
        module, _, func = name.partition(":")
        builder = getattr(importlib.import_module(module), func)
    else:
        public = [b for b in models.__all__ if b != "count_parameters"]
        check_choice(name, "model", public)
        builder = getattr(models, name)
    model = builder(**kwargs)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model builder {name!r} returned {type(model).__name__}")
    return model


def _batches(train, perm: Tensor, gen: torch.Generator, *, stream: bool, batch_size: int,
             local_bs: int, rank: int, world: int, augment, num_workers: int, pin: bool):
    """Yield ``(x_local, y_local, global_batch_size)`` for one epoch (see :func:`fit`)."""
    n = perm.shape[0]
    if not stream:
        x, y = train
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            n_global = idx.shape[0]
            if augment is not None:     # on the global batch: every rank draws the same
                xb, yb = augment(x[idx], gen), y[idx]
                if world > 1:
                    xb, yb = xb[rank::world], yb[rank::world]
            else:
                if world > 1:
                    idx = idx[rank::world]
                xb, yb = x[idx], y[idx]
            yield xb, yb, n_global
        return
    from torch.utils.data import DataLoader

    order = perm
    if world > 1:                       # pad to equal shares, as DistributedSampler does
        total = math.ceil(n / world) * world
        order = torch.cat([perm, perm[:total - n]])[rank::world]
    # augmentation draws from its own stream (seeded from the shared generator), so every
    # rank's shuffling generator stays in step
    aug_gen = None
    if augment is not None:
        aug_gen = torch.Generator().manual_seed(
            int(torch.randint(0, 2 ** 62, (1,), generator=gen)) + rank)
    loader = DataLoader(train, batch_size=local_bs, sampler=order.tolist(),
                        num_workers=num_workers, pin_memory=pin)
    for xb, yb in loader:
        if augment is not None:
            xb = augment(xb, aug_gen)
        yield xb, yb, xb.shape[0] * world


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int = 1000,
             loss="cross_entropy") -> dict[str, float]:
    """Loss and accuracy of ``model`` on ``(x, y)``, in eval mode, without gradients.

    The model's training/eval mode is restored afterwards.

    Args:
        model: the network.
        x, y: inputs and targets (class indices, or float targets for ``loss="mse"``).
        batch_size: evaluation batch size (memory only; the result does not depend on it).
        loss: ``"cross_entropy"``, ``"mse"`` or a callable ``(output, target) -> mean loss``.

    Returns:
        ``{"loss": float, "accuracy": float}`` (accuracy is ``nan`` for ``"mse"``).
    """
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise TypeError("x and y must be tensors")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} rows but y has {y.shape[0]}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    loss_fn, classify = _resolve_loss(loss)
    n = x.shape[0]
    if n == 0:
        return {"loss": math.nan, "accuracy": math.nan}
    was_training = model.training
    model.eval()
    try:
        total_loss = 0.0
        correct = 0
        for i in range(0, n, batch_size):
            xb, yb = x[i:i + batch_size], y[i:i + batch_size]
            out = model(xb)
            total_loss += float(loss_fn(out, yb)) * xb.shape[0]
            if classify:
                correct += int(_correct(out, yb))
    finally:
        model.train(was_training)
    return {"loss": total_loss / n, "accuracy": correct / n if classify else math.nan}


# ---------------------------------------------------------------------------------------------
# fit
# ---------------------------------------------------------------------------------------------
def fit(model: nn.Module, data, *, epochs: int, lr: float = 1e-3, batch_size: int = 128,
        optimizer="adam", weight_decay: float = 0.0, loss="cross_entropy", schedule=None,
        callbacks: Iterable = (), progress: bool = True, seed: int = 0,
        clip_weights: bool = True, eval_batch_size: int = 1000,
        num_threads: int | None = None, device: str | torch.device | None = None,
        checkpoint: str | os.PathLike[str] | None = None, resume: bool = False,
        augment: Callable[[Tensor, torch.Generator], Tensor] | None = None,
        num_workers: int = 0) -> History:
    """Train ``model`` on ``data`` for ``epochs`` epochs and return the :class:`History`.

    Each epoch shuffles the training part with a generator seeded from ``seed`` (the global
    torch RNG is not touched), takes mini-batches by indexing, and after each optimiser step
    calls ``clip_weights_()`` on every module that has it (the binary layers' latent-weight
    clip). Validation runs in eval mode at the end of each epoch.

    Args:
        model: network to train (in place).
        data: a :class:`bnnlab.data.Split` (its ``train`` is fitted, its ``val`` is reported;
            ``test`` is never touched), or a ``(x, y)`` pair without validation.
        epochs: number of passes over the training part.
        lr: learning rate. Default: ``1e-3``.
        batch_size: mini-batch size; the last, smaller batch is kept. Default: ``128``.
        optimizer: ``"adam"``, ``"adamw"``, ``"sgd"`` (momentum 0.9), a
            :class:`torch.optim.Optimizer`, or a callable ``params -> optimizer``.
            Default: ``"adam"``.
        weight_decay: passed to the optimiser built from a name. Default: ``0``.
        loss: ``"cross_entropy"`` (classification), ``"mse"`` (regression) or a callable
            ``(output, target) -> loss`` (then treated as classification for accuracy).
        schedule: ``None``, ``"cosine"`` or ``"linear"`` (per-batch decay to 0 over the run),
            or a callable ``optimizer -> scheduler`` stepped once per epoch.
        callbacks: objects with optional hooks (see :class:`Callback`).
        progress: show a :mod:`tqdm.auto` bar over epochs. Default: ``True``.
        seed: seed of the shuffling. Default: ``0``.
        clip_weights: apply the binary layers' weight clip after each step. Default: ``True``.
        eval_batch_size: batch size of the validation pass. Default: ``1000``.
        num_threads: torch intra-op threads during the run (restored afterwards); ``None``
            keeps the current setting. On a machine whose cores are shared with other busy
            processes, ``1`` can be several times faster than oversubscribed threads.

        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a :class:`torch.device`; the model is
            moved there, and each mini-batch follows it (pinned memory on CUDA). Default:
            ``None``, the device of the model's first parameter.
        checkpoint: file written (atomically, pickle-free, :func:`save_checkpoint`) at the end
            of every epoch: weights, optimiser, schedule, shuffling and torch RNG states,
            history and epoch. Under DDP only rank 0 writes. Default: ``None``.
        resume: continue from ``checkpoint`` when it exists (an interrupted run, resumed,
            ends with the weights of an uninterrupted one). Callbacks start afresh.
        augment: ``(x_batch, generator) -> x_batch`` applied to each training batch, drawing
            from the shuffling generator (e.g. :func:`bnnlab.data.augment_crop_flip`).
            Default: ``None``.
        num_workers: DataLoader worker processes when ``data.train`` is a Dataset.
            Default: ``0``.

    When ``data.train`` is a :class:`torch.utils.data.Dataset` (data that do not fit in one
    tensor), its samples stream through a :class:`~torch.utils.data.DataLoader` with
    ``num_workers`` worker processes (pinned memory on CUDA), in the order of the same seeded
    permutation; under DDP the permutation is padded to a multiple of the world size and
    rank ``r`` takes its ``r``-th share (what ``DistributedSampler`` does), in local batches of
    ``batch_size // world_size``.

    Under ``torchrun`` (an initialised :mod:`torch.distributed` process group with more than
    one process) the model is wrapped in
    :class:`~torch.nn.parallel.DistributedDataParallel`: every rank draws the same seeded
    permutation, takes every ``world_size``-th sample of each *global* batch of
    ``batch_size``, and weighs its loss by its share of the batch, so the update equals a
    single process's on the same global batch (BatchNorm statistics are per rank: use a
    BN-free model, or SyncBatchNorm on CUDA, for equality). Training losses and accuracies
    are summed over ranks; validation runs on every rank.

    Returns:
        :class:`History` with one entry per epoch run. The model is left in eval mode.
    """

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    epochs = check_int(epochs, "epochs", min_value=0)
    batch_size = check_int(batch_size, "batch_size", min_value=1)
    lr = check_real(lr, "lr", min_value=0.0, include_min=False)
    num_threads = check_int(num_threads, "num_threads", min_value=1, allow_none=True)
    resume = check_bool(resume, "resume")
    if augment is not None and not callable(augment):
        raise TypeError(f"augment must be callable or None, got {type(augment).__name__}")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs a checkpoint path")
    dev = _resolve_device(device, model)
    num_workers = check_int(num_workers, "num_workers", min_value=0)
    train_part, val = _unpack_data(data)
    stream = not isinstance(train_part, tuple)
    if stream:                  # a torch Dataset: batches stream through a DataLoader
        x = y = None
        n = len(train_part)
    else:
        x, y = train_part
        n = x.shape[0]
    if n == 0:
        raise ValueError("data.train is empty")
    loss_fn, classify = _resolve_loss(loss)
    callbacks = tuple(callbacks)
    model.to(dev)
    rank, world = _dist_info()
    net: nn.Module = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda"
                                      else None)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = _make_optimizer(optimizer, params, float(lr), weight_decay)
    local_bs = max(1, batch_size // world) if stream else batch_size
    steps = math.ceil(math.ceil(n / world) / local_bs) if stream else math.ceil(n / batch_size)
    sched, sched_every = _make_schedule(schedule, opt, epochs, steps)
    gen = torch.Generator().manual_seed(int(seed))
    history = History()
    start = 1
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if resume and ckpt is not None and ckpt.is_file():
        start = load_checkpoint(ckpt, model, optimizer=opt, scheduler=sched, generator=gen,
                                history=history) + 1
    pin = dev.type == "cuda"

    from tqdm.auto import tqdm

    bar = tqdm(range(start, epochs + 1), disable=not progress or rank != 0, desc="fit",
               unit="epoch")
    old_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    stop = any([_call(cb, "on_train_begin", model, history) for cb in callbacks])
    global_batch = (start - 1) * steps
    try:
        for epoch in bar:
            if stop:
                break
            t0 = time.perf_counter()
            lr_now = opt.param_groups[0]["lr"]
            net.train()
            perm = torch.randperm(n, generator=gen)
            loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
            correct = torch.zeros((), dtype=torch.int64, device=dev)
            done_batches = 0
            for xb, yb, n_global in _batches(
                    train_part, perm, gen, stream=stream, batch_size=batch_size,
                    local_bs=local_bs, rank=rank, world=world, augment=augment,
                    num_workers=num_workers, pin=pin):
                done_batches += 1
                if pin:
                    xb, yb = xb.pin_memory(), yb.pin_memory()
                xb, yb = xb.to(dev, non_blocking=pin), yb.to(dev, non_blocking=pin)
                out = net(xb)
                if xb.shape[0] == 0:          # a rank without samples in a short last batch
                    batch_loss = out.sum() * 0.0
                else:
                    batch_loss = loss_fn(out, yb)
                # DDP averages gradients over ranks: weigh each rank's mean by its share of
                # the global batch, so the update is the global batch's mean gradient
                scaled = batch_loss * (xb.shape[0] * world / n_global) if world > 1 \
                    else batch_loss
                opt.zero_grad(set_to_none=True)
                scaled.backward()
                opt.step()
                if clip_weights:
                    apply_weight_clip(model)
                if sched is not None and sched_every == "batch":
                    sched.step()
                with torch.no_grad():
                    loss_sum += batch_loss.detach().double() * xb.shape[0]
                    if classify and xb.shape[0]:
                        correct += _correct(out.detach(), yb)
                if callbacks:
                    lv = float(batch_loss.detach())
                    if any([_call(cb, "on_batch_end", global_batch, lv, model)
                            for cb in callbacks]):
                        stop = True
                global_batch += 1
                if stop:
                    break
            if sched is not None and sched_every == "epoch":
                sched.step()
            seen = min(n, done_batches * batch_size) if stop else n
            if world > 1:
                import torch.distributed as dist

                dist.all_reduce(loss_sum)
                dist.all_reduce(correct)
            history.epoch.append(epoch)
            history.train_loss.append(float(loss_sum) / seen)
            history.train_acc.append(float(correct) / seen if classify else math.nan)
            if val is not None:
                ev = evaluate(model, *val, batch_size=eval_batch_size, loss=loss)
                history.val_loss.append(ev["loss"])
                history.val_acc.append(ev["accuracy"])
            else:
                history.val_loss.append(math.nan)
                history.val_acc.append(math.nan)
            history.lr.append(lr_now)
            history.time.append(time.perf_counter() - t0)
            if progress and rank == 0:
                post = {"loss": f"{history.train_loss[-1]:.4f}"}
                if classify:
                    post["acc"] = f"{history.train_acc[-1]:.3f}"
                if val is not None:
                    post["val_loss"] = f"{history.val_loss[-1]:.4f}"
                    if classify:
                        post["val_acc"] = f"{history.val_acc[-1]:.3f}"
                bar.set_postfix(post)
            if any([_call(cb, "on_epoch_end", epoch, history, model) for cb in callbacks]):
                stop = True
            if ckpt is not None and rank == 0:
                save_checkpoint(ckpt, model, optimizer=opt, scheduler=sched, generator=gen,
                                history=history, epoch=epoch)
            if stop:
                history.stopped_early = True
                break
    finally:
        bar.close()
        if num_threads is not None:
            torch.set_num_threads(old_threads)
    for cb in callbacks:
        _call(cb, "on_train_end", model, history)
    model.eval()
    return history


# ---------------------------------------------------------------------------------------------
# Reference setups (the numbers quoted in the README, the report and tests/test_accuracy.py)
# ---------------------------------------------------------------------------------------------
#: name -> builder kwargs, data kwargs and fit kwargs of the reference experiments.
REFERENCE_SETUPS: dict[str, dict] = {
    # Binary MLP 784-512-512-10 on 10,000 Fashion-MNIST images.
    "mlp": {
        "data": "fashion-mnist",
        "data_kw": {"n_train": 10000, "flatten": True},
        "model": "binary_mlp",
        "model_kw": {"in_features": 784, "hidden": (512, 512), "num_classes": 10},
        "fit_kw": {"epochs": 10, "lr": 1e-3, "batch_size": 128, "schedule": "cosine"},
    },
    # Small binary CNN (28x28) on 10,000 Fashion-MNIST images.
    "cnn": {
        "data": "fashion-mnist",
        "data_kw": {"n_train": 10000, "val_size": 2000},
        "model": "binary_cnn",
        "model_kw": {"in_channels": 1, "image_size": 28, "num_classes": 10},
        "fit_kw": {"epochs": 4, "lr": 2e-3, "batch_size": 128, "schedule": "cosine"},
    },
    # Binary MLP 64-256-256-10 on scikit-learn's 8x8 digits.
    "mlp-digits": {
        "data": "digits",
        "data_kw": {"flatten": True},
        "model": "binary_mlp",
        "model_kw": {"in_features": 64, "hidden": (256, 256), "num_classes": 10},
        "fit_kw": {"epochs": 20, "lr": 3e-3, "batch_size": 64, "schedule": "cosine"},
    },
}


@dataclass
class ReferenceResult:
    """What :func:`train_reference` returns.

    Attributes:
        model: the trained network (eval mode).
        history: its :class:`History`.
        test: :func:`evaluate` on the test part (``loss``, ``accuracy``).
        seconds: wall-clock seconds of :func:`fit` (data loading excluded).
        data: the :class:`~bnnlab.data.Split` used.
    """

    model: nn.Module
    history: History
    test: dict
    seconds: float
    data: object = None

    def __repr__(self) -> str:
        return (f"ReferenceResult(model={type(self.model).__name__}, epochs={len(self.history)}, "
                f"test_accuracy={self.test['accuracy']:.4f}, seconds={self.seconds:.1f})")


def _load_reference_data(name: str, data_kw: dict, seed: int):
    from bnnlab import data as D

    if name == "fashion-mnist":
        return D.load_fashion_mnist(seed=seed, **data_kw)
    if name == "digits":
        return D.load_digits(seed=seed, **data_kw)
    raise ValueError(f"unknown reference data set {name!r}")


def train_reference(name: str, data=None, *, binary: bool = True, epochs: int | None = None,
                    seed: int = 0, progress: bool = True, model_kw: dict | None = None,
                    **fit_kw) -> ReferenceResult:
    """Build and train one of the reference experiments of :data:`REFERENCE_SETUPS`.

    Args:
        name: ``"mlp"`` (binary MLP 784-512-512-10, Fashion-MNIST, 10k images, 10 epochs),
            ``"cnn"`` (small binary CNN, Fashion-MNIST, 10k images, 4 epochs) or
            ``"mlp-digits"`` (binary MLP 64-256-256-10 on 8×8 digits).
        data: a :class:`~bnnlab.data.Split` to use instead of loading the default one (its
            input layout must match the model: flat for the MLPs, images for the CNN).
        binary: ``False`` trains the float twin with the same recipe. Default: ``True``.
        epochs: override the number of epochs.
        seed: seed of the model initialisation (``torch.manual_seed``), the data split and the
            shuffling. Default: ``0``.
        progress: tqdm progress bar. Default: ``True``.
        model_kw: extra keyword arguments for the model builder.
        **fit_kw: override any :func:`fit` argument (``lr``, ``batch_size``, ``schedule``,
            ``callbacks`` ...).

    Returns:
        :class:`ReferenceResult` with the model, its history, the test metrics and the time.

    Examples::

        >>> res = train_reference("mlp-digits", progress=False)
        >>> res.test["accuracy"] > 0.8
        True
    """
    from bnnlab import models as M

    if name not in REFERENCE_SETUPS:
        raise ValueError(f"name must be one of {sorted(REFERENCE_SETUPS)}, got {name!r}")
    setup = REFERENCE_SETUPS[name]
    if data is None:
        data = _load_reference_data(setup["data"], setup["data_kw"], seed)
    kw = dict(setup["fit_kw"])
    if epochs is not None:
        kw["epochs"] = epochs
    kw.update(fit_kw)
    torch.manual_seed(seed)
    builder = getattr(M, setup["model"])
    model = builder(**{**setup["model_kw"], **(model_kw or {})}, binary=binary)
    t0 = time.perf_counter()
    history = fit(model, data, seed=seed, progress=progress, **kw)
    seconds = time.perf_counter() - t0
    test = evaluate(model, *data.test)
    return ReferenceResult(model=model, history=history, test=test, seconds=seconds, data=data)


# ---------------------------------------------------------------------------------------------
# Command line: python -m bnnlab train (DDP under torchrun)
# ---------------------------------------------------------------------------------------------
def _infer_model_kwargs(name: str, kwargs: dict, split) -> dict:
    """Fill ``in_features`` / ``in_channels`` / ``image_size`` / ``num_classes`` of a builder
    from the data when the user did not give them."""
    import importlib
    import inspect

    from bnnlab import models

    if ":" in name:
        module, _, func = name.partition(":")
        builder = getattr(importlib.import_module(module), func)
    else:
        builder = getattr(models, name, None)
    if builder is None:
        return kwargs
    params = inspect.signature(builder).parameters
    shape = split.input_shape
    guesses = {"in_features": math.prod(shape), "in_channels": shape[0] if len(shape) == 3 else 1,
               "image_size": shape[-1], "num_classes": split.num_classes or 1}
    return {**{k: v for k, v in guesses.items() if k in params}, **kwargs}


def _json_arg(text: str, name: str) -> dict:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise SystemExit(f"{name}: not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise SystemExit(f"{name}: expected a JSON object, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    """``python -m bnnlab train --model NAME --data NAME --out DIR [options]``.

    Writes ``DIR/checkpoint.safetensors`` (every epoch; ``--resume`` continues from it),
    ``DIR/model.safetensors`` (the final weights) and ``DIR/record.json`` (arguments,
    history, test metrics at the end, world size, versions, machine). Under
    ``torchrun --nproc-per-node N`` it trains with DDP (gloo on CPU, NCCL on CUDA); only
    rank 0 writes.
    """
    import argparse
    import platform

    from bnnlab import data as D

    parser = argparse.ArgumentParser(prog="python -m bnnlab train",
                                     description="Train one model; pickle-free checkpoints.")
    parser.add_argument("--model", required=True,
                        help="a builder of bnnlab.models (binary_mlp, binary_cnn, vgg_small, "
                             "birealnet18, ...) or package.module:function")
    parser.add_argument("--model-kw", default="{}", help="JSON keyword arguments of the builder")
    parser.add_argument("--data", required=True, help=f"one of {', '.join(D.DATASETS)}")
    parser.add_argument("--data-root", help="folder of the data files (Fashion-MNIST, "
                        "CIFAR-10), or CIFAR-10's cifar-10-binary.tar.gz itself")
    parser.add_argument("--data-kw", default="{}", help="JSON keyword arguments of the loader")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128,
                        help="global batch size (split across DDP processes)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--optimizer", default="adam", choices=("adam", "adamw", "sgd"))
    parser.add_argument("--schedule", default="cosine", choices=("cosine", "linear", "none"))
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (under torchrun: "
                        "cuda means cuda:LOCAL_RANK)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--resume", action="store_true",
                        help="continue from OUT/checkpoint.safetensors")
    parser.add_argument("--augment", action="store_true",
                        help="random crop (4-pixel padding) and horizontal flip per batch")
    parser.add_argument("--progress", action="store_true", help="tqdm bar (rank 0)")
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1 or args.threads < 1:
        parser.error("--epochs, --batch-size and --threads must be >= 1")
    torch.set_num_threads(args.threads)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = args.device
    if world > 1:
        import torch.distributed as dist

        cuda = device.startswith("cuda")
        if cuda:
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
            torch.cuda.set_device(torch.device(device))
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    rank = int(os.environ.get("RANK", "0"))
    try:
        data_kw = {"seed": args.seed, **_json_arg(args.data_kw, "--data-kw")}
        if args.data_root:
            data_kw["root"] = args.data_root
        split = D.load(args.data, **data_kw)
        model_kw = _infer_model_kwargs(args.model, _json_arg(args.model_kw, "--model-kw"),
                                       split)
        torch.manual_seed(args.seed)
        model = build_model(args.model, **model_kw)
        loss = "cross_entropy" if split.num_classes is not None else "mse"
        t0 = time.perf_counter()
        hist = fit(model, split, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                   optimizer=args.optimizer, weight_decay=args.weight_decay, loss=loss,
                   schedule=None if args.schedule == "none" else args.schedule,
                   progress=args.progress, seed=args.seed, device=device,
                   checkpoint=args.out / "checkpoint.safetensors", resume=args.resume,
                   augment=D.augment_crop_flip if args.augment else None)
        seconds = time.perf_counter() - t0
        if rank == 0:
            from safetensors.torch import save_file

            import bnnlab

            test = evaluate(model, *split.test, loss=loss)
            state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
            tmp = args.out / f".model.safetensors.{os.getpid()}.tmp"
            save_file(state, str(tmp), metadata={"format": "bnnlab.weights/1",
                                                 "model": args.model,
                                                 "model_kw": json.dumps(model_kw)})
            os.replace(tmp, args.out / "model.safetensors")

            def clean(v: float) -> float | None:
                return None if math.isnan(v) else float(v)

            h = hist.as_dict()
            record = {
                "schema": "bnnlab.train/1", "args": {k: str(v) if isinstance(v, Path) else v
                                                     for k, v in vars(args).items()},
                "model_kw": model_kw, "world_size": world, "device": str(device),
                "history": {k: vals if k == "epoch" else [clean(v) for v in vals]
                            for k, vals in h.items()},
                "best_epoch": hist.best("val_acc")[0] if _has_val_acc(h) else None,
                "test": {k: clean(v) for k, v in test.items()}, "fit_seconds": seconds,
                "versions": {"bnnlab": bnnlab.__version__, "torch": torch.__version__,
                             "python": platform.python_version()},
                "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                            "cuda": torch.cuda.get_device_name() if
                            str(device).startswith("cuda") else None},
            }
            text = json.dumps(record, indent=1, allow_nan=False)
            tmp = args.out / f".record.json.{os.getpid()}.tmp"
            tmp.write_text(text + "\n", encoding="utf-8")
            os.replace(tmp, args.out / "record.json")
            print(f"[train] {args.model} on {args.data}: {len(hist)} epochs in {seconds:.1f} s, "
                  f"test accuracy {test['accuracy']:.4f} -> {args.out}", flush=True)
    finally:
        if world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()
    return 0


def _has_val_acc(h: dict) -> bool:
    return any(not math.isnan(v) for v in h["val_acc"])
