"""Paper 003's depth transfer: exact retrieval, the threshold and its fallback, fusion that
skips holes, an edge-preserving bilateral filter, the on-disk index cache, the ResNet-50
tile features, and the method end to end on synthetic rooms."""

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from depthlab.config import TrainSettings, from_dict
from depthlab.data.datasets import SplitArrays
from depthlab.methods import METHODS, DataInfo
from depthlab.methods.knn_transfer import Config, KnnTransfer, cache_file, search_space
from depthlab.methods.protocol import FitsData
from depthlab.nn import count_parameters
from depthlab.nn.backbones import resnet50_features
from depthlab.nn.knn import (
    Neighbours,
    centred_unit,
    fill_holes,
    fuse,
    fusion_weights,
    image_tiles,
    joint_bilateral,
    retrieve,
)
from depthlab.nn.optim import Stepper
from tests.rooms_training import train_on_rooms

TINY = dict(width=0.125, tile_size=16, grid=2, window=3, batch_size=4)
INFO = DataInfo("synthetic-rooms", "1", (0.0, 10.0), "m", 1.0, (32, 32))


def _method(**overrides) -> KnnTransfer:
    return KnnTransfer(Config(**{**TINY, **overrides}), TrainSettings(), INFO,
                       torch.device("cpu"), Stepper())


def _split(n: int = 12, seed: int = 0, size=(32, 32)) -> SplitArrays:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, *size, 3), dtype=np.uint8)
    depth = rng.uniform(0.5, 9.5, (n, *size)).astype(np.float32)
    return SplitArrays(images, depth, [f"s{i}" for i in range(n)])


def _with_correlations(values: list[float], dim: int = 16, seed: int = 0
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """A query and an index whose rows correlate with it exactly `values` (Pearson r)."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.cat([torch.ones(dim, 1), torch.randn(dim, len(values) + 1, generator=g)], 1)
    q, _ = torch.linalg.qr(basis.double())  # column 0 ∝ 1: the others are centred, orthonormal
    u, others = q[:, 1], q[:, 2:]
    rows = [r * u + math.sqrt(1 - r * r) * others[:, i] for i, r in enumerate(values)]
    return 3 * u[None].float() + 7, torch.stack(rows).float() * 2 - 1  # offsets: r ignores them


# ---------------------------------------------------------------- retrieval

def test_retrieval_returns_the_exact_neighbours_of_a_random_index():
    g = torch.Generator().manual_seed(0)
    index, queries = torch.randn(60, 48, generator=g), torch.randn(5, 48, generator=g)
    found = retrieve(centred_unit(queries), centred_unit(index), k=4, threshold=-1.0)
    for q in range(5):  # brute force: np.corrcoef per pair
        r = np.array([np.corrcoef(queries[q].numpy(), row.numpy())[0, 1] for row in index])
        assert found.index[q].tolist() == np.argsort(-r)[:4].tolist()
        np.testing.assert_allclose(found.correlation[q].numpy(), np.sort(r)[::-1][:4],
                                   atol=1e-5)
    assert found.keep.all()


def test_retrieval_of_constructed_correlations_keeps_those_above_the_threshold():
    query, index = _with_correlations([0.2, 0.9, -0.5, 0.6, 0.4])
    found = retrieve(centred_unit(query), centred_unit(index), k=4, threshold=0.5)
    assert found.index.tolist() == [[1, 3, 4, 0]]
    np.testing.assert_allclose(found.correlation[0].numpy(), [0.9, 0.6, 0.4, 0.2], atol=1e-5)
    assert found.keep.tolist() == [[True, True, False, False]]


@pytest.mark.parametrize("fallback, kept", [("top1", [True, False, False]),
                                            ("topk", [True, True, True])])
def test_when_no_neighbour_passes_the_threshold_the_fallback_decides(fallback, kept):
    query, index = _with_correlations([0.3, 0.45, 0.1, 0.2])
    found = retrieve(centred_unit(query), centred_unit(index), k=3, threshold=0.5,
                     fallback=fallback)
    assert found.index.tolist() == [[1, 0, 3]]
    assert found.keep.tolist() == [kept]


def test_k_larger_than_the_index_returns_the_whole_index():
    query, index = _with_correlations([0.8, 0.7])
    assert retrieve(centred_unit(query), centred_unit(index), k=4, threshold=0.5).index.shape \
        == (1, 2)


# ---------------------------------------------------------------- fusion

def _neighbours(r: list[float], keep: list[bool]) -> Neighbours:
    return Neighbours(torch.arange(len(r))[None], torch.tensor([r]), torch.tensor([keep]))


@pytest.mark.parametrize("weighting, expected", [
    ("correlation", [0.9 / 1.5, 0.6 / 1.5, 0.0]),  # eq. 2: w ∝ C_i over the kept ones
    ("uniform", [0.5, 0.5, 0.0]),
    ("softmax", [1 / (1 + math.exp(-3)), 1 - 1 / (1 + math.exp(-3)), 0.0]),  # T = 0.1
])
def test_fusion_weights(weighting, expected):
    w = fusion_weights(_neighbours([0.9, 0.6, 0.4], [True, True, False]), weighting, 0.1)
    np.testing.assert_allclose(w[0].numpy(), expected, rtol=1e-6)


def test_fusion_averages_only_the_maps_valid_at_each_pixel():
    depth = torch.tensor([[[1.0, 2.0, float("nan")]], [[3.0, float("nan"), float("nan")]],
                          [[100.0, 100.0, 100.0]]])  # (3, 1, 3); the third is not kept
    neighbours = _neighbours([0.75, 0.25, 0.9], [True, True, False])
    fused = fuse(depth, neighbours, fusion_weights(neighbours))
    assert fused.shape == (1, 1, 1, 3)
    np.testing.assert_allclose(fused[0, 0, 0, :2].numpy(), [0.75 * 1 + 0.25 * 3, 2.0])
    assert math.isnan(fused[0, 0, 0, 2])  # no kept map is valid there


def test_fill_holes_uses_each_images_mean_or_the_default():
    depth = torch.tensor([[[[1.0, float("nan"), 3.0]]], [[[float("nan")] * 3]]])
    filled = fill_holes(depth, default=5.0)
    assert filled.flatten().tolist() == [1.0, 2.0, 3.0, 5.0, 5.0, 5.0]


# ---------------------------------------------------------------- the bilateral filter

def _noisy_step(noise: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Depth 1 m | 3 m with Gaussian noise, guide 0.2 | 0.8 grey, the edge at column 32."""
    g = torch.Generator().manual_seed(0)
    depth = torch.ones(1, 1, 48, 64)
    depth[..., 32:] = 3.0
    guide = torch.full((1, 3, 48, 64), 0.2)
    guide[..., 32:] = 0.8
    return depth + noise * torch.randn(depth.shape, generator=g), guide


def test_bilateral_filter_smooths_noise_and_keeps_the_step_edge():
    noisy, guide = _noisy_step()
    out = joint_bilateral(noisy, guide, sigma_space=3.0, sigma_color=0.05, window=11)
    left, right = out[..., 32 - 1], out[..., 32]  # the columns either side of the edge
    # Measured: edge columns 1.001 / 3.000 m; noise std 0.100 → 0.011 m per side.
    assert abs(left.mean() - 1.0) < 0.02 and abs(right.mean() - 3.0) < 0.02
    for side in (out[..., :32], out[..., 32:]):
        assert side.std() < 0.2 * noisy[..., :32].std()
    # Without the range kernel the same window blurs the edge to the midpoint: 1.4 / 2.6 m.
    blurred = joint_bilateral(noisy, guide, sigma_space=3.0, sigma_color=1e3, window=11)
    assert blurred[..., 31].mean() > 1.3 and blurred[..., 32].mean() < 2.7


def test_bilateral_filter_matches_a_per_pixel_loop_and_keeps_nan_out():
    g = torch.Generator().manual_seed(1)
    depth, guide = torch.rand(1, 1, 7, 9, generator=g) + 1, torch.rand(1, 3, 7, 9, generator=g)
    depth[0, 0, 2, 3] = depth[0, 0, 0, 0] = float("nan")
    out = joint_bilateral(depth, guide, sigma_space=1.5, sigma_color=0.2, window=5)
    grey = (guide[0] * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(0)
    d = depth[0, 0]
    for y in range(7):
        for x in range(9):
            num = den = 0.0
            for v in range(max(0, y - 2), min(7, y + 3)):
                for u in range(max(0, x - 2), min(9, x + 3)):
                    if math.isfinite(d[v, u]):
                        w = math.exp(-((v - y) ** 2 + (u - x) ** 2) / (2 * 1.5**2)
                                     - (grey[v, u] - grey[y, x]) ** 2 / (2 * 0.2**2))
                        num, den = num + w * d[v, u], den + w
            assert out[0, 0, y, x].item() == pytest.approx(float(num / den), rel=1e-5)


def test_bilateral_filter_window_one_is_the_identity_and_isolated_holes_stay_holes():
    depth, guide = _noisy_step()
    assert torch.equal(joint_bilateral(depth, guide, 3.0, 0.1, 1), depth)
    holes = torch.full((1, 1, 9, 9), float("nan"))
    holes[0, 0, 0, 0] = 2.0
    out = joint_bilateral(holes, guide[..., :9, :9], 3.0, 0.1, 3)
    assert torch.isfinite(out[0, 0, :2, :2]).all() and out[0, 0, 1, 1] == 2.0
    assert torch.isnan(out[0, 0, 2:, :]).all()  # no valid pixel within the window


@pytest.mark.parametrize("window, sigma", [(4, 1.0), (0, 1.0), (3, 0.0)])
def test_bilateral_filter_refuses_bad_parameters(window, sigma):
    depth, guide = _noisy_step()
    with pytest.raises(ValueError, match="joint_bilateral"):
        joint_bilateral(depth, guide, sigma, 0.1, window)


# ---------------------------------------------------------------- tiles and ResNet-50

def test_tiles_are_cut_in_row_major_order():
    quadrants = torch.arange(4.0).view(1, 1, 2, 2).repeat(1, 3, 1, 1)
    image = quadrants.repeat_interleave(8, dim=2).repeat_interleave(8, dim=3)  # (1, 3, 16, 16)
    tiles = image_tiles(image, grid=2, tile_size=4)  # each 8×8 quadrant → one 4×4 tile
    assert tiles.shape == (4, 3, 4, 4)
    # Tile centres see only their quadrant (the antialiased resize blends at the borders).
    assert tiles[:, 0, 1:3, 1:3].flatten(1).tolist() == [[v] * 4 for v in (0.0, 1.0, 2.0, 3.0)]


def test_resnet50_matches_torchvision_and_its_parameter_count():
    ours, theirs = resnet50_features("fc"), torchvision.models.resnet50(weights=None).eval()
    assert count_parameters(ours) == count_parameters(theirs) == 25_557_032
    assert count_parameters(resnet50_features("avgpool")) == 23_508_032  # without fc
    assert list(ours.state_dict()) == list(theirs.state_dict())  # torchvision's names
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(ours(x), theirs(x))


@pytest.mark.parametrize("layer, channels", [("layer2", 64), ("layer3", 128),
                                             ("avgpool", 256), ("fc", 1000)])
def test_resnet50_feature_sizes_scale_with_width(layer, channels):
    assert resnet50_features(layer, width=0.125)(torch.randn(2, 3, 32, 32)).shape \
        == (2, channels)


def test_resnet50_loads_a_local_torchvision_state_dict_at_width_one_only(tmp_path):
    reference = torchvision.models.resnet50(weights=None)
    path = tmp_path / "resnet50.pth"
    torch.save(reference.state_dict(), path)
    net = resnet50_features("layer3", pretrained=path)
    for key, value in net.state_dict().items():
        torch.testing.assert_close(value, reference.state_dict()[key], rtol=0, atol=0)
    with pytest.raises(ValueError, match="need width 1"):
        resnet50_features("layer3", width=0.5, pretrained=path)
    with pytest.raises(ValueError, match="no such file"):
        resnet50_features(pretrained=tmp_path / "missing.pth")
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not a torchvision ResNet-50"):
        resnet50_features(pretrained=tmp_path / "other.pth")


# ---------------------------------------------------------------- config and search space

@pytest.mark.parametrize("field, value", [
    ("k", 0), ("k", 2.5), ("threshold", 1.0), ("fallback", "median"), ("weighting", "max"),
    ("grid", 0), ("layer", "layer9"), ("tile_size", 4), ("window", 4), ("sigma_space", 0.0),
    ("sigma_color", -1.0), ("temperature", 0.0), ("width", 0.0),
])
def test_config_refuses_bad_values_and_names_the_field(field, value):
    with pytest.raises(ValueError, match=f"knn_transfer.Config.{field} = "):
        Config(**{field: value})


def test_pretrained_features_need_full_width():
    with pytest.raises(ValueError, match="Config.width = 0.5"):
        Config(width=0.5, pretrained="resnet50.pth")


def test_search_space_asks_temperature_only_for_softmax_and_the_paper_row_is_valid():
    import optuna

    from depthlab.methods.knn_transfer import PAPER_ROWS

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        search_space(trial)
        assert ("method/temperature" in trial.params) == \
            (trial.params["method/weighting"] == "softmax")
        from_dict(Config, {k.split("/", 1)[1]: v for k, v in trial.params.items()})
        study.tell(trial, 0.0)
    paper = from_dict(Config, {k.split("/", 1)[1]: v for k, v in PAPER_ROWS[0].items()})
    assert (paper.k, paper.threshold, paper.grid, paper.weighting) == (4, 0.5, 4, "correlation")


# ---------------------------------------------------------------- the index cache

def _count_feature_passes(method: KnnTransfer) -> list[int]:
    calls = [0]
    method.features.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_second_build_is_a_cache_hit_that_runs_no_feature_extractor(tmp_path):
    split = _split()
    first = _method()
    first_calls = _count_feature_passes(first)
    first.fit_data(split, tmp_path)
    assert first.cache_hit is False and first_calls[0] == 3  # 12 images, batch 4
    (written,) = tmp_path.glob("knn_index-*.pt")
    assert written.stat().st_mode & 0o777 == 0o644  # readable by the other trials' users

    second = _method(k=2, threshold=0.3, sigma_space=2.0, window=5)  # not feature fields
    second_calls = _count_feature_passes(second)
    second.fit_data(split, tmp_path)
    assert second.cache_hit is True and second_calls[0] == 0
    torch.testing.assert_close(second.index.descriptors, first.index.descriptors,
                               rtol=0, atol=0)
    torch.testing.assert_close(second.index.depth, torch.from_numpy(split.depth))


@pytest.mark.parametrize("change", ["grid", "layer", "feature_seed", "images"])
def test_a_feature_config_or_split_change_misses_the_cache(change, tmp_path):
    _method().fit_data(_split(), tmp_path)
    overrides = {"grid": dict(grid=3), "layer": dict(layer="layer3"),
                 "feature_seed": dict(feature_seed=1), "images": {}}[change]
    other = _method(**overrides)
    other.fit_data(_split(seed=1) if change == "images" else _split(), tmp_path)
    assert other.cache_hit is False
    assert len(list(tmp_path.glob("knn_index-*.pt"))) == 2


def test_a_corrupt_cache_file_is_rebuilt_with_a_warning(tmp_path):
    method = _method()
    method.fit_data(_split(), tmp_path)
    path = next(tmp_path.glob("knn_index-*.pt"))
    path.write_bytes(b"not a torch file")
    again = _method()
    with pytest.warns(UserWarning, match="unreadable index cache"):
        again.fit_data(_split(), tmp_path)
    assert again.cache_hit is False
    third = _method()
    third.fit_data(_split(), tmp_path)  # the rebuilt file is whole again
    assert third.cache_hit is True
    torch.testing.assert_close(third.index.descriptors, method.index.descriptors)


def test_an_unwritable_cache_folder_only_costs_the_reuse(tmp_path):
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the folder should be")
    method = _method()
    with pytest.warns(UserWarning, match="cannot cache the index"):
        method.fit_data(_split(), blocker)
    assert method.cache_hit is False and len(method.index) == 12


def test_cache_file_is_named_by_the_key():
    assert cache_file(Path("/c"), "ab" * 32) == Path("/c") / f"knn_index-{'ab' * 12}.pt"


def test_fit_data_needs_a_paired_split(tmp_path):
    split = _split()
    with pytest.raises(ValueError, match="paired images and depth"):
        _method().fit_data(SplitArrays(split.images, None, split.ids), tmp_path)


# ---------------------------------------------------------------- the method

def test_method_is_registered_and_takes_the_training_split():
    assert METHODS["knn_transfer"] is KnnTransfer
    assert isinstance(_method(), FitsData)
    assert not isinstance(object(), FitsData)


def test_the_query_of_an_indexed_image_gets_that_images_depth(tmp_path):
    split = _split(n=8)
    split.depth[3, :, :16] = 2.0  # a distinctive map: left half 2 m, right half 8 m
    split.depth[3, :, 16:] = 8.0
    method = _method(k=1, window=1)
    method.fit_data(split, tmp_path)
    image = torch.from_numpy(split.images[3:4]).permute(0, 3, 1, 2).float() / 255
    torch.testing.assert_close(method.predict(image)[0, 0], torch.from_numpy(split.depth[3]))
    bigger = torch.nn.functional.interpolate(image, size=(48, 64), mode="bilinear")
    assert method.predict(bigger).shape == (1, 1, 48, 64)  # resized to the query


def test_state_dict_round_trip_after_fit_data_predicts_identically(tmp_path):
    method = _method()
    method.fit_data(_split(), tmp_path)
    fresh = _method()
    image = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(fresh.predict(image), torch.full((3, 1, 32, 32), 5.0))  # empty index
    fresh.load_state_dict(method.state_dict())
    assert torch.equal(fresh.predict(image), method.predict(image))
    assert fresh.train_step(iter(()), 0) == {"index_size": 12.0}  # indexed: draws nothing


def test_depth_transfer_beats_the_constant_predictor_on_rooms(tmp_path):
    """400 training rooms indexed, 64 test rooms, one "step" (~5 s)."""
    config = Config(width=0.25, tile_size=32, batch_size=16)
    baseline, reports = train_on_rooms(tmp_path, "knn_transfer", config, steps=1, eval_every=1)
    print("constant RMSE", baseline, "reports", reports)
    # Measured at 64×64: constant 1.276 m, depth transfer (paper's k, threshold; random
    # ResNet features at width 1/4) 1.156 m = 0.91 × constant, evaluated once (learns nothing).
    assert list(reports) == [1] and reports[1]["train/index_size"] == 400
    assert reports[1]["best/rmse_m"] < 0.95 * baseline, (baseline, reports[1])
    assert list((Path(tmp_path)).rglob("cache/knn_index-*.pt"))  # the build's cache folder


def test_an_extra_evaluation_on_the_studys_own_data_follows_its_choice(tmp_path):
    from depthlab.catalog import load_entry
    from depthlab.config import Budget
    from depthlab.study import ExtraEval, StudySpec, prepare_extra_evals

    budget = Budget("t", (64, 64), steps=1, eval_every=1, eval_samples=4, num_trials=1,
                    data_counts=dict(train=4, test=4))
    spec = StudySpec("t", "knn_transfer", "make3d", search_space, {"t": budget}, "best/rmse_m",
                     extra_evals=(ExtraEval("dt", None, ("test",), math.inf, "native"),
                                  ExtraEval("half", None, ("test",), size=(32, 32))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dt, half = prepare_extra_evals(spec, budget, str(tmp_path), load_entry("synthetic-rooms"))
    assert dt["data"]["name"] == "synthetic-rooms" and dt["data"]["max_depth_m"] == math.inf
    assert dt["data"]["image_size"] == (96, 128)  # rooms' native (catalog default) size
    assert half["data"]["image_size"] == (32, 32) and half["data"]["max_depth_m"] is None
    with pytest.raises(ValueError, match="study's own dataset"):
        prepare_extra_evals(spec, budget, str(tmp_path))
