"""A token classifier on nn.TransformerEncoder (fast path on; int64 input_ids + attention_mask): export, pruning,
compression. The whole search over it is in tests/test_token_search.py."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from token_workload import SEQ, TinyTokenClassifier, token_data, token_workload
from torch import nn

from lepton_search.candidate import compress
from lepton_search.evaluate import onnx_accuracy
from lepton_search.latency.host_cpu import session
from lepton_search.space import CompressionConfig, FinetuneSettings
from lepton_search.techniques import export, prune

NAMES = ["input_ids", "attention_mask"]


def _logits(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(ids, mask).numpy()


def test_export_with_the_fast_path_on_matches_torch(tmp_path):
    torch.manual_seed(0)
    model = TinyTokenClassifier().eval()
    ids, mask, _ = token_data(32, seed=5)  # padded: 6..SEQ real tokens per row
    assert torch.backends.mha.get_fastpath_enabled()
    graph = export.to_onnx(model, (ids[:1], mask[:1]), tmp_path / "enc.onnx", names=NAMES)
    assert torch.backends.mha.get_fastpath_enabled()  # restored after the export
    assert [i.name for i in graph.graph.input] == NAMES
    assert {i.type.tensor_type.elem_type for i in graph.graph.input} == {onnx.TensorProto.INT64}
    sess = session(tmp_path / "enc.onnx")
    got = sess.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]  # batch 32: dynamic axis
    # torch here runs the fused fast path (nested tensors for the padded rows); ONNX the unfused ops
    np.testing.assert_allclose(got, _logits(model, ids, mask), atol=1e-5)


def test_feed_forward_channels_prune_and_match_the_unpruned_model_without_them():
    wl = token_workload()
    pruned = prune.prune_structured(wl.model, wl.example_args, 0.5)
    base_layers, layers = wl.model.encoder.layers, pruned.encoder.layers
    for base_layer, layer in zip(base_layers, layers, strict=True):
        assert layer.linear1.out_features == base_layer.linear1.out_features // 2
        assert layer.linear2.in_features == layer.linear1.out_features
        assert layer.self_attn.embed_dim == base_layer.self_attn.embed_dim  # attention kept whole (see prune.kept_whole)
        assert torch.equal(layer.self_attn.in_proj_weight, base_layer.self_attn.in_proj_weight)
    assert pruned.head.out_features == 3
    # Independent reference: the unpruned model with the dropped FFN channels zeroed gives the same logits.
    reference = type(wl.model)()
    reference.load_state_dict(wl.model.state_dict())
    for ref_layer, layer in zip(reference.encoder.layers, layers, strict=True):
        kept = [int((ref_layer.linear1.weight == row).all(dim=1).nonzero()[0]) for row in layer.linear1.weight]
        dropped = sorted(set(range(ref_layer.linear1.out_features)) - set(kept))
        with torch.no_grad():
            ref_layer.linear1.weight[dropped] = 0
            ref_layer.linear1.bias[dropped] = 0
    ids, mask, _ = wl.val
    np.testing.assert_allclose(_logits(pruned, ids, mask), _logits(reference, ids, mask), atol=1e-5)
    macs, _ = prune.count(pruned, wl.example_args)
    assert macs < prune.count(wl.model, wl.example_args)[0]


def test_pruning_finds_the_encoder_layers_to_shrink():
    shrinkable, skipped = prune.layers_pruning_skips(token_workload().model)
    assert "encoder.layers.0.linear1" in shrinkable
    assert "encoder.layers.0.self_attn (MultiheadAttention)" in skipped
    assert not any("out_proj" in name for name in shrinkable)


@pytest.mark.parametrize("bits", [32, 8])
def test_compress_prunes_finetunes_quantizes_and_exports_token_inputs(tmp_path, bits):
    wl = token_workload()
    settings = FinetuneSettings(subset_size=256, batch_size=64, bn_batches=2, calibration_size=16)
    cand = compress(wl, CompressionConfig(0.5, bits, 1), tmp_path / "c.onnx", settings=settings)
    assert cand.macs_ratio < 0.95 and cand.params_ratio < 0.95
    sess = session(cand.onnx_path)
    assert [(i.name, i.type) for i in sess.get_inputs()] == [(n, "tensor(int64)") for n in NAMES]
    assert sess.get_inputs()[0].shape[1] == SEQ
    acc = onnx_accuracy(cand.onnx_path, wl)
    assert acc.total == len(wl.val[0]) and acc.accuracy > 0.5  # 3 classes: chance is 1/3


class _AttentionOnly(nn.Module):
    """Embedding + one nn.MultiheadAttention + head: nothing structured pruning may shrink."""

    def __init__(self) -> None:
        super().__init__()
        self.emb, self.attn, self.head = nn.Embedding(32, 8), nn.MultiheadAttention(8, 2, batch_first=True), nn.Linear(8, 3)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.emb(input_ids)
        return self.head(self.attn(h, h, h, key_padding_mask=attention_mask == 0)[0].mean(1))


def test_no_op_check_drops_pruning_for_attention_only_and_keeps_it_for_an_encoder(tmp_path):
    from lepton_search.space import SearchSpace
    from lepton_search.study import acting_space
    from lepton_search.workloads import Workload

    wl = token_workload()
    space = SearchSpace(prune_ratio=(0.0, 0.5, 0.5), bits=(32, 8))
    graph = export.check_traceable(wl.model, wl.example_args, tmp_path, names=wl.input_names)
    assert acting_space(wl, space, graph, verbose=False) is space
    attn = Workload("attn", _AttentionOnly().eval(), train=wl.train, val=wl.val, example_input=wl.example_input,
                    input_spec=wl.input_spec)
    graph = export.check_traceable(attn.model, attn.example_args, tmp_path, names=attn.input_names)
    with pytest.warns(UserWarning, match=r"prune_ratio fixed at 0: .*attn \(MultiheadAttention\), head"):
        narrowed = acting_space(attn, space, graph, verbose=False)
    assert narrowed.prune_ratios == [0.0] and narrowed.bits == (32, 8)


def test_unstructured_and_global_pruning_take_the_two_inputs():
    wl = token_workload()
    baked = prune.bake_masks(prune.prune_unstructured(wl.model, wl.example_args, 0.5), wl.example_args)
    assert isinstance(baked, TinyTokenClassifier) and 0.4 < prune.weight_sparsity(baked) < 0.55
    pruned = prune.prune_structured(wl.model, wl.example_args, 0.5, global_ranking=True)
    assert sum(layer.linear1.out_features for layer in pruned.encoder.layers) < 2 * 32
