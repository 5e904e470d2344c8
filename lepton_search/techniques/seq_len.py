"""The `seq_len` knob as a technique: the model is fed the first N tokens of each token-sequence input. Its work is
an input transform; the file, its latency and its accuracy are all at that length (`stages.InputTransform`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from lepton_search.errors import ConfigError
from lepton_search.space import CompressionConfig, SearchSpace
from lepton_search.techniques.stages import CheckContext, InputTransform, Technique, Verdict


def token_window(workload: Any, n: int) -> InputTransform:
    """The first `n` tokens of every token-sequence input (int inputs of one axis as long as the workload's
    sequence), the rest as they are. Latency is then timed on the validation samples cut to `n` tokens: a fixed
    shape, as a server that pads or cuts to one length runs (BBC articles are all longer)."""
    full = workload.seq_len
    names = {s.name for s in workload.inputs if len(s.shape) == 1 and s.shape[0] == full and "int" in str(s.dtype)}

    def cut(feeds: Mapping[str, Any]) -> dict[str, Any]:
        return {k: _first(v, n) if k in names else v for k, v in feeds.items()}

    return InputTransform(f"first {n} of {full} tokens", cut)


def _first(x: Any, n: int) -> Any:
    part = x[:, :n]
    return np.ascontiguousarray(part) if isinstance(part, np.ndarray) else part.contiguous()


class SeqLen(Technique):
    name, knobs, stage, order = "seq_len", ("seq_len",), "export", 0

    def changes_model(self, config: CompressionConfig) -> bool:
        return bool(config.seq_len)

    def transform(self, workload: Any, config: CompressionConfig) -> InputTransform | None:
        return token_window(workload, config.seq_len) if config.seq_len else None

    def check(self, ctx: CheckContext, space: SearchSpace) -> Verdict:
        lengths = [v for v in space.domain("seq_len") if v]
        full = ctx.workload.seq_len
        if lengths and getattr(ctx.workload.task, "name", None) == "lm":
            raise ConfigError("knobs.seq_len", lengths[0], "would cut a language model's inputs but not its "
                              "next-token targets; set the window length on the workload (its seq_len option) instead")
        if lengths and full is None:
            raise ConfigError("knobs.seq_len", lengths[0], f"workload {ctx.workload.name!r} has no token-sequence "
                              "input; remove the knob (or state the workload's sequence_length)")
        if lengths and max(lengths) > full:
            raise ConfigError("knobs.seq_len", max(lengths), f"is above the model's {full} tokens; give 1..{full} "
                              "(0: all)")
        if full in lengths:  # the model's own length cuts nothing: it is the no-op, one config, not two
            kept = tuple(dict.fromkeys(0 if v == full else v for v in space.domain("seq_len")))
            return Verdict(changes={"seq_len": kept[0] if len(kept) == 1 else kept},
                           notes=[f"seq_len {full} is this model's own length (cuts nothing): searched as 0 (all)"])
        return Verdict()


TECHNIQUES = (SeqLen(),)
