"""Export a torch model to ONNX (the deployable artifact every measurement is taken on)."""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import onnx
import torch
from torch import nn

from lepton_search.errors import ConfigError

# torch.onnx's TorchScript ("legacy") exporter: it folds eval-mode BatchNorm into the preceding
# convolution, which the INT8 path needs so that ONNX Runtime fuses QLinearConv kernels.
# torch 2.14's default dynamo exporter needs onnxscript and gives no speed benefit here.
EXPORTER = "torch.onnx legacy (TorchScript) exporter"
OPSET = 17
INPUT_NAME, OUTPUT_NAME = "input", "logits"


def to_onnx(model: nn.Module, example_input: torch.Tensor, path: str | Path) -> onnx.ModelProto:
    """Write `model` (eval mode, dynamic batch axis) to `path` and return the loaded graph."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad(), _quiet_stdout():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model, (example_input,), str(path), dynamo=False, opset_version=OPSET,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], do_constant_folding=True,
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            )
    except Exception as exc:  # noqa: BLE001 - exporter errors come in many types
        raise ConfigError("model", type(model).__name__, f"cannot be exported to ONNX ({str(exc).splitlines()[0]})") from None
    return onnx.load(str(path))


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Silence file descriptor 1: on failure torch's C++ side dumps whole graphs there."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def check_traceable(model: nn.Module, example_input: torch.Tensor, tmp_dir: str | Path) -> onnx.ModelProto:
    """Fail early, before training anything, when a model cannot be exported; return the exported graph."""
    return to_onnx(model, example_input, Path(tmp_dir) / "trace_check.onnx")
