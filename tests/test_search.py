"""The study's searcher tells Optuna the truth: ASHA-stopped trials are PRUNED, not COMPLETE."""

import math

from optuna.samplers import TPESampler
from optuna.trial import TrialState

from depthlab.search import StudySearch


def space(trial):
    trial.suggest_float("method/lr", 1e-4, 1e-2, log=True)


def searcher() -> StudySearch:
    search = StudySearch(space, metric="best/rmse_um", mode="min", sampler=TPESampler(seed=0),
                         max_steps=100)
    for trial_id in ("full", "stopped", "diverged", "errored"):
        assert search.suggest(trial_id) is not None
    return search


def report(search, trial_id, step, value, iteration, **extra):
    result = {"best/rmse_um": value, "step": step, "training_iteration": iteration, **extra}
    search.on_trial_result(trial_id, result)
    return result


def test_early_stopped_trials_are_pruned_with_their_intermediate_values():
    search = searcher()
    report(search, "full", 50, 3.0, 1)
    search.on_trial_complete("full", report(search, "full", 100, 2.0, 2))
    search.on_trial_complete("stopped", report(search, "stopped", 25, 2.5, 1))
    search.on_trial_complete("diverged", {"best/rmse_um": math.inf, "step": 10, "diverged": 1.0})
    search.on_trial_complete("errored", None, error=True)

    trials = {t.number: t for t in search._ot_study.get_trials(deepcopy=False)}
    full, stopped, diverged, errored = (trials[i] for i in range(4))
    assert full.state == TrialState.COMPLETE and full.value == 2.0
    assert stopped.state == TrialState.PRUNED and stopped.intermediate_values == {1: 2.5}
    assert diverged.state == TrialState.COMPLETE and diverged.value == math.inf
    assert errored.state == TrialState.FAIL
    # a second completion of the same trial is ignored, not told twice
    search.on_trial_complete("stopped", {"best/rmse_um": 1.0, "step": 100})
    assert search._ot_study.get_trials(deepcopy=False)[1].state == TrialState.PRUNED
