"""The sampler registry: the one place a space's sampler name becomes an Optuna sampler (search and workers)."""

from __future__ import annotations

import optuna
import pytest

from lepton_search.errors import ConfigError
from lepton_search.front_sampler import FrontSampler
from lepton_search.samplers import SAMPLER_REGISTRY, make_sampler
from lepton_search.space import SAMPLERS, SearchSpace
from lepton_search.study import make_sampler as study_sampler
from lepton_search.workers import worker_sampler

KINDS = {"tpe": optuna.samplers.TPESampler, "nsga2": optuna.samplers.NSGAIISampler,
         "gp": optuna.samplers.GPSampler, "random": optuna.samplers.RandomSampler, "front": FrontSampler}


def test_every_name_a_space_accepts_is_registered():
    assert SAMPLER_REGISTRY.names() == sorted(SAMPLERS)


@pytest.mark.parametrize("name", sorted(KINDS))
@pytest.mark.parametrize("parallel", [False, True])
def test_each_name_gives_its_sampler(name, parallel):
    assert type(make_sampler(name, seed=0, parallel=parallel)) is KINDS[name]


def test_search_and_workers_build_through_the_registry_with_the_same_settings(monkeypatch):
    calls = []

    def tpe(**kwargs):
        calls.append(kwargs)
        return optuna.samplers.RandomSampler()

    monkeypatch.setattr(optuna.samplers, "TPESampler", tpe)
    space = SearchSpace(bits=(32, 8))
    study_sampler(space, 5)
    worker_sampler(space, 7)
    assert calls == [{"seed": 5, "n_startup_trials": 6, "multivariate": True, "constant_liar": False},
                     {"seed": 7, "n_startup_trials": 6, "multivariate": True, "constant_liar": True}]  # workers: constant liar


def test_unknown_name_is_one_line_with_the_known_ones_and_the_closest():
    with pytest.raises(ConfigError) as err:
        make_sampler("nsga", seed=0)
    assert err.value.field == "sampler" and "\n" not in str(err.value)
    assert "known: front, gp, nsga2, random, tpe" in str(err.value) and "did you mean 'nsga2'" in str(err.value)


def test_a_sampler_registered_for_one_block_leaves_the_registry_as_before():
    seen = []
    registry = SAMPLER_REGISTRY.copy()
    with registry.registered("qmc", lambda seed, parallel: seen.append((seed, parallel)) or optuna.samplers.RandomSampler(seed=seed)):
        assert isinstance(make_sampler("qmc", seed=3, parallel=True, registry=registry), optuna.samplers.RandomSampler)
    assert seen == [(3, True)]
    assert "qmc" not in registry.names() and "qmc" not in SAMPLER_REGISTRY.names()
