"""Techniques as registered stages: the knob table is the registration, `compress` loops over the techniques, and
`search` and `ModelOptimizer` run the same checks.

A toy technique is defined in this very module (`TECHNIQUES` below) and registered for one test by a knob whose
`applied_by` names this module: no production file changes, which is the extension point's promise.
"""

from __future__ import annotations

import dataclasses
import json

import onnx
import optuna
import pytest

import lepton_search as ls
from lepton_search import candidate
from lepton_search.errors import ConfigError
from lepton_search.knobs import KNOBS, Choices, Knob
from lepton_search.space import CompressionConfig, FinetuneSettings, SearchSpace
from lepton_search.techniques import int8_dynamic, quantize, stages
from lepton_search.techniques.export import check_traceable
from lepton_search.techniques.stages import STAGES, Build, CheckContext, Technique, Verdict

SETTINGS = FinetuneSettings(subset_size=64, batch_size=16, bn_batches=2, calibration_size=8)


class ToyStamp(Technique):
    """A graph-stage toy: writes its value into the file's metadata and the route record; refuses 3 on a model
    without a Conv (its check), fixes 2 to 1 with a note on one (a fix with a warning)."""

    name, knobs, stage, order, keyed = "toy_stamp", ("toy_stamp",), "graph", 50, False

    def check(self, ctx: CheckContext, space: SearchSpace) -> Verdict:
        values = space.domain("toy_stamp")
        if 3 in values:
            raise ConfigError("knobs.toy_stamp", 3, "a toy refusal; give 1 or 2")
        return Verdict()

    def apply(self, build: Build) -> None:
        if build.config.toy_stamp != 1:
            build.graph.metadata_props.add(key="toy_stamp", value=str(build.config.toy_stamp))
        build.record["toy_stamp"] = build.config.toy_stamp


TECHNIQUES = (ToyStamp(),)


def toy_knob() -> Knob:
    return Knob("toy_stamp", Choices((1,)), noop=1, help="a test knob stamping the file", applied_by=__name__)


def test_every_knob_of_the_table_has_exactly_one_technique_in_stage_order():
    techniques = stages.registered()
    assert [t.stage for t in techniques] == sorted((t.stage for t in techniques), key=STAGES.index)
    read = [k for t in techniques for k in t.knobs]
    assert sorted(read) == sorted(KNOBS.names)  # each knob once
    for knob in KNOBS:
        technique = stages.technique_for(knob)
        assert type(technique).__module__ == knob.applied_by, knob.name


@pytest.mark.parametrize("technique", stages.registered(), ids=lambda t: t.name)
def test_technique_contract(technique, digits_mlp, tmp_path):
    """What every registered technique must do (anchor: optuna's sampler contract tests)."""
    assert technique.stage in STAGES and technique.knobs and isinstance(technique.keyed, bool)
    assert all(k in KNOBS for k in technique.knobs)
    noop = CompressionConfig()
    assert not technique.active(noop) and not technique.changes_model(noop)
    assert technique.transform(digits_mlp, noop) is None
    graph = check_traceable(digits_mlp.model, digits_mlp.example_args, tmp_path)
    verdict = technique.check(CheckContext(digits_mlp, graph), SearchSpace())  # the defaults act on any model
    assert isinstance(verdict, Verdict) and not verdict.changes


def test_a_knob_and_its_technique_outside_the_library_run_through_search(digits_mlp, tmp_path):
    with KNOBS.registered(toy_knob()):
        assert [t.name for t in stages.registered()][-1] == "toy_stamp"
        space = SearchSpace(prune_ratio=0.0, bits=(32,), finetune_epochs=0, toy_stamp=(1, 2), anchors="off",
                            finetune=SETTINGS)
        result = ls.search(digits_mlp, space, n_trials=2, storage=f"sqlite:///{tmp_path / 's.db'}",
                           study_name="toy", verbose=False, callbacks=[])
        trials = [t for t in result.study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        assert [t.params["toy_stamp"] for t in trials] == [2]  # toy 1 there is the unmodified base: not a trial
        stamped = next(t for t in trials if t.params["toy_stamp"] == 2)
        result.export(stamped.number, tmp_path / "out")
        folder = tmp_path / "out"
        model = onnx.load(str(folder / "model.onnx"))
        assert {p.key: p.value for p in model.metadata_props}.get("toy_stamp") == "2"
        config = json.loads((folder / "config.json").read_text())
        assert "toy_stamp" in json.dumps(config)
        with pytest.raises(ConfigError, match=r"knobs.toy_stamp: got 3; a toy refusal"):
            ls.search(digits_mlp, dataclasses.replace(space, toy_stamp=(1, 3)), n_trials=1,
                      storage=f"sqlite:///{tmp_path / 's.db'}", study_name="toy3", verbose=False)
        assert "toy3" not in optuna.get_all_study_names(f"sqlite:///{tmp_path / 's.db'}")  # nothing opened


def test_a_knob_no_technique_reads_is_refused_in_one_line_before_any_study(digits_mlp, tmp_path):
    orphan = Knob("orphan", Choices((0,)), noop=0, help="a knob without a technique")
    url = f"sqlite:///{tmp_path / 's.db'}"
    with KNOBS.registered(orphan):
        with pytest.raises(ConfigError, match=r"knobs.orphan: got 1; no registered technique reads this knob"):
            ls.search(digits_mlp, SearchSpace(orphan=(0, 1)), n_trials=1, storage=url, study_name="o",
                      verbose=False)
        assert optuna.get_all_study_names(url) == []
        with pytest.raises(ConfigError, match=r"knobs.orphan: got 1"):
            ls.ModelOptimizer(None, digits_mlp, out_dir=tmp_path / "opt", verbose=False).compress(orphan=1)
    misnamed = dataclasses.replace(orphan, applied_by="lepton_search.techniques.prune")
    with KNOBS.registered(misnamed), pytest.raises(ConfigError, match=r"knobs.orphan.applied_by: got "
                                                                        r"'lepton_search.techniques.prune'; must list"):
        stages.registered()


def test_the_route_is_chosen_once_before_fine_tuning_and_applied_as_chosen(digits_mlp, tmp_path, monkeypatch):
    def graph_rule(*args, **kwargs):
        raise AssertionError("the graph quantizer re-decided the INT8 route")

    monkeypatch.setattr(int8_dynamic, "graph_takes_dynamic_route", graph_rule)
    static = candidate.compress(digits_mlp, CompressionConfig(0.0, 8, 1), tmp_path / "s.onnx", settings=SETTINGS)
    assert static.quantization_aware and static.quantization["tool"] == "nncf"
    dynamic = candidate.compress(digits_mlp, CompressionConfig(0.0, 8, 1, int8_mode="dynamic"), tmp_path / "d.onnx",
                                 settings=SETTINGS)
    assert not dynamic.quantization_aware and dynamic.quantization["tool"] == "onnxruntime"


def test_a_quantization_plan_is_checked_when_made():
    assert quantize.plan_for(4).route == "int4_qdq" and not quantize.plan_for(16).static
    with pytest.raises(ValueError, match="route 'int8_static' makes 8-bit files, not 4"):
        quantize.QuantizationPlan("int8_static", 4)
    with pytest.raises(ValueError, match="one of"):
        quantize.QuantizationPlan("int3", 3)


def test_model_optimizer_refuses_and_fixes_what_search_does(digits_mlp, tmp_path):
    opt = ls.ModelOptimizer(None, digits_mlp, out_dir=tmp_path / "opt", verbose=False)
    url = f"sqlite:///{tmp_path / 's.db'}"
    for knobs, match in (({"fusion": "ort"}, "knobs.fusion: got 'ort'; workload"),
                         ({"layers": 2}, "knobs.layers: got 2; workload"),
                         ({"seq_len": 4}, "knobs.seq_len: got 4; workload"),
                         ({"embedding_bits": 8}, "embedding_bits: got 8; this model has no nn.Embedding")):
        with pytest.raises(ConfigError, match=match):
            opt.compress(bits=8, finetune_epochs=0, **knobs)
        with pytest.raises(ConfigError, match=match):
            ls.search(digits_mlp, SearchSpace(**{k: (v,) for k, v in knobs.items()}), n_trials=1, storage=url,
                      study_name="x", verbose=False)
    with pytest.warns(UserWarning, match="int8_mode fixed at 'auto'"):
        result = opt.compress(bits=32, finetune_epochs=0, int8_mode="static")
    assert result.candidate.config.int8_mode == "auto"  # fixed, as the search space would be


def test_a_knob_value_that_is_a_no_op_on_this_model_is_the_no_op_value():
    """`seq_len` at the model's own length and `layers` at its depth cut nothing: they are searched as 0, so a
    study does not run the same graph as two configs (a 64-token model with seq_len 64 ran INT8 alone twice)."""
    from lepton_search.techniques.layers import Layers
    from lepton_search.techniques.seq_len import SeqLen
    from tests import family_models

    model = family_models.tiny("bert", layers=2)
    workload = type("W", (), {"model": model, "seq_len": 16, "name": "tiny-bert", "task": None})()
    ctx = CheckContext(workload, None)
    space = SearchSpace(seq_len=(0, 8, 16), layers=(0, 1, 2))
    seq = SeqLen().check(ctx, space)
    assert seq.changes == {"seq_len": (0, 8)} and "seq_len 16 is this model's own length" in seq.notes[0]
    depth = Layers().check(ctx, space)
    assert depth.changes == {"layers": (0, 1)} and "layers 2 is this model's own depth" in depth.notes[0]
    only = Layers().check(ctx, SearchSpace(layers=(2,)))
    assert only.changes == {"layers": 0}
    assert SeqLen().check(ctx, SearchSpace(seq_len=(0, 8))).changes == {}
