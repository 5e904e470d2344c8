"""A candidate carries its own inputs: a transform (what an input knob such as the planned `seq_len` does) reaches
the exported graph, INT8 calibration, evaluation, latency samples, the trial record, its stored samples, the
card and remeasure."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from worker_workloads import minilm_slice

from lepton_search import SearchSpace, search
from lepton_search.candidate import InputTransform, compress
from lepton_search.evaluate import evaluate
from lepton_search.latency import LatencyEstimate, LatencyModel, load_inputs
from lepton_search.records import SAMPLE_INPUTS_ARTIFACT
from lepton_search.space import CompressionConfig, FinetuneSettings
from lepton_search.study import Objective

KEEP = 4  # of the workload's 8 tokens
FIRST_TOKENS = InputTransform("first-4-tokens", lambda feeds: {n: a[:, :KEEP] for n, a in feeds.items()})


class _Recording(LatencyModel):
    """Measured-like figures from the shapes it is fed: each call's feed shapes are kept."""

    name, source = "recording", "measured"

    def __init__(self) -> None:
        self.fed: list[dict[str, tuple[int, ...]]] = []

    def latency(self, onnx_path, inputs=None):
        self.fed.append({n: tuple(a.shape) for n, a in (inputs or {}).items()})
        width = next(iter(inputs.values())).shape[1] if inputs else 8
        return LatencyEstimate(p50_ms=0.1 * width, p90_ms=0.1 * width, source=self.source, cv=0.01, threads=1)


@pytest.fixture(scope="module")
def slice_workload():
    return minilm_slice()


def test_a_transformed_candidate_is_exported_evaluated_and_timed_at_its_inputs(slice_workload, tmp_path):
    config = CompressionConfig(prune_ratio=0.0, bits=8, finetune_epochs=0)
    settings = FinetuneSettings(subset_size="all", batch_size=8, bn_batches=1, calibration_size=4)
    cand = compress(slice_workload, config, tmp_path / "c.onnx", settings=settings, input_transform=FIRST_TOKENS)
    graph = onnx.load(str(cand.onnx_path))
    assert [[d.dim_value for d in i.type.tensor_type.shape.dim][1] for i in graph.graph.input] == [KEEP, KEEP]
    assert [i["shape"] for i in cand.inputs] == [[KEEP], [KEEP]]
    assert all(a.shape[1] == KEEP for a in cand.sample_inputs.values())
    target = _Recording()
    meas = evaluate(cand, slice_workload, target)
    assert target.fed == [{n: (len(a), KEEP) for n, a in cand.sample_inputs.items()}]
    # the accuracy is the file's on the transformed batches: the same as feeding them by hand
    from lepton_search.evaluate.accuracy import onnx_accuracy

    assert meas.accuracy == onnx_accuracy(cand.onnx_path, slice_workload, "val", transform=FIRST_TOKENS).accuracy
    with pytest.raises(Exception, match="(?i)invalid|dimension|shape"):  # untransformed batches do not fit it
        onnx_accuracy(cand.onnx_path, slice_workload, "val")


def test_a_trial_with_its_own_inputs_stores_them_and_remeasure_feeds_them(slice_workload, sqlite_url, tmp_path,
                                                                            monkeypatch):
    monkeypatch.setattr(Objective, "inputs_for", lambda self, config: FIRST_TOKENS if config.bits == 8 else None)
    target = _Recording()
    space = SearchSpace(prune_ratio=(0.25, 0.25, 0.25), bits=(32, 8), finetune_epochs=(0, 0), trials=2,
                        early_reject="off", finetune=FinetuneSettings(subset_size="all", batch_size=8, bn_batches=1,
                                                                      calibration_size=4))
    result = search(slice_workload, space, target=target, n_trials=2, storage=sqlite_url, study_name="inputs",
                    artifacts=tmp_path / "art", verbose=False, callbacks=[], remeasure=False)
    by_bits = {t.params["bits"]: t for t in result.study.trials if t.state.name == "COMPLETE"}
    base_id = result.base.sample_inputs_artifact_id
    assert by_bits[32].user_attrs[SAMPLE_INPUTS_ARTIFACT] == base_id
    assert [i["shape"] for i in by_bits[8].user_attrs["inputs"]] == [[KEEP], [KEEP]]
    own = by_bits[8].user_attrs[SAMPLE_INPUTS_ARTIFACT]
    assert own != base_id
    out = result.export(by_bits[8].number, tmp_path / "out")
    samples = load_inputs(out.parent / "sample_inputs.npz")  # the export ships the file's own samples
    assert all(a.shape[1] == KEEP for a in samples.values())
    assert f"input_ids int64 ({KEEP},)" in (out.parent / "MODEL_CARD.md").read_text()
    target.fed.clear()
    again = result.remeasure(target, repeats=1)
    assert again is not None
    assert again["base_latency_ms"] == pytest.approx(0.1 * 8)  # the base fed its own 8 tokens
    for key in again["trials"]:  # each front file fed its own samples: 4 tokens for the INT8 one
        trial = result.study.trials[int(key)]
        assert again["trials"][key]["latency_ms"] == pytest.approx(0.1 * (KEEP if trial.params["bits"] == 8 else 8))
    assert np.isfinite(by_bits[8].user_attrs["accuracy"])
