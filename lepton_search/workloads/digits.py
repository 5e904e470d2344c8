"""scikit-learn's 8x8 digits (1,797 real images, shipped with the package): tiny, fast workloads.

`digits-mlp` is a bare `nn.Sequential` MLP (a non-CNN model, and the top-level-Sequential case);
`digits-cnn` a small CNN with BatchNorm. Both train in seconds and are cached.
"""

from __future__ import annotations

import torch
from torch import nn

from lepton_search.training import train_classifier
from lepton_search.workloads._base import Workload
from lepton_search.workloads._cache import cached_model


def load_digits_split(seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        from lepton_search.errors import ConfigError

        raise ConfigError("workload", "digits", "needs scikit-learn: pip install scikit-learn") from None
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = (x - 0.3) / 0.4
    y = torch.tensor(data.target, dtype=torch.int64)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    parts = {"train": perm[:1197], "val": perm[1197:1497], "test": perm[1497:]}
    return {k: (x[idx], y[idx]) for k, idx in parts.items()}


def _build(name: str, model: nn.Module, epochs: int, seed: int, flatten: bool, verbose: bool,
           variant: str = "") -> Workload:
    splits = load_digits_split(seed)
    if flatten:
        splits = {k: (x.flatten(1), y) for k, (x, y) in splits.items()}

    def _train(m: nn.Module) -> nn.Module:
        torch.manual_seed(seed)
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*splits["train"]), batch_size=64,
                                             shuffle=True, generator=torch.Generator().manual_seed(seed))
        return train_classifier(m, loader, epochs=epochs, lr=0.05, desc=f"train {name}")

    torch.manual_seed(seed)
    # `variant` names a non-default architecture: each one caches its own weights
    model = cached_model(f"{name}{variant}-e{epochs}-s{seed}", model, _train, verbose=verbose)
    return Workload(name, model, train=splits["train"], val=splits["val"], test=splits["test"],
                    example_input=splits["val"][0][:1].clone(), batch_size=128)


def digits_mlp(*, hidden: int = 128, epochs: int = 30, seed: int = 0, verbose: bool = False) -> Workload:
    model = nn.Sequential(nn.Linear(64, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                          nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 10))
    return _build("digits-mlp", model, epochs, seed, flatten=True, verbose=verbose,
                  variant="" if hidden == 128 else f"-h{hidden}")


class DigitsCNN(nn.Module):
    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(2 * width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def digits_cnn(*, width: int = 16, epochs: int = 15, seed: int = 0, verbose: bool = False) -> Workload:
    """Width 16 (the default, ~0.5 MMACs) is overhead-bound in ONNX Runtime; at width 64 (7 MMACs) the
    convolutions dominate and INT8 and pruning show in latency (the quickstart notebook uses it)."""
    return _build("digits-cnn", DigitsCNN(width), epochs, seed, flatten=False, verbose=verbose,
                  variant="" if width == 16 else f"-w{width}")
