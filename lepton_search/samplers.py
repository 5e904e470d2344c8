"""Samplers by name: the one place a `SearchSpace.sampler` string becomes an Optuna sampler.

`search` (one process) and every worker (many, in parallel) ask the same registry; a factory takes the seed and
whether other processes sample the same study at once (`parallel`: TPE then uses a constant liar, so two
workers do not propose the same point while the first one's trial runs).

Example:
    >>> type(make_sampler("tpe", seed=0, parallel=True)).__name__
    'TPESampler'
    >>> make_sampler("tpz", seed=0)
    Traceback (most recent call last):
    ...
    lepton_search.errors.ConfigError: sampler: got 'tpz'; unknown sampler; known: front, gp, nsga2, random, tpe (did you mean 'tpe'?)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import optuna

from lepton_search.errors import ConfigError, did_you_mean

# (seed, parallel) -> sampler
SamplerFactory = Callable[[int, bool], optuna.samplers.BaseSampler]


def _tpe(seed: int, parallel: bool) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # constant_liar is experimental
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=6, multivariate=True, constant_liar=parallel)


def _nsga2(seed: int, parallel: bool) -> optuna.samplers.BaseSampler:
    return optuna.samplers.NSGAIISampler(seed=seed, population_size=8)


def _gp(seed: int, parallel: bool) -> optuna.samplers.BaseSampler:
    # reads the trials' constraint values: constrained multi-objective
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=6)


def _random(seed: int, parallel: bool) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


def _front(seed: int, parallel: bool) -> optuna.samplers.BaseSampler:
    # scikit-learn: imported when the sampler is asked for
    from lepton_search.front_sampler import FrontSampler

    return FrontSampler(seed=seed, parallel=parallel)


class SamplerRegistry:
    """Name -> factory(seed, parallel). `SAMPLER_REGISTRY` holds the built-in ones; `copy()` gives a registry a
    test may extend without touching it."""

    def __init__(self, factories: dict[str, SamplerFactory] | None = None) -> None:
        self._factories = dict(factories or {})

    def register(self, name: str, factory: SamplerFactory) -> None:
        self._factories[name] = factory

    def names(self) -> list[str]:
        return sorted(self._factories)

    def copy(self) -> SamplerRegistry:
        return SamplerRegistry(self._factories)

    @contextmanager
    def registered(self, name: str, factory: SamplerFactory) -> Iterator[None]:
        """`name` registered for one `with` block; the registry is as before afterwards."""
        before = self._factories.get(name)
        self.register(name, factory)
        try:
            yield
        finally:
            if before is None:
                del self._factories[name]
            else:
                self._factories[name] = before

    def create(self, name: str, *, seed: int, parallel: bool = False) -> optuna.samplers.BaseSampler:
        """The sampler `name`, seeded; a one-line ConfigError naming the known ones when there is none."""
        if name not in self._factories:
            raise ConfigError("sampler", name, f"unknown sampler; {did_you_mean(name, self._factories)}")
        return self._factories[name](seed, parallel)


SAMPLER_REGISTRY = SamplerRegistry({"tpe": _tpe, "nsga2": _nsga2, "gp": _gp, "random": _random, "front": _front})
# samplers that search accuracy x latency_ms only (their acquisition is a two-objective hypervolume)
TWO_OBJECTIVE = ("front",)


def make_sampler(name: str, *, seed: int, parallel: bool = False,
                 registry: SamplerRegistry | None = None) -> optuna.samplers.BaseSampler:
    """The sampler `name` from `registry` (default: the built-in ones); `parallel` for a worker that shares its
    study with others."""
    return (registry or SAMPLER_REGISTRY).create(name, seed=seed, parallel=parallel)
