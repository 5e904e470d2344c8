"""`sampler: front`: an Optuna sampler that knows what a compression search knows and a black box does not.

A black-box sampler (TPE, GP, NSGA-II) sees configs and two numbers. This one also reads, from the study itself
(so it works the same in one process and across PostgreSQL workers):

- *fine-tune epochs are a fidelity axis*: a chain (every knob but the epochs) runs 1 epoch before 2, 2 before 3;
  checkpoints make the next step cost one epoch, not all of them. A chain whose next step cannot improve the
  front has no expected gain and is not continued (successive halving, as an acquisition: Optuna's pruners
  raise in multi-objective studies); a chain rejected before training (`rejection.py`) is dead;
- *latency is a property of the graph* (`graphs.py`): a chain's latency is known once any of its trials ran;
  an unseen chain's is predicted from the seen ones (a Gaussian process on log latency);
- *each trial's cost is known in advance*: the seconds outside training and the seconds per epoch are measured on
  the study's trials (`finetune_seconds`, `finetune_epochs_reused`), so a step's cost is what it will train;
- accuracy is predicted by a Gaussian process on the knobs (with its uncertainty), and the next config is the one
  with the largest **expected hypervolume improvement per second** over the study's feasible front (accuracy x
  latency, reference: the base's latency and accuracy less the study's allowed drop).

Anchors: BOHB / Hyperband (epochs as a budget), qNEHVI and cost-aware Bayesian optimisation (EHVI per unit cost).
The Gaussian processes are scikit-learn's. Tried on the CNN replay and left out, each slower (median seconds to
95% of the grid's hypervolume, 12-16 seeds): valuing a chain's next epoch by its later epochs (203 s against 193),
a score noise fixed at the validation split's standard error (216 against 196), no linear trend (213 against ~170). Two objectives (accuracy up, latency down), as the default spaces
have; `SearchSpace` refuses the sampler with other objectives.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from lepton_search import records

FIDELITY = "finetune_epochs"
TRIAL_SECONDS = "trial_seconds"  # a trial's wall seconds, when not its start-to-complete time (a replay's table)
FIT_FROM = 6  # points before a Gaussian process's hyperparameters are fitted (fixed priors before)
DEFAULT_DROP_PTS = 1.0  # reference drop (points) when the study sets no accuracy limit, as `pick.hypervolume`


@dataclass(frozen=True)
class _Point:
    params: dict[str, Any]
    accuracy: float
    latency_ms: float
    rejected: bool  # rejected before training: its accuracy is the untrained probe's, not this config's
    wall_s: float | None
    finetune_s: float
    new_epochs: int


def _grid(space: dict[str, BaseDistribution], rng: np.random.Generator, cap: int) -> list[dict[str, Any]]:
    """Every point of the (discrete) search space, or `cap` of them drawn at random when there are more."""
    names = sorted(space)
    values = []
    for name in names:
        d = space[name]
        if isinstance(d, CategoricalDistribution):
            values.append(list(d.choices))
        elif isinstance(d, IntDistribution):
            values.append(list(range(d.low, d.high + 1, d.step)))
        elif isinstance(d, FloatDistribution) and d.step is not None:
            n = round((d.high - d.low) / d.step)
            values.append([round(d.low + i * d.step, 10) for i in range(n + 1)])
        else:  # a continuous knob: nine levels (the engine's knobs all have steps)
            values.append(list(np.linspace(d.low, d.high, 9)))
    total = math.prod(len(v) for v in values)
    if total <= cap:
        return [dict(zip(names, combo)) for combo in itertools.product(*values)]
    return [{n: v[rng.integers(len(v))] for n, v in zip(names, values)} for _ in range(cap)]


class _Encoder:
    """Params -> [0, 1] features: numeric knobs scaled by their range, categorical ones one-hot."""

    def __init__(self, space: dict[str, BaseDistribution], drop: Sequence[str] = ()) -> None:
        self.columns: list[tuple[str, Any]] = []
        for name in sorted(space):
            if name in drop:
                continue
            d = space[name]
            if isinstance(d, CategoricalDistribution):
                self.columns += [(name, ("one-hot", c)) for c in d.choices]
            else:
                self.columns.append((name, ("range", float(d.low), float(d.high))))

    def __call__(self, rows: Sequence[dict[str, Any]]) -> np.ndarray:
        out = np.zeros((len(rows), len(self.columns)))
        for j, (name, how) in enumerate(self.columns):
            for i, row in enumerate(rows):
                v = row[name]
                if how[0] == "one-hot":
                    out[i, j] = float(v == how[1])
                else:
                    out[i, j] = 0.0 if how[2] == how[1] else (float(v) - how[1]) / (how[2] - how[1])
        return out


class _Fitted:
    """A fitted model: a linear trend (ridge) when asked, and a Gaussian process on what the trend leaves."""

    def __init__(self, gp: Any, mean: float, trend: Any) -> None:
        self.gp, self.mean, self.trend = gp, mean, trend

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mu, sd = self.gp.predict(x, return_std=True)
        return mu + self.mean + (self.trend.predict(x) if self.trend is not None else 0.0), sd


def _gp(x: np.ndarray, y: np.ndarray, seed: int, prior_sd: float, trend: bool = False) -> _Fitted:
    """A Gaussian process on (x, y) (y centred, or less a ridge trend with `trend`): hyperparameters, the noise
    included, fitted from `FIT_FROM` points on, fixed before."""
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel
    from sklearn.linear_model import Ridge

    line = Ridge(alpha=1.0).fit(x, y) if trend and len(y) >= 2 else None
    rest = y - (line.predict(x) if line is not None else 0.0)
    sd = max(float(np.std(rest)), prior_sd)
    noise = WhiteKernel((0.1 * sd) ** 2, (1e-10, 1e-1))
    kernel = ConstantKernel(sd**2, (1e-6, 1.0)) * Matern(np.full(x.shape[1], 0.5), (0.05, 20.0), nu=2.5) + noise
    gp = GaussianProcessRegressor(kernel, normalize_y=False, optimizer="fmin_l_bfgs_b" if len(y) >= FIT_FROM else None,
                                  n_restarts_optimizer=1, random_state=seed)
    mean = float(rest.mean())
    return _Fitted(gp.fit(x, rest - mean), mean, line)


def improvement(acc: np.ndarray, lat: np.ndarray, front: Sequence[tuple[float, float]],
                ref: tuple[float, float]) -> np.ndarray:
    """Hypervolume gained by adding each point (acc[i, s], lat[i, s]) to `front` ((accuracy, latency) points),
    in the box above accuracy ref[0] and below latency ref[1]: an exact sweep over the front's steps.

    Example:
        >>> float(improvement(np.array([[0.9]]), np.array([[1.0]]), [], (0.8, 2.0))[0, 0])
        0.1
    """
    ref_acc, ref_lat = ref
    pts = sorted((lt, a) for a, lt in front if a > ref_acc and lt < ref_lat)
    # the front's staircase: on [edges[k], edges[k+1]) its covered accuracy is heights[k]
    edges, heights, best = [], [], ref_acc
    for lt, a in pts:
        best = max(best, a)
        edges.append(lt)
        heights.append(best)
    edges = np.array([-np.inf, *edges, ref_lat])
    heights = np.array([ref_acc, *heights])
    lo = np.maximum(lat[..., None], edges[:-1])  # each point's share of each step
    width = np.clip(np.minimum(ref_lat, edges[1:]) - lo, 0.0, None)
    gain = np.clip(acc[..., None] - heights, 0.0, None)
    return (width * gain).sum(axis=-1)


class FrontSampler(optuna.samplers.BaseSampler):
    """Expected hypervolume improvement per second, epochs as fidelity (module docstring). `reference`:
    (accuracy, latency_ms) of the hypervolume's corner when the study stores no base (a replay); `parallel`:
    other processes sample the same study (their running trials count as taken, at the predicted point)."""

    def __init__(self, seed: int = 0, *, reference: tuple[float, float] | None = None, parallel: bool = False,
                 mc_samples: int = 128, max_candidates: int = 4000, n_startup: int = 1, trend: bool = True) -> None:
        self._seed, self._rng = seed, np.random.default_rng(seed)
        self._random = optuna.samplers.RandomSampler(seed=seed)
        self.reference, self.parallel = reference, parallel
        self.mc_samples, self.max_candidates, self.n_startup = mc_samples, max_candidates, n_startup
        self._fixed_knobs: dict[str, Any] = {}
        self._timed_graphs: dict[str, dict[str, Any]] = {}  # the study's graph timings (`records.graph_latencies`)
        self.trend = trend  # a ridge trend under the processes: unseen prune ratios follow it, not the mean

    # ---- Optuna's sampler protocol ------------------------------------------------------------------
    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return optuna.search_space.IntersectionSearchSpace(include_pruned=True).calculate(study)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        if not search_space:
            return {}
        pick = self.next_config(study, search_space)
        return {} if pick is None else pick

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._random.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._random.after_trial(study, trial, state, values)

    # ---- the choice -----------------------------------------------------------------------------------
    def next_config(self, study: optuna.Study, space: dict[str, BaseDistribution]) -> dict[str, Any] | None:
        """The untaken config with the largest expected hypervolume gain per second (None: every one taken)."""
        self._fixed_knobs = self._fixed(study)
        self._timed_graphs = records.graph_latencies(study)
        points, taken = self._observe(study, space)
        from lepton_search.graphs import is_base

        grid = [c for c in _grid(space, self._rng, self.max_candidates)
                if self._key(c) not in taken and not is_base(self._full(c))]
        if not grid:
            return None
        eligible = self._eligible(grid, points, space)
        eligible = self._not_rejected(study, eligible, points) or eligible or grid
        trained = [p for p in points if not p.rejected]
        if len(trained) < self.n_startup:
            return eligible[int(self._rng.integers(len(eligible)))]
        ref = self._reference(study, points)
        front = [(p.accuracy, p.latency_ms) for p in trained if p.accuracy > ref[0]]
        if self.parallel:  # running trials elsewhere: believed at their predicted point
            front += self._running_beliefs(study, space, trained)
        acc_mu, acc_sd = self._predict_accuracy(trained, eligible, space)
        lat_mu, lat_sd, lat_known = self._predict_latency(points, eligible, space)
        cost = self._cost(points, eligible, space)
        z = np.random.default_rng([self._seed, len(points)]).standard_normal((2, self.mc_samples))
        acc = acc_mu[:, None] + acc_sd[:, None] * z[0]
        lat = np.where(lat_known[:, None], lat_mu[:, None], np.exp(np.log(lat_mu)[:, None] + lat_sd[:, None] * z[1]))
        score = improvement(acc, lat, front, ref).mean(axis=1) / cost
        if not np.any(score > 0):  # nothing is expected to help: the least known of the cheapest steps
            score = acc_sd / cost
        best = np.flatnonzero(score >= score.max() * (1 - 1e-9))
        return eligible[int(best[self._rng.integers(len(best))])]

    def _full(self, params: dict[str, Any]) -> Any:
        """A trial's params as the engine's whole config: the stored space's fixed knobs, no-ops elsewhere."""
        from lepton_search.knobs import KNOBS
        from lepton_search.space import CompressionConfig

        noop = {k.name: k.noop for k in KNOBS}
        return CompressionConfig.from_dict({**noop, **self._fixed_knobs, **{k: v for k, v in params.items() if k in noop}})

    def _key(self, params: dict[str, Any]) -> str:
        """The model `params` make (`graphs.model_config`): prune_method at ratio 0 is one model, not two."""
        from lepton_search.graphs import model_config

        return json.dumps(model_config(self._full(params)), sort_keys=True, default=str)

    def _graph(self, params: dict[str, Any]) -> str:
        """The study's name of `params`' graph (`graphs.graph_key`), under which its timing is stored."""
        from lepton_search.graphs import graph_key

        return graph_key(self._full(params))

    def _chain(self, params: dict[str, Any]) -> str:
        """The chain of `params`: its graph (`graphs.graph_config`); its epochs are its steps."""
        from lepton_search.graphs import graph_config

        return json.dumps(graph_config(self._full(params)), sort_keys=True, default=str)

    def _observe(self, study: optuna.Study, space: dict[str, BaseDistribution]) -> tuple[list[_Point], set]:
        points, taken = [], set()
        for t in study.get_trials(deepcopy=False):
            if not all(k in t.params for k in space):
                continue
            params = {k: t.params[k] for k in space}
            if t.state in (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING, TrialState.PRUNED):
                taken.add(self._key(params))
            if t.state != TrialState.COMPLETE or t.values is None or len(t.values) < 2:
                continue
            attrs = t.user_attrs
            wall = attrs.get(TRIAL_SECONDS)
            if wall is None and t.datetime_start is not None and t.datetime_complete is not None:
                wall = (t.datetime_complete - t.datetime_start).total_seconds()
            epochs = int(params.get(FIDELITY, attrs.get(FIDELITY, 0)) or 0)
            new = max(0, epochs - int(attrs.get("finetune_epochs_reused") or 0))
            points.append(_Point(params, float(t.values[0]), float(t.values[1]), records.rejected(t) is not None,
                                 None if wall is None else float(wall), float(attrs.get("finetune_seconds") or 0.0),
                                 new if records.rejected(t) is None else 0))
        return points, taken

    def _not_rejected(self, study: optuna.Study, rows: list[dict[str, Any]], points: list[_Point]) -> list[dict[str, Any]]:
        """`rows` less those the study's early-rejection rule would reject before training (`rejection.py`): a
        chain whose graph the study has timed, no faster than a found point within one standard error of the base's
        accuracy. A black-box sampler proposes them and pays their probe; this one knows the latency already."""
        from lepton_search.rejection import dominated_before_training

        stored = records.study_space(study) or {}
        base = records.BaseRecord.of(study)
        if base is None or stored.get("early_reject", "dominated") != "dominated":
            return rows
        found = [(p.latency_ms, p.accuracy) for p in points if not p.rejected]
        latency = {}
        for p in points:
            latency.setdefault(self._chain(p.params), p.latency_ms)
        tolerance = self._score_noise(study) or 0.0
        return [r for r in rows if int(r.get(FIDELITY, 0)) == 0 or self._chain(r) not in latency
                or dominated_before_training(latency[self._chain(r)], found, base.accuracy, tolerance) is None]

    def _weights_cut(self, params: dict[str, Any]) -> bool:
        """Whether a module-stage technique (pruning, layers, embedding width, weight sharing) acts on `params`:
        such a model needs its fine-tuning (pruned and untrained, the CNN kept 0.44 of 0.93)."""
        from lepton_search.techniques import stages

        config = self._full(params)
        return any(t.active(config) for t in stages.registered() if t.stage == "module")

    def _eligible(self, grid: list[dict[str, Any]], points: list[_Point],
                  space: dict[str, BaseDistribution]) -> list[dict[str, Any]]:
        """A chain runs its epochs in order: a config at e epochs (e above the smallest positive one) waits for
        the same chain at the step before; a chain rejected before training is not continued. Untrained configs
        are proposed only where no weights were cut (quantization alone, fewer tokens): a pruned model's
        untrained point is no front point, and the rejection probe times its graph anyway."""
        if FIDELITY not in space:
            return grid
        steps = sorted({c[FIDELITY] for c in grid} | {p.params[FIDELITY] for p in points})
        positive = [e for e in steps if e > 0]
        done, dead = set(), set()
        for p in points:
            (dead if p.rejected else done).add((self._chain(p.params), p.params[FIDELITY]))
        dead_chains = {c for c, _ in dead}
        out = []
        for c in grid:
            e, chain = c[FIDELITY], self._chain(c)
            if e == 0:
                if not self._weights_cut(c):
                    out.append(c)
            elif chain in dead_chains:
                continue
            elif e == positive[0] or (chain, positive[positive.index(e) - 1]) in done:
                out.append(c)
        return out

    @staticmethod
    def _fixed(study: optuna.Study) -> dict[str, Any]:
        """The stored space's fixed knobs (one value: not sampled, so not in a trial's params)."""
        from lepton_search.errors import ConfigError
        from lepton_search.space import SearchSpace

        stored = records.study_space(study)
        try:
            return SearchSpace.from_dict(stored, source="stored space").fixed_knobs() if stored else {}
        except ConfigError:
            return {}

    @staticmethod
    def _score_noise(study: optuna.Study) -> float | None:
        """One standard error of the base's validation accuracy (`tasks.accuracy_standard_error`, the rule's
        tolerance); None for a task without a closed form."""
        from lepton_search.tasks import accuracy_standard_error

        base = records.BaseRecord.of(study)
        if base is None or not base.val_total or not 0.0 < base.accuracy < 1.0:
            return None
        return accuracy_standard_error(base.accuracy, base.val_total)

    def _reference(self, study: optuna.Study, points: list[_Point]) -> tuple[float, float]:
        if self.reference is not None:
            return self.reference
        base = records.BaseRecord.of(study)
        if base is None:  # no base stored: the observed extremes
            return (max(p.accuracy for p in points) - DEFAULT_DROP_PTS / 100, max(p.latency_ms for p in points))
        constraints = (records.study_space(study) or {}).get("constraints", {})
        if constraints.get("max_accuracy_drop_pts") is not None:
            drop = constraints["max_accuracy_drop_pts"] / 100
        elif constraints.get("max_metric_drop") is not None:
            drop = float(constraints["max_metric_drop"])
        else:
            drop = DEFAULT_DROP_PTS / 100 if 0.0 <= base.accuracy <= 1.0 else 0.02 * abs(base.accuracy)
        return (base.accuracy - drop, base.latency_ms)

    def _predict_accuracy(self, trained: list[_Point], rows: list[dict[str, Any]],
                          space: dict[str, BaseDistribution]) -> tuple[np.ndarray, np.ndarray]:
        """Mean and sd of each row's accuracy: one Gaussian process for fine-tuned configs, one for untrained ones
        (0 epochs: pruned and untrained is another regime, 0.44 against 0.92 after four epochs on the CNN). With no
        point of a regime yet, the prior: the best accuracy seen, with a sd of 3% of it."""
        encode = _Encoder(space)
        mu, sd = np.empty(len(rows)), np.empty(len(rows))
        best = max(p.accuracy for p in trained)
        for untrained in (False, True):
            idx = [i for i, r in enumerate(rows) if (int(r.get(FIDELITY, 0)) == 0) == untrained]
            if not idx:
                continue
            seen = [p for p in trained if (int(p.params.get(FIDELITY, 0)) == 0) == untrained]
            if not seen:
                mu[idx], sd[idx] = best, 0.03 * max(abs(best), 1e-3)
                continue
            y = np.array([p.accuracy for p in seen])
            model = _gp(encode([p.params for p in seen]), y, self._seed, prior_sd=0.03 * max(abs(best), 1e-3),
                        trend=self.trend)
            m, s = model.predict(encode([rows[i] for i in idx]))
            mu[idx], sd[idx] = m, np.maximum(s, 1e-9)
        return mu, sd

    def _predict_latency(self, points: list[_Point], rows: list[dict[str, Any]],
                         space: dict[str, BaseDistribution]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per row: latency (the chain's measured one where any of its trials ran, else predicted), the sd of its
        log where predicted, and whether it is known."""
        seen: dict[tuple, list[float]] = {}
        chains: dict[tuple, dict[str, Any]] = {}
        for p in points:
            seen.setdefault(self._chain(p.params), []).append(p.latency_ms)
            chains[self._chain(p.params)] = p.params
        timed = self._timed_graphs
        known = np.array([self._chain(r) in seen or self._graph(r) in timed for r in rows])
        mu, sd = np.ones(len(rows)), np.zeros(len(rows))
        for i, r in enumerate(rows):
            if self._chain(r) in seen:
                mu[i] = float(np.median(seen[self._chain(r)]))
            elif known[i]:  # timed by the study before any trial of it ran (a budget probe: `rejection.py`)
                mu[i] = float(timed[self._graph(r)]["p50_ms"])
        if (~known).any():
            encode = _Encoder(space, drop=(FIDELITY,))
            keys = list(seen)
            y = np.log([float(np.median(seen[k])) for k in keys])
            model = _gp(encode([chains[k] for k in keys]), y, self._seed, prior_sd=0.5, trend=self.trend)
            unseen = [r for r, k in zip(rows, known) if not k]
            m, s = model.predict(encode(unseen))
            mu[~known], sd[~known] = np.exp(m), s
        return mu, sd, known

    def _cost(self, points: list[_Point], rows: list[dict[str, Any]], space: dict[str, BaseDistribution]) -> np.ndarray:
        """Seconds each row would take: the study's median seconds outside training, plus the epochs its chain has
        not trained yet at the chain's measured (or the study's median) seconds per epoch."""
        outside = [p.wall_s - p.finetune_s for p in points if p.wall_s is not None]
        overhead = max(float(np.median(outside)) if outside else 1.0, 1e-3)
        per_epoch: dict[tuple, list[float]] = {}
        trained: dict[tuple, int] = {}
        for p in points:
            chain = self._chain(p.params)
            if p.new_epochs > 0 and p.finetune_s > 0:
                per_epoch.setdefault(chain, []).append(p.finetune_s / p.new_epochs)
            if not p.rejected:
                trained[chain] = max(trained.get(chain, 0), int(p.params.get(FIDELITY, 0)))
        every = [s for v in per_epoch.values() for s in v]
        study_epoch = float(np.median(every)) if every else 10.0 * overhead
        cost = np.empty(len(rows))
        for i, r in enumerate(rows):
            chain = self._chain(r)
            epoch_s = float(np.median(per_epoch[chain])) if chain in per_epoch else study_epoch
            cost[i] = overhead + max(0, int(r.get(FIDELITY, 0)) - trained.get(chain, 0)) * epoch_s
        return cost

    def _running_beliefs(self, study: optuna.Study, space: dict[str, BaseDistribution],
                         trained: list[_Point]) -> list[tuple[float, float]]:
        running = [{k: t.params[k] for k in space} for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                   if all(k in t.params for k in space)]
        if not running:
            return []
        mu, _ = self._predict_accuracy(trained, running, space)
        lat, _, _ = self._predict_latency(trained, running, space)
        return list(zip(mu.tolist(), lat.tolist()))
