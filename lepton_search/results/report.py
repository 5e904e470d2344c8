"""Reports: compute the plot data first (`pareto_plot_data`), then draw it (`pareto_figure`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

from lepton_search.space import KNOB_NAMES, KNOBS

if TYPE_CHECKING:
    from lepton_search.results.frame import StudyFrame


def table_columns() -> list[str]:
    """The front table's columns, read when called (a knob registered after import is listed too)."""
    return ["number", *KNOB_NAMES, "accuracy", "accuracy_drop_pts", "latency_ms", "latency_p90_ms", "speedup",
            "latency_ms_remeasured", "speedup_remeasured", "slower_than_base", "size_mb", "finetune_seconds",
            "latency_source", "latency_expected_error_pct", "usd_per_million_inferences"]


TABLE_COLUMNS = table_columns()  # the built-in knobs' (`table_columns()` follows the table)


def pareto_plot_data(result: StudyFrame) -> dict[str, Any]:
    """Plain data for the Pareto plot: all complete trials, the front, the base point."""
    task = result.task
    trials = result.trials()
    complete = trials[trials["state"] == "COMPLETE"]
    front = result.pareto()
    base = {} if result.base is None else result.base.to_attrs()

    def shown(df: pd.DataFrame) -> pd.DataFrame:  # the metric as a person reads it (RMSE, not -RMSE)
        return df.assign(accuracy=[task.display(v) for v in df["accuracy"]])

    base_score = base.get("accuracy")
    return {
        "trials": shown(complete[["number", "accuracy", "latency_ms", "size_mb", *KNOB_NAMES, "feasible"]]),
        "front": shown(front[["number", "accuracy", "latency_ms", "size_mb", *KNOB_NAMES]]),
        "base": {"accuracy": None if base_score is None else task.display(base_score),
                 "latency_ms": base.get("latency_ms")},
        "metric": task.metric,
        "title": f"{result.study.study_name}: {task.metric} vs latency ({base.get('latency_source', 'measured')})",
    }


def pareto_figure(result: StudyFrame) -> Any:
    import plotly.graph_objects as go

    data = pareto_plot_data(result)
    fig = go.Figure()
    t = data["trials"]

    def hover(df: pd.DataFrame) -> list[str]:
        return [f"trial {r['number']}: " + ", ".join(f"{k} {r[k]}" for k in KNOB_NAMES) for _, r in df.iterrows()]

    for feasible, name, color in ((True, "trials", "#9aa5b1"), (False, "infeasible", "#e07a5f")):
        part = t[t["feasible"] == feasible]
        if len(part):
            fig.add_scatter(x=part["latency_ms"], y=part["accuracy"], mode="markers", name=name,
                            marker={"color": color, "size": 8}, text=hover(part), hoverinfo="text+x+y")
    f = data["front"]
    fig.add_scatter(x=f["latency_ms"], y=f["accuracy"], mode="lines+markers", name="Pareto front",
                    marker={"color": "#1f77b4", "size": 11}, line={"shape": "hv"}, text=hover(f), hoverinfo="text+x+y")
    if data["base"]["latency_ms"] is not None:
        fig.add_scatter(x=[data["base"]["latency_ms"]], y=[data["base"]["accuracy"]], mode="markers", name="base (FP32)",
                        marker={"symbol": "star", "size": 16, "color": "#2a9d8f"})
    fig.update_layout(title=data["title"], xaxis_title="latency p50 (ms)", yaxis_title=f"validation {data['metric']}",
                      template="plotly_white")
    return fig


def front_table(result: StudyFrame) -> str:
    """The front as a fixed-width text table, base first."""
    front = result.pareto()
    task = result.task
    base = {} if result.base is None else result.base.to_attrs()
    nan = float("nan")
    lines = [(f"base: {task.metric} {task.display(base.get('accuracy', nan)):.4f}  "
              f"latency p50 {base.get('latency_ms', nan):.3f} ms  "
              f"size {base.get('size_mb', nan):.3f} MB  ({base.get('latency_source', '?')})"
              + (f"  {base['family']}" if base.get("family") else ""))]
    inputs = None if result.base is None else result.base.inputs_label()
    if inputs:
        lines.append(f"inputs: {inputs}")
    if front.empty:
        return "\n".join([*lines, "no complete feasible trials yet"])
    cols = [c for c in table_columns() if c in front and front[c].notna().any() and not _idle_knob(c, front)]
    table = front[cols]
    if task.name != "classification":  # the task's metric and its drop in place of accuracy and points
        table = table.assign(accuracy=[task.display(v) for v in table["accuracy"]], metric_drop=front["metric_drop"])
        cols = [task.metric if c == "accuracy" else c for c in cols]
        cols.insert(cols.index(task.metric) + 1, f"{task.metric}_drop")
        table = table.rename(columns={"accuracy": task.metric, "metric_drop": f"{task.metric}_drop"})[cols]
    lines.append(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    busy = busy_note(result, front)
    return "\n".join([*lines, busy] if busy else lines)




def _idle_knob(column: str, front: Any) -> bool:
    """A knob column to leave out of the text table: a newer knob (seq_len, layers, embedding_*) at its no-op in
    every front row (a CNN's front does not need four columns of zeros and ones)."""
    if column not in KNOB_NAMES or KNOBS[column].shown == "always":
        return False
    return bool((front[column] == KNOBS[column].noop).all())


def busy_note(result: StudyFrame, front: Any) -> str | None:
    """One line when the base or a front point was timed on a busy host, saying how to time them again; None
    when none was, or when the front was re-measured since (its `*_remeasured` figures are interleaved)."""
    busy = front.loc[front["busy_host"].notna(), ["number", "busy_host"]] if "busy_host" in front else front[:0]
    base = None if result.base is None else result.base.busy_host
    if (busy.empty and base is None) or front["latency_ms_remeasured"].notna().all():
        return None
    which = [f"trial {int(n)} ({why})" for n, why in zip(busy["number"], busy["busy_host"])]
    which += [f"the base ({base})"] if base else []
    return (f"measured on a busy host: {'; '.join(which)}. Speed-ups may be off: re-measure on an idle host with "
            f"`lepton-search remeasure --study {result.study.study_name}` (or `result.remeasure()`).")
