"""`host-cpu`: ONNX Runtime on this machine, timed for real."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from lepton_search.latency._base import Inputs, LatencyEstimate, LatencyModel, graph_inputs, with_batch
from lepton_search.latency.cpu_identity import this_cpu
from lepton_search.latency.decode import measure_decode, past_inputs
from lepton_search.paths import file_lock

LOCK_PATH = Path(tempfile.gettempdir()) / "lepton_search_latency.lock"


DECODE_PROMPT, DECODE_NEW = 64, 32  # a generation file's timing: prefill of 64 tokens, then 32 decoded

def host_lock(path: Path = LOCK_PATH) -> contextlib.AbstractContextManager[None]:
    """Host-wide lock: two workers on one machine never time models at the same moment."""
    return file_lock(path)


def session(onnx_path: str | Path, *, threads: int = 1, optimized_path: str | Path | None = None) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if optimized_path is not None:
        so.optimized_model_filepath = str(optimized_path)
    return ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])


def optimized_op_types(onnx_path: str | Path, threads: int = 1) -> set[str]:
    """Op types of the graph ONNX Runtime actually runs after its optimizations."""
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "optimized.onnx"
        session(onnx_path, threads=threads, optimized_path=out)
        return {n.op_type for n in onnx.load(str(out)).graph.node}


def other_runnable(proc: str | Path = "/proc") -> int | None:
    """How many threads of other processes are runnable on the host right now (state R in
    `/proc/PID/task/TID/stat`); None where there is no such /proc (not Linux). Threads of this process's own
    process group (itself, its workers, the shell pipeline it runs in) are left out: what is asked is whether
    someone else holds the cores."""
    root = Path(proc)
    if not (root / "self").exists() and not (root / str(os.getpid())).exists():
        return None
    me, group, count = str(os.getpid()), str(os.getpgrp()), 0
    for stat in root.glob("[0-9]*/task/[0-9]*/stat"):
        if stat.parts[-4] == me:
            continue
        with contextlib.suppress(OSError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()  # state, ppid, pgrp, ...
            count += fields[0] == "R" and fields[2] != group
    return count


def busy_reason(*, others: int | None, cv: float, max_cv: float, load_avg_1min: float | None = None,
                threads: int = 1, cores: int | None = None) -> str | None:
    """Why a timing was taken on a busy host, or None.

    Busy when other processes held at least half the host's cores while it timed (`others`: the fewest
    runnable threads of other processes seen before, between and after its rounds; caches, memory bandwidth
    and clocks are shared: the same INT8 graph timed 0.48 and 0.80 ms in consecutive trials at load 4 on 2
    cores), or when its own spread stayed over twice `max_cv` after every repeat (a sub-0.1 ms model's own
    noise sits near `max_cv`). The 1-minute load average lags (a search's own fine-tuning on every core leaves
    it at the core count for a minute), so it decides only where `others` is unknown.

    Example:
        >>> busy_reason(others=3, cv=0.02, max_cv=0.05, cores=2)
        '3 runnable threads of other processes on 2 cores'
        >>> busy_reason(others=0, cv=0.02, max_cv=0.05, load_avg_1min=2.0, cores=2) is None
        True
    """
    cores = cores or os.cpu_count() or 1
    why = []
    if others is not None and others >= cores / 2:
        why.append(f"{others} runnable thread{'s' if others != 1 else ''} of other processes on {cores} cores")
    elif others is None and load_avg_1min is not None and load_avg_1min - threads >= cores / 2:
        why.append(f"load average {load_avg_1min:.2g} on {cores} cores")
    if cv > 2 * max_cv:  # the rounds repeat while over max_cv; twice over after them all: not the model's own noise
        why.append(f"timing spread cv {cv:.2f} over twice the limit {max_cv:.2f}")
    return ", ".join(why) or None


class HostCpuLatency(LatencyModel):
    """Median and p90 over `runs` timed calls after `warmup`; repeated while the CV exceeds `max_cv`.

    The CV is taken over the medians of 5 equal blocks of runs, which is what a repeat of the
    whole measurement would see.
    """

    name = "host-cpu"
    source = "measured"

    def __init__(self, *, threads: int = 1, batch_size: int = 1, warmup: int = 10, runs: int = 50,
                 max_cv: float = 0.05, max_repeats: int = 3) -> None:
        self.threads, self.batch_size, self.warmup, self.runs = threads, batch_size, warmup, runs
        self.max_cv, self.max_repeats = max_cv, max_repeats

    def latency(self, onnx_path: str | Path, inputs: Inputs | None = None) -> LatencyEstimate:
        sess = session(onnx_path, threads=self.threads)
        if past_inputs(sess):
            return self._decode(onnx_path, sess, inputs)
        feed = with_batch(graph_inputs(onnx_path) if inputs is None else inputs, self.batch_size)
        best: tuple[float, np.ndarray] | None = None
        attempts = 0
        with host_lock():
            load = os.getloadavg()[0]
            seen = [other_runnable()]  # before, between and after the rounds
            for _ in range(self.warmup):
                sess.run(None, feed)
            while attempts < self.max_repeats:
                attempts += 1
                times = np.empty(self.runs)
                for i in range(self.runs):
                    t0 = time.perf_counter()
                    sess.run(None, feed)
                    times[i] = time.perf_counter() - t0
                blocks = np.array([np.median(b) for b in np.array_split(times, 5)])
                cv = float(blocks.std() / blocks.mean())
                if best is None or cv < best[0]:
                    best = (cv, times)
                seen.append(other_runnable())
                if cv <= self.max_cv:
                    break
            load = max(load, os.getloadavg()[0])  # the higher of before and after (recorded; see busy_reason)
        cv, times = best
        others = None if None in seen else min(seen)  # a task that came and went for one sample is not a load
        return LatencyEstimate(
            p50_ms=float(np.median(times) * 1e3), p90_ms=float(np.percentile(times, 90) * 1e3),
            source=self.source, cv=cv, threads=self.threads, batch_size=self.batch_size,
            details={"runs": self.runs, "attempts": attempts, "load_avg_1min": load, "warmup": self.warmup,
                     "other_runnable": others,
                     "busy": busy_reason(others=others, cv=cv, max_cv=self.max_cv, load_avg_1min=load,
                                         threads=self.threads)},
        )

    def _decode(self, onnx_path: str | Path, sess: Any, inputs: Inputs | None) -> LatencyEstimate:
        """A generation file: p50 is ms per decoded token at batch 1 (`latency.decode`), after a prefill of the
        first `DECODE_PROMPT` tokens of the first sample (its unmasked ids; repeated when shorter)."""
        ids = np.asarray(inputs["input_ids"][0]) if inputs is not None and "input_ids" in inputs else np.arange(1, 9)
        if inputs is not None and "attention_mask" in inputs:
            ids = ids[np.asarray(inputs["attention_mask"][0]).astype(bool)]
        prompt = np.resize(ids, DECODE_PROMPT).tolist()
        with host_lock():
            load = os.getloadavg()[0]
            t = measure_decode(onnx_path, prompt, new_tokens=DECODE_NEW, threads=self.threads, repeats=2, session=sess)
            load = max(load, os.getloadavg()[0])
        return LatencyEstimate(
            p50_ms=t.decode_ms_per_token, p90_ms=t.decode_p90_ms, source=self.source, cv=None, threads=self.threads,
            batch_size=1, details={"unit": "ms per decoded token (batch 1, greedy, after a prefill)", **t.as_dict(),
                                   "load_avg_1min": load})

    def describe(self) -> dict[str, Any]:
        import onnxruntime as ort

        return {"name": self.name, "source": self.source, "runtime": f"onnxruntime {ort.__version__} CPU",
                "threads": self.threads, "batch_size": self.batch_size, "runs": self.runs, "cpu": _cpu_name(),
                "cpu_identity": this_cpu().as_dict()}


def _cpu_name() -> str:
    """This host's CPU model name (`cpu_identity.this_cpu` has vendor and ISA flags too)."""
    return this_cpu().model
