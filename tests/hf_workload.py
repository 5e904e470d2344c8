"""A tiny Hugging Face BERT classifier (random weights, built offline from a config) and token data it can learn in an
epoch: the class is token 1's id."""

from __future__ import annotations

import torch

from lepton_search import Workload

SEQ, VOCAB, CLASSES = 8, 40, 3


def tiny_bert(num_layers: int = 2) -> torch.nn.Module:
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=num_layers,
                                     num_attention_heads=4, intermediate_size=64, max_position_embeddings=16,
                                     num_labels=CLASSES)
    return transformers.BertForSequenceClassification(config).eval()


def token_data(n: int = 48, seq: int = SEQ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, VOCAB, (n, seq), generator=g)
    y = torch.arange(n) % CLASSES
    ids[:, 1] = y + 3
    return ids, torch.ones(n, seq, dtype=torch.long), y


def tiny_bert_workload(num_layers: int = 2) -> Workload:
    ids, mask, y = token_data()
    return Workload("bert", tiny_bert(num_layers), train=(ids, mask, y), val=(ids, mask, y),
                    example_input=(ids[:1], mask[:1]))
