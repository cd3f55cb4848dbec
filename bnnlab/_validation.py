"""Argument validation shared by every public function (in the spirit of scikit-learn's
``check_scalar``).

Each checker names the argument in its message, raises :class:`TypeError` for a value of the
wrong type and :class:`ValueError` for a value out of range, and returns the value normalised
(``int``, ``float``, ``bool`` or the chosen item), so a caller writes::

    width = check_int(width, "width", min_value=1)
    clip = check_real(clip, "clip_value", min_value=0.0, allow_none=True)

``bool`` is never accepted where a number is expected (``True`` is an ``int`` in Python, but
``width=True`` is a bug, not a width).
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any, TypeVar

__all__ = ["check_array", "check_bool", "check_choice", "check_int", "check_real"]

T = TypeVar("T")


def _bounds(min_value: float | None, max_value: float | None, include_min: bool = True,
            include_max: bool = True) -> str:
    parts = []
    if min_value is not None:
        parts.append(f"{'>=' if include_min else '>'} {min_value}")
    if max_value is not None:
        parts.append(f"{'<=' if include_max else '<'} {max_value}")
    return " and ".join(parts)


def check_int(value: Any, name: str, *, min_value: int | None = None, max_value: int | None = None,
              allow_none: bool = False) -> Any:
    """Return ``value`` as an ``int`` within ``[min_value, max_value]``.

    Integers of any kind (Python ``int``, NumPy integers) are accepted; ``bool`` and floats are
    refused with a :class:`TypeError` naming ``name``. ``None`` passes through when ``allow_none``.
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        kind = "an int" + (" or None" if allow_none else "")
        raise TypeError(f"{name} must be {kind}, got {type(value).__name__} {value!r}")
    value = int(value)
    if (min_value is not None and value < min_value) or (max_value is not None and value > max_value):
        raise ValueError(f"{name} must be {_bounds(min_value, max_value)}, got {value!r}")
    return value


def check_real(value: Any, name: str, *, min_value: float | None = None,
               max_value: float | None = None, include_min: bool = True, include_max: bool = True,
               finite: bool = True, allow_none: bool = False) -> Any:
    """Return ``value`` as a ``float`` within the given bounds (NaN is always refused; infinities
    unless ``finite=False``). ``include_min=False`` makes the lower bound strict (``> min``)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        kind = "a real number" + (" or None" if allow_none else "")
        raise TypeError(f"{name} must be {kind}, got {type(value).__name__} {value!r}")
    value = float(value)
    if math.isnan(value) or (finite and math.isinf(value)):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    low_bad = min_value is not None and (value < min_value if include_min else value <= min_value)
    high_bad = max_value is not None and (value > max_value if include_max else value >= max_value)
    if low_bad or high_bad:
        raise ValueError(f"{name} must be {_bounds(min_value, max_value, include_min, include_max)}, "
                         f"got {value!r}")
    return value


def check_bool(value: Any, name: str) -> bool:
    """Return ``value`` if it is a ``bool`` (NumPy's ``bool_`` too), else raise :class:`TypeError`."""
    if isinstance(value, bool):
        return value
    if type(value).__name__ == "bool_":  # numpy.bool_ without importing numpy here
        return bool(value)
    raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")


def check_choice(value: Any, name: str, choices: Iterable[T]) -> T:
    """Return ``value`` if it is one of ``choices``, else raise :class:`ValueError` listing them."""
    options = tuple(choices)
    try:
        ok = value in options
    except (TypeError, ValueError, RuntimeError):  # incomparable value (an array, a tensor)
        ok = False
    if not ok:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}, got {value!r}")
    return value


def check_array(value: Any, name: str, *, dtype: Any = None, ndim: int | None = None,
                layout: str = "", c_contiguous: bool = False, min_size: int = 0) -> Any:
    """Return ``value`` if it is a :class:`numpy.ndarray` with the given properties.

    ``dtype`` (anything :func:`numpy.dtype` accepts) and the wrong type raise
    :class:`TypeError`; a wrong ``ndim`` (``layout`` names the expected axes in the message),
    a non-C-contiguous array when ``c_contiguous``, a non-native byte order or fewer than
    ``min_size`` elements raise :class:`ValueError`, each naming ``name``. No copy is made.
    """
    import numpy as np  # local: the scalar checkers stay importable without NumPy

    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(value).__name__}")
    if dtype is not None and value.dtype != np.dtype(dtype):
        raise TypeError(f"{name} must have dtype {np.dtype(dtype)}, got {value.dtype}")
    if ndim is not None and value.ndim != ndim:
        what = f" {layout}" if layout else ""
        raise ValueError(f"{name} must be {ndim}-D{what}, got shape {value.shape}")
    if c_contiguous and not value.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (use np.ascontiguousarray)")
    if not value.dtype.isnative:
        raise ValueError(f"{name} must be in native byte order")
    if value.size < min_size:
        raise ValueError(f"{name} must have at least {min_size} element(s), got shape "
                         f"{value.shape}")
    return value
