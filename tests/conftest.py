"""Shared fixtures: every test that starts Ray or writes runs gets its own folders."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def isolate(folder: Path, patch: pytest.MonkeyPatch) -> Path:
    """Make `folder` the working directory, with its own data directory and Ray token (the
    user's stay untouched) and no cluster or tracking server of the user's."""
    patch.chdir(folder)
    patch.setenv("DEPTHLAB_DATA", str(folder / "data"))
    for name in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS"):
        patch.delenv(name, raising=False)
    token = folder / "ray_auth_token"  # token auth stays on, with the test's own token
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    patch.setenv("RAY_AUTH_TOKEN_PATH", str(token))
    # Ray caches the first token it read in a process: make it read this one
    from ray._raylet import AuthenticationTokenLoader

    AuthenticationTokenLoader.instance().reset_cache()
    return folder


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """A fresh working directory, data directory and Ray token (see `isolate`)."""
    yield isolate(tmp_path, monkeypatch)
    import ray

    if ray.is_initialized():
        ray.shutdown()


def run_script(script: str, *args: str, cwd: Path, timeout: float = 600,
               wait: bool = True) -> subprocess.CompletedProcess | subprocess.Popen:
    """Run a study script as a user would, in `cwd`, with the isolated environment."""
    command = [sys.executable, str(REPO / script), *args]
    env = dict(os.environ)
    if wait:
        try:
            return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired as expired:  # show where it stalled, not pytest's cut
            pytest.fail(f"{script} {' '.join(args)} ran past {timeout:.0f} s; its output:\n"
                        f"{_text(expired.stdout)[-6000:]}\n{_text(expired.stderr)[-6000:]}")
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _text(output: bytes | str | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""
