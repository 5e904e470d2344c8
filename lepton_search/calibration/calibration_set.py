"""A set of ONNX graphs to calibrate (or test) a latency model: several architectures x prune ratios x bits.

Weights are random (latency does not depend on their values, only on shapes, dtypes and sparsity).
This module imports torch; the predictor and `measure` never import it.

Example:
    >>> rows = build_set("/tmp/graphs", archs=("mlp",), ratios=(0.0,), bits=(32,))  # doctest: +SKIP
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from lepton_search.errors import ConfigError, did_you_mean

MANIFEST = "manifest.csv"


@dataclass(frozen=True)
class GraphSpec:
    """One architecture variant: `group` is what leave-one-architecture-out holds out together."""

    group: str
    variant: str
    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...]


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs and a (projected when the shape changes) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.short = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                      if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.short(x))


class ResNetish(nn.Module):
    """Stem + three stages of basic blocks (w, 2w, 4w), global pooling, linear head; CIFAR-sized input."""

    def __init__(self, width: int = 16, num_classes: int = 10) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(nn.Conv2d(3, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True))
        self.stages = nn.Sequential(BasicBlock(w, w, 1), BasicBlock(w, 2 * w, 2), BasicBlock(2 * w, 4 * w, 2))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


def mlp(width: int, depth: int = 3, inputs: int = 784) -> nn.Module:
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(inputs if i == 0 else width, width), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, 10))


def _fashion(width: int) -> nn.Module:
    from lepton_search.workloads.fashion_mnist import FashionCNN

    return FashionCNN(width)


def _mobilenet(width_mult: float) -> nn.Module:
    from torchvision.models import mobilenet_v2

    return mobilenet_v2(width_mult=width_mult, num_classes=10)


def default_specs() -> dict[str, list[GraphSpec]]:
    """Four architecture families, two sizes each."""
    return {
        "fashion-cnn": [GraphSpec("fashion-cnn", f"w{w}", lambda w=w: _fashion(w), (1, 1, 28, 28)) for w in (16, 40)],
        "resnet": [GraphSpec("resnet", f"w{w}", lambda w=w: ResNetish(w), (1, 3, 32, 32)) for w in (12, 24)],
        "mlp": [GraphSpec("mlp", f"h{h}", lambda h=h: mlp(h), (1, 784)) for h in (256, 768)],
        "mobilenet-v2": [GraphSpec("mobilenet-v2", f"x{m}", lambda m=m: _mobilenet(m), (1, 3, 64, 64))
                         for m in (0.5, 1.0)],
    }


def build_set(
    out_dir: str | Path, *, archs: Iterable[str] | None = None, ratios: Iterable[float] = (0.0, 0.25, 0.5),
    bits: Iterable[int] = (32, 16, 8, 4), seed: int = 0,
) -> list[dict[str, str]]:
    """Export every (architecture variant, prune ratio, bit width) to `out_dir`; write and return the manifest."""
    from lepton_search.techniques import export, prune, quantize

    specs = default_specs()
    names = list(specs) if archs is None else list(archs)
    for name in names:
        if name not in specs:
            raise ConfigError("archs", name, f"unknown architecture; {did_you_mean(name, specs)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, str]] = []
    for spec in (s for name in names for s in specs[name]):
        torch.manual_seed(seed)
        base = spec.build().eval()
        x = torch.randn(*spec.input_shape)
        calib = [np.random.default_rng(seed + i).standard_normal(spec.input_shape).astype(np.float32) for i in range(4)]
        for ratio in ratios:
            model = prune.bake_masks(prune.prune_structured(base, x, ratio), x)
            fp32 = export.to_onnx(model, x, out / "_fp32.onnx")
            for b in bits:
                path = out / f"{spec.group}-{spec.variant}-p{int(ratio * 100):02d}-b{b}.onnx"
                onnx.save(quantize.quantize(fp32, b, calib), str(path))
                rows.append({"file": path.name, "group": spec.group, "variant": spec.variant,
                             "prune_ratio": str(ratio), "bits": str(b),
                             "input_shape": "x".join(str(d) for d in spec.input_shape)})
    (out / "_fp32.onnx").unlink(missing_ok=True)
    with open(out / MANIFEST, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows
