"""Hidden-state distillation for Transformer encoders (TinyBERT / MiniLM style): each layer a student keeps learns
to produce what a teacher layer produces, besides the outputs.

Student layer i (of S) is matched to teacher layer round((i + 1) * T / S) - 1 (of T): a uniform map whose last
pair is last to last, so a student that lost its top layers learns to put the teacher's final representation out
of its own last layer (Jiao et al., "TinyBERT", 2020, uniform layer mapping). Head and FFN pruning leave the
residual width whole, so the states compare without a projection. A student fed the first n tokens (the `seq_len`
knob) is matched on the teacher's first n positions. The loss of a pair is the MSE divided by the teacher state's
mean square (scale-free: `hidden_weight` means the same for any model).

The teacher's states are computed per batch, not cached: they are (samples x layers x tokens x width) floats, ~1.5 GB
for bbc-minilm's 1,335 articles; the teacher's outputs stay cached (`finetune.CachedTeacher`).

Example:
    >>> import torch
    >>> from torch import nn
    >>> layer_map(3, 6), layer_map(6, 6)[:2]
    ([1, 3, 5], [0, 1])
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from lepton_search.techniques import families


def layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """The teacher layer each student layer learns from (uniform, last to last)."""
    return [round((i + 1) * teacher_layers / student_layers) - 1 for i in range(student_layers)]


@contextmanager
def hidden_states(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Within the block, the output of each encoder layer of `model` (`families.blocks`), appended
    in order as the model runs."""
    states: list[torch.Tensor] = []

    def keep(_module: nn.Module, _inputs: object, output: object) -> None:
        states.append(output[0] if isinstance(output, tuple) else output)

    handles = [layer.register_forward_hook(keep) for layer in families.blocks(model)]
    try:
        yield states
    finally:
        for handle in handles:
            handle.remove()


def hidden_loss(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
    """Mean over the mapped layer pairs of MSE(student state, teacher state) / mean square of the teacher state;
    the teacher's states are cut to the student's positions."""
    pairs = zip(student, (teacher[j] for j in layer_map(len(student), len(teacher))))
    losses = [torch.mean((s - t[:, : s.shape[1]]) ** 2) / t[:, : s.shape[1]].pow(2).mean().clamp_min(1e-6)
              for s, t in pairs]
    return torch.stack(losses).mean()
