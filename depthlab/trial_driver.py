"""The Tune trial driver: each trial's small Tune function, which builds the trial's
`TorchTrainer` (the shape is in study.py's docstring), and what it shares with the workers.

It lives apart from study.py so that a trial's Tune actor imports Ray and this module
only. Importing study.py there also imported torchvision, torch._dynamo and depthlab's
training code (1.7 s after Ray Train), which only the Train workers use: about 1 s more
per trial (benchmarks/README.md, ray_overhead.py). Keep it light: no depthlab import at
module level.
"""

import gc
import os
from pathlib import Path
from typing import Any

UNSENT_FILE = "mlflow_unsent.jsonl"  # in a trial's Train folder: writes MLflow did not take
TRAIN_RETRIES = 2  # worker-group restarts per trial (Ray Train FailureConfig)
KEPT_STATES = 2  # trial states Train keeps: the latest, and one in case it is damaged

# Test-only hook (tests/test_faults_resume.py): when this variable names a file, each trial
# driver and Train worker appends "<role> <trial id> <rank> <pid>" to it, so a test can kill
# exactly that process. Unset in normal use.
PID_FILE_ENV = "DEPTHLAB_TEST_PID_FILE"


def _note_pid(role: str, trial_id: str, rank: int) -> None:
    path = os.environ.get(PID_FILE_ENV)
    if path:
        with open(path, "a") as handle:
            handle.write(f"{role} {trial_id} {rank} {os.getpid()}\n")


def _freeze_imported() -> None:
    """Leave the objects this process holds so far (torch and Ray; in a Train worker also
    depthlab, ~340k in all) out of Python's cyclic garbage collector: they live as long as
    the process, and each full collection walked them all (~0.26 s here). MLflow's first
    calls in a fresh worker set off such collections: its first search and run creation
    took 0.13 s and 0.32–0.40 s, 0.008 s and 0.015 s after the freeze."""
    gc.freeze()


# Run names are read in the UI's narrow run-name column: common config words shortened.
SHORT_KEYS = {"batch_size": "bs", "grad_clip": "clip", "learning_rate": "lr",
              "weight_decay": "wd"}
SHORT_WORDS = {"generator": "gen", "discriminator": "disc", "reconstruction": "rec",
               "weight": "w", "iterations": "it", "iters": "it"}


def _short_value(value: Any) -> str:
    """5e-05 → 5e-5, 100.0 → 100, 0.25 → 0.25; other values as they print."""
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    if value == 0 or 1e-3 <= abs(value) < 1e4:
        return f"{value:.3g}"
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa.removesuffix('.0')}e{int(exponent)}"


def run_name(method: str, chosen: dict[str, Any], trial_id: str) -> str:
    """A trial's MLflow run name: method, the values the search chose, and the trial id
    the progress lines print, e.g. `wgan_perceptual critic=dcgan gen=unet bs=8 #927b80f9`."""
    shown = []
    for key, value in chosen.items():
        short = SHORT_KEYS.get(key) or "_".join(SHORT_WORDS.get(w, w) for w in key.split("_"))
        shown.append(f"{short}={_short_value(value)}")
    return " ".join([method, *shown, f"#{trial_id}"])


def _train_worker(config: dict[str, Any]) -> None:
    """Ray Train's entry point in each worker: study.py's worker, imported there."""
    from depthlab.study import _train_worker as train_worker

    train_worker(config)


def _trial_driver(config: dict[str, Any]) -> None:
    """Tune function trainable: one TorchTrainer per trial, stable name from the trial id."""
    import ray.train
    from ray import tune
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    _freeze_imported()
    context = tune.get_context()
    _note_pid("driver", context.get_trial_id(), 0)
    fixed = config["fixed"]
    plan = dict(fixed["plan"])
    plan["method_config"] = {**plan["method_config"], **config.get("method", {})}
    plan["settings"] = {**plan["settings"], **config.get("train", {})}
    scaling = fixed["scaling"]
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={"plan": plan, "study": fixed["study"],
                           "study_tags": fixed.get("study_tags"),
                           "trial_id": context.get_trial_id(),
                           "unsent": str(Path(fixed["storage"]) / f"train-{context.get_trial_id()}"
                                         / UNSENT_FILE),
                           "run_name": run_name(plan["method"], {**config.get("method", {}),
                                                                 **config.get("train", {})},
                                                context.get_trial_id())},
        scaling_config=ray.train.ScalingConfig(
            num_workers=scaling["workers"], use_gpu=scaling["gpus_per_worker"] > 0,
            resources_per_worker={"CPU": scaling["cpus_per_worker"],
                                  "GPU": scaling["gpus_per_worker"]}),
        run_config=ray.train.RunConfig(
            name=f"train-{context.get_trial_id()}", storage_path=fixed["storage"],
            callbacks=[TuneReportCallback()],
            # A dead worker: the group restarts from the latest kept trial state.
            failure_config=ray.train.FailureConfig(max_failures=TRAIN_RETRIES),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=KEPT_STATES)),
    )
    trainer.fit()
