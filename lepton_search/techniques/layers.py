"""The `layers` knob as a technique: a Transformer keeps its bottom encoder layers, the top ones leave the graph
(`prune_transformer.keep_layers`), and the student is distilled from the whole teacher."""

from __future__ import annotations

from typing import Any

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
        if build.config.layers:
            build.model = prune_transformer.keep_layers(build.own(), build.config.layers)


TECHNIQUES = (Layers(),)
