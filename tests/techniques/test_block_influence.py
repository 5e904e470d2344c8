"""ShortGPT's block influence (`layers.block_influence`) against transformers' own hidden states (an independent
reference), and `prune_transformer.drop_layers` on a tiny Llama: the named blocks go, the config and the cache's
layer numbers follow, and the model still decodes with a cache."""

from __future__ import annotations

import pytest
import torch

from lepton_search.errors import ConfigError
from lepton_search.techniques.layers import block_influence
from lepton_search.techniques.prune_transformer import drop_layers

from .test_matmul_nbits import tiny_causal_llama


def test_influence_is_one_minus_the_cosine_of_each_blocks_hidden_states():
    model = tiny_causal_llama(layers=4)
    ids = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    got = block_influence(model, ids, mask, mask=mask)
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    keep = mask.bool()
    for i in range(3):  # transformers' last hidden state is after the final norm: blocks 0..2 compared
        cos = torch.nn.functional.cosine_similarity(hidden[i][keep], hidden[i + 1][keep], dim=-1)
        assert got[i] == pytest.approx(float(1 - cos.mean()), abs=1e-5)
    assert len(got) == 4
    with pytest.raises(ConfigError, match="no Transformer block"):
        block_influence(torch.nn.Linear(2, 2), torch.ones(1, 2))


def test_drop_layers_renumbers_and_still_decodes():
    model = tiny_causal_llama(layers=4)
    kept = [model.model.layers[i] for i in (0, 2)]
    drop_layers(model, [1, 3])
    assert list(model.model.layers) == kept and model.config.num_hidden_layers == 2
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == [0, 1]
    ids = torch.randint(0, 64, (1, 5), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(input_ids=ids).logits[:, -1]
        past = model(input_ids=ids[:, :4], use_cache=True).past_key_values
        step = model(input_ids=ids[:, 4:], past_key_values=past, use_cache=True).logits[:, -1]
    torch.testing.assert_close(step, full, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="give block numbers in 0..1"):
        drop_layers(model, [0, 1])


def test_the_layers_knob_on_a_causal_lm_keeps_its_most_influential_blocks(tmp_path):
    from lepton_search import Workload
    from lepton_search.candidate import compress
    from lepton_search.space import CompressionConfig, FinetuneSettings
    from lepton_search.techniques import families
    from lepton_search.techniques.layers import CALIBRATION_WINDOWS

    model = tiny_causal_llama(layers=4)
    ids = torch.randint(0, 64, (12, 9), generator=torch.Generator().manual_seed(2))
    mask, targets = torch.ones_like(ids), torch.roll(ids, -1, dims=1)
    wl = Workload("tiny-lm", model, train=(ids, mask, targets), val=(ids, mask, targets),
                  example_input=(ids[:1], mask[:1]), task="lm")
    influence = block_influence(model, ids[:CALIBRATION_WINDOWS], mask[:CALIBRATION_WINDOWS], mask=mask[:8])
    expected = sorted(sorted(range(4), key=influence.__getitem__)[2:])  # the two of most influence, in order
    weights = [b.self_attn.q_proj.weight.detach().clone() for b in families.blocks(model)]
    kept: list = []
    compress(wl, CompressionConfig(layers=2), tmp_path / "l2.onnx", settings=FinetuneSettings(), on_model=kept.append)
    blocks = families.blocks(kept[0])
    assert len(blocks) == 2 and expected != [0, 1]  # not the bottom two: the test tells the two rules apart
    for block, i in zip(blocks, expected, strict=True):
        torch.testing.assert_close(block.self_attn.q_proj.weight, weights[i])
