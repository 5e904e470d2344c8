"""Small ONNX graphs built with `onnx.helper` alone (no torch): for tests and quick calibration checks."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def conv_net(channels: tuple[int, ...], *, size: int = 16, cin: int = 3, seed: int = 0) -> onnx.ModelProto:
    """3x3 conv + ReLU per entry of `channels`, then global pooling: input (batch, cin, size, size)."""
    rng = np.random.default_rng(seed)
    nodes, inits, prev = [], [], "input"
    for i, c in enumerate(channels):
        w = numpy_helper.from_array(rng.standard_normal((c, cin, 3, 3)).astype(np.float32), f"w{i}")
        inits.append(w)
        nodes += [helper.make_node("Conv", [prev, w.name], [f"c{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        prev, cin = f"r{i}", c
    nodes.append(helper.make_node("GlobalAveragePool", [prev], ["logits"]))
    graph = helper.make_graph(nodes, "conv_net", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                                 ["batch", 3, size, size])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def mlp_net(widths: tuple[int, ...], *, seed: int = 0) -> onnx.ModelProto:
    """Gemm + ReLU layers of `widths` (first entry: input features)."""
    rng = np.random.default_rng(seed)
    nodes, inits, prev = [], [], "input"
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        w = numpy_helper.from_array(rng.standard_normal((b, a)).astype(np.float32), f"w{i}")
        bias = numpy_helper.from_array(np.zeros(b, np.float32), f"b{i}")
        inits += [w, bias]
        nodes += [helper.make_node("Gemm", [prev, w.name, bias.name], [f"g{i}"], transB=1),
                  helper.make_node("Relu", [f"g{i}"], [f"r{i}"])]
        prev = f"r{i}"
    nodes.append(helper.make_node("Identity", [prev], ["logits"]))
    graph = helper.make_graph(nodes, "mlp_net", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                                ["batch", widths[0]])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def write_set(out_dir: str | Path) -> list[Path]:
    """A dozen conv / MLP graphs of different sizes, with a manifest naming their group."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    models = {f"conv-{c}": conv_net((c, 2 * c)) for c in (4, 8, 16, 24, 32, 48)}
    models.update({f"mlp-{w}": mlp_net((64, w, w, 10)) for w in (32, 64, 128, 256, 384, 512)})
    paths = []
    for name, model in models.items():
        onnx.save(model, str(out / f"{name}.onnx"))
        paths.append(out / f"{name}.onnx")
    (out / "manifest.csv").write_text("file,group\n" + "".join(f"{p.name},{p.stem.split('-')[0]}\n" for p in paths))
    return paths
