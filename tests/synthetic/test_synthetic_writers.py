"""Every writer's output has exactly the native layout, parsed back the way real readers do."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from suites.synthetic import categories as C
from suites.synthetic import writers as Wr
from suites.synthetic.world import list_views, load_view


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("formats")


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != Wr.STAMP}


def _digest(root: Path) -> dict[str, str]:
    return {f: hashlib.sha256((root / f).read_bytes()).hexdigest() for f in sorted(_files(root))}


def _scene_of_line(path: str) -> int:
    return int(path.split("scene_")[1][:5]) if "scene_" in path else int(path.split("drive_")[1][:4])


def test_split_is_by_scene():
    assert Wr.split_scenes(range(3), 0.25) == ([0, 1], [2])
    assert Wr.split_scenes(range(8), 0.25) == ([0, 1, 2, 3, 4, 5], [6, 7])
    assert Wr.split_scenes([0], 0.5) == ([0], [0])
    with pytest.raises(ValueError, match="val_fraction"):
        Wr.split_scenes(range(3), 1.5)


def test_nyud_layout(tiny_world, out):
    root = Wr.write_nyud(tiny_world, out / "nyu")
    train = (root / "nyu_train.txt").read_text().splitlines()
    test = (root / "nyu_test.txt").read_text().splitlines()
    assert len(train) == 4 and len(test) == 2
    assert {_scene_of_line(x) for x in train}.isdisjoint({_scene_of_line(x) for x in test})
    for line in train + test:
        img, dep, focal = line.split()
        assert img.endswith(".jpg") and "/rgb_" in img and "/sync_depth_" in dep and dep.endswith(".png")
        rgb = Image.open(root / img)
        assert rgb.format == "JPEG" and rgb.mode == "RGB"
        d = np.asarray(Image.open(root / dep))
        assert d.dtype == np.uint16
        s, v = _scene_of_line(img), int(img.split("rgb_")[1][:5])
        view = load_view(tiny_world, s, v)
        assert float(focal) == pytest.approx(view.K[0, 0], abs=1e-3)
        np.testing.assert_array_equal(d == 0, view.depth == 0)
        np.testing.assert_allclose(d[d > 0] / 1000.0, view.depth[d > 0], atol=5.1e-4)  # millimetres


def test_kitti_layout(tiny_world, out):
    root = Wr.write_kitti(tiny_world, out / "kitti", depth_scale=8.0, missing_gt_every=2)
    lines = (root / "eigen_train_files_with_gt.txt").read_text().splitlines()
    lines += (root / "eigen_test_files_with_gt.txt").read_text().splitlines()
    assert len(lines) == 6
    nones = 0
    for line in lines:
        rgb_rel, dep_rel, focal = line.split()
        assert "/image_02/data/" in rgb_rel and (root / rgb_rel).is_file()
        if dep_rel == "None":
            nones += 1
            continue
        assert "/proj_depth/groundtruth/image_02/" in dep_rel
        d = np.asarray(Image.open(root / dep_rel))
        assert d.dtype == np.uint16
        s, v = _scene_of_line(rgb_rel), int(Path(rgb_rel).stem)
        view = load_view(tiny_world, s, v)
        m = d > 0
        np.testing.assert_array_equal(m, view.depth > 0)
        np.testing.assert_allclose(d[m] / 256.0, 8.0 * view.depth[m], atol=1 / 256)
        assert (d[m] / 256.0).max() < 80.0  # KITTI's evaluation range
    assert nones == 3  # every 2nd frame of each scene


def test_ade20k_layout(tiny_world, out):
    root = Wr.write_ade20k(tiny_world, out / "ade")
    for split, n in (("training", 4), ("validation", 2)):
        imgs = sorted((root / "images" / split).glob("*.jpg"))
        anns = sorted((root / "annotations" / split).glob("*.png"))
        assert len(imgs) == len(anns) == n
        assert [p.stem for p in imgs] == [p.stem for p in anns]
        for a in anns:
            im = Image.open(a)
            assert im.mode == "L"
            arr = np.asarray(im)
            assert arr.max() <= C.NUM_CLASSES
    first = np.asarray(Image.open(root / "annotations/training/ADE_train_00000001.png"))
    np.testing.assert_array_equal(first, load_view(tiny_world, 0, 0).semantic)
    assert _files(root) == {f"{d}/{s}/{p.name}" for d in ("images", "annotations") for s in ("training", "validation")
                            for p in (root / d / s).iterdir()}


def test_voc_layout(tiny_world, out):
    root = Wr.write_voc(tiny_world, out / "voc", border=2) / "VOCdevkit" / "VOC2012"
    sets = {s: (root / "ImageSets/Segmentation" / f"{s}.txt").read_text().split() for s in ("train", "val", "trainval")}
    assert sets["trainval"] == sets["train"] + sets["val"] and len(sets["val"]) == 2
    nclass = len(C.voc_class_names())
    for name in sets["trainval"]:
        assert (root / "JPEGImages" / f"{name}.jpg").is_file()
        im = Image.open(root / "SegmentationClass" / f"{name}.png")
        assert im.mode == "P"
        arr = np.asarray(im)
        vals = set(np.unique(arr))
        assert vals <= set(range(nclass)) | {255}
        assert 255 in vals  # the border outline
        assert Image.open(root / "SegmentationObject" / f"{name}.png").mode == "P"
        s, v = int(name.split("_")[1]), int(name.split("_")[2])
        view = load_view(tiny_world, s, v)
        lut = C.voc_lut()
        ok = arr != 255
        np.testing.assert_array_equal(arr[ok], lut[view.semantic][ok])
    assert C.voc_palette()[:6] == [0, 0, 0, 128, 0, 0]  # the official colour map


def test_imagefolder_layout(tiny_world, out):
    root = Wr.write_imagefolder(tiny_world, out / "inet", min_pixels=60)
    train = {p.name for p in (root / "train").iterdir()}
    val = {p.name for p in (root / "val").iterdir()}
    assert train == val and train <= set(C.THING_NAMES)
    for p in root.rglob("*.JPEG"):
        im = Image.open(p)
        assert im.format == "JPEG" and im.size[0] == im.size[1]
    stamp = json.loads((root / Wr.STAMP).read_text())
    assert stamp["classes"] == sorted(train)


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):  # plain containers only, as the real readers should allow
        raise pickle.UnpicklingError(f"forbidden global {module}.{name}")


def test_roxford_layout(tiny_world, out):
    root = Wr.write_roxford(tiny_world, out / "rox", num_landmarks=2, easy_angle=100.0)
    raw = (root / "gnd_roxford5k.pkl").read_bytes()
    assert raw[0] == 0x80 and raw[1] >= 2  # pickle protocol >= 2
    g = _SafeUnpickler(io.BytesIO(raw)).load()
    assert set(g) == {"imlist", "qimlist", "gnd"}
    assert len(g["qimlist"]) == len(g["gnd"]) == 2
    assert set(g["imlist"]).isdisjoint(g["qimlist"])
    assert len(g["imlist"]) == 6 - 2
    for name in g["imlist"] + g["qimlist"]:
        assert (root / "jpg" / f"{name}.jpg").is_file()
    for q in g["gnd"]:
        assert set(q) == {"bbx", "easy", "hard", "junk"}
        assert len(q["bbx"]) == 4 and q["bbx"][0] < q["bbx"][2] and q["bbx"][1] < q["bbx"][3]
        assert all(isinstance(x, float) for x in q["bbx"])
        allpos = q["easy"] + q["hard"] + q["junk"]
        assert len(allpos) == len(set(allpos)) == 1  # 2 views per scene: one positive
        assert all(isinstance(i, int) and 0 <= i < len(g["imlist"]) for i in allpos)
    # positives are views of the query's scene, distractors never appear
    for qn, q in zip(g["qimlist"], g["gnd"]):
        for i in q["easy"] + q["hard"] + q["junk"]:
            assert g["imlist"][i].split("_v")[0] == qn.split("_v")[0]
    assert (root / "jpg").is_dir() and _files(root) == {"gnd_roxford5k.pkl"} | {f"jpg/{n}.jpg" for n in g["imlist"] + g["qimlist"]}


def test_scannet_layout_and_safe_load(tiny_world, out):
    import torch

    root = Wr.write_scannet(tiny_world, out / "scannet", voxel=0.03)
    pths = sorted((root / "scannet_3d").glob("*/*_vh_clean_2.pth"))
    assert [p.parent.name for p in pths] == ["train", "train", "val"]
    for p in pths:
        coords, colors, labels = torch.load(p, weights_only=True)
        n = coords.shape[0]
        assert coords.dtype == torch.float32 and coords.shape == (n, 3) and n > 100
        assert colors.dtype == torch.float32 and colors.shape == (n, 3)
        assert colors.min() >= -1 and colors.max() <= 1
        assert labels.shape == (n,) and not labels.is_floating_point()
        assert set(labels.unique().tolist()) <= set(range(20)) | {255}
        assert 1 in labels.tolist()  # floor
        inst = torch.load(p.with_name(p.name.replace("_vh_clean_2.pth", "_inst.pth")), weights_only=True)
        boxes = json.loads(p.with_name(p.name.replace("_vh_clean_2.pth", "_instances.json")).read_text())
        for o in boxes["objects"]:
            pts = coords[inst == o["instance_id"]].numpy()
            assert len(pts) == o["num_points"]
            if len(pts):
                tol = 0.03 * 1.8
                assert np.all(pts >= np.array(o["aabb"]["min"]) - tol) and np.all(pts <= np.array(o["aabb"]["max"]) + tol)
    scene = root / "scannet_2d" / "scene0001_00"
    # layout 2 adds ScanNet's raw-scene files (2D instance/label export, aggregation, label map)
    assert sorted(p.name for p in scene.iterdir()) == ["color", "depth", "instance-filt", "intrinsic", "label-filt",
                                                       "pose", "scene0001_00.aggregation.json"]
    pose = np.loadtxt(scene / "pose" / "1.txt")
    view = load_view(tiny_world, 1, 1)
    np.testing.assert_allclose(pose, view.cam_to_world, atol=1e-7)
    d = np.asarray(Image.open(scene / "depth" / "1.png"))
    assert d.dtype == np.uint16
    np.testing.assert_allclose(d[d > 0] / 1000.0, view.depth[d > 0], atol=5.1e-4)
    K = np.loadtxt(scene / "intrinsic" / "intrinsic_depth.txt")
    np.testing.assert_allclose(K[:3, :3], view.K, atol=1e-5)
    assert Image.open(scene / "color" / "1.jpg").format == "JPEG"
    inst = np.asarray(Image.open(scene / "instance-filt" / "1.png"))
    assert inst.dtype == np.uint8 and np.array_equal(inst, view.instance)      # 1-based ids, 0 = unannotated
    lab = np.asarray(Image.open(scene / "label-filt" / "1.png"))
    assert lab.dtype == np.uint16
    for c in C.CATEGORIES:                                                       # raw ScanNet ids per class
        assert np.all(lab[view.semantic == c.id] == C.SCANNET_LABELS[c.name][0])
    agg = json.loads((scene / "scene0001_00.aggregation.json").read_text())
    assert {g["objectId"] + 1: g["label"] for g in agg["segGroups"]} == {o.instance_id: o.category for o in view.objects}
    rows = [r.split("\t") for r in (root / "scannetv2-labels.combined.tsv").read_text().splitlines()]
    assert rows[0][:3] == ["id", "raw_category", "category"]
    assert {int(r[0]): r[1] for r in rows[1:]} == {C.SCANNET_LABELS[n][0]: n for n in C.ALL_NAMES}
    assert C.SCANNET_LABELS["chair"][:2] == (2, "chair") and C.SCANNET_LABELS["floor"][0] == 3  # ScanNet's ids


def test_spatial_annotations(tiny_world, out):
    root = Wr.write_spatial_annotations(tiny_world, out / "spatial")
    recs = [json.loads(x) for x in (root / "annotations.jsonl").read_text().splitlines()]
    assert len(recs) == len(list_views(tiny_world))
    for r in recs:
        view = load_view(tiny_world, r["scene"], r["view"])
        np.testing.assert_allclose(r["K"], view.K)
        np.testing.assert_allclose(r["cam_to_world"], view.cam_to_world)
        inst = np.asarray(Image.open(root / r["instance"]))
        assert inst.dtype == np.uint16
        np.testing.assert_array_equal(inst, view.instance)
        d = np.asarray(Image.open(root / r["depth"]))
        assert d.dtype == np.uint16 and r["depth_scale"] == 1000.0
        np.testing.assert_array_equal(np.asarray(Image.open(root / r["rgb"])), view.rgb)
        for o in r["objects"]:
            assert (inst == o["instance_id"]).sum() == o["pixels"]
            assert set(o) >= {"aabb_world", "obb_world", "aabb_cam", "obb_cam", "bbox2d", "category"}
    assert {r["split"] for r in recs} == {"train", "val"}


# ---------------------------------------------------------------- determinism / atomicity / idempotence
def test_writers_are_deterministic_and_idempotent(tiny_world, tmp_path):
    for name in ("nyud", "voc", "scannet", "roxford"):
        a = Wr.WRITERS[name](tiny_world, tmp_path / f"{name}_a")
        b = Wr.WRITERS[name](tiny_world, tmp_path / f"{name}_b")
        assert _digest(a) == _digest(b), name
    # same writer + same world + same args: returned as is, not rewritten
    p = tmp_path / "nyud_a" / "nyu_train.txt"
    mtime = p.stat().st_mtime_ns
    Wr.write_nyud(tiny_world, tmp_path / "nyud_a")
    assert p.stat().st_mtime_ns == mtime
    with pytest.raises(ValueError, match="overwrite"):
        Wr.write_nyud(tiny_world, tmp_path / "nyud_a", val_fraction=0.5)
    with pytest.raises(ValueError, match="overwrite"):
        Wr.write_voc(tiny_world, tmp_path / "nyud_a")
    Wr.write_nyud(tiny_world, tmp_path / "nyud_a", val_fraction=0.5, overwrite=True)
    assert len((tmp_path / "nyud_a" / "nyu_test.txt").read_text().splitlines()) == 4


def test_failed_write_leaves_nothing(tiny_world, tmp_path, monkeypatch):
    calls = []

    def boom(path, rgb):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(path)

    monkeypatch.setattr(Wr.common, "_save_jpg", boom)  # the savers moved to writers/common.py
    with pytest.raises(OSError, match="disk full"):
        Wr.write_ade20k(tiny_world, tmp_path / "ade")
    assert list(tmp_path.iterdir()) == []


def test_writer_bad_arguments(tiny_world, tmp_path):
    with pytest.raises(ValueError, match="val_fraction"):
        Wr.write_nyud(tiny_world, tmp_path / "x", val_fraction=0.0)
    with pytest.raises(ValueError, match="depth_scale"):
        Wr.write_kitti(tiny_world, tmp_path / "x", depth_scale=0)
    with pytest.raises(ValueError, match="num_landmarks"):
        Wr.write_roxford(tiny_world, tmp_path / "x", num_landmarks=9)
    with pytest.raises(ValueError, match="queries_per_landmark"):
        Wr.write_roxford(tiny_world, tmp_path / "x", queries_per_landmark=2)
    with pytest.raises(ValueError, match="not a synthetic world"):
        Wr.write_voc(tmp_path, tmp_path / "y")
    (tmp_path / "occupied").mkdir()
    (tmp_path / "occupied" / "mine.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a synthetic output"):
        Wr.write_ade20k(tiny_world, tmp_path / "occupied")
    assert (tmp_path / "occupied" / "mine.txt").read_text() == "keep me"
