"""Prepared datasets on object storage: publish a built folder, fetch a node-local copy.

A dataset folder (Parquet shards + `manifest.json`, see `shards.py`) may live at a
URI that `pyarrow.fs.FileSystem.from_uri` opens: `s3://bucket/prefix` (credentials
as pyarrow finds them: the AWS_* environment variables, ~/.aws, an instance profile;
`?endpoint_override=HOST:PORT&scheme=http` for another S3-compatible server),
`gs://bucket/prefix`, `file:///shared/path`.

`publish` uploads the shards first and the manifest last, after removing the old
manifest: a reader that sees a manifest sees every shard it lists, and a killed
upload leaves no manifest, so no dataset. `local_copy` fetches a published dataset
into `data_root()/remote/<hash of the URI>` under a `flock` (the trials of a node
fetch it once), into a hidden folder renamed into place when every shard's sha256
matched the manifest; a copy whose manifest equals the remote one is reused.
"""

import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pyarrow as pa
import pyarrow.fs as pafs

from depthlab.catalog import CatalogEntry
from depthlab.data.shards import (
    MANIFEST,
    _locked,
    _move_into_place,
    check_manifest,
    data_root,
    dataset_dir,
    read_manifest,
)

CHUNK = 1 << 20  # bytes per read while streaming a shard
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_SECRET_PARAMS = re.compile(r"secret|token|password|key", re.IGNORECASE)


def is_remote(path: Path | str) -> bool:
    """True for a URI with a scheme (s3://…, gs://…, file://…), False for a local path."""
    # A Path has already folded "s3://b" into "s3:/b": only strings can be URIs.
    return isinstance(path, str) and _SCHEME.match(path) is not None


def remote_root(data_dir: Path | str | None) -> str | None:
    """The URI datasets go to: `data_dir`, else `$DEPTHLAB_DATA`, when that is a URI;
    None when datasets are kept in a local folder."""
    location = data_dir if data_dir is not None else os.environ.get("DEPTHLAB_DATA")
    return location if location is not None and is_remote(location) else None


def shown(uri: str) -> str:
    """`uri` fit for messages and logs: user:password and secret query values masked."""
    parts = urlsplit(uri)
    netloc = parts.netloc.rpartition("@")[2]
    if "@" in parts.netloc:
        netloc = "***@" + netloc
    query = urlencode([(k, "***" if _SECRET_PARAMS.search(k) else v)
                       for k, v in parse_qsl(parts.query, keep_blank_values=True)], safe=":")
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def join(uri: str, *names: str) -> str:
    """`uri` with path segments appended, before any query (`…?endpoint_override=…`)."""
    parts = urlsplit(uri)
    return urlunsplit(parts._replace(path="/".join([parts.path.rstrip("/"), *names])))


def dataset_uri(root: str, entry: CatalogEntry, size: tuple[int, int] | None = None,
                counts: dict[str, int] | None = None) -> str:
    """Where a build lives under an object-storage root: the layout of `dataset_dir`."""
    relative = dataset_dir(entry, size, Path("/"), counts).relative_to("/")
    return join(root, *relative.parts)


def _open(uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and the path inside it that `uri` names."""
    try:
        return pafs.FileSystem.from_uri(uri)
    except (pa.ArrowException, OSError) as e:
        raise ValueError(f"{shown(uri)}: not a storage URI pyarrow can open ({e}); expected "
                         "e.g. s3://bucket/prefix, gs://bucket/prefix or file:///path") from None


@contextlib.contextmanager
def _storage(uri: str) -> Iterator[None]:
    """Storage failures (credentials, an unreachable endpoint, a full disk) as a ValueError
    naming `uri`; a missing file stays a FileNotFoundError for the caller to explain."""
    try:
        yield
    except FileNotFoundError:
        raise
    except OSError as e:
        # pyarrow's object-store errors carry no errno; those of local files do.
        hint = ("" if e.errno is not None else " (check the URI, the endpoint and the "
                "credentials: pyarrow reads the AWS_* variables, ~/.aws or the instance "
                "profile)")
        raise ValueError(f"{shown(uri)}: {e}{hint}") from None


def _prepare_hint(uri: str) -> str:
    """The command that publishes a dataset at `uri` (…/<name>/v<version>/<size>)."""
    parts = urlsplit(uri)
    names = parts.path.rstrip("/").split("/")
    if len(names) >= 4 and names[-2].startswith("v"):
        root = urlunsplit(parts._replace(path="/".join(names[:-3])))
        size = names[-1].split("-")[0]
        size_flag = f" --size {size}" if re.fullmatch(r"\d+x\d+", size) else ""
        return f"depthlab data prepare {names[-3]}{size_flag} --data {shown(root)}"
    return "depthlab data prepare NAME --data URI"


def _manifest_bytes(fs: pafs.FileSystem, base: str, uri: str) -> bytes | None:
    """The raw manifest published at `uri`, or None when there is none."""
    with _storage(uri):
        try:
            with fs.open_input_stream(f"{base}/{MANIFEST}") as stream:
                return stream.read()
        except FileNotFoundError:
            return None


def _parse(raw: bytes, uri: str) -> dict:
    try:
        manifest = json.loads(raw)
    except ValueError as e:
        raise ValueError(f"{shown(join(uri, MANIFEST))}: not JSON ({e}); publish the dataset "
                         f"again: {_prepare_hint(uri)}") from None
    try:
        check_manifest(manifest, shown(join(uri, MANIFEST)))
        ok = all(isinstance(s["file"], str) and isinstance(s["sha256"], str)
                 for s in _shards(manifest))
    except (KeyError, TypeError, AttributeError):
        ok = False
    if not ok:
        raise ValueError(f"{shown(join(uri, MANIFEST))}: no shard list (splits.<split>.shards "
                         f"with file and sha256); publish the dataset again: "
                         f"{_prepare_hint(uri)}")
    return manifest


def _shards(manifest: dict) -> list[dict]:
    return [s for split in manifest["splits"].values() for s in split["shards"]]


def published(uri: str) -> dict | None:
    """The manifest of the dataset at `uri` when it and every shard it lists are there;
    None otherwise (nothing published, or an upload that did not finish)."""
    fs, base = _open(uri)
    raw = _manifest_bytes(fs, base, uri)
    if raw is None:
        return None
    manifest = _parse(raw, uri)
    with _storage(uri):
        infos = fs.get_file_info([f"{base}/{s['file']}" for s in _shards(manifest)])
    return manifest if all(i.type == pafs.FileType.File for i in infos) else None


def _upload(local: Path, fs: pafs.FileSystem, path: str) -> None:
    with open(local, "rb") as source, fs.open_output_stream(path) as out:
        shutil.copyfileobj(source, out, CHUNK)


def publish(local_dir: Path | str, uri: str, progress: bool = False) -> str:
    """Upload a prepared dataset folder to `uri`: shards first, `manifest.json` last; `uri`."""
    local_dir = Path(local_dir)
    manifest = read_manifest(local_dir)
    started, sent = time.perf_counter(), 0
    fs, base = _open(uri)
    with _storage(uri):
        if isinstance(fs, pafs.LocalFileSystem):  # object stores have no folders to make
            fs.create_dir(base, recursive=True)
        # The old dataset stops being one before its shards are replaced.
        if fs.get_file_info(f"{base}/{MANIFEST}").type == pafs.FileType.File:
            fs.delete_file(f"{base}/{MANIFEST}")
        for shard in _shards(manifest):
            _upload(local_dir / shard["file"], fs, f"{base}/{shard['file']}")
            sent += (local_dir / shard["file"]).stat().st_size
        temporary = f"{base}/.{MANIFEST}.tmp-{uuid.uuid4().hex[:12]}"
        _upload(local_dir / MANIFEST, fs, temporary)
        fs.move(temporary, f"{base}/{MANIFEST}")  # marks the dataset published
    if progress:
        print(f"depthlab: published {len(_shards(manifest))} shards ({sent / 1e6:.1f} MB) to "
              f"{shown(uri)} in {time.perf_counter() - started:.1f} s", file=sys.stderr,
              flush=True)
    return uri


def _is_copy(folder: Path, manifest: dict) -> bool:
    """True when `folder` holds a finished local copy of the dataset `manifest` describes."""
    try:
        return read_manifest(folder) == manifest and all(
            (folder / s["file"]).is_file() for s in _shards(manifest))
    except (OSError, ValueError):
        return False


def _download(fs: pafs.FileSystem, base: str, uri: str, shard: dict, folder: Path) -> int:
    """One shard into `folder`, its sha256 checked against the manifest; bytes read."""
    digest, size = hashlib.sha256(), 0
    with _storage(uri):
        try:
            stream = fs.open_input_stream(f"{base}/{shard['file']}")
        except FileNotFoundError:
            raise FileNotFoundError(f"{shown(join(uri, shard['file']))}: shard listed in the "
                                    f"manifest is missing; publish the dataset again: "
                                    f"{_prepare_hint(uri)}") from None
        with stream, open(folder / shard["file"], "wb") as out:
            while chunk := stream.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
    if digest.hexdigest() != shard["sha256"]:
        raise ValueError(f"{shown(join(uri, shard['file']))}: shard {shard['file']} has sha256 "
                         f"{digest.hexdigest()[:16]}…, the manifest says "
                         f"{shard['sha256'][:16]}…: it is damaged or was replaced without its "
                         f"manifest; publish the dataset again: {_prepare_hint(uri)}")
    return size


def local_folder(path: Path | str) -> Path | str:
    """`path` itself when local; a fetched copy (`local_copy`) when it is a URI."""
    return local_copy(path) if is_remote(path) else path


def local_copy(uri: str, cache_root: Path | str | None = None, progress: bool = True) -> Path:
    """A local folder holding the dataset published at `uri`, fetched into
    `cache_root` (default `data_root()/remote`) once, then reused while the remote
    manifest is unchanged."""
    fs, base = _open(uri)
    raw = _manifest_bytes(fs, base, uri)
    if raw is None:
        raise FileNotFoundError(f"{shown(uri)}: no {MANIFEST} there, so no prepared dataset "
                                "(an upload that did not finish leaves none); run "
                                f"`{_prepare_hint(uri)}`")
    manifest = _parse(raw, uri)
    root = Path(cache_root) if cache_root is not None else data_root() / "remote"
    folder = root / hashlib.sha256(shown(uri).rstrip("/").encode()).hexdigest()[:16]
    if _is_copy(folder, manifest):
        return folder
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / f".{folder.name}.lock"):
        if _is_copy(folder, manifest):  # fetched by another process while we waited
            return folder
        # Holding the lock, hidden folders of killed fetches and swaps are nobody's.
        for stale in root.glob(f".{folder.name}.*-*"):
            shutil.rmtree(stale, ignore_errors=True)
        partial = root / f".{folder.name}.partial-{uuid.uuid4().hex[:12]}"
        partial.mkdir()
        try:
            started = time.perf_counter()
            size = sum(_download(fs, base, uri, s, partial) for s in _shards(manifest))
            (partial / MANIFEST).write_bytes(raw)
            _move_into_place(partial, folder)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    if progress:
        print(f"depthlab: fetched {len(_shards(manifest))} shards ({size / 1e6:.1f} MB) of "
              f"{shown(uri)} into {folder} in {time.perf_counter() - started:.1f} s",
              file=sys.stderr, flush=True)
    return folder
