"""The MLflow UI in a real browser: headless Chromium renders the runs table of a study
(written with tracking.py, named as the study names them) from a real `mlflow ui`."""

import html
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest
from PIL import Image

from depthlab.report import write_report
from tests.test_report import STUDY, TRIALS, write_study

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser",
                                                "google-chrome"))), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary on PATH "
                                "(Debian: apt-get install chromium; .ci/run installs it)")


# MLflow's GenAI job runner (two huey consumers) is not needed to show runs: not started.
QUIET_SERVER = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def browse(url: str, folder, rendered: str, screenshot=None, attempts: int = 3) -> str:
    """The DOM Chromium renders for `url` (and a 1400x900 screenshot when asked), once it
    contains `rendered`: on a loaded machine the runs may arrive after the virtual time
    budget, so a page without it is loaded again, at most `attempts` times."""
    for _ in range(attempts):
        dom = _render(url, folder, screenshot)
        if rendered in dom:
            break
    return dom


def _render(url: str, folder, screenshot=None, timeout: float = 180) -> str:
    """One headless Chromium visit with a fresh profile: nothing from earlier visits or
    from the user's own browser."""
    profile = tempfile.mkdtemp(prefix="chromium-", dir=folder)
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
               "--disable-dev-shm-usage", f"--user-data-dir={profile}",
               "--window-size=1400,900", "--virtual-time-budget=15000", "--dump-dom", url]
    if screenshot is not None:
        command.insert(-2, f"--screenshot={screenshot}")
    browser = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True, start_new_session=True)
    try:
        dom, _ = browser.communicate(timeout=timeout)
    finally:
        if browser.poll() is None:  # its group: the browser's own helper processes
            os.killpg(browser.pid, signal.SIGKILL)
            browser.wait()
    return dom


def text(dom: str) -> str:
    """The page's text: `<strong>5</strong> matching runs` → `5 matching runs`."""
    return re.sub(r"<[^>]+>", "", dom)


def wait_healthy(url: str, server: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert server.poll() is None, f"mlflow ui exited with {server.returncode}"
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    pytest.fail(f"mlflow ui not healthy after {timeout:.0f} s")


def test_runs_table_shows_the_study_runs_and_metric_columns(tmp_path):
    uri, study, names = write_study(tmp_path, TRIALS)  # the UI must not create the database
    port = free_port()
    log = (tmp_path / "mlflow-ui.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                              env={**os.environ, **QUIET_SERVER})
    try:
        # while the UI starts: the report saves the comparison view and prints its link
        made = write_report(STUDY, tracking_uri=uri, out=tmp_path / "report")
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, server)
        runs = f"{base}/#/experiments/{study.experiment_id}/runs"

        # the study's link: the parent run, its trials collapsed under it
        page = browse(runs, tmp_path, rendered="matching runs")
        assert "wgan-surface-smoke" in page and f"{len(TRIALS) + 1} matching runs" in text(page)

        # the report's link: the trials flat, best first, with metric and param columns
        assert made.view_link.startswith("http://127.0.0.1:5000/#/experiments/")
        view = made.view_link.replace("http://127.0.0.1:5000", base)
        shot = tmp_path / "runs.png"
        page = browse(view, tmp_path, rendered="matching runs", screenshot=shot)
        assert "Error loading shared view state" not in page
        assert f"{len(TRIALS)} matching runs" in text(page)  # the parent row filtered out
        for column in ("best/rmse_um", "best/corr", "method.critic", "method.critic_lr"):
            assert f">{column}<" in page, column
        shown = [page.index(html.escape(names[i])) for i in (1, 0, 2, 3)]  # by best/rmse_um
        assert shown == sorted(shown)
        with Image.open(shot) as image:
            assert image.format == "PNG" and image.size == (1400, 900)
    finally:
        stop_server(server)
        log.close()


def stop_server(server: subprocess.Popen) -> None:
    """SIGTERM (mlflow stops its uvicorn workers), then SIGKILL to the server's own session
    group for whatever is left: only processes this test started are in it."""
    server.terminate()
    try:
        server.wait(30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
    try:
        os.killpg(server.pid, signal.SIGKILL)
    except ProcessLookupError:  # nothing left
        pass
