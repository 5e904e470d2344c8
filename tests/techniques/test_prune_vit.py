"""A Vision Transformer (transformers 5's ViT layout: `attention.{q,k,v,o}_proj`, `mlp.fc1/fc2`) through the
Transformer knobs: heads and FFN channels pruned, top layers dropped, INT8, exported and run; `seq_len` refused.

The pruned model is checked against an independent computation, as for BERT: the unpruned model with the removed
heads' output-projection columns and the removed FFN channels' `fc2` columns zeroed computes the same function.
"""

from __future__ import annotations

import copy

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import transformers  # noqa: F401 - in the lock ([nlp]): missing, it fails here instead of skipping
from hf_workload import images, tiny_bert_workload, tiny_vit

from lepton_search import FinetuneSettings, SearchSpace, Workload
from lepton_search.candidate import compress
from lepton_search.errors import ConfigError
from lepton_search.space import CompressionConfig
from lepton_search.study import acting_space
from lepton_search.techniques import prune_transformer as pt
from lepton_search.techniques.export import check_traceable

SETTINGS = FinetuneSettings(subset_size="all", batch_size=16, calibration_size=8, bn_batches=1)


def test_the_vit_layout_is_found_and_pruned_like_bert():
    model = tiny_vit()
    assert pt.is_transformer(model) and pt.layout_of(pt.encoder_layers(model)[0]).name == "vit"
    assert pt.layer_shapes(model) == [pt.EncoderLayerShape(4, 8, 64)] * 2
    pruned = pt.prune_encoder(model, 0.5, round_to=8)
    assert pt.layer_shapes(pruned) == [pt.EncoderLayerShape(2, 8, 32)] * 2
    for layer in pt.encoder_layers(pruned):
        assert layer.attention.q_proj.out_features == layer.attention.o_proj.in_features == 16
        assert (layer.mlp.fc1.out_features, layer.mlp.fc2.in_features, layer.mlp.fc2.out_features) == (32, 32, 32)
        assert layer.attention.num_attention_heads == 2
    assert pt.layer_shapes(model) == [pt.EncoderLayerShape(4, 8, 64)] * 2  # the input model is untouched


def test_pruned_vit_equals_unpruned_with_removed_units_zeroed():
    model, (x, _) = tiny_vit(), images(4)
    pruned = pt.prune_encoder(model, 0.5)
    zeroed = copy.deepcopy(model)
    for ref, layer in zip(pt.encoder_layers(zeroed), pt.encoder_layers(pruned)):
        a = ref.attention  # L1 ranks recomputed here from the raw arrays
        qkv = sum(np.abs(getattr(a, n).weight.detach().numpy()).sum(1) + np.abs(getattr(a, n).bias.detach().numpy())
                  for n in ("q_proj", "k_proj", "v_proj"))
        heads = (qkv + np.abs(a.o_proj.weight.detach().numpy()).sum(0)).reshape(4, 8).sum(1)
        ffn = (np.abs(ref.mlp.fc1.weight.detach().numpy()).sum(1) + np.abs(ref.mlp.fc1.bias.detach().numpy())
               + np.abs(ref.mlp.fc2.weight.detach().numpy()).sum(0))
        keep_heads, keep_ffn = sorted(np.argsort(-heads)[:2]), sorted(np.argsort(-ffn)[:32])
        kept = [h * 8 + i for h in keep_heads for i in range(8)]
        assert torch.equal(layer.attention.q_proj.weight, a.q_proj.weight[kept])
        assert torch.equal(layer.mlp.fc2.weight, ref.mlp.fc2.weight[:, keep_ffn])
        with torch.no_grad():
            a.o_proj.weight[:, [c for c in range(32) if c not in kept]] = 0
            ref.mlp.fc2.weight[:, [c for c in range(64) if c not in keep_ffn]] = 0
    with torch.no_grad():
        got, want, orig = (m(pixel_values=x).logits for m in (pruned, zeroed, model))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(got, orig, atol=1e-3)  # the removed units did matter


def test_a_vit_workload_compresses_to_a_smaller_int8_file_that_runs(tmp_path):
    x, y = images()
    wl = Workload("vit", tiny_vit(layers=3), train=(x, y), val=(x, y), example_input=x[:1])
    assert wl.input_names == ["pixel_values"]
    config = CompressionConfig(prune_ratio=0.5, bits=8, finetune_epochs=1, layers=2)
    cand = compress(wl, config, tmp_path / "c.onnx", settings=SETTINGS)
    graph = onnx.load(str(cand.onnx_path))
    assert sum(n.op_type == "Softmax" for n in graph.graph.node) == 2  # one attention a kept layer
    assert any(n.op_type == "DynamicQuantizeLinear" for n in graph.graph.node)  # attention: the dynamic route
    assert cand.quantization["tool"] == "onnxruntime" and not cand.quantization_aware  # it fine-tuned in float
    assert cand.macs_ratio < 0.5
    out = ort.InferenceSession(str(cand.onnx_path)).run(None, {"pixel_values": x[:4].numpy()})[0]
    assert out.shape == (4, 3) and np.isfinite(out).all()
    assert len(pt.encoder_layers(wl.model)) == 3  # the user's model is left whole


def test_seq_len_on_an_image_transformer_is_refused_by_name_and_layers_beyond_its_depth_too(tmp_path):
    x, y = images(8)
    wl = Workload("vit", tiny_vit(), train=(x, y), val=(x, y), example_input=x[:1])
    graph = check_traceable(wl.model, wl.example_args, tmp_path, names=wl.input_names)
    with pytest.raises(ConfigError, match="knobs.seq_len.*no token-sequence input"):
        acting_space(wl, SearchSpace(seq_len=(0, 16)), graph, verbose=False)
    with pytest.raises(ConfigError, match="knobs.layers.*more than the model's 2 encoder layers"):
        acting_space(wl, SearchSpace(layers=(0, 3)), graph, verbose=False)
    acting_space(wl, SearchSpace(layers=(0, 1)), graph, verbose=False)  # what the model can take passes


def test_int8_mode_static_makes_a_calibrated_qdq_vit_and_is_fixed_without_8_bits(tmp_path):
    from lepton_search.study import acting_space

    x, y = images()
    wl = Workload("vit", tiny_vit(), train=(x, y), val=(x, y), example_input=x[:1])
    cand = compress(wl, CompressionConfig(0.0, 8, 1, int8_mode="static"), tmp_path / "s.onnx", settings=SETTINGS)
    ops = {n.op_type for n in onnx.load(str(cand.onnx_path)).graph.node}
    assert "QuantizeLinear" in ops and "DynamicQuantizeLinear" not in ops and cand.quantization_aware
    out = ort.InferenceSession(str(cand.onnx_path)).run(None, {"pixel_values": x[:2].numpy()})[0]
    assert out.shape == (2, 3) and np.isfinite(out).all()
    graph = onnx.load(str(cand.onnx_path))
    with pytest.warns(UserWarning, match="int8_mode fixed at 'auto'"):
        space = acting_space(wl, SearchSpace(bits=(32, 16), int8_mode=("auto", "static")), graph, verbose=False)
    assert space.domain("int8_mode") == ["auto"]


def test_fusion_records_the_fused_ops_warns_of_unfused_attention_and_is_refused_where_it_cannot_act(tmp_path):
    """ONNX Runtime 1.32's optimizer fuses a BERT's attention; of this ViT export it fuses LayerNorm and Gelu but
    not attention: the trial says so (a warning, the card), the file still runs and matches the unfused one."""

    from lepton_search.results.card import model_card
    from lepton_search.study import acting_space
    from lepton_search.techniques import export

    bert = compress(tiny_bert_workload(), CompressionConfig(0.5, 8, 0, fusion="ort"), tmp_path / "b.onnx",
                    settings=SETTINGS)
    assert bert.quantization["fused_ops"]["Attention"] == 2 and bert.quantization["fusion"] == "ort"
    x, y = images(8)
    wl = Workload("vit", tiny_vit(), train=(x, y), val=(x, y), example_input=x[:1])
    with pytest.warns(UserWarning, match="attention not fused"):
        vit = compress(wl, CompressionConfig(0.0, 32, 0, fusion="ort"), tmp_path / "v.onnx", settings=SETTINGS)
    assert vit.quantization["fused_ops"].get("SkipLayerNormalization") and "Attention" not in vit.quantization["fused_ops"]
    plain = compress(wl, CompressionConfig(0.0, 32, 0), tmp_path / "p.onnx", settings=SETTINGS)
    feed = {"pixel_values": x.numpy()}
    np.testing.assert_allclose(*(ort.InferenceSession(str(c.onnx_path)).run(None, feed)[0] for c in (vit, plain)),
                               rtol=1e-4, atol=1e-5)
    card = model_card({"study": "s", "trial": 0, "workload": "vit", "seed": 0, "config": {"bits": 32},
                       "base": {}, "metrics": {"quantization_route": {**vit.quantization, "summary": "FP32"}}})
    assert "Warning: attention not fused" in card and "SkipLayerNormalization" in card

    graph = export.to_onnx(wl.model, x[:1], tmp_path / "g.onnx", names=wl.input_names)
    with pytest.warns(UserWarning, match="no attention"):
        acting_space(wl, SearchSpace(fusion=("off", "ort")), graph, verbose=False)
    with pytest.raises(ConfigError, match="knobs.fusion.*static INT8"):
        acting_space(wl, SearchSpace(bits=(8,), int8_mode=("static",), fusion=("ort",)), graph, verbose=False)
    cnn = Workload("cnn", torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(), torch.nn.LazyLinear(3)),
                   train=(x, y), val=(x, y), example_input=x[:1])
    with pytest.raises(ConfigError, match="knobs.fusion.*no Transformer encoder layer"):
        acting_space(cnn, SearchSpace(fusion=("ort",)), graph, verbose=False)
