"""StudyFrame: a stored study read back as typed records and DataFrames (no plots, no exports)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Self

import optuna
import pandas as pd

from lepton_search import records
from lepton_search.errors import ConfigError, did_you_mean
from lepton_search.records import REMEASURED, BaseRecord, TrialRecord
from lepton_search.results.pareto import non_dominated
from lepton_search.space import KNOB_NAMES
from lepton_search.storage import TrialFiles, artifact_store_for
from lepton_search.tasks import Task, stored_task

KNOBS = KNOB_NAMES
METRICS = ("accuracy", "accuracy_drop_pts", "metric_drop", "latency_ms", "latency_p90_ms", "size_mb", "speedup",
           "macs_ratio", "finetune_seconds", "latency_source", "slower_than_base", "latency_expected_error_pct",
           "usd_per_million_inferences", "busy_host")
REMEASURED_COLUMNS = ("latency_ms_remeasured", "speedup_remeasured")


def columns() -> tuple[str, ...]:
    """The columns of `trials()`, read when called: a knob registered after import has its column too."""
    return ("number", "state", *KNOBS, *METRICS, *REMEASURED_COLUMNS, "feasible", "rejected", "duplicate_of",
            "fail_reason")


COLUMNS = columns()  # the built-in knobs' columns (`columns()` follows the table)
__all__ = ["COLUMNS", "KNOBS", "METRICS", "REMEASURED", "REMEASURED_COLUMNS", "StudyFrame", "columns"]


class StudyFrame:
    """Read-only view of a study's trials. `SearchResult` adds picking, plots and exports on top."""

    def __init__(self, study: optuna.Study, artifact_store: Any) -> None:
        self.study = study
        self.files = TrialFiles.of(artifact_store)  # the study's files (any Optuna artifact store)
        self.artifact_store = self.files  # the name older code reads; it takes Optuna's artifact protocol too

    @classmethod
    def open(cls, storage: str, study_name: str, *, artifacts: str | Path | None = None) -> Self:
        """Open a stored study for reading; one-line errors for an unreachable storage or an unknown name."""
        try:
            names = optuna.get_all_study_names(storage=storage)
        except Exception as exc:  # noqa: BLE001 - SQLAlchemy / driver errors
            raise ConfigError("storage", storage, f"cannot open it ({type(exc).__name__})") from None
        if study_name not in names:
            raise ConfigError("study_name", study_name, f"no such study in {storage}; {did_you_mean(study_name, names)}")
        study = optuna.load_study(study_name=study_name, storage=storage)
        return cls(study, artifact_store_for(storage, artifacts))

    @property
    def base(self) -> BaseRecord | None:
        """The base model's record; None before the search measured it."""
        return BaseRecord.of(self.study)

    @property
    def task(self) -> Task:
        """What the study's scores mean (classification for studies stored before tasks were)."""
        base = self.base
        return stored_task(None if base is None else base.task)

    @property
    def objectives(self) -> list[str]:
        # the space's names (columns of trials()); the dashboard's metric names may name the task's score instead
        space = records.study_space(self.study) or {}
        return list(space.get("objectives") or self.study.metric_names)

    def records(self) -> dict[int, TrialRecord]:
        """Trial number -> record, for every COMPLETE trial."""
        return {t.number: TrialRecord.of(t)
                for t in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))}

    def trials(self) -> pd.DataFrame:
        """Every trial: number, state, knobs (every knob, sampled or fixed), metrics, feasibility, rejected (why
        no training step ran), duplicate_of, fail_reason."""
        fixed = self._fixed_knobs()
        again = records.remeasured(self.study).get("trials", {})
        rows = []
        for t in self.study.get_trials(deepcopy=False):
            row: dict[str, Any] = {"number": t.number, "state": t.state.name}
            config = records.trial_config(t) or {}
            row.update({k: config.get(k, t.params.get(k, fixed.get(k))) for k in KNOBS})
            # Only a COMPLETE trial has its whole record: a running one (another worker's) is mid-write.
            done = t.state == optuna.trial.TrialState.COMPLETE and records.has_measurements(t)
            record = dataclasses.asdict(TrialRecord.of(t)) if done else {}
            row.update({k: record.get(k) for k in METRICS})
            if done and row["metric_drop"] is None:  # stored before metric_drop: a classifier's drop in points
                row["metric_drop"] = row["accuracy_drop_pts"]
            row["latency_ms_remeasured"] = again.get(str(t.number), {}).get("latency_ms")
            row["speedup_remeasured"] = again.get(str(t.number), {}).get("speedup")
            cons = t.constraints
            row["feasible"] = all(v <= 0 for v in cons.values()) if cons else True
            row["rejected"] = records.rejected(t)  # why no training step ran (a budget, a rule), else None
            row["duplicate_of"] = records.duplicate_of(t)
            row["fail_reason"] = records.fail_reason(t)
            rows.append(row)
        df = pd.DataFrame(rows, columns=list(columns()))
        task = self.task
        if task.metric not in df:  # the task's metric as a person reads it, beside the stored score (`accuracy`)
            df.insert(df.columns.get_loc("accuracy") + 1, task.metric,
                      [None if pd.isna(v) else task.display(v) for v in df["accuracy"]])
        return df

    def _fixed_knobs(self) -> dict[str, Any]:
        from lepton_search.space import SearchSpace

        stored = records.study_space(self.study)
        if not stored:
            return {}
        try:
            return SearchSpace.from_dict(stored, source="stored space").fixed_knobs()
        except ConfigError:
            return {}

    def candidates(self) -> pd.DataFrame:
        """COMPLETE, feasible trials, one row per distinct config (the first trial of each)."""
        df = self.trials()
        df = df[(df["state"] == "COMPLETE") & df["feasible"]]
        return df.drop_duplicates(subset=list(KNOBS), keep="first").reset_index(drop=True)

    def pareto(self) -> pd.DataFrame:
        """Non-dominated COMPLETE, feasible trials, one row per distinct config, sorted by latency."""
        df = self.candidates()
        if df.empty:
            return df
        directions = [d.name.lower() for d in self.study.directions]
        mask = non_dominated(df[self.objectives].to_numpy(dtype=float), directions)
        sort_key = "latency_ms" if "latency_ms" in df else self.objectives[0]
        return df[mask].sort_values(sort_key).reset_index(drop=True)

    def trial(self, number: int) -> optuna.trial.FrozenTrial:
        """The COMPLETE trial `number`; a one-line error when there is none."""
        trials = self.study.get_trials(deepcopy=False)
        match = [t for t in trials if t.number == number]
        if not match:
            raise ConfigError("trial", number, f"no such trial; this study has trials 0..{len(trials) - 1}")
        if match[0].state != optuna.trial.TrialState.COMPLETE:
            raise ConfigError("trial", number, f"is {match[0].state.name}; export a COMPLETE trial (see `report`)")
        return match[0]
