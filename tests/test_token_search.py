"""A token classifier on nn.TransformerEncoder (int64 input_ids + attention_mask, fast path on) through a whole
search: prune -> fine-tune -> quantize (8 and 32 bits) -> export -> ORT accuracy equal to the stored one ->
latency on the stored validation samples, which export and retarget reuse."""

from __future__ import annotations

import json

import numpy as np
import optuna
import pytest
from token_workload import SEQ, token_workload

from lepton_search import SearchSpace, search
from lepton_search.latency import SAMPLE_INPUTS_FILE, LatencyEstimate, LatencyModel, load_inputs
from lepton_search.latency.measure import measure_dir
from lepton_search.records import SAMPLE_INPUTS_ARTIFACT
from lepton_search.results.report import front_table
from lepton_search.results.retarget import retarget
from lepton_search.space import FinetuneSettings, LatencySettings

CONFIGS = ({"prune_ratio": 0.5, "bits": 32, "finetune_epochs": 1}, {"prune_ratio": 0.5, "bits": 8, "finetune_epochs": 1},
           {"prune_ratio": 0.0, "bits": 8, "finetune_epochs": 0})


class _Recorder(LatencyModel):
    """A target that records what it is fed (retarget must feed the stored samples, not synthetic zeros)."""

    name, source = "recorder", "predicted"

    def __init__(self) -> None:
        self.fed: list[dict] = []

    def latency(self, onnx_path, inputs=None) -> LatencyEstimate:
        self.fed.append(None if inputs is None else dict(inputs))
        return LatencyEstimate(p50_ms=1.0, p90_ms=1.0, source=self.source)


@pytest.mark.slow  # a real 3-trial search with fine-tuning and INT8 (~40 s of CPU)
def test_transformer_encoder_token_classifier_through_a_search(sqlite_url, tmp_path):
    wl = token_workload()
    space = SearchSpace(prune_ratio=(0.0, 0.5, 0.5), bits=(32, 8), finetune_epochs=(0, 1), early_reject="off",
                        finetune=FinetuneSettings(subset_size=256, batch_size=64, bn_batches=2, calibration_size=16),
                        latency=LatencySettings(warmup=2, runs=20, max_repeats=1), trials=3)
    study = optuna.create_study(storage=sqlite_url, study_name="tok", directions=space.directions)
    for config in CONFIGS:
        study.enqueue_trial(config)
    result = search(wl, space, n_trials=3, storage=sqlite_url, study_name="tok", verbose=False, callbacks=[],
                    artifacts=tmp_path / "art", remeasure=False)
    complete = result.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert sorted((t.params.get("prune_ratio", 0.0), t.params["bits"]) for t in complete) == [(0.0, 8), (0.5, 8), (0.5, 32)]
    base = result.base
    assert base.sequence_length == SEQ and [i["name"] for i in base.inputs] == ["input_ids", "attention_mask"]
    assert base.inputs_label() == f"input_ids int64 ({SEQ},), attention_mask int64 ({SEQ},); sequence length {SEQ}"
    assert f"inputs: {base.inputs_label()}" in front_table(result)
    assert base.family == "Transformer" and front_table(result).splitlines()[0].endswith("Transformer")
    for t in complete:
        assert t.user_attrs["sequence_length"] == SEQ
        assert t.user_attrs[SAMPLE_INPUTS_ARTIFACT] == base.sample_inputs_artifact_id
        if t.params.get("prune_ratio", 0.0) > 0:
            assert t.user_attrs["macs_ratio"] < 0.95  # FFN channels went
        out = tmp_path / f"deploy{t.number}"
        result.export(t.number, out, workload=wl)  # re-runs the file in ORT: raises unless val_correct matches
        config = json.loads((out / "config.json").read_text())
        assert config["recheck"]["status"] == "passed" and config["recheck"]["val_correct"] == t.user_attrs["val_correct"]
        card = (out / "MODEL_CARD.md").read_text()
        assert "Inputs: input_ids int64" in card and "(Transformer)" in card
        if t.params["bits"] == 8:  # token ids: ONNX Runtime's dynamic INT8, not NNCF's static route
            route = config["metrics"]["quantization_route"]  # recorded by quantize, read by the card
            assert route["activations"] == "uint8 dynamic per call" and route["tool"] == "onnxruntime"
            above_knobs = card.split("| knob |")[0]  # the knob table's help names every route, NNCF's too
            assert route["summary"] in above_knobs and "NNCF" not in above_knobs and "MatMul" in route["operators"]
        samples = load_inputs(out / SAMPLE_INPUTS_FILE)
        for name, array in wl.sample_inputs().items():  # what latency was timed on
            np.testing.assert_array_equal(samples[name], array)
    rows = measure_dir(out, tmp_path / "m.csv", runs=20, warmup=2, verbose=False)  # an export, timed elsewhere
    assert [(r["file"], r["inputs"]) for r in rows] == [("model.onnx", SAMPLE_INPUTS_FILE)]
    recorder = _Recorder()
    retarget(sqlite_url, "tok", recorder, artifacts=tmp_path / "art")
    assert len(recorder.fed) == 1 + len(complete)
    for fed in recorder.fed:
        assert fed is not None and np.array_equal(fed["input_ids"], wl.sample_inputs()["input_ids"])
