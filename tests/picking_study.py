"""One small real study shared by test_pick, test_export and test_report (built once per test session).

digits-cnn, 4 complete trials, three objectives, an accuracy constraint tight enough that some trials are infeasible.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

CONSTRAINT_PTS = 3.0  # digits-cnn: unpruned and 25%-pruned+fine-tuned fit, 50% or no fine-tune do not


@functools.lru_cache(maxsize=1)
def picking_study() -> tuple[str, Path]:
    """(storage URL, artifact folder) of the shared study named 'pick'."""
    from lepton_search import SearchSpace, search

    folder = Path(tempfile.mkdtemp(prefix="lepton_pick_"))
    storage = f"sqlite:///{folder / 'study.db'}"
    space = SearchSpace(prune_ratio=(0.0, 0.5, 0.25), bits=(32, 8), finetune_epochs=(0, 1),
                        objectives=("accuracy", "latency_ms", "size_mb"), max_accuracy_drop_pts=CONSTRAINT_PTS, sampler="random", trials=4, seed=0)
    # Fixed configs, not sampled ones, so the study's shape does not hang on timing noise: two that always fit
    # (unpruned FP32 and INT8), one that usually does, one that never does (50% pruned, no fine-tuning).
    import optuna

    study = optuna.create_study(storage=storage, study_name="pick", directions=space.directions)
    for ratio, bits, epochs in ((0.0, 32, 0), (0.0, 8, 0), (0.25, 8, 1), (0.5, 32, 0)):
        study.enqueue_trial({"prune_ratio": ratio, "bits": bits, "finetune_epochs": epochs})
    search("digits-cnn", space, n_trials=4, storage=storage, study_name="pick", verbose=False)
    return storage, folder / "study_artifacts"
