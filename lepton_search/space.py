"""SearchSpace (what may be sampled) and CompressionConfig (one sampled point).

A space comes from YAML (`SearchSpace.from_yaml`) or keyword arguments and is validated on
construction, so a typo fails in milliseconds rather than after the base model has trained.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lepton_search.errors import ConfigError, did_you_mean
from lepton_search.knobs import KNOB_NAMES, KNOBS, PRUNE_METHODS, SUPPORTED_BITS, Domain, Knob

__all__ = ["ANCHORS", "BUDGETS", "CONSTRAINTS", "DEFAULT_SPACE_PATH", "EARLY_REJECT", "KNOBS", "KNOB_NAMES",
           "OBJECTIVES", "PRUNE_METHODS", "SAMPLERS", "SUPPORTED_BITS", "CompressionConfig", "FinetuneSettings",
           "Knob", "LatencySettings", "SearchSpace", "default_space"]
OBJECTIVES = {"accuracy": "maximize", "latency_ms": "minimize", "size_mb": "minimize",
              "usd_per_million_inferences": "minimize"}
SAMPLERS = ("tpe", "nsga2", "gp", "random", "front")  # samplers.SAMPLER_REGISTRY builds each (a test checks)
# Rules that reject a config before fine-tuning, beside the budgets (`study.dominated_before_training`).
EARLY_REJECT = ("dominated", "off")
# What a fresh study evaluates before its sampler proposes anything (`SearchSpace.anchor_configs`).
ANCHORS = ("untrained", "off")
# Constraint name -> (the measured figure it limits, "max" or "min"). The quality limits need the trained model
# (max_accuracy_drop_pts: classifiers, in points; max_metric_drop: any task, in its metric's unit, e.g. an RMSE
# increase); the other three are budgets the untrained candidate already answers (its graph is the same).
# New names go last: studies written before layouts were recorded list their constraints in this order.
CONSTRAINTS = {"max_accuracy_drop_pts": ("accuracy_drop_pts", "max"), "max_latency_ms": ("latency_ms", "max"),
               "min_speedup": ("speedup", "min"), "max_size_mb": ("size_mb", "max"),
               "max_metric_drop": ("metric_drop", "max")}
BUDGETS = ("max_latency_ms", "min_speedup", "max_size_mb")
# A link to the top-level search_spaces/default.yaml (the source); the wheel ships the file itself.
DEFAULT_SPACE_PATH = Path(__file__).with_name("default_space.yaml")
TRANSFORMER_SPACE_PATH = Path(__file__).with_name("transformer_space.yaml")


# The order of CompressionConfig's fields before the knobs became a table: CompressionConfig(0.25, 8, 1) still
# means prune_ratio 0.25, bits 8, 1 epoch, and label() writes these five compactly. A newer knob is keyword-only.
_POSITIONAL = ("prune_ratio", "bits", "finetune_epochs", "prune_method", "round_to")


@dataclass(frozen=True, init=False, repr=False, eq=False)
class CompressionConfig:
    """One point of the space, what `compress` turns into a Candidate: a value for every knob in `KNOBS`, read as
    an attribute (`config.bits`). A knob not given takes its no-op value (`Knob.noop`).

    Example:
        >>> config = CompressionConfig(0.25, 8, 1, round_to=8)  # prune_ratio, bits, finetune_epochs; then keywords
        >>> config.bits, config.prune_method, config.label()
        (8, 'structured', 's0.25r8/int8/ft1')
    """

    _values: Mapping[str, Any]  # knob name -> value, in KNOBS order

    def __init__(self, *args: Any, _values: Mapping[str, Any] | None = None, **knobs: Any) -> None:
        """Knobs by keyword (the first five also by position: `_POSITIONAL`); `_values` is what
        `dataclasses.replace` passes back."""
        if len(args) > len(_POSITIONAL):
            raise TypeError(f"CompressionConfig takes at most {len(_POSITIONAL)} positional knobs {_POSITIONAL}")
        given = dict(_values or {})
        for name, value in zip(_POSITIONAL, args):
            if name in knobs:
                raise TypeError(f"CompressionConfig got {name!r} by position and by keyword")
            given[name] = value
        given.update(knobs)
        for name in given:
            if name not in KNOBS:
                raise TypeError(f"CompressionConfig got an unknown knob {name!r}; {did_you_mean(name, KNOB_NAMES)}")
        object.__setattr__(self, "_values", {k.name: given.get(k.name, k.noop) for k in KNOBS})

    def __getattr__(self, name: str) -> Any:
        values = self.__dict__.get("_values", {})  # absent while pickle or copy rebuilds the object
        if name in values:
            return values[name]
        if name in KNOBS:  # a knob registered after this config was made: it did nothing here
            return KNOBS[name].noop
        raise AttributeError(f"'CompressionConfig' object has no attribute {name!r}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CompressionConfig) and self._values == other._values

    def __hash__(self) -> int:
        return hash(tuple(self._values.items()))

    def __repr__(self) -> str:
        return f"CompressionConfig({', '.join(f'{k}={v!r}' for k, v in self._values.items())})"

    def as_dict(self) -> dict[str, Any]:
        """Knob name -> value, in KNOBS order: the identity used to spot an already-evaluated config."""
        return {k.name: k.default.canonical(getattr(self, k.name)) for k in KNOBS}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> CompressionConfig:
        """Inverse of `as_dict`; a knob missing from `values` (a study older than the knob) takes its no-op value,
        and a name that is no knob (any more) is ignored."""
        return cls(**{k: v for k, v in values.items() if k in KNOBS})

    def label(self) -> str:
        """A short name, e.g. `s0.25r8/int8/ft1`; a newer knob is added as `/name=value` when it is not at its no-op."""
        bits = {32: "fp32", 16: "fp16"}.get(self.bits, f"int{self.bits}")
        rounded = f"r{self.round_to}" if self.round_to > 1 else ""
        more = "".join(f"/{k.name}={getattr(self, k.name)}" for k in KNOBS
                       if k.name not in _POSITIONAL and getattr(self, k.name) != k.noop)
        return f"{self.prune_method[0]}{self.prune_ratio:.2f}{rounded}/{bits}/ft{self.finetune_epochs}{more}"


@dataclass(frozen=True)
class FinetuneSettings:
    """How each candidate is fine-tuned (distillation from the unpruned base).

    `optimizer` "auto" and `lr` None follow the model family (`techniques.finetune.recipe_for`): AdamW at 2e-4
    with linear warm-up and decay for Transformer encoders, SGD (Nesterov, one-cycle) at 0.005 for the rest; a
    search prints the recipe it resolved at its start and stores it with the study. The same defaults as
    `search_spaces/default.yaml` (`tests/test_space.py` checks that they agree).
    """

    subset_size: int | float | str = 5000  # train samples per epoch: a count, a fraction in (0, 1], or "all"
    batch_size: int = 16  # 16 and SGD 0.005 lost 0.82 pt where 128 and 0.01 lost 2.42 (experiments/demo_finetune.py)
    lr: float | None = None  # None: the optimizer's rate (training.RECIPES)
    optimizer: str = "auto"  # "sgd" | "adamw" | "auto" (the model family's recipe)
    # refit the head on the compressed model's features (teacher's outputs and labels, L-BFGS) before any epoch
    # (`finetune.refit_head`): "auto" = where a Transformer loses encoder layers (`finetune.refits_head`)
    head_refit: str = "auto"
    temperature: float = 4.0
    distill_weight: float = 0.7
    # > 0: Transformer students also match the teacher's encoder hidden states, this much of that loss added
    # (`techniques.layer_distill`, TinyBERT's uniform layer map); 0: outputs only
    hidden_weight: float = 0.0
    bn_batches: int = 20
    calibration_size: int = 300
    # where fine-tuning runs: "cpu" (the default and the tested path), "cuda" / "cuda:N", or "auto" (cuda when torch
    # sees one); recorded with the study and part of the checkpoint key. Export, INT8 and timing stay on the CPU.
    device: str = "cpu"

    def subset_of(self, n_train: int) -> int | None:
        """Train samples per fine-tune epoch for a split of `n_train` (None: the whole split)."""
        if self.subset_size == "all":
            return None
        if isinstance(self.subset_size, float) and self.subset_size <= 1.0:
            return max(1, round(self.subset_size * n_train))
        return int(self.subset_size)


@dataclass(frozen=True)
class LatencySettings:
    threads: int = 1
    batch_size: int = 1
    warmup: int = 10
    runs: int = 50
    max_cv: float = 0.05
    max_repeats: int = 3


@dataclass(frozen=True, init=False)
class SearchSpace:
    """The knobs a study samples, plus its objectives, constraints and sampler.

    A knob is given by its name, in the forms its `Knob.default` takes (`knobs.py`), and read back the same way
    (`space.prune_ratio` is (low, high, step), `space.bits` a tuple); a knob left out takes its default domain.

    Example:
        >>> space = SearchSpace(prune_ratio=(0.0, 0.5, 0.25), bits=(32, 8), finetune_epochs=(0, 1))
        >>> space.n_configs, space.domain("finetune_epochs")
        (12, [0, 1])
    """

    knobs: Mapping[str, Domain] = field(default_factory=dict)  # knob name -> its checked domain, in KNOBS order
    objectives: tuple[str, ...] = ("accuracy", "latency_ms")
    max_accuracy_drop_pts: float | None = None
    max_latency_ms: float | None = None  # budgets: checked on the untrained candidate before any fine-tuning
    min_speedup: float | None = None
    max_size_mb: float | None = None
    max_metric_drop: float | None = None  # any task: how much worse than the base, in its metric's unit
    sampler: str = "tpe"
    # dominated: a config no faster (untrained) than a found point at >= the base's accuracy (less one standard
    # error of its validation estimate) trains nothing
    early_reject: str = "dominated"
    # untrained: a fresh study first evaluates the unpruned model at each bit width below 32, untrained
    # (quantization alone: no fine-tuning step); off: the sampler proposes every trial
    anchors: str = "untrained"
    trials: int = 12
    seed: int = 0
    finetune: FinetuneSettings = field(default_factory=FinetuneSettings)
    latency: LatencySettings = field(default_factory=LatencySettings)

    def __init__(self, *, knobs: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        """Keyword arguments: each knob by its name (`bits=(32, 8)`), or all in `knobs` (what `dataclasses.replace`
        passes back: a keyword wins over it), and the fields above."""
        given = {**(knobs or {}), **{name: kwargs.pop(name) for name in list(kwargs) if name in KNOBS}}
        fields = {f.name: f for f in dataclasses.fields(self) if f.name != "knobs"}
        for name in [*given, *kwargs]:
            if name not in fields and name not in KNOBS:
                raise TypeError(f"SearchSpace got an unexpected keyword argument {name!r}; "
                                f"{did_you_mean(name, [*fields, *KNOB_NAMES])}")
        _check_knob_names(fields)
        for name, f in fields.items():
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
            object.__setattr__(self, name, kwargs.get(name, default))
        object.__setattr__(self, "knobs", {k.name: k.parse(given[k.name]) if k.name in given else k.default
                                           for k in KNOBS})
        object.__setattr__(self, "objectives", tuple(_listed(self.objectives)))
        _validate(self)

    def __getattr__(self, name: str) -> Any:
        # A knob reads as it is given: space.prune_ratio == (low, high, step), space.bits == (32, 8).
        if name in KNOBS and "knobs" in self.__dict__:  # (not while pickle or copy rebuilds the object)
            return self._domain(KNOBS[name]).plain()
        raise AttributeError(f"'SearchSpace' object has no attribute {name!r}")

    def __hash__(self) -> int:
        return hash(tuple(tuple(v.items()) if f.name == "knobs" else v
                          for f in dataclasses.fields(self) for v in [getattr(self, f.name)]))

    def _domain(self, knob: Knob) -> Domain:
        """This space's domain of `knob` (a knob registered after the space was made: its default)."""
        return self.knobs.get(knob.name, knob.default)

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_yaml(cls, path: str | Path) -> SearchSpace:
        """Read a space from a YAML file (see `search_spaces/default.yaml`)."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError("space", str(path), "pass the path of an existing YAML file")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark else ""
            raise ConfigError(f"{path.name}{where}", getattr(exc, "problem", str(exc)), "fix the YAML syntax") from None
        return cls.from_dict(data or {}, source=path.name)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "space") -> SearchSpace:
        if not isinstance(data, dict):
            raise ConfigError(source, type(data).__name__, "the top level must be a mapping of keys to values")
        _check_keys(source, data, {"knobs", "objectives", "constraints", "sampler", "early_reject", "anchors",
                                    "trials", "seed", "finetune", "latency"})
        knobs = data.get("knobs", {}) or {}
        _check_keys("knobs", knobs, set(KNOB_NAMES))
        kwargs: dict[str, Any] = {"knobs": {name: KNOBS[name].default.from_yaml(f"knobs.{name}", value)
                                            for name, value in knobs.items()}}
        constraints = data.get("constraints", {}) or {}
        _check_keys("constraints", constraints, set(CONSTRAINTS))
        kwargs.update({name: constraints[name] for name in CONSTRAINTS if name in constraints})
        for name in ("objectives", "sampler", "trials", "seed"):
            if name in data:
                kwargs[name] = data[name]
        for name, on in (("early_reject", "dominated"), ("anchors", "untrained")):
            if name in data:  # YAML 1.1 reads a bare off/on as a boolean
                value = data[name]
                kwargs[name] = (on if value else "off") if isinstance(value, bool) else value
        for name, settings_cls in (("finetune", FinetuneSettings), ("latency", LatencySettings)):
            if name in data:
                section = data[name] or {}
                _check_keys(name, section, {f.name for f in dataclasses.fields(settings_cls)})
                kwargs[name] = settings_cls(**section)
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The YAML-shaped form, stored with each study so a resumed study can be checked."""
        return {
            "knobs": {k.name: self._domain(k).to_yaml() for k in KNOBS},
            "objectives": list(self.objectives),
            "constraints": {name: getattr(self, name) for name in CONSTRAINTS},
            "sampler": self.sampler,
            "early_reject": self.early_reject,
            "anchors": self.anchors,
            "trials": self.trials,
            "seed": self.seed,
            "finetune": dataclasses.asdict(self.finetune),
            "latency": dataclasses.asdict(self.latency),
        }

    # ---- sampling -----------------------------------------------------------------------
    @property
    def directions(self) -> list[str]:
        return [OBJECTIVES[o] for o in self.objectives]

    @property
    def prune_ratios(self) -> list[float]:
        return self.domain("prune_ratio")

    def domain(self, knob: str) -> list[Any]:
        """Every value `knob` can take in this space (one value: the knob is fixed, not sampled)."""
        return self._domain(KNOBS[knob]).values()

    @property
    def n_configs(self) -> int:
        return math.prod(len(self.domain(k.name)) for k in KNOBS)

    def suggest(self, trial: Any) -> CompressionConfig:
        """Sample one CompressionConfig from an Optuna trial; a knob with one value is fixed, not sampled."""
        return CompressionConfig(**{k.name: self._domain(k).suggest(trial, k.name) for k in KNOBS})

    def configs(self) -> list[CompressionConfig]:
        """Every config of the space (the grid), in a fixed order."""
        names = [k.name for k in KNOBS]
        return [CompressionConfig(**dict(zip(names, values)))
                for values in itertools.product(*(self.domain(n) for n in names))]

    def anchor_configs(self) -> list[CompressionConfig]:
        """What a fresh study evaluates first (`anchors: untrained`): the unpruned model, untrained, at each bit
        width below 32 in the space, i.e. quantization alone. They run no fine-tuning step (seconds each), are
        the point any pruning must beat, and give early rejection a point at about the base's accuracy before
        the first config trains. None when the space lacks ratio 0 or 0 epochs, or has no bits below 32 (the
        FP32 unpruned model is the base, measured anyway). Each knob's `anchor` rule says how it is set."""
        if self.anchors == "off":
            return []
        fixed: dict[str, Any] = {}
        varied: dict[str, list[Any]] = {}
        for knob in KNOBS:
            values = self.domain(knob.name)
            if knob.anchor == "noop" and knob.noop not in values:
                return []
            if knob.anchor == "each":
                others = [v for v in values if v != knob.noop]
                if others or knob.name == "bits":  # bits only at 32: no anchors; another knob at its no-op: fixed
                    varied[knob.name] = others
                else:
                    fixed[knob.name] = knob.noop
            else:
                fixed[knob.name] = knob.noop if knob.anchor == "noop" else values[0]
        if not varied:
            return []
        return [CompressionConfig(**fixed, **dict(zip(varied, combo))) for combo in itertools.product(*varied.values())]

    def params(self, config: CompressionConfig) -> dict[str, Any]:
        """The Optuna params that make `suggest` return `config` (its sampled knobs only)."""
        fixed = self.fixed_knobs()
        return {k: v for k, v in config.as_dict().items() if k not in fixed}

    def set_constraints(self, names: tuple[str, ...] = tuple(CONSTRAINTS)) -> list[str]:
        """The constraints of `names` this space sets, in `CONSTRAINTS` order."""
        return [name for name in names if getattr(self, name) is not None]

    def violations(self, figures: dict[str, float], names: tuple[str, ...] = tuple(CONSTRAINTS)) -> dict[str, float]:
        """Constraint name -> how far `figures` miss it (> 0 violated, <= 0 met), for the set ones in `names`."""
        out = {}
        for name in self.set_constraints(names):
            limit, (figure, kind) = getattr(self, name), CONSTRAINTS[name]
            out[name] = figures[figure] - limit if kind == "max" else limit - figures[figure]
        return out

    def fixed_knobs(self) -> dict[str, Any]:
        """Knobs with a single value in this space: name -> that value."""
        return {k.name: self.domain(k.name)[0] for k in KNOBS if len(self.domain(k.name)) == 1}


FINETUNE_OPTIMIZERS = ("auto", "sgd", "adamw")


def default_space() -> SearchSpace:
    """The embedded default search (`search_spaces/default.yaml`: the demo's CNN)."""
    return SearchSpace.from_yaml(DEFAULT_SPACE_PATH)


# ---- validation helpers -----------------------------------------------------------------
def _listed(value: Any) -> list[Any]:
    """One value or a list of them, as a list."""
    return [value] if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__") else list(value)


def _check_knob_names(fields: Mapping[str, Any]) -> None:
    """A knob cannot share a name with a SearchSpace field or method, or a CompressionConfig method."""
    for knob in KNOBS:
        if knob.name in fields or hasattr(SearchSpace, knob.name) or hasattr(CompressionConfig, knob.name):
            raise ConfigError("knob", knob.name, "is the name of a SearchSpace or CompressionConfig attribute; rename the knob")


def _check_keys(section: str, data: Any, allowed: set[str]) -> None:
    if not isinstance(data, dict):
        raise ConfigError(section, data, "must be a mapping of keys to values")
    for key in data:
        if key not in allowed:
            raise ConfigError(f"{section}.{key}", data[key], f"unknown key; {did_you_mean(key, allowed)}")


def _number(name: str, value: Any, kind: type) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        ok = ok and float(value).is_integer()
    if not ok or (isinstance(value, float) and not math.isfinite(value)):
        raise ConfigError(name, value, f"must be {'an integer' if kind is int else 'a number'}")


def _validate(space: SearchSpace) -> None:
    # knobs: checked by Knob.parse on construction
    if not space.objectives:
        raise ConfigError("objectives", [], f"name at least one of {sorted(OBJECTIVES)}")
    for o in space.objectives:
        if o not in OBJECTIVES:
            raise ConfigError("objectives", o, f"unknown objective; {did_you_mean(o, OBJECTIVES)}")
    if len(set(space.objectives)) != len(space.objectives):
        raise ConfigError("objectives", list(space.objectives), "remove the repeated objectives")
    for name, unit in (("max_accuracy_drop_pts", "points"), ("max_metric_drop", "the metric's unit")):
        value = getattr(space, name)
        if value is not None:
            _number(f"constraints.{name}", value, float)
            if value < 0:
                raise ConfigError(f"constraints.{name}", value, f"must be >= 0 ({unit})")
    for name in ("max_latency_ms", "min_speedup", "max_size_mb"):
        value = getattr(space, name)
        if value is not None:
            _number(f"constraints.{name}", value, float)
            if value <= 0:
                raise ConfigError(f"constraints.{name}", value, "must be > 0 (or left out for no budget)")
    if space.sampler not in SAMPLERS:
        raise ConfigError("sampler", space.sampler, f"unknown sampler; {did_you_mean(space.sampler, SAMPLERS)}")
    if space.sampler == "front" and tuple(space.objectives) != ("accuracy", "latency_ms"):
        raise ConfigError("sampler", "front", f"searches objectives [accuracy, latency_ms] (its acquisition is their "
                          f"hypervolume), not {list(space.objectives)}; use tpe, gp or nsga2 for these objectives")
    if space.early_reject not in EARLY_REJECT:
        raise ConfigError("early_reject", space.early_reject, f"unknown rule; {did_you_mean(space.early_reject, EARLY_REJECT)}")
    if space.anchors not in ANCHORS:
        raise ConfigError("anchors", space.anchors, f"unknown value; {did_you_mean(space.anchors, ANCHORS)}")
    _number("trials", space.trials, int)
    if space.trials < 1:
        raise ConfigError("trials", space.trials, "must be >= 1")
    _number("seed", space.seed, int)
    ft, lat = space.finetune, space.latency
    size = ft.subset_size
    if size != "all" and not (isinstance(size, float) and 0 < size <= 1):  # else a count of samples
        _number("finetune.subset_size", size, int)
        if size < 1:
            raise ConfigError("finetune.subset_size", size, "give a sample count >= 1, a fraction in (0, 1] or 'all'")
    for name in ("batch_size", "bn_batches", "calibration_size"):
        _number(f"finetune.{name}", getattr(ft, name), int)
        if getattr(ft, name) < 1:
            raise ConfigError(f"finetune.{name}", getattr(ft, name), "must be >= 1")
    if ft.lr is not None and not (isinstance(ft.lr, (int, float)) and not isinstance(ft.lr, bool) and ft.lr > 0):
        raise ConfigError("finetune.lr", ft.lr, "must be a number > 0 (e.g. 0.005 for SGD, 2e-4 for AdamW), "
                          "or left out for the optimizer's rate")
    if ft.head_refit not in ("auto", "on", "off"):
        raise ConfigError("finetune.head_refit", ft.head_refit, "use auto, on or off")
    if not (isinstance(ft.hidden_weight, (int, float)) and not isinstance(ft.hidden_weight, bool) and ft.hidden_weight >= 0):
        raise ConfigError("finetune.hidden_weight", ft.hidden_weight, "must be a number >= 0 (0: match outputs only)")
    if not isinstance(ft.device, str) or not re.fullmatch(r"cpu|auto|cuda(:\d+)?", ft.device):
        raise ConfigError("finetune.device", ft.device, "use cpu, cuda, cuda:N or auto (cuda when torch sees one)")
    if ft.optimizer not in FINETUNE_OPTIMIZERS:
        raise ConfigError("finetune.optimizer", ft.optimizer,
                          f"unknown optimizer; {did_you_mean(str(ft.optimizer), FINETUNE_OPTIMIZERS)}")
    for name in ("threads", "batch_size", "runs", "max_repeats"):
        _number(f"latency.{name}", getattr(lat, name), int)
        if getattr(lat, name) < 1:
            raise ConfigError(f"latency.{name}", getattr(lat, name), "must be >= 1")
    if lat.runs < 20:
        raise ConfigError("latency.runs", lat.runs, "use at least 20 timed runs for a stable median")
