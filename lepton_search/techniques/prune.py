"""Pruning: structured (torch-pruning's DepGraph; the graph shrinks) or unstructured (NNCF masks).

The classifier (the last layer producing the logits) is always left whole, so the output keeps its
number of classes.
"""

from __future__ import annotations

import copy
import warnings

import torch
import torch_pruning as tp
from torch import nn

from lepton_search.errors import ConfigError
from lepton_search.logging import logger, routed_to_debug, stage
from lepton_search.space import CompressionConfig, SearchSpace
from lepton_search.techniques import families, prune_rnn, prune_transformer
from lepton_search.techniques.export import no_mha_fastpath
from lepton_search.techniques.stages import Build, CheckContext, Technique, Verdict

MAX_LAYER_RATIO = 0.9  # global ranking never empties a layer
ExampleInputs = torch.Tensor | tuple[torch.Tensor, ...]  # one tensor per model input (token ids, mask...)


class _Wrapped(nn.Module):
    """NNCF's tracer needs a top-level module that is not a bare nn.Sequential."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, *x: torch.Tensor) -> torch.Tensor:
        return self.inner(*x)


def classifier_layers(model: nn.Module) -> list[nn.Module]:
    """The last conv/linear layer in registration order: its output channels are the classes."""
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]
    return layers[-1:]


def kept_whole(model: nn.Module) -> list[nn.Module]:
    """Modules structured pruning never shrinks: the classifier, and every `nn.MultiheadAttention`.

    torch-pruning prunes an `nn.MultiheadAttention` along its embedding width, which is the residual stream of
    a whole `nn.TransformerEncoder` and re-cuts the heads (width // num_heads) after arbitrary channels go, so
    channels of different heads end up in one; it also fails when the kept width is not a multiple of the
    heads. Whole heads cannot go either: the module's projection width is its `embed_dim`, the residual
    width, so fewer heads would need another module. Kept whole, an encoder loses feed-forward channels
    (linear1 outputs, linear2 inputs) only; BERT-style layers prune whole heads in `prune_transformer`.
    """
    return classifier_layers(model) + [m for m in model.modules() if isinstance(m, nn.MultiheadAttention)]


def layers_pruning_skips(model: nn.Module) -> tuple[list[str], list[str]]:
    """(layers pruning can shrink, layers with weights it leaves whole): conv/linear layers other than the
    classifier, and every other module holding weights of its own (a GRU, an attention block...)."""
    classifier = set(map(id, classifier_layers(model)))
    # out_proj of an attention block goes with it (listed once, as the block)
    inside = {id(sub) for m in model.modules() if isinstance(m, nn.MultiheadAttention) for sub in m.modules() if sub is not m}
    shrinkable, skipped = [], []
    for name, m in model.named_modules():
        if not any(True for _ in m.parameters(recurse=False)) or id(m) in inside:
            continue
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            (skipped if id(m) in classifier else shrinkable).append(name)
        elif isinstance(m, prune_rnn.RNN_TYPES) and not getattr(m, "proj_size", 0):
            shrinkable.append(f"{name} ({type(m).__name__} hidden units)")
        elif not isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.Embedding)):
            skipped.append(f"{name} ({type(m).__name__})")
    return shrinkable, skipped


def refuse_unrecorded_attention(model: nn.Module, ratio: float, methods: tuple[str, ...] = ("structured",)) -> None:
    """Structured pruning (`methods` holding 'structured' or 'global', `ratio` > 0) of a model with attention no
    family record covers, refused in one line before torch-pruning builds its dependency graph: on a 2-layer,
    128-wide Llama classifier that build had not finished after 8 minutes (rotary embeddings, grouped key/value
    heads), and it holds no point at which it could be stopped, so no time bound can be promised for it. The fix
    is one record (`families.Family`) for the model's blocks, or no structured pruning."""
    if ratio <= 0 or not {"structured", "global"} & set(methods):
        return
    names = families.unrecorded_attention(model)
    if names:
        kind = type(model.get_submodule(names[0])).__name__
        raise ConfigError("knobs.prune_ratio", ratio, f"{kind} at {names[0]!r} ({len(names)} such) is attention no "
                          f"family record covers (known: {', '.join(families.FAMILIES.names)}), and torch-pruning's "
                          "graph on it is unbounded; add a families.Family for its block, or search prune_ratio 0 "
                          "or prune_method 'unstructured'")


def count(model: nn.Module, example_input: ExampleInputs) -> tuple[int, int]:
    with no_mha_fastpath():  # torch-pruning's counting hooks cannot read the fast path's nested tensors
        macs, params = tp.utils.count_ops_and_params(model, example_input)
    return int(macs), int(params)


def weight_sparsity(model: nn.Module) -> float:
    total = zeros = 0
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            total += m.weight.numel()
            zeros += int((m.weight == 0).sum())
    return zeros / max(total, 1)


def prune_structured(model: nn.Module, example_input: ExampleInputs, ratio: float, round_to: int = 1, *,
                     global_ranking: bool = False) -> nn.Module:
    """Remove `ratio` of the output channels of every prunable layer (L1 magnitude), in place on a copy.

    With `global_ranking` the channels of all layers are ranked together (torch-pruning's global
    pruning): `ratio` is the share removed over the whole net, and layers lose different shares (never
    more than MAX_LAYER_RATIO of one layer), so layers whose channels matter keep more of them.

    With `round_to` > 1 each pruned layer keeps a multiple of `round_to` channels (rounded down, by
    torch-pruning): ONNX Runtime's CPU kernels work in blocks of 4/8/16 channels, and odd widths can run
    slower than the unpruned layer (experiments/round_to.py measures it).
    """
    model = copy.deepcopy(model).eval()
    if ratio <= 0:
        return model
    family = families.family_of(model)
    if family is not None:  # whole heads and MLP channels, by the record; torch-pruning would split heads
        if global_ranking:
            raise ValueError(f"prune_method 'global' is not implemented for {family.name} blocks; use 'structured' "
                             "(every layer loses prune_ratio of its attention heads and FFN channels)")
        return prune_transformer.prune_blocks(model, ratio, round_to)
    refuse_unrecorded_attention(model, ratio)
    # LSTM/GRU hidden units are pruned by prune_rnn (torch-pruning's LSTM pruner slices the gates wrongly);
    # here they only follow a conv/linear layer that feeds them.
    rnns = [m for _, m in prune_rnn.rnn_modules(model)]
    pruner = tp.pruner.MagnitudePruner(
        model, example_input, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=ratio,
        ignored_layers=kept_whole(model) + rnns, global_pruning=global_ranking,
        max_pruning_ratio=MAX_LAYER_RATIO, round_to=round_to if round_to > 1 else None,
        customized_pruners=prune_rnn.customized_pruners(),
    )
    pruner.step()
    prune_rnn.prune_rnns(model, example_input, ratio, round_to)
    empty = [name for name, m in model.named_modules()
             if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)) and m.weight.shape[0] == 0]
    if empty:
        raise ValueError(f"round_to {round_to} at prune ratio {ratio} leaves no channel in {', '.join(empty)}; "
                         "use a smaller round_to or prune ratio")
    return model


def prune_unstructured(model: nn.Module, example_input: ExampleInputs, ratio: float) -> nn.Module:
    """Zero `ratio` of each layer's weights by magnitude with `nncf.prune`; masks stay during fine-tuning.

    The graph keeps its shape: dense kernels run no faster. The value is a smaller compressed file and
    speed on sparse-capable targets. Call `bake_masks` before export.
    """
    import nncf

    model = copy.deepcopy(model).eval()
    if ratio <= 0:
        return model
    dense = [f"{name} ({type(m).__name__})" for name, m in prune_rnn.rnn_modules(model)]
    if dense:
        warnings.warn(f"unstructured pruning leaves {', '.join(dense)} dense: NNCF masks Conv/Linear weights only; "
                      "prune_method 'structured' removes LSTM/GRU hidden units", stacklevel=2)
    wrapped = _Wrapped(model)
    with routed_to_debug():
        pruned = nncf.prune(wrapped, nncf.PruneMode.UNSTRUCTURED_MAGNITUDE_LOCAL, ratio=ratio, examples_inputs=example_input)
    # Keep the classifier whole: NNCF names its hooks "<module path with ':'>:weight__0".
    keep = {f"inner:{name}:weight".replace(".", ":") for name, m in model.named_modules() if m in classifier_layers(model)}
    for name, module in pruned.named_modules():
        if type(module).__name__ == "UnstructuredPruningMask" and any(k in name for k in keep):
            module.binary_mask.fill_(True)
    return pruned


def bake_masks(model: nn.Module, example_input: ExampleInputs) -> nn.Module:
    """Multiply NNCF masks into the weights and drop the hooks (no-op for plain modules)."""
    import nncf

    if not any(type(m).__name__ == "UnstructuredPruningMask" for m in model.modules()):
        return model
    with routed_to_debug():
        stripped = nncf.strip(model, do_copy=True, strip_format=nncf.StripFormat.IN_PLACE, example_input=example_input)
    return stripped.inner if isinstance(stripped, _Wrapped) else stripped


def prune(model: nn.Module, example_input: ExampleInputs, config: CompressionConfig) -> nn.Module:
    """A copy of `model` pruned by `config.prune_ratio`, `prune_method` and `round_to` (always a new module; the
    `layers` knob is `techniques.layers`')."""
    if config.prune_method == "structured":
        pruned = prune_structured(model, example_input, config.prune_ratio, config.round_to)
    elif config.prune_method == "global":
        pruned = prune_structured(model, example_input, config.prune_ratio, config.round_to, global_ranking=True)
    elif config.prune_method == "unstructured":
        pruned = prune_unstructured(model, example_input, config.prune_ratio)
    else:
        raise ValueError(f"prune_method must be 'structured', 'global' or 'unstructured', got {config.prune_method!r}")
    return pruned


class Prune(Technique):
    """prune_ratio / prune_method / round_to: channels (a CNN's filters, an MLP's units, an RNN's hidden units) or
    a Transformer's heads and FFN channels leave the graph; unstructured: weights zeroed by NNCF masks."""

    name, knobs, stage, order = "prune", ("prune_ratio", "prune_method", "round_to"), "module", 10

    def active(self, config: CompressionConfig) -> bool:
        return config.prune_ratio > 0

    def changes_model(self, config: CompressionConfig) -> bool:
        return config.prune_ratio > 0

    def check(self, ctx: CheckContext, space: SearchSpace) -> Verdict:
        model, verdict = ctx.workload.model, Verdict()
        methods = space.domain("prune_method")
        refuse_unrecorded_attention(model, space.prune_ratio[1], tuple(methods))
        if "global" in methods and space.prune_ratio[1] > 0 and families.family_of(model) is not None:
            why = "Transformer blocks prune whole heads and FFN channels by the same share in every layer"
            if methods == ["global"]:
                raise ConfigError("prune_method", "global", f"is not implemented here ({why}); use 'structured'")
            rest = tuple(m for m in methods if m != "global")
            verdict.changes["prune_method"] = rest[0] if len(rest) == 1 else rest
            verdict.notes.append(f"prune_method 'global' dropped: {why} ('structured')")
        shrinkable, skipped = layers_pruning_skips(model)
        if space.prune_ratio[1] > 0 and not shrinkable:
            verdict.changes["prune_ratio"] = (0.0, 0.0, space.prune_ratio[2])
            verdict.notes.append(f"prune_ratio fixed at 0: no layer pruning can shrink (left whole: {', '.join(skipped)})")
        elif space.prune_ratio[1] > 0 and skipped:
            logger.info(f"note: pruning leaves these layers whole: {', '.join(skipped)}")
        return verdict

    def apply(self, build: Build) -> None:
        config = build.config
        with stage(f"prune ({config.prune_method} {config.prune_ratio:g})" if config.prune_ratio else "copy (no pruning)"):
            build.model = prune(build.model, build.example, config)

    def after_training(self, build: Build) -> None:
        build.model = bake_masks(build.model, build.example)


TECHNIQUES = (Prune(),)
