"""Paper 003 (Shoukat et al.): depth transfer without training a network. The training
images are indexed by ResNet-50 features of their 4 × 4 tiles; a query's depth is the
correlation-weighted mean of its nearest neighbours' depth maps, refined by a cross
bilateral filter guided by the query.

Code ↔ paper:
  grid, tile_size, layer    ↔ "4x4 tiles" of step 1; ResNet-50 features of step 2 (layer and
                               tile size unstated: avgpool 2048-d, 224 px by default)
  k, threshold              ↔ k = 4 (step 3), correlation threshold 0.50 (step 4)
  weighting = "correlation" ↔ eq. 2, D = Σ C_i·D_i / Σ C_i (step 5)
  sigma_space, sigma_color,
  window                    ↔ the Cross-Bilateral-Filter of step 6 (parameters unstated)
  fit_data                  ↔ the "pool of available images" whose depth is known
  functions                 ↔ `depthlab.nn.knn` (retrieval, fusion, filter), the backbone
                               `depthlab.nn.backbones.resnet50_features`
"""

import fcntl
import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from depthlab.config import TrainSettings, require, require_positive
from depthlab.data.batch import DepthBatch
from depthlab.data.datasets import SplitArrays
from depthlab.methods.protocol import DataInfo
from depthlab.methods.registry import register
from depthlab.methods.supervised import imagenet_normalise
from depthlab.nn.backbones import RESNET_LAYERS, resnet50_features
from depthlab.nn.knn import (
    FALLBACKS,
    WEIGHTINGS,
    DepthIndex,
    TileDescriptor,
    centred_unit,
    fill_holes,
    fuse,
    fusion_weights,
    joint_bilateral,
    resize_depth,
    retrieve,
)
from depthlab.nn.optim import Stepper

CACHE_FORMAT = 1
# The Config fields that change a descriptor: an index is reused only when they match.
FEATURE_FIELDS = ("grid", "tile_size", "layer", "width", "pretrained", "feature_seed")


@dataclass(frozen=True)
class Config:
    """Paper 003's defaults: 4 × 4 tiles, ResNet-50, k = 4, threshold 0.50, eq. 2 fusion.

    Where the paper is silent (our choices): the feature is the 2048-d global average
    pool of each tile ("avgpool"; "layer2", "layer3" average those stages, "fc" takes the
    1000 logits); tiles are ImageNet-normalised and resized to `tile_size` = 224 px (the
    image is resized to grid·224 and cut); the correlation is Pearson r between the two
    concatenated descriptors (MATLAB's "correlation" distance 1 − r); when no neighbour
    passes the threshold the best one is used alone (`fallback` = "top1"; "topk" keeps
    all k); maps are fused at the index resolution and resized to the query by nearest
    neighbour; the cross bilateral filter uses σ_space = 5 px, σ_color = 0.1 of the
    intensity range, an 11 × 11 window, on the query's luma; pixels no map covers are
    filled with the image's mean. The ResNet is random-initialised by default with its own
    seed, so the same config always gives the same features and its cached index. Random
    features are a weak stand-in for ImageNet ones (pass `pretrained`): on synthetic rooms
    they close about a third of the RMSE gap between the constant predictor and retrieval
    by the true depth, less than 8×8 thumbnails do (`benchmarks/knn_transfer.py --quality`).
    """

    k: int = 4
    threshold: float = 0.5
    fallback: str = "top1"
    weighting: str = "correlation"
    temperature: float = 0.05  # softmax weighting only: w ∝ exp(r / temperature)
    grid: int = 4
    tile_size: int = 224
    layer: str = "avgpool"
    width: float = 1.0
    pretrained: str | None = None  # local torchvision ResNet-50 state dict
    feature_seed: int = 0
    sigma_space: float = 5.0
    sigma_color: float = 0.1
    window: int = 11
    batch_size: int = 8  # images per feature pass (batch_size·grid² tiles at once)

    def __post_init__(self) -> None:
        owner = "knn_transfer.Config"
        for name in ("k", "grid", "tile_size", "window", "batch_size", "feature_seed"):
            value = getattr(self, name)
            require(isinstance(value, int) and not isinstance(value, bool), owner, name,
                    value, "an integer")
        require_positive(owner, k=self.k, grid=self.grid, batch_size=self.batch_size,
                         width=self.width, temperature=self.temperature,
                         sigma_space=self.sigma_space, sigma_color=self.sigma_color)
        require(-1 <= self.threshold < 1, owner, "threshold", self.threshold, "in [-1, 1)")
        require(self.fallback in FALLBACKS, owner, "fallback", self.fallback,
                f"one of {FALLBACKS}")
        require(self.weighting in WEIGHTINGS, owner, "weighting", self.weighting,
                f"one of {WEIGHTINGS}")
        require(self.layer in RESNET_LAYERS, owner, "layer", self.layer,
                f"one of {RESNET_LAYERS}")
        require(self.tile_size >= 8, owner, "tile_size", self.tile_size, ">= 8 pixels")
        require(self.window >= 1 and self.window % 2 == 1, owner, "window", self.window,
                "an odd size >= 1 (1 = no filtering)")
        require(self.pretrained is None or self.width == 1, owner, "width", self.width,
                "1 with pretrained weights (a torchvision ResNet-50 is full width)")

    @property
    def augmentation(self) -> str:
        """The index holds the training images as they are."""
        return "none"

    def feature_config(self) -> dict[str, Any]:
        """What a descriptor depends on (besides the images)."""
        return {name: getattr(self, name) for name in FEATURE_FIELDS}


def search_space(trial) -> dict[str, Any] | None:
    """Paper 003's knobs (§II: k = 4, threshold 0.50, 4 × 4 tiles) around its values, with
    the ones it leaves open: fusion weighting, feature layer, the filter's σs and window."""
    trial.suggest_int("method/k", 1, 10)
    trial.suggest_float("method/threshold", 0.3, 0.7)
    weighting = trial.suggest_categorical("method/weighting", list(WEIGHTINGS))
    if weighting == "softmax":
        trial.suggest_float("method/temperature", 0.01, 1.0, log=True)
    trial.suggest_categorical("method/grid", [2, 4, 8])
    trial.suggest_categorical("method/layer", ["layer3", "avgpool", "fc"])
    trial.suggest_float("method/sigma_space", 1.0, 15.0, log=True)
    trial.suggest_float("method/sigma_color", 0.02, 0.3, log=True)
    trial.suggest_categorical("method/window", [1, 5, 11, 15, 21])
    return None


# The paper's configuration (filter parameters: ours) is the first point evaluated.
PAPER_ROWS = [{"method/k": 4, "method/threshold": 0.5, "method/weighting": "correlation",
               "method/grid": 4, "method/layer": "avgpool", "method/sigma_space": 5.0,
               "method/sigma_color": 0.1, "method/window": 11}]


# ---------------------------------------------------------------- the index cache

def index_key(config: Config, features: torch.nn.Module, train: SplitArrays) -> str:
    """sha256 of what the descriptors depend on: the feature config, the extractor's
    weights (random init or pretrained file alike) and the training images and ids."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"format": CACHE_FORMAT, **config.feature_config()},
                             sort_keys=True).encode())
    for name, tensor in features.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    digest.update(json.dumps([list(train.images.shape), train.ids]).encode())
    digest.update(np.ascontiguousarray(train.images).data)
    return digest.hexdigest()


def cache_file(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / f"knn_index-{key[:24]}.pt"


def read_cached(path: Path, key: str, count: int) -> torch.Tensor | None:
    """The cached descriptors (N, D), or None when the file is absent, foreign or stale."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt files
        warnings.warn(f"{path}: unreadable index cache ({error}); rebuilding", stacklevel=2)
        return None
    ok = (isinstance(payload, dict) and payload.get("format") == CACHE_FORMAT
          and payload.get("key") == key and payload["descriptors"].shape[0] == count)
    return payload["descriptors"] if ok else None


def write_cached(path: Path, key: str, descriptors: torch.Tensor) -> None:
    """Write atomically (temporary name, then rename): readers see the old file or the new."""
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save({"format": CACHE_FORMAT, "key": key,
                        "descriptors": descriptors.cpu()}, handle)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide it from other users and nodes
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------- the method

def feature_extractor(config: Config) -> TileDescriptor:
    """The tile descriptor of a config; a random init is drawn from `feature_seed` alone."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.feature_seed)
        backbone = resnet50_features(config.layer, config.width, config.pretrained)
    return TileDescriptor(backbone, config.grid, config.tile_size).eval()


@register("knn_transfer")
class KnnTransfer:
    """Nothing is trained: `fit_data` indexes the training split once (cached on disk),
    `predict` retrieves, fuses and filters. Without `fit_data` (a caller that only streams
    batches), each `train_step` adds its batch to the index instead."""

    name: ClassVar[str] = "knn_transfer"
    Config: ClassVar[type] = Config
    learns: ClassVar[bool] = False  # its score at step 0 is its score: evaluated once

    def __init__(self, config: Config, settings: TrainSettings, data: DataInfo,
                 device: torch.device, stepper: Stepper):
        self.config, self.settings, self.data, self.device = config, settings, data, device
        self.features = feature_extractor(config).to(device)
        self.from_split = False
        self.cache_hit: bool | None = None  # after fit_data: whether the index was cached
        self._set_index(DepthIndex(torch.zeros(0, 0), torch.zeros(0, *data.image_size)))

    def networks(self) -> dict[str, torch.nn.Module]:
        return {"features": self.features, "index": self.index}

    def _set_index(self, index: DepthIndex) -> None:
        self.index = index.to(self.device)
        depth = self.index.depth
        finite = depth[torch.isfinite(depth)]
        lo, hi = self.data.depth_range_m
        # For a pixel no retrieved map covers (and an empty index): the index's mean depth.
        self.default_depth = float(finite.mean()) if finite.numel() else (lo + hi) / 2

    @torch.no_grad()
    def describe(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] → (B, D) centred-unit descriptors, batch_size images a pass."""
        parts = [self.features(imagenet_normalise(image[i:i + self.config.batch_size]))
                 for i in range(0, image.shape[0], self.config.batch_size)]
        return centred_unit(torch.cat(parts).float())

    def _describe_split(self, images: np.ndarray) -> torch.Tensor:
        """(N, H, W, 3) uint8 → (N, D), converted batch by batch (as eval_batches does)."""
        step = self.config.batch_size
        parts = []
        for i in range(0, len(images), step):
            chunk = torch.from_numpy(images[i:i + step]).to(self.device)
            parts.append(self.describe(chunk.permute(0, 3, 1, 2).float().div_(255.0)))
        return torch.cat(parts)

    def fit_data(self, train: SplitArrays, cache_dir: Path) -> None:
        """Index the training split: descriptors from the cache file of this feature config
        and split when there is one, else computed and written there."""
        if train.images is None or train.depth is None or len(train) == 0:
            raise ValueError("knn_transfer.fit_data: the training split must hold paired "
                             "images and depth maps (a paired split, e.g. 'train')")
        key = index_key(self.config, self.features, train)
        descriptors = self._cached_descriptors(Path(cache_dir), key, train)
        self._set_index(DepthIndex(descriptors, torch.from_numpy(train.depth)))
        self.from_split = True

    def _cached_descriptors(self, cache_dir: Path, key: str, train: SplitArrays
                            ) -> torch.Tensor:
        path = cache_file(cache_dir, key)
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            lock = open(cache_dir / f".{path.name}.lock", "a")  # held by the `with` below
        except OSError as error:  # a read-only dataset folder: an index in memory only
            warnings.warn(f"{cache_dir}: cannot cache the index ({error})", stacklevel=3)
            self.cache_hit = False
            return self._describe_split(train.images)
        with lock:
            # Concurrent trials of one feature config: the first builds, the others wait, hit.
            fcntl.flock(lock, fcntl.LOCK_EX)
            cached = read_cached(path, key, len(train))
            self.cache_hit = cached is not None
            if cached is not None:
                return cached
            descriptors = self._describe_split(train.images)
            try:
                write_cached(path, key, descriptors)
            except OSError as error:
                warnings.warn(f"{path}: cannot write the index cache ({error})", stacklevel=3)
            return descriptors

    def train_step(self, batches: Iterator[DepthBatch], step: int) -> dict[str, float]:
        """Nothing to learn once the split is indexed; otherwise index the next batch."""
        if not self.from_split:
            batch = next(batches).to(self.device)
            self._set_index(self.index.extended(self.describe(batch.image), batch.depth[:, 0]))
        return {"index_size": float(len(self.index))}

    @torch.no_grad()
    def predict(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] → (B, 1, H, W) metres at the query's size."""
        image = image.to(self.device)
        if len(self.index) == 0:
            return torch.full((image.shape[0], 1, *image.shape[-2:]), self.default_depth,
                              device=self.device)
        return self.transfer(self.describe(image), image)

    @torch.no_grad()
    def transfer(self, query: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Depth of queries already described ((B, D) centred unit) with their images
        (B, 3, H, W) as the filter's guide: retrieve, fuse, resize, filter, fill."""
        c = self.config
        neighbours = retrieve(query, self.index.descriptors, c.k, c.threshold, c.fallback)
        fused = fuse(self.index.depth, neighbours,
                     fusion_weights(neighbours, c.weighting, c.temperature))
        fused = resize_depth(fused, image.shape[-2:])  # (B, 1, H, W)
        refined = joint_bilateral(fused, image, c.sigma_space, c.sigma_color, c.window)
        return fill_holes(refined, self.default_depth)

    def state_dict(self) -> dict[str, Any]:
        """The extractor's weights and the whole index: predict needs nothing else."""
        return {name: module.state_dict() for name, module in self.networks().items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.features.load_state_dict(state["features"])
        index = state["index"]
        self._set_index(DepthIndex(index["descriptors"], index["depth"]))
        self.from_split = len(self.index) > 0

