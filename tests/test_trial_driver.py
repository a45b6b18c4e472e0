"""The Tune trial driver's module stays light: each trial's Tune actor imports it, and
only the Train workers need torchvision, torch._dynamo and depthlab's training code."""

import subprocess
import sys

CHECK = """
import sys
from depthlab.trial_driver import _train_worker, _trial_driver
heavy = ("depthlab.study", "depthlab.loop", "depthlab.methods", "torch", "torchvision",
         "mlflow", "ray")
print(*sorted(m for m in heavy if m in sys.modules) or ["none"])
"""


def test_importing_the_trial_driver_imports_no_training_code():
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.split() == ["none"]
