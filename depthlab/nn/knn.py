"""Paper 003's non-parametric depth transfer as pure, batched torch functions: tile
descriptors, correlation retrieval, weighted fusion, joint (cross) bilateral refinement.

Code ↔ paper (Shoukat et al., §II):
  TileDescriptor          ↔ steps 1–2: 4×4 tiles, ResNet-50 features, F_i = [f_i,1 … f_i,16]
  centred_unit            ↔ correlation as the similarity: r(a, b) = ⟨â, b̂⟩ for centred unit â, b̂
  retrieve (k, threshold) ↔ steps 3–4: k = 4 nearest by r, keep r > 0.50 (outlier rejection)
  fusion_weights, fuse    ↔ step 5, eq. 2: D = Σ C_i·D_i / Σ C_i
  joint_bilateral         ↔ step 6: Cross-Bilateral-Filter guided by the query image

Depth maps are float32 metres with NaN = invalid throughout; NaN never enters a sum.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

WEIGHTINGS = ("correlation", "uniform", "softmax")
FALLBACKS = ("top1", "topk")
# ITU-R BT.601 luma: the guide's intensity in [0, 1] for the filter's range kernel.
LUMA = (0.299, 0.587, 0.114)


def image_tiles(image: torch.Tensor, grid: int, tile_size: int) -> torch.Tensor:
    """(B, C, H, W) → (B·grid², C, t, t), tiles in row-major order (tile r·grid + c).

    The whole image is resized once to (grid·t, grid·t) and cut, which equals cutting
    grid × grid tiles and resizing each (up to interpolation at the tile borders)."""
    b, c = image.shape[:2]
    side = grid * tile_size
    resized = F.interpolate(image, size=(side, side), mode="bilinear", align_corners=False,
                            antialias=True)
    tiles = resized.view(b, c, grid, tile_size, grid, tile_size)
    return tiles.permute(0, 2, 4, 1, 3, 5).reshape(b * grid * grid, c, tile_size, tile_size)


class TileDescriptor(nn.Module):
    """A backbone applied to every tile of a grid; the tile features concatenated."""

    def __init__(self, backbone: nn.Module, grid: int, tile_size: int):
        super().__init__()
        self.backbone, self.grid, self.tile_size = backbone, grid, tile_size

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised as the backbone expects → (B, grid²·C)."""
        features = self.backbone(image_tiles(image, self.grid, self.tile_size))  # (B·g², C)
        return features.reshape(image.shape[0], -1)


def centred_unit(descriptors: torch.Tensor) -> torch.Tensor:
    """(N, D) → each row minus its mean, divided by its norm: Pearson r = one dot product
    (a constant row becomes 0 and correlates 0 with everything)."""
    centred = descriptors - descriptors.mean(dim=1, keepdim=True)
    return centred / centred.norm(dim=1, keepdim=True).clamp_min(1e-12)


@dataclass(frozen=True)
class Neighbours:
    """The top-k training samples of each query: (Q, k) indices, correlations, and
    which of them survive the threshold."""

    index: torch.Tensor  # (Q, k) long
    correlation: torch.Tensor  # (Q, k), descending along k
    keep: torch.Tensor  # (Q, k) bool, at least one True per row


def retrieve(query: torch.Tensor, index: torch.Tensor, k: int, threshold: float,
             fallback: str = "top1") -> Neighbours:
    """Top-k of `index` (N, D) by correlation with each `query` (Q, D), both centred_unit.

    Neighbours with r ≤ threshold are dropped; a query with none left keeps its best
    one ("top1") or all k ("topk") — the paper does not say which."""
    if fallback not in FALLBACKS:
        raise ValueError(f"retrieve: fallback = {fallback!r}: expected one of {FALLBACKS}")
    if index.shape[0] == 0:
        raise ValueError("retrieve: the index is empty")
    correlation = query @ index.T  # (Q, N): one matmul for every pair
    top, which = correlation.topk(min(k, index.shape[0]), dim=1)  # (Q, k), descending
    keep = top > threshold
    none_left = ~keep.any(dim=1, keepdim=True)  # (Q, 1)
    if fallback == "top1":
        first = torch.zeros_like(keep)
        first[:, 0] = True
        keep = torch.where(none_left, first, keep)
    else:
        keep = keep | none_left
    return Neighbours(which, top, keep)


def fusion_weights(neighbours: Neighbours, weighting: str = "correlation",
                   temperature: float = 1.0) -> torch.Tensor:
    """(Q, k) weights of the kept neighbours, each row summing to 1 (0 for dropped ones).

    "correlation" is eq. 2 (w ∝ r; an r ≤ 0, reachable only through the fallback, gets
    a tiny positive weight so the mean stays convex), "uniform" w ∝ 1, "softmax"
    w ∝ exp(r / temperature)."""
    r, keep = neighbours.correlation, neighbours.keep
    if weighting == "correlation":
        raw = r.clamp_min(1e-6)
    elif weighting == "uniform":
        raw = torch.ones_like(r)
    elif weighting == "softmax":
        raw = torch.exp((r - r[:, :1]) / temperature)  # r[:, 0] is the row maximum
    else:
        raise ValueError(f"fusion_weights: weighting = {weighting!r}: expected one of "
                         f"{WEIGHTINGS}")
    raw = torch.where(keep, raw, torch.zeros_like(raw))
    return raw / raw.sum(dim=1, keepdim=True)


def fuse(depth: torch.Tensor, neighbours: Neighbours, weights: torch.Tensor) -> torch.Tensor:
    """Weighted mean of the retrieved maps of `depth` (N, H, W) → (Q, 1, H, W); a pixel
    averages only the maps valid there (weights renormalised), NaN where none is."""
    maps = depth[neighbours.index]  # (Q, k, H, W)
    valid = torch.isfinite(maps)
    w = weights[:, :, None, None] * valid  # (Q, k, H, W)
    total = w.sum(dim=1, keepdim=True)  # (Q, 1, H, W)
    summed = (w * torch.where(valid, maps, torch.zeros_like(maps))).sum(dim=1, keepdim=True)
    return torch.where(total > 0, summed / total.clamp_min(1e-12),
                       torch.full_like(total, float("nan")))


def resize_depth(depth: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, 1, h, w) → (B, 1, H, W) by nearest neighbour: holes stay holes and no depth is
    blended across an edge (the bilateral filter smooths afterwards, guided by the image)."""
    if tuple(depth.shape[-2:]) == tuple(size):
        return depth
    return F.interpolate(depth, size=tuple(size), mode="nearest")


def luminance(image: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] → (B, 1, H, W) intensity in [0, 1]."""
    return (image * image.new_tensor(LUMA).view(1, 3, 1, 1)).sum(dim=1, keepdim=True)


def joint_bilateral(depth: torch.Tensor, guide: torch.Tensor, sigma_space: float,
                    sigma_color: float, window: int) -> torch.Tensor:
    """Cross bilateral filter of `depth` (B, 1, H, W) guided by `guide` (B, 3, H, W) in [0, 1]:
    out(p) = Σ_q G_s(|p − q|) G_c(I(p) − I(q)) D(q) / Σ_q …, over the window × window
    neighbours q of p that are valid (inside the image, finite depth); σ_space in pixels,
    σ_color on the guide's intensity. A pixel with no valid neighbour stays NaN.

    Vectorised over the batch and all pixels, one pass per pair of opposite window
    offsets ±o: G_c is symmetric, so the weights of p → p + o, computed on a grid one
    offset larger, are also those of p → p − o. Memory stays at a few images (an unfold
    would hold window² copies of the batch)."""
    if window < 1 or window % 2 == 0:
        raise ValueError(f"joint_bilateral: window = {window!r}: expected an odd size >= 1")
    if not (sigma_space > 0 and sigma_color > 0):
        raise ValueError(f"joint_bilateral: sigma_space = {sigma_space!r}, sigma_color = "
                         f"{sigma_color!r}: expected both > 0")
    r = window // 2
    h, w = depth.shape[-2:]
    valid = torch.isfinite(depth)
    pad = (r, r, r, r)
    # Channels (validity, depth), zero outside the image: the border adds nothing to a sum.
    present = F.pad(torch.cat([valid.to(depth.dtype),
                               torch.where(valid, depth, torch.zeros_like(depth))], 1), pad)
    grey = F.pad(luminance(guide).to(depth.dtype), pad, mode="replicate")  # (B, 1, H+2r, W+2r)
    sums = present[..., r:r + h, r:r + w].clone()  # the centre: weight 1; (B, 2, H, W)
    color_scale = -1 / (2 * sigma_color**2)
    for dy in range(r + 1):
        for dx in range(-r, r + 1):
            if dy == 0 and dx <= 0:  # the centre, or the opposite of an offset already done
                continue
            space = math.exp(-(dy * dy + dx * dx) / (2 * sigma_space**2))
            # G_c(I(a + o) − I(a)) for every a that is a pixel p or a pixel's p − o.
            top, left, rows, cols = r - dy, r - max(dx, 0), h + dy, w + abs(dx)
            color = (grey[..., top + dy:top + dy + rows, left + dx:left + dx + cols]
                     - grey[..., top:top + rows, left:left + cols])
            color = color.square_().mul_(color_scale).exp_()
            c0 = max(dx, 0)  # p → p + o: the weights at a = p
            sums.addcmul_(color[..., dy:dy + h, c0:c0 + w],
                          present[..., r + dy:r + dy + h, r + dx:r + dx + w], value=space)
            c0 = max(-dx, 0)  # p → p − o: the weights at a = p − o
            sums.addcmul_(color[..., :h, c0:c0 + w],
                          present[..., r - dy:r - dy + h, r - dx:r - dx + w], value=space)
    total, summed = sums[:, :1], sums[:, 1:]
    return torch.where(total > 0, summed / total.clamp_min(1e-30),
                       torch.full_like(total, float("nan")))


def fill_holes(depth: torch.Tensor, default: float) -> torch.Tensor:
    """(B, 1, H, W) with NaN → each image's NaN pixels set to its mean valid depth
    (`default` for an image with none), so every prediction is a depth."""
    valid = torch.isfinite(depth)
    count = valid.sum(dim=(1, 2, 3), keepdim=True)
    mean = torch.where(valid, depth, torch.zeros_like(depth)).sum(dim=(1, 2, 3), keepdim=True)
    mean = torch.where(count > 0, mean / count.clamp_min(1), torch.full_like(mean, default))
    return torch.where(valid, depth, mean.expand_as(depth))


class DepthIndex(nn.Module):
    """The training set as retrieval sees it: centred-unit descriptors and depth maps,
    kept as buffers so a checkpoint of the method carries its index."""

    def __init__(self, descriptors: torch.Tensor, depth: torch.Tensor):
        super().__init__()
        if descriptors.shape[0] != depth.shape[0] or depth.ndim != 3:
            raise ValueError(f"DepthIndex: {descriptors.shape[0]} descriptors and depth "
                             f"{tuple(depth.shape)}: expected (N, D) and (N, H, W)")
        self.register_buffer("descriptors", descriptors)  # (N, D) centred unit
        self.register_buffer("depth", depth)  # (N, H, W) metres, NaN = invalid

    def __len__(self) -> int:
        return self.descriptors.shape[0]

    def extended(self, descriptors: torch.Tensor, depth: torch.Tensor) -> "DepthIndex":
        """A new index with more samples appended."""
        if len(self) == 0:
            return DepthIndex(descriptors, depth)
        return DepthIndex(torch.cat([self.descriptors, descriptors]),
                          torch.cat([self.depth, depth]))
