"""Every benchmark script runs once in its tiny configuration, so none can rot.

No time is asserted (timings on a shared CI machine mean nothing): each script must exit 0
and print its summary line, whose figures must all be finite numbers. A script added to
benchmarks/ is picked up here and run with `--tiny`, its summary line `<name>: ...`.
"""

import math
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.conftest import REPO, run_script

BENCHMARKS = sorted((REPO / "benchmarks").glob("*.py"))
# Scripts written before the `--tiny` / `<name>: ...` convention: their small arguments
# and the start of the line that sums them up.
SMALL_ARGS = {
    "ray_overhead": ["--budget", "smoke", "--trials", "1", "--steps", "2"],
    "data_throughput": ["--size", "32x32", "--pairs", "16"],
}
SUMMARY_START = {
    "ray_overhead": "wall-time ratio depthlab / plain:",
    "data_throughput": "default surface WGAN step consumes",
}
NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?|[-+]?(?:inf|nan)\b",
                    re.IGNORECASE)
TIMEOUT = 900  # seconds: generous, the machine is shared; nothing here times the figures


def summary_figures(stdout: str, name: str) -> tuple[str, list[float]]:
    """The last summary line of a benchmark's output and the numbers in it."""
    lines: list[str] = []
    for start in (f"{name}:", SUMMARY_START.get(name)):  # the convention first
        if start:
            lines = [line.strip() for line in stdout.splitlines()
                     if line.strip().startswith(start)]
        if lines:
            break
    assert lines, f"no summary line of {name} in:\n{stdout[-3000:]}"
    line = lines[-1]
    return line, [float(n) for n in NUMBER.findall(line[len(start):])]


def test_summary_figures_are_parsed_and_non_finite_ones_caught():
    line, figures = summary_figures("x\nsearch_efficiency: tpe+asha 0.18 of grid compute, "
                                    "random 0.41 (goal <= 0.25)\n", "search_efficiency")
    assert line.startswith("search_efficiency:") and figures == [0.18, 0.41, 0.25]
    _, bad = summary_figures("train_throughput: min nan (goal >= 0.95x)", "train_throughput")
    assert not all(math.isfinite(f) for f in bad)
    _, old = summary_figures("wall-time ratio depthlab / plain: 1.32  (goal <= 1.15)",
                             "ray_overhead")
    assert old == [1.32, 1.15]
    with pytest.raises(AssertionError, match="no summary line"):
        summary_figures("nothing here", "inference")


def _arguments(path: Path, tmp: Path) -> list[str]:
    name = path.stem
    args = SMALL_ARGS.get(name, ["--tiny"])
    if name == "ray_overhead":
        args = [*args, "--out", str(tmp / "ray_overhead")]
    return args


@pytest.fixture
def short_tmpdir(monkeypatch):
    """A short TMPDIR, removed afterwards: scripts' temporary folders land there (some keep
    theirs), and Ray's socket paths under it stay within AF_UNIX's 107 bytes."""
    folder = tempfile.mkdtemp(prefix="bench-", dir="/tmp")
    monkeypatch.setenv("TMPDIR", folder)
    yield Path(folder)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("path", BENCHMARKS, ids=[p.stem for p in BENCHMARKS])
def test_benchmark_runs_tiny_and_prints_finite_ratios(path, isolated, short_tmpdir):
    done = run_script(f"benchmarks/{path.name}", *_arguments(path, isolated), cwd=isolated,
                      timeout=TIMEOUT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    line, figures = summary_figures(done.stdout, path.stem)
    assert figures, f"no figures in {line!r}"
    assert all(math.isfinite(f) for f in figures), line


def test_search_efficiency_reuses_its_cached_curves(isolated):
    first = run_script("benchmarks/search_efficiency.py", "--tiny", "--seeds", "2",
                       cwd=isolated, timeout=TIMEOUT)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "training 8 of 8 configurations" in first.stdout
    caches = list((isolated / "data" / "benchmarks").glob("search_efficiency-*.json"))
    assert len(caches) == 1
    again = run_script("benchmarks/search_efficiency.py", "--tiny", "--seeds", "2",
                       cwd=isolated, timeout=TIMEOUT)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "training" not in again.stdout.split("grid:")[0]  # nothing trained again
    # the same curves and the same seeds: the same searches
    assert (summary_figures(again.stdout, "search_efficiency")
            == summary_figures(first.stdout, "search_efficiency"))
