"""INT8 of an inverted-residual net (ReLU6, depthwise conv, residual Add) runs integer kernels only."""

from __future__ import annotations

import numpy as np
import onnx
import torch
from torch import nn

from lepton_search.latency.host_cpu import optimized_op_types, session
from lepton_search.techniques import export, quantize


class _Block(nn.Module):
    """MobileNetV2's block: 1x1 expand + ReLU6, 3x3 depthwise + ReLU6, 1x1 project, residual add."""

    def __init__(self, c: int, e: int = 4) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(c, c * e, 1, bias=False), nn.BatchNorm2d(c * e), nn.ReLU6(),
            nn.Conv2d(c * e, c * e, 3, padding=1, groups=c * e, bias=False), nn.BatchNorm2d(c * e), nn.ReLU6(),
            nn.Conv2d(c * e, c, 1, bias=False), nn.BatchNorm2d(c),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x)


def _tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU6(),
                         _Block(8), _Block(8), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()


def test_int8_inverted_residuals_run_as_integer_kernels(tmp_path):
    x = torch.randn(1, 3, 32, 32)
    graph = export.to_onnx(_tiny_net(), x, tmp_path / "fp32.onnx")
    calib = [np.random.default_rng(i).standard_normal((1, 3, 32, 32)).astype(np.float32) for i in range(8)]
    onnx.save(quantize.quantize(graph, 8, calib), str(tmp_path / "int8.onnx"))
    ops = optimized_op_types(tmp_path / "int8.onnx")
    assert "QLinearConv" in ops and "QLinearAdd" in ops
    assert not {"Conv", "FusedConv", "Add"} & ops  # nothing left in float between Q/DQ pairs


def test_activations_uint8_keeps_the_outputs(tmp_path):
    import nncf

    x = torch.randn(1, 3, 32, 32)
    graph = export.to_onnx(_tiny_net(), x, tmp_path / "fp32.onnx")
    calib = [np.random.default_rng(i).standard_normal((1, 3, 32, 32)).astype(np.float32) for i in range(8)]
    mixed = nncf.quantize(graph, nncf.Dataset(calib, lambda a: {"input": a}), subset_size=len(calib))
    onnx.save(mixed, str(tmp_path / "mixed.onnx"))
    onnx.save(quantize.activations_uint8(mixed), str(tmp_path / "u8.onnx"))
    feed = {"input": calib[0]}
    a = session(tmp_path / "mixed.onnx").run(None, feed)[0]
    b = session(tmp_path / "u8.onnx").run(None, feed)[0]
    np.testing.assert_array_equal(a, b)
    assert _signed_activations(mixed) > 0 and _signed_activations(quantize.activations_uint8(mixed)) == 0


def _signed_activations(model: onnx.ModelProto) -> int:
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    return sum(1 for n in model.graph.node if n.op_type == "QuantizeLinear" and inits[n.input[2]].dtype == np.int8)
