"""Re-target a finished study: re-score its stored ONNX artifacts on another latency target.

Nothing is retrained or re-quantized: accuracy and size are copied from the source trials, latency
(and price) are re-scored on the new target (fed the validation samples stored with the study,
`sample_inputs.npz`; synthetic inputs of the graph's shapes for studies that stored none), and the results go into a new study that shares the
source's artifact store, so `report` / `export` work on it as on any study.

Example:
    >>> result = retarget("sqlite:///lepton_search.db", "fashion-mnist-cnn", "nvidia-t4")  # doctest: +SKIP
    >>> result.pareto()  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

import optuna

from lepton_search import records
from lepton_search.errors import ConfigError
from lepton_search.latency import LatencyEstimate, LatencyModel, latency_target
from lepton_search.latency._base import Inputs
from lepton_search.logging import logger, verbose_call
from lepton_search.records import ONNX_ARTIFACT, SAMPLE_INPUTS_ARTIFACT, BaseRecord, TrialRecord
from lepton_search.results.remeasure import stored_samples
from lepton_search.results.result import SearchResult
from lepton_search.storage import TrialFiles

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def _score(store: Any, artifact_id: str, model: LatencyModel, tmp: Path, inputs: Inputs | None, *,
           owners: Any = ()) -> LatencyEstimate:
    path = tmp / f"{artifact_id}.onnx"
    TrialFiles.of(store).download(artifact_id, path, owners=owners)  # checked against its recorded digest
    try:
        return model.latency(path, inputs)  # None: synthetic inputs of the graph's own shapes, batch 1
    finally:
        path.unlink(missing_ok=True)


def _new_study(storage: str, name: str, src: optuna.Study) -> optuna.Study:
    if not _NAME_RE.match(name):
        raise ConfigError("--new-study", name, "use letters, digits, '_', '-', '.' (no path separators)")
    if name in optuna.get_all_study_names(storage=storage):
        raise ConfigError("--new-study", name, "exists already; pick another name")
    study = optuna.create_study(storage=storage, study_name=name, directions=src.directions)
    records.copy_study_attrs(src, study)
    if src.metric_names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # set_metric_names is marked experimental
            study.set_metric_names(list(src.metric_names))
    return study


@verbose_call
def retarget(storage: str, study_name: str, target: str | LatencyModel, *, new_study: str | None = None,
             artifacts: str | Path | None = None, verbose: bool = False) -> SearchResult:
    """Copy `study_name` into a new study (default `<study>.<target>`) with latency re-scored on `target`."""
    src = SearchResult.open(storage, study_name, artifacts=artifacts)
    space = records.study_space(src.study) or {}
    model = latency_target(target, space.get("latency"))
    objectives = src.objectives
    if "usd_per_million_inferences" in objectives and model.describe().get("usd_per_hour") is None:
        raise ConfigError("--target", model.name, "has no usd_per_hour, but the study minimises a price")
    if src.base is None or src.base.onnx_artifact_id is None:
        raise ConfigError("--study", study_name, "has no stored base model; run a search first")
    dst = _new_study(storage, new_study or f"{study_name}.{model.name}", src.study)
    with tempfile.TemporaryDirectory(prefix="lepton_retarget_") as tmp:
        samples: dict[str, Inputs] = {}
        base_inputs = stored_samples(src.artifact_store, src.base.sample_inputs_artifact_id, Path(tmp), samples,
                                     owners=(src.study,))
        lat = _score(src.artifact_store, src.base.onnx_artifact_id, model, Path(tmp), base_inputs, owners=(src.study,))
        base = dataclasses.replace(src.base, **BaseRecord.latency_fields(lat), target=model.describe(),
                                   extra={**src.base.extra, "retargeted_from": {"study": study_name,
                                                                                 "target": src.base.target}})
        base.write(dst)
        for t in src.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            onnx_id = records.artifact(t, ONNX_ARTIFACT)
            if onnx_id is None:
                continue
            old = TrialRecord.of(t)
            inputs = stored_samples(src.artifact_store, records.artifact(t, SAMPLE_INPUTS_ARTIFACT), Path(tmp), samples,
                                    owners=(t, src.study))
            lat = _score(src.artifact_store, onnx_id, model, Path(tmp), inputs or base_inputs, owners=(t, src.study))
            new = old.with_latency(lat, base)
            new = dataclasses.replace(new, extra={**new.extra, "retargeted_from": {"study": study_name,
                                                                                    "trial": t.number}})
            attrs, system_attrs = records.copied_attrs(t, new)
            values = [float(new.get(o)) for o in objectives]
            dst.add_trial(optuna.trial.create_trial(
                params=t.params, distributions=t.distributions, values=values, user_attrs=attrs,
                system_attrs=system_attrs))
            if verbose:
                logger.info(f"trial {t.number:3d}: {old.latency_ms:.4f} ms -> {new.latency_ms:.4f} ms "
                            f"({new.latency_source})")
    return SearchResult(dst, src.artifact_store)
