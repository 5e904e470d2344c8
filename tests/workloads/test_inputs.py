"""A Workload states its inputs: several, of their own dtypes; bad specs are one-line ConfigErrors before compute."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from lepton_search.errors import ConfigError
from lepton_search.workloads import InputSpec, Workload

SEQ = 6


class _Tok(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb, self.out = nn.Embedding(20, 8), nn.Linear(8, 3)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.unsqueeze(-1).float()
        return self.out((self.emb(ids) * m).sum(1) / m.sum(1).clamp_min(1))


def _data(n: int = 40) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return (torch.randint(0, 20, (n, SEQ), generator=g), torch.ones(n, SEQ, dtype=torch.long),
            torch.randint(0, 3, (n,), generator=g))


SPEC = (InputSpec("input_ids", "int64", (SEQ,)), InputSpec("attention_mask", "int64", (SEQ,)))


def _workload(**changes) -> Workload:
    ids, mask, y = _data()
    wl = Workload("tok", _Tok(), train=(ids, mask, y), val=((ids, mask), y), example_input=(ids[:1], mask[:1]),
                  input_spec=SPEC, sequence_length=SEQ)
    return dataclasses.replace(wl, **changes)


def test_two_int64_inputs_validate_and_feed_in_their_dtypes():
    wl = _workload()
    wl.validate()
    assert wl.input_names == ["input_ids", "attention_mask"] and wl.seq_len == SEQ
    feeds = wl.sample_inputs(4)
    assert {k: (v.dtype, v.shape) for k, v in feeds.items()} == {
        "input_ids": (np.int64, (4, SEQ)), "attention_mask": (np.int64, (4, SEQ))}
    np.testing.assert_array_equal(feeds["input_ids"], wl.val[0][0][:4].numpy())
    *xs, y = next(iter(wl.batches("val", batch_size=5)))
    assert len(xs) == 2 and y.shape == (5,)
    assert wl.describe_inputs()[0] == {"name": "input_ids", "dtype": "int64", "shape": [SEQ]}


def test_sequence_length_is_inferred_from_token_inputs_and_none_for_images():
    assert _workload(sequence_length=None).seq_len == SEQ
    x = torch.randn(8, 1, 4, 4)
    img = Workload("img", nn.Sequential(nn.Flatten(), nn.Linear(16, 2)), train=(x, torch.zeros(8, dtype=torch.long)),
                   val=(x, torch.zeros(8, dtype=torch.long)), example_input=x[:1])
    assert img.seq_len is None and img.input_names == ["input"]


_ids, _mask, _y = _data()
BAD = {
    "one spec for two inputs": ({"input_spec": SPEC[:1]}, "workload.input_spec", "1 inputs"),
    "not an InputSpec": ({"input_spec": (SPEC[0], ("attention_mask", "int64", (SEQ,)))}, "workload.input_spec",
                         "InputSpec(name, dtype, shape)"),
    "name with a dash": ({"input_spec": (SPEC[0], InputSpec("attention-mask", "int64", (SEQ,)))},
                         "workload.input_spec", "letters, digits"),
    "the output's name": ({"input_spec": (SPEC[0], InputSpec("logits", "int64", (SEQ,)))}, "workload.input_spec",
                          "logits"),
    "same name twice": ({"input_spec": (SPEC[0], InputSpec("input_ids", "int64", (SEQ,)))}, "workload.input_spec",
                        "its own name"),
    "unknown dtype": ({"input_spec": (SPEC[0], InputSpec("attention_mask", "long", (SEQ,)))}, "workload.input_spec",
                      "use one of"),
    "float declared for int64 ids": ({"input_spec": (InputSpec("input_ids", "float32", (SEQ,)), SPEC[1])},
                                     "workload.input_spec", "example_input input_ids is int64"),
    "shape with the batch": ({"input_spec": (InputSpec("input_ids", "int64", (1, SEQ)), SPEC[1])},
                             "workload.input_spec", "make the two agree"),
    "negative dimension": ({"input_spec": (InputSpec("input_ids", "int64", (-1,)), SPEC[1])},
                           "workload.input_spec", "positive ints"),
    "sequence length off": ({"sequence_length": SEQ + 1}, "workload.sequence_length", "first dimension"),
    "sequence length not an int": ({"sequence_length": 6.0}, "workload.sequence_length", "int >= 1"),
    "int32 data for int64 ids": ({"train": (_ids.int(), _mask, _y)}, "workload.train inputs", "x.to(torch.int64)"),
    "val split without the mask": ({"val": (_ids, _y)}, "workload.val", "1 inputs per sample"),
    "example_input not tensors": ({"example_input": ([1, 2], [3, 4])}, "workload.example_input", "tuple of them"),
    "labels count": ({"val": (_ids, _mask, _y[:10])}, "workload.val", "one label per input"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_input_specs_are_one_line_config_errors(case):
    changes, field, fix = BAD[case]
    with pytest.raises(ConfigError) as info:
        _workload(**changes).validate()
    message = str(info.value)
    assert "\n" not in message and field in message and fix in message, message


class _TwoFloat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.head = nn.Linear(8, 32), nn.Linear(4, 32), nn.Linear(32, 3)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.a(x) + self.b(z)))


def test_two_float_inputs_compress_with_static_int8_calibrated_on_both(tmp_path):
    from lepton_search.candidate import compress
    from lepton_search.evaluate import onnx_accuracy
    from lepton_search.latency.host_cpu import optimized_op_types
    from lepton_search.space import CompressionConfig, FinetuneSettings

    g = torch.Generator().manual_seed(0)
    x, z, y = torch.randn(96, 8, generator=g), torch.randn(96, 4, generator=g), torch.randint(0, 3, (96,), generator=g)
    wl = Workload("two-float", _TwoFloat(), train=(x, z, y), val=(x, z, y), example_input=(x[:1], z[:1]))
    wl.validate()
    assert wl.input_names == ["input_0", "input_1"]
    cand = compress(wl, CompressionConfig(0.5, 8, 0), tmp_path / "c.onnx",
                    settings=FinetuneSettings(bn_batches=1, calibration_size=8))
    assert cand.macs_ratio < 0.6 and "QGemm" in optimized_op_types(cand.onnx_path)
    assert onnx_accuracy(cand.onnx_path, wl).total == 96


def test_model_family_names_each_kind_the_pipeline_handles():
    from torch import nn

    from lepton_search.workloads import model_family

    encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, batch_first=True), 1)
    assert model_family(nn.Sequential(nn.Embedding(10, 8), encoder)) == "Transformer"
    assert model_family(nn.Sequential(nn.Embedding(10, 8), nn.LSTM(8, 8))) == "RNN (LSTM)"
    assert model_family(nn.GRU(8, 8)) == "RNN (GRU)"
    assert model_family(nn.Sequential(nn.Conv1d(1, 4, 3), nn.ReLU())) == "CNN"
    assert model_family(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))) == "MLP"
