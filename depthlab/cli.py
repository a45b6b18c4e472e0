"""The `depthlab` command: datasets and the MLflow UI (studies run from `studies/*.py`)."""

import argparse
import subprocess
import sys
from pathlib import Path

from depthlab import tracking
from depthlab.catalog import UNITS, CatalogEntry, list_entries, load_entry
from depthlab.data.datasets import read_rows
from depthlab.data.formats import with_folder_unit
from depthlab.data.shards import dataset_dir, prepare, read_manifest, verify
from depthlab.viz import contact_sheet


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


def data_list(args: argparse.Namespace) -> int:
    """Print the catalog as a table."""
    rows = [("name", "samples", "splits", "unit", "source", "prepared")]
    for entry in list_entries():
        size = entry.default_size
        prepared = (dataset_dir(entry, size, args.data) / "manifest.json").exists()
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
    print(path)
    return 0


def data_show(args: argparse.Namespace) -> int:
    """Write a PNG contact sheet of a prepared split: RGB next to colour-mapped depth."""
    entry = _entry(args)
    path = dataset_dir(entry, args.size, args.data)
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
    path = dataset_dir(entry, args.size or entry.default_size, args.data)
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
        sub.add_argument("--data", help="data directory (default: $DEPTHLAB_DATA or "
                         "~/.cache/depthlab)")
        sub.set_defaults(handler=handler)
    show = commands.add_parser("ui", help="open the MLflow UI on the study runs")
    show.add_argument("--tracking-uri", help="default: sqlite:///mlflow.db here")
    show.add_argument("--port", type=int, default=5000)
    show.set_defaults(handler=ui)
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
