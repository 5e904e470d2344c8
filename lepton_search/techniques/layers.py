"""The `layers` knob as a technique: a Transformer keeps `layers` of its blocks, the others leave the graph, and the
student is distilled from the whole teacher.

Which blocks go depends on the model: an encoder classifier keeps its bottom layers (`prune_transformer.keep_layers`:
dropping the top layers of a pretrained BERT costs least, Sajjad et al. 2023; bbc-minilm's 3 of 6 after a head refit
96.71%); a causal language model (task "lm") drops the blocks of least **block influence** (ShortGPT, Men et al.
2024: 1 - cosine between a block's input and output hidden states, averaged over tokens; `block_influence` on the
first `CALIBRATION_WINDOWS` train windows, `prune_transformer.drop_layers`). A small decoder is where it matters:
SmolLM2-135M without its top 3 of 30 blocks scores val perplexity ~11,700 (the base: 56), without its 3 least
influential (middle) ones ~75 (experiments/llm_front.py, 4 windows, busy host)."""

from __future__ import annotations

from typing import Any

import torch

from lepton_search.errors import ConfigError
from lepton_search.space import CompressionConfig, SearchSpace
from lepton_search.techniques import families, prune_transformer
from lepton_search.techniques.stages import Build, CheckContext, Technique, Verdict


class Layers(Technique):
    name, knobs, stage, order = "layers", ("layers",), "module", 20

    def changes_model(self, config: CompressionConfig) -> bool:
        return bool(config.layers)

    def refit_auto(self, config: CompressionConfig, model: Any) -> bool:
        # the head reads features of another depth: on bbc-minilm a refit took 3 layers from 93.19% to 96.71%
        return bool(config.layers) and families.family_of(model) is not None

    def check(self, ctx: CheckContext, space: SearchSpace) -> Verdict:
        depths = [v for v in space.domain("layers") if v]
        have = len(families.blocks(ctx.workload.model))
        if depths and not have:
            raise ConfigError("knobs.layers", depths[0], f"workload {ctx.workload.name!r} has no Transformer encoder "
                              f"layer or decoder block of a known family ({', '.join(families.FAMILIES.names)}) to "
                              "drop; remove the knob")
        if depths and max(depths) > have:
            raise ConfigError("knobs.layers", max(depths), f"is more than the model's {have} encoder layers; give "
                              f"1..{have} (0: all)")
        if have in depths:  # keeping every layer drops none: the no-op, one config, not two
            kept = tuple(dict.fromkeys(0 if v == have else v for v in space.domain("layers")))
            return Verdict(changes={"layers": kept[0] if len(kept) == 1 else kept},
                           notes=[f"layers {have} is this model's own depth (drops nothing): searched as 0 (all)"])
        return Verdict()

    def apply(self, build: Build) -> None:
        if not build.config.layers:
            return
        model = build.own()
        if build.workload.task.name != "lm":
            build.model = prune_transformer.keep_layers(model, build.config.layers)
            return
        have = len(families.blocks(model))
        if build.config.layers < have:
            build.model = prune_transformer.drop_layers(model, least_influential(build.workload, model,
                                                                                 have - build.config.layers))


CALIBRATION_WINDOWS = 8  # train windows block influence is measured on (one forward pass, seconds for SmolLM2)


def least_influential(workload: Any, model: Any, n: int) -> list[int]:
    """The `n` blocks of `model` of least `block_influence` on the first `CALIBRATION_WINDOWS` train samples of
    `workload` (its inputs; a second input shaped like the first, the attention mask, says which tokens count)."""
    *inputs, _ = next(iter(workload.batches("train", CALIBRATION_WINDOWS)))
    mask = inputs[1] if len(inputs) == 2 and inputs[1].shape == inputs[0].shape else None
    influence = block_influence(model, *inputs, mask=mask)
    return sorted(sorted(range(len(influence)), key=influence.__getitem__)[:n])


def block_influence(model: Any, *inputs: torch.Tensor, mask: torch.Tensor | None = None) -> list[float]:
    """Per block of `model` (a known family's, bottom first), 1 - the mean cosine between its input and output hidden
    states over the tokens of one forward pass on `inputs` (`mask`: [batch, tokens], the tokens that count; default
    all). Lower: the block changes the stream less, the cheaper to drop.

    Example:
        >>> influence = block_influence(model, ids, attention, mask=attention)  # doctest: +SKIP
        >>> drop = sorted(range(len(influence)), key=influence.__getitem__)[:3]  # doctest: +SKIP
    """
    blocks = families.blocks(model)
    if not blocks:
        raise ConfigError("model", type(model).__name__, "has no Transformer block of a known family "
                          f"({', '.join(families.FAMILIES.names)}) to measure")
    seen: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def hook(index: int):
        def record(_module: Any, args: tuple, kwargs: dict, out: Any) -> None:
            hidden = args[0] if args else kwargs["hidden_states"]
            seen[index] = (hidden.detach(), (out[0] if isinstance(out, tuple) else out).detach())
        return record

    handles = [b.register_forward_hook(hook(i), with_kwargs=True) for i, b in enumerate(blocks)]
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
    out = []
    for i in range(len(blocks)):
        before, after = seen[i]
        cos = torch.nn.functional.cosine_similarity(before.float(), after.float(), dim=-1)
        keep = torch.ones_like(cos, dtype=torch.bool) if mask is None else mask.bool().reshape(cos.shape)
        out.append(float(1 - cos[keep].mean()))
    return out


TECHNIQUES = (Layers(),)
