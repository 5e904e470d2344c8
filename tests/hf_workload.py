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


def tiny_vit(layers: int = 2) -> torch.nn.Module:
    """A Hugging Face ViT (transformers 5's layout) for 28x28 grey images, 7x7 patches, random weights."""
    import transformers

    from lepton_search.workloads.fashion_vit import vit_config

    torch.manual_seed(0)
    return transformers.ViTForImageClassification(
        vit_config(hidden=32, layers=layers, heads=4, ffn=64, patch=7, num_classes=CLASSES)).eval()


def images(n: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose class is which quarter of the picture is bright (learnable in an epoch)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 28, 28, generator=g) * 0.1
    y = torch.arange(n) % CLASSES
    for i, c in enumerate(y.tolist()):
        x[i, 0, 14 * (c // 2): 14 * (c // 2) + 14, 14 * (c % 2): 14 * (c % 2) + 14] += 2.0
    return x, y


def tiny_vit_workload(layers: int = 4) -> Workload:
    x, y = images()
    return Workload("vit", tiny_vit(layers), train=(x, y), val=(x, y), example_input=x[:1])
