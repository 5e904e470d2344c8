"""Behaviour check across commits: the same 10 fixed configs on digits-cnn, validation results per config.

Run it with two checkouts on the same host and compare the printed JSON (the base model is trained once into
the shared LEPTON_SEARCH_CACHE, so both use the same base). Space epochs 0-1: the one-cycle schedule over the
space's maximum epochs equals the old per-trial schedule, so a refactor that keeps behaviour gives identical
`val_correct` for every config (latency on this tiny model is noise).

    export LEPTON_SEARCH_CACHE=/tmp/same_cache
    git worktree add /tmp/old f9bffc6
    (cd /tmp/old && PYTHONPATH=/tmp/old /path/to/.venv/bin/python /path/to/experiments/same_configs.py old /tmp/old.db)
    .venv/bin/python experiments/same_configs.py new /tmp/new.db

Prints `TAG {config: [accuracy, val_correct, latency_ms]}`.
"""

from __future__ import annotations

import json
import logging
import sys

import optuna

from lepton_search import SearchSpace, search


def main(tag: str, db: str) -> int:
    optuna.logging.set_verbosity(logging.WARNING)
    space = SearchSpace(prune_ratio=(0.0, 0.5, 0.25), bits=(32, 8), finetune_epochs=(0, 1), trials=8, sampler="random")
    study = optuna.create_study(storage=f"sqlite:///{db}", study_name="s", directions=space.directions)
    for r in (0.0, 0.25, 0.5):
        for b in (32, 8):
            for e in (0, 1):
                if (r, e) not in ((0.0, 0), (0.5, 1)) or b != 32:
                    study.enqueue_trial({"prune_ratio": r, "bits": b, "finetune_epochs": e})
    res = search("digits-cnn", space, n_trials=10, storage=f"sqlite:///{db}", study_name="s", verbose=False)
    out = {f"{t.params['prune_ratio']}/{t.params['bits']}/{t.params['finetune_epochs']}":
           (t.user_attrs["accuracy"], t.user_attrs["val_correct"], t.user_attrs["latency_ms"])
           for t in res.study.trials if t.state.name == "COMPLETE"}
    print(tag, json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
