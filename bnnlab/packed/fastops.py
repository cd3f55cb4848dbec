r"""Direct calls of the float torch ops between packed layers (batch-1 latency).

Part of :mod:`bnnlab.packed` (see its docstring for the rules and the format).

:func:`fast_call` turns a float module of an exported model (a stage of a flat export, a
Bi-Real shortcut) into a function computing *the same float32 values* with less overhead:

* ``Conv2d`` / ``Linear`` / ``AdaptiveAvgPool2d`` / ``Flatten``: the torch function the
  module's ``forward`` calls, called directly (same kernel, same bits), skipping
  ``nn.Module.__call__`` and the module's Python checks;
* eval ``BatchNorm2d``: :class:`BatchNormEval`, one ``addcmul`` proved equal to torch's
  BatchNorm on probes (else ``torch.batch_norm``);
* ``Hardtanh`` / ``ReLU`` on a fresh tensor (the float output of a packed layer): in place;
* ``AvgPool2d`` with non-overlapping windows (``stride == kernel_size``), no padding, no
  ``divisor_override``, on float32 NCHW: :class:`AvgPoolNCHW`, torch's CPU arithmetic as
  strided numpy adds (about 2x faster at batch 1, where torch's NCHW kernel is scalar);
* ``nn.Sequential`` of these: one function calling them in turn;
* (:class:`~bnnlab.packed.PackedModel`'s stages) ``AdaptiveAvgPool2d(1) -> Flatten``:
  :func:`mean_hw`, the mean torch's ``adaptive_avg_pool2d`` computes for a 1×1 output, as
  one call (checked on probes, :func:`global_mean_flatten`).

Anything else runs its ``forward``. Module attributes are read at call time (BatchNorm: its
parameters' versions), so later edits of a module (its weights, ``eps``) still apply.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        return (int(v[0]), int(v[1]))
    return (int(v), int(v))


def _pool_out(size: int, k: int, ceil: bool) -> int:
    """torch's pooling output size for stride ``k``, no padding, dilation 1."""
    num = size - k + ((k - 1) if ceil else 0)
    out = num // k + 1
    if ceil and (out - 1) * k >= size:
        out -= 1
    return out


#: inputs of at least this many elements run torch's own (multi-threaded) kernel when torch
#: has more than one thread (at::internal::GRAIN_SIZE; the numpy adds use one thread)
_GRAIN = 32768


class AvgPoolNCHW:
    r"""``nn.AvgPool2d`` with ``stride == kernel_size``, ``padding=0`` and no
    ``divisor_override`` on float32 ``(N, C, H, W)`` tensors, in torch's CPU arithmetic.

    torch's NCHW kernel computes each output as ``sum = 0; sum += x[tap]`` over the window's
    taps inside the image in row-major order, then ``out = 0; out += sum / count`` (``count``
    = those taps; ``ceil_mode`` windows at the border have fewer). Here each tap is one
    strided numpy add over all outputs, then one division and one ``+ 0.0``: the same
    operations on every output in the same order, except that the sum starts from the first
    tap instead of ``0 + tap``. That changes at most the sign of a zero partial sum (adding a
    non-zero value to either zero gives the same result), so the quotients are equal or both
    zeros, and the final ``+ 0.0`` (torch's ``out = 0; out += ...``) makes both ``+0.0``:
    the same float32 bits (checked in the tests on signed zeros, subnormals, inf and NaN).
    Other inputs (another dtype or rank, a tensor that requires grad) run the module, and so
    do large inputs when torch has several threads (its kernel then runs them in parallel).
    """

    __slots__ = ("module", "_plans")

    def __init__(self, module: nn.AvgPool2d) -> None:
        if not supports_avgpool(module):
            raise ValueError("AvgPoolNCHW needs stride == kernel_size, padding 0 and no "
                             "divisor_override")
        self.module = module
        self._plans: dict[Any, Any] = {}

    def _plan(self, shape: Any) -> Any:
        """Per input shape: ``None`` (run the module) or what the call needs."""
        m = self.module
        kh, kw = _pair(m.kernel_size)
        n, c, h, w = shape
        oh, ow = _pool_out(h, kh, m.ceil_mode), _pool_out(w, kw, m.ceil_mode)
        if oh < 1 or ow < 1 or n * c == 0:
            plan = None                                 # torch's own error / empty result
        else:
            rows = np.minimum(kh, h - kh * np.arange(oh))
            cols = np.minimum(kw, w - kw * np.arange(ow))
            full = bool((rows == kh).all() and (cols == kw).all())
            count = kh * kw
            div: tuple[Any, Any]
            if full and count & (count - 1) == 0:
                div = (np.multiply, np.float32(1.0 / count))     # exact: a power of two
            elif full:
                div = (np.divide, np.float32(count))
            else:
                div = (np.divide, (rows[:, None] * cols[None, :]).astype(np.float32))
            tiled = h % kh == 0 and w % kw == 0
            plan = (kh, kw, h, w, oh, ow, (n, c, oh, ow), tiled, div)
        if len(self._plans) > 16:
            self._plans.clear()
        self._plans[shape] = plan
        return plan

    def __call__(self, x: Any) -> Any:
        if type(x) is not Tensor or x.dtype is not torch.float32 or x.dim() != 4 \
                or x.requires_grad or not x.is_cpu:
            return self.module(x)
        shape = x.shape
        plan = self._plans[shape] if shape in self._plans else self._plan(shape)
        if plan is None or (x.numel() >= _GRAIN and torch.get_num_threads() > 1):
            return self.module(x)          # torch's kernel splits this size over its threads
        kh, kw, h, w, oh, ow, out_shape, tiled, (div, d) = plan
        a = x.numpy()
        with np.errstate(all="ignore"):                # inf - inf, overflow: as torch, silently
            if tiled and a.flags.c_contiguous:
                s = self._tiled(a, out_shape[0] * out_shape[1] * oh, ow, kh, kw, w)
            else:
                s = np.empty(out_shape, np.float32)
                np.copyto(s, a[:, :, 0:oh * kh:kh, 0:ow * kw:kw])
                for i in range(kh):
                    nr = min(oh, -(-(h - i) // kh))
                    for j in range(kw):
                        if i == 0 and j == 0:
                            continue
                        nc = min(ow, -(-(w - j) // kw))
                        if nr < 1 or nc < 1:
                            continue
                        part = s[:, :, :nr, :nc]
                        np.add(part, a[:, :, i:i + nr * kh:kh, j:j + nc * kw:kw], out=part)
            div(s, d, out=s)
            np.add(s, np.float32(0.0), out=s)
        return torch.from_numpy(s.reshape(out_shape))

    @staticmethod
    def _tiled(a: np.ndarray, rows: int, ow: int, kh: int, kw: int, w: int) -> np.ndarray:
        """The window sums when the windows tile the image (contiguous input): each band of
        ``kh`` image rows is one row of a 2-D view, so each tap is one 2-D strided view and
        one add (the sum starts with ``tap0 + tap1``; see the class docstring)."""
        v = a.reshape(rows, kh * w)
        taps = [v[:, i * w + j:(i + 1) * w:kw] for i in range(kh) for j in range(kw)]
        s = np.empty((rows, ow), np.float32)
        if len(taps) == 1:
            np.copyto(s, taps[0])
        else:
            np.add(taps[0], taps[1], out=s)
            for t in taps[2:]:
                np.add(s, t, out=s)
        return s


def supports_avgpool(m: Any) -> bool:
    """Can :class:`AvgPoolNCHW` run ``m``?"""
    if type(m) is not nn.AvgPool2d or m.divisor_override is not None:
        return False
    k = _pair(m.kernel_size)
    s = _pair(m.stride if m.stride is not None else m.kernel_size)
    return k == s and _pair(m.padding) == (0, 0) and min(k) >= 1


def _probe_inputs(c: int) -> list[Tensor]:
    """float32 batches that tell apart the roundings of ``x * a + b`` (one rounding or two,
    another ``b``) in every channel: wide exponents, signed zeros, odd sizes (vector tails)."""
    gen = torch.Generator().manual_seed(0)
    wide = torch.randn(2, c, 5, 7, generator=gen) * torch.exp(torch.randn(2, c, 5, 7, generator=gen) * 4)
    wide.view(-1)[::9] = -0.0
    wide.view(-1)[1::9] = 0.0
    return [wide, torch.randn(1, c, 8, 8, generator=gen) * 3, torch.randn(3, c, 1, 3, generator=gen)]


class BatchNormEval:
    r"""An eval ``nn.BatchNorm2d`` as one ``torch.addcmul(b, x, a)`` with per-channel
    ``a``, ``b`` (about half the cost of ``torch.batch_norm``'s call chain at batch 1).

    torch's CPU BatchNorm in eval computes ``x * a + b`` per channel, with ``a``, ``b`` and
    the rounding (one fused multiply-add or two roundings) fixed by how torch was compiled,
    not by its documentation; so the form is not assumed: the candidate ``(a, b)`` pairs
    (:func:`bnnlab.packed.residual._bn_candidates`) are tried on probe batches that tell the
    roundings apart in every channel (:func:`_probe_inputs`), and the first whose
    ``addcmul`` equals ``torch.batch_norm`` bit for bit is kept; if none does, every call
    runs ``torch.batch_norm``. The parameters' versions are checked at every call (an
    in-place edit of the statistics re-derives the form). Inputs other than float32 4-D
    tensors run the module; with several torch threads every call runs ``torch.batch_norm``
    (its parallel kernel was faster there than ``addcmul``'s).
    """

    __slots__ = ("module", "_key", "_ab")

    def __init__(self, module: nn.BatchNorm2d) -> None:
        self.module = module
        self._key: Any = None
        self._ab: tuple[Tensor, Tensor] | None = None

    def _state(self) -> tuple:
        m = self.module
        return (m.eps, m.training, *[(id(t), t._version) if t is not None else None
                                     for t in (m.weight, m.bias, m.running_mean, m.running_var)])

    def _batch_norm(self, x: Tensor) -> Tensor:
        m = self.module
        return torch.batch_norm(x, m.weight, m.bias, m.running_mean, m.running_var, False, 0.0,
                                m.eps, torch.backends.cudnn.enabled)

    def _derive(self) -> tuple[Tensor, Tensor] | None:
        from bnnlab.packed.residual import _bn_candidates

        m = self.module
        c = m.num_features
        probes = _probe_inputs(c)
        with torch.no_grad():
            want = [self._batch_norm(p).view(torch.int32) for p in probes]
            for a, b, _ in _bn_candidates(m):
                at = torch.from_numpy(np.ascontiguousarray(a)).view(c, 1, 1)
                bt = torch.from_numpy(np.ascontiguousarray(b)).view(c, 1, 1)
                if all(torch.equal(torch.addcmul(bt, p, at).view(torch.int32), w)
                       for p, w in zip(probes, want, strict=True)):
                    return at, bt
        return None

    def __call__(self, x: Any) -> Any:
        m = self.module
        if type(x) is not Tensor or x.dim() != 4 or x.dtype is not torch.float32 \
                or x.requires_grad or m.training or m.running_mean is None \
                or m.running_var is None:
            return m(x)
        key = self._state()
        if key != self._key:
            self._ab = self._derive()
            self._key = key
        ab = self._ab
        if ab is None or torch.get_num_threads() > 1:
            return self._batch_norm(x)     # measured: addcmul gains only on one thread
        return torch.addcmul(ab[1], x, ab[0])


def fast_call(m: Any, fresh: bool = False) -> Callable[[Any], Any]:
    """A function computing ``m(x)`` bit for bit with less Python overhead (see the module
    docstring); ``fresh``: the input is a new tensor made by the previous stage, so an
    element-wise activation may run in place."""
    t = type(m)
    if t is nn.Conv2d and m.padding_mode == "zeros":
        p = m._parameters

        def conv(x: Any) -> Any:
            return torch.conv2d(x, p["weight"], p["bias"], m.stride, m.padding, m.dilation,
                                m.groups)
        return conv
    if t is nn.Linear:
        p = m._parameters
        return lambda x: F.linear(x, p["weight"], p["bias"])
    if t is nn.BatchNorm2d and m.track_running_stats and m.running_mean is not None \
            and m.running_var is not None and m.weight is not None and m.weight.dtype == torch.float32:
        return BatchNormEval(m)
    if t is nn.AdaptiveAvgPool2d:
        return lambda x: F.adaptive_avg_pool2d(x, m.output_size)
    if t is nn.Flatten:
        return lambda x: x.flatten(m.start_dim, m.end_dim)
    if t is nn.Identity:
        return lambda x: x
    if supports_avgpool(m):
        return AvgPoolNCHW(m)
    if fresh and t is nn.Hardtanh:
        return lambda x: x.clamp_(m.min_val, m.max_val)
    if fresh and t is nn.ReLU:
        return torch.relu_
    if t is nn.Sequential:
        fns = [fast_call(c, fresh=False) for c in m]

        def seq(x: Any) -> Any:
            for f in fns:
                x = f(x)
            return x
        return seq
    return m.forward


def mean_hw(x: Any) -> Any:
    """``AdaptiveAvgPool2d(1)`` then ``Flatten()`` on a 4-D tensor as one ``mean`` (torch's
    ``adaptive_avg_pool2d`` computes a 1×1 output as ``x.mean((-1, -2), keepdim=True)``;
    the flatten only drops the two unit dimensions)."""
    if type(x) is not Tensor or x.dim() != 4:
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
    return x.mean((-1, -2))


_MEAN_OK: list[bool] = []


def global_mean_flatten(pool: Any, flat: Any) -> bool:
    """Are ``pool -> flat`` an ``AdaptiveAvgPool2d(1)`` and a ``Flatten(1, -1)`` that
    :func:`mean_hw` reproduces? Checked once per process on probe batches (bit for bit)."""
    if type(pool) is not nn.AdaptiveAvgPool2d or _pair(pool.output_size) != (1, 1) \
            or type(flat) is not nn.Flatten or (flat.start_dim, flat.end_dim) != (1, -1):
        return False
    if not _MEAN_OK:
        gen = torch.Generator().manual_seed(0)
        ok = True
        for shape in ((1, 512, 4, 4), (16, 70, 7, 5), (3, 3, 1, 1), (2, 9, 32, 32)):
            x = torch.randn(*shape, generator=gen) * torch.exp(torch.randn(*shape, generator=gen) * 4)
            with torch.no_grad():
                want = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
            ok = ok and torch.equal(mean_hw(x).view(torch.int32), want.view(torch.int32))
        _MEAN_OK.append(ok)
    return _MEAN_OK[0]
