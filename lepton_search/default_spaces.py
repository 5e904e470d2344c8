"""The default search of each kind of model: what `search(workload)`, `lepton-search run` and `lepton-search init`
use when no space is given.

    kind                                   space (package data = search_spaces/)   scaled to the model
    causal language model (task "lm")      llm_space.yaml = llm.yaml               layers: 4/5 and 9/10 of its depth
    Transformer of a family record         transformer_space.yaml = transformer.yaml  layers: 1/2 and 2/3 of its
                                                                                   depth; seq_len: 1/4 and 1/2 of its
                                                                                   length (left out without tokens)
    recommender (embedding tables, a       recommender_space.yaml = recommender.yaml  -
      ranking or binary task)
    anything else (CNN, RNN, MLP)          default_space.yaml = default.yaml (the demo CNN's)

Each file's depth and length knobs are written for its reference model (MiniLM-L6 at 128 tokens: layers 3 and 4,
32 and 64 tokens; SmolLM2's 30 layers: 24 and 27): on that model the scaled space is the file itself, and a model
of another depth or length gets the same shares of its own instead of a refusal ("layers 4 is more than the model's
2 encoder layers"). A share that rounds to the whole model or to nothing is left out.

Example:
    >>> from lepton_search import workloads  # doctest: +SKIP
    >>> space, why = default_space_for(workloads.get("bbc-minilm"))  # doctest: +SKIP
    >>> space.layers, space.seq_len, why  # doctest: +SKIP
    ((0, 3, 4), (0, 32, 64), 'transformer.yaml (a Transformer encoder: tokens, layers, heads, INT8)')
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from lepton_search.space import TRANSFORMER_SPACE_PATH, SearchSpace, default_space
from lepton_search.techniques import families
from lepton_search.workloads import Workload

HERE = Path(__file__).parent
LLM_SPACE_PATH = HERE / "llm_space.yaml"
RECOMMENDER_SPACE_PATH = HERE / "recommender_space.yaml"

ENCODER_DEPTH_SHARES = (1 / 2, 2 / 3)  # transformer.yaml's layers 3 and 4 of MiniLM-L6's 6
DECODER_DEPTH_SHARES = (4 / 5, 9 / 10)  # llm.yaml's 24 and 27 of SmolLM2's 30 (ModelOptimizer: <= 1/3 a step)
TOKEN_SHARES = (1 / 4, 1 / 2)  # transformer.yaml's 32 and 64 of bbc-minilm's 128 tokens


def kept(total: int, shares: tuple[float, ...]) -> tuple[int, ...]:
    """0 (all) and each share of `total`, rounded; a share that rounds to nothing or to all of it is left out.

    Example:
        >>> kept(6, ENCODER_DEPTH_SHARES), kept(30, DECODER_DEPTH_SHARES), kept(2, ENCODER_DEPTH_SHARES)
        ((0, 3, 4), (0, 24, 27), (0, 1))
    """
    return tuple(dict.fromkeys([0] + [n for n in (round(total * s) for s in shares) if 0 < n < total]))


def transformer_space(*, tokens: bool = True) -> SearchSpace:
    """The default search for a Transformer classifier (`search_spaces/transformer.yaml`): tokens, layers, heads and
    FFN channels, INT8, distillation epochs. `tokens=False` (a model without token inputs, e.g. a ViT) leaves
    `seq_len` out: the file's knob would be refused on it."""
    space = SearchSpace.from_yaml(TRANSFORMER_SPACE_PATH)
    return space if tokens else dataclasses.replace(space, seq_len=(0,))


def default_space_for(workload: Workload) -> tuple[SearchSpace, str]:
    """The default space of `workload`'s kind of model, scaled to its depth and length (see the module
    docstring), and which file it came from and why, in one line."""
    model = workload.model
    depth = len(families.blocks(model))
    if workload.task.name == "lm" or workload.generation:
        space = SearchSpace.from_yaml(LLM_SPACE_PATH)
        return (dataclasses.replace(space, layers=kept(depth, DECODER_DEPTH_SHARES)) if depth else space,
                f"llm.yaml (a causal language model of {depth} layers: INT4 blocks, layers, heads, distillation)")
    if families.family_of(model) is not None:
        tokens = workload.seq_len
        space = transformer_space(tokens=tokens is not None)
        space = dataclasses.replace(space, layers=kept(depth, ENCODER_DEPTH_SHARES))
        if tokens is not None:
            space = dataclasses.replace(space, seq_len=kept(tokens, TOKEN_SHARES))
        what = "tokens, layers, heads, INT8" if tokens else "layers, heads, INT8; no seq_len: the model takes no tokens"
        return space, f"transformer.yaml (a Transformer encoder: {what})"
    if workload.task.name in ("ranking", "binary") and _has_tables(model):
        return (SearchSpace.from_yaml(RECOMMENDER_SPACE_PATH),
                "recommender.yaml (embedding tables: rows' bits and width, the MLP pruned, INT8)")
    return default_space(), f"default.yaml (the default search, tuned on the demo CNN; this model: {workload.family})"


def _has_tables(model) -> bool:
    from torch import nn

    return any(isinstance(m, (nn.Embedding, nn.EmbeddingBag)) for m in model.modules())
