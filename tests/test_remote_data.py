"""Prepared datasets on object storage: publish, reuse, local copies, damaged and missing data.

A real S3-protocol server (`moto_server`, a subprocess on 127.0.0.1) that pyarrow
talks to over HTTP, plus file:// URIs; synthetic-surface at 32×32 with 4 + 4 + 3
samples (one shard per split).
"""

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pytest

from depthlab.catalog import load_entry
from depthlab.cli import main
from depthlab.config import TrainSettings, to_dict
from depthlab.data import remote, shards
from depthlab.data.datasets import load_split
from depthlab.methods.wgan_perceptual import Config
from depthlab.trial import TrialPlan, data_info, local_data, train_trial

SIZE = (32, 32)
COUNTS = {"train_rgb": 4, "train_depth": 4, "eval": 3}
SPLITS = tuple(COUNTS)
SHARD_FILES = {f"{split}-00000.parquet" for split in SPLITS}
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"moto_server exited with {process.returncode}: {log.read_text()}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    pytest.fail(f"moto_server did not listen on port {port} within {timeout:.0f} s")


class S3Server:
    """A running moto_server: where it listens and what it has logged (one line a request)."""

    def __init__(self, port: int, log: Path):
        self.port, self.log = port, log

    def uri(self, bucket: str, prefix: str = "data") -> str:
        return f"s3://{bucket}/{prefix}?endpoint_override=127.0.0.1:{self.port}&scheme=http"

    def bucket(self) -> str:
        """A new, empty bucket."""
        name = f"b-{uuid.uuid4().hex[:12]}"
        fs, _ = pafs.FileSystem.from_uri(f"{self.uri(name)}&allow_bucket_creation=true")
        fs.create_dir(name)
        return name

    def writes(self) -> int:
        """Requests that wrote objects so far (PUT, and POST of multipart uploads)."""
        time.sleep(0.5)  # the server logs a request just after answering it
        return sum(('"PUT ' in line or '"POST ' in line) and "/b-" in line
                   for line in self.log.read_text().splitlines())


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A real S3-protocol server on a free local port, stopped by its pid afterwards."""
    pytest.importorskip("moto", reason="moto[server] (the dev extra) is not installed")
    log = tmp_path_factory.mktemp("moto") / "server.log"
    port = _free_port()
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
            patch.delenv(name, raising=False)
        for name, value in AWS_ENV.items():
            patch.setenv(name, value)
        with open(log, "w") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdout=out, stderr=subprocess.STDOUT)
        try:
            _wait_for_port(port, process, log, timeout=60)
            yield S3Server(port, log)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPTHLAB_DATA", str(tmp_path / "data"))
    return tmp_path / "data"


@pytest.fixture(scope="module")
def entry():
    return load_entry("synthetic-surface")


def _prepare(entry, data_dir):
    return shards.prepare(entry, SIZE, data_dir=data_dir, counts=COUNTS, progress=False)


def _objects(uri: str) -> dict[str, pafs.FileInfo]:
    fs, base = pafs.FileSystem.from_uri(uri)
    infos = fs.get_file_info(pafs.FileSelector(base, recursive=True))
    return {i.path.removeprefix(base + "/"): i for i in infos if i.type == pafs.FileType.File}


def _put(uri: str, name: str, data: bytes) -> None:
    fs, base = pafs.FileSystem.from_uri(uri)
    with fs.open_output_stream(f"{base}/{name}") as out:
        out.write(data)


def _get(uri: str, name: str) -> bytes:
    fs, base = pafs.FileSystem.from_uri(uri)
    with fs.open_input_stream(f"{base}/{name}") as stream:
        return stream.read()


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.is_file()}


def _same_arrays(a, b) -> None:
    assert a.ids == b.ids
    for name in ("images", "depth"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None)
        if x is not None:
            np.testing.assert_array_equal(x, y)  # NaN == NaN here


# --- publish and reuse -------------------------------------------------------------------

def test_prepare_publishes_to_s3_and_a_second_prepare_uploads_nothing(s3, entry, data_root):
    root = s3.uri(s3.bucket())
    uri = _prepare(entry, root)
    assert isinstance(uri, str) and uri == remote.dataset_uri(root, entry, SIZE, COUNTS)
    assert "/data/synthetic-surface/v1/32x32-" in uri and uri.endswith("&scheme=http")
    objects = _objects(uri)
    assert set(objects) == SHARD_FILES | {"manifest.json"}  # no temporary names left
    local = shards.dataset_dir(entry, SIZE, data_root, COUNTS)  # built here, then published
    assert json.loads(_get(uri, "manifest.json")) == shards.read_manifest(local)
    for name in SHARD_FILES:
        assert _get(uri, name) == (local / name).read_bytes()

    time.sleep(1.1)  # object times have 1 s resolution: a re-upload would show
    writes = s3.writes()
    for folder in (data_root / "synthetic-surface").iterdir():
        shutil.rmtree(folder)  # the remote build is reused without a local one
    assert _prepare(entry, root) == uri
    assert s3.writes() == writes
    assert {k: v.mtime for k, v in _objects(uri).items()} == {
        k: v.mtime for k, v in objects.items()}
    assert not any((data_root / "synthetic-surface").iterdir())  # nothing rebuilt


def test_a_file_uri_round_trips_like_a_local_build(entry, data_root, tmp_path):
    root = (tmp_path / "shared").as_uri()
    uri = _prepare(entry, root)
    assert uri == f"{root}/synthetic-surface/v1/{shards.dataset_dir(entry, SIZE, '/', COUNTS).name}"
    published = Path(uri.removeprefix("file://"))
    assert {p.name for p in published.iterdir()} == SHARD_FILES | {"manifest.json"}
    local = shards.dataset_dir(entry, SIZE, data_root, COUNTS)
    for split in SPLITS:
        _same_arrays(load_split(uri, split), load_split(local, split))


def test_an_upload_that_stops_leaves_no_dataset(s3, entry, data_root):
    local = _prepare(entry, data_root)
    (local / "eval-00000.parquet").unlink()  # the third shard: the upload dies there
    uri = remote.dataset_uri(s3.uri(s3.bucket()), entry, SIZE, COUNTS)
    with pytest.raises(FileNotFoundError):
        remote.publish(local, uri)
    assert set(_objects(uri)) == {"train_rgb-00000.parquet", "train_depth-00000.parquet"}
    assert remote.published(uri) is None
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        remote.local_copy(uri)


# --- reading -----------------------------------------------------------------------------

def test_load_split_of_the_uri_equals_the_local_build(s3, entry, data_root, capsys):
    uri = _prepare(entry, s3.uri(s3.bucket()))
    local = shards.dataset_dir(entry, SIZE, data_root, COUNTS)
    for split in SPLITS:
        _same_arrays(load_split(uri, split), load_split(local, split))
    fetched = capsys.readouterr().err
    assert fetched.count("depthlab: fetched 3 shards") == 1  # once, then the copy is reused
    copy = remote.local_copy(uri)
    assert copy.parent == data_root / "remote" and _digests(copy) == _digests(local)


def test_a_trial_on_a_uri_reports_what_it_reports_on_the_local_build(s3, entry, data_root):
    uri = _prepare(entry, s3.uri(s3.bucket()))
    local = shards.dataset_dir(entry, SIZE, data_root, COUNTS)
    info = data_info(entry, SIZE).__dict__

    def run(path: str) -> dict:
        config = Config(critic_width=4, generator_width=4, critic_iters=1, critic_iters_after=1)
        settings = TrainSettings(steps=2, eval_every=2, eval_samples=3, seed=0, threads=1)
        extra = {"label": "again", "data_path": path, "splits": ("eval",), "data": info}
        plan = TrialPlan("wgan_perceptual", to_dict(config), to_dict(settings), path, info,
                         ("train_rgb", "train_depth"), "eval", "best/rmse_um",
                         extra_evals=(extra,))
        reports = {}
        train_trial(plan, lambda _m, step, metrics, *_: reports.update({step: metrics}))
        return plan, reports[2]

    plan, on_uri = run(uri)
    _, on_local = run(str(local))
    assert on_uri == on_local and on_uri["eval/again/rmse_um"] == on_uri["eval/rmse_um"]
    resolved = local_data(plan)
    assert Path(resolved.data_path).parent == data_root / "remote"  # knn's cache goes there
    assert resolved.extra_evals[0]["data_path"] == resolved.data_path
    assert local_data(resolved) == resolved  # local paths stay as they are


def test_concurrent_local_copies_fetch_once(s3, entry, data_root, tmp_path):
    uri = _prepare(entry, s3.uri(s3.bucket()))
    go, cache = tmp_path / "go", tmp_path / "cache"
    script = textwrap.dedent(f"""
        import hashlib, json, os, sys, time
        from depthlab.data.remote import local_copy
        while not os.path.exists({str(go)!r}):
            time.sleep(0.01)
        folder = local_copy({uri!r}, cache_root={str(cache)!r})
        print(json.dumps([str(folder), {{p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                                        for p in sorted(folder.iterdir())}}]))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=dict(os.environ))
             for _ in range(2)]
    try:
        time.sleep(1.0)  # both are waiting for the flag: they start together
        go.touch()
        results = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in results]
    (folder_a, files_a), (folder_b, files_b) = (json.loads(out) for out, _ in results)
    assert folder_a == folder_b and files_a == files_b
    assert set(files_a) == SHARD_FILES | {"manifest.json"}
    assert sum("depthlab: fetched" in err for _, err in results) == 1
    assert sorted(p.name for p in cache.iterdir() if not p.name.endswith(".lock")) == [
        Path(folder_a).name]  # no partial folder left


# --- damaged and missing data ------------------------------------------------------------

def test_a_corrupted_remote_shard_is_refused_and_the_good_copy_kept(s3, entry, data_root,
                                                                   tmp_path):
    uri = _prepare(entry, s3.uri(s3.bucket()))
    good = remote.local_copy(uri)
    before = _digests(good)
    shard = _get(uri, "eval-00000.parquet")
    _put(uri, "eval-00000.parquet", shard[:-100] + bytes(100))  # same size, other bytes

    fresh = tmp_path / "fresh"  # a node without a copy: nothing half-written is left
    with pytest.raises(ValueError, match=r"eval-00000\.parquet.*sha256"):
        remote.local_copy(uri, cache_root=fresh)
    assert [p.name for p in fresh.iterdir()] == [f".{good.name}.lock"]

    manifest = json.loads(_get(uri, "manifest.json"))  # a new manifest: the copy is stale
    manifest["created_at"] = "2000-01-01T00:00:00+00:00"
    _put(uri, "manifest.json", json.dumps(manifest).encode())
    with pytest.raises(ValueError, match=r"eval-00000\.parquet"):
        remote.local_copy(uri)
    assert _digests(good) == before  # the previous good copy is untouched
    assert sorted(p.name for p in good.parent.iterdir()) == [f".{good.name}.lock", good.name]


def test_a_missing_manifest_says_how_to_publish(s3, entry, data_root):
    root = s3.uri(s3.bucket())
    uri = remote.dataset_uri(root, entry, SIZE)
    with pytest.raises(FileNotFoundError) as error:
        remote.local_copy(uri)
    message = str(error.value)
    assert message.startswith(uri) and "no manifest.json" in message
    assert f"depthlab data prepare synthetic-surface --size 32x32 --data {root}" in message
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        load_split(uri, "eval")


def test_a_remote_manifest_cannot_name_a_shard_outside_the_copy(data_root, tmp_path):
    folder = tmp_path / "shared" / "dataset"
    folder.mkdir(parents=True)
    shard = {"file": "../../evil.parquet", "rows": 1, "sha256": "0"}
    (folder / "manifest.json").write_text(json.dumps({"splits": {"eval": {"shards": [shard]}}}))
    with pytest.raises(ValueError, match="escapes the dataset folder"):
        remote.local_copy(folder.as_uri())
    assert not (data_root / "remote").exists()  # refused before anything is written


def test_an_unreachable_endpoint_names_the_uri_and_credentials_stay_hidden(data_root):
    uri = (f"s3://ak:hidden-secret@bucket/data?endpoint_override=127.0.0.1:{_free_port()}"
           "&scheme=http")
    with pytest.raises(ValueError) as error:
        remote.local_copy(uri)
    message = str(error.value)
    assert "s3://***@bucket/data" in message and "hidden-secret" not in message
    assert "credentials" in message and "AWS Error" in message  # pyarrow's own words
    with pytest.raises(ValueError, match="not a storage URI pyarrow can open"):
        remote.local_copy("nosuchscheme://bucket/data")


def test_is_remote_and_the_data_root_of_a_uri(monkeypatch, tmp_path):
    assert remote.is_remote("s3://b/p") and remote.is_remote("file:///x")
    assert not remote.is_remote("/tmp/data") and not remote.is_remote(Path("s3://b/p"))
    assert not remote.is_remote("relative/dir")
    monkeypatch.setenv("DEPTHLAB_DATA", "s3://bucket/prefix")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert shards.data_root() == tmp_path / "depthlab"  # builds and copies stay local
    assert remote.remote_root(None) == "s3://bucket/prefix"
    assert remote.remote_root(str(tmp_path)) is None  # --data beats the environment
    assert remote.join("s3://b/p?x=1", "a", "b") == "s3://b/p/a/b?x=1"


# --- the command line --------------------------------------------------------------------

def test_cli_verify_show_and_list_on_a_uri(s3, entry, data_root, tmp_path, capsys):
    root = s3.uri(s3.bucket())
    assert main(["data", "verify", "synthetic-surface", "--size", "32x32", "--data", root]) == 2
    assert "depthlab data prepare synthetic-surface --size 32x32" in capsys.readouterr().err
    # Tiny builds stand in for the catalog's full counts at the URIs the commands look at.
    remote.publish(_prepare(entry, data_root), remote.dataset_uri(root, entry, SIZE))
    assert main(["data", "verify", "synthetic-surface", "--size", "32x32", "--data", root]) == 0
    assert "ok:" in capsys.readouterr().out
    sheet = tmp_path / "sheet.png"
    assert main(["data", "show", "synthetic-surface", "--size", "32x32", "--split", "eval",
                 "--count", "2", "--out", str(sheet), "--data", root]) == 0
    assert sheet.stat().st_size > 1000

    def listed() -> str:
        main(["data", "list", "--data", root])
        rows = [line.split() for line in capsys.readouterr().out.splitlines()]
        return next(row[-1] for row in rows if row[0] == "synthetic-surface")

    assert listed() == "no"  # the catalog's default size, 64x64, is not published
    default = shards.prepare(entry, (64, 64), data_dir=data_root, counts=COUNTS, progress=False)
    remote.publish(default, remote.dataset_uri(root, entry, (64, 64)))
    assert listed() == "64x64"
