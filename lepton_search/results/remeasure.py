"""Honest fronts: after a search, the base and every Pareto point are timed again, interleaved, in one run.

A trial's latency was measured once, minutes apart from the base's, on a shared machine (the unpruned
graph measured as a trial came out 0.81-0.96x of the base). Re-timing every front file and the base in
turn, `repeats` times, and keeping each one's minimum median gives speed-ups that are ratios within one run.
The result is a study user attr (finished trials cannot take new attrs); `StudyFrame.trials()` shows it as
`latency_ms_remeasured` / `speedup_remeasured` beside the trial's own figures.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from lepton_search import records
from lepton_search.latency import LatencyModel, latency_target, load_inputs
from lepton_search.latency._base import Inputs
from lepton_search.records import ONNX_ARTIFACT, SAMPLE_INPUTS_ARTIFACT
from lepton_search.results.frame import StudyFrame
from lepton_search.storage import TrialFiles


def stored_samples(store: Any, artifact_id: str | None, tmp: Path, cache: dict[str, Inputs], *,
                   owners: Any = ()) -> Inputs | None:
    """The stored validation samples `artifact_id` (an .npz), downloaded once and checked against the digest
    `owners` (trial, study) recorded; None when there are none."""
    if artifact_id is None:
        return None
    if artifact_id not in cache:
        path = tmp / f"{artifact_id}.npz"
        TrialFiles.of(store).download(artifact_id, path, owners=owners)
        cache[artifact_id] = load_inputs(path)
    return cache[artifact_id]


def remeasure_study(result: StudyFrame, target: str | LatencyModel = "host-cpu", *,
                    repeats: int = 3) -> dict[str, Any] | None:
    """`remeasure_front` on a stored study: `host-cpu` with the study's timing settings (or `target`), fed the
    validation samples stored with the study. What to run on an idle host after a search on a busy one."""
    model = latency_target(target, (records.study_space(result.study) or {}).get("latency"))
    base = result.base
    with tempfile.TemporaryDirectory(prefix="lepton_samples_") as tmp:
        inputs = stored_samples(result.artifact_store, None if base is None else base.sample_inputs_artifact_id,
                                Path(tmp), {}, owners=(result.study,))
        return remeasure_front(result, model, inputs, repeats=repeats)


def remeasure_front(result: StudyFrame, target: LatencyModel, inputs: Inputs | None = None, *,
                    repeats: int = 3) -> dict[str, Any] | None:
    """Time the base and the front's files on `target`, interleaved, `repeats` times; store and return the figures.
    The base is fed `inputs`; a trial whose file takes other inputs (a knob changed them) its own stored samples.

    Returns None (and stores nothing) when the target predicts rather than measures, or there is no front.
    """
    base = result.base
    front = result.pareto()
    if target.source != "measured" or base is None or base.onnx_artifact_id is None or front.empty:
        return None
    by_number = {t.number: t for t in result.study.get_trials(deepcopy=False)}
    ids = {"base": base.onnx_artifact_id}
    ids.update({str(int(n)): records.artifact(by_number[int(n)], ONNX_ARTIFACT) for n in front["number"]})
    times: dict[str, list[float]] = {k: [] for k in ids}
    own = {str(int(n)): records.artifact(by_number[int(n)], SAMPLE_INPUTS_ARTIFACT) for n in front["number"]}
    with tempfile.TemporaryDirectory(prefix="lepton_remeasure_") as tmp:
        cache: dict[str, Inputs] = {}
        owner = {key: (by_number[int(key)] if key != "base" else None, result.study) for key in ids}
        feeds = {key: inputs if key == "base" or own.get(key) in (None, base.sample_inputs_artifact_id)
                 else stored_samples(result.artifact_store, own[key], Path(tmp), cache, owners=owner[key])
                 for key in ids}
        paths = {}
        for key, artifact_id in ids.items():
            paths[key] = Path(tmp) / f"{key}.onnx"
            result.files.download(artifact_id, paths[key], owners=owner[key])
        for _ in range(repeats):  # interleaved: every file once per round
            for key, path in paths.items():
                times[key].append(target.latency(path, feeds[key]).p50_ms)
    base_ms = min(times.pop("base"))
    out = {"repeats": repeats, "at": time.strftime("%Y-%m-%dT%H:%M:%S"), "target": target.describe(),
           "base_latency_ms": base_ms,
           "trials": {k: {"latency_ms": min(v), "speedup": base_ms / min(v), "runs_ms": v} for k, v in times.items()}}
    records.set_remeasured(result.study, out)
    return out
