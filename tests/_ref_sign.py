"""The one reference ``sign`` of the test suite: NumPy, deliberately naive, never calls bnnlab.

sign(x) = +1 for x >= 0 (so sign(0) = sign(-0.0) = +1), -1 otherwise; for a bool array
True -> +1 and False -> -1. The result keeps a floating input's dtype (float64 otherwise)
unless ``dtype`` is given.
"""
from __future__ import annotations

import numpy as np


def sign(x, dtype=None) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype == np.bool_:
        out = np.where(x, 1.0, -1.0)
    else:
        out = np.where(x >= 0, 1.0, -1.0)
        if dtype is None and np.issubdtype(x.dtype, np.floating):
            dtype = x.dtype
    return out.astype(dtype) if dtype is not None else out
