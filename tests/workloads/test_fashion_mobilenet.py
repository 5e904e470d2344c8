"""fashion-mobilenetv2: its input pipeline, and MobileNetV2 through structured pruning and INT8."""

from __future__ import annotations

import importlib.util

import numpy as np
import onnx
import pytest
import torch
from torchvision.models import mobilenet_v2

from lepton_search import workloads
from lepton_search.latency.host_cpu import optimized_op_types, session
from lepton_search.space import CompressionConfig
from lepton_search.techniques import export, prune, quantize
from lepton_search.workloads.fashion_mnist import DEFAULT_DIR
from lepton_search.workloads.fashion_mobilenet import IMAGENET_MEAN, IMAGENET_STD, ResizedGrey
from lepton_search.workloads.transfer import MOBILENET_INSTALL, MOBILENET_PACKAGE


def test_resized_grey_gives_imagenet_normalised_3_channel_images():
    images = torch.zeros(2, 28, 28, dtype=torch.uint8)
    images[1] = 255
    ds = ResizedGrey(images, torch.tensor([3, 7]), size=64)
    (x0, y0), (x1, y1) = ds[0], ds[1]
    assert x0.shape == (3, 64, 64) and x0.dtype == torch.float32 and (int(y0), int(y1)) == (3, 7)
    for c in range(3):
        assert torch.allclose(x0[c], torch.tensor(-IMAGENET_MEAN[c] / IMAGENET_STD[c]))
        assert torch.allclose(x1[c], torch.tensor((1 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]))


def test_mobilenetv2_prunes_structurally_and_runs_int8_as_integer_kernels(tmp_path):
    torch.manual_seed(0)
    model = mobilenet_v2(width_mult=0.5, num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64)
    pruned = prune.prune(model, x, CompressionConfig(prune_ratio=0.5, bits=8, finetune_epochs=0))
    (macs0, params0), (macs1, params1) = prune.count(model, x), prune.count(pruned, x)
    assert macs1 < 0.5 * macs0 and params1 < params0 and pruned(x).shape == (1, 10)
    graph = export.to_onnx(pruned, x, tmp_path / "fp32.onnx")
    np.testing.assert_allclose(session(tmp_path / "fp32.onnx").run(None, {"input": x.numpy()})[0],
                               pruned(x).detach().numpy(), atol=1e-4)
    calib = [np.random.default_rng(i).standard_normal((1, 3, 64, 64)).astype(np.float32) for i in range(4)]
    onnx.save(quantize.quantize(graph, 8, calib), str(tmp_path / "int8.onnx"))
    ops = optimized_op_types(tmp_path / "int8.onnx")
    assert "QLinearConv" in ops and not {"Conv", "FusedConv"} & ops


@pytest.mark.slow
def test_the_builtin_workload_migrates_and_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("LEPTON_SEARCH_CACHE", str(tmp_path))
    # Only a missing input skips (`make setup` installs both); any other error in the factory fails the test.
    if not any(DEFAULT_DIR.glob("t10k-images*")):
        pytest.skip(f"Fashion-MNIST not in {DEFAULT_DIR}: apt-get install dataset-fashion-mnist")
    if importlib.util.find_spec(MOBILENET_PACKAGE) is None:
        pytest.skip(f"MobileNetV2 weights not installed: {MOBILENET_INSTALL}")
    wl = workloads.get("fashion-mobilenetv2", train_size=128, val_size=64, test_size=64, epochs=1,
                       freeze_backbone_epochs=1, verbose=False)
    assert wl.example_input.shape == (1, 3, 64, 64) and wl.model.classifier[1].out_features == 10
    assert wl.info["family"] == "mobilenetv2" and len(list(tmp_path.glob("fashion-mobilenetv2-*.pt"))) == 1
    again = workloads.get("fashion-mobilenetv2", train_size=128, val_size=64, test_size=64, epochs=1,
                          freeze_backbone_epochs=1, verbose=False)
    assert "train_seconds" not in again.info  # loaded from the cache
    for a, b in zip(wl.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)
