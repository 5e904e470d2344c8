import optuna
import pytest

from lepton_search.errors import ConfigError
from lepton_search.space import DEFAULT_SPACE_PATH, CompressionConfig, SearchSpace


def test_default_yaml_loads_and_round_trips():
    space = SearchSpace.from_yaml(DEFAULT_SPACE_PATH)
    assert space.bits and space.objectives[0] == "accuracy"
    again = SearchSpace.from_dict(space.to_dict())
    assert again == space


def test_grid_and_directions():
    space = SearchSpace(prune_ratio=(0.0, 0.5, 0.25), bits=(32, 8, 4), finetune_epochs=(0, 2),
                        objectives=("accuracy", "latency_ms", "size_mb"))
    assert space.prune_ratios == [0.0, 0.25, 0.5]
    assert space.n_configs == 3 * 3 * 3
    assert space.directions == ["maximize", "minimize", "minimize"]


def test_suggest_reads_trial_params():
    space = SearchSpace(prune_ratio=(0.0, 0.5, 0.25), bits=(32, 8), finetune_epochs=(0, 2))
    trial = optuna.trial.FixedTrial({"prune_ratio": 0.25, "bits": 8, "finetune_epochs": 2})
    assert space.suggest(trial) == CompressionConfig(0.25, 8, 2, "structured")


def test_fixed_knobs_are_not_sampled():
    space = SearchSpace(prune_ratio=(0.5, 0.5, 0.1), bits=(8,), finetune_epochs=(1, 1))
    assert space.suggest(optuna.trial.FixedTrial({})) == CompressionConfig(0.5, 8, 1, "structured")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"bits": (32, 7)}, "bits"),
        ({"prune_ratio": (0.0, 1.0, 0.1)}, "prune_ratio"),
        ({"prune_ratio": (-0.1, 0.5, 0.1)}, "prune_ratio"),
        ({"prune_ratio": (0.0, 0.5, 0.0)}, "prune_ratio.step"),
        ({"finetune_epochs": (-1, 2)}, "finetune_epochs"),
        ({"objectives": ("accuracy", "latency")}, "objectives"),
        ({"prune_method": "structred"}, "prune_method"),
        ({"sampler": "cmaes"}, "sampler"),
        ({"max_accuracy_drop_pts": -1}, "constraints.max_accuracy_drop_pts"),
        ({"trials": 0}, "trials"),
    ],
)
def test_invalid_values_name_the_field(kwargs, field):
    with pytest.raises(ConfigError) as err:
        SearchSpace(**kwargs)
    assert err.value.field == field
    assert "\n" not in str(err.value)


def test_unknown_yaml_key_suggests_closest(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("knobs:\n  prune_ration: {low: 0, high: 0.5}\n")
    with pytest.raises(ConfigError, match="did you mean 'prune_ratio'"):
        SearchSpace.from_yaml(path)


def test_malformed_yaml_names_the_line(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("knobs:\n  bits: [32, 8\n")
    with pytest.raises(ConfigError, match="line"):
        SearchSpace.from_yaml(path)
