"""Library errors of init / worker name the API parameter (`study_name`), not the CLI flag (`--study`)."""

from __future__ import annotations

import pytest

from lepton_search.errors import ConfigError
from lepton_search.space import SearchSpace
from lepton_search.storage import open_artifact_store, open_storage
from lepton_search.workers import WorkloadSpec, init_study, join_study, run_worker


def _field(call) -> str:
    with pytest.raises(ConfigError) as err:
        call()
    assert "--" not in err.value.field
    return err.value.field


def test_init_and_worker_errors_name_api_parameters(sqlite_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _field(lambda: init_study(sqlite_url, "../x", SearchSpace(), workload="digits-mlp")) == "study_name"
    assert _field(lambda: WorkloadSpec("digits-mpl").check()) == "workload"
    assert _field(lambda: run_worker(sqlite_url, "s", n_trials=0)) == "n_trials"
    assert _field(lambda: join_study(open_storage(sqlite_url), sqlite_url, "nope")) == "study_name"
    assert _field(lambda: open_artifact_store("../elsewhere", sqlite_url)) == "artifacts"
    assert _field(lambda: open_artifact_store("s3://bucket/prefix", sqlite_url)) == "artifacts"
