"""A self-contained HTML report (plotly.js inlined, no network needed to view it) and PNG export.

PNG goes through kaleido, which drives a Chromium. It uses the system browser (`BROWSER_PATH`, else
/usr/bin/chromium) and never downloads one.
"""

from __future__ import annotations

import html
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from lepton_search.errors import ConfigError
from lepton_search.records import inputs_label
from lepton_search.results import pick

if TYPE_CHECKING:
    from lepton_search.results.frame import StudyFrame

SYSTEM_CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;font-size:.9em;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f5f7}td:first-child,th:first-child{text-align:left}.muted{color:#777}"""


def report_data(result: StudyFrame) -> dict[str, Any]:
    """Plain data of the report: base, front, picks, hypervolume, trial counts, failures by reason."""
    from lepton_search.errors import LeptonError
    from lepton_search.results.report import table_columns

    trials = result.trials()
    front = result.pareto()
    picks: list[tuple[str, Any]] = [(label, str(found) if isinstance(found, LeptonError) else found)
                                    for label, found in pick.fastest_within(result)]
    if not front.empty:
        picks.append(("knee (balanced)", pick.knee(result)))
    failed = trials[trials["state"] == "FAIL"]
    return {
        "title": f"lepton-search report: {result.study.study_name}",
        "base": {} if result.base is None else result.base.to_attrs(),
        "front": front[[c for c in table_columns() if c in front]],
        "roles": pick.roles(result),
        "picks": picks,
        "hypervolume": pick.hypervolume(result) if result.base else None,
        "counts": trials["state"].value_counts().to_dict(),
        "infeasible": int(((trials["state"] == "COMPLETE") & ~trials["feasible"]).sum()),
        "failures": failed["fail_reason"].fillna("unknown").value_counts().to_dict(),
    }


def _table(df: pd.DataFrame) -> str:
    return df.to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0, na_rep="")


def render_html(result: StudyFrame) -> str:
    """The whole report as one HTML string."""
    data = report_data(result)
    fig = result.plot_pareto()
    plot = fig.to_html(full_html=False, include_plotlyjs=True, config={"displaylogo": False})
    e = html.escape
    base = data["base"]
    inputs = inputs_label(base.get("inputs"), base.get("sequence_length"))
    front = data["front"].copy()
    front.insert(1, "roles", [", ".join(data["roles"].get(int(n), [])) for n in front["number"]])
    pick_rows = "".join(
        f"<tr><td>{e(name)}</td><td>{e(p.label()) if hasattr(p, 'label') else '<span class=muted>' + e(p) + '</span>'}</td></tr>"
        for name, p in data["picks"])
    fail_rows = "".join(f"<tr><td>{e(str(r))}</td><td>{n}</td></tr>" for r, n in data["failures"].items())
    counts = ", ".join(f"{k.lower()} {v}" for k, v in sorted(data["counts"].items()))
    hv = "n/a" if data["hypervolume"] is None else f"{data['hypervolume']:.4g}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{e(data['title'])}</title><style>{_CSS}</style></head><body>
<h1>{e(data['title'])}</h1>
<p>Base (FP32): accuracy {base.get('accuracy', float('nan')):.4f}, latency p50 {base.get('latency_ms', float('nan')):.4g} ms,
size {base.get('size_mb', float('nan')):.4g} MB ({e(str(base.get('latency_source', '?')))}); workload
<code>{e(str(base.get('workload')))}</code>{' (' + e(str(base['family'])) + ')' if base.get('family') else ''}{'; inputs ' + e(inputs) if inputs else ''}.</p>
<p>Trials: {e(counts)}; {data['infeasible']} complete but infeasible. Hypervolume of the front: {hv}
<span class="muted">(accuracy points x ms, reference = base accuracy - allowed drop, base latency)</span>.</p>
{plot}
<h2>Recommended configs</h2><table><tr><th>question</th><th>answer</th></tr>{pick_rows}</table>
<h2>Pareto front</h2>{_table(front) if not front.empty else '<p>No complete feasible trial yet.</p>'}
<h2>Failures by reason</h2>{'<table><tr><th>reason</th><th>trials</th></tr>' + fail_rows + '</table>' if fail_rows else '<p>None.</p>'}
</body></html>
"""


def write_html(result: StudyFrame, path: str | Path) -> Path:
    """Write the report to `path` (a single file, viewable offline)."""
    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm"):
        raise ConfigError("--html", str(path), "give a file name ending in .html")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(result), encoding="utf-8")
    return path


def chromium_path() -> str:
    """The browser kaleido should drive: $BROWSER_PATH, else a system Chromium. Never downloads one."""
    env = os.environ.get("BROWSER_PATH")
    if env and Path(env).is_file():
        return env
    for candidate in (*SYSTEM_CHROMIUM, shutil.which("chromium") or ""):
        if candidate and Path(candidate).is_file():
            return candidate
    raise ConfigError("BROWSER_PATH", env, "PNG export needs Chromium: apt-get install -y chromium "
                                           "(or set BROWSER_PATH to a Chrome/Chromium binary)")


def save_png(fig: Any, path: str | Path, *, width: int = 900, height: int = 560, scale: float = 1.0) -> Path:
    """Write a plotly figure as PNG with kaleido driving the system Chromium (plotly.js from the local
    plotly package, MathJax off: nothing is fetched)."""
    try:
        import kaleido
    except ImportError:
        raise ConfigError("png", str(path), "needs kaleido: pip install kaleido") from None
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ConfigError("png", str(path), "give a file name ending in .png")
    fig_dict = fig.to_plotly_json() if hasattr(fig, "to_plotly_json") else fig
    png = kaleido.calc_fig_sync(fig_dict, opts={"format": "png", "width": width, "height": height, "scale": scale},
                                kopts={"path": chromium_path(), "mathjax": False})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    return path
