"""Shared pytest fixtures. Keep minimal: area-specific helpers live in ``tests/_ref_<area>.py``."""
import random

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same RNG state (torch, NumPy's legacy global RNG, random)."""
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
