"""`depthlab server`: MLflow's tracking server on a real database, serving the artifacts.

PostgreSQL when a postgresql:// URI is given, sqlite otherwise. It binds
127.0.0.1 unless told otherwise; listening beyond localhost requires MLflow's
basic auth, whose admin password is generated here and kept in a file of mode
600 (MLflow ships none, and refuses its old default). A thin wrapper: it checks
the input, writes the auth files, then `exec`s `mlflow server`, so its pid is
the server's and a signal to it reaches MLflow.

MLflow creates the database schema in its own process before it starts the
web workers, so workers never race a migration (RAY_NOTES).
"""

import importlib.util
import ipaddress
import os
import re
import socket
import stat
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from depthlab import tracking

ADMIN_USER = "admin"
DEFAULT_AUTH_DIR = Path("~/.config/depthlab/mlflow-auth")
PASSWORD_FILE = "admin_password"
SECRET_KEY_FILE = "flask_secret_key"  # signs MLflow's CSRF tokens; stable across restarts
AUTH_CONFIG_FILE = "basic_auth.ini"
AUTH_DB_FILE = "basic_auth.db"
POSTGRES_SCHEMES = ("postgresql", "postgresql+psycopg2")


@dataclass(frozen=True)
class ServerConfig:
    """Where the server keeps runs, artifacts and auth files, and where it listens."""

    backend_store_uri: str
    artifacts_destination: str
    host: str = "127.0.0.1"
    port: int = 5000
    auth: bool = False
    auth_dir: Path = DEFAULT_AUTH_DIR
    workers: int = 4

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise ValueError(f"--port {self.port}: expected 1..65535")
        if self.workers < 1:
            raise ValueError(f"--workers {self.workers}: expected >= 1")
        if not self.auth and not is_loopback(self.host):
            raise ValueError(f"--host {self.host} listens beyond localhost: that needs --auth "
                             "(MLflow basic auth), or keep the default --host 127.0.0.1")
        scheme = urlsplit(self.backend_store_uri).scheme
        if scheme != "sqlite" and scheme not in POSTGRES_SCHEMES:
            raise ValueError(f"--backend-store-uri {mask_password(self.backend_store_uri)!r}: "
                             "expected sqlite:///PATH or postgresql://USER@HOST:PORT/DB")


def is_loopback(host: str) -> bool:
    """True for names and addresses that only this machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def mask_password(uri: str) -> str:
    """The URI with any password replaced by ***, for printing."""
    # On the raw text, so a percent-encoded password is masked whole too.
    uri = re.sub(r"^([\w+.-]+://[^/:@]*):[^/@]*@", r"\1:***@", uri)
    return re.sub(r"([?&]password=)[^&]*", r"\1***", uri)


def _backend_uri(uri: str | None) -> str:
    """sqlite paths made absolute; postgresql:// pinned to psycopg2, the driver the `server`
    extra installs (SQLAlchemy 2.1 otherwise picks psycopg 3)."""
    uri = uri or tracking.default_store()  # not $MLFLOW_TRACKING_URI: that names a server
    scheme = urlsplit(uri).scheme
    if scheme == "sqlite":
        path = Path(uri[len("sqlite:///"):]).expanduser().resolve()
        return f"sqlite:///{path}"
    if scheme == "postgres":
        raise ValueError(f"--backend-store-uri {mask_password(uri)!r}: write postgresql://, "
                         "not postgres://")
    if scheme == "postgresql":
        return "postgresql+psycopg2" + uri[len("postgresql"):]
    return uri


def _artifacts_destination(value: str | None) -> str:
    """An object-store URI as given; a local folder made absolute."""
    if value and "://" in value:
        return value
    return str(Path(value or "mlartifacts").expanduser().resolve())


def server_config(backend_store_uri: str | None = None, artifacts_destination: str | None = None,
                  host: str = "127.0.0.1", port: int = 5000, auth: bool | None = None,
                  auth_dir: str | Path | None = None, workers: int = 4) -> ServerConfig:
    """The server's settings from CLI values; auth defaults to on beyond localhost."""
    return ServerConfig(
        backend_store_uri=_backend_uri(backend_store_uri),
        artifacts_destination=_artifacts_destination(artifacts_destination),
        host=host, port=port, auth=(not is_loopback(host)) if auth is None else auth,
        auth_dir=Path(auth_dir or DEFAULT_AUTH_DIR).expanduser().resolve(), workers=workers)


def check_installed(config: ServerConfig) -> None:
    """The drivers this configuration needs are importable, else say what to install."""
    needs = []  # (module, what needs it, the extra that installs it)
    if urlsplit(config.backend_store_uri).scheme in POSTGRES_SCHEMES:
        needs.append(("psycopg2", "a PostgreSQL backend store", "server"))
    if config.auth:
        needs.append(("flask_wtf", "MLflow basic auth", "server"))
    if config.artifacts_destination.startswith("s3://"):
        needs.append(("boto3", "an s3:// artifacts destination", "cluster"))
    for module, purpose, extra in needs:
        if importlib.util.find_spec(module) is None:
            raise ValueError(f"{purpose} needs the Python package {module}: "
                             f'pip install -e ".[{extra}]"')


def prepare_storage(config: ServerConfig) -> None:
    """Create the sqlite file's folder and the local artifacts folder, or say why not."""
    if urlsplit(config.backend_store_uri).scheme == "sqlite":
        tracking.check_writable(config.backend_store_uri)
        Path(config.backend_store_uri[len("sqlite:///"):]).parent.mkdir(parents=True,
                                                                        exist_ok=True)
    if "://" not in config.artifacts_destination:
        try:
            Path(config.artifacts_destination).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ValueError(f"--artifacts-destination {config.artifacts_destination}: "
                             f"cannot create it ({error.strerror})") from None


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read: temporary name (mode 600), then rename."""
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_or_create_secret(path: Path) -> str:
    """The secret in `path`, generated (URL-safe, 32 random bytes) on first use."""
    import secrets

    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise ValueError(f"{path} is readable by others (mode {mode:o}); run "
                             f"`chmod 600 {path}`")
        value = path.read_text().strip()
        if not value:
            raise ValueError(f"{path} is empty; delete it (and {AUTH_DB_FILE} beside it) to "
                             "generate a new one")
        return value
    value = secrets.token_urlsafe(32)
    _write_private(path, value + "\n")
    return value


def prepare_auth(config: ServerConfig) -> dict[str, str]:
    """Write the basic-auth config and secrets; the environment `mlflow server` needs for them.

    The admin user is created from the password on the first start; afterwards
    MLflow ignores it, so a user store without its password file is an error.
    """
    folder = config.auth_dir
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    password_file, auth_db = folder / PASSWORD_FILE, folder / AUTH_DB_FILE
    if auth_db.exists() and not password_file.exists():
        raise ValueError(f"{auth_db} holds the admin user but {password_file} is gone: restore "
                         f"that file, or delete {auth_db} to create the admin user anew")
    password = read_or_create_secret(password_file)
    secret_key = read_or_create_secret(folder / SECRET_KEY_FILE)
    ini = (f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{auth_db}\n"
           f"admin_username = {ADMIN_USER}\n"
           "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    _write_private(folder / AUTH_CONFIG_FILE, ini)  # no secret inside: they go by environment
    return {"MLFLOW_AUTH_CONFIG_PATH": str(folder / AUTH_CONFIG_FILE),
            "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN_USER, "MLFLOW_AUTH_ADMIN_PASSWORD": password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secret_key}


def command(config: ServerConfig) -> list[str]:
    """The `mlflow server` command line (the backend URI goes by environment: it may hold a
    database password, and a command line is visible to every user of the machine)."""
    args = [sys.executable, "-m", "mlflow", "server", "--serve-artifacts",
            "--artifacts-destination", config.artifacts_destination,
            "--host", config.host, "--port", str(config.port),
            "--workers", str(config.workers)]
    return args + (["--app-name", "basic-auth"] if config.auth else [])


def environment(config: ServerConfig, auth_env: dict[str, str]) -> dict[str, str]:
    """The server's environment: ours, the backend URI and the auth settings."""
    return {**os.environ, **auth_env, "MLFLOW_BACKEND_STORE_URI": config.backend_store_uri,
            # MLflow's GenAI job runners (7 processes here) serve nothing a depth study uses,
            # and they outlive a SIGTERM of the server.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def url(config: ServerConfig) -> str:
    """The address clients use."""
    wildcard = config.host in ("0.0.0.0", "::")
    host = socket.gethostname() if wildcard else config.host
    return f"http://{f'[{host}]' if ':' in host else host}:{config.port}"


def describe(config: ServerConfig) -> str:
    """What the server will serve, for the terminal (never a password)."""
    lines = [f"MLflow tracking server on {url(config)} (runs tables: …/#/experiments/<id>/runs)",
             f"  backend store: {mask_password(config.backend_store_uri)}",
             f"  artifacts: {config.artifacts_destination} (served by the server)"]
    if config.auth:
        password_file = config.auth_dir / PASSWORD_FILE
        lines += [f"  basic auth: user {ADMIN_USER}, password in {password_file} (mode 600)",
                  f"  clients: export MLFLOW_TRACKING_USERNAME={ADMIN_USER} "
                  f'MLFLOW_TRACKING_PASSWORD="$(cat {password_file})"']
    else:
        lines.append("  no auth: it answers this machine only (every user of it)")
    return "\n".join(lines)


def serve(config: ServerConfig) -> None:
    """Check and prepare everything, print where things are, then become `mlflow server`."""
    check_installed(config)
    prepare_storage(config)
    auth_env = prepare_auth(config) if config.auth else {}
    print(describe(config), flush=True)
    args = command(config)
    os.execve(args[0], args, environment(config, auth_env))
