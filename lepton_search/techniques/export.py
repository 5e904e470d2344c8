"""Export a torch model to ONNX (the deployable artifact every measurement is taken on)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import onnx
import torch
from torch import nn

from lepton_search.errors import ConfigError
from lepton_search.logging import routed_to_debug
from lepton_search.techniques._export_io import OPSET, _quiet_stdout

# torch.onnx's TorchScript ("legacy") exporter: it folds eval-mode BatchNorm into the preceding
# convolution, which the INT8 path needs so that ONNX Runtime fuses QLinearConv kernels.
# torch 2.14's default dynamo exporter needs onnxscript and gives no speed benefit here.
EXPORTER = "torch.onnx legacy (TorchScript) exporter"
INPUT_NAME, OUTPUT_NAME = "input", "logits"


def input_names(example_input: torch.Tensor | tuple[torch.Tensor, ...], names: Sequence[str] | None = None) -> list[str]:
    """The graph's input names: `names` when given, else `input` for one input and `input_0..N-1` for several."""
    n = len(example_input) if isinstance(example_input, tuple) else 1
    if names is not None:
        if len(names) != n:
            raise ValueError(f"{len(names)} input names for {n} example inputs")
        return list(names)
    return [INPUT_NAME] if n == 1 else [f"input_{i}" for i in range(n)]


def to_onnx(model: nn.Module, example_input: torch.Tensor | tuple[torch.Tensor, ...], path: str | Path, *,
            names: Sequence[str] | None = None, with_past: bool = False, graph: str = "torch") -> onnx.ModelProto:
    """Write `model` (eval mode, dynamic batch axis on every input) to `path` and return the loaded graph.

    `example_input`: one tensor, or a tuple with one tensor per model input (each keeps its dtype: int64
    token ids stay int64); `names`: the graph's input names in that order (see `input_names`). `with_past`: a
    causal language model's generation graph instead (`generation.export_with_past`: input_ids, attention_mask,
    position_ids and past key/values in, logits and present key/values out; the example is not used); `graph`
    "builder": that graph made by ONNX Runtime GenAI's model builder (`generation.export_with_builder`).
    """
    if with_past:
        from lepton_search.techniques import generation  # it imports this module

        return generation.export_with_builder(model, path) if graph == "builder" else \
            generation.export_with_past(model, path)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    inputs = input_names(example_input, names)
    try:
        # Tracer and `_pytree` warnings go to the "lepton_search" logger at DEBUG, not the user's output.
        with routed_to_debug(), torch.no_grad(), _quiet_stdout(), no_mha_fastpath():
            torch.onnx.export(
                model, args, str(path), dynamo=False, opset_version=OPSET,
                input_names=inputs, output_names=[OUTPUT_NAME], do_constant_folding=True,
                dynamic_axes={**{n: {0: "batch"} for n in inputs}, OUTPUT_NAME: {0: "batch"}},
            )
    except Exception as exc:  # noqa: BLE001 - exporter errors come in many types
        raise ConfigError("model", type(model).__name__, f"cannot be exported to ONNX ({str(exc).splitlines()[0]})") from None
    return onnx.load(str(path))


@contextlib.contextmanager
def no_mha_fastpath() -> Iterator[None]:
    """Turn off PyTorch's fused attention fast path (while exporting, counting MACs, pruning).

    In eval mode, under no_grad, `nn.TransformerEncoderLayer` and `nn.MultiheadAttention` run one fused op
    (`aten::_transformer_encoder_layer_fwd`, `aten::_native_multi_head_attention`) that the ONNX exporter
    refuses; without the fast path they trace into MatMul/Softmax/LayerNorm, which ONNX Runtime runs and
    quantizes. The results agree (tests/techniques/test_transformer_encoder.py), except that a nested-tensor
    fast path gives zeros at padded positions, which a masked pooling ignores anyway. Forward hooks (MAC
    counting) cannot read nested tensors either.
    """
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


def check_traceable(model: nn.Module, example_input: torch.Tensor | tuple[torch.Tensor, ...], tmp_dir: str | Path, *,
                    names: Sequence[str] | None = None, with_past: bool = False, graph: str = "torch") -> onnx.ModelProto:
    """Fail early, before training anything, when a model cannot be exported; return the exported graph."""
    return to_onnx(model, example_input, Path(tmp_dir) / "trace_check.onnx", names=names, with_past=with_past,
                   graph=graph)
