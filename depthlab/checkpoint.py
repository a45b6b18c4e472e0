"""Self-describing checkpoints: method, config, dataset@version, weights, step.

Written atomically (temporary name, then rename) with a sha256 sidecar
(`<name>.sha256`, in `sha256sum` format) that `load` checks before it parses
the file; read with weights_only=True so loading never unpickles arbitrary
objects.
"""

import hashlib
import os
import tempfile
from pathlib import Path
from typing import IO, Any

import torch

FORMAT = 1
DIGEST_SUFFIX = ".sha256"
CHUNK = 1 << 20


class _HashingWriter:
    """A file wrapper that hashes what torch.save writes, so the digest costs no re-read."""

    def __init__(self, handle: IO[bytes]):
        self.handle, self.sha256 = handle, hashlib.sha256()

    def write(self, data) -> int:
        self.sha256.update(data)
        return self.handle.write(data)

    def flush(self) -> None:
        self.handle.flush()


def digest_path(path: str | Path) -> Path:
    """The sidecar holding a checkpoint's sha256: `best.pt` → `best.pt.sha256`."""
    path = Path(path)
    return path.with_name(path.name + DIGEST_SUFFIX)


def _write_atomically(path: Path, write) -> None:
    """`write(handle)` into a temporary file beside `path`, then renamed over it.

    No fsync: the rename already keeps a crashed process from leaving half a file, and an
    fsync per evaluation cost up to 1 s on an 845 MB paper-size state (a machine crash is
    what the checksum then catches)."""
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(path: str | Path, *, method: str, config: dict[str, Any], settings: dict[str, Any],
         dataset: str, state: dict[str, Any], step: int,
         resume: dict[str, Any] | None = None, data: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint and its sha256 sidecar; an interrupted write leaves any earlier file
    intact. `resume` holds what a training loop needs to continue (best-so-far, RNG states);
    `data` the dataset's DataInfo as a dict (input size, depth range: what rebuilds the model)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "method": method, "config": config, "settings": settings,
               "dataset": dataset, "step": step, "state": state}
    if resume is not None:
        payload["resume"] = resume
    if data is not None:
        payload["data"] = data
    digest = {}

    def write_payload(handle: IO[bytes]) -> None:
        writer = _HashingWriter(handle)
        torch.save(payload, writer)
        digest["hex"] = writer.sha256.hexdigest()

    _write_atomically(path, write_payload)
    line = f"{digest['hex']}  {path.name}\n".encode()
    _write_atomically(digest_path(path), lambda handle: handle.write(line))
    return path


def file_digest(path: str | Path) -> str:
    """The sha256 of a file, read in chunks."""
    sha256 = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            sha256.update(chunk)
    return sha256.hexdigest()


def verify(path: str | Path, require: bool = False) -> None:
    """Check a checkpoint against its sidecar; a mismatch (corrupt or truncated file) is a
    ValueError naming the file. Without a sidecar: an error when `require`, else nothing."""
    path, sidecar = Path(path), digest_path(path)
    if not sidecar.is_file():
        if require:
            raise ValueError(f"checkpoint {path} has no checksum file {sidecar.name}: cannot "
                             "tell whether it is complete")
        return
    expected = sidecar.read_text().split(maxsplit=1)[0] if sidecar.stat().st_size else ""
    actual = file_digest(path)
    if actual != expected:
        raise ValueError(f"checkpoint {path} is corrupt: its sha256 checksum {actual[:12]}… "
                         f"does not match {expected[:12] or 'nothing'}… in {sidecar.name}")


def load(path: str | Path, map_location: str | torch.device = "cpu", *,
         require_checksum: bool = False) -> dict[str, Any]:
    """Read a checkpoint written by `save`, checksum first; a foreign or corrupt file is a
    clear error. Files without a sidecar (written before checksums) load unless
    `require_checksum`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    verify(path, require_checksum)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for corrupt files
        message = f"checkpoint {path} is corrupt or not a depthlab checkpoint: {error}"
        raise ValueError(message) from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"checkpoint {path} is not a depthlab checkpoint (format {FORMAT})")
    return payload
