"""Trial and base records: one schema, read back from what was written, old and new fields kept."""

from __future__ import annotations

import optuna
import pytest

from lepton_search import SearchSpace
from lepton_search.errors import ConfigError
from lepton_search.records import SCHEMA, BaseRecord, TrialRecord, read_config
from lepton_search.space import KNOB_NAMES, CompressionConfig


def test_trial_record_round_trips_and_keeps_unknown_fields():
    rec = TrialRecord(accuracy=0.9, latency_ms=0.5, size_mb=1.0, config=CompressionConfig(0.25, 8, 1).as_dict(),
                      speedup=2.0)
    attrs = {**rec.to_attrs(), "field_from_a_newer_version": [1, 2]}
    back = TrialRecord.from_attrs(attrs)
    assert back.schema == SCHEMA and back.accuracy == 0.9 and back.speedup == 2.0
    assert back.extra == {"field_from_a_newer_version": [1, 2]}
    assert back.to_attrs()["field_from_a_newer_version"] == [1, 2]  # written back unchanged
    assert list(back.config) == list(KNOB_NAMES)


def test_schema_1_config_is_read_by_position_and_new_knobs_take_defaults():
    attrs = {"config_key": [0.5, 8, 2, "unstructured"], "accuracy": 0.8, "latency_ms": 1.0, "size_mb": 2.0}
    config = read_config(attrs)
    assert config == {"prune_ratio": 0.5, "prune_method": "unstructured", "round_to": 1, "bits": 8,
                      "finetune_epochs": 2, "seq_len": 0, "layers": 0, "int8_mode": "auto", "fusion": "off",
                      "embedding_bits": 32, "embedding_dim": 1.0, "int4_block": 0, "int4_symmetric": True,
                      "int4_accuracy_level": 0, "weight_clusters": 0, "int4_zero_point": "int", "int4_head_bits": 4}
    assert TrialRecord.from_attrs(attrs).schema == 1
    assert read_config({"accuracy": 0.8}) is None


def test_base_record_written_and_read_through_study_attrs():
    study = optuna.create_study(directions=["maximize", "minimize"])
    assert BaseRecord.read(study.user_attrs) is None
    BaseRecord(accuracy=0.93, latency_ms=0.7, size_mb=2.5, workload="w", target={"name": "host-cpu"}).write(study)
    base = BaseRecord.read(study.user_attrs)
    assert base.accuracy == 0.93 and base.workload == "w" and base.target == {"name": "host-cpu"}


def test_categorical_knobs_are_sampled_and_fixed_ones_are_not():
    space = SearchSpace(prune_ratio=(0.0, 0.5, 0.5), prune_method=["structured", "unstructured"], round_to=4,
                        bits=(32,), finetune_epochs=(1, 1))
    assert space.n_configs == 2 * 2 and space.fixed_knobs() == {"round_to": 4, "bits": 32, "finetune_epochs": 1,
                                                               "seq_len": 0, "layers": 0, "int8_mode": "auto",
                                                               "fusion": "off", "embedding_bits": 32,
                                                               "embedding_dim": 1.0, "int4_block": 0,
                                                               "int4_symmetric": True, "int4_accuracy_level": 0, "weight_clusters": 0,
                                                               "int4_zero_point": "int", "int4_head_bits": 4}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(40):
        trial = study.ask()
        config = space.suggest(trial)
        seen.add((config.prune_ratio, config.prune_method))
        assert set(trial.params) == {"prune_ratio", "prune_method"}
        study.tell(trial, 0.0)
    assert seen == {(r, m) for r in (0.0, 0.5) for m in ("structured", "unstructured")}


@pytest.mark.parametrize("bad", [0, 65, 2.5, [4, 4]])
def test_round_to_rejects_bad_values(bad):
    with pytest.raises(ConfigError, match="round_to"):
        SearchSpace(round_to=bad)


def test_a_stored_space_without_new_knobs_resumes(tmp_path):
    from lepton_search.study import open_study

    storage = f"sqlite:///{tmp_path / 's.db'}"
    space = SearchSpace(bits=(32, 8))
    study = open_study(storage, "s", space, optuna.samplers.RandomSampler(seed=0))
    old = dict(study.user_attrs["space"])
    old["knobs"] = {k: v for k, v in old["knobs"].items() if k != "round_to"}  # as stored before the knob
    study.set_user_attr("space", old)
    resumed = open_study(storage, "s", space, optuna.samplers.RandomSampler(seed=0))  # no "different space" error
    assert resumed._study_id == study._study_id and resumed.user_attrs["space"] == old  # kept as stored
    with pytest.raises(ConfigError, match="study_name: .*different search space"):  # a real change still refused
        open_study(storage, "s", SearchSpace(bits=(32, 16)), optuna.samplers.RandomSampler(seed=0))


@pytest.mark.parametrize(("size", "n"), [("all", None), (0.5, 500), (1.0, 1000), (300, 300), (5000, 5000)])
def test_finetune_subset_is_a_count_a_fraction_or_all(size, n):
    from lepton_search.space import FinetuneSettings

    SearchSpace(finetune=FinetuneSettings(subset_size=size))  # valid
    assert FinetuneSettings(subset_size=size).subset_of(1000) == n


@pytest.mark.parametrize("size", ["half", 0, -0.5, 1.5, True])
def test_finetune_subset_rejects_bad_values(size):
    from lepton_search.errors import ConfigError
    from lepton_search.space import FinetuneSettings

    with pytest.raises(ConfigError, match="finetune.subset_size"):
        SearchSpace(finetune=FinetuneSettings(subset_size=size))
