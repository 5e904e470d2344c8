"""The fine-tuning device setting: checked by name, resolved before anything trains, keyed where it matters.

CPU is the default and the path tested here; a CUDA device is refused in one line on a host where torch sees none
(so this test holds on a GPU host too: it asks for one device more than torch sees)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from lepton_search import FinetuneSettings, SearchSpace
from lepton_search.errors import ConfigError
from lepton_search.techniques.finetune import describe_recipe, distill, recipe_for, resolve_device
from lepton_search.techniques.recovery import keyed_settings as _keyed


def test_a_device_that_is_no_device_is_refused_by_name():
    with pytest.raises(ConfigError, match=r"finetune.device: got 'gpu'.*cpu, cuda, cuda:N or auto"):
        SearchSpace(finetune=FinetuneSettings(device="gpu"))


def test_a_cuda_device_torch_cannot_see_is_refused_before_training():
    missing = f"cuda:{torch.cuda.device_count()}"
    with pytest.raises(ConfigError, match=rf"finetune.device: got '{missing}'; torch sees \d+ CUDA device"):
        recipe_for(nn.Linear(2, 2), FinetuneSettings(device=missing))


def test_auto_resolves_to_what_torch_sees_and_the_cpu_key_is_the_one_before_the_setting():
    settings = recipe_for(nn.Linear(2, 2), FinetuneSettings(device="auto"))
    assert settings.device == ("cuda" if torch.cuda.is_available() else "cpu") == resolve_device("auto")
    cpu = recipe_for(nn.Linear(2, 2), FinetuneSettings())
    assert "device" not in _keyed(cpu)  # checkpoints stored before the setting keep their keys
    assert _keyed(cpu) == {k: v for k, v in dataclasses.asdict(cpu).items() if k not in ("device", "hidden_weight")}
    assert _keyed(dataclasses.replace(cpu, device="cuda"))["device"] == "cuda"
    assert "on cuda" in describe_recipe(dataclasses.replace(cpu, device="cuda"), 100)
    assert "on cpu" not in describe_recipe(cpu, 100)


def test_distillation_leaves_student_and_teacher_on_the_cpu():
    torch.manual_seed(0)
    student, teacher = nn.Linear(4, 3), nn.Linear(4, 3).eval()
    x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    distill(student, teacher, loader, epochs=1, device="cpu")
    assert {p.device.type for m in (student, teacher) for p in m.parameters()} == {"cpu"}
    assert not student.training
