"""ModelOptimizer round trips: each call leaves an ONNX file whose ONNX Runtime accuracy is the table's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lepton_search import ConfigError, ModelOptimizer
from lepton_search.evaluate import onnx_accuracy
from lepton_search.latency import HostCpuLatency
from lepton_search.latency.host_cpu import optimized_op_types, session
from lepton_search.optimizer import COLUMNS
from lepton_search.space import FinetuneSettings

FAST = FinetuneSettings(subset_size="all", batch_size=32, bn_batches=2, calibration_size=8)


def _net(classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, classes)).eval()


def _data(classes: int = 3) -> dict:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, classes, (128,), generator=g)
    x = torch.randn(128, 3, 12, 12, generator=g) + y.view(-1, 1, 1, 1).float()  # learnable: mean shifts by class
    return {"train": (x[:64], y[:64]), "val": (x[64:96], y[64:96]), "test": (x[96:], y[96:])}


@pytest.fixture()
def opt(tmp_path) -> ModelOptimizer:
    return ModelOptimizer(_net(), _data(), target=HostCpuLatency(warmup=2, runs=5, max_repeats=1), out_dir=tmp_path,
                          settings=FAST)


def _check_table(result, opt: ModelOptimizer) -> None:
    table = result.table
    assert list(table.index) == ["before", "after"] and tuple(table.columns) == COLUMNS
    assert result.onnx_path.is_file()
    ort = onnx_accuracy(result.onnx_path, opt.workload, "val").accuracy
    assert table.loc["after", "accuracy"] == ort
    assert table.loc["after", "test_accuracy"] == onnx_accuracy(result.onnx_path, opt.workload, "test").accuracy
    assert table.loc["after", "size_mb"] == pytest.approx(result.onnx_path.stat().st_size / 1e6)
    assert (table[["latency_ms", "size_mb"]] > 0).all().all()


def test_prune_returns_the_torch_model_the_file_runs(opt):
    model, path, table = result = opt.prune(0.5)
    _check_table(result, opt)
    assert table.loc["after", "params"] < table.loc["before", "params"]
    x = opt.workload.dataset("val").tensors[0][:4]
    with torch.no_grad():
        expected = model.eval()(x).numpy()
    got = session(path).run(None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_quantize_runs_integer_kernels_and_has_no_torch_model(opt):
    result = opt.quantize(8)
    _check_table(result, opt)
    assert result.model is None and "QLinearConv" in optimized_op_types(result.onnx_path)
    assert result.table.loc["after", "training_s"] == 0


def test_compress_trains_and_reports_the_seconds(opt):
    result = opt.compress(prune_ratio=0.25, bits=8, finetune_epochs=1)
    _check_table(result, opt)
    assert result.table.loc["after", "training_s"] > 0 and result.candidate.config.label() == "s0.25/int8/ft1"


def test_migrate_reheads_and_becomes_the_base(opt, tmp_path):
    pretrained = _net(classes=5)
    torch.save(pretrained.state_dict(), tmp_path / "w.pth")
    result = opt.migrate(num_classes=3, weights=tmp_path / "w.pth", epochs=1, freeze_backbone_epochs=1,
                         batch_size=32, verbose=False)
    _check_table(result, opt)
    assert result.model[-1].out_features == 3 and opt.model is result.model
    assert torch.equal(result.model[0].weight, pretrained[0].weight)  # only the head trained
    again = opt.prune(0.25)
    assert again.table.loc["before", "config"] == "base"
    assert again.table.loc["before", "accuracy"] == result.table.loc["after", "accuracy"]


def test_bad_data_is_a_config_error():
    with pytest.raises(ConfigError, match="data"):
        ModelOptimizer(_net(), [1, 2, 3])
