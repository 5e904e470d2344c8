"""Generation latency of an ONNX decoder with past key/values: prefill ms, time to first token and decode tokens/s at
batch 1, measured with ONNX Runtime's `InferenceSession` driving the key/value loop (greedy: the next token is the
arg-max of the last logits).

The same loop times every file that has the builder's layout (`input_ids`, `attention_mask`, optional
`position_ids`, `past_key_values.N.key/value` in, `logits`, `present.N.key/value` out): ours, and the files ONNX
Runtime GenAI's model builder writes (its CPU files take the past as `[batch, kv_heads, past, head_size]` and
return the whole present, as ours do), so the base, candidates and the peer are timed alike. Threads: the session's
intra-op threads (1 is the search objective, as `host-cpu`'s other timings; 0: ONNX Runtime's default, all cores).

`measure_isolated` runs the same in a fresh process and adds its peak resident memory (`VmHWM`: weights, arena
and caches of one file, Python and ONNX Runtime included), reported beside the file's size.

Example:
    >>> t = measure_decode("out/gen/model.onnx", list(range(1, 65)), new_tokens=32, threads=1)  # doctest: +SKIP
    >>> round(t.decode_tokens_per_s)  # doctest: +SKIP
    60
"""

from __future__ import annotations

import json
import re
import resource
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from lepton_search.errors import ConfigError

_PAST = re.compile(r"past_key_values\.(\d+)\.(key|value)")


@dataclass(frozen=True)
class DecodeTiming:
    """One file's generation timing at batch 1 (medians over `repeats` runs of prefill + `new_tokens` decodes)."""

    prompt_tokens: int
    new_tokens: int
    threads: int
    prefill_ms: float  # the prompt's forward pass (empty past): time to the first token's logits
    ttft_ms: float  # prefill plus picking the first token
    decode_ms_per_token: float  # one token's forward pass with the cache, median over the decoded tokens
    decode_tokens_per_s: float
    decode_p90_ms: float
    tokens: tuple[int, ...]  # the greedy tokens generated (the first from the prefill)
    peak_rss_mb: float | None = None  # measure_isolated only

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "tokens"}


class Decoder:
    """An `InferenceSession` over a decoder file and its cache shapes (read off the graph's inputs)."""

    def __init__(self, path: str | Path, *, threads: int = 1, session: Any = None) -> None:
        self.session = session or _session(path, threads)
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.past = past_inputs(self.session)
        if "input_ids" not in inputs or not self.past:
            raise ConfigError("latency.decode", str(path), "takes a decoder with input_ids and past_key_values.N.key/"
                              "value inputs: export it with past key/values (techniques.generation)")
        self.kv_heads, self.head_size = _cache_shape(Path(path), inputs[self.past[0]].shape)
        self.position_ids = "position_ids" in inputs
        outputs = [o.name for o in self.session.get_outputs()]
        self.present = [outputs.index(n.replace("past_key_values", "present")) for n in self.past]
        self.dtype = np.float16 if "float16" in inputs[self.past[0]].type else np.float32

    def step(self, ids: Sequence[int], past: list[np.ndarray] | None, done: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """Logits [1, len(ids), vocab] and the present after feeding `ids` at positions done.. (past: None, empty)."""
        if past is None:
            past = [np.zeros((1, self.kv_heads, 0, self.head_size), self.dtype)] * len(self.past)
        n = len(ids)
        feed = {"input_ids": np.asarray([ids], np.int64), "attention_mask": np.ones((1, done + n), np.int64),
                **dict(zip(self.past, past))}
        if self.position_ids:
            feed["position_ids"] = np.arange(done, done + n, dtype=np.int64)[None]
        out = self.session.run(None, feed)
        return out[0], [out[i] for i in self.present]


    def prefill(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Logits [rows, sequence, vocab] of a batch of windows with an empty past (scoring a file)."""
        rows, n = ids.shape
        empty = np.zeros((rows, self.kv_heads, 0, self.head_size), self.dtype)
        feed = {"input_ids": ids.astype(np.int64), "attention_mask": mask.astype(np.int64),
                **dict.fromkeys(self.past, empty)}
        if self.position_ids:
            feed["position_ids"] = np.broadcast_to(np.arange(n, dtype=np.int64), (rows, n)).copy()
        return self.session.run(["logits"], feed)[0]


def _session(path: str | Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def past_inputs(session: Any) -> list[str]:
    """The session's past key/value inputs, layer by layer, key before value (none: not a generation file)."""
    names = [i.name for i in session.get_inputs() if _PAST.fullmatch(i.name)]
    return sorted(names, key=lambda n: (int(_PAST.fullmatch(n)[1]), n.endswith("value")))


def _cache_shape(path: Path, shape: list) -> tuple[int, int]:
    """(kv heads, head size) of a past input: off the graph, or the builder's genai_config.json where the graph
    leaves the head size symbolic (`kv_cache_dim`)."""
    if all(isinstance(d, int) for d in shape[1:4:2]):
        return int(shape[1]), int(shape[3])
    config = path.parent / "genai_config.json"
    if not config.is_file():
        raise ConfigError("latency.decode", str(path), f"past key/value shape {shape} is symbolic and no "
                          "genai_config.json lies beside the file: give the file its config")
    decoder = json.loads(config.read_text())["model"]["decoder"]
    return int(decoder["num_key_value_heads"]), int(decoder["head_size"])


def measure_decode(path: str | Path, prompt: Sequence[int], *, new_tokens: int = 32, threads: int = 1,
                   repeats: int = 3, context: int | None = None, session: Any = None) -> DecodeTiming:
    """Time prefill of `prompt` and `new_tokens` greedy decodes on `path` (see the module docstring); `context`: the
    model's context, checked against prompt + new tokens."""
    total = len(prompt) + new_tokens
    if not prompt:
        raise ConfigError("latency.prompt_tokens", 0, "give a prompt of at least one token")
    if context is not None and total > context:
        raise ConfigError("latency.prompt_tokens", len(prompt), f"prompt + {new_tokens} new tokens = {total} is above "
                          f"the model's context ({context}): give a prompt of at most {context - new_tokens} tokens")
    if new_tokens < 2:
        raise ConfigError("latency.new_tokens", new_tokens, "give at least 2 (the first comes from the prefill)")
    decoder = Decoder(path, threads=threads, session=session)
    prefill, firsts, steps, tokens = [], [], [], []
    for _ in range(repeats + 1):  # the first run warms the session up and is not counted
        t0 = time.perf_counter()
        logits, past = decoder.step(list(prompt), None, 0)
        t1 = time.perf_counter()
        token = int(logits[0, -1].argmax())
        t2 = time.perf_counter()
        out, run_steps = [token], []
        for k in range(new_tokens - 1):
            s0 = time.perf_counter()
            logits, past = decoder.step([token], past, len(prompt) + k)
            token = int(logits[0, -1].argmax())
            run_steps.append(time.perf_counter() - s0)
            out.append(token)
        prefill.append(t1 - t0)
        firsts.append(t2 - t0)
        steps.append(run_steps)
        tokens = out
    counted = np.concatenate(steps[1:]) * 1e3
    step_ms = float(np.median(counted))
    return DecodeTiming(len(prompt), new_tokens, threads, float(np.median(prefill[1:])) * 1e3,
                        float(np.median(firsts[1:])) * 1e3, step_ms, 1e3 / step_ms, float(np.percentile(counted, 90)),
                        tuple(tokens))


def generation_fields(lat: Any) -> dict[str, Any] | None:
    """A generation file's timing from its `LatencyEstimate` (`host_cpu` on a file with past key/values: the trial
    record's `generation`), else None."""
    keys = ("prefill_ms", "ttft_ms", "decode_tokens_per_s", "prompt_tokens", "new_tokens", "unit")
    return {k: lat.details[k] for k in keys if k in lat.details} if "decode_tokens_per_s" in lat.details else None


def peak_rss_mb() -> float:
    """This process's peak resident memory since its last exec (`VmHWM`; `ru_maxrss` survives exec on Linux, so a
    spawned child would report its parent's peak)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _measured_with_rss(path: str, prompt: list[int], kwargs: dict) -> DecodeTiming:
    timing = measure_decode(path, prompt, **kwargs)
    return replace(timing, peak_rss_mb=peak_rss_mb())


def measure_isolated(path: str | Path, prompt: Sequence[int], **kwargs: int) -> DecodeTiming:
    """`measure_decode` in a fresh (spawned) process, with that process's peak resident memory."""
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_measured_with_rss, str(path), list(prompt), kwargs).result()
