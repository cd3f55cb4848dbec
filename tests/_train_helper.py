"""A BatchNorm-free model for the DDP test (``--model _train_helper:plain_mlp``): with BN each
DDP rank would normalise with its own batch statistics, so only a BN-free model can match a
single process exactly."""
from __future__ import annotations

from torch import nn


def plain_mlp(in_features: int = 64, num_classes: int = 10, hidden: int = 64) -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), nn.Linear(in_features, hidden), nn.Hardtanh(),
                         nn.Linear(hidden, hidden), nn.Hardtanh(),
                         nn.Linear(hidden, num_classes))
