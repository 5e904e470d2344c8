"""`fashion-mobilenetv2`: torchvision's MobileNetV2, migrated from its ImageNet weights to Fashion-MNIST.

The 28x28 grey images are resized (bilinear) to `size` x `size`, repeated over 3 channels and normalised with
ImageNet's mean and std, as the pretrained network expects. At 32x32 this net is overhead-bound and INT8 ran
slower than FP32; at 64x64 the pruned and INT8 candidates are faster (experiments/transfer.py measures it).
Images are kept as uint8 28x28 and resized per sample, so the 60k split costs 47 MB, not 2.9 GB.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from lepton_search.workloads._base import Workload
from lepton_search.workloads.fashion_mnist import load_raw
from lepton_search.workloads.transfer import migrate

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class ResizedGrey(Dataset):
    """uint8 (N, H, W) grey images -> float (3, size, size) ImageNet-normalised tensors, made per sample."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, size: int) -> None:
        self.images, self.labels, self.size = images, labels, size
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[i].float().div_(255.0)[None, None]
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)[0]
        return (x.expand(3, -1, -1) - self.mean) / self.std, self.labels[i]


def fashion_splits(
    *, size: int = 64, train_size: int | None = None, val_size: int = 5000, test_size: int | None = None,
    seed: int = 0, data_dir: str | Path | None = None,
) -> dict[str, ResizedGrey]:
    """Fashion-MNIST's split convention (val: the first `val_size` of a seeded permutation of the 60k train
    images, train: the rest; test: the 10k test set), at `size` x `size` x 3. `train_size` / `test_size`
    keep a seeded subset of those splits (None: all)."""
    x, y = load_raw("train", data_dir)
    x_test, y_test = load_raw("test", data_dir)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = perm[:val_size], perm[val_size:][:train_size]
    test_idx = torch.randperm(len(x_test), generator=torch.Generator().manual_seed(seed))[:test_size]
    return {"train": ResizedGrey(x[train_idx], y[train_idx], size), "val": ResizedGrey(x[val_idx], y[val_idx], size),
            "test": ResizedGrey(x_test[test_idx], y_test[test_idx], size)}


def fashion_mobilenetv2(
    *, size: int = 64, train_size: int | None = 10000, val_size: int = 5000, test_size: int | None = None,
    epochs: int = 3, freeze_backbone_epochs: int = 1, weights: str | Path | None = None, seed: int = 0,
    data_dir: str | Path | None = None, verbose: bool = True,
) -> Workload:
    """MobileNetV2 (ImageNet weights) migrated to Fashion-MNIST at `size`x`size`, trained once and cached.

    Migration trains on `train_size` images of the 55k train split (10k: a head-only epoch is ~1 min and a
    full epoch ~5 min on one CPU core, ~11 min in all, once); it is the workload's train split, from which
    fine-tuning candidates draw their subsets during a search. `train_size=None` keeps all 55k.
    """
    splits = fashion_splits(size=size, train_size=train_size, val_size=val_size, test_size=test_size, seed=seed,
                            data_dir=data_dir)
    wl = migrate("mobilenetv2", splits, num_classes=10, weights=weights, epochs=epochs,
                 freeze_backbone_epochs=freeze_backbone_epochs, name="fashion-mobilenetv2", seed=seed,
                 cache_key=f"fashion-mobilenetv2-{size}px-t{train_size}-v{val_size}", verbose=verbose)
    wl.info.update({"dataset": "Fashion-MNIST", "input": f"{size}x{size}x3 (resized, ImageNet-normalised)",
                    "train": len(splits["train"]), "val": len(splits["val"]), "test": len(splits["test"])})
    return wl
