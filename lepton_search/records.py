"""What a study stores: one record per trial, one for the base model, written to and read from Optuna attrs here.

Both records are flat in Optuna's attrs (optuna-dashboard shows them as they are) and carry `schema`.
Schema 1 is what lepton-search wrote before these records existed: the config as a positional
`config_key` list and no `schema` field; it is read here, once, and nowhere else. A field this version
does not know (written by a newer one, or added by hand) is kept in `extra` and written back unchanged,
so a new field never needs a migration.

Example:
    >>> rec = TrialRecord.from_attrs({"config_key": [0.25, 8, 1, "structured"], "accuracy": 0.9,
    ...                               "latency_ms": 0.2, "size_mb": 0.4})
    >>> rec.config["bits"], rec.schema
    (8, 1)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from lepton_search.errors import ConfigError
from lepton_search.latency.decode import generation_fields
from lepton_search.space import CONSTRAINTS, KNOB_NAMES, CompressionConfig
from lepton_search.tasks import Task, get_task

SCHEMA = 2
# Trial attrs that are bookkeeping, not measurements.
CONFIG = "config"  # knob name -> value; written first, so a running trial's config is known (duplicates)
DUPLICATE_OF = "duplicate_of"
FAIL_REASON = "fail_reason"
ONNX_ARTIFACT = "onnx_artifact_id"
CONFIG_ARTIFACT = "config_artifact_id"
CARD_ARTIFACT = "card_artifact_id"
OWNER = "owner"  # {host, pid, start}: the process running the trial, to fail it at once when that process died
RETRY_OF = "retry_of"  # the number of the dead trial this one re-runs
SAMPLE_INPUTS_ARTIFACT = "sample_inputs_artifact_id"  # the validation samples latency was timed on (.npz)
# Trial and study attr: artifact id -> SHA-256 of its bytes when uploaded (checked on every download). Studies
# written before it have none: their files are read unchecked.
ARTIFACT_SHA256 = "artifact_sha256"
REJECTED = "rejected_before_training"  # why a config was rejected (a budget, a rule) before any fine-tuning step
# The constraint an early-rejection rule sets: > 0 rejected (infeasible for the sampler), 0 checked and kept.
# Every trial of a study with the rule on carries it (GPSampler needs the same constraints on every trial).
DOMINATED = "dominated_before_training"
# Study user attr: how its trials store constraints (see `ConstraintLayout`).
CONSTRAINT_LAYOUT = "constraint_layout"
FINETUNE_RECIPE = "finetune_recipe"  # study attr: the fine-tune settings "auto" resolved to for the study's model
# Study user attrs.
SPACE = "space"  # the space the study searches (`SearchSpace.to_dict()`)
REQUESTED_SPACE = "space_requested"  # workers' init: the space as asked for, before knobs that cannot act were dropped
WORKLOAD = "workload"  # workers' init: how every worker rebuilds the workload (`WorkloadSpec` as a dict)
TARGET = "target"  # workers' init: the latency target's name
ARTIFACTS = "artifacts"  # workers' init: where the artifact store is (a folder or s3://BUCKET)
BASE_STATE_ARTIFACT = "base_state_artifact_id"  # workers' init, written last: its presence means "initialised"
REMEASURED = "front_remeasured"  # the front re-timed after the search (`results.remeasure`)
GRAPH_LATENCY_PREFIX = "graph_latency:"  # study attr per graph: its one latency in the study (`graphs.py`)
_RETRY_HISTORY = "retry_history"  # trial system attr Optuna's RetryHeartbeatStaleTrialCallback writes
_CONSTRAINTS_LIST = "constraints"  # Optuna's list form (system attr): optuna-dashboard 0.21 reads only this one
_CONSTRAINT_PREFIX = "constraints:"  # Optuna's named form (`set_constraint`), one system attr per name
_LEGACY_CONSTRAINT_NAMES = {"accuracy_drop_pts": "max_accuracy_drop_pts"}  # schema 1 name -> today's
_LEGACY_CONFIG_KEY = "config_key"  # schema 1: [prune_ratio, bits, finetune_epochs, prune_method]
_LEGACY_KNOBS = ("prune_ratio", "bits", "finetune_epochs", "prune_method")
_BOOKKEEPING = {CONFIG, DUPLICATE_OF, FAIL_REASON, ARTIFACT_SHA256, ONNX_ARTIFACT, SAMPLE_INPUTS_ARTIFACT, CONFIG_ARTIFACT, CARD_ARTIFACT, OWNER, RETRY_OF, REJECTED,
                _LEGACY_CONFIG_KEY, "prune_method", "schema"}


def read_config(attrs: Mapping[str, Any], params: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """The trial's config (every knob, sampled or fixed) from its attrs; None before it is known."""
    if isinstance(attrs.get(CONFIG), Mapping):
        values = dict(attrs[CONFIG])
    elif attrs.get(_LEGACY_CONFIG_KEY) is not None:
        values = dict(zip(_LEGACY_KNOBS, attrs[_LEGACY_CONFIG_KEY]))
    else:
        return None
    return CompressionConfig.from_dict(values).as_dict()  # knobs newer than the study take their default


def write_config(trial: Any, config: CompressionConfig) -> None:
    trial.set_user_attr(CONFIG, config.as_dict())


# Typed accessors: every trial and study attr the package reads or writes goes through these (the names above
# are what optuna-dashboard shows; callers never spell them). `trial`: a running `optuna.Trial` (read and
# write) or a `FrozenTrial` (read); `study`: an `optuna.Study`.

def trial_config(trial: Any) -> dict[str, Any] | None:
    """The trial's config (`read_config` of its attrs); None before it is known."""
    return read_config(trial.user_attrs)


def has_measurements(trial: Any) -> bool:
    """Whether the trial stored its figures (a COMPLETE trial of this package; a running one is mid-write)."""
    return "accuracy" in trial.user_attrs


def write_record(trial: Any, record: _Record) -> None:
    for key, value in record.to_attrs().items():
        trial.set_user_attr(key, value)


def mark_duplicate(trial: Any, of: int) -> None:
    trial.set_user_attr(DUPLICATE_OF, of)


def duplicate_of(trial: Any) -> int | None:
    return trial.user_attrs.get(DUPLICATE_OF)


def set_owner(trial: Any, owner: Mapping[str, Any]) -> None:
    trial.set_user_attr(OWNER, dict(owner))


def owner(trial: Any) -> Mapping[str, Any] | None:
    return trial.user_attrs.get(OWNER)


def set_fail_reason(trial: Any, reason: str) -> None:
    trial.set_user_attr(FAIL_REASON, reason)


def fail_reason(trial: Any) -> str | None:
    return trial.user_attrs.get(FAIL_REASON)


def set_rejected(trial: Any, reason: str) -> None:
    trial.set_user_attr(REJECTED, reason)


def rejected(trial: Any) -> str | None:
    return trial.user_attrs.get(REJECTED)


def retry_of(trial: Any) -> int | None:
    return trial.user_attrs.get(RETRY_OF)


def retry_attrs(number: int) -> dict[str, Any]:
    """The user attrs of a trial queued to re-run trial `number`'s params."""
    return {RETRY_OF: number}


_ARTIFACT_ATTRS = (ONNX_ARTIFACT, SAMPLE_INPUTS_ARTIFACT, CONFIG_ARTIFACT, CARD_ARTIFACT)


def set_artifact(trial: Any, attr: str, artifact_id: str) -> None:
    """Store an artifact id under `attr` (`ONNX_ARTIFACT`, `SAMPLE_INPUTS_ARTIFACT`, `CONFIG_ARTIFACT`,
    `CARD_ARTIFACT`)."""
    if attr not in _ARTIFACT_ATTRS:
        raise ValueError(f"{attr!r} is not a trial artifact attr; one of {_ARTIFACT_ATTRS}")
    trial.set_user_attr(attr, artifact_id)


def artifact(trial: Any, attr: str) -> str | None:
    """The artifact id stored under `attr` (see `set_artifact`); None when the trial has none."""
    if attr not in _ARTIFACT_ATTRS:
        raise ValueError(f"{attr!r} is not a trial artifact attr; one of {_ARTIFACT_ATTRS}")
    return trial.user_attrs.get(attr)


def set_artifact_digest(owner: Any, artifact_id: str, sha256: str) -> None:
    """Record the SHA-256 of artifact `artifact_id` on its owner (a running trial, or the study for its own files)."""
    digests = dict(owner.user_attrs.get(ARTIFACT_SHA256) or {})
    digests[artifact_id] = sha256
    owner.set_user_attr(ARTIFACT_SHA256, digests)


def artifact_digest(artifact_id: str, *owners: Any) -> str | None:
    """The SHA-256 recorded for `artifact_id` by the first of `owners` (trials, studies) that has one; None when
    none does (a study written before digests were recorded: its files are read unchecked)."""
    for owner in owners:
        if owner is None:
            continue
        found = (owner.user_attrs.get(ARTIFACT_SHA256) or {}).get(artifact_id)
        if found is not None:
            return found
    return None


def copied_attrs(trial: Any, record: TrialRecord) -> tuple[dict[str, Any], dict[str, Any]]:
    """(user attrs, system attrs) of a copy of a finished `trial` with `record` in place of its own (retarget):
    its bookkeeping kept, its constraints as stored (list and, in older studies, names), so the copy keeps the
    layout."""
    system = {k: v for k, v in trial.system_attrs.items() if k.split(":")[0] == _CONSTRAINTS_LIST}
    return {**trial.user_attrs, **record.to_attrs()}, system


def _trial_id(trial: Any) -> int:
    # Optuna 5.1 keeps a running trial's id private (`Trial._trial_id`); its storage (`Trial.storage`), study name
    # and number are public, and the storage maps them to the id.
    storage = trial.storage
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(trial.study.study_name),
                                                           trial.number)


def retry_history(trial: Any) -> list[int]:
    """Numbers of the stale trials a running trial retries, oldest first ([] for a fresh trial).

    Optuna 5.1's `Trial` has no `system_attrs`; the storage holds them (`RetryHeartbeatStaleTrialCallback`
    writes `failed_trial` and `retry_history` there).
    """
    return list(trial.storage.get_trial_system_attrs(_trial_id(trial)).get(_RETRY_HISTORY, []))


def fail_running(study: Any, storage: Any, number: int, reason: str) -> None:
    """Store `reason` on the RUNNING trial `number` (another process's, which died) and fail it.

    Optuna 5.1 has no public setter for a trial this process did not ask for, nor a public `Study.storage`: the
    caller passes the storage it opened the study with (public `BaseStorage` methods from there on).
    """
    import optuna

    storage = optuna.storages.get_storage(storage)
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name),
                                                               number)
    storage.set_trial_user_attr(trial_id, FAIL_REASON, reason)
    study.tell(number, state=optuna.trial.TrialState.FAIL)


def study_space(study: Any) -> dict[str, Any] | None:
    """The stored space (`SearchSpace.to_dict()`); None before a search stored one."""
    return study.user_attrs.get(SPACE)


def set_study_space(study: Any, space: Mapping[str, Any]) -> None:
    study.set_user_attr(SPACE, dict(space))


def requested_space(study: Any) -> dict[str, Any] | None:
    """The space a workers' init was asked for (the stored one may have had knobs that cannot act dropped)."""
    attrs = study.user_attrs
    return attrs.get(REQUESTED_SPACE, attrs.get(SPACE))


def set_requested_space(study: Any, space: Mapping[str, Any]) -> None:
    study.set_user_attr(REQUESTED_SPACE, dict(space))


@dataclass(frozen=True)
class WorkerSetup:
    """What a workers' init stores for every worker: the workload spec, the target's name, the artifact store."""

    workload: Mapping[str, Any] | None
    target: str | None
    artifacts: str | None

    @classmethod
    def read(cls, study: Any) -> WorkerSetup:
        attrs = study.user_attrs
        return cls(attrs.get(WORKLOAD), attrs.get(TARGET), attrs.get(ARTIFACTS))

    def write(self, study: Any) -> None:
        study.set_user_attr(WORKLOAD, dict(self.workload or {}))
        study.set_user_attr(TARGET, self.target)
        study.set_user_attr(ARTIFACTS, self.artifacts)


def base_state_artifact(study: Any) -> str | None:
    """The base model's state_dict artifact a workers' init stored; None: not initialised by `init`."""
    return study.user_attrs.get(BASE_STATE_ARTIFACT)


def set_base_state_artifact(study: Any, artifact_id: str) -> None:
    study.set_user_attr(BASE_STATE_ARTIFACT, artifact_id)


def remeasured(study: Any) -> dict[str, Any]:
    """The front re-timed after the search ({} when it was not)."""
    return study.user_attrs.get(REMEASURED) or {}


def set_remeasured(study: Any, figures: Mapping[str, Any]) -> None:
    study.set_user_attr(REMEASURED, dict(figures))


def graph_latency(study: Any, key: str) -> dict[str, Any] | None:
    """The stored latency of the graph `key` (`graphs.graph_key`); None when the study has not timed it yet."""
    return study.user_attrs.get(GRAPH_LATENCY_PREFIX + key)


def set_graph_latency(study: Any, key: str, figures: Mapping[str, Any]) -> None:
    study.set_user_attr(GRAPH_LATENCY_PREFIX + key, dict(figures))


def graph_latencies(study: Any) -> dict[str, dict[str, Any]]:
    """Graph key -> its stored latency, for every graph the study has timed."""
    return {k[len(GRAPH_LATENCY_PREFIX):]: v for k, v in study.user_attrs.items() if k.startswith(GRAPH_LATENCY_PREFIX)}


def set_finetune_recipe(study: Any, recipe: Mapping[str, Any]) -> None:
    study.set_user_attr(FINETUNE_RECIPE, dict(recipe))


def copy_study_attrs(src: Any, dst: Any) -> None:
    """Every study attr of `src` but its base record onto `dst` (retarget writes its own base)."""
    for key, value in src.user_attrs.items():
        if key != BaseRecord.ATTR:
            dst.set_user_attr(key, value)


@dataclass(frozen=True)
class _Record:
    """Figures the base and every trial share: accuracy from ONNX Runtime, latency from a target, size."""

    accuracy: float
    latency_ms: float
    size_mb: float
    val_correct: int | None = None
    val_total: int | None = None
    test_accuracy: float | None = None
    latency_p90_ms: float | None = None
    latency_cv: float | None = None
    latency_source: str | None = None
    latency_expected_error_pct: float | None = None
    threads: int | None = None
    batch_size: int | None = None
    load_avg_1min: float | None = None
    busy_host: str | None = None  # why its latency was timed on a busy host, else None (re-measure: `remeasure`)
    usd_per_million_inferences: float | None = None
    macs: int | None = None
    params: int | None = None
    sequence_length: int | None = None  # tokens per sample of a sequence model; None for images and tables
    # a generation file's timing (latency_ms is then ms per decoded token): prefill_ms, ttft_ms,
    # decode_tokens_per_s, prompt_tokens, new_tokens; None for every other file
    generation: Mapping[str, Any] | None = None
    # `accuracy` is the task's score, higher is better: top-1 accuracy, or e.g. -RMSE for a regression
    extra: Mapping[str, Any] = field(default_factory=dict)
    schema: int = SCHEMA

    @staticmethod
    def measured(meas: Any) -> dict[str, Any]:
        """The shared fields of an `evaluate.Measurement`."""
        return {name: getattr(meas, name) for name in _MEASURED}

    @staticmethod
    def latency_fields(lat: Any) -> dict[str, Any]:
        """The latency fields of a `LatencyEstimate` (the one place they are named)."""
        return {"latency_ms": lat.p50_ms, "latency_p90_ms": lat.p90_ms, "latency_cv": lat.cv,
                "latency_source": lat.source, "latency_expected_error_pct": lat.expected_error_pct,
                "threads": lat.threads, "batch_size": lat.batch_size,
                "load_avg_1min": lat.details.get("load_avg_1min"), "busy_host": lat.details.get("busy"),
                "usd_per_million_inferences": lat.usd_per_million_inferences, "generation": generation_fields(lat)}

    def to_attrs(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in out.items()}
        out["schema"] = SCHEMA
        return {**dict(self.extra), **out}

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> Self:
        names = {f.name for f in dataclasses.fields(cls)} - {"extra", "schema"}
        known = {k: attrs[k] for k in names if k in attrs}
        extra = {k: v for k, v in attrs.items() if k not in names and k not in _BOOKKEEPING}
        return cls(**known, extra=extra, schema=int(attrs.get("schema", 1)))

    def get(self, name: str, default: Any = None) -> Any:
        """A field, or an `extra` entry, by name."""
        if name in {f.name for f in dataclasses.fields(self)}:
            return getattr(self, name)
        return self.extra.get(name, default)


_MEASURED = ("accuracy", "latency_ms", "size_mb", "val_correct", "val_total", "test_accuracy", "latency_p90_ms",
             "latency_cv", "latency_source", "latency_expected_error_pct", "threads", "batch_size",
             "load_avg_1min", "busy_host", "usd_per_million_inferences", "generation")


@dataclass(frozen=True)
class BaseRecord(_Record):
    """The unpruned FP32 model, measured once per study (study user attr `base`)."""

    onnx_artifact_id: str | None = None
    target: Mapping[str, Any] | str | None = None
    workload: str | None = None
    family: str | None = None  # 'CNN', 'RNN (LSTM)', 'Transformer', ... (workloads.model_family); None: older study
    workload_info: Mapping[str, Any] = field(default_factory=dict)
    inputs: Sequence[Mapping[str, Any]] = ()  # the graph's inputs: [{name, dtype, shape (per sample)}]
    sample_inputs_artifact_id: str | None = None  # the validation samples every latency was timed on (.npz)
    task: Mapping[str, Any] | None = None  # `Task.describe()`: name, metric, direction, drop unit; None: classification
    # the base's export, evaluation and timing, in seconds: what every trial does at least (None: an older study)
    measure_seconds: float | None = None

    ATTR = "base"

    @classmethod
    def read(cls, study_attrs: Mapping[str, Any]) -> BaseRecord | None:
        attrs = study_attrs.get(cls.ATTR)
        return None if not attrs else cls.from_attrs(attrs)

    @classmethod
    def of(cls, study: Any) -> BaseRecord | None:
        """The study's base record; None before the search measured it."""
        return cls.read(study.user_attrs)

    def write(self, study: Any) -> None:
        study.set_user_attr(self.ATTR, self.to_attrs())

    def inputs_label(self) -> str | None:
        """The model's inputs in one line for cards and reports (None for studies that did not record them).

        Example:
            >>> BaseRecord(0.9, 1.0, 0.1, sequence_length=128, inputs=[
            ...     {"name": "input_ids", "dtype": "int64", "shape": [128]},
            ...     {"name": "attention_mask", "dtype": "int64", "shape": [128]}]).inputs_label()
            'input_ids int64 (128,), attention_mask int64 (128,); sequence length 128'
        """
        return inputs_label(self.inputs, self.sequence_length)


def inputs_label(inputs: Sequence[Mapping[str, Any]] | None, sequence_length: int | None) -> str | None:
    """`BaseRecord.inputs_label` from plain data (a `config.json`'s base entry)."""
    if not inputs:
        return None
    text = ", ".join(f"{i.get('name')} {i.get('dtype')} {tuple(i.get('shape') or ())}" for i in inputs)
    return text + (f"; sequence length {sequence_length}" if sequence_length else "")


@dataclass(frozen=True)
class TrialRecord(_Record):
    """One COMPLETE trial: its config and everything measured on its exported file."""

    config: Mapping[str, Any] = field(default_factory=dict)
    accuracy_drop_pts: float | None = None  # classification only: (base - accuracy) * 100
    metric_drop: float | None = None  # any task: how much worse than the base, in the task's unit (> 0: worse)
    speedup: float | None = None
    size_ratio: float | None = None
    slower_than_base: bool | None = None
    macs_ratio: float | None = None
    params_ratio: float | None = None
    weight_sparsity: float | None = None
    finetune_seconds: float | None = None  # this trial's training (reused epochs excluded)
    finetune_seconds_total: float | None = None  # reused epochs' recorded seconds + this trial's
    finetune_epochs_reused: int | None = None
    finetune_subset: int | None = None
    finetune_samples: int | None = None
    bn_batches: int | None = None
    compress_seconds: float | None = None
    quantization_aware: bool | None = None
    exporter: str | None = None
    quantization_route: Mapping[str, Any] | None = None  # `QuantizationRoute.as_dict()`; None before routes were kept
    inputs: Sequence[Mapping[str, Any]] = ()  # what this file takes [{name, dtype, shape}]; () before: the base's
    seed: int | None = None
    versions: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def build(cls, candidate: Any, meas: Any, base: BaseRecord, *, seed: int,
              versions: Mapping[str, str], task: Task | None = None) -> TrialRecord:
        """The record of a trial from its Candidate and Measurement, relative to the base (`task`: the workload's,
        default classification)."""
        c = candidate
        task = task or get_task(None)
        drop = task.drop(base.accuracy, meas.accuracy)
        return cls(
            **cls.measured(meas), macs=c.macs, params=c.params, config=c.config.as_dict(),
            accuracy_drop_pts=drop if task.name == "classification" else None, metric_drop=drop,
            macs_ratio=c.macs_ratio,
            params_ratio=c.params_ratio, weight_sparsity=c.weight_sparsity, finetune_seconds=c.finetune_seconds,
            finetune_seconds_total=c.finetune_seconds_total, finetune_epochs_reused=c.finetune_epochs_reused,
            finetune_subset=c.finetune_subset, finetune_samples=c.finetune_samples, bn_batches=c.bn_batches,
            compress_seconds=c.compress_seconds, quantization_aware=c.quantization_aware, exporter=c.exporter,
            quantization_route=c.quantization, inputs=[dict(i) for i in c.inputs],
            seed=seed, versions=dict(versions), sequence_length=base.sequence_length,
            **_relative(meas.latency_ms, meas.size_mb, base),
        )

    def with_latency(self, lat: Any, base: BaseRecord) -> TrialRecord:
        """The same record with latency (and price) re-scored on another target (see `retarget`)."""
        fields = self.latency_fields(lat)
        return dataclasses.replace(self, **fields, **_relative(fields["latency_ms"], self.size_mb, base))

    @classmethod
    def of(cls, trial: Any) -> TrialRecord:
        """The record a trial stored (read from its attrs)."""
        return cls.from_attrs(trial.user_attrs)

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> TrialRecord:
        rec = super().from_attrs(attrs)
        return dataclasses.replace(rec, config=read_config(attrs) or {})

    def to_attrs(self) -> dict[str, Any]:
        return {**super().to_attrs(), CONFIG: {k: self.config.get(k) for k in KNOB_NAMES}}


def _relative(latency_ms: float, size_mb: float, base: BaseRecord) -> dict[str, Any]:
    return {"speedup": base.latency_ms / latency_ms, "size_ratio": size_mb / base.size_mb,
            "slower_than_base": latency_ms > 0.95 * base.latency_ms}


@dataclass(frozen=True)
class ConstraintLayout:
    """How a study stores its constraint values: the same names on every trial, so that no sampler sees two
    sets (Optuna 5.1's GPSampler fails every trial when names differ; every sampler sums or models each name).

    A study this version creates writes Optuna's list form only (system attr `constraints`: optuna-dashboard
    reads it, Optuna reads its values as names `"0"`, `"1"`, ...) and keeps what each position means in the
    study user attr `constraint_layout`. Studies written before (schema 1 and 2) carry the list *and* the same
    values by name (`set_constraint`), which Optuna 5.1 reads as both sets of names; resumed, they go on writing
    both, under the names they already have, so their old and new trials look alike to a sampler.

    Example:
        >>> layout = ConstraintLayout(("max_accuracy_drop_pts", DOMINATED))
        >>> layout.system_attrs({"max_accuracy_drop_pts": -1.5, DOMINATED: 1.0})
        {'constraints': [-1.5, 1.0]}
    """

    names: tuple[str, ...]  # this package's constraint names, in list order
    named: tuple[str, ...] = ()  # the `set_constraint` names an older study also wrote, in the same order

    @classmethod
    def fresh(cls, names: Sequence[str]) -> ConstraintLayout:
        return cls(tuple(names))

    @classmethod
    def stored(cls, study: Any) -> ConstraintLayout | None:
        """The layout the study recorded, else the one its first COMPLETE trial shows (older studies), else None
        (a study with no COMPLETE trial yet)."""
        attr = study.user_attrs.get(CONSTRAINT_LAYOUT)
        if isinstance(attr, Mapping):
            return cls(tuple(attr.get("names", ())), tuple(attr.get("named", ())))
        done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
        return cls.infer(done[0].system_attrs) if done else None

    @classmethod
    def infer(cls, system_attrs: Mapping[str, Any]) -> ConstraintLayout:
        """The layout of a trial written before layouts were recorded: its names (schema-1 names renamed), in the
        order of its list, which this package always wrote in `CONSTRAINTS` order with `DOMINATED` last."""
        named = [k[len(_CONSTRAINT_PREFIX):] for k in system_attrs if k.startswith(_CONSTRAINT_PREFIX)]
        listed = list(system_attrs.get(_CONSTRAINTS_LIST) or ())
        known = (*CONSTRAINTS, DOMINATED)
        ours = {n: _LEGACY_CONSTRAINT_NAMES.get(n, n) for n in named}
        unknown = sorted(n for n, o in ours.items() if o not in known)
        if unknown or (listed and named and len(listed) != len(named)) or (listed and not named):
            raise ConfigError("study", f"constraints {sorted(named) or len(listed)}",
                              "were not written by lepton-search (unknown names or counts); start a new study")
        named.sort(key=lambda n: known.index(ours[n]))
        return cls(tuple(ours[n] for n in named), tuple(named) if named else ())

    def system_attrs(self, values: Mapping[str, float]) -> dict[str, Any]:
        """The trial system attrs that store `values` (this package's name -> value) in this layout."""
        if not self.names:
            return {}
        row = [float(values[n]) for n in self.names]
        return {_CONSTRAINTS_LIST: row, **{_CONSTRAINT_PREFIX + n: v for n, v in zip(self.named, row)}}

    def write(self, trial: Any, values: Mapping[str, float]) -> None:
        """Store `values` on a running trial (`values` must name every constraint of the layout)."""
        # Optuna 5.1's public `Trial.set_constraint` writes the named form only; the list form is a system attr,
        # written through the trial's public storage.
        trial_id = _trial_id(trial)
        for key, value in self.system_attrs(values).items():
            trial.storage.set_trial_system_attr(trial_id, key, value)

    def read(self, trial: Any) -> dict[str, float]:
        """This package's name -> value on a finished trial ({} when it has none)."""
        attrs = trial.system_attrs
        listed = attrs.get(_CONSTRAINTS_LIST)
        if listed is not None and len(listed) == len(self.names):
            return dict(zip(self.names, listed))
        return {_LEGACY_CONSTRAINT_NAMES.get(n, n): v for n, v in trial.constraints.items()}

    def record(self, study: Any) -> None:
        study.set_user_attr(CONSTRAINT_LAYOUT, {"names": list(self.names), "named": list(self.named)})


def constraint_layout(study: Any, names: Sequence[str]) -> ConstraintLayout:
    """The layout a run writes new trials in, recorded on the study: the stored one when the study has one,
    else `names` (the constraints the space and the early-rejection rule set). A stored layout must not need a
    constraint the space no longer sets (the space check refuses such resumes first; this is the backstop)."""
    layout = ConstraintLayout.stored(study) or ConstraintLayout.fresh(names)
    missing = [n for n in layout.names if n not in names and n != DOMINATED]
    if missing:
        raise ConfigError("study", study.study_name, f"its trials carry constraints {missing} this space does not "
                          "set; resume with the space it was created with, or start a new study")
    if CONSTRAINT_LAYOUT not in study.user_attrs:
        layout.record(study)
    return layout


def trial_constraints(study: Any, trial: Any) -> dict[str, float]:
    """This package's constraint name -> value on a finished trial of `study`, whatever layout it has."""
    layout = ConstraintLayout.stored(study)
    return layout.read(trial) if layout is not None else {}
