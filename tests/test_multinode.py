"""Two Ray nodes and a real MLflow tracking server, all on this machine: a smoke study with
--address and --tracking-uri runs its trials on both nodes, and every trial's metrics and
artifacts arrive through the server.

Stopping what the test started, and nothing else: `ray start --block` stays the parent
of the node's processes (GCS, raylet, dashboard, agents) and, on SIGTERM, stops them and
their workers; Ray fate-shares the children with it, so even a SIGKILL takes them down.
Every process a node starts inherits its environment, so the test marks that
environment with a random value and, after the stop, ends by pid any process whose
/proc/PID/environ still carries the mark. The MLflow server runs in its own session:
its group holds only the server and its workers.
"""

import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import run_script

pytestmark = pytest.mark.e2e

MARK = "DEPTHLAB_TEST_CLUSTER"
# MLflow's GenAI job runner (two huey consumers) is not needed to log runs: not started.
QUIET_SERVER = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
RAY = [sys.executable, "-m", "ray.scripts.scripts"]
NODES = """
import json, sys, time, ray
ray.init(address=sys.argv[1], log_to_driver=False, logging_level="ERROR")
deadline = time.time() + 90
while len([n for n in ray.nodes() if n["Alive"]]) < 2 and time.time() < deadline:
    time.sleep(1)
print(json.dumps([{"id": n["NodeID"], "resources": n["Resources"]}
                  for n in ray.nodes() if n["Alive"]]))
"""


def free_ports(count: int) -> list[int]:
    """Ports nothing listens on now, avoiding Ray's fixed defaults (6379, 8265, 10001,
    52365) that other people's Rays on this machine use."""
    ports: set[int] = set()
    while len(ports) < count:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port not in {6379, 8265, 10001, 52365}:
            ports.add(port)
    return sorted(ports)


def marked_pids(mark: str) -> list[int]:
    """Processes whose environment carries `MARK=mark`: the ones our Ray nodes started."""
    needle = f"{MARK}={mark}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                pids.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours to read
            pass
    return pids


def stop(process: subprocess.Popen, *, group: bool = False, grace: float = 30) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; `group`: the process's own session."""
    if process.poll() is not None:
        return
    send = (lambda s: os.killpg(process.pid, s)) if group else process.send_signal
    send(signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        process.wait(10)


def stop_marked(mark: str, grace: float = 20) -> list[int]:
    """Wait for our Ray processes to end; SIGKILL, by pid, those still there. Their pids."""
    deadline = time.time() + grace
    while (left := marked_pids(mark)) and time.time() < deadline:
        time.sleep(0.5)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


def wait_for(check, timeout: float, what: str, process: subprocess.Popen, log: Path):
    """Poll `check()` until it is truthy; fail with the process's log if it exits or times out."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if value := check():
            return value
        if process.poll() is not None:
            pytest.fail(f"{what}: exited {process.returncode}\n{log.read_text()[-3000:]}")
        time.sleep(1)
    pytest.fail(f"{what}: not ready after {timeout:.0f} s\n{log.read_text()[-3000:]}")


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def start(command: list[str], log: Path, env: dict[str, str], stack: ExitStack,
          session: bool = False) -> subprocess.Popen:
    """A process the test owns; it is stopped when `stack` closes."""
    handle = log.open("w")
    stack.callback(handle.close)
    process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env,
                               start_new_session=session)
    stack.callback(stop, process, group=session)
    return process


def tracking_server(folder: Path, stack: ExitStack) -> tuple[str, Path, Callable[[], None]]:
    """A real `mlflow server` (sqlite, served artifacts) on 127.0.0.1, starting: its URI,
    the folder its artifacts land in, and a function that waits until it answers."""
    port, served = free_ports(1)[0], folder / "served"
    log = folder / "mlflow-server.log"
    server = start([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
                    "--port", str(port), "--workers", "1",
                    "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
                    "--serve-artifacts", "--artifacts-destination", str(served)],
                   log, {**os.environ, **QUIET_SERVER}, stack, session=True)
    uri = f"http://127.0.0.1:{port}"
    return uri, served, lambda: wait_for(lambda: healthy(f"{uri}/health"), 180,
                                         "mlflow server", server, log)


def two_nodes(folder: Path, stack: ExitStack, monkeypatch) -> tuple[str, list[dict]]:
    """A Ray head (1 CPU, the trial drivers' resource, a dashboard for Train's cleanup) and
    a second node (1 CPU), as separate processes: the address and the nodes Ray lists."""
    gcs, dashboard, client_port, agent_head, agent_worker = free_ports(5)
    mark = secrets.token_hex(8)
    # Ray's unix sockets must fit in 107 characters: a short folder, not pytest's tmp path
    ray_tmp = Path(tempfile.mkdtemp(prefix="dl-ray-", dir="/tmp"))
    stack.callback(shutil.rmtree, ray_tmp, ignore_errors=True)
    stack.callback(lambda: print("killed leftover Ray processes:", stop_marked(mark)))
    # Train's placement-group cleaner asks the state API: this cluster's, not another's
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", f"http://127.0.0.1:{dashboard}")
    env = {**os.environ, MARK: mark, "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
    common = ["--num-cpus=1", "--num-gpus=0", "--node-ip-address=127.0.0.1",
              f"--temp-dir={ray_tmp}", "--disable-usage-stats", "--block"]
    nodes = [("ray head", ["--head", f"--port={gcs}", '--resources={"trial_driver": 2}',
                           "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                           f"--dashboard-port={dashboard}",
                           f"--ray-client-server-port={client_port}",
                           f"--dashboard-agent-listen-port={agent_head}"]),
             ("ray worker", [f"--address=127.0.0.1:{gcs}",
                             f"--dashboard-agent-listen-port={agent_worker}"])]
    for what, flags in nodes:
        log = folder / f"{what.replace(' ', '-')}.log"
        node = start([*RAY, "start", *flags, *common], log, env, stack)
        wait_for(lambda log=log: "block forever" in log.read_text(), 120, what, node, log)
    address = f"127.0.0.1:{gcs}"
    listed = subprocess.run([sys.executable, "-c", NODES, address], capture_output=True,
                            text=True, timeout=150)
    alive = json.loads(listed.stdout.strip().splitlines()[-1])
    assert len(alive) == 2, listed.stdout + listed.stderr
    return address, alive


def test_trials_run_on_two_nodes_and_log_through_a_tracking_server(isolated, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # with the test's own token (isolated)
    with ExitStack() as stack:
        uri, served, server_ready = tracking_server(isolated, stack)  # starts meanwhile
        address, nodes = two_nodes(isolated, stack, monkeypatch)
        server_ready()
        done = run_script("studies/wgan_surface.py", "--budget", "smoke", "--trials", "2",
                          "--address", address, "--tracking-uri", uri, cwd=isolated,
                          timeout=400)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("wgan-surface")
        runs = client.search_runs([experiment.experiment_id])
        children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
        assert [r.info.status for r in children] == ["FINISHED"] * 2
        # one trial per node: each trial's worker needs the one CPU a node has
        ran_on = sorted(r.data.tags["depthlab.node_id"] for r in children)
        assert ran_on == sorted(n["id"] for n in nodes), (ran_on, nodes)
        # one machine: both nodes report its address (Ray's view of the host, not 127.0.0.1)
        assert len({ipaddress.ip_address(r.data.tags["depthlab.node_ip"]) for r in children}) == 1
        for child in children:
            tags, run_id = child.data.tags, child.info.run_id
            assert tags["depthlab.hostname"] == socket.gethostname()
            assert tags["depthlab.study"] == "wgan-surface" and tags["depthlab.budget"] == "smoke"
            name = child.info.run_name
            assert name.startswith("wgan_perceptual critic=") and " #" in name, name
            assert {"eval/rmse_um", "best/rmse_um", "train/critic_loss"} <= set(child.data.metrics)
            listed = {a.path: a.file_size for a in client.list_artifacts(run_id, "checkpoint")}
            stored = served / experiment.experiment_id / run_id / "artifacts"
            checkpoint = stored / "checkpoint" / "best.pt"
            assert listed["checkpoint/best.pt"] == checkpoint.stat().st_size > 0
            assert (stored / "depth_panel.png").is_file() and (stored / "config.json").is_file()
        # nothing went around the server: no local store, no local artifact folder
        assert not (isolated / "mlflow.db").exists()
        assert not list((isolated / "depthlab_runs").glob("mlartifacts/**/*.pt"))
