"""Real `lepton-search worker` processes on a real PostgreSQL server (a throwaway cluster on 127.0.0.1).

In CI (`CI=true`) these tests fail, not skip, when the server or the driver is missing.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest

from lepton_search.cli import main
from lepton_search.records import TrialRecord
from lepton_search.testing.postgres import pg_bin_dir, throwaway_cluster
from lepton_search.workers import TRIAL_DELAY_ENV

pytestmark = pytest.mark.slow  # a PostgreSQL cluster and real worker processes (~80 s)

LEPTON = Path(sys.executable).with_name("lepton-search")
DONE = optuna.trial.TrialState.COMPLETE
FAST_SPACE = """\
knobs:
  prune_ratio: {low: 0.0, high: 0.5, step: 0.1}
  bits: [32, 16, 8]
  finetune_epochs: {low: 0, high: 0}
constraints: {max_accuracy_drop_pts: 50}  # holds: here to give every trial a constraint beside the rule's
trials: 8
"""
SLOW_SPACE = FAST_SPACE.replace("{low: 0, high: 0}", "{low: 0, high: 2}")
# Two pruned models, each fine-tuned for 1, 2 or 3 epochs: 8 configs, 3 of each model's share its checkpoints.
# Early rejection off: a rejected config trains nothing, and every config here should get the chance to.
CHAIN_SPACE = """\
knobs:
  prune_ratio: {low: 0.25, high: 0.5, step: 0.25}
  bits: [32]
  finetune_epochs: {low: 0, high: 3}
early_reject: off
trials: 8
finetune: {subset_size: all, batch_size: 8, bn_batches: 4, calibration_size: 16}  # ~1 s an epoch: a window
"""


def _missing(why: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{why}; CI must run the PostgreSQL tests (make system-deps installs the server)")
    pytest.skip(why)


@pytest.fixture(scope="session")
def pg_url():
    if pg_bin_dir() is None:
        _missing("PostgreSQL server not installed: apt-get install -y postgresql")
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        _missing("psycopg2 not installed: pip install psycopg2-binary (in the dev extra)")
    with throwaway_cluster() as url:
        yield url


@pytest.fixture()
def worker_env(tmp_path):
    """Workers get an empty model cache: if one trained a base model, a file would appear there."""
    cache = tmp_path / "worker_cache"
    cache.mkdir()
    env = {**os.environ, "LEPTON_SEARCH_CACHE": str(cache), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return env, cache


def _init(url: str, study: str, space: str, tmp_path: Path) -> Path:
    (tmp_path / "space.yaml").write_text(space)
    art = tmp_path / "artifacts"
    assert main(["init", str(tmp_path / "space.yaml"), "--storage", url, "--study", study,
                 "--workload", "digits-mlp", "--artifacts", str(art)]) == 0
    return art


def _worker(url: str, study: str, env: dict, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([str(LEPTON), "worker", "--storage", url, "--study", study, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def _completed_by(output: str) -> list[int]:
    match = re.search(r"worker: completed trials \[([\d, ]*)\]", output)
    assert match, output[-2000:]
    return [int(n) for n in match.group(1).split(",") if n.strip()]


def test_four_workers_finish_exactly_4xN_trials_with_one_base_model(pg_url, tmp_path, worker_env):
    env, cache = worker_env
    n = 2
    art = _init(pg_url, "four", FAST_SPACE, tmp_path)
    procs = [_worker(pg_url, "four", env, "--trials", str(n)) for _ in range(4)]  # artifacts: the one init used
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, "\n".join(o[-1500:] for o in outputs)

    trials = optuna.load_study(study_name="four", storage=pg_url).get_trials()
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(len(trials)))  # no duplicate, no gap
    complete = [t for t in trials if t.state == DONE]
    assert len(complete) == 4 * n
    per_worker = [_completed_by(o) for o in outputs]
    assert all(len(done) == n for done in per_worker)
    assert sorted(n for done in per_worker for n in done) == sorted(t.number for t in complete)  # none lost, none counted twice
    assert len({tuple(t.user_attrs["config"].values()) for t in complete}) == 4 * n  # no config evaluated twice
    # four processes, one set of constraint names (the budget's and the rejection rule's, in Optuna's list form)
    assert {frozenset(t.constraints) for t in complete} == {frozenset({"0", "1"})}
    assert not [t for t in trials if t.state in (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)]
    for t in complete:
        assert (art / t.user_attrs["onnx_artifact_id"]).is_file()
    # One base model: made by init (ONNX + state_dict + the sample inputs latency is timed on), loaded by every
    # worker, trained by none.
    study = optuna.load_study(study_name="four", storage=pg_url)
    assert len(optuna.artifacts.get_all_artifact_meta(study)) == 3
    for out in outputs:
        assert "weights from the study's base artifact" in out and "training once" not in out
    assert not list(cache.iterdir())


def test_sigkilled_worker_trial_is_retried_with_identical_params(pg_url, tmp_path, worker_env):
    env, _ = worker_env
    heartbeat = ["--heartbeat-interval", "1", "--grace-period", "4"]
    _init(pg_url, "kill", SLOW_SPACE, tmp_path)
    # Each trial of the first worker holds 4 s after its start line: the kill lands mid-trial.
    first = _worker(pg_url, "kill", {**env, TRIAL_DELAY_ENV: "4"}, "--trials", "3", *heartbeat)
    watchdog = threading.Timer(240, first.kill)
    watchdog.start()
    killed, seen_complete, log = None, False, []
    for line in first.stdout:
        log.append(line)
        seen_complete = seen_complete or re.search(r"trial \d+ complete", line) is not None
        started = re.search(r"trial (\d+) start", line)
        if seen_complete and started:
            killed = int(started.group(1))
            time.sleep(1.5)  # by now the trial's heartbeat thread has stored a heartbeat
            first.send_signal(signal.SIGKILL)
            break
    first.wait(timeout=60)
    watchdog.cancel()
    assert killed is not None, "".join(log)[-2000:]

    study = optuna.load_study(study_name="kill", storage=pg_url)
    by_number = {t.number: t for t in study.get_trials()}
    assert by_number[killed].state == optuna.trial.TrialState.RUNNING  # killed mid-trial, stale now
    assert by_number[killed].params  # its knobs were sampled before the kill
    before = {t.number: (t.params, t.values, t.user_attrs, t.datetime_complete)
              for t in by_number.values() if t.state == DONE}
    assert len(before) == 1
    time.sleep(5)  # > grace period

    second = _worker(pg_url, "kill", env, "--trials", "2", *heartbeat)
    out = second.communicate(timeout=240)[0]
    assert second.returncode == 0, out[-2000:]
    assert f"(retry of {killed})" in out

    trials = study.get_trials()
    by_number = {t.number: t for t in trials}
    assert by_number[killed].state == optuna.trial.TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retries) == 1 and retries[0].state == DONE
    assert retries[0].params == by_number[killed].params
    after = {t.number: (t.params, t.values, t.user_attrs, t.datetime_complete) for t in trials if t.number in before}
    assert after == before  # earlier completed trials intact
    assert sum(t.state == DONE for t in trials) == 3
    assert not [t for t in trials if t.state in (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)]


def test_two_workers_share_checkpoints_and_never_train_an_epoch_twice(pg_url, tmp_path, worker_env):
    """Each trial trains the epochs (reused, finetune_epochs] of its pruned model's chain; across both workers
    those intervals never overlap and together cover the chain's deepest trial (a second worker on the same
    model waits on the checkpoint lock, then resumes from what the first stored)."""
    env, _ = worker_env
    art = _init(pg_url, "chains", CHAIN_SPACE, tmp_path)
    queue = optuna.load_study(study_name="chains", storage=pg_url)
    for epochs in (3, 2):  # each worker's first trial, on one pruned model at once: the lock is what keeps them apart
        queue.enqueue_trial({"prune_ratio": 0.25, "finetune_epochs": epochs})
    procs = [_worker(pg_url, "chains", env, "--trials", "4") for _ in range(2)]
    try:
        outputs = [p.communicate(timeout=600)[0] for p in procs]
    finally:  # a timeout must not leave workers behind
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-1500:] for o in outputs)
    assert all(len(_completed_by(o)) == 4 for o in outputs)  # both workers completed trials

    complete = optuna.load_study(study_name="chains", storage=pg_url).get_trials(states=(DONE,))
    assert len(complete) == 8  # the whole grid
    chains: dict[tuple, list[tuple[int, int]]] = {}
    for t in complete:
        rec = TrialRecord.from_attrs(t.user_attrs)
        epochs, reused = rec.config["finetune_epochs"], rec.finetune_epochs_reused
        assert 0 <= reused <= epochs
        model = tuple((k, v) for k, v in rec.config.items() if k != "finetune_epochs")
        if epochs > reused:
            chains.setdefault(model, []).append((reused, epochs))  # trained the epochs (reused, epochs]
    assert len(chains) == 2
    for model, trained in chains.items():
        trained.sort()
        for (_, end), (start, _) in itertools.pairwise(trained):
            assert end <= start, f"{dict(model)}: epochs trained twice, intervals {trained}"
        assert trained[0][0] == 0 and trained[-1][1] == 3 and sum(b - a for a, b in trained) == 3, trained
    reused = [TrialRecord.from_attrs(t.user_attrs).finetune_epochs_reused for t in complete]
    assert max(reused) > 0  # 3 trials per model and 3 epochs in all: at least one resumed
    # The checkpoints sit in the one artifact folder both workers were given by init: one key per pruned model.
    keys = sorted(p for p in (art / "checkpoints").iterdir() if p.is_dir())
    assert len(keys) == 2
    for key in keys:
        assert sorted(p.name for p in key.glob("epoch*.pt")) == ["epoch1.pt", "epoch2.pt", "epoch3.pt"]
