"""Readers on fixtures written in exactly the ADE20K and VOC layouts; bad input names the file / value."""
import shutil

import numpy as np
import pytest
from PIL import Image

from segmentation.seg_fixtures import make_ade20k, make_voc
from suites.images import DataError
from suites.segmentation.datasets import read_ade20k, read_voc
from suites.segmentation.protocol import load_pipeline


def _load(split, i=0):
    return split.build(load_pipeline(split.num_classes, split.dataset), indices=[i], test_mode=True)[0]


def test_ade20k_reader_pairs_images_and_reduces_zero_label(ade_root):
    tr, va = read_ade20k(ade_root, "training"), read_ade20k(ade_root, "validation")
    assert (len(tr), len(va)) == (8, 3) and tr.num_classes == 150 and tr.reduce_zero_label
    assert tr.items[0] == ("images/training/ADE_train_00000001.jpg", "annotations/training/ADE_train_00000001.png")
    raw = np.array(Image.open(ade_root / tr.items[0][1]))
    res = _load(tr)
    assert res["img"].shape == (48, 64, 3)
    expect = raw.astype(np.int64) - 1
    expect[raw == 0] = 255                                   # 0 = other -> ignored, 1..150 -> 0..149
    assert np.array_equal(res["gt_seg_map"], expect)
    assert tr.fingerprint() == read_ade20k(ade_root, "training").fingerprint() != va.fingerprint()


def test_voc_reader_plain_and_augmented_splits(tmp_path):
    plain = make_voc(tmp_path / "plain", n_train=3, n_val=2)
    tr = read_voc(plain, "train")
    assert tr.split == "train" and len(tr) == 3 and tr.items[0][1].startswith("SegmentationClass/")
    res = _load(tr)
    raw = np.array(Image.open(tr.root / tr.items[0][1]))     # palette PNG: indices, not colours
    assert Image.open(tr.root / tr.items[0][1]).mode == "P"
    assert np.array_equal(res["gt_seg_map"], raw) and 255 in raw and raw.max() == 255
    aug = make_voc(tmp_path / "aug", n_train=3, n_val=2, n_aug=4)
    tra = read_voc(aug, "train")
    assert tra.split == "trainaug" and len(tra) == 7 and tra.items[0][1].startswith("SegmentationClassAug/")
    assert read_voc(aug, "train", prefer_aug=False).split == "train"
    assert len(read_voc(aug, "val")) == 2 and read_voc(aug, "val").items[0][1].startswith("SegmentationClass/")
    # the VOC2012 folder itself is accepted as root too
    assert len(read_voc(aug / "VOCdevkit" / "VOC2012", "val")) == 2


def test_label_out_of_range_names_file_and_value(tmp_path):
    ade = make_ade20k(tmp_path / "ade", n_train=2, n_val=1)
    bad = ade / "annotations" / "training" / "ADE_train_00000002.png"
    lab = np.array(Image.open(bad))
    lab[3, 3] = 200
    Image.fromarray(lab).save(bad)
    with pytest.raises(DataError, match=rf"label map '{bad}' holds class index 200, outside 0\.\.150"):
        _load(read_ade20k(ade, "training"), 1)
    voc = make_voc(tmp_path / "voc", n_train=2, n_val=1)
    split = read_voc(voc, "train")
    p = split.root / split.items[0][1]
    lab = np.array(Image.open(p))
    lab[5, 5] = 21
    Image.fromarray(lab).save(p)
    with pytest.raises(DataError, match=rf"label map '{p}' holds class index 21, outside 0\.\.20"):
        _load(split)
    Image.fromarray(lab[:, :-1]).save(p)
    with pytest.raises(DataError, match=rf"label map '{p}' is 48x63 but image '.*2007_000001.jpg' is 48x64"):
        _load(split)


def test_split_file_naming_a_missing_image(tmp_path):
    voc = make_voc(tmp_path / "voc", n_train=3, n_val=1)
    base = voc / "VOCdevkit" / "VOC2012"
    (base / "JPEGImages" / "2007_000002.jpg").unlink()
    listing = base / "ImageSets" / "Segmentation" / "train.txt"
    with pytest.raises(DataError, match=rf"{listing}:2: names image '2007_000002' but "
                                        rf"'{base}/JPEGImages/2007_000002.jpg' does not exist"):
        read_voc(voc, "train")
    listing.write_text("2007_000001\n\n2007_000003\n")
    with pytest.raises(DataError, match=rf"{listing}:2: empty line"):
        read_voc(voc, "train")
    (base / "SegmentationClass" / "2007_000004.png").unlink()
    with pytest.raises(DataError, match=r"val.txt:1: image '2007_000004' has no label map"):
        read_voc(voc, "val")


def test_ade20k_missing_annotation_or_folder(tmp_path):
    ade = make_ade20k(tmp_path / "ade", n_train=2, n_val=1)
    (ade / "annotations" / "validation" / "ADE_val_00000001.png").unlink()
    with pytest.raises(DataError, match="ADE_val_00000001.jpg' has no label map"):
        read_ade20k(ade, "validation")
    shutil.rmtree(ade / "annotations" / "training")
    with pytest.raises(DataError, match="has no 'annotations/training/' folder"):
        read_ade20k(ade, "training")
    with pytest.raises(DataError, match="is not a Pascal VOC 2012 root"):
        read_voc(ade, "train")
