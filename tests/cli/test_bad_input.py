"""Bad-input corpus: every case exits 2 with one line naming field, value and fix; nothing stored changes.

One SQLite study (made by a real `run`) is shared by all cases; before and after each case we take
the database file's sha256, its trial count and the artifact folder's listing, and they must match.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import optuna
import pytest

from lepton_search.cli import main

GOOD_SPACE = """\
knobs:
  prune_ratio: {low: 0.0, high: 0.5, step: 0.25}
  bits: [32]
  finetune_epochs: {low: 0, high: 0}
trials: 1
"""
FILES = {
    "good.yaml": GOOD_SPACE,
    "malformed.yaml": "knobs: [unclosed\n  bits: 8\n",
    "unknown_key.yaml": "knobz:\n  bits: [8]\n",
    "bits.yaml": "knobs:\n  bits: [32, 6]\n",
    "ratio.yaml": "knobs:\n  prune_ratio: {low: 0.2, high: 1.0, step: 0.1}\n",
    "epochs.yaml": "knobs:\n  finetune_epochs: {low: -1, high: 2}\n",
    "runs.yaml": "latency:\n  runs: 5\n",
    "toplist.yaml": "- bits\n- 8\n",
    "other_space.yaml": GOOD_SPACE.replace("bits: [32]", "bits: [32, 8]"),
}

# id: (argv; {db}, {dir} are filled in), substrings the error line must contain
CASES: dict[str, tuple[list[str], list[str]]] = {
    "malformed-yaml": (["run", "{dir}/malformed.yaml", "--workload", "digits-mlp"], ["malformed.yaml line", "fix the YAML"]),
    "unknown-key": (["run", "{dir}/unknown_key.yaml", "--workload", "digits-mlp"], ["knobz", "did you mean 'knobs'"]),
    "unknown-bit-width": (["run", "{dir}/bits.yaml", "--workload", "digits-mlp"], ["bits", "6", "choose from"]),
    "prune-ratio-1": (["run", "{dir}/ratio.yaml", "--workload", "digits-mlp"], ["prune_ratio", "1.0", "< 1"]),
    "negative-epochs": (["run", "{dir}/epochs.yaml", "--workload", "digits-mlp"], ["finetune_epochs", "-1", "0 <= low"]),
    "too-few-latency-runs": (["run", "{dir}/runs.yaml", "--workload", "digits-mlp"], ["latency.runs", "5", "at least 20"]),
    "yaml-top-level-list": (["run", "{dir}/toplist.yaml", "--workload", "digits-mlp"], ["toplist.yaml", "mapping"]),
    "space-file-missing": (["run", "{dir}/nope.yaml", "--workload", "digits-mlp"], ["nope.yaml", "existing YAML"]),
    "empty-data": (["run", "{dir}/good.yaml", "--workload", "failing_workloads:empty_data"], ["workload.train", "0 samples"]),
    "wrong-example-shape": (["run", "{dir}/good.yaml", "--workload", "failing_workloads:wrong_input_shape"],
                            ["workload.example_input", "(1, 32)", "(64,)"]),
    "token-ids-int32": (["run", "{dir}/good.yaml", "--workload", "failing_workloads:token_ids_int32"],
                        ["workload.train inputs", "input_ids int32", "x.to(torch.int64)"]),
    "untraceable-model": (["run", "{dir}/good.yaml", "--workload", "failing_workloads:untraceable"],
                          ["model", "cannot be exported to ONNX", "special_i1e"]),
    "factory-not-importable": (["run", "{dir}/good.yaml", "--workload", "no_such_module:make"],
                               ["--workload", "no_such_module:make", "cannot be imported"]),
    "unknown-workload": (["run", "{dir}/good.yaml", "--workload", "digits-mpl"], ["workload", "digits-mpl", "did you mean 'digits-mlp'"]),
    "unknown-target": (["run", "{dir}/good.yaml", "--workload", "digits-mlp", "--target", "host-gpu"], ["target", "host-gpu", "did you mean"]),
    "trials-0": (["run", "{dir}/good.yaml", "--workload", "digits-mlp", "--trials", "0"], ["--trials", "0", ">= 1"]),
    "missing-dataset": (["run", "{dir}/good.yaml", "--data-dir", "{dir}/empty"], ["data_dir", "empty", "dataset-fashion-mnist"]),
    "unreachable-storage": (["run", "{dir}/good.yaml", "--workload", "digits-mlp", "--storage",
                             "postgresql+psycopg2://lepton:s3cret@127.0.0.1:1/lepton"], ["storage", "127.0.0.1:1", "cannot open"]),
    "wrong-storage-scheme": (["run", "{dir}/good.yaml", "--workload", "digits-mlp", "--storage", "mongodb://127.0.0.1/x"],
                             ["storage", "mongodb", "postgresql+psycopg2://"]),
    "storage-not-a-url": (["run", "{dir}/good.yaml", "--workload", "digits-mlp", "--storage", "study.db"], ["storage", "study.db", "sqlite:///"]),
    "existing-study-other-space": (["run", "{dir}/other_space.yaml", "--workload", "digits-mlp", "--study", "existing"],
                                   ["existing", "different search space", "new --study"]),
    "study-name-leaves-folder": (["run", "{dir}/good.yaml", "--workload", "digits-mlp", "--study", "../x"], ["study", "../x", "path separators"]),
    "export-out-leaves-folder": (["export", "--study", "existing", "--trial", "0", "--out", "../x"], ["--out", "../x", "absolute path"]),
    "init-artifacts-leave-folder": (["init", "{dir}/good.yaml", "--storage", "{db}", "--study", "fresh", "--workload", "digits-mlp",
                                     "--artifacts", "../elsewhere"], ["--artifacts", "../elsewhere", "inside"]),
    "init-study-name-leaves-folder": (["init", "{dir}/good.yaml", "--storage", "{db}", "--study", "a/../../b", "--workload", "digits-mlp"],
                                      ["--study", "a/../../b", "separators"]),
    "init-existing-study-other-space": (["init", "{dir}/other_space.yaml", "--storage", "{db}", "--study", "existing",
                                         "--workload", "digits-mlp"], ["existing", "different search space"]),
    "init-db-retries-0": (["init", "{dir}/good.yaml", "--storage", "{db}", "--study", "fresh", "--workload", "digits-mlp",
                           "--db-retries", "0"], ["--db-retries", "0", ">= 1"]),
    "init-unknown-workload": (["init", "{dir}/good.yaml", "--storage", "{db}", "--study", "fresh", "--workload", "digit-cnn"],
                              ["--workload", "digit-cnn", "did you mean 'digits-cnn'"]),
    "worker-unknown-study": (["worker", "--storage", "{db}", "--study", "existin"], ["--study", "existin", "did you mean 'existing'"]),
    "worker-study-not-initialised": (["worker", "--storage", "{db}", "--study", "existing"], ["--study", "existing", "lepton-search init"]),
    "worker-trials-0": (["worker", "--storage", "{db}", "--study", "existing", "--trials", "0"], ["--trials", "0", ">= 1"]),
    "worker-grace-below-heartbeat": (["worker", "--storage", "{db}", "--study", "existing", "--heartbeat-interval", "30",
                                      "--grace-period", "10"], ["--grace-period", "10", "exceed"]),
    "labels-beyond-classes": (["run", "{dir}/good.yaml", "--workload", "failing_workloads:labels_beyond_classes"],
                              ["workload.train labels", "0..6", "0..2"]),
    "float-labels": (["run", "{dir}/good.yaml", "--workload", "failing_workloads:float_labels"],
                     ["workload.train labels", "float32", "labels.long()"]),
    "nan-inputs": (["run", "{dir}/good.yaml", "--workload", "failing_workloads:nan_inputs"],
                   ["workload.val inputs", "NaN or inf", "#3"]),
    "fewer-labels-than-inputs": (["run", "{dir}/good.yaml", "--workload", "failing_workloads:fewer_labels"],
                                 ["workload.val", "80 inputs and 50 labels", "one label per input"]),
    "factory-raises": (["run", "{dir}/good.yaml", "--workload", "os:system"],
                       ["--workload", "os:system", "the factory raised TypeError"]),
    "unknown-sampler": (["run", "{dir}/good.yaml", "--workload", "digits-mlp", "--sampler", "gpp"],
                        ["--sampler", "gpp", "did you mean 'gp'"]),
    "export-unknown-trial": (["export", "--study", "existing", "--trial", "99", "--out", "exported"], ["trial", "99", "no such trial"]),
}


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A folder with a real study ('existing', one COMPLETE trial) in ./lepton_search.db, and the YAML files."""
    root = tmp_path_factory.mktemp("bad_input")
    for name, text in FILES.items():
        (root / name).write_text(text)
    (root / "empty").mkdir()
    mp = pytest.MonkeyPatch()
    mp.chdir(root)
    assert main(["run", "good.yaml", "--workload", "digits-mlp", "--study", "existing", "--trials", "1"]) == 0
    yield root
    mp.undo()


def fingerprint(root: Path) -> tuple[str, int, list[str]]:
    db = root / "lepton_search.db"
    trials = optuna.load_study(study_name="existing", storage=f"sqlite:///{db}").get_trials(deepcopy=False)
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    return hashlib.sha256(db.read_bytes()).hexdigest(), len(trials), files


def test_corpus_has_at_least_15_cases():
    assert len(CASES) >= 15


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_2_with_one_line_and_changes_nothing(case, stored, capfd, monkeypatch):
    monkeypatch.chdir(stored)
    argv, expected = CASES[case]
    argv = [a.format(dir=stored, db=f"sqlite:///{stored / 'lepton_search.db'}") for a in argv]
    before = fingerprint(stored)
    capfd.readouterr()

    assert main(argv) == 2

    out, err = capfd.readouterr()
    assert "Traceback" not in out + err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    message = errors[0]
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"
    assert "s3cret" not in out + err  # passwords never echoed
    assert fingerprint(stored) == before
    assert not (stored.parent / "x").exists() and not (stored.parent / "elsewhere").exists()
