"""optuna-dashboard notes that name each Pareto trial's role, kept up to date by an Optuna callback.

`search` passes `RoleNotes(store)` as its default callback; `search(callbacks=[])` opts out.
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

    def __init__(self, artifact_store: Any = None) -> None:
        self.artifact_store = artifact_store

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state != optuna.trial.TrialState.COMPLETE:
            return
        try:
            save_role_notes(StudyFrame(study, self.artifact_store))
        except Exception as exc:  # noqa: BLE001 - notes are for people; a failure to write them never stops a search
            warnings.warn(f"dashboard role notes not updated after trial {trial.number}: {type(exc).__name__}: {exc}",
                          stacklevel=2)


class _TrialRef:
    """What `optuna_dashboard.save_note` reads from a trial. Building an `optuna.Trial` for a finished
    trial would call the sampler's `before_trial` hook, which may try to write to it."""

    def __init__(self, study: optuna.Study, trial_id: int) -> None:
        self.study, self.storage, self._trial_id = study, study._storage, trial_id


def save_role_notes(result: StudyFrame) -> int:
    """Write each Pareto trial's roles as its optuna-dashboard note; clear notes of trials that left the front.

    Returns how many notes changed.
    """
    from optuna_dashboard import get_note, save_note  # imported here: the dashboard's server stack is heavy

    study = result.study
    wanted = {n: _role_note(r) for n, r in pick.roles(result).items()}
    changed = 0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        ref = _TrialRef(study, t._trial_id)
        note = get_note(ref)  # type: ignore[arg-type]
        body = wanted.get(t.number, "" if note.startswith(ROLE_NOTE_HEADER) else note)
        if body != note:
            save_note(ref, body)  # type: ignore[arg-type]
            changed += 1
    return changed


def _role_note(role_list: list[str]) -> str:
    return f"{ROLE_NOTE_HEADER} {', '.join(role_list) if role_list else 'on the Pareto front'}."
