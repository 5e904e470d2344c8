"""Reports: compute the plot data first (`pareto_plot_data`), then draw it (`pareto_figure`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from lepton_search.result import SearchResult

TABLE_COLUMNS = ["number", "prune_ratio", "bits", "finetune_epochs", "accuracy", "accuracy_drop_pts",
                 "latency_ms", "latency_p90_ms", "speedup", "slower_than_base", "size_mb", "finetune_seconds",
                 "latency_source", "latency_expected_error_pct", "usd_per_million_inferences"]


def pareto_plot_data(result: SearchResult) -> dict[str, Any]:
    """Plain data for the Pareto plot: all complete trials, the front, the base point."""
    trials = result.trials()
    complete = trials[trials["state"] == "COMPLETE"]
    front = result.pareto()
    base = result.base
    return {
        "trials": complete[["number", "accuracy", "latency_ms", "size_mb", "bits", "prune_ratio", "finetune_epochs", "feasible"]],
        "front": front[["number", "accuracy", "latency_ms", "size_mb", "bits", "prune_ratio", "finetune_epochs"]],
        "base": {"accuracy": base.get("accuracy"), "latency_ms": base.get("latency_ms")},
        "title": f"{result.study.study_name}: accuracy vs latency ({base.get('latency_source', 'measured')})",
    }


def pareto_figure(result: SearchResult) -> Any:
    import plotly.graph_objects as go

    data = pareto_plot_data(result)
    fig = go.Figure()
    t = data["trials"]

    def hover(df: pd.DataFrame) -> list[str]:
        return [f"trial {r.number}: prune {r.prune_ratio}, {int(r.bits)} bit, {int(r.finetune_epochs)} ep"
                for r in df.itertuples()]

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
    fig.update_layout(title=data["title"], xaxis_title="latency p50 (ms)", yaxis_title="validation accuracy",
                      template="plotly_white")
    return fig


def front_table(result: SearchResult) -> str:
    """The front as a fixed-width text table, base first."""
    front = result.pareto()
    base = result.base
    nan = float("nan")
    lines = [(f"base: accuracy {base.get('accuracy', nan):.4f}  latency p50 {base.get('latency_ms', nan):.3f} ms  "
              f"size {base.get('size_mb', nan):.3f} MB  ({base.get('latency_source', '?')})")]
    if front.empty:
        return "\n".join([*lines, "no complete feasible trials yet"])
    cols = [c for c in TABLE_COLUMNS if c in front and front[c].notna().any()]
    lines.append(front[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return "\n".join(lines)
