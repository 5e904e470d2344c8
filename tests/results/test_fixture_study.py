"""A study written before the records (schema 1) loads, reports, exports and resumes with today's code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lepton_search import FinetuneSettings, SearchSpace, load, search
from lepton_search.records import SCHEMA, read_config
from lepton_search.results.report import front_table

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "v1_study"
# the fine-tune settings the fixture was stored with (the Python defaults before they followed default.yaml)
SPACE = SearchSpace(prune_ratio=(0.0, 0.5, 0.25), bits=(32, 8), finetune_epochs=(0, 1),
                    max_accuracy_drop_pts=3.0, trials=4, sampler="random",
                    finetune=FinetuneSettings(subset_size=8000, batch_size=128, lr=0.01, optimizer="sgd"))


@pytest.fixture()
def v1(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / "v1")
    return f"sqlite:///{tmp_path / 'v1' / 'study.db'}", tmp_path / "v1" / "artifacts"


def test_v1_study_loads_and_reports(v1):
    storage, artifacts = v1
    result = load(storage, "v1", artifacts=artifacts)
    assert result.base.schema == 1 and result.base.workload == "digits-mlp"
    trials = result.trials()
    complete = trials[trials.state == "COMPLETE"]
    assert len(complete) == 4
    assert complete[["prune_ratio", "bits", "finetune_epochs", "prune_method"]].notna().all().all()
    assert set(trials.loc[trials.state == "PRUNED", "duplicate_of"].dropna()) <= set(complete.number)
    front = result.pareto()
    assert len(front) >= 1 and front.latency_ms.is_monotonic_increasing
    table = front_table(result)
    assert "base: accuracy" in table
    header = table.splitlines()[1].split()  # the knobs it was run with; newer knobs, at their no-op, left out
    assert {"prune_ratio", "bits", "finetune_epochs"} <= set(header) and not {"seq_len", "layers"} & set(header)
    assert result.recommend(max_accuracy_drop_pts=3.0).trial in set(complete.number)


def test_v1_study_exports_and_rechecks(v1, digits_mlp, tmp_path):
    storage, artifacts = v1
    result = load(storage, "v1", artifacts=artifacts)
    number = int(result.pareto().number.iloc[0])
    result.export(number, tmp_path / "out", workload=digits_mlp)  # raises when the re-check fails
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["recheck"]["status"] == "passed"
    assert set(config["config"]) >= {"prune_ratio", "bits", "finetune_epochs", "prune_method"}
    assert "| prune_method |" in (tmp_path / "out" / "MODEL_CARD.md").read_text()


@pytest.mark.slow  # resumes with real trials (~18 s)
def test_v1_study_resumes_without_repeating_a_config(v1, digits_mlp):
    storage, artifacts = v1
    before = {t.number: read_config(t.user_attrs) for t in load(storage, "v1", artifacts=artifacts).study.trials
              if t.state.name == "COMPLETE"}
    result = search(digits_mlp, SPACE, n_trials=6, storage=storage, study_name="v1", artifacts=artifacts,
                    verbose=False)
    complete = [t for t in result.study.trials if t.state.name == "COMPLETE"]
    assert len(complete) == 6
    configs = [tuple(read_config(t.user_attrs).values()) for t in complete]
    assert len(set(configs)) == 6  # the new trials saw the old (positional) configs as taken
    new = [t for t in complete if t.number not in before]
    assert len(new) == 2 and all(t.user_attrs["schema"] == SCHEMA for t in new)
