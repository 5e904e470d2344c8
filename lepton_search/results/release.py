"""Export one trial for deployment: `model.onnx`, `config.json`, `MODEL_CARD.md`, and a re-check in ORT.

With them goes `sample_inputs.npz`, the validation samples the trial's latency was timed on (studies that
stored them): `lepton-search measure` on another machine feeds them to `model.onnx`.

The re-check runs the exported file on the workload's validation split and compares the number of
correct answers with the one stored when the trial was measured; a mismatch is an error. Without a workload
the file still runs in ONNX Runtime on the study's stored samples (`sample_inputs.npz`): its outputs must be
finite and one per sample; accuracy is then not re-checked, and a warning and `config.json` say so.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lepton_search import records
from lepton_search.errors import ConfigError, LeptonError
from lepton_search.latency import SAMPLE_INPUTS_FILE, load_inputs
from lepton_search.latency.decode import Decoder, past_inputs
from lepton_search.paths import confined_file, file_sha256
from lepton_search.records import ONNX_ARTIFACT, SAMPLE_INPUTS_ARTIFACT, TrialRecord
from lepton_search.results.card import base_card, model_card, trial_config
from lepton_search.results.pick import BASE_TRIAL

if TYPE_CHECKING:
    from lepton_search.results.frame import StudyFrame
    from lepton_search.workloads import Workload

FILES = ("model.onnx", "config.json", "MODEL_CARD.md")


class RecheckError(LeptonError):
    """The exported model does not reproduce the accuracy stored with its trial."""


def recheck(onnx_path: Path, record: TrialRecord, workload: Workload) -> dict[str, Any]:
    """Run `onnx_path` in ORT on the validation split (cut as the trial's knobs cut its inputs: `seq_len`); compare
    with the stored `val_correct` (or accuracy)."""
    from lepton_search.candidate import input_transform_for
    from lepton_search.evaluate import onnx_accuracy
    from lepton_search.space import CompressionConfig

    transform = input_transform_for(workload, CompressionConfig.from_dict(record.config or {}))
    acc = onnx_accuracy(onnx_path, workload, "val", transform=transform)
    stored_correct, stored_acc = record.val_correct, record.accuracy
    stored_total = acc.total if record.val_total is None else record.val_total
    if stored_correct is not None and acc.correct is not None:
        same = acc.correct == stored_correct and acc.total == stored_total
        detail = f"{acc.correct}/{acc.total} correct in ONNX Runtime, {stored_correct}/{record.val_total} stored"
    else:  # a custom metric has no correct-answer count
        same = stored_acc is not None and abs(acc.accuracy - stored_acc) <= 1e-9
        detail = f"metric {acc.accuracy:.6f} in ONNX Runtime, {stored_acc} stored"
    return {"status": "passed" if same else "FAILED", "detail": detail, "val_correct": acc.correct,
            "val_total": acc.total, "accuracy": acc.accuracy, "workload": workload.name}


NO_ACCURACY = "accuracy not re-checked: pass workload= (CLI: --workload) to re-check it"


def run_on_samples(onnx_path: Path, samples_path: Path | None) -> dict[str, Any]:
    """Without a workload: run `onnx_path` in ORT on the stored samples (a generation file: a prefill with an empty
    past, its logits) and check that every output is finite and has one row per sample. Status `ran`, `FAILED`, or
    `skipped` when the study stored no samples."""
    if samples_path is None or not samples_path.is_file():
        return {"status": "skipped", "detail": f"no workload given and the study stored no samples; {NO_ACCURACY}"}
    import numpy as np
    import onnxruntime as ort

    feeds = load_inputs(samples_path)
    n = len(next(iter(feeds.values())))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    try:
        sess = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        if past_inputs(sess):  # a generation file: a prefill with an empty past, as its score is computed
            outputs = {"logits": Decoder(onnx_path, session=sess).prefill(feeds["input_ids"], feeds["attention_mask"])}
        else:
            outputs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    except Exception as exc:  # noqa: BLE001 - ORT raises several types; the message is what matters here
        return {"status": "FAILED", "detail": f"does not run in ONNX Runtime on the {n} stored samples "
                f"({str(exc).splitlines()[0]})", "samples": n}
    wrong = [f"{name} has shape {out.shape}" for name, out in outputs.items() if out.ndim == 0 or len(out) != n]
    wrong += [f"{name} has non-finite values" for name, out in outputs.items()
              if np.issubdtype(out.dtype, np.floating) and not np.isfinite(out).all()]
    if wrong:
        return {"status": "FAILED", "detail": f"on the {n} stored samples, {'; '.join(wrong)} (expected batch {n})",
                "samples": n}
    return {"status": "ran", "samples": n,
            "detail": f"ran in ONNX Runtime on {n} stored samples, outputs finite with batch {n}; {NO_ACCURACY}"}


def export_trial(result: StudyFrame, trial: int, out_dir: str | Path, *, workload: Workload | None = None) -> Path:
    """Write the three files of `trial` into `out_dir`, and `sample_inputs.npz` when the study stored samples.

    With `workload`, the file is re-checked in ORT on its validation split (`recheck`); without, it runs on the
    stored samples (`run_on_samples`), and a warning says that accuracy was not re-checked. Returns the path of
    `model.onnx`. Raises RecheckError (after writing the files, so they can be inspected) when the exported
    model does not reproduce the stored number of correct answers, or does not run to finite outputs.

    Example:
        >>> export_trial(result, 7, "deploy/", workload=workloads.get("digits-cnn"))  # doctest: +SKIP
    """
    if trial == BASE_TRIAL:  # `recommend` / `knee` said: keep the base
        return _export_base(result, Path(out_dir))
    frozen = result.trial(trial)
    record = TrialRecord.of(frozen)
    artifact_id = records.artifact(frozen, ONNX_ARTIFACT)
    if artifact_id is None:
        raise ConfigError("trial", trial, "has no stored ONNX artifact (only COMPLETE trials do)")
    base = result.base
    study_workload = None if base is None else base.workload
    if workload is not None and study_workload not in (None, workload.name):
        raise ConfigError("workload", workload.name, f"this study was run on {study_workload!r}; pass that one")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    onnx_path, config_path, card_path = (confined_file("out_dir", out, n) for n in FILES)
    # checked against the SHA-256 recorded at upload (studies written before digests: unchecked)
    result.files.download(artifact_id, onnx_path, owners=(frozen, result.study))
    samples_id = records.artifact(frozen, SAMPLE_INPUTS_ARTIFACT) or (base.sample_inputs_artifact_id if base else None)
    samples_path = None
    if samples_id is not None:
        samples_path = confined_file("out_dir", out, SAMPLE_INPUTS_FILE)
        result.files.download(samples_id, samples_path, owners=(frozen, result.study))
    config = trial_config(study_name=result.study.study_name, number=frozen.number, record=record,
                          base=base, space=records.study_space(result.study),
                          values=dict(zip(result.objectives, frozen.values or [])))
    config["onnx_sha256"] = file_sha256(onnx_path)
    again = records.remeasured(result.study)
    if str(frozen.number) in again.get("trials", {}):
        config["remeasured"] = {"base_latency_ms": again["base_latency_ms"], "repeats": again["repeats"],
                                **{k: v for k, v in again["trials"][str(frozen.number)].items() if k != "runs_ms"}}
    checked = recheck(onnx_path, record, workload) if workload is not None else run_on_samples(onnx_path, samples_path)
    config["recheck"] = checked
    config_path.write_text(json.dumps(config, indent=2, default=str))
    card_path.write_text(model_card(config, recheck=checked))
    if checked["status"] == "FAILED":
        what = "does not reproduce its stored accuracy" if workload is not None else "fails its run on stored samples"
        raise RecheckError(f"trial {trial}: exported model {what} ({checked['detail']})")
    if workload is None:
        warnings.warn(f"export of trial {trial}: {NO_ACCURACY}", UserWarning, stacklevel=3)
    return onnx_path


def _export_base(result: StudyFrame, out: Path) -> Path:
    """The base's own file (the pick `Pick.is_base`: no trial beat it), its stored samples, and a config and card
    that say so; run on the stored samples."""
    base = result.base
    if base is None or base.onnx_artifact_id is None:
        raise ConfigError("trial", BASE_TRIAL, "is the base, and this study stores no base file yet; run the search")
    out.mkdir(parents=True, exist_ok=True)
    onnx_path, config_path, card_path = (confined_file("out_dir", out, n) for n in FILES)
    result.files.download(base.onnx_artifact_id, onnx_path, owners=(result.study,))
    samples_path = None
    if base.sample_inputs_artifact_id is not None:
        samples_path = confined_file("out_dir", out, SAMPLE_INPUTS_FILE)
        result.files.download(base.sample_inputs_artifact_id, samples_path, owners=(result.study,))
    checked = run_on_samples(onnx_path, samples_path)
    config = {"study": result.study.study_name, "trial": "base", "keep_the_base": True,
              "why": "no trial of the study is faster within the limits it was picked with", "base": base.to_attrs(),
              "onnx_sha256": file_sha256(onnx_path), "recheck": checked}
    config_path.write_text(json.dumps(config, indent=2, default=str))
    card_path.write_text(base_card(result.study.study_name, base.to_attrs(), checked))
    if checked["status"] == "FAILED":
        raise RecheckError(f"the base: exported model fails its run on stored samples ({checked['detail']})")
    return onnx_path


def builtin_workload(result: StudyFrame, *, data_dir: str | None = None) -> Workload | None:
    """The study's workload when it is a built-in one (its name is stored in the study), else None."""
    from lepton_search import workloads

    name = None if result.base is None else result.base.workload
    if name not in workloads.list_workloads():
        return None
    return workloads.get(name) if data_dir is None else workloads.get(name, data_dir=data_dir)


def describe_export(out_dir: str | Path) -> str:
    """One line for the CLI: what was written and how the re-check went."""
    out = Path(out_dir)
    checked = json.loads((out / "config.json").read_text()).get("recheck", {})
    files = [*FILES, *([SAMPLE_INPUTS_FILE] if (out / SAMPLE_INPUTS_FILE).is_file() else [])]
    return (f"wrote {', '.join(files)} in {out}\nre-check in ONNX Runtime: {checked.get('status', 'n/a')} "
            f"({checked.get('detail', '')})")
