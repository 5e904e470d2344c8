"""SearchSpace (what may be sampled) and CompressionConfig (one sampled point).

A space comes from YAML (`SearchSpace.from_yaml`) or keyword arguments and is validated on
construction, so a typo fails in milliseconds rather than after the base model has trained.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lepton_search.errors import ConfigError, did_you_mean

SUPPORTED_BITS = (32, 16, 8, 4)
PRUNE_METHODS = ("structured", "global", "unstructured")
OBJECTIVES = {"accuracy": "maximize", "latency_ms": "minimize", "size_mb": "minimize",
              "usd_per_million_inferences": "minimize"}
SAMPLERS = ("tpe", "nsga2", "gp", "random")
# Rules that reject a config before fine-tuning, beside the budgets (`study.dominated_before_training`).
EARLY_REJECT = ("dominated", "off")
# What a fresh study evaluates before its sampler proposes anything (`SearchSpace.anchor_configs`).
ANCHORS = ("untrained", "off")
# Constraint name -> (the measured figure it limits, "max" or "min"). The accuracy limit needs the trained
# model; the other three are budgets the untrained candidate already answers (its graph is the same).
CONSTRAINTS = {"max_accuracy_drop_pts": ("accuracy_drop_pts", "max"), "max_latency_ms": ("latency_ms", "max"),
               "min_speedup": ("speedup", "min"), "max_size_mb": ("size_mb", "max")}
BUDGETS = ("max_latency_ms", "min_speedup", "max_size_mb")
# A link to the top-level search_spaces/default.yaml (the source); the wheel ships the file itself.
DEFAULT_SPACE_PATH = Path(__file__).with_name("default_space.yaml")


@dataclass(frozen=True)
class Knob:
    """One compression knob: how it is sampled and what it means. `kind` is float, int or categorical."""

    name: str
    kind: str
    help: str


# The one list of knobs. A new knob: a Knob here, a field in CompressionConfig and in SearchSpace (with
# its parsing and check below), and the technique that reads it. Results, reports, model cards and the
# dashboard read this list; nothing else names the knobs.
KNOBS: tuple[Knob, ...] = (
    Knob("prune_ratio", "float", "share of output channels removed per layer"),
    Knob("prune_method", "categorical", "structured: each layer loses prune_ratio of its channels; global: channels "
         "ranked across layers, the net loses prune_ratio; unstructured: weights zeroed (same graph)"),
    Knob("round_to", "categorical", "structured pruning keeps channel counts that are multiples of this (SIMD-friendly)"),
    Knob("bits", "categorical", "stored width of weights (and activations at 8): 32, 16, 8 or 4"),
    Knob("finetune_epochs", "int", "epochs of distillation from the unpruned base"),
)
KNOB_NAMES: tuple[str, ...] = tuple(k.name for k in KNOBS)


@dataclass(frozen=True)
class CompressionConfig:
    """One point of the space: what `compress` turns into a Candidate."""

    prune_ratio: float
    bits: int
    finetune_epochs: int
    prune_method: str = "structured"
    round_to: int = 1

    def as_dict(self) -> dict[str, Any]:
        """Knob name -> value, in KNOBS order: the identity used to spot an already-evaluated config."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values["prune_ratio"] = round(float(values["prune_ratio"]), 6)
        return {name: values[name] for name in KNOB_NAMES}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CompressionConfig:
        """Inverse of `as_dict`; knobs missing from `values` (a study older than the knob) take their default."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def label(self) -> str:
        bits = {32: "fp32", 16: "fp16"}.get(self.bits, f"int{self.bits}")
        rounded = f"r{self.round_to}" if self.round_to > 1 else ""
        return f"{self.prune_method[0]}{self.prune_ratio:.2f}{rounded}/{bits}/ft{self.finetune_epochs}"


@dataclass(frozen=True)
class FinetuneSettings:
    """How each candidate is fine-tuned (distillation from the unpruned base)."""

    subset_size: int | float | str = 8000  # train samples per epoch: a count, a fraction in (0, 1], or "all"
    batch_size: int = 128
    lr: float = 0.01
    temperature: float = 4.0
    distill_weight: float = 0.7
    bn_batches: int = 20
    calibration_size: int = 300

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


@dataclass(frozen=True)
class SearchSpace:
    """The knobs a study samples, plus its objectives, constraints and sampler.

    Example:
        >>> space = SearchSpace(prune_ratio=(0.0, 0.5, 0.25), bits=(32, 8), finetune_epochs=(0, 1))
        >>> space.n_configs
        12
    """

    prune_ratio: tuple[float, float, float] = (0.0, 0.75, 0.25)
    prune_method: str | tuple[str, ...] = "structured"  # a list is sampled
    round_to: int | tuple[int, ...] = 1  # a list is sampled
    bits: tuple[int, ...] = (32, 8)
    finetune_epochs: tuple[int, int] = (0, 2)
    objectives: tuple[str, ...] = ("accuracy", "latency_ms")
    max_accuracy_drop_pts: float | None = None
    max_latency_ms: float | None = None  # budgets: checked on the untrained candidate before any fine-tuning
    min_speedup: float | None = None
    max_size_mb: float | None = None
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

    def __post_init__(self) -> None:
        object.__setattr__(self, "prune_ratio", tuple(float(v) for v in _seq("prune_ratio", self.prune_ratio, 3)))
        object.__setattr__(self, "bits", tuple(_seq("bits", self.bits, None)))
        object.__setattr__(self, "prune_method", _one_or_many("prune_method", self.prune_method))
        object.__setattr__(self, "round_to", _one_or_many("round_to", self.round_to))
        object.__setattr__(self, "finetune_epochs", tuple(_seq("finetune_epochs", self.finetune_epochs, 2)))
        object.__setattr__(self, "objectives", tuple(_seq("objectives", self.objectives, None)))
        _validate(self)

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
        kwargs: dict[str, Any] = {}
        if "prune_ratio" in knobs:
            kwargs["prune_ratio"] = _range("knobs.prune_ratio", knobs["prune_ratio"], ("low", "high", "step"))
        if "finetune_epochs" in knobs:
            kwargs["finetune_epochs"] = _range("knobs.finetune_epochs", knobs["finetune_epochs"], ("low", "high"))
        for name in ("prune_method", "round_to", "bits"):
            if name in knobs:
                kwargs[name] = knobs[name]
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
        low, high, step = self.prune_ratio
        return {
            "knobs": {
                "prune_ratio": {"low": low, "high": high, "step": step},
                "prune_method": _plain(self.prune_method),
                "round_to": _plain(self.round_to),
                "bits": list(self.bits),
                "finetune_epochs": {"low": self.finetune_epochs[0], "high": self.finetune_epochs[1]},
            },
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
        low, high, step = self.prune_ratio
        n = math.floor((high - low) / step + 1e-9) + 1
        return [round(low + i * step, 6) for i in range(n)]

    def domain(self, knob: str) -> list[Any]:
        """Every value `knob` can take in this space (one value: the knob is fixed, not sampled)."""
        if knob == "prune_ratio":
            return self.prune_ratios
        if knob == "finetune_epochs":
            return list(range(self.finetune_epochs[0], self.finetune_epochs[1] + 1))
        value = getattr(self, knob)
        return list(value) if isinstance(value, tuple) else [value]

    @property
    def n_configs(self) -> int:
        return math.prod(len(self.domain(k.name)) for k in KNOBS)

    def suggest(self, trial: Any) -> CompressionConfig:
        """Sample one CompressionConfig from an Optuna trial; a knob with one value is fixed, not sampled."""
        values: dict[str, Any] = {}
        for knob in KNOBS:
            domain = self.domain(knob.name)
            if len(domain) == 1:
                values[knob.name] = domain[0]
            elif knob.kind == "float":
                low, high, step = self.prune_ratio if knob.name == "prune_ratio" else (domain[0], domain[-1], None)
                values[knob.name] = round(float(trial.suggest_float(knob.name, low, high, step=step)), 6)
            elif knob.kind == "int":
                values[knob.name] = int(trial.suggest_int(knob.name, domain[0], domain[-1]))
            else:
                values[knob.name] = trial.suggest_categorical(knob.name, domain)
        return CompressionConfig.from_dict(values)

    def configs(self) -> list[CompressionConfig]:
        """Every config of the space (the grid), in a fixed order."""
        names = [k.name for k in KNOBS]
        return [CompressionConfig.from_dict(dict(zip(names, values)))
                for values in itertools.product(*(self.domain(n) for n in names))]

    def anchor_configs(self) -> list[CompressionConfig]:
        """What a fresh study evaluates first (`anchors: untrained`): the unpruned model, untrained, at each bit
        width below 32 in the space, i.e. quantization alone. They run no fine-tuning step (seconds each), are
        the point any pruning must beat, and give early rejection a point at about the base's accuracy before
        the first config trains. None when the space lacks ratio 0 or 0 epochs, or has no bits below 32 (the
        FP32 unpruned model is the base, measured anyway)."""
        if self.anchors == "off" or 0.0 not in self.prune_ratios or self.finetune_epochs[0] != 0:
            return []
        first = {k.name: self.domain(k.name)[0] for k in KNOBS}  # method and round_to: no effect at ratio 0
        return [CompressionConfig.from_dict({**first, "prune_ratio": 0.0, "finetune_epochs": 0, "bits": b})
                for b in self.bits if b != 32]

    def params(self, config: CompressionConfig) -> dict[str, Any]:
        """The Optuna params that make `suggest` return `config` (its sampled knobs only)."""
        fixed = self.fixed_knobs()
        return {k: v for k, v in config.as_dict().items() if k not in fixed}

    def violations(self, figures: dict[str, float], names: tuple[str, ...] = tuple(CONSTRAINTS)) -> dict[str, float]:
        """Constraint name -> how far `figures` miss it (> 0 violated, <= 0 met), for the set ones in `names`."""
        out = {}
        for name in names:
            limit = getattr(self, name)
            if limit is not None:
                figure, kind = CONSTRAINTS[name]
                out[name] = figures[figure] - limit if kind == "max" else limit - figures[figure]
        return out

    def fixed_knobs(self) -> dict[str, Any]:
        """Knobs with a single value in this space: name -> that value."""
        return {k.name: self.domain(k.name)[0] for k in KNOBS if len(self.domain(k.name)) == 1}


def default_space() -> SearchSpace:
    return SearchSpace.from_yaml(DEFAULT_SPACE_PATH)


# ---- validation helpers -----------------------------------------------------------------
def _seq(name: str, value: Any, length: int | None) -> list[Any]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        value = [value] if length is None else value
    if not hasattr(value, "__iter__") or isinstance(value, (str, bytes)):
        raise ConfigError(name, value, f"give a list of {length} numbers")
    value = list(value)
    if length is not None and name == "prune_ratio" and len(value) == 2:
        value = [*value, 0.05]
    if length is not None and len(value) != length:
        raise ConfigError(name, value, f"give {length} numbers ({'low, high, step' if length == 3 else 'low, high'})")
    return value


def _one_or_many(name: str, value: Any) -> Any:
    """A knob given as one value stays a value; a list of several becomes a tuple (sampled)."""
    if isinstance(value, (list, tuple)):
        if not value:
            raise ConfigError(name, list(value), "give one value or a non-empty list")
        if len(set(value)) != len(value):
            raise ConfigError(name, list(value), "remove the repeated values")
        return value[0] if len(value) == 1 else tuple(value)
    return value


def _plain(value: Any) -> Any:
    """YAML-shaped: a tuple becomes a list."""
    return list(value) if isinstance(value, tuple) else value


def _range(name: str, value: Any, keys: tuple[str, ...]) -> list[Any]:
    if isinstance(value, dict):
        _check_keys(name, value, set(keys))
        missing = [k for k in keys[:2] if k not in value]
        if missing:
            raise ConfigError(name, value, f"add {' and '.join(missing)} (keys: {', '.join(keys)})")
        return [value[k] for k in keys if k in value]
    if isinstance(value, (int, float)):
        return [value, value] + ([1.0] if len(keys) == 3 else [])
    return _seq(name, value, len(keys))


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
    low, high, step = space.prune_ratio
    for v in space.prune_ratio:
        _number("prune_ratio", v, float)
    if not (0.0 <= low <= high < 1.0):
        raise ConfigError("prune_ratio", [low, high], "need 0 <= low <= high < 1 (share of channels removed)")
    if step <= 0:
        raise ConfigError("prune_ratio.step", step, "must be > 0, e.g. 0.05")
    for method in space.domain("prune_method"):
        if method not in PRUNE_METHODS:
            raise ConfigError("prune_method", method, f"unknown method; {did_you_mean(method, PRUNE_METHODS)}")
    for multiple in space.domain("round_to"):
        _number("round_to", multiple, int)
        if not 1 <= multiple <= 64:
            raise ConfigError("round_to", multiple, "must be a whole number of channels from 1 (no rounding) to 64, e.g. 4 or 8")
    if not space.bits:
        raise ConfigError("bits", [], f"give at least one of {list(SUPPORTED_BITS)}")
    for b in space.bits:
        if b not in SUPPORTED_BITS or isinstance(b, bool):
            raise ConfigError("bits", b, f"unsupported bit width; choose from {list(SUPPORTED_BITS)}")
    if len(set(space.bits)) != len(space.bits):
        raise ConfigError("bits", list(space.bits), "remove the repeated bit widths")
    e_low, e_high = space.finetune_epochs
    for v in (e_low, e_high):
        _number("finetune_epochs", v, int)
    if not (0 <= e_low <= e_high):
        raise ConfigError("finetune_epochs", [e_low, e_high], "need 0 <= low <= high (whole epochs)")
    if not space.objectives:
        raise ConfigError("objectives", [], f"name at least one of {sorted(OBJECTIVES)}")
    for o in space.objectives:
        if o not in OBJECTIVES:
            raise ConfigError("objectives", o, f"unknown objective; {did_you_mean(o, OBJECTIVES)}")
    if len(set(space.objectives)) != len(space.objectives):
        raise ConfigError("objectives", list(space.objectives), "remove the repeated objectives")
    if space.max_accuracy_drop_pts is not None:
        _number("constraints.max_accuracy_drop_pts", space.max_accuracy_drop_pts, float)
        if space.max_accuracy_drop_pts < 0:
            raise ConfigError("constraints.max_accuracy_drop_pts", space.max_accuracy_drop_pts, "must be >= 0 (points)")
    for name in ("max_latency_ms", "min_speedup", "max_size_mb"):
        value = getattr(space, name)
        if value is not None:
            _number(f"constraints.{name}", value, float)
            if value <= 0:
                raise ConfigError(f"constraints.{name}", value, "must be > 0 (or left out for no budget)")
    if space.sampler not in SAMPLERS:
        raise ConfigError("sampler", space.sampler, f"unknown sampler; {did_you_mean(space.sampler, SAMPLERS)}")
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
    if not (isinstance(ft.lr, (int, float)) and ft.lr > 0):
        raise ConfigError("finetune.lr", ft.lr, "must be a number > 0, e.g. 0.01")
    for name in ("threads", "batch_size", "runs", "max_repeats"):
        _number(f"latency.{name}", getattr(lat, name), int)
        if getattr(lat, name) < 1:
            raise ConfigError(f"latency.{name}", getattr(lat, name), "must be >= 1")
    if lat.runs < 20:
        raise ConfigError("latency.runs", lat.runs, "use at least 20 timed runs for a stable median")
