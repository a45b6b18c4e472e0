"""`depthlab data …`: prepare, show, verify and list as a user types them."""

import numpy as np
import pytest
from PIL import Image

from depthlab.cli import main


@pytest.fixture
def data(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPTHLAB_DATA", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "data"


def test_prepare_show_verify_list(data, tmp_path, capsys):
    assert main(["data", "prepare", "synthetic-surface"]) == 0
    assert main(["data", "show", "synthetic-surface", "--split", "eval", "--count", "4",
                 "--out", str(tmp_path / "sheet.png")]) == 0
    sheet = np.asarray(Image.open(tmp_path / "sheet.png").convert("RGB"))
    assert sheet.shape[0] > 200 and sheet.std() > 20  # 2 rows of pictures, not a blank page
    assert main(["data", "verify", "synthetic-surface"]) == 0
    assert "ok:" in capsys.readouterr().out
    main(["data", "list"])
    listed = capsys.readouterr().out
    assert "synthetic-surface" in listed and "files: nyu-v2-labeled ($DEPTHLAB_NYU)" in listed
    counts = {line.split()[0]: line.split()[1] for line in listed.splitlines()[1:]}
    # real-samples' `all` split is the union of its per-source splits: 84 frames, not 168
    assert counts["real-samples"] == "84" and counts["nyu-v2-labeled"] == "1449"
    assert counts["kitti-depth"] == "?"  # its split takes every file found


def test_show_of_an_unprepared_dataset_says_how_to_prepare_it(data, capsys):
    assert main(["data", "show", "synthetic-rooms"]) == 1
    assert "run `depthlab data prepare synthetic-rooms`" in capsys.readouterr().err


def test_prepare_without_source_files_says_what_to_set(data, capsys, monkeypatch):
    monkeypatch.delenv("DEPTHLAB_NYU", raising=False)
    assert main(["data", "prepare", "nyu-v2-labeled"]) == 2
    assert "pass --source PATH or set $DEPTHLAB_NYU" in capsys.readouterr().err
    assert main(["data", "prepare", "nyu-v2-labeled", "--source", str(data / "none")]) == 2
    assert "does not exist" in capsys.readouterr().err
