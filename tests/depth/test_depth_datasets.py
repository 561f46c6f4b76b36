"""Readers on files written by the test in exactly the NYUd v2 / KITTI Eigen formats, and bad input."""
import numpy as np
import pytest
import torch
from PIL import Image

from depth_fixtures import make_kitti, make_nyud, write_depth_png
from suites.depth.datasets import (KittiDepth, NYUDepth, eigen_mask, garg_mask, kb_crop_box, read_depth_png)
from suites.images import DataError

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def nyud(tmp_path_factory):
    return make_nyud(tmp_path_factory.mktemp("nyu") / "nyu", n_train=6, n_test=3)


def test_nyud_reader_reads_lists_depth_in_metres_and_items(nyud):
    train, test = NYUDepth(nyud, "train"), NYUDepth(nyud, "test")
    assert len(train) == 6 and len(test) == 3
    s = train.samples[0]
    assert s.image == "scene_0000/rgb_00000.jpg" and s.depth == "scene_0000/sync_depth_00000.png"  # '/' stripped
    assert s.focal == pytest.approx(518.8579)
    raw = np.asarray(Image.open(nyud / s.depth))
    assert raw.dtype == np.uint16
    gt = train.gt(0)
    np.testing.assert_array_equal(gt, raw.astype(np.float32) / 1000.0)
    assert (gt == 0).any() and gt.max() <= 10.0                      # 0 = no measurement kept as 0
    ds = train.with_input((32, 48), MEAN, STD)
    x, d = ds[0]
    assert x.shape == (3, 32, 48) and d.shape == (1, 32, 48)
    assert "resize32x48" in ds.transform_id and ds.transform_id != train.with_input((48, 64), MEAN, STD).transform_id
    x2, empty = ds.images_only()[0]
    torch.testing.assert_close(x, x2)
    assert empty.numel() == 0                                         # the feature cache reads no depth
    assert train.fingerprint() == NYUDepth(nyud, "train").fingerprint() != test.fingerprint()


def test_eigen_crop_and_nyu_train_crop_scale():
    m = eigen_mask((480, 640))
    rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
    assert (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1) == (45, 471, 41, 601)
    m = eigen_mask((240, 320))
    rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
    assert (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1) == (22, 235, 20, 300)


def test_kitti_reader_none_depth_dirs_and_scale(tmp_path):
    root = make_kitti(tmp_path / "kitti", n_train=3, n_test=4, rgb_dir="input", depth_dir="gt_depth", no_gt=(1, 3))
    test = KittiDepth(root, "test", rgb_dir="input", depth_dir="gt_depth")
    assert test.has_gt.tolist() == [True, False, True, False]
    assert (test.gt(1) == 0).all()
    raw = np.asarray(Image.open(root / "gt_depth" / test.samples[0].depth)).astype(np.float32) / 256.0
    top, left, h, w = kb_crop_box(raw.shape)
    np.testing.assert_array_equal(test.gt(0), raw[top:top + h, left:left + w])
    # BTS list names are found too
    (root / "kitti_eigen_train.txt").rename(root / "eigen_train_files_with_gt.txt")
    assert len(KittiDepth(root, "train", rgb_dir="input", depth_dir="gt_depth")) == 3
    with pytest.raises(DataError, match="does not exist"):   # depth paths are relative to depth_dir
        KittiDepth(root, "test", rgb_dir="input")


def test_kitti_kb_crop_and_garg_crop_at_full_size(tmp_path):
    root = tmp_path / "k"
    rng = np.random.default_rng(0)
    img = "2011_09_26/d/image_02/data/0000000005.png"
    dep = "d/proj_depth/groundtruth/image_02/0000000005.png"
    (root / img).parent.mkdir(parents=True)
    Image.fromarray(rng.integers(0, 255, (375, 1242, 3), dtype=np.uint8)).save(root / img)
    depth = rng.uniform(1, 79, (375, 1242)).astype(np.float32)
    write_depth_png(root / dep, depth, 256.0)
    (root / "kitti_eigen_test.txt").write_text(f"{img} {dep} 721.5377\n")
    ds = KittiDepth(root, "test")
    assert kb_crop_box((375, 1242)) == (23, 13, 352, 1216)
    assert ds.native_hw(0) == (352, 1216)
    np.testing.assert_allclose(ds.gt(0), np.round(depth * 256)[23:, 13:1229] / 256.0)
    m = ds.eval_mask(0)
    rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
    # Garg crop on the full frame: rows 153:371, cols 44:1197 -> shifted by the KB offsets (23, 13)
    assert (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1) == (153 - 23, 371 - 23, 44 - 13, 1197 - 13)
    assert garg_mask((375, 1242), None)[153, 44] and not garg_mask((375, 1242), None)[152, 44]


def test_bad_depth_png_8bit_and_wrong_size(tmp_path):
    root = make_nyud(tmp_path / "nyu", n_train=2, n_test=2)
    ds = NYUDepth(root, "test")
    bad = root / ds.samples[0].depth
    Image.fromarray(np.full((48, 64), 7, np.uint8)).save(bad)
    with pytest.raises(DataError, match=f"depth map '{bad}' is a 8-bit grayscale PNG"):
        ds.gt(0)
    with pytest.raises(DataError, match="8-bit"):
        ds.with_input((48, 64), MEAN, STD)[0]
    write_depth_png(bad, np.ones((40, 64), np.float32), 1000.0)
    with pytest.raises(DataError, match=f"depth map '{bad}' is 64x40 but its RGB image is 64x48"):
        ds.gt(0)
    with pytest.raises(DataError, match="is not a PNG"):
        bad.write_bytes(b"junk" * 10)
        read_depth_png(bad, 1000.0)


def test_bad_split_files(tmp_path):
    root = make_nyud(tmp_path / "nyu", n_train=2, n_test=2)
    listing = root / "nyu_test.txt"
    lines = listing.read_text().splitlines()
    listing.write_text(lines[0] + "\nmissing/rgb_1.jpg " + lines[1].split()[1] + " 518.8579\n")
    with pytest.raises(DataError, match=f"nyu_test.txt:2: image '{root / 'missing/rgb_1.jpg'}' does not exist"):
        NYUDepth(root, "test")
    listing.write_text(lines[0] + " extra\n")
    with pytest.raises(DataError, match="nyu_test.txt:1: expected 'image_relpath depth_relpath focal'"):
        NYUDepth(root, "test")
    listing.write_text(lines[0].split()[0] + " None 518.8\n")
    with pytest.raises(DataError, match="'None' is not allowed"):
        NYUDepth(root, "test")
    (root / "nyu_train.txt").unlink()
    with pytest.raises(DataError, match="nyu_train.txt' does not exist"):
        NYUDepth(root, "train")


def test_items_without_with_input_are_native_and_imagenet_normalised(nyud):
    ds = NYUDepth(nyud, "train")
    x, d = ds[0]
    assert x.shape == (3, 48, 64) and d.shape == (1, 48, 64) and ds.transform_id == "nyu-full-native-imagenet"
    np.testing.assert_array_equal(d[0].numpy(), ds.gt(0))
