"""`depthlab report STUDY`: Optuna plots and a leaderboard page of a study, written to a
folder and logged to the study's parent run.

Everything is rebuilt from MLflow (the parent run's child runs), not from
Tune's experiment folder, so a report works wherever the tracking store is
reachable. Optuna never saw the study directly (Ray ran it): an in-memory
Optuna study is made from the runs, with distributions inferred from the values.
"""

import html
import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from depthlab import tracking
from depthlab.loop import mode_for
from depthlab.study import STOPPED_EARLY_TAG, baseline_key, leaderboard, varied_params

ARTIFACT_FOLDER = "report"
MIN_TRIALS_FOR_IMPORTANCE = 3  # fewer finished trials give importances that mean nothing
PLOTS = ("optimization_history", "param_importances", "parallel_coordinate")


@dataclass(frozen=True)
class Report:
    """What `write_report` made: the study, the folder, the files, and plots left out."""

    study: tracking.StudyRun
    folder: Path
    files: tuple[Path, ...]
    skipped: tuple[str, ...]  # one message per plot not drawn, saying why
    metric: str
    mode: str
    view_link: str  # the MLflow UI's runs table of this study run, best first


def study_metric(parent: dict[str, Any], metric: str | None, mode: str | None
                 ) -> tuple[str, str]:
    """The metric and direction to rank by: given, else the parent run's (mode from its
    param when logged, else by the metric's name: corr, δ… are better higher)."""
    metric = metric or parent["params"].get("metric")
    if not metric:
        raise ValueError("the study's parent run has no `metric` param: pass --metric")
    mode = mode or parent["params"].get("mode")
    if mode is None:
        mode = mode_for(metric)
    if mode not in ("min", "max"):
        raise ValueError(f"--mode {mode!r}: expected min or max")
    return metric, mode


def _scored(rows: list[dict[str, Any]], started: dict[str, int]) -> list[dict[str, Any]]:
    """Finished trials with a finite metric value, in the order they started."""
    done = [r for r in rows if r["status"] == "FINISHED" and r["value"] is not None
            and math.isfinite(r["value"])]
    return sorted(done, key=lambda r: started.get(r["run_id"], 0))


def _short_names(keys: list[str]) -> dict[str, str]:
    """method.critic_lr → critic_lr, unless two keys would then share a name."""
    short = {k: k.split(".", 1)[-1] for k in keys}
    clash = len(set(short.values())) < len(short)
    return {k: k for k in keys} if clash else short


def infer_distribution(values: list[str]):
    """An Optuna distribution covering MLflow's string values, and the values parsed:
    integers, floats (log scale when positive and spanning 10x or more), else categories."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if all(re.fullmatch(r"-?\d+", v) for v in values):
        ints = [int(v) for v in values]
        return IntDistribution(min(ints), max(ints)), ints
    try:
        floats = [float(v) for v in values]
    except ValueError:
        floats = None
    if floats and all(math.isfinite(f) for f in floats):
        low, high = min(floats), max(floats)
        return FloatDistribution(low, high, log=low > 0 and high >= 10 * low), floats
    return CategoricalDistribution(sorted(set(values))), list(values)


def optuna_study(rows: list[dict[str, Any]], params: list[str], mode: str):
    """An in-memory Optuna study with one COMPLETE trial per scored run (ASHA-stopped runs
    count with their best value so far, as on the leaderboard)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "a new study created"
    names = _short_names(params)
    columns = {}
    for key in params:
        distribution, parsed = infer_distribution([r["params"].get(key, "None") for r in rows])
        columns[names[key]] = (distribution, parsed)
    study = optuna.create_study(direction="minimize" if mode == "min" else "maximize")
    for index, row in enumerate(rows):
        study.add_trial(optuna.trial.create_trial(
            value=row["value"], params={n: c[1][index] for n, c in columns.items()},
            distributions={n: c[0] for n, c in columns.items()},
            user_attrs={"run_name": row["name"], "run_id": row["run_id"]}))
    return study


def _temporary(path: Path) -> Path:
    """A sibling name to write to before the rename (the file keeps the umask's mode)."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _save_figure(ax, path: Path) -> Path:
    """Write an Axes' figure as PNG through a temporary name (nothing half-written)."""
    import matplotlib.pyplot as plt

    figure, tmp = ax.figure, _temporary(path)
    figure.set_size_inches(10, 6)
    figure.tight_layout()
    try:
        figure.savefig(tmp, format="png", dpi=100)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        plt.close(figure)
    return path


def draw_plots(study, metric: str, folder: Path) -> tuple[list[Path], list[str]]:
    """The three Optuna plots as PNGs; the plots left out, each with the reason."""
    import matplotlib

    matplotlib.use("Agg")  # a CLI on a server: never a GUI backend
    from optuna.visualization import matplotlib as plots

    trials, params = len(study.trials), list(study.trials[0].params) if study.trials else []
    drawn, skipped = [], []
    for name in PLOTS:
        reason = None
        if trials == 0:
            reason = "no finished trial with a finite metric value"
        elif name != "optimization_history" and not params:
            reason = "no parameter differs between the trials"
        elif name == "param_importances" and trials < MIN_TRIALS_FOR_IMPORTANCE:
            reason = (f"{trials} finished trial(s); importances need at least "
                      f"{MIN_TRIALS_FOR_IMPORTANCE}")
        if reason:
            skipped.append(f"{name}: {reason}")
            (folder / f"{name}.png").unlink(missing_ok=True)  # an earlier report's, now wrong
            continue
        with warnings.catch_warnings():  # experimental-API and flat-axis warnings
            warnings.simplefilter("ignore")
            ax = getattr(plots, f"plot_{name}")(study, target_name=metric)
        drawn.append(_save_figure(ax, folder / f"{name}.png"))
    return drawn, skipped


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def _state(row: dict[str, Any]) -> str:
    if row["tags"].get("depthlab.failure") == "diverged":
        return "DIVERGED"
    early = row["tags"].get(STOPPED_EARLY_TAG) == "true"
    return row["status"] + (" (stopped early)" if early else "")


def metric_columns(rows: list[dict[str, Any]], metric: str) -> list[str]:
    """The study metric, then the trials' other best/ metrics."""
    return [metric] + sorted({k for r in rows for k in r["metrics"]
                              if k.startswith("best/") and k != metric})


def leaderboard_html(title: str, rows: list[dict[str, Any]], metric: str, mode: str,
                     run_link: str, notes: list[str], images: list[str],
                     view_link: str = "") -> str:
    """The study's leaderboard as one self-contained HTML page (plots linked by file name)."""
    params = varied_params(rows)
    names = _short_names(params)
    metrics = metric_columns(rows, metric)
    header = ["#", "run", "status"] + [names[p] for p in params] + metrics
    body = []
    for rank, row in enumerate(rows, 1):
        link = f'<a href="{html.escape(run_link + row["run_id"])}">{html.escape(row["name"])}</a>'
        cells = [str(rank), link, html.escape(_state(row))]
        cells += [html.escape(_cell(row["params"].get(p))) for p in params]
        cells += [_cell(row["metrics"].get(m)) for m in metrics]
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    figures = "".join(f'<p><img src="{html.escape(i)}" alt="{html.escape(i)}"></p>'
                      for i in images)
    notes_html = "".join(f"<p>{html.escape(n)}</p>" for n in notes)
    if view_link:
        notes_html += (f'<p><a href="{html.escape(view_link)}">the trials side by side in the '
                       "MLflow UI</a> (start the UI first: `depthlab ui`)</p>")
    return (f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}"
            "</title><style>body{font-family:sans-serif}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}</style></head>"
            f"<body><h1>{html.escape(title)}</h1><p>ranked by {html.escape(metric)} "
            f"({'lower' if mode == 'min' else 'higher'} is better)</p>{notes_html}"
            f"<table><tr>{head}</tr>{''.join(body)}</table>{figures}</body></html>\n")


def _write_text(path: Path, text: str) -> Path:
    tmp = _temporary(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_report(name: str, tracking_uri: str | None = None, out: str | Path | None = None,
                 run_id: str | None = None, metric: str | None = None,
                 mode: str | None = None) -> Report:
    """Plots and leaderboard of study `name` (its latest parent run, or `run_id`), written to
    `out` (default ./<name>-report) and logged to the parent run under report/."""
    uri = tracking.resolve_uri(tracking_uri)
    tracking.require_store(uri)
    study = tracking.find_study(uri, name, run_id)
    parent = tracking.run_record(uri, study.parent_run_id)
    metric, mode = study_metric(parent, metric, mode)
    rows = leaderboard(uri, study, metric, mode)
    scored = _scored(rows, {r.info.run_id: r.info.start_time
                            for r in tracking.child_runs(uri, study)})
    folder = Path(out or f"{name}-report")
    folder.mkdir(parents=True, exist_ok=True)
    drawn, skipped = draw_plots(optuna_study(scored, varied_params(rows), mode), metric, folder)
    notes = [f"{len(rows)} trial runs, {len(scored)} finished with a finite {metric}; "
             f"parent run {parent['name']} ({study.parent_run_id}), {parent['status']}"]
    baseline = parent["metrics"].get(baseline_key(metric)) if "/" in metric else None
    if baseline is not None:
        notes.append(f"a constant prediction of the training mean scores {baseline:.4g}")
    notes += [f"not drawn: {s}" for s in skipped]
    view = tracking.share_runs_view(uri, study, metric_columns(rows, metric),
                                    varied_params(rows), mode, (STOPPED_EARLY_TAG,))
    _, runs_link = tracking.ui_hint(tracking.shown_uri(uri), study.experiment_id)
    page = leaderboard_html(f"{name}: {parent['name']}", rows, metric, mode, runs_link + "/",
                            notes, [p.name for p in drawn], view)
    files = (*drawn, _write_text(folder / "leaderboard.html", page))
    tracking.log_files(uri, study.parent_run_id, list(files), ARTIFACT_FOLDER)
    return Report(study, folder, files, tuple(skipped), metric, mode, view)

