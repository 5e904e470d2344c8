"""Hidden-state distillation: the uniform layer map, the loss, and a student that learns the teacher's states."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import transformers  # noqa: F401 - in the lock ([nlp]): missing, it fails here instead of skipping
from hf_workload import images, tiny_vit, tiny_vit_workload

from lepton_search import FinetuneSettings, SearchSpace, Workload
from lepton_search.errors import ConfigError
from lepton_search.study import prepare
from lepton_search.techniques import layer_distill, prune_transformer
from lepton_search.techniques.finetune import distill, frozen_copy
from lepton_search.techniques.recovery import keyed_settings as _keyed


def test_the_layer_map_is_uniform_and_ends_last_to_last():
    assert layer_distill.layer_map(3, 6) == [1, 3, 5]
    assert layer_distill.layer_map(2, 6) == [2, 5]
    assert layer_distill.layer_map(4, 4) == [0, 1, 2, 3]


def test_the_loss_is_zero_on_the_teachers_own_states_and_cuts_the_teacher_to_the_students_tokens():
    t = [torch.randn(2, 8, 4) for _ in range(4)]
    assert layer_distill.hidden_loss(t, t).item() == 0.0
    assert layer_distill.hidden_loss([t[1][:, :5], t[3][:, :5]], t).item() == 0.0  # first 5 tokens, layers 1 and 3
    assert layer_distill.hidden_loss([t[0], t[1]], t).item() > 0.5


def _hidden_gap(student, teacher, x):
    with torch.no_grad(), layer_distill.hidden_states(teacher) as ts:
        teacher(x)
    with torch.no_grad(), layer_distill.hidden_states(student) as ss:
        student(x)
    return layer_distill.hidden_loss(ss, ts).item()


def test_a_student_that_lost_a_layer_learns_the_teachers_states_only_when_asked():
    x, y = images(64)
    teacher = frozen_copy(Workload("t", tiny_vit(layers=2), train=(x, y), val=(x, y), example_input=x[:1]).model)
    start = prune_transformer.keep_layers(copy.deepcopy(teacher), 1)
    for p in start.parameters():
        p.requires_grad_(True)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    gaps = {}
    for weight in (0.0, 1.0):
        student = copy.deepcopy(start)
        torch.manual_seed(0)
        distill(student, teacher, loader, epochs=4, lr=3e-3, optimizer="adamw", hidden_weight=weight)
        gaps[weight] = _hidden_gap(student, teacher, x)
    assert gaps[1.0] < 0.7 * gaps[0.0]


def test_hidden_weight_is_checked_refused_without_encoder_layers_and_keyed_only_when_set(tmp_path):
    with pytest.raises(ConfigError, match="finetune.hidden_weight"):
        SearchSpace(finetune=FinetuneSettings(hidden_weight=-1))
    x, y = images(8)
    cnn = Workload("cnn", torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(), torch.nn.LazyLinear(3)),
                   train=(x, y), val=(x, y), example_input=x[:1])
    from lepton_search.latency import HostCpuLatency

    space = SearchSpace(finetune=FinetuneSettings(hidden_weight=0.5))
    with pytest.raises(ConfigError, match="finetune.hidden_weight.*no Transformer encoder layer"):
        prepare(cnn, space, HostCpuLatency(), tmp_path, verbose=False)
    prepare(tiny_vit_workload(), SearchSpace(finetune=FinetuneSettings(hidden_weight=0.5), layers=(0, 2)),
            HostCpuLatency(), tmp_path, verbose=False)
    plain = FinetuneSettings()
    assert "hidden_weight" not in _keyed(plain)
    assert _keyed(dataclasses.replace(plain, hidden_weight=0.5))["hidden_weight"] == 0.5
