"""Progress in a log file: a search whose stderr is a file (a job runner, CI, `2> log`) writes a line per stage
before its first trial ends, and none of the third-party chatter (ONNX Runtime's pre-processing hint, torch's
tracer and `_pytree` warnings, NNCF's bars)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
# Text that only third-party tools print; none of it may reach the user's stderr.
CHATTER = ("pre-processing before quantization", "Statistics collection", "Applying Fast Bias correction", "━",
           "WARNING:root", "INFO:nncf", "TracerWarning", "_pytree", "UserWarning", "DeprecationWarning",
           "FutureWarning", "No CUDA runtime")

SCRIPT = """
import sys
from lepton_search import FinetuneSettings, SearchSpace, search
from token_workload import token_workload
from lepton_search import workloads

settings = FinetuneSettings(subset_size=256, batch_size=32, bn_batches=2, calibration_size=16)
space = SearchSpace(prune_ratio=(0.25, 0.25, 0.25), bits=(8,), finetune_epochs=(1, 1), anchors="off",
                    early_reject="off", finetune=settings, trials=1)
for name, wl in (("mlp", workloads.get("digits-mlp")), ("tokens", token_workload())):
    search(wl, space, n_trials=1, storage=sys.argv[1], study_name=name, callbacks=[])
"""


@pytest.mark.slow
def test_a_search_logged_to_a_file_shows_stages_before_the_first_trial_ends(tmp_path):
    log = tmp_path / "search.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    with log.open("w") as stderr:  # not a terminal: no bars, a line per stage
        subprocess.run([sys.executable, "-c", SCRIPT, f"sqlite:///{tmp_path / 's.db'}"], cwd=tmp_path, env=env,
                       stderr=stderr, stdout=subprocess.DEVNULL, check=True, timeout=600)
    lines = log.read_text().splitlines()
    for text in CHATTER:
        assert not [line for line in lines if text in line], f"{text!r} reached the log:\n" + "\n".join(lines)
    for study in (0, 1):  # each search: start, prune, an epoch, export, quantize, measure, then the trial's line
        ends = [i for i, line in enumerate(lines) if re.match(r"trial +0 \S+ +acc ", line)]
        assert len(ends) == 2, lines
        first = ends[study]
        begin = ends[study - 1] + 1 if study else 0
        stages = [line for line in lines[begin:first] if line.startswith("trial 0 s0.25/int8/ft1: ")]
        wanted = ["start", "prune (structured 0.25)", "fine-tune epoch 1/1", "export to ONNX", "quantize to 8 bits",
                  "measure (accuracy of the file, latency)"]
        found = [next((i for i, line in enumerate(stages) if f": {w}" in line), None) for w in wanted]
        assert None not in found and found == sorted(found), (wanted, stages)
        assert all(re.search(r" \d+\.\d s", line) for line in stages[1:]), stages  # each done stage gives seconds
    assert any(line.startswith("fine-tune recipe (the non-Transformer default") for line in lines), lines
