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


@pytest.fixture
def one_thread():
    """Train on one thread: on a busy two-core machine two OpenMP threads can be 10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
