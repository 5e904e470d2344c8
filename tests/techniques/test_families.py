"""The contract every family record passes (after optuna's `testing/pytest_samplers.py`: one parametrised suite),
each on a tiny random model of its family (`tests/family_models.py`), and the registry's own behaviour.

Pruning is checked against an independent computation: the unpruned model with the removed units' paths to the
output zeroed (the removed heads' output-projection columns, the removed MLP channels' down-projection columns)
computes the same logits as the pruned model; dropped layers against a model built by transformers at the smaller
depth holding the same weights.
"""

from __future__ import annotations

import copy
import time

import pytest
import torch
import transformers
from family_models import TINY, inputs, tiny, zeroed_reference

from lepton_search.errors import ConfigError
from lepton_search.techniques import families
from lepton_search.techniques import prune_transformer as pt
from lepton_search.techniques.families import FAMILIES, Family

NAMES = [f.name for f in FAMILIES]
CONFIG_SHAPE = {  # (query heads, key/value heads, head size) of each tiny model, from its config
    "bert": (4, 4, 8), "distilbert": (4, 4, 8), "vit": (4, 4, 8), "gpt2": (4, 4, 8), "llama": (4, 2, 8)}


def _logits(model: torch.nn.Module, name: str) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs(name)).logits


def test_every_record_has_a_tiny_model_for_the_contract():
    assert sorted(TINY) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
class TestFamilyContract:
    def test_family_of_finds_it_and_reads_its_blocks_heads_and_head_size(self, name):
        model = tiny(name)
        assert families.family_of(model).name == name
        assert len(families.blocks(model)) == 2
        assert families.has_attention(model) and not families.unrecorded_attention(model)
        for block in families.blocks(model):
            assert pt.attention_shape(block) == CONFIG_SHAPE[name]
        heads, kv, size = CONFIG_SHAPE[name]
        assert pt.layer_shapes(model) == [pt.BlockShape(heads, size, 64, kv if kv != heads else None)] * 2

    def test_pruned_heads_and_channels_equal_the_unpruned_model_with_them_zeroed(self, name):
        model = tiny(name)
        heads, kv, size = CONFIG_SHAPE[name]
        pruned = pt.prune_blocks(model, 0.5)
        assert all(pt.attention_shape(b) == (heads // 2, kv // 2, size) for b in families.blocks(pruned))
        zeroed = zeroed_reference(model, pruned)  # L1 ranks from the raw arrays; checks the kept columns too
        got, want = _logits(pruned, name), _logits(zeroed, name)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
        assert not torch.allclose(got, _logits(model, name), atol=1e-4)  # the removed units did matter

    def test_kept_layers_equal_the_model_transformers_builds_at_that_depth(self, name):
        model = tiny(name, layers=3)
        kept = pt.keep_layers(copy.deepcopy(model), 2)
        assert len(families.blocks(kept)) == 2 and kept.config.num_hidden_layers == 2
        shallow = type(model)(copy.deepcopy(kept.config)).eval()
        shallow.set_attn_implementation("eager")
        missing, unexpected = shallow.load_state_dict(model.state_dict(), strict=False)
        assert not missing and unexpected  # the top layer's weights are the ones left over
        torch.testing.assert_close(_logits(kept, name), _logits(shallow, name), rtol=1e-5, atol=1e-6)
        assert model.config.num_hidden_layers == 3  # the copy's config, not the user's

    def test_the_pruned_model_trains(self, name):
        pruned = pt.prune_blocks(tiny(name), 0.5).train()
        loss = torch.nn.functional.cross_entropy(pruned(**inputs(name)).logits, torch.tensor([0, 1, 2]))
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in pruned.parameters() if p.requires_grad)


def test_gqa_heads_go_by_whole_key_value_groups_and_a_ratio_rounds_down_to_groups():
    model = tiny("llama")
    assert pt.layer_shapes(pt.prune_blocks(model, 0.25)) == [pt.BlockShape(4, 8, 48, 2)] * 2  # 0.25 x 2 groups: none
    block = families.blocks(pt.prune_blocks(model, 0.5))[0]
    attn = block.self_attn
    assert (attn.q_proj.out_features, attn.k_proj.out_features, attn.v_proj.out_features) == (16, 8, 8)
    assert attn.num_key_value_groups == 2 and attn.head_dim == 8  # what LlamaAttention's forward reads
    assert model.config.num_attention_heads == 4  # the shared config is not written


def test_gpt2s_fused_conv1d_is_sliced_transposed_and_its_split_size_follows():
    model = tiny("gpt2")
    attn = families.blocks(pt.prune_blocks(model, 0.5))[0].attn
    assert tuple(attn.c_attn.weight.shape) == (32, 48) and attn.c_attn.nf == 48 and attn.c_attn.nx == 32
    assert tuple(attn.c_proj.weight.shape) == (16, 32) and (attn.split_size, attn.num_heads) == (16, 2)


def test_a_record_naming_a_module_the_block_lacks_is_one_line_not_a_silent_none():
    typo = Family("llama_typo", ("LlamaDecoderLayer",), attention="self_attn",
                  qkv=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), o="self_attn.out_proj",
                  up="mlp.up_proj", gate="mlp.gate_proj", down="mlp.down_proj", heads=None, head_size="head_dim")
    with FAMILIES.registered(typo), pytest.raises(
            ConfigError, match=r"^families.llama_typo.o: got 'self_attn.out_proj'; LlamaDecoderLayer at model.layers.0 "
                               r"has no such Linear/Conv1D or int attribute \(its children: self_attn, mlp, "):
        families.family_of(tiny("llama"))
    assert "llama_typo" not in FAMILIES.names  # the table is as before
    with pytest.raises(ConfigError, match="families.x.qkv"):
        Family("x", ("X",), attention="a", qkv=("a.q", "a.k"), o="o", up="u", down="d", head_size="h")
    with pytest.raises(ConfigError, match="family: got 'bert'; a family of that name"), \
            FAMILIES.registered(FAMILIES.get("bert")):
        pass
    with pytest.raises(ConfigError, match="did you mean 'llama'"):
        FAMILIES.get("lama")


def test_a_scoped_copy_or_block_leaves_the_default_table_whole():
    model = tiny("llama")
    scoped = FAMILIES.copy()
    with scoped.without("llama"):
        assert families.family_of(model, scoped) is None and families.family_of(model) is not None
    with FAMILIES.without("llama"):
        assert families.family_of(model) is None
        assert families.unrecorded_attention(model) == ["model.layers.0.self_attn", "model.layers.1.self_attn"]
        assert families.has_attention(model)  # still attention: the INT8 route and the card say so
    assert families.family_of(model).name == "llama"


def test_a_llama_without_its_record_is_refused_by_name_before_torch_pruning_builds_a_graph():
    """Nothing runs unbounded: structured pruning of attention no record covers is refused in one line (at once),
    by the pipeline's prune and by a search before anything trains."""
    from lepton_search import SearchSpace
    from lepton_search.space import CompressionConfig
    from lepton_search.study import acting_space
    from lepton_search.techniques import prune
    from lepton_search.workloads import Workload

    model = tiny("llama")
    x = inputs("llama")
    args = (x["input_ids"], x["attention_mask"])
    with FAMILIES.without("llama"):
        wl = Workload("llama-norecord", model, train=(*args, torch.tensor([0, 1, 2])),
                      val=(*args, torch.tensor([0, 1, 2])), example_input=(args[0][:1], args[1][:1]))
        start = time.monotonic()
        with pytest.raises(ConfigError, match=r"knobs.prune_ratio: got 0.5; LlamaAttention at 'model.model.layers.0."
                                              r"self_attn' \(2 such\) is attention no family record covers"):
            prune.prune(wl.model, wl.example_args, CompressionConfig(prune_ratio=0.5, bits=32, finetune_epochs=0))
        with pytest.raises(ConfigError, match="knobs.prune_ratio.*add a families.Family"):
            acting_space(wl, SearchSpace(prune_ratio=(0.0, 0.5, 0.5), bits=(32,)), graph=None, verbose=False)
        assert time.monotonic() - start < 10
        unstructured = SearchSpace(prune_ratio=(0.0, 0.5, 0.5), prune_method="unstructured", bits=(32,))
        prune.refuse_unrecorded_attention(wl.model, 0.5, tuple(unstructured.domain("prune_method")))  # masks: no graph
    with pytest.raises(ConfigError, match="fusion.*'llama' blocks.*no model type"):
        acting_space(Workload("llama", tiny("llama"), train=(*args, torch.tensor([0, 1, 2])),
                              val=(*args, torch.tensor([0, 1, 2])), example_input=(args[0][:1], args[1][:1])),
                     SearchSpace(fusion=("ort",)), graph=None, verbose=False)


def test_the_fine_tune_recipe_and_the_model_family_come_from_the_record():
    from lepton_search.space import FinetuneSettings
    from lepton_search.techniques.finetune import recipe_for
    from lepton_search.workloads import TRANSFORMER_FAMILY, model_family

    for name in NAMES:
        assert recipe_for(tiny(name), FinetuneSettings()).optimizer == FAMILIES.get(name).optimizer == "adamw"
        assert model_family(tiny(name)) == TRANSFORMER_FAMILY
    assert transformers  # imported at the top: a missing transformers fails here, not as a skip
