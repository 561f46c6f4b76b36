"""Readers on tiny datasets written in exactly the real on-disk layouts, plus bad-input cases."""
import csv
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from suites.retrieval.datasets import (DatasetFormatError, load_amstertime, load_met, load_revisited,
                                       make_transform, patch_multiple_size)
from suites.retrieval.metrics import evaluate_revisitop
from harness.safe_pickle import UnsafePickleError
from suites.retrieval.search import rank_gallery


def _img(path: Path, size=(40, 30), color=(10, 200, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


# ----------------------------------------------------------------------------------------------------
# Revisited Oxford / Paris
# ----------------------------------------------------------------------------------------------------
def _gnd(**over):
    gnd = {
        "imlist": [f"all_souls_{i:06d}" for i in range(6)],
        "qimlist": ["all_souls_000013", "radcliffe_camera_000519"],
        "gnd": [
            {"bbx": np.array([5.0, 4.0, 25.4, 20.6]), "easy": np.array([0, 1]), "hard": np.array([2]),
             "junk": np.array([3])},
            {"bbx": np.array([0.0, 0.0, 100.0, 100.0]), "easy": np.array([4]), "hard": np.array([], dtype=np.int64),
             "junk": np.array([5, 0])},
        ],
    }
    gnd.update(over)
    return gnd


def _write_revisited(root: Path, gnd=None, name="roxford5k", protocol=4, skip=()):
    gnd = _gnd() if gnd is None else gnd
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"gnd_{name}.pkl", "wb") as f:
        pickle.dump(gnd, f, protocol=protocol)
    for i, n in enumerate(list(gnd.get("imlist", [])) + list(gnd.get("qimlist", []))):
        if n not in skip:
            _img(root / "jpg" / f"{n}.jpg", color=(i * 30 % 255, 50, 90))
    return root


@pytest.mark.parametrize("protocol", [2, 4])
def test_revisited_reads_real_layout(tmp_path, protocol):
    root = _write_revisited(tmp_path / "roxford5k", protocol=protocol)
    _img(root / "jpg" / "unlisted_extra.jpg")  # extra files are ignored (Paris has dropped images)
    data = load_revisited(root)
    assert data.name == "roxford5k" and len(data.imlist) == 6 and len(data.gnd) == 2
    db, q = data.database(), data.queries()
    assert len(db) == 6 and len(q) == 2
    img, idx = q[0]
    # bbx (5, 4, 25.4, 20.6) -> PIL rounds to (5, 4, 25, 21): 20 x 17
    assert isinstance(img, Image.Image) and img.size == (20, 17) and idx == 0
    # bbx beyond the 40x30 image is clipped to it (MATLAB reference behaviour)
    assert q[1][0].size == (40, 30)
    assert db[3][0].size == (40, 30) and db[3][1] == 3
    prot = data.protocol("medium")
    assert set(prot[0]["ok"]) == {0, 1, 2} and set(prot[0]["junk"]) == {3}
    # fingerprint: stable, sensitive to files and to the ground truth
    fp = data.fingerprint()
    assert fp == load_revisited(root).fingerprint() and len(fp) == 16
    assert db.fingerprint() != q.fingerprint()
    _img(root / "jpg" / "all_souls_000002.jpg", size=(41, 30))           # one file changes size
    fp2 = load_revisited(root).fingerprint()
    assert fp2 != fp
    g = _gnd()
    g["gnd"][0]["junk"] = np.array([3, 4])                                # ground truth changes
    with open(root / "gnd_roxford5k.pkl", "wb") as f:
        pickle.dump(g, f)
    assert load_revisited(root).fingerprint() not in (fp, fp2)


def test_revisited_transform_yields_tensors(tmp_path):
    data = load_revisited(_write_revisited(tmp_path / "r"))
    tf, tid = make_transform(224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    q = data.queries(tf, tid)
    x, i = q[0]
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32 and q.transform_id == tid


def test_revisited_end_to_end_ranking(tmp_path):
    """Reader + search + metric on hand-made features: every query ranks its positives first."""
    data = load_revisited(_write_revisited(tmp_path / "r"))
    g = np.eye(6, dtype=np.float32)
    g[1] = g[0] * 0.9 + g[1] * 0.1     # db 1 close to db 0
    q = np.stack([g[0] + 0.5 * g[2], g[4]])
    ranks = rank_gallery(q, g)
    out = evaluate_revisitop(ranks, data.gnd_dicts())
    # q0 medium: ok {0,1,2} ranked 0, 1, 2 -> AP 1; q1: ok {4} first -> AP 1
    assert out["mAP.M"] == pytest.approx(1.0)


def test_revisited_missing_keys(tmp_path):
    g = _gnd()
    del g["qimlist"]
    root = _write_revisited(tmp_path / "r", g)
    with pytest.raises(DatasetFormatError, match=r"gnd_roxford5k.pkl: missing key\(s\) \['qimlist'\]"):
        load_revisited(root)
    g = _gnd()
    del g["gnd"][1]["junk"]
    with pytest.raises(DatasetFormatError, match=r"gnd\[1\] \(query 'radcliffe_camera_000519'\) lacks key\(s\) \['junk'\]"):
        load_revisited(_write_revisited(tmp_path / "r2", g))


def test_revisited_missing_images_listed(tmp_path):
    root = _write_revisited(tmp_path / "r", skip=("all_souls_000001", "all_souls_000004", "radcliffe_camera_000519"))
    with pytest.raises(DatasetFormatError) as e:
        load_revisited(root)
    msg = str(e.value)
    assert "2 of 6 database images" in msg and "all_souls_000001.jpg" in msg and "all_souls_000004.jpg" in msg
    assert "1 of 2 query images" in msg and "radcliffe_camera_000519.jpg" in msg


@pytest.mark.parametrize("bbx", [[10, 10, 10, 20], [10, 20, 30, 5], [], [1, 2, 3], [0, 0, float("nan"), 4]])
def test_revisited_bad_bbx_names_query(tmp_path, bbx):
    g = _gnd()
    g["gnd"][1]["bbx"] = np.array(bbx, dtype=np.float64)
    with pytest.raises(DatasetFormatError, match="radcliffe_camera_000519"):
        load_revisited(_write_revisited(tmp_path / "r", g))


def test_revisited_bbx_outside_image_fails_on_read(tmp_path):
    g = _gnd()
    g["gnd"][0]["bbx"] = np.array([100.0, 100.0, 200.0, 200.0])
    data = load_revisited(_write_revisited(tmp_path / "r", g))
    with pytest.raises(DatasetFormatError, match="all_souls_000013.*leaves nothing"):
        data.queries()[0]


def test_revisited_bad_indices_and_lengths(tmp_path):
    g = _gnd()
    g["gnd"][0]["easy"] = np.array([0, 6])
    with pytest.raises(DatasetFormatError, match=r"'easy' has indices outside the database of 6 images: 6"):
        load_revisited(_write_revisited(tmp_path / "r", g))
    g = _gnd(qimlist=["all_souls_000013"])
    with pytest.raises(DatasetFormatError, match="2 gnd entries but 1 query names"):
        load_revisited(_write_revisited(tmp_path / "r2", g))


def test_revisited_unsafe_pickle_refused(tmp_path):
    import os

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    root = _write_revisited(tmp_path / "r", _gnd(extra=Evil()))
    with pytest.raises(DatasetFormatError, match="gnd_roxford5k.pkl: refused global") as e:
        load_revisited(root)
    assert isinstance(e.value.__cause__, UnsafePickleError)


def test_revisited_name_detection(tmp_path):
    root = _write_revisited(tmp_path / "p", name="rparis6k")
    assert load_revisited(root).name == "rparis6k"
    with pytest.raises(DatasetFormatError, match="expected exactly one of"):
        load_revisited(tmp_path / "empty")


# ----------------------------------------------------------------------------------------------------
# Met
# ----------------------------------------------------------------------------------------------------
def _write_met(root: Path, skip=()):
    gt = root / "ground_truth"
    gt.mkdir(parents=True)
    db = [{"id": 11, "path": "MET/11/0.jpg"}, {"id": 11, "path": "MET/11/1.jpg"}, {"id": 42, "path": "MET/42/0.jpg"}]
    test = [{"path": "test_met/0.jpg", "MET_id": 42}, {"path": "test_noart/0.jpg"}]
    val = [{"path": "val_met/0.jpg", "MET_id": 11}, {"path": "val_other/3.jpg"}]
    (gt / "MET_database.json").write_text(json.dumps(db))
    (gt / "mini_MET_database.json").write_text(json.dumps(db[:1]))
    (gt / "testset.json").write_text(json.dumps(test))
    (gt / "valset.json").write_text(json.dumps(val))
    for e in db + test + val:
        if e["path"] not in skip:
            _img(root / "images" / e["path"], size=(50, 37))
    return root


def test_met_reads_real_layout(tmp_path):
    root = _write_met(tmp_path / "met")
    data = load_met(root)
    assert data.database.labels == [11, 11, 42] and data.n_classes == 2
    assert data.queries["test"].labels == [42, -1]
    assert data.queries["val"].labels == [11, -1]
    img, i = data.queries["test"][1]
    assert img.size == (50, 37) and i == 1
    assert load_met(root, mini=True).database.labels == [11]
    # the reference's way: info_dir given, images under dirname(info_dir)/images
    assert load_met(info_dir=root / "ground_truth").fingerprint() == data.fingerprint()
    tf, tid = make_transform(None, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), patch_size=14)
    x, _ = data.database.with_transform(tf, tid)[0]
    assert x.shape == (3, 42, 56)  # 37 -> 3 patches (42), 50 -> 4 patches (56)


def test_met_bad_inputs(tmp_path):
    root = _write_met(tmp_path / "met", skip=("MET/42/0.jpg",))
    with pytest.raises(DatasetFormatError, match=r"1 of 3 images listed in MET_database.json are missing: MET/42/0.jpg"):
        load_met(root)
    root = _write_met(tmp_path / "met2")
    (root / "ground_truth" / "MET_database.json").write_text(json.dumps([{"path": "MET/11/0.jpg"}]))
    with pytest.raises(DatasetFormatError, match=r"MET_database.json: entry 0 \('MET/11/0.jpg'\) has no 'id'"):
        load_met(root)
    (root / "ground_truth" / "testset.json").unlink()
    with pytest.raises(DatasetFormatError, match="testset.json: ground-truth file not found"):
        load_met(root, mini=True)


# ----------------------------------------------------------------------------------------------------
# AmsterTime
# ----------------------------------------------------------------------------------------------------
def _write_amstertime(root: Path, stems=("0000", "0001", "0003", "0007")):
    for s in stems:
        _img(root / "new" / f"{s}.png", size=(33, 21))
        _img(root / "old" / f"{s}.jpg", size=(20, 25))
    (root / "image_pairs.csv").write_text("new_url,old_url\n")
    return root


def test_amstertime_reads_real_layout(tmp_path):
    root = _write_amstertime(tmp_path / "at")
    data = load_amstertime(root)
    assert data.old.labels == data.new.labels == ["0000", "0001", "0003", "0007"]
    assert data.old[2][0].size == (20, 25) and data.new[2][0].size == (33, 21)
    task = tmp_path / "retrieval_test.csv"
    with open(task, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["query", "target"])
        w.writerows([["new/0003.png", "old"], ["new/0001.png", "old"], ["old/0003.jpg", "new"], ["old/0001.jpg", "new"]])
    sub = load_amstertime(root, task)
    assert sub.old.labels == sub.new.labels == ["0001", "0003"]
    assert sub.fingerprint() != data.fingerprint()


def test_amstertime_unpaired_and_bad_task(tmp_path):
    root = _write_amstertime(tmp_path / "at")
    _img(root / "old" / "0009.jpg")
    with pytest.raises(DatasetFormatError, match=r"1 archival image\(s\) without a street view: 0009.jpg"):
        load_amstertime(root)
    (root / "old" / "0009.jpg").unlink()
    task = tmp_path / "t.csv"
    task.write_text("query,target\nnew/0005.png,old\n")
    with pytest.raises(DatasetFormatError, match="lists 1 new/ image"):
        load_amstertime(root, task)
    task.write_text("image1,image2,y\n")
    with pytest.raises(DatasetFormatError, match="'query' column"):
        load_amstertime(root, task)
    with pytest.raises(DatasetFormatError, match="folder not found"):
        load_amstertime(tmp_path / "nothing")


def test_patch_multiple_size():
    assert patch_multiple_size(50, 37, 14) == (56, 42)
    assert patch_multiple_size(5, 500, 16) == (16, 496)


def test_truncated_and_corrupt_images(tmp_path):
    from suites.retrieval.datasets import load_rgb
    good = tmp_path / "a.jpg"
    noise = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(good, quality=95)
    data = good.read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 2])
    with pytest.warns(UserWarning, match="truncated"):
        assert load_rgb(tmp_path / "trunc.jpg").size == (64, 48)
    (tmp_path / "junk.jpg").write_bytes(b"not an image")
    with pytest.raises(DatasetFormatError, match="junk.jpg"):
        load_rgb(tmp_path / "junk.jpg")


def test_transform_is_picklable():
    tf, tid = make_transform(32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    tf2 = pickle.loads(pickle.dumps(tf))
    x = tf2(Image.new("RGB", (10, 20), (255, 0, 128)))
    assert x.shape == (3, 32, 32)
    assert torch.allclose(x[:, 0, 0], torch.tensor([2.0, -2.0, (128 / 255 - 0.5) / 0.25]), atol=1e-6)
    assert "32x32" in tid
