"""Malformed workloads are refused by `Workload.validate` with a one-line error, before any compute."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset
from worker_workloads import PlainRNN

from lepton_search import SearchSpace, search
from lepton_search.errors import ConfigError
from lepton_search.workloads import Workload


def _workload(x_train, y_train, x_val=None, y_val=None, classes=3):
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, classes))
    x_val = x_train if x_val is None else x_val
    y_val = y_train if y_val is None else y_val
    return Workload("bad", model, train=(x_train, y_train), val=(x_val, y_val), example_input=x_train[:1])


X = torch.randn(200, 8)
Y = torch.randint(0, 3, (200,))


@pytest.mark.parametrize(("case", "field", "fix"), [
    ("labels beyond the classes", "workload.train labels", "labels must lie in 0..2"),
    ("float labels", "workload.train labels", "labels.long()"),
    ("NaN inputs", "workload.train inputs", "NaN or inf"),
    ("fewer labels than inputs", "workload.val", "one label per input"),
])
def test_malformed_workload_is_one_line_config_error(case, field, fix, sqlite_url, monkeypatch):
    x, y = X.clone(), Y.clone()
    if case == "labels beyond the classes":
        wl = _workload(x, torch.randint(0, 7, (200,)))
    elif case == "float labels":
        wl = _workload(x, y.float())
    elif case == "NaN inputs":
        x[5, 2] = float("nan")
        wl = _workload(x, y)
    else:
        wl = _workload(x, y, x_val=X[:200], y_val=Y[:50])
    from lepton_search.techniques import export

    monkeypatch.setattr(export, "to_onnx", lambda *a, **k: pytest.fail("checked after export"))
    with pytest.raises(ConfigError) as err:
        search(wl, SearchSpace(bits=(32,), finetune_epochs=(0, 1)), storage=sqlite_url, verbose=False)
    message = str(err.value)
    assert message.startswith(f"{field}:") and fix in message and "\n" not in message


class _Pairs(Dataset):
    """A plain Dataset (not tensors): labels as Python ints, one out of range."""

    def __len__(self) -> int:
        return 20

    def __getitem__(self, i: int):
        return X[i], (9 if i == 7 else int(Y[i]))


def test_plain_dataset_labels_are_checked_too():
    wl = Workload("ds", nn.Sequential(nn.Linear(8, 3)), train=_Pairs(), val=_Pairs(), example_input=X[:1])
    with pytest.raises(ConfigError, match=r"workload.train labels: got '0..9'"):
        wl.validate()


def test_good_workload_passes_and_is_left_ready_to_export():
    wl = _workload(X, Y)
    wl.model.train()
    assert wl.validate() is None
    assert not wl.model.training  # validate ran the model in eval mode, as export and evaluation will
    assert wl.describe_inputs() == [{"name": "input", "dtype": "float32", "shape": [8]}]


@pytest.mark.parametrize(("spec", "fix"), [("os:system", "the factory raised TypeError"),
                                           ("os:getcwd", "returned str, not a lepton_search.Workload")])
def test_factory_that_raises_or_returns_something_else(spec, fix):
    from lepton_search import workloads

    with pytest.raises(ConfigError, match=fix):
        workloads.build_factory(spec)


def test_knob_that_cannot_act_is_dropped_with_a_warning(tmp_path):
    from lepton_search.study import acting_space
    from lepton_search.techniques import export

    wl = Workload("rnn", PlainRNN().eval(), train=(torch.randn(64, 32), Y[:64]),
                  val=(torch.randn(64, 32), Y[:64]), example_input=torch.randn(1, 32))
    graph = export.check_traceable(wl.model, wl.example_input, tmp_path)
    space = SearchSpace(prune_ratio=(0.0, 0.6, 0.3), bits=(32, 8))
    with pytest.warns(UserWarning, match=r"prune_ratio fixed at 0: no layer pruning can shrink \(left whole: rnn \(RNN\), head\)"):
        narrowed = acting_space(wl, space, graph, verbose=False)
    assert narrowed.prune_ratios == [0.0] and narrowed.bits == (32, 8)  # the head's Gemm can be quantized


def test_acting_knobs_are_kept(tmp_path):
    from lepton_search.study import acting_space
    from lepton_search.techniques import export

    wl = _workload(X, Y)
    graph = export.check_traceable(wl.model, wl.example_input, tmp_path)
    space = SearchSpace(prune_ratio=(0.0, 0.5, 0.25), bits=(32, 8))
    assert acting_space(wl, space, graph, verbose=False) is space


def test_stated_inputs_are_checked_against_the_example():
    from lepton_search.workloads import InputSpec

    wl = _workload(X, Y)
    assert wl.inputs == (InputSpec("input", "float32", (8,)),)
    assert set(wl.sample_inputs(4)) == {"input"} and wl.sample_inputs(4)["input"].shape == (4, 8)
    wl.input_spec = (InputSpec("input", "float32", (8,)),)
    wl.validate()
    wl.input_spec = (InputSpec("input", "int64", (8,)),)
    with pytest.raises(ConfigError, match="workload.input_spec.*float32"):
        wl.validate()
