"""SearchResult: a finished (or running) study read back as DataFrames, a Pareto plot and exports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from lepton_search.errors import ConfigError
from lepton_search.pareto import non_dominated

KNOBS = ("prune_ratio", "bits", "finetune_epochs", "prune_method")
METRICS = ("accuracy", "accuracy_drop_pts", "latency_ms", "latency_p90_ms", "size_mb", "speedup",
           "macs_ratio", "finetune_seconds", "latency_source", "slower_than_base", "latency_expected_error_pct",
           "usd_per_million_inferences")


def artifact_store_for(storage: str, artifacts: str | Path | None = None) -> optuna.artifacts.FileSystemArtifactStore:
    """Artifacts live in `artifacts`, else beside a SQLite file (`<db>_artifacts/`), else `./lepton_artifacts`."""
    if artifacts is None:
        if storage.startswith("sqlite:///") and storage != "sqlite:///:memory:":
            db = Path(storage.removeprefix("sqlite:///"))
            artifacts = db.with_name(db.stem + "_artifacts")
        else:
            artifacts = Path("lepton_artifacts")
    path = Path(artifacts)
    path.mkdir(parents=True, exist_ok=True)
    return optuna.artifacts.FileSystemArtifactStore(str(path))


class SearchResult:
    """Read-only view of a study. Example: `load("sqlite:///lepton_search.db", "fashion-mnist-cnn").pareto()`."""

    def __init__(self, study: optuna.Study, artifact_store: Any) -> None:
        self.study = study
        self.artifact_store = artifact_store

    @property
    def base(self) -> dict:
        return self.study.user_attrs.get("base", {})

    @property
    def objectives(self) -> list[str]:
        return self.study.metric_names or self.study.user_attrs["space"]["objectives"]

    def trials(self) -> pd.DataFrame:
        """Every trial: number, state, knobs, metrics, feasibility, duplicate_of, fail_reason."""
        rows = []
        for t in self.study.get_trials(deepcopy=False):
            row: dict[str, Any] = {"number": t.number, "state": t.state.name}
            row.update({k: t.params.get(k, t.user_attrs.get(k)) for k in KNOBS})
            row.update({k: t.user_attrs.get(k) for k in METRICS})
            cons = t.constraints
            row["feasible"] = all(v <= 0 for v in cons.values()) if cons else True
            row["duplicate_of"] = t.user_attrs.get("duplicate_of")
            row["fail_reason"] = t.user_attrs.get("fail_reason")
            rows.append(row)
        return pd.DataFrame(rows, columns=["number", "state", *KNOBS, *METRICS, "feasible", "duplicate_of", "fail_reason"])

    def _fill_fixed_knobs(self, df: pd.DataFrame) -> pd.DataFrame:
        knobs = self.study.user_attrs.get("space", {}).get("knobs", {})
        if df["prune_ratio"].isna().any() and "prune_ratio" in knobs:
            df["prune_ratio"] = df["prune_ratio"].fillna(knobs["prune_ratio"]["low"])
        if df["bits"].isna().any() and knobs.get("bits"):
            df["bits"] = df["bits"].fillna(knobs["bits"][0])
        if df["finetune_epochs"].isna().any() and "finetune_epochs" in knobs:
            df["finetune_epochs"] = df["finetune_epochs"].fillna(knobs["finetune_epochs"]["low"])
        return df

    def pareto(self) -> pd.DataFrame:
        """Non-dominated COMPLETE, feasible trials, one row per distinct config, sorted by latency."""
        df = self._fill_fixed_knobs(self.trials())
        df = df[(df["state"] == "COMPLETE") & df["feasible"]]
        df = df.drop_duplicates(subset=list(KNOBS), keep="first")
        if df.empty:
            return df.reset_index(drop=True)
        directions = [d.name.lower() for d in self.study.directions]
        mask = non_dominated(df[self.objectives].to_numpy(dtype=float), directions)
        sort_key = "latency_ms" if "latency_ms" in df else self.objectives[0]
        return df[mask].sort_values(sort_key).reset_index(drop=True)

    def plot_pareto(self) -> Any:
        """Plotly figure: every complete trial, the front highlighted, the base model as a star."""
        from lepton_search.report import pareto_figure

        return pareto_figure(self)

    def export(self, trial: int, out_dir: str | Path, *, workload: Any = None) -> Path:
        """Write `model.onnx`, `config.json` and `MODEL_CARD.md` of `trial`; re-check it in ORT when a
        `workload` is given. Returns the ONNX path (see `lepton_search.release.export_trial`)."""
        from lepton_search.release import export_trial

        return export_trial(self, trial, out_dir, workload=workload)

    def recommend(self, *, max_accuracy_drop_pts: float | None = None, max_latency_ms: float | None = None,
                  max_size_mb: float | None = None) -> Any:
        """The fastest feasible config within every given limit (see `lepton_search.pick.recommend`)."""
        from lepton_search.pick import recommend

        return recommend(self, max_accuracy_drop_pts=max_accuracy_drop_pts, max_latency_ms=max_latency_ms,
                         max_size_mb=max_size_mb)

    def knee(self) -> Any:
        """The Pareto point nearest the ideal corner (see `lepton_search.pick.knee`)."""
        from lepton_search.pick import knee

        return knee(self)

    def hypervolume(self, *, max_accuracy_drop_pts: float | None = None) -> float:
        """Hypervolume of the front against (base accuracy - allowed drop, base latency)."""
        from lepton_search.pick import hypervolume

        return hypervolume(self, max_accuracy_drop_pts=max_accuracy_drop_pts)

    def roles(self) -> dict[int, list[str]]:
        """Pareto trial number -> its roles (fastest within 0.5/1/2 pt, knee, smallest)."""
        from lepton_search.pick import roles

        return roles(self)

    def _trial(self, number: int) -> optuna.trial.FrozenTrial:
        trials = self.study.get_trials(deepcopy=False)
        match = [t for t in trials if t.number == number]
        if not match:
            raise ConfigError("trial", number, f"no such trial; this study has trials 0..{len(trials) - 1}")
        if match[0].state != optuna.trial.TrialState.COMPLETE:
            raise ConfigError("trial", number, f"is {match[0].state.name}; export a COMPLETE trial (see `report`)")
        return match[0]


def load(storage: str, study_name: str, *, artifacts: str | Path | None = None) -> SearchResult:
    """Open a stored study for reading."""
    try:
        names = optuna.get_all_study_names(storage=storage)
    except Exception as exc:  # noqa: BLE001
        raise ConfigError("storage", storage, f"cannot open it ({type(exc).__name__})") from None
    if study_name not in names:
        from lepton_search.errors import did_you_mean

        raise ConfigError("study_name", study_name, f"no such study in {storage}; {did_you_mean(study_name, names)}")
    study = optuna.load_study(study_name=study_name, storage=storage)
    return SearchResult(study, artifact_store_for(storage, artifacts))
