"""The knob table: every compression knob as data (name, domain, no-op value, check, help).

`SearchSpace` and `CompressionConfig` (space.py) loop over `KNOBS`; results, reports, model cards and the
dashboard read it too. A new knob is one `Knob` below plus the technique that reads it from the
`CompressionConfig` it is given (`docs/architecture.md`, "Extending it").

A knob's domain is one of three kinds, after optuna's `distributions.py`: `FloatRange(low, high, step)`
(`FloatDistribution`), `IntRange(low, high)` (`IntDistribution`), `Choices(choices)`
(`CategoricalDistribution`). Each samples itself from a trial, lists its grid, and reads and writes its YAML
form, so `SearchSpace` has no per-knob branch.

Example:
    >>> KNOBS["bits"].default.values()
    [32, 8]
    >>> with KNOBS.registered(Knob("toy", IntRange(1, 3), noop=1, help="a test knob")):
    ...     "toy" in KNOB_NAMES
    True
    >>> "toy" in KNOB_NAMES
    False
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from lepton_search.errors import ConfigError, did_you_mean

__all__ = ["ANCHOR_RULES", "DEFAULT_STEP", "FUSIONS", "INT4_ACCURACY_LEVELS", "INT4_BLOCKS", "INT4_HEAD_BITS", "INT8_MODES", "KNOBS", "KNOB_NAMES", "PRUNE_METHODS",
           "SUPPORTED_BITS", "Choices", "Domain", "FloatRange", "IntRange", "Knob", "KnobTable"]

SUPPORTED_BITS = (32, 16, 8, 4)
INT8_MODES = ("auto", "dynamic", "static")  # how an 8-bit file is made (techniques.quantize)
FUSIONS = ("off", "ort")  # techniques.fusion
# techniques.matmul_nbits: input rows sharing a scale (0: no MatMulNBits, the per-channel INT4 route) and the
# activations' arithmetic ONNX Runtime may use (0: unset; 1 FP32, 2 FP16, 3 BF16, 4 INT8)
INT4_BLOCKS = (0, 16, 32, 64, 128, 256)
INT4_ACCURACY_LEVELS = (0, 1, 2, 3, 4)
INT4_ZERO_POINTS = ("int", "float")
INT4_HEAD_BITS = (4, 8)  # a tied embedding / LM head with the other MatMuls (4) or stored once at 8 bits (8)
PRUNE_METHODS = ("structured", "global", "unstructured")
DEFAULT_STEP = 0.05  # the step of a float range given as (low, high)
# How a fresh study's anchors (`SearchSpace.anchor_configs`: quantization alone) set a knob:
# noop: at its no-op (a space without it has no anchors); each: one anchor per value other than its no-op;
# first: the first value of its domain (the knob does nothing while the others are at their no-op).
ANCHOR_RULES = ("noop", "each", "first")


class Domain(Protocol):
    """What a knob may take in one space: a FloatRange, an IntRange or Choices."""

    def parse(self, field: str, given: Any) -> Domain: ...
    def from_yaml(self, field: str, raw: Any) -> Any: ...
    def check(self, field: str, fix: Callable[[Any], str | None]) -> None: ...
    def values(self) -> list[Any]: ...
    def suggest(self, trial: Any, name: str) -> Any: ...
    def canonical(self, value: Any) -> Any: ...
    def plain(self) -> Any: ...
    def to_yaml(self) -> Any: ...


@dataclass(frozen=True)
class FloatRange:
    """Floats from `low` to `high` in steps of `step` (optuna's `FloatDistribution(low, high, step)`).

    Given as (low, high, step), (low, high) (step `DEFAULT_STEP`) or one number (fixed); YAML also takes
    {low, high, step}. `space.<knob>` is the (low, high, step) tuple.
    """

    low: float
    high: float
    step: float = DEFAULT_STEP

    def parse(self, field: str, given: Any) -> FloatRange:
        """A domain of this kind from what a user gave (a ConfigError naming `field` if it is no range)."""
        if isinstance(given, FloatRange):
            given = given.plain()
        values = [given, given, 1.0] if _is_number(given) else _numbers(field, given, (2, 3), float)
        low, high, step = (*(float(v) for v in values), DEFAULT_STEP)[:3]
        if step <= 0:
            raise ConfigError(f"{field}.step", step, "must be > 0, e.g. 0.05")
        if low > high:
            raise ConfigError(field, [low, high], "need low <= high")
        return FloatRange(low, high, step)

    def from_yaml(self, field: str, raw: Any) -> Any:
        return _unwrap(field, raw, ("low", "high", "step"))

    def check(self, field: str, fix: Callable[[Any], str | None]) -> None:
        _check_ends(field, self.low, self.high, fix)

    def values(self) -> list[float]:
        n = math.floor((self.high - self.low) / self.step + 1e-9) + 1
        return [round(self.low + i * self.step, 6) for i in range(n)]

    def suggest(self, trial: Any, name: str) -> float:
        if self.low == self.high:
            return self.values()[0]
        return self.canonical(trial.suggest_float(name, self.low, self.high, step=self.step))

    def canonical(self, value: Any) -> float:
        """The form configs are compared in: 6 decimals (0.1 + 0.2 is 0.3)."""
        return round(float(value), 6)

    def plain(self) -> tuple[float, float, float]:
        return (self.low, self.high, self.step)

    def to_yaml(self) -> dict[str, float]:
        return {"low": self.low, "high": self.high, "step": self.step}


@dataclass(frozen=True)
class IntRange:
    """Whole numbers from `low` to `high` (optuna's `IntDistribution(low, high)`).

    Given as (low, high) or one number (fixed); YAML also takes {low, high}. `space.<knob>` is the (low, high)
    tuple.
    """

    low: int
    high: int

    def parse(self, field: str, given: Any) -> IntRange:
        if isinstance(given, IntRange):
            given = given.plain()
        low, high = [given, given] if _is_number(given) else _numbers(field, given, (2,), int)
        _integer(field, low)
        _integer(field, high)
        if low > high:
            raise ConfigError(field, [low, high], "need low <= high")
        return IntRange(int(low), int(high))

    def from_yaml(self, field: str, raw: Any) -> Any:
        return _unwrap(field, raw, ("low", "high"))

    def check(self, field: str, fix: Callable[[Any], str | None]) -> None:
        _check_ends(field, self.low, self.high, fix)

    def values(self) -> list[int]:
        return list(range(self.low, self.high + 1))

    def suggest(self, trial: Any, name: str) -> int:
        return self.low if self.low == self.high else int(trial.suggest_int(name, self.low, self.high))

    def canonical(self, value: Any) -> Any:
        return value

    def plain(self) -> tuple[int, int]:
        return (self.low, self.high)

    def to_yaml(self) -> dict[str, int]:
        return {"low": self.low, "high": self.high}


@dataclass(frozen=True)
class Choices:
    """One of `choices` (optuna's `CategoricalDistribution(choices)`): one value is fixed, a list is sampled.

    `space.<knob>` is that one value, or a tuple of several; `listed`: always a tuple, and a list in YAML (bits).
    """

    choices: tuple[Any, ...]
    listed: bool = False

    def parse(self, field: str, given: Any) -> Choices:
        if isinstance(given, Choices):
            given = given.plain()
        if not isinstance(given, (list, tuple)):
            return Choices((given,), self.listed)
        if not given:
            raise ConfigError(field, list(given), "give one value or a non-empty list")
        if any(v in given[:i] for i, v in enumerate(given)):
            raise ConfigError(field, list(given), "remove the repeated values")
        return Choices(tuple(given), self.listed)

    def from_yaml(self, field: str, raw: Any) -> Any:
        return raw

    def check(self, field: str, fix: Callable[[Any], str | None]) -> None:
        for value in self.choices:
            problem = fix(value)
            if problem:
                raise ConfigError(field, value, problem)

    def values(self) -> list[Any]:
        return list(self.choices)

    def suggest(self, trial: Any, name: str) -> Any:
        return self.choices[0] if len(self.choices) == 1 else trial.suggest_categorical(name, list(self.choices))

    def canonical(self, value: Any) -> Any:
        return value

    def plain(self) -> Any:
        return self.choices if self.listed or len(self.choices) > 1 else self.choices[0]

    def to_yaml(self) -> Any:
        plain = self.plain()
        return list(plain) if isinstance(plain, tuple) else plain


def _any_value(value: Any) -> str | None:
    return None


@dataclass(frozen=True)
class Knob:
    """One compression knob, as data.

    `default` is its kind and the domain a space gives it when not told; `noop` the value at which it does
    nothing (the base model's: a config, or a stored trial, without the knob takes it); `check` says what is
    wrong with one value (the fix of a one-line ConfigError naming the knob), None when it is fine (a range:
    both ends); `help` is one line (model cards print it); `anchor` how anchors set it (`ANCHOR_RULES`);
    `applied_by` the module whose `TECHNIQUES` holds the technique that reads it (`techniques.stages`: that
    technique's check says whether it can act on a given model; the entry here is its registration); `shown`
    whether the text report always shows its column ("always") or only where a front row sets it ("used").
    """

    name: str
    default: Domain
    noop: Any
    help: str
    check: Callable[[Any], str | None] = _any_value
    anchor: str = "noop"
    applied_by: str = ""
    shown: str = "used"

    def __post_init__(self) -> None:
        if self.shown not in ("always", "used"):
            raise ConfigError(f"{self.name}.shown", self.shown, "use 'always' or 'used'")
        if not self.name.isidentifier() or self.name.startswith("_"):
            raise ConfigError("knob", self.name, "a knob's name must be a Python identifier not starting with _")
        if self.anchor not in ANCHOR_RULES:
            raise ConfigError(f"{self.name}.anchor", self.anchor, f"unknown rule; {did_you_mean(self.anchor, ANCHOR_RULES)}")

    @property
    def kind(self) -> str:
        """float, int or categorical."""
        return {FloatRange: "float", IntRange: "int", Choices: "categorical"}[type(self.default)]

    def parse(self, given: Any) -> Domain:
        """The checked domain of this knob from what a space was given (`(0.0, 0.5, 0.25)`, `[32, 8]`, ...)."""
        domain = self.default.parse(self.name, given)
        domain.check(self.name, self.check)
        return domain


class KnobTable:
    """The knobs, in order (the order of `as_dict`, report columns and model cards), found by name.

    `registered(knob)` adds knobs for the length of a `with` block: a test's toy knob leaves the table as it
    found it. Not thread-safe: register before starting threads.
    """

    def __init__(self, *knobs: Knob) -> None:
        self._knobs: tuple[Knob, ...] = ()
        self._knobs = self._added(knobs)

    def __iter__(self) -> Iterator[Knob]:
        return iter(self._knobs)

    def __len__(self) -> int:
        return len(self._knobs)

    def __contains__(self, name: object) -> bool:
        return any(k.name == name for k in self._knobs)

    def __getitem__(self, name: str) -> Knob:
        for knob in self._knobs:
            if knob.name == name:
                return knob
        raise ConfigError("knob", name, f"unknown knob; {did_you_mean(name, self.names)}")

    def __repr__(self) -> str:
        return f"KnobTable({', '.join(self.names)})"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(k.name for k in self._knobs)

    @contextlib.contextmanager
    def registered(self, *knobs: Knob) -> Iterator[KnobTable]:
        """Add `knobs` (after the others) inside a `with` block; the table is as before when it ends."""
        before = self._knobs
        self._knobs = self._added(knobs)
        try:
            yield self
        finally:
            self._knobs = before

    def _added(self, knobs: Sequence[Knob]) -> tuple[Knob, ...]:
        out = list(self._knobs)
        for knob in knobs:
            if not isinstance(knob, Knob):
                raise ConfigError("knob", knob, "register a Knob(name, default, noop, help, ...)")
            if knob.name in {k.name for k in out}:
                raise ConfigError("knob", knob.name, "a knob of that name is in the table already")
            knob.parse(knob.default.plain())  # its default and its no-op pass its own check
            knob.parse(knob.noop)
            out.append(knob)
        return tuple(out)


class _Names(Sequence[str]):
    """The table's knob names, read when used (so a knob registered in a `with` block shows)."""

    def __init__(self, table: KnobTable) -> None:
        self._table = table

    def __getitem__(self, index: Any) -> Any:
        return self._table.names[index]

    def __len__(self) -> int:
        return len(self._table)

    def __repr__(self) -> str:
        return repr(self._table.names)


# ---- helpers ----------------------------------------------------------------------------
def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _numbers(field: str, given: Any, lengths: tuple[int, ...], kind: type) -> list[Any]:
    """`given` as a list of `lengths` finite numbers, or a ConfigError naming `field`."""
    forms = {2: "[low, high]", 3: "[low, high, step]"}
    if not isinstance(given, (list, tuple)) or len(given) not in lengths:
        raise ConfigError(field, given, f"give {' or '.join(forms[n] for n in sorted(lengths, reverse=True))} "
                                        "(or one number: fixed)")
    for value in given:
        if not (_is_number(value) and math.isfinite(value)):
            raise ConfigError(field, value, f"must be {'an integer' if kind is int else 'a number'}")
    return list(given)


def _integer(field: str, value: Any) -> None:
    if not float(value).is_integer():
        raise ConfigError(field, value, "must be an integer")


def _check_ends(field: str, low: Any, high: Any, fix: Callable[[Any], str | None]) -> None:
    for end in (low, high):
        problem = fix(end)
        if problem:
            raise ConfigError(field, [low, high], problem)


def _unwrap(field: str, raw: Any, keys: tuple[str, ...]) -> Any:
    """A YAML range {low, high(, step)} as a list; a list or a number as it is."""
    if not isinstance(raw, dict):
        return raw
    for key in raw:
        if key not in keys:
            raise ConfigError(f"{field}.{key}", raw[key], f"unknown key; {did_you_mean(key, keys)}")
    missing = [k for k in keys[:2] if k not in raw]
    if missing:
        raise ConfigError(field, raw, f"add {' and '.join(missing)} (keys: {', '.join(keys)})")
    return [raw[k] for k in keys if k in raw]


# ---- the knobs --------------------------------------------------------------------------
def _prune_ratio(value: float) -> str | None:
    return None if 0.0 <= value < 1.0 else "need 0 <= low <= high < 1 (share of channels removed)"


def _prune_method(value: Any) -> str | None:
    return None if value in PRUNE_METHODS else f"unknown method; {did_you_mean(value, PRUNE_METHODS)}"


def _round_to(value: Any) -> str | None:
    whole = _is_number(value) and float(value).is_integer()
    return None if whole and 1 <= value <= 64 else "must be a whole number of channels from 1 (no rounding) to 64, e.g. 4 or 8"


def _bits(value: Any) -> str | None:
    ok = value in SUPPORTED_BITS and not isinstance(value, bool)
    return None if ok else f"unsupported bit width; choose from {list(SUPPORTED_BITS)}"


def _int8_mode(value: Any) -> str | None:
    return None if value in INT8_MODES else f"choose from {list(INT8_MODES)}"


def _fusion(value: Any) -> str | None:
    return None if value in FUSIONS else f"choose from {list(FUSIONS)}"


def _int4_block(value: Any) -> str | None:
    ok = value in INT4_BLOCKS and not isinstance(value, bool)
    return None if ok else f"input rows per MatMulNBits scale: choose from {list(INT4_BLOCKS)} (0: per-channel INT4)"


def _int4_symmetric(value: Any) -> str | None:
    return None if isinstance(value, bool) else "true (no zero point) or false (a 4-bit zero point per block)"


def _int4_accuracy_level(value: Any) -> str | None:
    ok = value in INT4_ACCURACY_LEVELS and not isinstance(value, bool)
    return None if ok else f"choose from {list(INT4_ACCURACY_LEVELS)} (0: unset, 4: INT8 activations)"


def _int4_zero_point(value: Any) -> str | None:
    return None if value in INT4_ZERO_POINTS else f"choose from {list(INT4_ZERO_POINTS)} (float: a min/max offset a block)"


def _int4_head_bits(value: Any) -> str | None:
    ok = value in INT4_HEAD_BITS and not isinstance(value, bool)
    return None if ok else f"choose from {list(INT4_HEAD_BITS)} (8: the tied embedding and LM head once, 8-bit blocks)"


def _embedding_bits(value: Any) -> str | None:
    ok = value in (32, 8, 4) and not isinstance(value, bool)
    return None if ok else "unsupported embedding table width; choose from [32, 8, 4]"


def _embedding_dim(value: Any) -> str | None:
    ok = _is_number(value) and 0.0 < value <= 1.0
    return None if ok else "share of each embedding table's columns kept: need 0 < value <= 1 (1: all)"


def _epochs(value: int) -> str | None:
    return None if value >= 0 else "need 0 <= low <= high (whole epochs)"


def _seq_len(value: Any) -> str | None:
    whole = _is_number(value) and float(value).is_integer()
    return None if whole and value >= 0 else "give a whole number of tokens >= 1 (0: the workload's own length)"


def _weight_clusters(value: Any) -> str | None:
    ok = value in (0, 16, 64, 256) and not isinstance(value, bool)
    return None if ok else "shared values per layer: choose from [0, 16, 64, 256] (0: off)"


def _layers(value: Any) -> str | None:
    whole = _is_number(value) and float(value).is_integer()
    return None if whole and value >= 0 else "give a whole number of encoder layers >= 1 (0: all of them)"


KNOBS = KnobTable(
    Knob("prune_ratio", FloatRange(0.0, 0.75, 0.25), noop=0.0, check=_prune_ratio,
         help="share of output channels removed per layer", applied_by="lepton_search.techniques.prune",
         shown="always"),
    Knob("prune_method", Choices(("structured",)), noop="structured", check=_prune_method, anchor="first",
         help="structured: each layer loses prune_ratio of its channels; global: channels ranked across layers, the "
              "net loses prune_ratio; unstructured: weights zeroed (same graph)",
         applied_by="lepton_search.techniques.prune", shown="always"),
    Knob("round_to", Choices((1,)), noop=1, check=_round_to, anchor="first",
         help="structured pruning keeps channel counts that are multiples of this (SIMD-friendly)",
         applied_by="lepton_search.techniques.prune", shown="always"),
    Knob("bits", Choices((32, 8), listed=True), noop=32, check=_bits, anchor="each",
         help="stored width of weights (and activations at 8): 32, 16, 8 or 4",
         applied_by="lepton_search.techniques.quantize", shown="always"),
    Knob("finetune_epochs", IntRange(0, 2), noop=0, check=_epochs,
         help="epochs of distillation from the unpruned base", applied_by="lepton_search.techniques.recovery",
         shown="always"),
    Knob("seq_len", Choices((0,)), noop=0, check=_seq_len,
         help="tokens kept per input (the first ones; 0: the workload's length): the file, its latency and its "
              "accuracy are at that length", applied_by="lepton_search.techniques.seq_len"),
    Knob("layers", Choices((0,)), noop=0, check=_layers,
         help="Transformer blocks kept (0: all): an encoder's bottom ones, a causal LM's most influential "
              "(ShortGPT block influence); distilled from the teacher",
         applied_by="lepton_search.techniques.layers"),
    Knob("int8_mode", Choices(("auto",)), noop="auto", check=_int8_mode,
         help="how an 8-bit file is made: auto (dynamic for Transformers and RNNs, static otherwise), dynamic (ONNX "
              "Runtime: weights INT8, activations quantized per call) or static (NNCF: activation ranges calibrated, "
              "QDQ); acts where bits is 8", applied_by="lepton_search.techniques.quantize"),
    Knob("fusion", Choices(("off",)), noop="off", check=_fusion,
         help="ort: ONNX Runtime's transformer optimizer fuses the exported graph (Attention, SkipLayerNormalization, "
              "BiasGelu...) before quantization; the fused ops are recorded, unfused attention is warned of",
         applied_by="lepton_search.techniques.fusion"),
    Knob("embedding_bits", Choices((32,), listed=True), noop=32, check=_embedding_bits, anchor="each",
         help="stored width of embedding tables (per-row scale and zero point): 32, 8 or 4",
         applied_by="lepton_search.techniques.embeddings"),
    Knob("embedding_dim", FloatRange(1.0, 1.0, 0.25), noop=1.0, check=_embedding_dim,
         help="share of each embedding table's columns kept (least important dropped, with what reads them)",
         applied_by="lepton_search.techniques.embeddings"),
    Knob("int4_block", Choices((0,)), noop=0, check=_int4_block,
         help="4-bit files: input rows sharing a scale in ONNX Runtime's MatMulNBits (16 to 256); 0: per-channel "
              "INT4 through DequantizeLinear", applied_by="lepton_search.techniques.matmul_nbits"),
    Knob("int4_symmetric", Choices((True,)), noop=True, check=_int4_symmetric,
         help="MatMulNBits blocks without a zero point (true) or with a 4-bit one (false); acts where int4_block is set",
         applied_by="lepton_search.techniques.matmul_nbits"),
    Knob("int4_accuracy_level", Choices((0,)), noop=0, check=_int4_accuracy_level,
         help="MatMulNBits activations' arithmetic: 0 unset, 1 FP32, 2 FP16, 3 BF16, 4 INT8 (integer dot-products on "
              "x86); acts where int4_block is set", applied_by="lepton_search.techniques.matmul_nbits"),
    Knob("weight_clusters", Choices((0,)), noop=0, check=_weight_clusters,
         help="shared values per Conv/Linear weight (k-means, centroids fine-tuned; 0: off): the FP32/FP16 file "
              "stores a codebook and 4/8-bit indices, which ONNX Runtime folds back to FP32 weights at load (same "
              "latency, smaller file)", applied_by="lepton_search.techniques.weight_sharing"),
    Knob("int4_zero_point", Choices(("int",)), noop="int", check=_int4_zero_point,
         help="asymmetric MatMulNBits blocks: int (a 4-bit zero point) or float (each block's min/max offset, the "
              "grid of a GGUF Q4_1 file); acts where int4_symmetric is false",
         applied_by="lepton_search.techniques.matmul_nbits"),
    Knob("int4_head_bits", Choices((4,)), noop=4, check=_int4_head_bits,
         help="a language model's tied embedding and LM head in a MatMulNBits file: 4 (the head INT4 with the other "
              "MatMuls, the embedding FP32) or 8 (both stored once, 8-bit blocks: GGUF Q8_0's grid); acts where "
              "int4_block is set", applied_by="lepton_search.techniques.matmul_nbits"),
)
KNOB_NAMES: Sequence[str] = _Names(KNOBS)
