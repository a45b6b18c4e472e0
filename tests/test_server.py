"""`depthlab server`: a real MLflow tracking server on sqlite and on a real PostgreSQL, with
served artifacts, bound to 127.0.0.1, and basic auth with a generated password."""

import base64
import glob
import importlib.util
import ipaddress
import os
import pwd
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from depthlab import cli, server, tracking

HEALTH_TIMEOUT_S = 300  # health came after 17-60 s here under shared load: leave a wide margin
SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"


# ---------------------------------------------------------------- helpers

def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _status(url: str, credentials: tuple[str, str] | None = None) -> int:
    """The HTTP status of a GET, with optional basic-auth credentials."""
    request = urllib.request.Request(url)
    if credentials:
        token = base64.b64encode(":".join(credentials).encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


class Server:
    """A `depthlab server` subprocess in its own session, its output in a log file."""

    def __init__(self, folder: Path, *args: str):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder / f"server-{self.port}.log"
        command = [sys.executable, "-m", "depthlab.cli", "server", "--port", str(self.port),
                   "--workers", "1", *args]
        with open(self.log, "w") as out:  # a file, not a pipe: a full pipe would stall it
            self.process = subprocess.Popen(command, cwd=folder, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_healthy(self) -> None:
        deadline = time.time() + HEALTH_TIMEOUT_S
        while time.time() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"server exited with {self.process.returncode}:\n"
                            f"{self.output()[-3000:]}")
            try:
                if _status(f"{self.url}/health") == 200:
                    return
            except OSError:
                pass
            time.sleep(1)
        pytest.fail(f"no /health within {HEALTH_TIMEOUT_S} s:\n{self.output()[-3000:]}")

    def group_pids(self) -> list[int]:
        """Our server and its workers: the processes of the session it leads."""
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[3]) == self.process.pid:  # field 5 of stat: process group
                    pids.append(int(entry.name))
        return pids

    def stop(self) -> None:
        """SIGTERM to the server (MLflow passes it on to its workers), then SIGKILL to
        whatever of its own session is left."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # the group we created, nothing else
        except ProcessLookupError:
            pass
        self.process.wait(timeout=30)


@pytest.fixture
def start_server():
    """Start `depthlab server` processes; every one is stopped at teardown."""
    started = []

    def start(folder: Path, *args: str) -> Server:
        started.append(Server(folder, *args))
        return started[-1]

    yield start
    for one in started:
        one.stop()


def _listening_addresses(port: int) -> set[str]:
    """Local addresses of sockets listening on `port` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state != "0A" or int(hex_port, 16) != port:  # 0A = LISTEN
                continue
            raw = bytes.fromhex(address)
            # the kernel prints each 32-bit word in host (little-endian) order
            packed = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            found.add(str(ipaddress.ip_address(packed)))
    return found


def _outward_address() -> str | None:
    """This machine's first non-loopback IPv4 address, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if ipaddress.ip_address(address).is_loopback else address


def _log_a_trial(uri: str, folder: Path) -> tuple[str, str]:
    """A parent and a child run through tracking.py, with a metric and an artifact."""
    study = tracking.start_study(uri, "server-check", folder / "unused-artifacts", "parent",
                                 {"budget": "smoke"}, {"depthlab.study": "server-check"})
    trial = tracking.TrialRun(study, "trial-0", {"method": {"lr": 0.001}})
    trial.log_metrics(0, {"eval/rmse_um": 1.25})
    panel = folder / "depth_panel.txt"
    panel.write_text("served artifact\n")
    trial.log_artifact(panel, "panels")
    tracking.end_run(uri, trial.run_id, "FINISHED")
    tracking.end_run(uri, study.parent_run_id, "FINISHED")
    return study.parent_run_id, trial.run_id


def _check_served(uri: str, destination: Path, run_id: str) -> None:
    """The artifact landed under the server's destination and the server lists it."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["eval/rmse_um"] == 1.25
    assert run.data.params["method.lr"] == "0.001"
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied by the server
    stored = list(destination.rglob("depth_panel.txt"))
    assert len(stored) == 1 and run_id in stored[0].parts
    assert stored[0].read_text() == "served artifact\n"
    listed = [a.path for a in client.list_artifacts(run_id, "panels")]
    assert listed == ["panels/depth_panel.txt"]


# ---------------------------------------------------------------- fast checks, no server

def test_defaults_bind_localhost_without_auth_and_beyond_localhost_need_auth(tmp_path):
    local = server.server_config(auth_dir=tmp_path)
    assert (local.host, local.port, local.auth) == ("127.0.0.1", 5000, False)
    assert local.backend_store_uri == f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"
    assert server.server_config(host="10.0.0.5", auth_dir=tmp_path).auth is True
    assert server.server_config(host="::1", auth_dir=tmp_path).auth is False
    with pytest.raises(ValueError, match="--host 10.0.0.5 listens beyond localhost.*--auth"):
        server.server_config(host="10.0.0.5", auth=False)
    with pytest.raises(ValueError, match="--port 0"):
        server.server_config(port=0)


def test_backend_uris_postgres_pinned_to_psycopg2_and_passwords_never_shown():
    config = server.server_config("postgresql://mlflow:s3cret@db:5432/mlflow")
    assert config.backend_store_uri == "postgresql+psycopg2://mlflow:s3cret@db:5432/mlflow"
    assert "s3cret" not in server.describe(config)
    assert "s3cret" not in " ".join(server.command(config))  # goes by environment instead
    assert server.environment(config, {})["MLFLOW_BACKEND_STORE_URI"] == \
        config.backend_store_uri
    assert server.mask_password("postgresql://u:p%40ss@h/db") == "postgresql://u:***@h/db"
    assert server.mask_password("postgresql:///db?host=/run&password=x") == \
        "postgresql:///db?host=/run&password=***"
    with pytest.raises(ValueError, match=r"mysql://u:\*\*\*@h/db"):
        server.server_config("mysql://u:pw@h/db")
    with pytest.raises(ValueError, match="write postgresql://"):
        server.server_config("postgres://u@h/db")


def test_command_serves_artifacts_and_adds_basic_auth_only_when_on(tmp_path):
    plain = server.server_config(artifacts_destination="s3://bucket/depthlab", auth_dir=tmp_path)
    args = server.command(plain)
    assert "--serve-artifacts" in args
    assert args[args.index("--artifacts-destination") + 1] == "s3://bucket/depthlab"
    assert args[args.index("--host") + 1] == "127.0.0.1" and "--app-name" not in args
    secured = server.server_config(auth=True, auth_dir=tmp_path)
    assert server.command(secured)[-2:] == ["--app-name", "basic-auth"]


def test_auth_files_are_private_generated_once_and_hold_no_password(tmp_path):
    config = server.server_config(auth=True, auth_dir=tmp_path / "auth")
    env = server.prepare_auth(config)
    folder = tmp_path / "auth"
    password = (folder / "admin_password").read_text().strip()
    assert len(password) >= 40 and password != "password1234"
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] == password
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for name in ("admin_password", "flask_secret_key", "basic_auth.ini"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600, name
    ini = (folder / "basic_auth.ini").read_text()
    assert password not in ini and f"sqlite:///{folder / 'basic_auth.db'}" in ini
    assert server.prepare_auth(config)["MLFLOW_AUTH_ADMIN_PASSWORD"] == password  # reused
    assert not list(folder.glob("*.tmp"))

    (folder / "admin_password").chmod(0o644)
    with pytest.raises(ValueError, match="readable by others.*chmod 600"):
        server.prepare_auth(config)
    (folder / "admin_password").unlink()
    (folder / "basic_auth.db").write_bytes(b"")  # the admin user exists; its password is lost
    with pytest.raises(ValueError, match="holds the admin user but .*admin_password is gone"):
        server.prepare_auth(config)


def test_cli_turns_a_bad_server_setting_into_exit_code_2(capsys):
    assert cli.main(["server", "--host", "192.0.2.7", "--no-auth"]) == 2
    assert "error: --host 192.0.2.7 listens beyond localhost" in capsys.readouterr().err


# ---------------------------------------------------------------- real servers

def test_sqlite_server_takes_runs_serves_artifacts_and_listens_on_localhost_only(
        isolated, start_server):
    destination = isolated / "served"
    database = isolated / "db" / "mlflow.db"
    running = start_server(isolated, "--backend-store-uri", f"sqlite:///{database}",
                           "--artifacts-destination", str(destination))
    running.wait_healthy()
    with sqlite3.connect(database) as db:  # MLflow made the schema before its web worker ran
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    assert {"experiments", "runs", "metrics", "alembic_version"} <= tables

    _, run_id = _log_a_trial(running.url, isolated)
    _check_served(running.url, destination, run_id)

    assert _listening_addresses(running.port) == {"127.0.0.1"}
    outward = _outward_address()
    if outward:  # nothing answers on the machine's other address
        with pytest.raises(OSError), socket.create_connection((outward, running.port), 5):
            pass
    text = running.output()
    assert f"MLflow tracking server on {running.url}" in text
    assert f"artifacts: {destination} (served by the server)" in text


def _postgres_bin(name: str) -> str | None:
    """A PostgreSQL server binary: on PATH, or where Debian's postgresql-NN puts it."""
    return shutil.which(name) or next(iter(sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)


@pytest.fixture
def postgres():
    """A real PostgreSQL with database `mlflow` (user mlflow, password auth) on 127.0.0.1 and
    on a socket in its folder: yields (folder, port, password).

    PostgreSQL refuses to run as root: as root, the server runs as the unprivileged
    user `nobody` (runuser), in a folder under /tmp that it owns.
    """
    initdb, postgres_bin = _postgres_bin("initdb"), _postgres_bin("postgres")
    if not (initdb and postgres_bin):
        pytest.skip("PostgreSQL server binaries (initdb, postgres) not found; on Debian: "
                    "apt-get install postgresql-15 (.ci/run does)")
    if importlib.util.find_spec("psycopg2") is None:
        pytest.skip('psycopg2 is not installed: pip install -e ".[server]"')
    as_user = []
    folder = Path(tempfile.mkdtemp(prefix="depthlab-pg-"))
    password = base64.urlsafe_b64encode(os.urandom(18)).decode()
    (folder / "pwfile").write_text(password + "\n")
    if os.geteuid() == 0:
        if not shutil.which("runuser"):
            pytest.skip("running as root without runuser: cannot start PostgreSQL")
        nobody = pwd.getpwnam("nobody")
        for path in (folder, folder / "pwfile"):
            os.chown(path, nobody.pw_uid, nobody.pw_gid)
        as_user = ["runuser", "-u", "nobody", "--"]
    port = _free_port()
    process = None
    try:
        subprocess.run(as_user + [initdb, "-D", str(folder / "data"), "-U", "mlflow",
                                  "--auth=scram-sha-256", f"--pwfile={folder / 'pwfile'}",
                                  "-E", "UTF8", "--no-locale"],
                       check=True, capture_output=True, timeout=180)
        with open(folder / "postgres.log", "w") as out:
            process = subprocess.Popen(
                as_user + [postgres_bin, "-D", str(folder / "data"), "-k", str(folder),
                           "-p", str(port), "-h", "127.0.0.1", "-c", "fsync=off"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        _create_database(port, password, process, folder)
        yield folder, port, password
    finally:
        if process is not None:
            _stop_postgres(process, folder / "data" / "postmaster.pid")
        shutil.rmtree(folder, ignore_errors=True)


def _create_database(port: int, password: str, process, folder: Path) -> None:
    import psycopg2

    deadline = time.time() + 120
    while True:
        try:
            connection = psycopg2.connect(host="127.0.0.1", port=port, user="mlflow",
                                          password=password, dbname="postgres")
            break
        except psycopg2.OperationalError:
            if process.poll() is not None or time.time() > deadline:
                pytest.fail("PostgreSQL did not start:\n" +
                            (folder / "postgres.log").read_text()[-3000:])
            time.sleep(0.5)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute("CREATE DATABASE mlflow")
    connection.close()


def _stop_postgres(process, pid_file: Path) -> None:
    """Fast shutdown (SIGINT) of the postmaster we started, then wait for runuser too."""
    if pid_file.exists():
        try:
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGINT)
        except (ProcessLookupError, ValueError):
            pass
    else:
        process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the session we created for it
        process.wait(timeout=30)


def test_postgres_server_keeps_runs_in_postgres_and_never_shows_its_password(
        isolated, postgres, start_server):  # servers stop before the database
    import psycopg2

    folder, port, password = postgres
    # the socket form cluster.yaml uses (there with peer auth, here with a password)
    uri = f"postgresql:///mlflow?host={folder}&port={port}&user=mlflow&password={password}"
    destination = isolated / "served"
    running = start_server(isolated, "--backend-store-uri", uri,
                           "--artifacts-destination", str(destination))
    running.wait_healthy()
    parent_id, run_id = _log_a_trial(running.url, isolated)
    _check_served(running.url, destination, run_id)

    connection = psycopg2.connect(host="127.0.0.1", port=port, user="mlflow",
                                  password=password, dbname="mlflow")
    with connection.cursor() as cursor:
        cursor.execute("SELECT run_uuid, status FROM runs ORDER BY run_uuid")
        rows = cursor.fetchall()
    connection.close()
    assert sorted(rows) == sorted([(parent_id, "FINISHED"), (run_id, "FINISHED")])

    assert f"backend store: postgresql+psycopg2:///mlflow?host={folder}&port={port}&user=mlflow" \
        "&password=***" in running.output()
    assert password not in running.output()
    for pid in running.group_pids():  # the URI went by environment, not on a command line
        assert password not in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    assert _listening_addresses(running.port) == {"127.0.0.1"}


def test_auth_refuses_anonymous_and_default_password_and_admits_the_generated_one(
        isolated, start_server, monkeypatch):
    if importlib.util.find_spec("flask_wtf") is None:
        pytest.skip('MLflow basic auth needs Flask-WTF: pip install -e ".[server]"')
    auth_dir = isolated / "auth"
    running = start_server(isolated, "--auth", "--auth-dir", str(auth_dir),
                           "--backend-store-uri", f"sqlite:///{isolated / 'mlflow.db'}",
                           "--artifacts-destination", str(isolated / "served"))
    running.wait_healthy()
    password_file = auth_dir / "admin_password"
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    password = password_file.read_text().strip()

    api = running.url + SEARCH
    assert _status(api) == 401
    assert _status(api, ("admin", "password1234")) == 401  # MLflow's old default stays dead
    assert _status(api, ("admin", password + "x")) == 401
    assert _status(api, ("admin", password)) == 200

    # a study's processes authenticate through MLflow's standard environment variables
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    _, run_id = _log_a_trial(running.url, isolated)
    _check_served(running.url, isolated / "served", run_id)

    text = running.output()
    assert f"basic auth: user admin, password in {password_file} (mode 600)" in text
    assert password not in text
    assert _listening_addresses(running.port) == {"127.0.0.1"}
