"""Fashion-MNIST (Debian package `dataset-fashion-mnist`) with a 6-conv CNN trained once and cached."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lepton_search.errors import ConfigError
from lepton_search.training import train_classifier
from lepton_search.workloads._base import Workload
from lepton_search.workloads._cache import cached_model

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
MEAN, STD = 0.2860, 0.3530


def _conv(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class FashionCNN(nn.Module):
    """Six 3x3 conv layers in three stages (w, 2w, 4w channels), global pooling, one linear layer."""

    def __init__(self, width: int = 48, num_classes: int = 10) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            *_conv(1, w), *_conv(w, w), nn.MaxPool2d(2),
            *_conv(w, 2 * w), *_conv(2 * w, 2 * w), nn.MaxPool2d(2),
            *_conv(2 * w, 4 * w), *_conv(4 * w, 4 * w),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.classifier = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_raw(split: str, data_dir: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as stored: uint8 (N, 28, 28), and int64 labels."""
    root = Path(data_dir or os.environ.get("LEPTON_FASHION_MNIST") or DEFAULT_DIR)
    images, labels = (root / name for name in FILES[split])
    if not images.is_file() or not labels.is_file():
        raise ConfigError(
            "data_dir", str(root),
            "Fashion-MNIST not found: run `apt-get install dataset-fashion-mnist` or pass --data-dir DIR "
            "holding the four *-ubyte.gz files",
        )
    return torch.from_numpy(_read_idx(images).copy()), torch.from_numpy(_read_idx(labels).astype(np.int64))


def load_split(split: str, data_dir: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as normalised float tensors (N, 1, 28, 28) and int64 labels."""
    images, labels = load_raw(split, data_dir)
    x = (images.float() / 255.0).unsqueeze(1)
    return (x - MEAN) / STD, labels


def seeded_splits(data_dir: str | Path | None = None, *, val_size: int = 5000,
                  seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The Fashion-MNIST split every float workload here shares: validation the first `val_size` of a seeded
    permutation of the 60k train images, train the rest, test the 10k test set (normalised, `load_split`)."""
    x, y = load_split("train", data_dir)
    x_test, y_test = load_split("test", data_dir)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = perm[:val_size], perm[val_size:]
    return {"train": (x[train_idx], y[train_idx]), "val": (x[val_idx], y[val_idx]), "test": (x_test, y_test)}


def fashion_mnist_cnn(
    *, data_dir: str | Path | None = None, width: int = 48, base_epochs: int = 3, val_size: int = 5000,
    seed: int = 0, verbose: bool = True,
) -> Workload:
    """The default workload: train 55k / validation 5k (seeded split of the 60k train set) / test 10k."""
    parts = seeded_splits(data_dir, val_size=val_size, seed=seed)
    (train, val, (x_test, y_test)) = parts["train"], parts["val"], parts["test"]

    def _train(model: nn.Module) -> nn.Module:
        torch.manual_seed(seed)
        loader = wl.loader("train", batch_size=128, shuffle=True, seed=seed)
        return train_classifier(model, loader, epochs=base_epochs, lr=0.1, desc="train base")

    torch.manual_seed(seed)
    wl = Workload(
        "fashion-mnist-cnn", FashionCNN(width), train=train, val=val, test=(x_test, y_test),
        example_input=train[0][:1].clone(),
        info={"dataset": "Fashion-MNIST", "train": len(train[1]), "val": val_size, "test": len(x_test)},
    )
    wl.model = cached_model(f"fashion-cnn-w{width}-e{base_epochs}-v{val_size}-s{seed}", wl.model, _train, verbose=verbose)
    return wl
