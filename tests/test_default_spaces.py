"""`search(workload)` with no space takes the default of the model's kind (`default_spaces`), scaled to its depth
and length, and the package's spaces are the files under search_spaces/."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hf_workload import tiny_bert_workload, tiny_vit_workload
from rec_workload import trained_workload
from test_lm_task import tiny_causal_llama, windows

from lepton_search import SearchSpace, Workload
from lepton_search.default_spaces import (
    DECODER_DEPTH_SHARES,
    ENCODER_DEPTH_SHARES,
    LLM_SPACE_PATH,
    RECOMMENDER_SPACE_PATH,
    TOKEN_SHARES,
    default_space_for,
    kept,
    transformer_space,
)
from lepton_search.space import DEFAULT_SPACE_PATH, TRANSFORMER_SPACE_PATH, default_space

SHIPPED = Path(__file__).parents[1] / "search_spaces"


@pytest.mark.parametrize(("package", "shipped"), [(DEFAULT_SPACE_PATH, "default.yaml"),
                                                  (TRANSFORMER_SPACE_PATH, "transformer.yaml"),
                                                  (LLM_SPACE_PATH, "llm.yaml"),
                                                  (RECOMMENDER_SPACE_PATH, "recommender.yaml")])
def test_the_package_spaces_are_the_shipped_files(package, shipped):
    assert package.resolve() == (SHIPPED / shipped).resolve()  # links: one text, edited in one place


def test_on_its_reference_model_a_scaled_space_is_the_file_itself():
    # MiniLM-L6 at 128 tokens (bbc-minilm) for transformer.yaml, SmolLM2's 30 layers for llm.yaml
    assert kept(6, ENCODER_DEPTH_SHARES) == transformer_space().layers
    assert kept(128, TOKEN_SHARES) == transformer_space().seq_len
    assert kept(30, DECODER_DEPTH_SHARES) == SearchSpace.from_yaml(LLM_SPACE_PATH).layers
    assert kept(1, ENCODER_DEPTH_SHARES) == (0,)  # nothing to drop: the knob stays at its no-op


def test_an_encoder_gets_the_transformer_space_at_its_own_depth_and_length():
    space, why = default_space_for(tiny_bert_workload(num_layers=6))  # 6 layers of 8 tokens
    assert why.startswith("transformer.yaml (a Transformer encoder: tokens")
    assert space.layers == (0, 3, 4) and space.seq_len == (0, 2, 4)
    assert space.bits == transformer_space().bits and space.trials == transformer_space().trials
    vit, why = default_space_for(tiny_vit_workload(layers=4))
    assert vit.domain("seq_len") == [0] and vit.layers == (0, 2, 3) and "no seq_len" in why


def test_a_causal_lm_gets_the_llm_space_and_a_recommender_its_own():
    data = windows()
    lm = Workload("tiny-lm", tiny_causal_llama(), train=data, val=data, example_input=(data[0][:1], data[1][:1]),
                  task="lm")
    space, why = default_space_for(lm)
    assert why.startswith("llm.yaml (a causal language model of 2 layers")
    assert space.domain("layers") == [0] and 4 in space.bits  # 4/5 and 9/10 of 2 layers round to all of them
    assert space.int4_block == SearchSpace.from_yaml(LLM_SPACE_PATH).int4_block
    rec, why = default_space_for(trained_workload(steps=1))
    assert why.startswith("recommender.yaml") and rec == SearchSpace.from_yaml(RECOMMENDER_SPACE_PATH)


def test_anything_else_gets_the_embedded_default():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 3)).eval()
    x, y = torch.randn(12, 1, 8, 8), torch.arange(12) % 3
    space, why = default_space_for(Workload("cnn", model, train=(x, y), val=(x, y), example_input=x[:1]))
    assert space == default_space() and why.startswith("default.yaml") and "this model: CNN" in why
