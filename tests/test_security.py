"""Issue 8's security checks: servers bind 127.0.0.1, checkpoints never unpickle code, data
manifests stay inside their folder, configs are parsed with safe loaders, and no credential
reaches MLflow's params, tags or config artifacts."""

import ast
import contextlib
import hashlib
import json
import os
import pickle
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
import torch
from mlflow.tracking import MlflowClient

from depthlab import checkpoint, study, tracking
from depthlab.data.datasets import read_rows
from depthlab.data.shards import MANIFEST
from tests.test_faults import MlflowServer, isolated_in, run_quietly, stop_tree, tiny_spec

REPO = Path(__file__).resolve().parents[1]
# What runs for a user (tests may read back files they wrote themselves).
SOURCES = [p for folder in ("depthlab", "studies", "benchmarks")
           for p in sorted((REPO / folder).rglob("*.py"))]


def listening(port: int) -> set[str]:
    """The local addresses of the TCP sockets listening on `port` (from `ss`)."""
    lines = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True,
                           check=True).stdout.splitlines()
    found = {line.split()[3] for line in lines if len(line.split()) > 3}
    return {address for address in found if address.rsplit(":", 1)[-1] == str(port)}


def wait_listening(port: int, process: subprocess.Popen | None = None,
                   timeout: float = 300) -> set[str]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process is not None and process.poll() is not None:
            pytest.fail(f"the server exited with {process.returncode}")
        if found := listening(port):
            return found
        time.sleep(1)
    pytest.fail(f"nothing listened on port {port} within {timeout} s")


# ---------------------------------------------------------------- servers bind 127.0.0.1

@pytest.mark.e2e
def test_depthlab_ui_listens_on_loopback_only(tmp_path):
    port = study._free_port()
    with open(tmp_path / "ui.log", "w") as log:
        ui = subprocess.Popen([sys.executable, "-m", "depthlab.cli", "ui", "--port", str(port),
                               "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"],
                              cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        assert wait_listening(port, ui) == {f"127.0.0.1:{port}"}
    finally:
        stop_tree(ui)


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """A local Ray started the way a study starts it, with secrets in its environment (the
    workers inherit them), and a real MLflow server reached through a URI with a password."""
    folder = tmp_path_factory.mktemp("security")
    secrets = {"DEPTHLAB_TEST_API_TOKEN": "tok-9f8e7d6c5b4a", "DB_PASSWORD": "Env-Pass-5678"}
    with isolated_in(folder), pytest.MonkeyPatch.context() as patch:
        for key, value in secrets.items():
            patch.setenv(key, value)
        server = MlflowServer(folder, study._free_port())
        try:
            assert study._start_ray(None)
            yield folder, server, secrets
        finally:
            ray.shutdown()
            server.stop()


@pytest.mark.e2e
def test_the_study_ray_dashboard_listens_on_loopback_only(local_ray):
    port = int(os.environ["RAY_API_SERVER_ADDRESS"].rsplit(":", 1)[1])  # set by _start_ray
    assert wait_listening(port) == {f"127.0.0.1:{port}"}
    with socket.socket() as probe:  # and not on the machine's other addresses
        probe.settimeout(5)
        address = ray.util.get_node_ip_address()
        if address != "127.0.0.1":
            assert probe.connect_ex((address, port)) != 0


@pytest.mark.e2e
def test_no_credential_reaches_mlflow_params_tags_or_config(local_ray):
    folder, server, secrets = local_ray
    url_password, path_password = "Url-Pass-1234", "Path-Pass-4321"
    uri = server.url.replace("http://", f"http://depthlab:{url_password}@")
    data = folder / f"nas/bob:{path_password}@share/data"  # a source path with a password
    outcome, output = run_quietly(tiny_spec("security-smoke"), tracking_uri=uri,
                                  num_trials=1, data_dir=str(data))
    assert outcome.status == "FINISHED"
    client = MlflowClient(server.url)
    runs = [client.get_run(outcome.study.parent_run_id),
            *tracking.child_runs(server.url, tracking.StudyRun(
                server.url, outcome.study.experiment_id, outcome.study.parent_run_id))]
    assert len(runs) == 2 and runs[1].data.params["method.critic_width"] == "4"
    config = json.loads(Path(client.download_artifacts(runs[1].info.run_id, "config.json",
                                                       str(folder))).read_text())
    assert config["study"]["tracking_uri"] == server.url.replace("http://", "http://depthlab:"
                                                                 "***@")  # scrubbed, kept
    logged = [json.dumps([r.data.params, r.data.tags]) for r in runs] + [json.dumps(config),
                                                                         output]
    for secret in (url_password, path_password, *secrets.values()):
        assert not [text for text in logged if secret in text], secret


def test_redact_scrubs_passwords_secret_names_and_secret_environment_values(monkeypatch):
    monkeypatch.setenv("SOME_SERVICE_TOKEN", "abc123xyz")
    assert tracking.redact("postgresql://u:pw1@db:5432/m") == "postgresql://u:***@db:5432/m"
    assert tracking.redact("/mnt/bob:pw2@nas/x") == "/mnt/bob:***@nas/x"
    assert tracking.redact("key abc123xyz here") == "key *** here"
    assert tracking.redact("anything", "method.api_key") == "***"
    # values that only look alike stay
    assert tracking.redact("synthetic-surface@1") == "synthetic-surface@1"
    assert tracking.redact("4", "method.max_tokens") == "4"
    assert tracking.redact_values({"a": ["http://u:p@h"], "b": 3}) == {"a": ["http://u:***@h"],
                                                                       "b": 3}


# ---------------------------------------------------------------- checkpoints

class RunsCode:
    """Unpickling this object runs a shell command (what a hostile checkpoint carries)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_checkpoint_carrying_code_is_refused_and_the_code_never_runs(tmp_path):
    marker, path = tmp_path / "code-ran", tmp_path / "best.pt"
    torch.save({"format": checkpoint.FORMAT, "method": "wgan_perceptual",
                "state": {"w": torch.zeros(2)}, "payload": RunsCode(marker)}, path)
    # the sidecar matches: the checksum passes and weights_only alone must refuse it
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    checkpoint.digest_path(path).write_text(f"{digest}  {path.name}\n")
    pickle.loads(pickle.dumps(RunsCode(tmp_path / "control")))  # the trap is real
    assert (tmp_path / "control").exists()
    with pytest.raises(ValueError, match="is corrupt or not a depthlab checkpoint"):
        checkpoint.load(path, require_checksum=True)
    assert not marker.exists()


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def test_every_torch_load_passes_weights_only_true():
    unsafe = []
    for path in SOURCES:
        for node, name in _calls(ast.parse(path.read_text())):
            if name == "torch.load":
                flags = {k.arg: ast.unparse(k.value) for k in node.keywords}
                if flags.get("weights_only") != "True":
                    unsafe.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not unsafe, unsafe


# ---------------------------------------------------------------- configs parse safely

UNSAFE_CALLS = {"pickle.load", "pickle.loads", "marshal.loads", "shelve.open", "eval", "exec",
                "yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all",
                "jsonpickle.decode", "dill.load", "dill.loads", "cloudpickle.load"}


def test_configs_and_files_are_parsed_with_safe_loaders_only():
    """TOML (tomllib), JSON (json) and YAML only through yaml.safe_load; nothing unpickles or
    evaluates what it reads."""
    found = []
    for path in SOURCES:
        for node, name in _calls(ast.parse(path.read_text())):
            if name in UNSAFE_CALLS:
                found.append(f"{path.relative_to(REPO)}:{node.lineno} {name}")
            if name.endswith("np.load") or name == "numpy.load":
                flags = {k.arg: ast.unparse(k.value) for k in node.keywords}
                if flags.get("allow_pickle", "False") != "False":
                    found.append(f"{path.relative_to(REPO)}:{node.lineno} allow_pickle")
    assert not found, found


def test_a_python_object_tag_in_yaml_is_refused(tmp_path):
    """What `yaml.safe_load` (the only YAML loader allowed above; cluster.yaml's) does with
    a document that would run code."""
    yaml = pytest.importorskip("yaml")
    marker = tmp_path / "code-ran"
    document = f"head: !!python/object/apply:os.system ['touch {marker}']\n"
    with pytest.raises(yaml.constructor.ConstructorError, match="python/object"):
        yaml.safe_load(document)
    assert not marker.exists()


# ---------------------------------------------------------------- data stays in its root

def _prepared(folder: Path, shard: str) -> Path:
    """A minimal prepared dataset whose manifest lists `shard` as the file of split eval."""
    folder.mkdir(parents=True)
    manifest = {"splits": {"eval": {"modality": "paired", "count": 1,
                                    "shards": [{"file": shard, "rows": 1, "sha256": "0"}]}}}
    (folder / MANIFEST).write_text(json.dumps(manifest))
    return folder


def test_a_prepared_dataset_manifest_cannot_name_a_shard_outside_its_folder(tmp_path):
    outside = tmp_path / "elsewhere.parquet"
    pq.write_table(pa.table({"id": ["secret"]}), outside)
    folder = _prepared(tmp_path / "dataset", "../elsewhere.parquet")
    with pytest.raises(ValueError, match="escapes"):
        with contextlib.suppress(KeyError):  # reading the row's other columns
            next(read_rows(folder, "eval"))
