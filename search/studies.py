"""The experiment's Optuna studies on disk: the outer (defender) study and one adversary study
per attacked model, all in one journal file in the experiment folder (``studies.journal``), so
``optuna.load_study`` (and optuna-dashboard) open them during and after the run, and
``--resume`` continues the outer study.

A journal needs one POSIX file that every trial process can lock, so studies are written only
for a local experiment folder; with ``s3://`` / ``gs://`` storage they stay in memory (the
tables hold every attack and trial either way).
"""

from __future__ import annotations

import optuna

JOURNAL = "studies.journal"
DEFENDER = "defender"
ATTACK_PREFIX = "attack:"
VERIFY_PREFIX = "verify:"  # a verification attacker's study (search/verify.py)


def storage(exp_dir: str | None) -> optuna.storages.BaseStorage | None:
    """The journal storage of a local experiment folder; None (in memory) otherwise."""
    if exp_dir is None or "://" in exp_dir:
        return None
    import os

    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    os.makedirs(exp_dir, exist_ok=True)  # the folder the archive and the parts go to as well
    return JournalStorage(JournalFileBackend(f"{exp_dir}/{JOURNAL}"))


def attack_study(trial_id: str, model_key: str, role: str = "search") -> str:
    """The adversary study's name: the trial that attacked the model, and the model (one trial
    attacks two models with UNDO or TAR: its released model and the suppressed one); a
    verification attacker's under its own prefix."""
    prefix = VERIFY_PREFIX if role == "verify" else ATTACK_PREFIX
    return f"{prefix}{trial_id}:{model_key[:12]}"


def fresh(name: str, store: optuna.storages.BaseStorage | None, **kwargs) -> optuna.Study:
    """A new study under ``name``; an old one of that name (a trial re-run after its process
    died: its attacks replay from the stage cache) is replaced, so the study holds one run."""
    if store is not None:
        try:
            optuna.delete_study(study_name=name, storage=store)
        except KeyError:
            pass
    return optuna.create_study(study_name=name, storage=store, **kwargs)


def settle(exp_dir: str) -> int:
    """Once the outer search is complete: its study's trials still RUNNING belong to no search
    (asked by a driver killed before Tune saved its searcher; the resumed search asked again
    under new numbers); mark them FAIL. Returns how many. Not after an interrupted run: its
    running trials are told when ``--resume`` finishes them."""
    store = storage(exp_dir)
    if store is None:
        return 0
    try:
        study = optuna.load_study(study_name=DEFENDER, storage=store)
    except KeyError:
        return 0  # a grid search has no outer study
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for t in running:
        store.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
    return len(running)
