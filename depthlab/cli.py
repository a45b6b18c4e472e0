"""The `depthlab` command: datasets and the MLflow UI (studies run from `studies/*.py`)."""

import argparse
import subprocess
import sys
from pathlib import Path

from depthlab import tracking
from depthlab.catalog import UNITS, CatalogEntry, list_entries, load_entry
from depthlab.data import remote
from depthlab.data.formats import with_folder_unit
from depthlab.data.shards import dataset_dir, prepare, read_manifest, verify


def _size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r}: expected HxW, e.g. 64x64") from None
    return height, width


def _entry(args: argparse.Namespace) -> CatalogEntry:
    """The named descriptor; `--unit` re-reads a folder dataset's depth PNGs in that unit."""
    entry = load_entry(args.name)
    return with_folder_unit(entry, args.unit) if args.unit else entry


def _dataset_folder(entry: CatalogEntry, size: tuple[int, int] | None,
                    data: str | None) -> Path:
    """A prepared dataset's local folder; on object storage, a fetched (verified) copy."""
    if (root := remote.remote_root(data)) is not None:
        return remote.local_copy(remote.dataset_uri(root, entry, size))
    return dataset_dir(entry, size, data)


def _is_prepared(entry: CatalogEntry, size: tuple[int, int] | None, data: str | None) -> bool:
    if (root := remote.remote_root(data)) is not None:
        return remote.published(remote.dataset_uri(root, entry, size)) is not None
    return (dataset_dir(entry, size, data) / "manifest.json").exists()


def data_list(args: argparse.Namespace) -> int:
    """Print the catalog as a table."""
    rows = [("name", "samples", "splits", "unit", "source", "prepared")]
    for entry in list_entries():
        size = entry.default_size
        prepared = _is_prepared(entry, size, args.data)
        shown = "native" if size is None else f"{size[0]}x{size[1]}"
        splits = ", ".join(entry.split_names)
        samples = str(entry.sample_count or "?")
        source = (f"generator {entry.generator}" if entry.generator
                  else f"files: {entry.reader}" + (f" (${entry.source_env})"
                                                   if entry.source_env else ""))
        rows.append((entry.name, samples, splits, entry.display_unit, source,
                     shown if prepared else "no"))
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    return 0


def data_prepare(args: argparse.Namespace) -> int:
    """Materialise a dataset to Parquet shards (reused when already there, resumed when
    interrupted), on local processes or as Ray tasks on a cluster."""
    path = prepare(_entry(args), size=args.size, data_dir=args.data,
                   source=args.source, workers=args.workers, address=args.address)
    print(remote.shown(path) if isinstance(path, str) else path)
    return 0


def data_show(args: argparse.Namespace) -> int:
    """Write a PNG contact sheet of a prepared split: RGB next to colour-mapped depth."""
    # torch and matplotlib on use: `data prepare` spawns workers that re-import this module
    from depthlab.data.datasets import read_rows
    from depthlab.viz import contact_sheet

    entry = _entry(args)
    path = _dataset_folder(entry, args.size, args.data)
    if not (path / "manifest.json").exists():
        print(f"error: {entry.name} is not prepared at {path}; run `depthlab data prepare "
              f"{entry.name}{' --size ' + 'x'.join(map(str, args.size)) if args.size else ''}`",
              file=sys.stderr)
        return 1
    split = args.split or entry.splits[0].name
    samples = list(read_rows(path, split, args.count))
    out = Path(args.out or f"{entry.name}-{split}.png")
    contact_sheet(samples, entry.display_unit, entry.display_scale, out,
                  f"{entry.name} v{entry.version}, split {split}: {len(samples)} samples")
    print(out)
    return 0


def data_verify(args: argparse.Namespace) -> int:
    """Recheck a prepared dataset's checksums."""
    entry = _entry(args)
    path = _dataset_folder(entry, args.size or entry.default_size, args.data)
    if not path.exists():
        print(f"error: {entry.name} is not prepared at {path}; run `depthlab data prepare "
              f"{entry.name}`", file=sys.stderr)
        return 1
    problems = verify(path)
    for problem in problems:
        print(f"problem: {problem}")
    if not problems:
        counts = {k: v["count"] for k, v in read_manifest(path)["splits"].items()}
        print(f"ok: {path} {counts}")
    return 1 if problems else 0


def ui(args: argparse.Namespace) -> int:
    """Start the MLflow UI on the local tracking store, bound to 127.0.0.1."""
    uri = tracking.resolve_uri(args.tracking_uri)
    print(f"MLflow UI on http://127.0.0.1:{args.port} (runs tables: …/#/experiments/<id>/runs)")
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
               "--host", "127.0.0.1", "--port", str(args.port)]
    return subprocess.call(command)


def server(args: argparse.Namespace) -> int:
    """Become MLflow's tracking server: real database, served artifacts, auth beyond localhost."""
    from depthlab import server as tracking_server

    tracking_server.serve(tracking_server.server_config(
        args.backend_store_uri, args.artifacts_destination, args.host, args.port, args.auth,
        args.auth_dir, args.workers))
    return 0  # not reached: serve() replaces this process with `mlflow server`


def report(args: argparse.Namespace) -> int:
    """Write a study's Optuna plots and leaderboard page, and log them to its parent run."""
    from depthlab.report import ARTIFACT_FOLDER, write_report  # optuna, matplotlib: on use

    made = write_report(args.study, tracking_uri=args.tracking_uri, out=args.out,
                        run_id=args.run_id, metric=args.metric, mode=args.mode)
    print(f"{args.study}: ranked by {made.metric} ({made.mode})")
    for message in made.skipped:
        print(f"not drawn: {message}")
    for path in made.files:
        print(path)
    print(f"logged to parent run {made.study.parent_run_id} under {ARTIFACT_FOLDER}/")
    print(f"compare the trials in the MLflow UI: {made.view_link}")
    return 0


def best(args: argparse.Namespace) -> int:
    """Rank a study's trial runs from MLflow (or every study's best) and register the best."""
    from depthlab.best import best_command  # the study module and torch: on use

    return best_command(args)


def predict(args: argparse.Namespace) -> int:
    """Depth PNGs, colour maps and point clouds for image files."""
    from depthlab.predict import predict_command

    return predict_command(args)


def evaluate(args: argparse.Namespace) -> int:
    """A model's metrics on a catalog dataset, logged as an MLflow evaluation run."""
    from depthlab.predict import evaluate_command

    return evaluate_command(args)


def parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    top = argparse.ArgumentParser(
        prog="depthlab", description="Hyperparameter studies of monocular depth estimation. "
        "Run a study with `python studies/<study>.py --help`.")
    commands = top.add_subparsers(dest="command", required=True)
    data = commands.add_parser("data", help="datasets of the catalog").add_subparsers(
        dest="action", required=True)
    for name, handler, text in [("list", data_list, "list the catalog"),
                                ("prepare", data_prepare, "write a dataset's Parquet shards"),
                                ("show", data_show, "write a PNG contact sheet of samples"),
                                ("verify", data_verify, "recheck a prepared dataset")]:
        sub = data.add_parser(name, help=text)
        if name != "list":
            sub.add_argument("name", help="catalog name, e.g. synthetic-surface")
            sub.add_argument("--size", type=_size, help="HxW, multiples of 32 (default: the "
                             "catalog's; file datasets without one keep each file's size)")
            sub.add_argument("--unit", choices=list(UNITS), help="unit of a folder dataset's "
                             "depth PNGs (default: the catalog's, mm for `folder`)")
        if name == "show":
            sub.add_argument("--split", help="split to show (default: the first)")
            sub.add_argument("--count", type=int, default=8, help="samples to show")
            sub.add_argument("--out", help="PNG path (default: NAME-SPLIT.png here)")
        if name == "prepare":
            sub.add_argument("--source", help="folder of a file dataset (default: its "
                             "environment variable or the catalog's path)")
            sub.add_argument("--workers", type=int, metavar="N", help="processes building "
                             "shards at once (default: one per core; 1: in this process; "
                             "with --address: Ray tasks in flight, default as the cluster "
                             "allows)")
            sub.add_argument("--address", metavar="ADDR", help="build the shards as Ray tasks "
                             "on this running cluster (e.g. auto or HOST:6379; default: local "
                             "processes); --data must then be storage every node shares. An "
                             "interrupted build resumes from its finished shards")
        sub.add_argument("--data", help="data directory or object-storage URI, e.g. "
                         "s3://bucket/prefix (default: $DEPTHLAB_DATA or ~/.cache/depthlab)")
        sub.set_defaults(handler=handler)
    show = commands.add_parser("ui", help="open the MLflow UI on the study runs")
    show.add_argument("--tracking-uri", help="default: sqlite:///mlflow.db here")
    show.add_argument("--port", type=int, default=5000)
    show.set_defaults(handler=ui)
    serving = commands.add_parser("server", help="MLflow tracking server (PostgreSQL or "
                                  "sqlite, served artifacts) for studies on several machines")
    serving.add_argument("--backend-store-uri", help="postgresql://USER@HOST:PORT/DB or "
                         "sqlite:///PATH (default: sqlite:///mlflow.db here)")
    serving.add_argument("--artifacts-destination", help="folder or s3:// URI the server "
                         "stores artifacts in (default: ./mlartifacts)")
    serving.add_argument("--host", default="127.0.0.1", help="address to listen on; beyond "
                         "localhost it needs --auth")
    serving.add_argument("--port", type=int, default=5000)
    serving.add_argument("--auth", action=argparse.BooleanOptionalAction, default=None,
                         help="MLflow basic auth, user admin with a generated password "
                         "(default: on when --host is not a loopback address)")
    serving.add_argument("--auth-dir", help="folder of the password file and the user "
                         "database (default: ~/.config/depthlab/mlflow-auth)")
    serving.add_argument("--workers", type=int, default=4, help="web worker processes")
    serving.set_defaults(handler=server)
    plots = commands.add_parser("report", help="Optuna plots and a leaderboard page of a study, "
                                "logged to its parent run")
    plots.add_argument("study", help="study name = MLflow experiment name, e.g. wgan-surface")
    plots.add_argument("--tracking-uri", help="default: sqlite:///mlflow.db here")
    plots.add_argument("--out", help="folder for the files (default: ./STUDY-report)")
    plots.add_argument("--run-id", help="parent run of the study (default: its latest)")
    plots.add_argument("--metric", help="metric to rank by (default: the study's)")
    plots.add_argument("--mode", choices=["min", "max"],
                       help="better is lower or higher (default: the study's)")
    plots.set_defaults(handler=report)
    pick = commands.add_parser("best", help="leaderboard of a study's trial runs; --register "
                               "its best model; --all: the best of every study")
    pick.add_argument("study", nargs="?", help="study name = MLflow experiment name")
    pick.add_argument("--all", action="store_true", help="rank the best run of every study "
                      "that shares a dataset and metric")
    pick.add_argument("--metric", help="metric to rank by, e.g. best/rmse_m or rmse "
                      "(default: the study's)")
    pick.add_argument("--mode", choices=["min", "max"], help="better is lower or higher "
                      "(default: the study's, else by the metric's name)")
    pick.add_argument("--run-id", help="one parent run of the study, or 'latest' (default: "
                      "all its parent runs)")
    pick.add_argument("--register", action="store_true", help="log the best trial's model "
                      "in its run (MLflow PyTorch flavour) and register it as STUDY")
    pick.add_argument("--top", type=int, default=10, help="leaderboard rows shown")
    pick.add_argument("--tracking-uri", help="default: sqlite:///mlflow.db here")
    pick.set_defaults(handler=best)
    model_help = "models:/NAME/VERSION, runs:/RUN_ID/PATH or a checkpoint file"
    depth = commands.add_parser("predict", help="depth of image files: 16-bit PNG (mm), "
                                "colour map, optional .ply point cloud")
    depth.add_argument("model", help=model_help)
    depth.add_argument("images", nargs="+", help="PNG or JPEG files")
    depth.add_argument("--out", required=True, help="folder for <stem>_depth.png (uint16 mm, "
                       "0 = invalid), <stem>_depth_color.png, <stem>.ply")
    depth.add_argument("--batch-size", type=int, default=8, help="images per forward pass")
    depth.add_argument("--ply", action="store_true", help="also write a point cloud (xyz in "
                       "metres, camera frame: x right, y down, z forward; rgb)")
    depth.add_argument("--ply-format", choices=["binary", "ascii"], default="binary")
    depth.add_argument("--tiff", action="store_true", help="also write <stem>_depth.tiff, "
                       "float32 metres, NaN = invalid (always, for relative depth such as "
                       "surfaces', which millimetre PNGs cannot hold)")
    for name, text in [("fx", "focal length in pixels of the input images (default: the "
                        "training camera scaled to each image if the catalog has one, else "
                        "max(H, W))"), ("fy", "default: fx"),
                       ("cx", "principal point x (default: the training camera's, "
                        "else the image centre)"), ("cy", "principal point y (likewise)")]:
        depth.add_argument(f"--{name}", type=float, help=text)
    scoring = commands.add_parser("evaluate", help="metrics of a model on a catalog dataset, "
                                  "logged to MLflow as an evaluation run")
    scoring.add_argument("model", help=model_help)
    scoring.add_argument("--data", required=True, help="catalog name, e.g. synthetic-rooms")
    scoring.add_argument("--source", help="folder of a file dataset (default: its "
                         "environment variable or the catalog's path)")
    scoring.add_argument("--split", default="test", help="paired split to score")
    scoring.add_argument("--limit", type=int, metavar="N", help="only the first N samples")
    scoring.add_argument("--json", action="store_true", help="one JSON object on stdout")
    scoring.add_argument("--no-log", action="store_true", help="do not log an MLflow run")
    scoring.add_argument("--data-dir", help="data directory (default: $DEPTHLAB_DATA or "
                         "~/.cache/depthlab)")
    for sub in (depth, scoring):
        sub.add_argument("--tracking-uri", help="where models:/ and runs:/ are looked up "
                         "(default: sqlite:///mlflow.db here)")
        sub.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    depth.set_defaults(handler=predict)
    scoring.set_defaults(handler=evaluate)
    return top


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `depthlab` console script."""
    args = parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
