"""One rule picks the INT8 route: the torch model before fine-tuning and its exported graph never disagree."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lepton_search.techniques import export, int8_dynamic


class _Recurrent(nn.Module):
    def __init__(self, cell: type[nn.Module], token_ids: bool):
        super().__init__()
        self.token_ids = token_ids
        self.embed = nn.Embedding(50, 8) if token_ids else nn.Identity()
        self.rnn = cell(8, 12, batch_first=True)
        self.head = nn.Linear(12, 3)

    def forward(self, x):
        out, _ = self.rnn(self.embed(x))
        return self.head(out[:, -1])


CASES = {
    # name: (model, example input, input dtype, the route the rule must pick)
    "token-lstm": (_Recurrent(nn.LSTM, True), torch.randint(0, 50, (1, 6)), "int64", True),
    "token-gru": (_Recurrent(nn.GRU, True), torch.randint(0, 50, (1, 6)), "int64", True),
    "float-lstm": (_Recurrent(nn.LSTM, False), torch.randn(1, 6, 8), "float32", True),
    "float-gru": (_Recurrent(nn.GRU, False), torch.randn(1, 6, 8), "float32", False),
    "cnn": (nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3)), torch.randn(1, 1, 8, 8),
            "float32", False),
    "mlp-softmax": (nn.Sequential(nn.Flatten(), nn.Linear(64, 3), nn.Softmax(-1)), torch.randn(1, 1, 8, 8),
                    "float32", False),  # a Softmax without attention's activation x activation MatMul
    "float-attention": (nn.Sequential(nn.TransformerEncoderLayer(8, 2, 16, batch_first=True), nn.Flatten(),
                                      nn.LazyLinear(3)), torch.randn(1, 6, 8), "float32", True),  # a ViT-like encoder
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_module_and_graph_take_the_same_route(name, tmp_path):
    model, x, dtype, dynamic = CASES[name]
    model.eval()
    model(x)  # materialise lazy layers
    graph = export.to_onnx(model, x, tmp_path / f"{name}.onnx")
    assert int8_dynamic.module_takes_dynamic_route(model, [dtype]) is dynamic
    assert int8_dynamic.graph_takes_dynamic_route(graph) is dynamic


def test_only_token_dtypes_count_as_token_inputs():
    cnn = CASES["cnn"][0]
    assert not int8_dynamic.module_takes_dynamic_route(cnn, ["uint8"])  # an 8-bit image is not a token id
    assert not int8_dynamic.module_takes_dynamic_route(cnn, ["float16"])
    assert int8_dynamic.module_takes_dynamic_route(cnn, ["float32", "int32"])


def test_quantize_records_the_route_it_took(tmp_path):
    """Written by the step that quantized, read by the card: width, activations, per-channel scales (read off
    NNCF's graph), the operators quantized, and nodes left in float."""
    import numpy as np
    import onnx

    from lepton_search.techniques.quantize import QuantizationRoute, quantize_with_route
    from lepton_search.testing.toy_graphs import conv_net, mlp_net

    calib = [np.random.default_rng(i).random((1, 64), dtype=np.float32) for i in range(4)]
    routes = {b: quantize_with_route(mlp_net((64, 128, 10)), b, calib)[1] for b in (32, 16, 8, 4)}
    assert routes[32] == QuantizationRoute(32, "fp32", False, (), "none") and routes[32].summary() == "FP32"
    assert (routes[16].weights, routes[16].per_channel, routes[16].tool) == ("fp16", False, "lepton_search")
    assert routes[8].is_static and routes[8].tool == "nncf" and routes[8].per_channel
    assert routes[8].operators == ("Gemm",) and routes[4].per_channel and routes[4].activations == "fp32"
    conv = conv_net((16, 32, 40))
    shape = [d.dim_value or 1 for d in conv.graph.input[0].type.tensor_type.shape.dim]
    assert quantize_with_route(conv, 8, [np.zeros(shape, np.float32)] * 2)[1].operators == ("Conv",)

    path = tmp_path / "gru.onnx"
    export.to_onnx(CASES["token-gru"][0].eval(), CASES["token-gru"][1], path)
    with pytest.warns(UserWarning, match="leaves .* in FP32"):
        _, gru = quantize_with_route(onnx.load(str(path)), 8)
    assert gru.activations == "uint8 dynamic per call" and gru.left_float and "left FP32" in gru.summary()


@pytest.mark.parametrize("kwargs, field", [({"bits": 6}, "bits"), ({"activations": "int8"}, "activations"),
                                           ({"bits": 32, "activations": "uint8 static per tensor"}, "only INT8")])
def test_a_route_that_cannot_be_is_refused(kwargs, field):
    from lepton_search.techniques.quantize import QuantizationRoute

    args = {"bits": 8, "activations": "uint8 static per tensor", "per_channel": True, "operators": ("Conv",),
            "tool": "nncf", **kwargs}
    with pytest.raises(ValueError, match=field):
        QuantizationRoute(**args)


def test_int8_mode_overrides_the_rule_both_ways(tmp_path):
    """`int8_mode` (the knob): "static" makes NNCF's calibrated QDQ of an attention graph the rule sends dynamic,
    "dynamic" makes ONNX Runtime's dynamic INT8 of a CNN the rule sends static; each file runs and says how."""
    import numpy as np
    import onnxruntime as ort

    from lepton_search.techniques.quantize import quantize_with_route

    for name, mode, want in (("float-attention", "static", "nncf"), ("cnn", "dynamic", "onnxruntime"),
                             ("float-attention", "auto", "onnxruntime"), ("cnn", "auto", "nncf")):
        model, x, _, _ = CASES[name]
        model.eval()
        model(x)
        graph = export.to_onnx(model, x, tmp_path / f"{name}.onnx")
        calib = [np.random.default_rng(i).standard_normal(tuple(x.shape), dtype=np.float32) for i in range(4)]
        out, route = quantize_with_route(graph, 8, calib, int8_mode=mode)
        ops = {n.op_type for n in out.graph.node}
        assert route.tool == want, (name, mode)
        assert ("DynamicQuantizeLinear" in ops) is (want == "onnxruntime") and ("QuantizeLinear" in ops) is (want == "nncf")
        feed = {out.graph.input[0].name: x.numpy()}
        assert np.isfinite(ort.InferenceSession(out.SerializeToString()).run(None, feed)[0]).all()
    with pytest.raises(ValueError, match="int8_mode must be"):
        quantize_with_route(graph, 8, calib, int8_mode="qat")
