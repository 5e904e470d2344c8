"""Random FP32 graphs for the kernel sweep, built with `onnx.helper` (never a scored architecture).

Four families, drawn by `random_graph` (weights in `FAMILIES`):

- `mlp_or_cnn`: random MLPs, or random chains of conv / depthwise / pool / residual blocks;
- `staged`: the shape of the default workload (a stack of 3x3 conv stages, channels doubling, max-pool
  between stages, 28x28 or 32x32 input), at random base widths and random per-layer prune ratios, so
  the table holds the odd channel counts pruning leaves;
- `inverted`: MobileNet-style inverted residual blocks (1x1 expand, 3x3 depthwise, 1x1 project,
  ReLU6, residual add), wide (up to ~1900 channels) at small spatial sizes;
- `mlp`: MLPs from a 784- or 64-wide input with pruned hidden widths.

The last two reach weight footprints of several MB, past this CPU's L2, where a kernel that must
stream its weights from memory is several times slower than the same one cached.

Example:
    >>> model, shape = random_graph(np.random.default_rng(0))  # doctest: +SKIP
"""

from __future__ import annotations

import itertools

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

PRUNE = (0.0, 0.125, 0.25, 0.375, 0.5, 0.625)
CHANNELS = (4, 6, 8, 12, 16, 20, 24, 30, 32, 40, 48, 60, 64, 80, 96, 120, 128, 160)


def _mlp_or_cnn(rng: np.random.Generator) -> tuple[onnx.ModelProto, tuple[int, ...]]:
    """A random MLP (30%) or a random conv / depthwise / pool / residual chain (70%)."""
    if rng.random() < 0.3:
        widths = [int(rng.choice([64, 128, 196, 256, 384, 512, 784, 1024]))]
        widths += [int(rng.choice([16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024]))
                   for _ in range(rng.integers(1, 4))] + [10]
        return _dense(rng, widths)
    return _random_cnn(rng)


def _random_cnn(rng: np.random.Generator) -> tuple[onnx.ModelProto, tuple[int, ...]]:
    size = int(rng.choice([8, 12, 16, 24, 28, 32]))
    cin = int(rng.choice([1, 3]))
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    prev, c, hw = "input", cin, size
    relu6 = rng.random() < 0.4

    def conv(x: str, ci: int, co: int, k: int, stride: int, group: int, act: bool) -> str:
        name = f"n{len(nodes)}"
        w = rng.standard_normal((co, ci // group, k, k)).astype(np.float32) * (2.0 / (ci // group * k * k)) ** 0.5
        inits.append(numpy_helper.from_array(w, f"{name}_w"))
        inits.append(numpy_helper.from_array(np.zeros(co, np.float32), f"{name}_b"))
        nodes.append(helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [name], pads=[k // 2] * 4,
                                      strides=[stride, stride], group=group))
        if not act:
            return name
        if relu6:
            lo, hi = f"{name}_lo", f"{name}_hi"
            inits.extend([numpy_helper.from_array(np.array(0, np.float32), lo),
                          numpy_helper.from_array(np.array(6, np.float32), hi)])
            nodes.append(helper.make_node("Clip", [name, lo, hi], [f"{name}_a"]))
        else:
            nodes.append(helper.make_node("Relu", [name], [f"{name}_a"]))
        return f"{name}_a"

    for _ in range(int(rng.integers(2, 6))):
        kind = rng.choice(["conv", "conv", "dw", "res", "pool"]) if c > 3 else "conv"
        co = int(rng.choice(CHANNELS))
        stride = 2 if hw >= 8 and rng.random() < 0.3 else 1
        if kind == "conv":
            prev = conv(prev, c, co, int(rng.choice([1, 3, 3, 5])), stride, 1, True)
            c, hw = co, -(-hw // stride)
        elif kind == "dw":
            prev = conv(prev, c, c, 3, stride, c, True)
            hw = -(-hw // stride)
            prev = conv(prev, c, co, 1, 1, 1, False)
            c = co
        elif kind == "res":
            body = conv(conv(prev, c, c, 3, 1, 1, True), c, c, 3, 1, 1, False)
            nodes.append(helper.make_node("Add", [body, prev], [f"n{len(nodes)}"]))
            nodes.append(helper.make_node("Relu", [nodes[-1].output[0]], [f"n{len(nodes)}"]))
            prev = nodes[-1].output[0]
        elif hw >= 4:
            nodes.append(helper.make_node("MaxPool", [prev], [f"n{len(nodes)}"], kernel_shape=[2, 2], strides=[2, 2]))
            prev, hw = nodes[-1].output[0], hw // 2
    nodes.append(helper.make_node("GlobalAveragePool", [prev], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"]))
    inits += [numpy_helper.from_array(rng.standard_normal((10, c)).astype(np.float32), "head_w"),
              numpy_helper.from_array(np.zeros(10, np.float32), "head_b")]
    nodes.append(helper.make_node("Gemm", ["flat", "head_w", "head_b"], ["logits"], transB=1))
    return _model(nodes, inits, "logits", [1, cin, size, size]), (1, cin, size, size)


def _model(nodes: list, inits: list, out: str, shape: list[int]) -> onnx.ModelProto:
    for i, node in enumerate(nodes):
        node.name = node.name or f"{node.op_type}_{i}"  # the profiler names kernels by node name
    graph = helper.make_graph(nodes, "sweep", [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


class _Net:
    """A graph under construction: conv / act / add / pool / head, returning output names."""

    def __init__(self, rng: np.random.Generator, relu6: bool) -> None:
        self.rng, self.relu6 = rng, relu6
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def _name(self) -> str:
        return f"n{len(self.nodes)}"

    def conv(self, x: str, ci: int, co: int, k: int, stride: int = 1, group: int = 1, act: bool = True) -> str:
        name = self._name()
        w = self.rng.standard_normal((co, ci // group, k, k)).astype(np.float32) * (2.0 / (ci // group * k * k)) ** 0.5
        self.inits += [numpy_helper.from_array(w, f"{name}_w"),
                       numpy_helper.from_array(np.zeros(co, np.float32), f"{name}_b")]
        self.nodes.append(helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [name], pads=[k // 2] * 4,
                                           strides=[stride, stride], group=group))
        return self.act(name) if act else name

    def act(self, x: str) -> str:
        out = f"{x}_a"
        if self.relu6:
            self.inits += [numpy_helper.from_array(np.array(0, np.float32), f"{x}_lo"),
                           numpy_helper.from_array(np.array(6, np.float32), f"{x}_hi")]
            self.nodes.append(helper.make_node("Clip", [x, f"{x}_lo", f"{x}_hi"], [out]))
        else:
            self.nodes.append(helper.make_node("Relu", [x], [out]))
        return out

    def add(self, a: str, b: str) -> str:
        name = self._name()
        self.nodes.append(helper.make_node("Add", [a, b], [name]))
        return name

    def maxpool(self, x: str) -> str:
        name = self._name()
        self.nodes.append(helper.make_node("MaxPool", [x], [name], kernel_shape=[2, 2], strides=[2, 2]))
        return name

    def head(self, x: str, c: int, shape: list[int]) -> onnx.ModelProto:
        self.nodes += [helper.make_node("GlobalAveragePool", [x], ["gap"]),
                       helper.make_node("Flatten", ["gap"], ["flat"])]
        self.inits += [numpy_helper.from_array(self.rng.standard_normal((10, c)).astype(np.float32), "head_w"),
                       numpy_helper.from_array(np.zeros(10, np.float32), "head_b")]
        self.nodes.append(helper.make_node("Gemm", ["flat", "head_w", "head_b"], ["logits"], transB=1))
        return _model(self.nodes, self.inits, "logits", shape)


def _pruned(rng: np.random.Generator, width: int) -> int:
    """`width` less a random prune ratio's share, as structured pruning leaves it (at least 1)."""
    return max(1, width - int(width * float(rng.choice(PRUNE))))


def _staged(rng: np.random.Generator) -> tuple[onnx.ModelProto, tuple[int, ...]]:
    size, cin = (28, 1) if rng.random() < 0.7 else (32, 3)
    net, base = _Net(rng, relu6=False), int(rng.choice([8, 12, 16, 24, 32, 40, 48, 64]))
    x, c, hw = "input", cin, size
    n_stages = int(rng.integers(2, 4))
    for stage in range(n_stages):
        for _ in range(int(rng.integers(1, 3))):
            co = _pruned(rng, base * 2**stage)
            x, c = net.conv(x, c, co, 3), co
        if stage < n_stages - 1 and hw >= 4:
            x, hw = net.maxpool(x), hw // 2
    return net.head(x, c, [1, cin, size, size]), (1, cin, size, size)


def _inverted(rng: np.random.Generator) -> tuple[onnx.ModelProto, tuple[int, ...]]:
    size = int(rng.choice([16, 32, 64]))
    net = _Net(rng, relu6=True)
    c = _pruned(rng, int(rng.choice([8, 16, 32])))
    x, hw = net.conv("input", 3, c, 3, stride=2), -(-size // 2)
    for _ in range(int(rng.integers(2, 6))):
        t = int(rng.choice([1, 4, 6]))
        co = _pruned(rng, int(rng.choice([8, 12, 16, 24, 32, 48, 64, 96, 160, 256, 320])))
        stride = 2 if hw >= 4 and rng.random() < 0.4 else 1
        mid = _pruned(rng, c * t) if t > 1 else c
        y = net.conv(x, c, mid, 1) if t > 1 else x
        y = net.conv(y, mid, mid, 3, stride=stride, group=mid)
        y = net.conv(y, mid, co, 1, act=False)
        x = net.add(y, x) if stride == 1 and co == c else y
        c, hw = co, -(-hw // stride)
    if rng.random() < 0.5:
        co = _pruned(rng, int(rng.choice([320, 640, 1280])))
        x, c = net.conv(x, c, co, 1), co
    return net.head(x, c, [1, 3, size, size]), (1, 3, size, size)


def _mlp(rng: np.random.Generator) -> tuple[onnx.ModelProto, tuple[int, ...]]:
    widths = [int(rng.choice([784, 784, 64, 256]))]
    width = int(rng.choice([64, 128, 256, 512, 768, 1024, 1536]))
    widths += [_pruned(rng, width) for _ in range(rng.integers(1, 4))] + [10]
    return _dense(rng, widths)


def _dense(rng: np.random.Generator, widths: list[int]) -> tuple[onnx.ModelProto, tuple[int, ...]]:
    nodes, inits, prev = [], [], "input"
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        inits += [numpy_helper.from_array(rng.standard_normal((b, a)).astype(np.float32) * 0.05, f"w{i}"),
                  numpy_helper.from_array(np.zeros(b, np.float32), f"b{i}")]
        nodes.append(helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [f"g{i}"], transB=1))
        prev = f"g{i}"
        if i < len(widths) - 2:
            nodes.append(helper.make_node("Relu", [prev], [f"r{i}"]))
            prev = f"r{i}"
    return _model(nodes, inits, prev, [1, widths[0]]), (1, widths[0])


FAMILIES = {"mlp_or_cnn": (0.4, _mlp_or_cnn), "staged": (0.25, _staged), "inverted": (0.2, _inverted),
            "mlp": (0.15, _mlp)}


def random_graph(rng: np.random.Generator) -> tuple[onnx.ModelProto, tuple[int, ...]]:
    """A random FP32 graph from one of `FAMILIES` (drawn by weight) and its input shape."""
    names = list(FAMILIES)
    weights = np.array([FAMILIES[n][0] for n in names])
    model, shape = FAMILIES[names[int(rng.choice(len(names), p=weights / weights.sum()))]][1](rng)
    for node in model.graph.node:  # ORT's profiler names kernels after nodes: what `kernel_sweep.pair` matches
        node.name = node.name or f"{node.op_type}_{node.output[0]}"
    return model, shape
