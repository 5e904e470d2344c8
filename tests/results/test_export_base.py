"""`export(-1)`: "keep the base" is exported as the study's own base file, with a config and a card that say so and
show what the study measured on it."""

from __future__ import annotations

import json

from lepton_search import SearchSpace, search
from lepton_search.paths import file_sha256
from lepton_search.results.pick import BASE_TRIAL


def test_the_base_is_exported_with_its_measured_figures(digits_mlp, sqlite_url, tmp_path):
    space = SearchSpace(prune_ratio=(0.0, 0.0, 0.25), bits=(32, 8), finetune_epochs=(0, 0), trials=1)
    result = search(digits_mlp, space, n_trials=1, storage=sqlite_url, study_name="keep", verbose=False,
                    callbacks=[], remeasure=False)
    onnx_path = result.export(BASE_TRIAL, tmp_path / "out")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    card = (tmp_path / "out" / "MODEL_CARD.md").read_text()
    base = result.base
    assert config["keep_the_base"] and config["onnx_sha256"] == file_sha256(onnx_path)
    assert config["recheck"]["status"] != "FAILED"
    assert card.startswith("# digits-mlp: the unmodified model")
    assert f"| validation accuracy | {base.accuracy:.4f} |" in card and f"| size | {base.size_mb:.4g} MB |" in card
    assert f"| latency p50 | {base.latency_ms:.4g} ms |" in card and "ACCURACY (task classification)" in card
