"""What ships with a trial: `config.json` (every knob, figure, version, the seed) and `MODEL_CARD.md`.

The same two builders serve the per-trial artifacts the dashboard shows and `SearchResult.export`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import optuna

from lepton_search import records
from lepton_search.records import BaseRecord, TrialRecord, inputs_label
from lepton_search.space import KNOBS
from lepton_search.storage import TrialFiles
from lepton_search.tasks import stored_task
from lepton_search.techniques import fusion, int8_dynamic
from lepton_search.workloads import LSTM_FAMILY, TRANSFORMER_FAMILY

FORMAT = "lepton-search/config-2"  # 2: config is a knob -> value mapping with every knob; metrics from the record
_NOT_METRICS = {"config", "versions", "seed", "extra", "schema"}


def trial_config(*, study_name: str, number: int, record: TrialRecord, base: BaseRecord | None,
                 space: dict | None, values: dict[str, float] | None = None) -> dict[str, Any]:
    """The `config.json` content of one trial, from its record and the study's base record."""
    metrics = {k: v for k, v in dataclasses.asdict(record).items() if k not in _NOT_METRICS}
    base_attrs = {} if base is None else {k: v for k, v in base.to_attrs().items() if k != "onnx_artifact_id"}
    return {
        "format": FORMAT, "study": study_name, "trial": number, "workload": base_attrs.get("workload"),
        "config": dict(record.config),
        "metrics": {**dict(record.extra), **metrics},
        "objectives": values or {},
        "base": base_attrs,
        "target": base_attrs.get("target"), "seed": record.seed, "versions": dict(record.versions),
        "space": space,
    }


def _fmt(value: Any, spec: str, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def _generation_rows(gen: dict | None, base: dict | None, ratio: Any) -> list[tuple[str, str, str, str]]:
    """A generation file's rows: latency is then ms per decoded token; time to first token and tokens/s."""
    if not gen:
        return []
    base = base or {}
    fmt = lambda d, k, unit: _fmt(d.get(k), ".4g", unit)
    where = f"batch 1, prefill of {gen.get('prompt_tokens')} tokens, {gen.get('new_tokens')} decoded"
    return [("latency unit", "", "", "ms per decoded token (p50/p90 above): " + where),
            ("time to first token", fmt(base, "ttft_ms", " ms"), fmt(gen, "ttft_ms", " ms"),
             "speed-up " + ratio(base.get("ttft_ms"), gen.get("ttft_ms"))),
            ("decode tokens/s", fmt(base, "decode_tokens_per_s", ""), fmt(gen, "decode_tokens_per_s", ""),
             "x" + _fmt(None if not base.get("decode_tokens_per_s") else
                        gen["decode_tokens_per_s"] / base["decode_tokens_per_s"], ".2f"))]


def base_card(study_name: str, base: dict[str, Any], checked: dict[str, Any]) -> str:
    """The card of an exported base (`export(-1)`: no trial beat it): what the study measured on that file."""
    task = stored_task(base.get("task"))
    shown = (lambda v: None if v is None else task.display(v))
    rows = [(f"validation {task.metric}", _fmt(shown(base.get("accuracy")), ".4f")),
            (f"test {task.metric}", _fmt(shown(base.get("test_accuracy")), ".4f")),
            ("latency p50", _fmt(base.get("latency_ms"), ".4g", " ms")),
            ("latency p90", _fmt(base.get("latency_p90_ms"), ".4g", " ms")),
            ("size", _fmt(base.get("size_mb"), ".4g", " MB"))]
    return "\n".join([
        f"# {base.get('workload')}: the unmodified model", "",
        (f"No trial of study `{study_name}` beat it within the limits it was picked with: this is the base file as "
         "the study measured it."), "",
        "| | the base |", "|---|---|", *[f"| {a} | {b} |" for a, b in rows], "",
        f"{task.metric.upper()} (task {task.name}): ONNX Runtime on this file, validation and test splits.",
        f"Run on the stored samples: {checked['status']} ({checked['detail']}).", ""])


def model_card(config: dict[str, Any], *, recheck: dict[str, Any] | None = None) -> str:
    """A short Markdown model card with a before/after table."""
    m, b, k = config["metrics"], config["base"], config["config"]
    acc, base_acc = m.get("accuracy"), b.get("accuracy")
    lat, base_lat = m.get("latency_ms"), b.get("latency_ms")
    size, base_size = m.get("size_mb"), b.get("size_mb")
    ratio = (lambda a, c: "n/a" if a is None or c in (None, 0) else f"x{a / c:.2f}")
    task = stored_task(b.get("task"))
    shown = (lambda v: None if v is None else task.display(v))
    drop = m.get("metric_drop", m.get("accuracy_drop_pts"))
    rows = [
        (f"validation {task.metric}", _fmt(shown(base_acc), ".4f"), _fmt(shown(acc), ".4f"),
         _fmt(drop, "+.2f", " pt drop") if task.drop_unit == "pt" else
         _fmt(drop, "+.4g", f" {task.drop_unit or task.metric} worse" if drop is not None and drop > 0 else
              f" {task.drop_unit or task.metric} change")),
        ("latency p50", _fmt(base_lat, ".4g", " ms"), _fmt(lat, ".4g", " ms"), "speed-up " + ratio(base_lat, lat)),
        ("latency p90", _fmt(b.get("latency_p90_ms"), ".4g", " ms"), _fmt(m.get("latency_p90_ms"), ".4g", " ms"), ""),
        *_generation_rows(m.get("generation"), b.get("generation"), ratio),
        ("size", _fmt(base_size, ".4g", " MB"), _fmt(size, ".4g", " MB"), "size " + ratio(size, base_size) + " of base"),
        ("fine-tune time", "0 s (trained model)", _fmt(m.get("finetune_seconds"), ".2f", " s"),
         f"{k.get('finetune_epochs')} epoch(s) of distillation"),
    ]
    bits = k.get("bits")
    route = m.get("quantization_route")  # written by the step that quantized; older trials: derived as then
    precision = route["summary"] if route else {32: "FP32", 16: "FP16 weights", 8: _int8_route(b),
                                                 4: "INT4 weights"}.get(bits, f"{bits} bit")
    if m.get("quantization_aware"):
        precision += " after quantization-aware fine-tuning"
    lines = [
        f"# Model card: {config['study']} trial {config['trial']}", "",
        (f"Workload `{config.get('workload')}`{' (' + b['family'] + ')' if b.get('family') else ''}; {k.get('prune_method')} pruning of {_fmt(k.get('prune_ratio'), '.0%')} "
         f"of channels, {precision}, {k.get('finetune_epochs')} fine-tune epoch(s); seed {config.get('seed')}."), "",
        "| | before (base FP32) | after (this model) | change |", "|---|---|---|---|",
        *[f"| {a} | {bb} | {c} | {d} |" for a, bb, c, d in rows], "",
        "| knob | value | meaning |", "|---|---|---|",
        *[f"| {knob.name} | {k.get(knob.name, 'n/a')} | {knob.help} |" for knob in KNOBS], "",
        (f"Latency: {m.get('latency_source', 'n/a')}, target `{_target(config.get('target'))}`, "
         f"batch {m.get('batch_size', 'n/a')}, {m.get('threads', 'n/a')} thread(s)."),
        (f"Accuracy: ONNX Runtime on the validation split ({m.get('val_correct', 'n/a')}/{m.get('val_total', 'n/a')} "
         "correct)." if task.name == "classification" else
         f"{task.metric.upper()} (task {task.name}): ONNX Runtime on the validation split ({m.get('val_total', 'n/a')} "
         "samples)."),
    ]
    fused = (route or {}).get("fused_ops")
    if fused is not None:  # the fusion technique ran (fused_ops is None where it did not)
        ops = ", ".join(f"{op} {n}" for op, n in sorted((fused or {}).items())) or "nothing"
        lines.append(f"Fusion: ONNX Runtime's transformer optimizer fused {ops}.")
        if not fusion.attention_fused(fused or {}):
            lines.append("**Warning: attention not fused**: this file runs the exported attention subgraph; its "
                         "latency is that of unfused attention.")
    own = m.get("inputs") or b.get("inputs")  # this file's inputs (a knob may change them), else the base's
    inputs = inputs_label(own, b.get("sequence_length") if own == b.get("inputs") else None)
    if inputs:
        lines.append(f"Inputs: {inputs}; latency timed on validation samples (`sample_inputs.npz`).")
    again = config.get("remeasured")
    if again:
        lines.append(f"Re-measured after the search, interleaved with the base, min of {again['repeats']}: "
                     f"{again['latency_ms']:.4g} ms vs base {again['base_latency_ms']:.4g} ms, "
                     f"speed-up x{again['speedup']:.2f}.")
    busy = [f"this model: {m['busy_host']}"] if m.get("busy_host") else []
    busy += [f"the base: {b['busy_host']}"] if b.get("busy_host") else []
    if busy:
        lines.append(f"Measured on a busy host ({'; '.join(busy)}): the latency and speed-up above may be off"
                     + ("; see the re-measured figures." if again else
                        f"; re-measure on an idle host: `lepton-search remeasure --study {config['study']}`."))
    if recheck is not None:
        lines.append(f"Re-check on export: {recheck['status']} ({recheck['detail']}).")
    versions = config.get("versions") or {}
    if versions:
        lines += ["", "Versions: " + ", ".join(f"{n} {v}" for n, v in sorted(versions.items())) + "."]
    return "\n".join(lines) + "\n"


def _int8_route(base: dict[str, Any]) -> str:
    """How INT8 was made, for a trial stored before `quantization_route` was recorded: quantize's own rule
    (int8_dynamic.dynamic_route) on the base's recorded inputs and family."""
    inputs = base.get("inputs") or ()
    dtypes = [i.get("dtype") for i in inputs]
    shapes = [i["shape"] for i in inputs] if all("shape" in i for i in inputs) else None
    if int8_dynamic.dynamic_route(dtypes, lstm=base.get("family") == LSTM_FAMILY, shapes=shapes,
                                  attention=base.get("family") == TRANSFORMER_FAMILY):
        return "INT8 weights, activations quantized at run time (ONNX Runtime dynamic)"
    return "INT8 weights and activations (NNCF, static)"


def _target(target: Any) -> str:
    if isinstance(target, dict):  # e.g. {"name": "host-cpu", "runtime": "onnxruntime 1.32.0 CPU", "cpu": ...}
        return " / ".join(str(target[k]) for k in ("name", "runtime", "cpu") if target.get(k))
    return str(target)


def upload_trial_files(trial: optuna.Trial, store: Any, work_dir: Path) -> None:
    """Upload `config.json` and `MODEL_CARD.md` of a finished-but-not-yet-returned trial as artifacts."""
    study = trial.study
    config = trial_config(study_name=study.study_name, number=trial.number,
                          record=TrialRecord.of(trial), base=BaseRecord.of(study),
                          space=records.study_space(study))
    folder = work_dir / f"trial_{trial.number}_files"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2, default=str))
    (folder / "MODEL_CARD.md").write_text(model_card(config))
    files = TrialFiles.of(store)
    files.upload_config(trial, folder / "config.json")
    files.upload_card(trial, folder / "MODEL_CARD.md")
