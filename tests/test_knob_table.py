"""Knobs as data: a knob is one `Knob` in `KNOBS`, and SearchSpace and CompressionConfig follow the table.

A toy knob registered for one test is sampled, stored, read back from YAML and checked like the built-in ones,
and leaves the table as it found it.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import sys
from pathlib import Path

import optuna
import pytest

from lepton_search.errors import ConfigError
from lepton_search.knobs import KNOB_NAMES, KNOBS, Choices, FloatRange, IntRange, Knob
from lepton_search.records import TrialRecord
from lepton_search.space import CompressionConfig, SearchSpace

BUILT_IN = ("prune_ratio", "prune_method", "round_to", "bits", "finetune_epochs", "seq_len", "layers", "int8_mode", "fusion",
            "embedding_bits", "embedding_dim", "int4_block", "int4_symmetric", "int4_accuracy_level", "weight_clusters",
            "int4_zero_point", "int4_head_bits")
FIXTURES = Path(__file__).parent / "fixtures"


def toy_layers() -> Knob:
    """A Transformer-style `layers` knob (the kind issue 21 expects next): 1 to 12 kept, 12 does nothing."""
    return Knob("toy_layers", IntRange(12, 12), noop=12, help="encoder layers kept (a test knob)",
                check=lambda v: None if 1 <= v <= 12 else "need 1 <= low <= high <= 12 (layers kept)")


def small_space(**kwargs) -> SearchSpace:
    return SearchSpace(prune_ratio=(0.0, 0.5, 0.5), bits=(32, 8), finetune_epochs=(0, 0), **kwargs)


def test_a_registered_knob_is_sampled_stored_and_read_back(tmp_path):
    with KNOBS.registered(toy_layers()):
        space = small_space(toy_layers=(4, 12))
        assert space.toy_layers == (4, 12) and space.domain("toy_layers") == list(range(4, 13))
        assert space.n_configs == 2 * 2 * 9
        assert {c.toy_layers for c in space.configs()} == set(range(4, 13))
        assert space.to_dict()["knobs"]["toy_layers"] == {"low": 4, "high": 12}

        config = space.suggest(optuna.trial.FixedTrial({"prune_ratio": 0.5, "bits": 8, "toy_layers": 6}))
        assert config.toy_layers == 6 and config.as_dict()["toy_layers"] == 6
        assert list(config.as_dict()) == [*BUILT_IN, "toy_layers"]
        assert CompressionConfig.from_dict(config.as_dict()) == config
        assert CompressionConfig(0.5, 8, 0).toy_layers == 12  # not given: its no-op
        assert config.label() == "s0.50/int8/ft0/toy_layers=6"
        record = TrialRecord(accuracy=0.9, latency_ms=0.5, size_mb=1.0, config=config.as_dict())
        assert TrialRecord.from_attrs(record.to_attrs()).config["toy_layers"] == 6  # records follow the table

        path = tmp_path / "space.yaml"
        path.write_text("knobs:\n  toy_layers: {low: 2, high: 3}\n  bits: [8]\n")
        from_yaml = SearchSpace.from_yaml(path)
        assert from_yaml.domain("toy_layers") == [2, 3] and from_yaml.fixed_knobs()["bits"] == 8
        assert SearchSpace.from_dict(space.to_dict()) == space
        # anchors hold a knob at its no-op (rule "noop"): 12 layers, quantization alone
        assert [(c.toy_layers, c.bits) for c in space.anchor_configs()] == [(12, 8)]
        assert small_space(toy_layers=(4, 6)).anchor_configs() == []  # no-op outside the space: no anchor


def test_a_study_samples_the_registered_knob_through_suggest():
    with KNOBS.registered(toy_layers()):
        space = small_space(toy_layers=(1, 3))
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        configs = []

        def objective(trial: optuna.Trial) -> float:
            configs.append(space.suggest(trial))
            return float(configs[-1].toy_layers)

        study.optimize(objective, n_trials=30)
        assert {t.params["toy_layers"] for t in study.trials} == {1, 2, 3}
        assert [c.toy_layers for c in configs] == [t.params["toy_layers"] for t in study.trials]
        # the params of any config make suggest return that config (how anchors and grid picks are enqueued)
        for config in space.configs():
            assert space.suggest(optuna.trial.FixedTrial(space.params(config))) == config


@pytest.mark.parametrize(("given", "field"), [
    ((0, 3), "toy_layers"),  # the knob's check: below 1
    ((3, 2), "toy_layers"),  # the kind's check: low > high
    ((1.5, 3), "toy_layers"),
    ("three", "toy_layers"),
])
def test_a_bad_value_of_a_registered_knob_is_a_one_line_config_error(given, field):
    with KNOBS.registered(toy_layers()), pytest.raises(ConfigError) as err:
        small_space(toy_layers=given)
    assert err.value.field == field and "\n" not in str(err.value)


def test_the_table_is_as_before_after_the_scope():
    before = list(KNOBS)
    with pytest.raises(RuntimeError), KNOBS.registered(toy_layers()):
        assert "toy_layers" in KNOB_NAMES
        raise RuntimeError("the block fails")
    assert list(KNOBS) == before and tuple(KNOB_NAMES) == BUILT_IN
    assert "toy_layers" not in SearchSpace().to_dict()["knobs"]
    with pytest.raises(TypeError, match="unknown knob 'toy_layers'"):
        CompressionConfig(toy_layers=3)
    with pytest.raises(TypeError, match="unexpected keyword argument 'toy_layers'"):
        SearchSpace(toy_layers=3)
    assert CompressionConfig.from_dict({"prune_ratio": 0.5, "toy_layers": 3}) == CompressionConfig(0.5)  # ignored


def test_float_and_categorical_knobs_take_their_yaml_forms(tmp_path):
    knobs = (Knob("toy_keep", FloatRange(1.0, 1.0, 0.5), noop=1.0, help="share kept"),
             Knob("toy_mode", Choices(("a",)), noop="a", anchor="first", help="a mode",
                  check=lambda v: None if v in ("a", "b") else "choose a or b"))
    with KNOBS.registered(*knobs):
        path = tmp_path / "space.yaml"
        path.write_text("knobs:\n  toy_keep: {low: 0.25, high: 0.75, step: 0.25}\n  toy_mode: [a, b]\n  bits: [8]\n")
        space = SearchSpace.from_yaml(path)
        assert space.toy_keep == (0.25, 0.75, 0.25) and space.toy_mode == ("a", "b")
        assert space.to_dict()["knobs"]["toy_keep"] == {"low": 0.25, "high": 0.75, "step": 0.25}
        assert space.to_dict()["knobs"]["toy_mode"] == ["a", "b"]
        assert space.anchor_configs() == []  # toy_keep's no-op (1.0) is not in the space
        assert SearchSpace(toy_mode="b").to_dict()["knobs"]["toy_mode"] == "b"  # one value stays one value
        with pytest.raises(ConfigError, match="toy_mode: got 'c'; choose a or b"):
            SearchSpace(toy_mode=["a", "c"])


def test_a_knob_needs_a_free_name_and_a_default_that_passes_its_check():
    with pytest.raises(ConfigError, match="in the table already"), KNOBS.registered(toy_layers(), toy_layers()):
        pass
    with pytest.raises(ConfigError, match="Python identifier"):
        Knob("toy-layers", IntRange(1, 1), noop=1, help="")
    bad_default = dataclasses.replace(toy_layers(), default=IntRange(0, 3))
    with pytest.raises(ConfigError, match="need 1"), KNOBS.registered(bad_default):
        pass
    clash = Knob("trials", IntRange(1, 1), noop=1, help="the name of a SearchSpace field")
    with KNOBS.registered(clash), pytest.raises(ConfigError, match="SearchSpace or CompressionConfig attribute"):
        SearchSpace()
    assert tuple(KNOB_NAMES) == BUILT_IN


@pytest.fixture(scope="module")
def knob_reads(digits_mlp, tmp_path_factory) -> set[tuple[str, str]]:
    """(module, knob) for every knob read from the config while `compress` runs a no-op config on digits-mlp:
    what the code does, not what its text says (a docstring or a dead branch naming `config.bits` reads nothing).
    Every built-in knob is read at its no-op value, whether or not it then acts."""
    from lepton_search.candidate import compress
    from lepton_search.space import FinetuneSettings

    reads: set[tuple[str, str]] = set()
    real = CompressionConfig.__getattr__

    def recorded(self, name):
        if name in KNOBS:
            reads.add((sys._getframe(1).f_globals.get("__name__", "?"), name))
        return real(self, name)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(CompressionConfig, "__getattr__", recorded)
        compress(digits_mlp, CompressionConfig(), tmp_path_factory.mktemp("knobs") / "m.onnx",
                 settings=FinetuneSettings(subset_size=64, batch_size=32))
    return reads


@pytest.mark.parametrize("knob", list(KNOBS), ids=lambda k: k.name)
def test_every_built_in_knob_is_complete(knob, knob_reads):
    assert knob.help and "\n" not in knob.help
    assert knob.parse(knob.noop).values() == [knob.noop]  # the no-op is a valid value of its own kind
    # the module that applies it reads it from the config: a table entry without a technique does nothing
    assert (knob.applied_by, knob.name) in knob_reads, sorted(m for m, k in knob_reads if k == knob.name)


def test_the_stored_form_of_the_built_in_knobs_is_unchanged():
    space = SearchSpace(prune_ratio=(0.0, 0.5, 0.25), prune_method=["structured", "global"], round_to=4,
                        bits=(8,), finetune_epochs=(0, 1))
    assert space.to_dict()["knobs"] == {
        "prune_ratio": {"low": 0.0, "high": 0.5, "step": 0.25}, "prune_method": ["structured", "global"],
        "round_to": 4, "bits": [8], "finetune_epochs": {"low": 0, "high": 1},
        "seq_len": 0, "layers": 0, "int8_mode": "auto", "fusion": "off",  # knobs added since: their no-op
        "embedding_bits": [32], "embedding_dim": {"low": 1.0, "high": 1.0, "step": 0.25},  # tables: as they are
        "int4_block": 0, "int4_symmetric": True, "int4_accuracy_level": 0, "weight_clusters": 0,
        "int4_zero_point": "int", "int4_head_bits": 4}  # MatMulNBits: per-channel INT4 instead
    assert (space.prune_ratio, space.prune_method, space.round_to, space.bits, space.finetune_epochs) == (
        (0.0, 0.5, 0.25), ("structured", "global"), 4, (8,), (0, 1))
    narrowed = dataclasses.replace(space, prune_ratio=(0.0, 0.0, 0.25))  # how study.acting_space narrows
    assert narrowed.prune_ratios == [0.0] and narrowed.round_to == 4 and narrowed.n_configs == space.n_configs // 3
    assert CompressionConfig(0.25, 8, 1, "global", 8) == CompressionConfig(
        prune_ratio=0.25, bits=8, finetune_epochs=1, prune_method="global", round_to=8)  # the old field order


@pytest.mark.parametrize("fixture", ["v1_study", "v2_study"])
def test_a_stored_space_of_an_older_version_reads_back_the_same(fixture):
    with sqlite3.connect(f"file:{FIXTURES / fixture / 'study.db'}?mode=ro", uri=True) as db:
        (value,) = db.execute("SELECT value_json FROM study_user_attributes WHERE key = 'space'").fetchone()
    stored = json.loads(value)
    again = SearchSpace.from_dict(stored).to_dict()
    assert {k: v for k, v in again["knobs"].items() if k in stored["knobs"]} == stored["knobs"]
    # Sections read back as stored; a field added since (finetune.optimizer) takes its default.
    assert {k: {f: again[k][f] for f in v} if isinstance(v, dict) else again[k] for k, v in stored.items()
            if k not in ("knobs", "constraints")} == {k: v for k, v in stored.items() if k not in ("knobs", "constraints")}
