"""Make3D, 7-Scenes, Texas-3DFRD, SURREAL and folder-unit readers on tiny files of the real
layouts, bad input naming the file, and every catalog descriptor against the registries."""

import pickle
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from depthlab.catalog import UNITS, list_entries, load_entry
from depthlab.cli import main
from depthlab.data import formats
from depthlab.data.datasets import load_split
from depthlab.data.formats import (
    SurrealOptions,
    disjoint_frames,
    make3d_reader,
    surreal_reader,
    texas_subject_splits,
    with_folder_unit,
)
from depthlab.data.readers import READERS
from depthlab.data.shards import GENERATORS
from tests.test_readers import REAL, needs_real, truncate, write_depth, write_rgb


def write_uniform(path: Path, h: int, w: int, colour: tuple[int, int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), colour, np.uint8)).save(path, quality=100)


def write_mat(path: Path, **variables) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(path, variables)  # MATLAB v5, as the datasets ship


# ---------------------------------------------------------------- catalog ↔ registries

def test_every_descriptor_parses_and_names_a_registered_source():
    entries = {e.name: e for e in list_entries()}
    assert {"make3d", "sevenscenes", "texas-3dfrd", "surreal", "folder",
            "folder-unpaired"} <= set(entries)
    for entry in entries.values():
        if entry.generator is not None:
            assert entry.generator in GENERATORS, entry.name
            continue
        reader = READERS.get_or_raise(entry.reader)
        unknown = set(entry.split_names) - set(reader.splits)
        assert not unknown, f"{entry.name}: splits {unknown} unknown to reader {entry.reader}"
    counts = {name: {s.name: s.count for s in entries[name].splits}
              for name in ("make3d", "sevenscenes", "surreal")}
    assert counts == {"make3d": {"train": 400, "test": 134},
                      "sevenscenes": {"train": 26000, "test": 17000},
                      "surreal": {"train_rgb": 50000, "train_depth": 50000, "eval": 0}}
    make3d = entries["make3d"].evaluation
    assert (make3d.min_depth, make3d.max_depth, make3d.crop) == (0.001, 70.0, None)
    modalities = {s.name: s.modality for s in entries["texas-3dfrd"].splits}
    assert modalities == {"train_rgb": "rgb", "train_depth": "depth", "eval": "paired"}


@pytest.mark.parametrize("name", ["make3d", "sevenscenes", "texas-3dfrd", "surreal", "folder-m"])
def test_new_readers_pickle_for_ray_workers(name):
    reader = pickle.loads(pickle.dumps(READERS[name]))
    assert reader.splits == READERS[name].splits


def test_relative_unit_passes_values_unchanged():
    texas = load_entry("texas-3dfrd")
    assert UNITS["relative"] == 1.0
    assert texas.depth_unit == "relative" and texas.unit_to_metres == 1.0
    assert texas.depth_range_m == (0.0, 1.0) and texas.display_scale == 1.0
    assert load_entry("surreal").depth_range_m == (-0.4725, 0.4725)


# ---------------------------------------------------------------- Make3D

def make3d_grid(seed: float = 0.0) -> np.ndarray:
    """(55, 305, 4); depth channel = 1 + row + column / 1000 + seed, one exact value per cell."""
    rows, cols = np.meshgrid(np.arange(55), np.arange(305), indexing="ij")
    grid = np.zeros((55, 305, 4))
    grid[:, :, 0], grid[:, :, 1] = -rows, cols  # Y and X: must not be taken for depth
    grid[:, :, 3] = 1 + rows + cols / 1000 + seed
    return grid


def write_make3d(root: Path) -> None:
    for split_dirs, names in ((("Train400Img", "Train400Depth"), ("a", "b")),
                              (("Test134", "Gridlaserdata"), ("10.21op2-p-139t000",))):
        for k, name in enumerate(names):
            write_uniform(root / split_dirs[0] / f"img-{name}.jpg", 32, 24, (200, 40 * k, 90))
            write_mat(root / split_dirs[1] / f"depth_sph_corr-{name}.mat",
                      Position3DGrid=make3d_grid(k))


def test_make3d_pairs_by_stem_and_resizes_to_the_depthtransfer_size(tmp_path):
    write_make3d(tmp_path)
    grid = make3d_grid()
    grid[0, 0, 3] = 0.0  # no laser return
    write_mat(tmp_path / "Train400Depth" / "depth_sph_corr-a.mat", Position3DGrid=grid)
    reader = READERS["make3d"]
    assert reader.splits == ("train", "test")
    assert reader.index(tmp_path, "train") == ["train/a", "train/b"]
    assert reader.index(tmp_path, "test") == ["test/10.21op2-p-139t000"]
    sample = reader.read(tmp_path, "train/a")
    assert sample.rgb.shape == (460, 345, 3) and sample.depth.shape == (460, 345)
    assert np.abs(sample.rgb.astype(int) - (200, 0, 90)).max() <= 3  # a uniform JPEG stays so
    # nearest neighbour about pixel centres: row r ← grid row ⌊(r + ½)·55/460⌋, column c ←
    # ⌊(c + ½)·305/345⌋; grid axis 0 runs down the image, axis 1 left to right
    assert np.isnan(sample.depth[0, 0])  # grid (0, 0) = 0 → invalid
    assert sample.depth[0, 1] == np.float32(1 + 0 + 1 / 1000)  # column 1 ← grid column 1
    assert sample.depth[230, 0] == np.float32(1 + 27)  # ⌊230.5·55/460⌋ = 27
    assert sample.depth[459, 344] == np.float32(1 + 54 + 304 / 1000)
    assert sample.depth[459, 172] == np.float32(1 + 54 + 152 / 1000)  # ⌊172.5·305/345⌋ = 152
    assert sample.source == "Train400Img/img-a.jpg + Train400Depth/depth_sph_corr-a.mat"
    assert sample.intrinsics is None  # Make3D gives no camera
    test = reader.read(tmp_path, "test/10.21op2-p-139t000")
    assert test.source.startswith("Test134/img-10.21op2-p-139t000.jpg + Gridlaserdata/")


def test_make3d_grid_option_keeps_the_laser_grid(tmp_path):
    write_make3d(tmp_path)
    sample = make3d_reader("grid").read(tmp_path, "train/b")
    assert sample.rgb.shape == (55, 305, 3)
    np.testing.assert_array_equal(sample.depth, make3d_grid(1)[:, :, 3].astype(np.float32))
    with pytest.raises(ValueError, match="resolution = 'full'; expected one of depthtransfer"):
        make3d_reader("full")


def test_make3d_bad_input_names_the_file(tmp_path):
    write_make3d(tmp_path)
    reader, mat = READERS["make3d"], tmp_path / "Train400Depth" / "depth_sph_corr-a.mat"
    mat.write_bytes(b"MATLAB 5.0 MAT-file, but not really" + bytes(200))
    with pytest.raises(ValueError, match=f"{mat}: unreadable Make3D depth .mat"):
        reader.read(tmp_path, "train/a")
    grid = make3d_grid()
    grid[3, 4, 3] = np.nan
    write_mat(mat, Position3DGrid=grid)
    with pytest.raises(ValueError, match=f"{mat}: Position3DGrid.*NaN, inf or negative"):
        reader.read(tmp_path, "train/a")
    write_mat(mat, Position3DGrid=make3d_grid().transpose(1, 0, 2))
    with pytest.raises(ValueError, match=r"\(305, 55, 4\) \(transposed\?\); expected .*\(55, 305"):
        reader.read(tmp_path, "train/a")
    write_mat(mat, depth=np.ones((55, 305)))
    with pytest.raises(ValueError, match=f"{mat}: no variable 'Position3DGrid'"):
        reader.read(tmp_path, "train/a")
    mat.unlink()  # an image without its depth file
    with pytest.raises(ValueError, match=r"only Train400Img/: \['a'\], only Train400Depth/: \[\]"):
        reader.index(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match=f"{mat}: Make3D depth .mat not found"):
        reader.read(tmp_path, "train/a")
    image = tmp_path / "Train400Img" / "img-b.jpg"
    write_rgb(image, 24, 32)  # landscape: rotated, or not Make3D
    with pytest.raises(ValueError, match=f"{image} is 24x32 \\(HxW\\), landscape; expected a "
                                         f"portrait"):
        reader.read(tmp_path, "train/b")
    write_rgb(image, 64, 48)
    truncate(image)
    with pytest.raises(ValueError, match=f"{image}: unreadable RGB image"):
        reader.read(tmp_path, "train/b")
    shutil.rmtree(tmp_path / "Test134")
    with pytest.raises(FileNotFoundError, match="Test134: Make3D image folder not found"):
        reader.index(tmp_path, "test")
    (tmp_path / "Test134").mkdir()
    with pytest.raises(ValueError, match=r"Test134: no Make3D image files; expected img-<name>"):
        reader.index(tmp_path, "test")
    with pytest.raises(ValueError, match="make3d reader has no split 'val'; known: train, test"):
        reader.index(tmp_path, "val")


# ---------------------------------------------------------------- Microsoft 7-Scenes

def write_frame(seq: Path, n: int, raw: np.ndarray, colour_suffix: str = ".png") -> None:
    write_rgb(seq / f"frame-{n:06d}.color{colour_suffix}", *raw.shape, seed=n)
    write_depth(seq / f"frame-{n:06d}.depth.png", raw)
    (seq / f"frame-{n:06d}.pose.txt").write_text("1 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n")


def write_sevenscenes(root: Path) -> None:
    raw = np.array([[1500, 0, 65535, 800]] * 3, dtype=np.uint16)  # (3, 4)
    for scene, train, test in (("chess", (1,), (2,)), ("heads", (2,), (1,))):
        (root / scene).mkdir(parents=True)
        (root / scene / "TrainSplit.txt").write_text(
            "".join(f"sequence{s}\r\n" for s in train))  # Windows line ends, as shipped
        (root / scene / "TestSplit.txt").write_text("".join(f"sequence{s}\n" for s in test))
        for s in (1, 2):
            for n in range(2 if s == 1 else 1):
                write_frame(root / scene / f"seq-{s:02d}", n, raw)


def test_sevenscenes_splits_keys_and_millimetres(tmp_path):
    write_sevenscenes(tmp_path)
    reader = READERS["sevenscenes"]
    assert reader.index(tmp_path, "train") == [
        "chess/seq-01/frame-000000", "chess/seq-01/frame-000001", "heads/seq-02/frame-000000"]
    assert reader.index(tmp_path, "test") == [
        "chess/seq-02/frame-000000", "heads/seq-01/frame-000000", "heads/seq-01/frame-000001"]
    sample = reader.read(tmp_path, "chess/seq-01/frame-000001")
    np.testing.assert_array_equal(sample.depth[0], np.array([1.5, np.nan, np.nan, 0.8],
                                                            np.float32))
    assert sample.valid_fraction == 0.5  # 0 and 65535 are both "no reading"
    assert sample.rgb.shape == (3, 4, 3) and sample.intrinsics is None  # 585/320/240: 640x480
    assert sample.source == ("chess/seq-01/frame-000001.color.png + "
                             "chess/seq-01/frame-000001.depth.png")
    # one scene folder as the root keeps keys "<scene>/seq-XX/frame-NNNNNN"
    assert reader.index(tmp_path / "heads", "train") == ["heads/seq-02/frame-000000"]
    assert reader.read(tmp_path / "heads", "heads/seq-02/frame-000000").depth.shape == (3, 4)


def test_sevenscenes_full_frames_get_the_kinect_intrinsics(tmp_path):
    seq = tmp_path / "fire" / "seq-01"
    write_frame(seq, 0, np.full((480, 640), 2000, np.uint16), colour_suffix=".jpg")
    (tmp_path / "fire" / "TrainSplit.txt").write_text("sequence1\n")
    sample = READERS["sevenscenes"].read(tmp_path, "fire/seq-01/frame-000000")
    assert sample.intrinsics == (585.0, 0.0, 320.0, 0.0, 585.0, 240.0, 0.0, 0.0, 1.0)
    assert sample.depth[0, 0] == np.float32(2.0)


@needs_real
def test_sevenscenes_reads_real_frames_as_the_real_bundle_does(tmp_path):
    bundle, seq = REAL / "sevenscenes_redkitchen", tmp_path / "redkitchen" / "seq-01"
    seq.mkdir(parents=True)
    for n, sid in enumerate(("0000", "0350")):  # real Kinect frames, 0 = no reading
        shutil.copy(bundle / "rgb" / f"{sid}.jpg", seq / f"frame-{n:06d}.color.jpg")
        shutil.copy(bundle / "depth" / f"{sid}.png", seq / f"frame-{n:06d}.depth.png")
    (tmp_path / "redkitchen" / "TestSplit.txt").write_text("sequence1\n")
    reader = READERS["sevenscenes"]
    keys = reader.index(tmp_path, "test")
    assert keys == ["redkitchen/seq-01/frame-000000", "redkitchen/seq-01/frame-000001"]
    for key, sid in zip(keys, ("0000", "0350"), strict=True):
        mine = reader.read(tmp_path, key)
        theirs = READERS["real-samples"].read(REAL, f"sevenscenes_redkitchen/{sid}")
        np.testing.assert_array_equal(mine.depth, theirs.depth)
        np.testing.assert_array_equal(mine.rgb, theirs.rgb)
        assert mine.intrinsics == theirs.intrinsics  # both 585/320/240 at 640x480


def test_sevenscenes_bad_input_names_the_file(tmp_path):
    write_sevenscenes(tmp_path)
    reader = READERS["sevenscenes"]
    split = tmp_path / "heads" / "TestSplit.txt"
    split.unlink()
    with pytest.raises(FileNotFoundError, match=f"{split}: 7-Scenes split file not found"):
        reader.index(tmp_path, "test")
    split.write_text("sequence1\nseq2\n")
    with pytest.raises(ValueError, match=f"{split}: line 2 is 'seq2'; expected 'sequenceN'"):
        reader.index(tmp_path, "test")
    split.write_text("sequence7\n")
    with pytest.raises(FileNotFoundError, match="heads/seq-07: 7-Scenes sequence folder not"):
        reader.index(tmp_path, "test")
    depth = tmp_path / "chess" / "seq-01" / "frame-000001.depth.png"
    Image.fromarray(np.full((3, 4), 9, np.uint8)).save(depth)  # 8-bit where uint16 mm belong
    with pytest.raises(ValueError, match=f"{depth}: depth PNG is mode L .*expected 16-bit"):
        reader.read(tmp_path, "chess/seq-01/frame-000001")
    depth.unlink()  # a colour frame without its depth partner
    with pytest.raises(ValueError, match=r"seq-01: every sample needs both files; only "
                                         r"\.color\.png: \['frame-000001'\]"):
        reader.index(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match=f"{depth}: depth PNG not found"):
        reader.read(tmp_path, "chess/seq-01/frame-000001")
    colour = tmp_path / "chess" / "seq-01" / "frame-000000.color.png"
    write_rgb(colour, 64, 64)
    truncate(colour)
    with pytest.raises(ValueError, match=f"{colour}: unreadable RGB image"):
        reader.read(tmp_path, "chess/seq-01/frame-000000")
    with pytest.raises(ValueError, match="key 'chess/frame-000000'; expected '<scene>/seq-XX/"):
        reader.read(tmp_path, "chess/frame-000000")
    with pytest.raises(ValueError, match="texas-3dfrd key 'rgb/'; expected '<id>', 'rgb/<id>'"):
        READERS["texas-3dfrd"].read(tmp_path, "rgb/")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: no 7-Scenes scene folders"):
        reader.index(tmp_path / "empty", "train")


# ---------------------------------------------------------------- Texas-3DFRD

def texas_stem(image: int, subject: int) -> str:
    return f"clean_{image:04d}_{subject:03d}_20050913{image:06d}"


def write_face(folder: Path, image: int, subject: int, raw: np.ndarray,
               portrait: bool = True, range_image: bool = True) -> str:
    stem = texas_stem(image, subject)
    if portrait:
        write_rgb(folder / f"{stem}_Portrait.png", *raw.shape, seed=image)
    if range_image:
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(raw).save(folder / f"{stem}_Range.png")
    return stem


def write_texas(root: Path, subjects: int = 15) -> Path:
    folder = root / "PreprocessedImages"
    raw = np.array([[0, 255, 51, 102]] * 2, np.uint8)  # (2, 4): background, near, 0.2, 0.4
    for s in range(1, subjects + 1):
        write_face(folder, 10 * s, s, raw)
    write_face(folder, 21, 2, raw)  # a second expression of individual 002
    return folder


def test_texas_splits_individuals_as_paper_004s_code(tmp_path):
    write_texas(tmp_path)
    reader = READERS["texas-3dfrd"]
    # 15 individuals 001…015: [::7] → 001, 008, 015 held out; the other 12 alternate
    assert reader.index(tmp_path, "eval") == [texas_stem(10 * s, s) for s in (1, 8, 15)]
    rgb_subjects = [2, 2, 4, 6, 9, 11, 13]
    assert reader.index(tmp_path, "train_rgb") == sorted(
        f"rgb/{texas_stem(i, s)}" for i, s in zip([20, 21, 40, 60, 90, 110, 130], rgb_subjects,
                                                   strict=True))
    assert reader.index(tmp_path, "train_depth") == [
        f"depth/{texas_stem(10 * s, s)}" for s in (3, 5, 7, 10, 12, 14)]
    pair = reader.read(tmp_path, texas_stem(80, 8))
    np.testing.assert_array_equal(pair.depth[0], np.array([0, 1, 0.2, 0.4], np.float32))
    assert pair.rgb.shape == (2, 4, 3) and pair.valid_fraction == 1.0  # background is a value
    assert pair.source == (f"PreprocessedImages/{texas_stem(80, 8)}_Portrait.png + "
                           f"PreprocessedImages/{texas_stem(80, 8)}_Range.png")
    only_rgb = reader.read(tmp_path, f"rgb/{texas_stem(20, 2)}")
    assert only_rgb.depth is None and only_rgb.rgb.shape == (2, 4, 3)
    assert reader.read(tmp_path, f"depth/{texas_stem(30, 3)}").rgb is None


def test_texas_subject_split_of_118_individuals():
    ids = [f"{i:03d}" for i in range(1, 119)]
    splits = texas_subject_splits(ids[::-1])  # order given does not matter
    assert len(splits["eval"]) == 17  # the code's objects[::7]; the paper text says 16
    assert (len(splits["train_rgb"]), len(splits["train_depth"])) == (51, 50)
    assert splits["eval"][:3] == ["001", "008", "015"]
    every = splits["eval"] + splits["train_rgb"] + splits["train_depth"]
    assert sorted(every) == ids  # each individual in exactly one split


def test_texas_sixteen_bit_range_and_root_without_subfolder(tmp_path):
    stem = texas_stem(1, 1)
    write_rgb(tmp_path / f"{stem}_Portrait.png", 1, 3)
    Image.fromarray(np.array([[0, 65535, 13107]], np.uint16)).save(tmp_path / f"{stem}_Range.png")
    sample = READERS["texas-3dfrd"].read(tmp_path, stem)
    np.testing.assert_array_equal(sample.depth, np.array([[0, 1, 0.2]], np.float32))


def test_texas_bad_input_names_the_file(tmp_path):
    folder = write_texas(tmp_path)
    reader = READERS["texas-3dfrd"]
    held_out = texas_stem(80, 8)
    (folder / f"{held_out}_Range.png").unlink()  # an evaluation portrait without its range
    with pytest.raises(ValueError, match=f"incomplete: \\['{held_out}'\\]"):
        reader.index(tmp_path, "eval")
    with pytest.raises(FileNotFoundError, match=f"no Texas-3DFRD range image {held_out}_Range"):
        reader.read(tmp_path, held_out)
    colour_range = folder / f"{texas_stem(10, 1)}_Range.png"
    write_rgb(colour_range, 2, 4)
    with pytest.raises(ValueError, match=f"{colour_range}: range image is mode RGB; expected "
                                         f"8-bit"):
        reader.read(tmp_path, texas_stem(10, 1))
    portrait = folder / f"{texas_stem(150, 15)}_Portrait.png"
    write_rgb(portrait, 64, 64)
    truncate(portrait)
    with pytest.raises(ValueError, match=f"{portrait}: unreadable RGB image"):
        reader.read(tmp_path, f"rgb/{texas_stem(150, 15)}")
    write_rgb(portrait, 3, 4)  # 3x4 portrait, 2x4 range
    with pytest.raises(ValueError, match="is 3x4 but .*_Range.png is 2x4"):
        reader.read(tmp_path, texas_stem(150, 15))
    odd = folder / "face_Portrait.png"
    write_rgb(odd, 2, 2)
    with pytest.raises(ValueError, match=f"{odd}: name does not follow <prefix>_<image>_"):
        reader.index(tmp_path, "train_rgb")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: no Texas-3DFRD images"):
        reader.index(tmp_path / "empty", "eval")


# ---------------------------------------------------------------- SURREAL

GREY = 30  # frame k of a test video is uniform grey 30·(k + 1)


def write_video(path: Path, count: int, size: tuple[int, int] = (32, 32)) -> None:
    av = pytest.importorskip("av")
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        for k in range(count):
            frame = np.full((*size, 3), GREY * (k + 1), np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())


BODY = [2.0, 2.05, 2.1, 2.1, 2.2, 2.3, 2.4, 2.6, 3.0]  # median 2.2


def surreal_depth(size: tuple[int, int] = (32, 32), shift: float = 0.0) -> np.ndarray:
    depth = np.full(size, 1e10, np.float32)  # background, as SURREAL writes it
    depth[10, 10:19] = np.array(BODY) + shift
    return depth


def write_clip(root: Path, clip: str, count: int = 6) -> None:
    write_video(root / f"{clip}.mp4", count)
    write_mat(root / f"{clip}_depth.mat",
              **{f"depth_{k + 1}": surreal_depth(shift=k) for k in range(count)})


def write_surreal(root: Path) -> None:
    for clip in ("train/run0/01_01/01_01_c0001", "train/run0/01_01/01_01_c0002",
                 "test/run1/02_01/02_01_c0001"):
        write_clip(root, clip)


def test_disjoint_frames_spread_evenly():
    assert disjoint_frames(100, 20) == (list(range(1, 100, 5)), list(range(3, 100, 5)))
    assert disjoint_frames(6, 2) == ([0, 3], [2, 5])
    assert disjoint_frames(5, 20) == ([0, 3], [1, 4])  # at most half of the frames each
    assert disjoint_frames(1, 20) == ([], [])


def test_surreal_splits_and_frames(tmp_path):
    write_surreal(tmp_path)
    reader = READERS["surreal"]
    clip1, clip2 = "train/run0/01_01/01_01_c0001", "train/run0/01_01/01_01_c0002"
    # T = 6 < 2·20: every frame, alternating between the two modalities
    assert reader.index(tmp_path, "train_rgb") == [f"rgb/{c}/{f:03d}" for c in (clip1, clip2)
                                                   for f in (0, 2, 4)]
    assert reader.index(tmp_path, "train_depth") == [f"depth/{c}/{f:03d}" for c in (clip1, clip2)
                                                     for f in (1, 3, 5)]
    assert reader.index(tmp_path, "eval") == ["test/run1/02_01/02_01_c0001/003"]  # T // 2
    few = surreal_reader(SurrealOptions(train_clips=1, frames_per_clip=2))
    assert few.index(tmp_path, "train_rgb") == [f"rgb/{clip2}/000", f"rgb/{clip2}/003"]
    assert few.index(tmp_path, "train_depth") == [f"depth/{clip2}/002", f"depth/{clip2}/005"]


def test_surreal_rgb_frames_and_relative_depth(tmp_path):
    write_surreal(tmp_path)
    reader = READERS["surreal"]
    rgb = reader.read(tmp_path, "rgb/train/run0/01_01/01_01_c0002/004")
    assert rgb.depth is None and rgb.rgb.shape == (32, 32, 3)
    assert abs(rgb.rgb.mean() - GREY * 5) < 3  # frame 4 of the video, not another one
    pair = reader.read(tmp_path, "test/run1/02_01/02_01_c0001/003")
    assert abs(pair.rgb.mean() - GREY * 4) < 3
    # frame 3 = depth_4: body BODY + 3 m, median 5.2; minus it, clipped to ±0.4725
    expected = [-0.2, -0.15, -0.1, -0.1, 0.0, 0.1, 0.2, 0.4, 0.4725]
    np.testing.assert_allclose(pair.depth[10, 10:19], expected, atol=1e-6)
    assert (np.delete(pair.depth.ravel(), np.arange(10 * 32 + 10, 10 * 32 + 19)) == -0.4725).all()
    assert pair.valid_fraction == 1.0 and pair.intrinsics is None  # 600/160/120: 320x240
    assert pair.source == ("test/run1/02_01/02_01_c0001.mp4 + "
                           "test/run1/02_01/02_01_c0001_depth.mat")
    metres = surreal_reader(SurrealOptions(relative=False)).read(
        tmp_path, "depth/train/run0/01_01/01_01_c0001/001")
    np.testing.assert_allclose(metres.depth[10, 10:19], np.array(BODY) + 1, atol=1e-6)
    assert np.isnan(metres.depth).sum() == 32 * 32 - 9  # background → NaN


def test_surreal_depth_only_full_frame_and_frame_without_body(tmp_path):
    mat = tmp_path / "train" / "run0" / "s" / "s_c0001_depth.mat"
    empty = np.full((240, 320), 1e10, np.float32)
    write_mat(mat, depth_1=surreal_depth((240, 320)), depth_2=empty)
    reader = READERS["surreal"]
    sample = reader.read(tmp_path, "depth/train/run0/s/s_c0001/000")
    assert sample.intrinsics == (600.0, 0.0, 160.0, 0.0, 600.0, 120.0, 0.0, 0.0, 1.0)
    nobody = reader.read(tmp_path, "depth/train/run0/s/s_c0001/001")
    assert nobody.valid_fraction == 0.0  # nothing to centre on: preparation skips it


def test_surreal_bad_input_names_the_file(tmp_path, monkeypatch):
    write_surreal(tmp_path)
    reader, clip = READERS["surreal"], tmp_path / "train/run0/01_01/01_01_c0001"
    mat, video = Path(f"{clip}_depth.mat"), Path(f"{clip}.mp4")
    write_mat(mat, depth_1=surreal_depth(), depth_3=surreal_depth())
    with pytest.raises(ValueError, match=r"depth variables \[1, 3\]…; expected depth_1 … depth_T"):
        reader.index(tmp_path, "train_rgb")
    bad = surreal_depth()
    bad[0, 0] = np.inf
    write_mat(mat, depth_1=bad)
    with pytest.raises(ValueError, match=f"{mat}: depth_1 holds NaN, inf or negative"):
        reader.read(tmp_path, "depth/train/run0/01_01/01_01_c0001/000")
    with pytest.raises(ValueError, match=f"{mat}: no variable 'depth_2'"):
        reader.read(tmp_path, "depth/train/run0/01_01/01_01_c0001/001")
    mat.write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(ValueError, match=f"{mat}: unreadable SURREAL depth .mat"):
        reader.index(tmp_path, "train_depth")
    with pytest.raises(ValueError, match=f"{mat}: unreadable SURREAL depth .mat"):
        reader.read(tmp_path, "depth/train/run0/01_01/01_01_c0001/000")
    mat.unlink()  # a video without its depth partner
    with pytest.raises(FileNotFoundError, match=f"{mat}: SURREAL depth .mat not found"):
        reader.index(tmp_path, "train_rgb")
    with pytest.raises(ValueError, match=f"{video}: has 6 frames; frame 6 \\(0-based\\)"):
        reader.read(tmp_path, "rgb/train/run0/01_01/01_01_c0001/006")
    truncate(video)
    with pytest.raises(ValueError, match=f"{video}: unreadable video"):
        reader.read(tmp_path, "rgb/train/run0/01_01/01_01_c0001/000")
    write_mat(Path(f"{clip}_depth.mat"), depth_1=surreal_depth((24, 32)))
    write_video(video, 1)
    with pytest.raises(ValueError, match="01_01_c0001.mp4 is 32x32 but .*_depth.mat is 24x32"):
        reader.read(tmp_path, "train/run0/01_01/01_01_c0001/000")
    formats._decoded.cache_clear()
    monkeypatch.setitem(sys.modules, "av", None)  # PyAV not installed
    with pytest.raises(ImportError, match=r"needs PyAV: pip install 'depthlab\[video\]'"):
        reader.read(tmp_path, "rgb/train/run0/01_01/01_01_c0001/000")
    shutil.rmtree(tmp_path / "test" / "run1")
    with pytest.raises(ValueError, match="test: no SURREAL clips; expected run\\*/<sequence>/"):
        reader.index(tmp_path, "eval")
    with pytest.raises(FileNotFoundError, match="val: SURREAL val folder not found"):
        formats._surreal_clips(tmp_path, "val")
    with pytest.raises(ValueError, match="SurrealOptions.frames_per_clip = 0"):
        SurrealOptions(frames_per_clip=0)


# ---------------------------------------------------------------- folders in other units

def test_folder_unit_readers_and_entry_versions(tmp_path):
    write_rgb(tmp_path / "rgb" / "a.png", 2, 2)
    write_depth(tmp_path / "depth" / "a.png", np.array([[0, 3], [65535, 1000]]))
    depth = {unit: READERS[formats.FOLDER_READERS[unit]].read(tmp_path, "a").depth
             for unit in UNITS}
    np.testing.assert_allclose(depth["m"], [[np.nan, 3.0], [65535.0, 1000.0]])
    np.testing.assert_allclose(depth["mm"], [[np.nan, 3e-3], [65.535, 1.0]])
    np.testing.assert_allclose(depth["um"], [[np.nan, 3e-6], [0.065535, 1e-3]])
    np.testing.assert_allclose(depth["relative"], [[np.nan, 3 / 65535], [1.0, 1000 / 65535]])
    folder = load_entry("folder")
    assert with_folder_unit(folder, "mm") is folder
    metres = with_folder_unit(folder, "m")
    assert (metres.reader, metres.version, metres.depth_unit) == ("folder-m", "1-m", "m")
    assert with_folder_unit(folder, "relative").depth_range == (0.0, 1.0)
    with pytest.raises(ValueError, match="--unit applies to datasets read by the folder reader; "
                                         "'make3d' is read by 'make3d'"):
        with_folder_unit(load_entry("make3d"), "m")
    with pytest.raises(ValueError, match="unit 'inch'; expected one of m, mm, um, relative"):
        with_folder_unit(folder, "inch")


def test_prepare_folder_with_a_unit_flag(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DEPTHLAB_DATA", str(tmp_path / "data"))
    source = tmp_path / "mine"
    for stem, value in (("a", 2), ("b", 5)):
        write_rgb(source / "rgb" / f"{stem}.png", 4, 4)
        write_depth(source / "depth" / f"{stem}.png", np.full((4, 4), value))
    assert main(["data", "prepare", "folder", "--source", str(source), "--unit", "m"]) == 0
    in_metres = Path(capsys.readouterr().out.strip())
    assert in_metres.parent.name == "v1-m"
    paired = load_split(in_metres, "paired")
    assert paired.ids == ["a", "b"] and (paired.depth[1] == 5.0).all()
    assert load_split(in_metres, "depth").ids == ["depth/a", "depth/b"]
    assert main(["data", "verify", "folder", "--unit", "m"]) == 0
    assert f"ok: {in_metres}" in capsys.readouterr().out
    assert main(["data", "prepare", "folder", "--source", str(source)]) == 0
    in_mm = Path(capsys.readouterr().out.strip())
    assert in_mm.parent.name == "v1" and (load_split(in_mm, "paired").depth[1] == 5e-3).all()
    with pytest.raises(SystemExit):  # argparse refuses a unit not in catalog.UNITS
        main(["data", "prepare", "folder", "--unit", "inch"])
    assert "invalid choice: 'inch'" in capsys.readouterr().err
    assert main(["data", "prepare", "make3d", "--source", str(source), "--unit", "m"]) == 2
    assert "--unit applies to datasets read by the folder reader" in capsys.readouterr().err


def test_prepare_unpaired_folder_needs_no_matching_stems(tmp_path):
    from depthlab.data.shards import prepare

    source = tmp_path / "mine"
    write_rgb(source / "rgb" / "photo.jpg", 4, 4)
    write_depth(source / "depth" / "scan.png", np.full((4, 4), 1500))
    path = prepare("folder-unpaired", data_dir=tmp_path / "data", progress=False, source=source)
    assert load_split(path, "rgb").ids == ["rgb/photo"]
    np.testing.assert_allclose(load_split(path, "depth").depth, 1.5)
