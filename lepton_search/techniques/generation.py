"""Export a causal language model for generation: one ONNX graph with past key/values (prefill and decode alike),
laid out as ONNX Runtime GenAI's model builder lays it out, in a folder `onnxruntime_genai.Model(folder)` loads.

    inputs   input_ids [batch, sequence] int64, attention_mask [batch, total_sequence] int64,
             position_ids [batch, sequence] int64, past_key_values.N.key / .value [batch, kv_heads, past_sequence,
             head_size] float32 (N = 0 .. layers - 1; past_sequence 0 for a prefill)
    outputs  logits [batch, sequence, vocab], present.N.key / .value [batch, kv_heads, total_sequence, head_size]

`total_sequence` = past_sequence + sequence. The key/value heads, head size and layers are read from the model's
modules (`GenerationLayout.of`), not its config, so a pruned model (heads dropped by key/value group, FFN narrowed,
layers dropped) exports as it is. Beside the graph: `genai_config.json` (the builder's fields; CPU:
`past_present_share_buffer` false, so `present` grows by the new tokens) and the tokenizer's files when one is given.
The graph goes through the same graph-stage rewrites as any other (`MatMulNBits` INT4 acts on its MatMuls).

Anchor: the builder (`onnxruntime_genai/models/builders/base.py`, `make_genai_config`) and Optimum's
`exporters/onnx` decoder-with-past configs; exported with torch.onnx's TorchScript exporter through transformers'
`DynamicCache` (traced with a non-empty past: the same graph takes an empty one, checked in the tests).

Example:
    >>> layout = GenerationLayout.of(model)  # doctest: +SKIP
    >>> export_for_generation(model, "out/gen", tokenizer=tok)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from lepton_search.errors import ConfigError
from lepton_search.logging import hf_progress_bars_off, routed_to_debug
from lepton_search.techniques import families
from lepton_search.techniques._export_io import OPSET, _quiet_stdout

PAST, PRESENT = "past_key_values.%d.%s", "present.%d.%s"
FILENAME = "model.onnx"
TRACE_PAST, TRACE_NEW = 4, 3  # the traced example: 4 cached positions, 3 new tokens


@dataclass(frozen=True)
class GenerationLayout:
    """What a decoder's cache looks like, read off its modules (a pruned model's widths, not its config's)."""

    layers: int
    heads: int
    kv_heads: int
    head_size: int
    hidden_size: int
    vocab_size: int
    context_length: int
    model_type: str

    @classmethod
    def of(cls, model: nn.Module) -> GenerationLayout:
        """The layout of a causal LM whose blocks a family record with separate q/k/v names (`families`): heads and
        key/value heads are q's and k's widths over the head size, per block."""
        model = causal_lm(model)
        found = families.named_blocks(model) if isinstance(model, nn.Module) else []
        family = found[0][2] if found else None
        if family is None or not family.causal or family.fused_qkv or not hasattr(model, "config"):
            raise ConfigError("model", type(model).__name__, "generation export takes a causal LM of a recorded "
                              "family with separate q/k/v projections; export it without past key/values")
        shapes = set()
        for _, block, _ in found:
            attn = families.path(block, family.attention)
            size = int(getattr(attn, family.head_size))
            q, k, _ = (families.path(block, p) for p in family.qkv)
            shapes.add((q.out_features // size, k.out_features // size, size))
        if len(shapes) != 1:
            raise ConfigError("model.layers", sorted(shapes), "generation export needs one (heads, key/value heads, "
                              "head size) for every layer (genai_config holds one): prune heads alike in every layer")
        heads, kv_heads, size = shapes.pop()
        config = model.config
        return cls(len(found), heads, kv_heads, size, int(config.hidden_size), int(config.vocab_size),
                   int(config.max_position_embeddings), str(config.model_type))

    def input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "position_ids"] + self._names(PAST)

    def output_names(self) -> list[str]:
        return ["logits"] + self._names(PRESENT)

    def _names(self, pattern: str) -> list[str]:
        return [pattern % (i, kind) for i in range(self.layers) for kind in ("key", "value")]


class _WithPast(nn.Module):
    """input_ids, attention_mask, position_ids, flat past -> logits, flat present (one DynamicCache a call)."""

    def __init__(self, model: nn.Module, layers: int) -> None:
        super().__init__()
        self.model, self.layers = model, layers

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from transformers.cache_utils import DynamicCache

        cache = DynamicCache()
        for i in range(self.layers):
            cache.update(past[2 * i], past[2 * i + 1], i)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         past_key_values=cache, use_cache=True)
        present = [t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)]
        return (out.logits, *present)


@contextlib.contextmanager
def _numbered_layers(model: nn.Module) -> Iterator[None]:
    """Each kept layer's attention numbered 0..n-1 while exporting (a dropped layer leaves a gap the cache would
    index past), as it was after."""
    found = families.named_blocks(model)
    attns = [families.path(block, family.attention) for _, block, family in found]
    before = [getattr(a, "layer_idx", None) for a in attns]
    use_cache = getattr(model.config, "use_cache", None)
    for i, a in enumerate(attns):
        a.layer_idx = i
    model.config.use_cache = True
    try:
        yield
    finally:
        for a, i in zip(attns, before):
            a.layer_idx = i
        model.config.use_cache = use_cache


def causal_lm(model: nn.Module) -> nn.Module:
    """The Hugging Face causal LM inside a wrapper (`workloads.hf.HFLogits` holds it as `.model`)."""
    while not hasattr(model, "config") and isinstance(getattr(model, "model", None), nn.Module):
        model = model.model
    return model


def export_with_past(model: nn.Module, path: str | Path) -> onnx.ModelProto:
    """Write `model`'s generation graph (see the module docstring) to `path`; return it (weights inline)."""
    model = causal_lm(model)
    layout = GenerationLayout.of(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    total = TRACE_PAST + TRACE_NEW
    args = (torch.randint(0, layout.vocab_size, (1, TRACE_NEW), generator=gen), torch.ones(1, total, dtype=torch.int64),
            torch.arange(TRACE_PAST, total)[None],
            *(torch.randn(1, layout.kv_heads, TRACE_PAST, layout.head_size, generator=gen)
              for _ in range(2 * layout.layers)))
    inputs, outputs = layout.input_names(), layout.output_names()
    axes: dict[str, dict[int, str]] = {"input_ids": {0: "batch", 1: "sequence"}, "position_ids": {0: "batch", 1: "sequence"},
                                       "attention_mask": {0: "batch", 1: "total_sequence"},
                                       "logits": {0: "batch", 1: "sequence"}}
    axes |= {n: {0: "batch", 2: "past_sequence"} for n in inputs[3:]}
    axes |= {n: {0: "batch", 2: "total_sequence"} for n in outputs[1:]}
    model = model.eval()
    try:
        with routed_to_debug(), torch.no_grad(), _quiet_stdout(), _numbered_layers(model):
            torch.onnx.export(_WithPast(model, layout.layers), args, str(path), dynamo=False, opset_version=OPSET,
                              input_names=inputs, output_names=outputs, dynamic_axes=axes, do_constant_folding=True)
    except Exception as exc:  # noqa: BLE001 - exporter errors come in many types
        raise ConfigError("model", type(model).__name__,
                          f"cannot be exported with past key/values ({str(exc).splitlines()[0]})") from None
    return onnx.load(str(path))


def genai_config(layout: GenerationLayout, *, filename: str = FILENAME, bos_token_id: int | None = None,
                 eos_token_id: int | list[int] | None = None, pad_token_id: int | None = None) -> dict[str, Any]:
    """The `genai_config.json` ONNX Runtime GenAI reads for this layout (the builder's fields, CPU, greedy)."""
    return {
        "model": {
            "bos_token_id": bos_token_id, "context_length": layout.context_length,
            "decoder": {
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "filename": filename, "head_size": layout.head_size, "hidden_size": layout.hidden_size,
                "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask", "position_ids": "position_ids",
                           "past_key_names": "past_key_values.%d.key", "past_value_names": "past_key_values.%d.value"},
                "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                            "present_value_names": "present.%d.value"},
                "num_attention_heads": layout.heads, "num_hidden_layers": layout.layers,
                "num_key_value_heads": layout.kv_heads,
            },
            "eos_token_id": eos_token_id, "pad_token_id": pad_token_id if pad_token_id is not None else eos_token_id,
            "type": layout.model_type, "vocab_size": layout.vocab_size,
        },
        "search": {"diversity_penalty": 0.0, "do_sample": False, "early_stopping": True, "length_penalty": 1.0,
                   "max_length": layout.context_length, "min_length": 0, "no_repeat_ngram_size": 0, "num_beams": 1,
                   "num_return_sequences": 1, "past_present_share_buffer": False, "repetition_penalty": 1.0,
                   "temperature": 1.0, "top_k": 1, "top_p": 1.0},
    }


def write_folder(folder: str | Path, graph: onnx.ModelProto, layout: GenerationLayout, *, tokenizer: Any = None,
                 config: Any = None) -> Path:
    """`folder` with `model.onnx` (`graph`, weights in `model.onnx.data` beside it when over 2 GB's protobuf limit
    would bite), `genai_config.json`, `lepton_layout.json` and the tokenizer's files (when given: a transformers
    tokenizer, saved with `save_pretrained`); returns the model file's path. `config`: the model's config, for the
    special token ids."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / FILENAME
    large = graph.ByteSize() > 1_800_000_000
    onnx.save(graph, str(path), save_as_external_data=large, location=FILENAME + ".data" if large else None)
    ids = {k: getattr(config, k, None) for k in ("bos_token_id", "eos_token_id", "pad_token_id")} if config else {}
    (folder / "genai_config.json").write_text(json.dumps(genai_config(layout, **ids), indent=2))
    (folder / "lepton_layout.json").write_text(json.dumps(asdict(layout), indent=2))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(folder))
    return path


def export_for_generation(model: nn.Module, folder: str | Path, *, tokenizer: Any = None) -> Path:
    """`export_with_past` then `write_folder`: an FP32 folder `onnxruntime_genai.Model(folder)` loads; the path
    of its `model.onnx`."""
    folder = Path(folder)
    graph = export_with_past(model, folder / FILENAME)
    return write_folder(folder, graph, GenerationLayout.of(model), tokenizer=tokenizer, config=model.config)


# The graphs a generation file can be made of (`Workload.generation_graph`): our exporter's ("torch", unfused:
# every op traced from transformers) or ONNX Runtime GenAI's model builder's ("builder": GroupQueryAttention, one
# q/k/v MatMul, SkipSimplifiedLayerNormalization; measured ~2x the decode tokens/s at the same weights on SmolLM2)
GRAPHS = ("torch", "builder")
BUILDER_HEAD_SIZE = "kv_cache_dim"  # the builder leaves the cache's head size symbolic; set to the model's here


def builder_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime_genai") is not None


def check_graph(graph: str, *, generation: bool) -> None:
    """One line for a `generation_graph` that cannot be made (checked when a workload is made, before any training)."""
    if graph not in GRAPHS:
        raise ConfigError("workload.generation_graph", graph, f"give one of {list(GRAPHS)}")
    if graph == "builder" and not generation:
        raise ConfigError("workload.generation_graph", graph, "is a generation file's graph and the workload has "
                          "generation=False: set generation=True, or leave generation_graph 'torch'")
    if graph == "builder" and not builder_available():
        raise ConfigError("workload.generation_graph", graph, "needs ONNX Runtime GenAI's model builder: pip install "
                          "onnxruntime-genai (the [llm] extra), or give 'torch'")


def mlp_width(model: nn.Module) -> int:
    """The FFN width every block shares (the builder's config holds one: `intermediate_size`)."""
    found = families.named_blocks(causal_lm(model))
    family = found[0][2]
    widths = {families.path(block, family.up).out_features for _, block, _ in found}
    if len(widths) != 1:
        raise ConfigError("model.layers", sorted(widths), "the builder's graph needs one FFN width for every layer "
                          "(its config holds one): prune the FFN alike in every layer, or give generation_graph 'torch'")
    return widths.pop()


def save_for_builder(model: nn.Module, folder: Path) -> Path:
    """`model` as a Hugging Face folder whose config says what its modules are (a pruned model's layers, heads,
    key/value heads and FFN width), with the cache on and no quantization record (the builder refuses a GGUF one)."""
    lm = causal_lm(model)
    layout = GenerationLayout.of(lm)
    with routed_to_debug(), hf_progress_bars_off():
        lm.save_pretrained(str(folder))
    config = json.loads((folder / "config.json").read_text())
    config.pop("quantization_config", None)
    config.update(num_hidden_layers=layout.layers, num_attention_heads=layout.heads,
                  num_key_value_heads=layout.kv_heads, head_dim=layout.head_size, intermediate_size=mlp_width(lm),
                  use_cache=True)
    config.pop("layer_types", None)  # one per original layer; the builder reads layer count from num_hidden_layers
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    _placeholder_tokenizer(layout.vocab_size, lm.config).save_pretrained(str(folder))
    return folder


def _placeholder_tokenizer(vocab_size: int, config: Any) -> Any:
    """A word-level tokenizer over ids 0..vocab-1 with the config's special ids: the builder loads a tokenizer from
    its input folder for those ids only, and the graph does not depend on it (only the builder's `model.onnx` is
    kept; a folder for users is written with the real tokenizer, `write_folder`)."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {f"<{i}>": i for i in range(vocab_size)}
    special = {f"{k}_token": f"<{getattr(config, k + '_token_id')}>" for k in ("bos", "eos", "pad")
               if isinstance(getattr(config, k + "_token_id", None), int)}
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel(vocab, unk_token="<0>")), unk_token="<0>",
                                   **special)


def export_with_builder(model: nn.Module, path: str | Path) -> onnx.ModelProto:
    """The model builder's FP32 CPU graph of `model` (`python -m onnxruntime_genai.models.builder -p fp32 -e cpu` on
    `save_for_builder`'s folder), written to `path` (weights inline) and returned: input_ids, attention_mask and
    past key/values in (no position_ids: the builder derives them from the mask), logits and present out; the
    cache's head size made concrete. The graph stage rewrites it like any other (MatMulNBits)."""
    import subprocess
    import sys
    import tempfile

    check_graph("builder", generation=True)
    layout = GenerationLayout.of(model)
    if layout.head_size % 16:  # ONNX Runtime's GroupQueryAttention (CPU) refuses it when run
        raise ConfigError("workload.generation_graph", "builder", f"the model's head size is {layout.head_size} and "
                          "the builder's GroupQueryAttention takes multiples of 16: give generation_graph 'torch'")
    from lepton_search.latency.host_cpu import DECODE_NEW, DECODE_PROMPT

    if layout.context_length < DECODE_PROMPT + DECODE_NEW:  # its rotary cache stops at the context; ours extrapolates
        raise ConfigError("workload.generation_graph", "builder", f"the model's context is {layout.context_length} "
                          f"tokens and a file is timed over {DECODE_PROMPT} + {DECODE_NEW}: the builder's graph stops "
                          "at its context; give generation_graph 'torch'")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lepton-builder-", dir=path.parent) as tmp:
        hf, out = save_for_builder(model, Path(tmp) / "hf"), Path(tmp) / "out"
        done = subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf), "-o", str(out),
                               "-p", "fp32", "-e", "cpu", "-c", str(Path(tmp) / "cache")],
                              check=False, capture_output=True, text=True)
        if done.returncode or not (out / FILENAME).is_file():
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise ConfigError("workload.generation_graph", "builder", f"the model builder failed on "
                              f"{type(causal_lm(model)).__name__} ({tail[0][:200]}): give generation_graph 'torch'")
        graph = onnx.load(str(out / FILENAME))  # external data, if any, read in
    for value in [*graph.graph.input, *graph.graph.output]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param == BUILDER_HEAD_SIZE:
                dim.dim_value = layout.head_size
    onnx.save(graph, str(path))
    return graph
