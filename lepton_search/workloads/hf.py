"""A Hugging Face model as it comes: `AutoModelForSequenceClassification` / `BertForSequenceClassification` (or
any `transformers.PreTrainedModel` whose output has `.logits`) goes into a `Workload` without a wrapper written
by hand.

`Workload` wraps such a model in `HFLogits`: the pipeline feeds inputs by position (pruning, export and ONNX
Runtime all do), the model takes them by name (`input_ids`, `attention_mask`, `token_type_ids`, in the order of
its `forward`), and its `ModelOutput` becomes the `(batch, classes)` logits. Attention runs in its eager form
(plain MatMul + Softmax: what ONNX Runtime's transformer fusion and integer MatMul kernels recognise); the
inputs are named as the model names them, so the exported file takes `input_ids` / `attention_mask` as a
tokenizer returns them. The wrapper holds the very same module: its weights are the user's.

Example:
    >>> import torch, transformers
    >>> config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
    ...                                  intermediate_size=32, num_labels=3)
    >>> model = HFLogits.wrap(transformers.BertForSequenceClassification(config), n_inputs=2)
    >>> model.input_names, model(torch.ones(1, 8, dtype=torch.long), torch.ones(1, 8, dtype=torch.long)).shape
    (['input_ids', 'attention_mask'], torch.Size([1, 3]))
"""

from __future__ import annotations

import inspect
import sys

import torch
from torch import nn

from lepton_search.errors import ConfigError


def is_hf_model(model: object) -> bool:
    """A `transformers.PreTrainedModel` (checked without importing transformers when nothing imported it)."""
    transformers = sys.modules.get("transformers")
    return transformers is not None and isinstance(model, transformers.PreTrainedModel)


class HFLogits(nn.Module):
    """A Hugging Face model fed by position, returning its logits (see the module docstring)."""

    def __init__(self, model: nn.Module, input_names: list[str]) -> None:
        super().__init__()
        self.model = model
        self.input_names = list(input_names)

    @classmethod
    def wrap(cls, model: nn.Module, *, n_inputs: int) -> HFLogits:
        """`model` wrapped for `n_inputs` inputs, named after the first `n_inputs` tensor arguments of its
        `forward` (refused in one line when it has fewer)."""
        names = [n for n in inspect.signature(model.forward).parameters if n not in ("self", "kwargs")]
        tensor_args = [n for n in names if n in ("input_ids", "attention_mask", "token_type_ids", "position_ids",
                                                 "pixel_values", "inputs_embeds")]
        if n_inputs > len(tensor_args):
            raise ConfigError("workload.example_input", f"{n_inputs} inputs",
                              f"{type(model).__name__}.forward takes {tensor_args}; give at most {len(tensor_args)}, "
                              "in that order")
        if hasattr(model, "set_attn_implementation"):
            model.set_attn_implementation("eager")  # exportable, fusable attention (see the module docstring)
        return cls(model, tensor_args[:n_inputs])

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        out = self.model(**dict(zip(self.input_names, inputs)), return_dict=True)
        logits = getattr(out, "logits", None)
        if logits is None:
            raise ConfigError("workload.model", type(out).__name__,
                              "a Hugging Face model must return an output with .logits (e.g. "
                              "AutoModelForSequenceClassification); wrap other heads in an nn.Module returning logits")
        return logits
