"""Self-describing checkpoints: method, config, dataset@version, weights, step.

Written atomically (temporary name, then rename); read with weights_only=True so
loading never unpickles arbitrary objects.
"""

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

FORMAT = 1


def save(path: str | Path, *, method: str, config: dict[str, Any], settings: dict[str, Any],
         dataset: str, state: dict[str, Any], step: int) -> Path:
    """Write a checkpoint; an interrupted write leaves any earlier file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "method": method, "config": config, "settings": settings,
               "dataset": dataset, "step": step, "state": state}
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by `save`; a foreign or corrupt file is a clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for corrupt files
        message = f"checkpoint {path} is corrupt or not a depthlab checkpoint: {error}"
        raise ValueError(message) from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"checkpoint {path} is not a depthlab checkpoint (format {FORMAT})")
    return payload
