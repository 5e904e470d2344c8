"""optuna-dashboard notes that name each Pareto trial's role, kept up to date by an Optuna callback.

`search` passes `RoleNotes(store, storage)` as its default callback; `search(callbacks=[])` opts out.
"""

from __future__ import annotations

import warnings
from typing import Any

import optuna

from lepton_search.results import pick
from lepton_search.results.frame import StudyFrame

ROLE_NOTE_HEADER = "**Pareto role:**"


class RoleNotes:
    """Optuna callback: after each trial, rewrite the role notes of the trials on the front.

    Only a trial that changes the front (a new COMPLETE trial) triggers the rebuild; pruned and failed
    trials leave the notes as they are.
    """

    def __init__(self, artifact_store: Any, storage: str | optuna.storages.BaseStorage) -> None:
        # `storage`: the study's (a URL or the storage object); Optuna 5.1 has no public `Study.storage`
        self.artifact_store, self.storage = artifact_store, storage

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state != optuna.trial.TrialState.COMPLETE:
            return
        try:
            if isinstance(self.storage, str):  # opened once, on the first COMPLETE trial
                self.storage = optuna.storages.get_storage(self.storage)
            save_role_notes(StudyFrame(study, self.artifact_store), self.storage)
        except Exception as exc:  # noqa: BLE001 - notes are for people; a failure to write them never stops a search
            warnings.warn(f"dashboard role notes not updated after trial {trial.number}: {type(exc).__name__}: {exc}",
                          stacklevel=2)


class _Ids:
    """What optuna-dashboard 0.21's `save_note` / `get_note` read from a trial: `storage`, `study._study_id` and
    `_trial_id`. They take a live `optuna.Trial` only (Optuna 5.1 has no public handle on a finished trial, and
    building an `optuna.Trial` would call the sampler's `before_trial` hook, which may try to write to it); the ids
    come from the storage's public name/number lookups."""

    def __init__(self, storage: optuna.storages.BaseStorage, study_id: int, trial_id: int | None = None) -> None:
        self.storage, self._study_id, self._trial_id = storage, study_id, trial_id
        self.study = self


def save_role_notes(result: StudyFrame, storage: optuna.storages.BaseStorage) -> int:
    """Write each Pareto trial's roles as its optuna-dashboard note; clear notes of trials that left the front.
    `storage`: the study's.

    Returns how many notes changed.
    """
    from optuna_dashboard import get_note, save_note  # imported here: the dashboard's server stack is heavy

    study = result.study
    wanted = {n: _role_note(r) for n, r in pick.roles(result).items()}
    changed = 0
    study_id = storage.get_study_id_from_name(study.study_name)
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        ref = _Ids(storage, study_id, storage.get_trial_id_from_study_id_trial_number(study_id, t.number))
        note = get_note(ref)  # type: ignore[arg-type]
        body = wanted.get(t.number, "" if note.startswith(ROLE_NOTE_HEADER) else note)
        if body != note:
            save_note(ref, body)  # type: ignore[arg-type]
            changed += 1
    return changed


def trial_note(storage: optuna.storages.BaseStorage, study: optuna.Study, number: int) -> str:
    """The optuna-dashboard note of trial `number` ("" when it has none)."""
    from optuna_dashboard import get_note

    study_id = storage.get_study_id_from_name(study.study_name)
    ref = _Ids(storage, study_id, storage.get_trial_id_from_study_id_trial_number(study_id, number))
    return get_note(ref)  # type: ignore[arg-type]


def _role_note(role_list: list[str]) -> str:
    return f"{ROLE_NOTE_HEADER} {', '.join(role_list) if role_list else 'on the Pareto front'}."
