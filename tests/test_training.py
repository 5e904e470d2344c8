"""The one training loop: schedules that cannot divide by zero on tiny splits."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lepton_search.training import train_classifier


@pytest.mark.parametrize("batches", [1, 2, 5, 10])
def test_a_handful_of_batches_trains(batches):
    """5 batches at warm-up 0.2 put OneCycleLR's warm-up end on step 1: it divided by zero (ZeroDivisionError)."""
    torch.manual_seed(0)
    x, y = torch.randn(8 * batches, 4), torch.randint(0, 3, (8 * batches,))
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    before = [p.detach().clone() for p in model.parameters()]
    train_classifier(model, DataLoader(TensorDataset(x, y), batch_size=8), epochs=1, lr=0.05, desc="tiny")
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))  # it trained
