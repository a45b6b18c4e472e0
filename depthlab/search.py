"""The study's Optuna searcher: Ray Tune's OptunaSearch, honest about early-stopped trials.

Ray hands a trial that ASHA stopped at a rung to Optuna as COMPLETE with its
value at that rung, so TPE would rank a short trial's early loss as if it were
final. Here such a trial is told as PRUNED: Optuna keeps its intermediate
values (reported at every evaluation) and TPE ranks it by how far it got.
A diverged trial (NaN/inf loss) is told as COMPLETE with the worst value for
the study's direction: TPE then learns that region is bad, where FAIL would let
it sample there again.
Imported only by study.py's driver code.
"""

import math

from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch


class StudySearch(OptunaSearch):
    """OptunaSearch that tells Optuna PRUNED for trials stopped before `max_steps`."""

    def __init__(self, *args, max_steps: int, time_attr: str = "step", **kwargs):
        super().__init__(*args, **kwargs)
        self.max_steps, self.time_attr = max_steps, time_attr

    def stopped_early(self, result: dict | None, error: bool) -> bool:
        """A finished trial (not errored, not diverged) that ran fewer than max_steps."""
        if error or not result or result.get("diverged"):
            return False
        return result.get(self.time_attr, self.max_steps) < self.max_steps

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        if trial_id not in self._completed_trials and result and result.get("diverged"):
            worst = math.inf if self._mode == "min" else -math.inf
            self._ot_study.tell(self._ot_trials[trial_id], worst)
            self._completed_trials.add(trial_id)
            return
        if trial_id in self._completed_trials or not self.stopped_early(result, error):
            super().on_trial_complete(trial_id, result, error)
            return
        self._ot_study.tell(self._ot_trials[trial_id], state=TrialState.PRUNED)
        self._completed_trials.add(trial_id)
