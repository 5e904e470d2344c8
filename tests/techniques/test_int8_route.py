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
