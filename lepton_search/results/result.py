"""SearchResult: a study read back as DataFrames, plus picking, a Pareto plot and exports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lepton_search.results import pick
from lepton_search.results.frame import StudyFrame
from lepton_search.results.release import export_trial
from lepton_search.results.remeasure import remeasure_study
from lepton_search.results.report import pareto_figure


class SearchResult(StudyFrame):
    """What `search` and `load` return. Example: `load("sqlite:///lepton_search.db", "fashion-mnist-cnn").pareto()`."""

    def plot_pareto(self) -> Any:
        """Plotly figure: every complete trial, the front highlighted, the base model as a star."""
        return pareto_figure(self)

    def export(self, trial: int, out_dir: str | Path, *, workload: Any = None) -> Path:
        """Write `model.onnx`, `config.json` and `MODEL_CARD.md` of `trial`; re-check it in ORT when a
        `workload` is given. Returns the ONNX path (see `lepton_search.results.release.export_trial`)."""
        return export_trial(self, trial, out_dir, workload=workload)

    def recommend(self, *, max_accuracy_drop_pts: float | None = None, max_latency_ms: float | None = None,
                  max_size_mb: float | None = None, max_metric_drop: float | None = None) -> Any:
        """The fastest feasible config within every given limit (see `lepton_search.results.pick.recommend`);
        `max_metric_drop` limits any task's metric in its own unit (`max_accuracy_drop_pts`: classifiers)."""
        return pick.recommend(self, max_accuracy_drop_pts=max_accuracy_drop_pts, max_latency_ms=max_latency_ms,
                              max_size_mb=max_size_mb, max_metric_drop=max_metric_drop)

    def remeasure(self, target: Any = "host-cpu", *, repeats: int = 3) -> dict[str, Any] | None:
        """Time the base and every Pareto point again, interleaved, min of `repeats`, on `target` (default this
        host, with the study's timing settings); stored with the study and shown as `*_remeasured`. Run it on
        an idle host when trials were timed on a busy one (`busy_host`)."""
        return remeasure_study(self, target, repeats=repeats)

    def knee(self) -> Any:
        """The Pareto point nearest the ideal corner (see `lepton_search.results.pick.knee`)."""
        return pick.knee(self)

    def hypervolume(self, *, max_accuracy_drop_pts: float | None = None, max_metric_drop: float | None = None) -> float:
        """Hypervolume of the front against (base score - allowed drop, base latency)."""
        return pick.hypervolume(self, max_accuracy_drop_pts=max_accuracy_drop_pts, max_metric_drop=max_metric_drop)

    def roles(self) -> dict[int, list[str]]:
        """Pareto trial number -> its roles (fastest within 0.5/1/2 pt, knee, smallest)."""
        return pick.roles(self)
