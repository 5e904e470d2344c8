"""Quantization-aware fine-tuning for INT8: train under the rounding the INT8 model will see.

While `simulate_int8(model)` is active, every Conv/Linear sees its weight fake-quantized per output
channel (symmetric INT8, as NNCF's default preset) and its input fake-quantized per tensor (asymmetric
UINT8 range from a running min/max), both with a straight-through gradient. On exit the float weights,
now adapted to that noise, stay; the deployable INT8 graph is then made by NNCF post-training
quantization of the exported model, which picks the same kind of scales.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize

QUANT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear)


class _WeightFakeQuant(nn.Module):
    """Symmetric per-output-channel INT8 weight rounding with a straight-through estimator."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        reduce = tuple(range(1, w.ndim))
        scale = (w.detach().abs().amax(dim=reduce, keepdim=True) / 127.0).clamp_min(1e-8)
        q = torch.clamp(torch.round(w / scale), -128, 127) * scale
        return w + (q - w).detach()


class _ActFakeQuant:
    """Per-tensor asymmetric 8-bit input rounding; range from an exponential running min/max."""

    def __init__(self, momentum: float = 0.1) -> None:
        self.momentum, self.lo, self.hi = momentum, None, None

    def __call__(self, module: nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        x = args[0]
        lo, hi = float(x.detach().min()), float(x.detach().max())
        if self.lo is None:
            self.lo, self.hi = lo, hi
        elif module.training:
            self.lo += self.momentum * (lo - self.lo)
            self.hi += self.momentum * (hi - self.hi)
        lo, hi = min(self.lo, 0.0), max(self.hi, 0.0)
        scale = max(hi - lo, 1e-8) / 255.0
        zero = round(-lo / scale)
        q = (torch.clamp(torch.round(x / scale) + zero, 0, 255) - zero) * scale
        return (x + (q - x).detach(), *args[1:])


@contextlib.contextmanager
def simulate_int8(model: nn.Module) -> Iterator[nn.Module]:
    """Context in which `model` trains with INT8 weight and activation rounding simulated."""
    layers = [m for m in model.modules() if isinstance(m, QUANT_LAYERS)]
    handles = []
    for layer in layers:
        parametrize.register_parametrization(layer, "weight", _WeightFakeQuant())
        hook = _ActFakeQuant()
        layer._lepton_act_fq = hook
        handles.append(layer.register_forward_pre_hook(hook))
    try:
        yield model
    finally:
        for h in handles:
            h.remove()
        for layer in layers:
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=False)
            del layer._lepton_act_fq


def act_ranges(model: nn.Module) -> list[tuple[float | None, float | None]]:
    """The running input ranges of every fake-quantized layer, in module order (inside `simulate_int8`)."""
    return [(m._lepton_act_fq.lo, m._lepton_act_fq.hi) for m in model.modules() if hasattr(m, "_lepton_act_fq")]


def set_act_ranges(model: nn.Module, ranges: list[tuple[float | None, float | None]]) -> None:
    layers = [m for m in model.modules() if hasattr(m, "_lepton_act_fq")]
    if len(layers) != len(ranges):
        raise ValueError(f"{len(ranges)} ranges for {len(layers)} fake-quantized layers")
    for m, (lo, hi) in zip(layers, ranges):
        m._lepton_act_fq.lo, m._lepton_act_fq.hi = lo, hi
