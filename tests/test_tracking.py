"""depthlab.tracking's import of mlflow (the rest of tracking is tested through studies)."""

import subprocess
import sys

import pytest

CHECK = """
import gc, sys, tempfile
{before}
from depthlab.tracking import _client, import_mlflow
assert "mlflow" not in sys.modules, "depthlab.tracking imported mlflow eagerly"
import_mlflow()
imported = "mlflow.tracking" in sys.modules
_client(f"sqlite:///{{tempfile.mkdtemp()}}/mlflow.db").search_experiments()
print(imported, gc.isenabled())
"""


@pytest.mark.parametrize(("before", "enabled"), [("", True), ("gc.disable()", False)])
def test_import_mlflow_and_a_first_client_leave_the_collector_as_it_was(before, enabled):
    out = subprocess.run([sys.executable, "-c", CHECK.format(before=before)],
                         capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["True", str(enabled)]


# mlflow.gateway's __init__ imports mlflow.gateway.utils; nothing else that depthlab uses does.
DEFERRED = """
import sys, tempfile
from depthlab.tracking import _client
_client(f"sqlite:///{tempfile.mkdtemp()}/mlflow.db").search_experiments()
print("mlflow.gateway.utils" in sys.modules)
import mlflow
print(callable(mlflow.gateway.get_gateway_uri), "mlflow.gateway.utils" in sys.modules)
"""


def test_import_mlflow_defers_the_gateway_package_until_its_first_use():
    out = subprocess.run([sys.executable, "-c", DEFERRED], capture_output=True, text=True,
                         timeout=120, check=True)
    assert out.stdout.split() == ["False", "True", "True"]
