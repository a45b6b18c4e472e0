"""A trained depthlab model as a torch module, rebuilt from a depthlab checkpoint.

The checkpoint (`depthlab.checkpoint`, read with `weights_only=True`) names the method,
its config and the dataset's facts; the method registry rebuilds the networks and the
checkpoint's tensors fill them. That is depthlab's only way of loading a model, also for
models registered in MLflow: `mlflow.pytorch.load_model` unpickles the logged module,
which runs whatever code the file names, so a model store (or anyone who can write to
it) could run code on the machine that loads it. depthlab logs the checkpoint beside the
MLflow model and reads that instead.
"""

import dataclasses
import warnings
from pathlib import Path
from typing import Any

import torch

from depthlab import checkpoint
from depthlab.catalog import load_entry
from depthlab.config import TrainSettings, from_dict
from depthlab.methods import METHODS, DataInfo
from depthlab.nn.optim import Stepper
from depthlab.trial import data_info

# Its name beside a logged MLflow model (`<model>/extra_files/…`).
CHECKPOINT_NAME = "depthlab_checkpoint.pt"
_TUPLES = ("depth_range_m", "image_size", "crop")


class DepthModel(torch.nn.Module):
    """A method's networks behind `forward`: (B, 3, H, W) in [0, 1] → (B, 1, H, W) metres.

    `input_size` is the (H, W) it was trained at; callers resize to it. The device is
    chosen when loading (the method keeps its own): inputs are moved there, outputs
    come back on it.
    """

    def __init__(self, method: Any, method_name: str, config: dict[str, Any], data: DataInfo,
                 step: int):
        super().__init__()
        self.method = method  # a plain object, not a Module: holds the networks below
        self.networks = torch.nn.ModuleDict(method.networks())
        self.method_name, self.config, self.data, self.step = method_name, config, data, step

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.data.image_size)

    @property
    def device(self) -> torch.device:
        return self.method.device

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.method.predict(image)

    def predict(self, image: torch.Tensor) -> torch.Tensor:
        """The Method protocol's name for `forward` (what `loop.evaluate` calls)."""
        return self(image)

    def describe(self) -> str:
        """One line: method, dataset, input size, training step."""
        h, w = self.input_size
        return (f"{self.method_name} trained on {self.data.name}@{self.data.version} at "
                f"{h}x{w}, step {self.step}")


def data_of(payload: dict[str, Any], path: Path) -> DataInfo:
    """The checkpoint's DataInfo; checkpoints written before it was stored get the catalog
    entry's at its default size, with a warning."""
    if payload.get("data") is not None:
        values = dict(payload["data"])
        for key in _TUPLES:
            if isinstance(values.get(key), list):
                values[key] = tuple(values[key])
        return DataInfo(**values)
    name, _, version = str(payload.get("dataset", "")).partition("@")
    entry = load_entry(name)
    if entry.default_size is None:
        raise ValueError(f"checkpoint {path} does not record its input size and catalog "
                         f"entry {name!r} has no default size; retrain with this depthlab")
    if version and version != str(entry.version):
        warnings.warn(f"checkpoint {path}: trained on {name}@{version}, the catalog now has "
                      f"version {entry.version}", stacklevel=2)
    warnings.warn(f"checkpoint {path} does not record its input size: assuming {name}'s "
                  f"default {entry.default_size[0]}x{entry.default_size[1]}", stacklevel=2)
    return data_info(entry, tuple(entry.default_size))


def _config(method_cls: Any, values: dict[str, Any]) -> Any:
    """The method config; `pretrained` dropped: the checkpoint's weights replace the
    backbone's, and the file it named need not exist where the model is used."""
    values = dict(values)
    if "pretrained" in {f.name for f in dataclasses.fields(method_cls.Config)}:
        values["pretrained"] = None
    return from_dict(method_cls.Config, values)


def _restore(method: Any, saved: dict[str, Any], path: Path) -> None:
    """`method.load_state_dict` with the checkpoint's weights and plain values over the
    method's own (fresh) optimizer states, which the checkpoint does not hold.

    A method may rebuild its optimizers while loading (multiscale's stage 2): the fresh
    states then no longer fit, so it is tried once more with the rebuilt ones.
    """
    error: Exception | None = None
    for _ in range(2):
        try:
            method.load_state_dict({**method.state_dict(), **saved})
            return
        except (KeyError, ValueError, RuntimeError) as problem:
            error = problem
    raise ValueError(f"checkpoint {path}: its weights do not fit method "
                     f"{type(method).__name__} ({error})") from error


def from_payload(payload: dict[str, Any], path: Path, device: str | torch.device = "cpu"
                 ) -> DepthModel:
    """The model of a loaded checkpoint, on `device`, in eval mode."""
    method_cls = METHODS.get_or_raise(payload["method"])
    config = _config(method_cls, payload["config"])
    settings = from_dict(TrainSettings, payload["settings"])
    data = data_of(payload, path)
    device = torch.device(device)
    method = method_cls(config, settings, data, device, Stepper(0.0))
    _restore(method, payload["state"], path)
    model = DepthModel(method, payload["method"], dict(payload["config"]), data,
                       int(payload.get("step", 0)))
    return model.eval()


def load(path: str | Path, device: str | torch.device = "cpu") -> DepthModel:
    """Rebuild the model of a depthlab checkpoint file (weights_only: nothing unpickled)."""
    path = Path(path)
    return from_payload(checkpoint.load(path, map_location=device), path, device)
