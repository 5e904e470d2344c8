"""A timing taken on a busy host says so: on the trial's log line, in trials(), under the printed front and on
the model card, each with how to re-measure; `remeasure` (API and CLI) times the front again and the note goes."""

from __future__ import annotations

import json
import logging
import os

import torch
from torch import nn

from lepton_search import SearchSpace, load, search
from lepton_search.cli import main
from lepton_search.latency import LatencyEstimate, LatencyModel, host_cpu
from lepton_search.latency.host_cpu import HostCpuLatency, busy_reason, other_runnable
from lepton_search.results.report import front_table
from lepton_search.techniques.export import to_onnx

SPACE = SearchSpace(prune_ratio=(0.25, 0.5, 0.25), bits=(32,), finetune_epochs=(0, 0), trials=2, anchors="off",
                    early_reject="off")


class _Busy(LatencyModel):
    """Measured figures as a loaded host gives them: every timing flagged; `idle()` stops flagging."""

    name, source = "busy-host-cpu", "measured"

    def __init__(self) -> None:
        self.busy = "load average 4.1 on 2 cores"

    def latency(self, onnx_path, inputs=None):
        ms = 1.0 + (onnx_path.stat().st_size if hasattr(onnx_path, "stat") else 0) * 1e-7
        return LatencyEstimate(p50_ms=ms, p90_ms=ms, source=self.source, cv=0.01, threads=1,
                               details={"load_avg_1min": 4.1, "busy": self.busy})


def test_busy_reason_reads_other_tasks_and_the_spread(tmp_path):
    assert busy_reason(others=3, cv=0.02, max_cv=0.05, cores=2) == "3 runnable threads of other processes on 2 cores"
    assert busy_reason(others=1, cv=0.02, max_cv=0.05, cores=2) == "1 runnable thread of other processes on 2 cores"
    # the search's own fine-tuning leaves the 1-minute load at the core count: not a busy host while it times
    assert busy_reason(others=0, cv=0.02, max_cv=0.05, load_avg_1min=2.0, cores=2) is None
    assert busy_reason(others=None, cv=0.02, max_cv=0.05, load_avg_1min=4.1, cores=2) == "load average 4.1 on 2 cores"
    assert busy_reason(others=0, cv=0.12, max_cv=0.05, cores=16) == "timing spread cv 0.12 over twice the limit 0.05"
    assert busy_reason(others=0, cv=0.08, max_cv=0.05, cores=16) is None  # a small model's own noise
    # a /proc with this process (2 threads running), a worker in its process group (running), and another
    # process (1 thread running, 1 asleep)
    proc, mine = tmp_path / "proc", os.getpgrp()
    for pid, tid, state, group in ((os.getpid(), 1, "R", mine), (os.getpid(), 2, "R", mine), (88888, 5, "R", mine),
                                   (99999, 3, "R", 1), (99999, 4, "S", 1)):
        (proc / str(pid) / "task" / str(tid)).mkdir(parents=True)
        (proc / str(pid) / "task" / str(tid) / "stat").write_text(f"{tid} (py thon) {state} 1 {group} 3\n")
    assert other_runnable(proc) == 1  # this process's own threads and its process group do not count
    assert other_runnable(tmp_path / "missing") is None


def test_a_timing_whose_spread_stays_over_max_cv_is_flagged(tmp_path, monkeypatch):
    """The host's figures as the timing saw them: the fewest other runnable threads seen before and after the
    round (a task that came and went is not a load; one reading without /proc is none at all), the higher of
    the load averages before and after."""
    path = tmp_path / "m.onnx"
    to_onnx(nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4)).eval(), torch.randn(1, 64), path)
    for seen, others in (([3, 1], 1), ([2, None], None)):
        readings, loads = iter(seen), iter([(0.5, 0.0, 0.0), (1.5, 0.0, 0.0)])
        monkeypatch.setattr(host_cpu, "other_runnable", readings.__next__)
        monkeypatch.setattr(os, "getloadavg", loads.__next__)
        est = HostCpuLatency(runs=20, max_cv=0.0, max_repeats=1).latency(path)
        assert "timing spread cv" in est.details["busy"]
        assert (est.details["other_runnable"], est.details["load_avg_1min"]) == (others, 1.5)


def test_busy_timings_are_flagged_everywhere_until_remeasured(digits_mlp, sqlite_url, tmp_path, caplog):
    target = _Busy()
    with caplog.at_level(logging.INFO, logger="lepton_search"):
        result = search(digits_mlp, SPACE, target=target, n_trials=2, storage=sqlite_url, study_name="busy",
                        artifacts=tmp_path / "art", callbacks=None, remeasure=False, verbose=True)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("trial ") and " p50 " in r.getMessage()]
    assert len(lines) == 2 and all(line.endswith("[busy host: load average 4.1 on 2 cores]") for line in lines)
    complete = result.trials().query("state == 'COMPLETE'")
    assert (complete["busy_host"] == "load average 4.1 on 2 cores").all()
    assert result.base.busy_host == "load average 4.1 on 2 cores"
    note = front_table(result).splitlines()[-1]
    assert note.startswith("measured on a busy host: trial ") and "the base (load average 4.1 on 2 cores)" in note
    assert "`lepton-search remeasure --study busy`" in note
    number = int(result.pareto()["number"].iloc[0])
    card = result.export(number, tmp_path / "out").parent / "MODEL_CARD.md"
    assert "Measured on a busy host (this model: load average 4.1 on 2 cores; the base: load average 4.1" in \
        card.read_text()
    assert "lepton-search remeasure --study busy" in card.read_text()

    target.busy = None  # an idle host now
    again = result.remeasure(target)
    assert again is not None and set(again["trials"]) == {str(int(n)) for n in result.pareto()["number"]}
    assert "busy host" not in front_table(result)  # the front's figures are interleaved re-measurements now
    assert result.pareto()["latency_ms_remeasured"].notna().all()


def test_remeasure_command_times_a_stored_front_on_this_host(digits_mlp, sqlite_url, tmp_path, capsys):
    search(digits_mlp, SPACE, n_trials=2, storage=sqlite_url, study_name="s", artifacts=tmp_path / "art",
           callbacks=[], remeasure=False, verbose=False)
    assert load(sqlite_url, "s", artifacts=tmp_path / "art").pareto()["latency_ms_remeasured"].isna().all()
    capsys.readouterr()
    assert main(["remeasure", "--storage", sqlite_url, "--study", "s", "--repeats", "2",
                 "--artifacts", str(tmp_path / "art")]) == 0
    out = capsys.readouterr().out
    assert "re-measured the base and" in out and "min of 2 interleaved rounds" in out
    result = load(sqlite_url, "s", artifacts=tmp_path / "art")
    assert result.pareto()["latency_ms_remeasured"].notna().all()
    stored = result.study.user_attrs["front_remeasured"]
    assert stored["repeats"] == 2 and json.dumps(stored)  # stored with the study, plain JSON
