"""The ScanNet-format reader: what it takes from the written format is the world's truth, its fallbacks, the
label map, and the regression test of the switch from the world's internals to the format."""

import json
import re

import numpy as np
import pytest

from encoders.spatialboost.qa import CARD_FILE, DATA_FILE, QAOptions, generate_dataset, iter_samples

from .conftest import world_view


def _pairs(rec):
    c = rec["conversations"]
    return [(c[i]["value"], c[i + 1]["value"]) for i in range(0, len(c), 2)]


def test_scannet_format_source(qa_scannet, qa_world):
    """What the ScanNet reader takes from the written format is the world's truth: masks, names, boxes."""
    from encoders.spatialboost.qa import ScanNetSource

    src = ScanNetSource(qa_scannet)
    refs = src.refs()
    assert len(refs) == 27 and refs[0].key == "scene0000_00/0" and refs[0].image == "scannet_2d/scene0000_00/color/0.jpg"
    for ref in refs[::4]:
        obs, truth = src.load(ref), world_view(qa_world, ref.key)
        assert np.array_equal(obs.instance, truth.instance)                      # instance-filt/N.png
        assert obs.labels == {o.instance_id: o.category for o in truth.objects if o.pixels}   # aggregation.json
        np.testing.assert_allclose(obs.cam_to_world, truth.cam_to_world, atol=1e-7)
        boxes = src.boxes(ref.group)                                              # _instances.json side file
        for o in truth.objects:
            np.testing.assert_allclose(boxes[o.instance_id]["obb"]["center"], o.obb_world["center"], atol=1e-9)
            np.testing.assert_allclose(boxes[o.instance_id]["aabb"]["max"], o.aabb_world["max"], atol=1e-9)
    recs = list(iter_samples(qa_scannet, QAOptions(samples=4)))
    assert len(recs) == 4 and recs[0]["image"].startswith("scannet_2d/scene")
    mv = list(iter_samples(qa_scannet, QAOptions(views=2, samples=2, metric="pose")))
    assert len(mv) == 2 and all(len(r["images"]) == 2 for r in mv)


def test_scannet_fallbacks_without_the_2d_export(scannet_copy, qa_world):
    """Without instance-filt/ the instances are projected from the labelled cloud; without _instances.json the
    boxes are the axis-aligned boxes of each instance's points (they contain most of the true box)."""
    import shutil

    from encoders.spatialboost.qa import ScanNetSource

    d2 = scannet_copy / "scannet_2d" / "scene0000_00"
    shutil.rmtree(d2 / "instance-filt")
    for js in (scannet_copy / "scannet_3d").rglob("*_instances.json"):
        js.unlink()
    src = ScanNetSource(scannet_copy)
    ref = src.refs()[0]
    obs, truth = src.load(ref), world_view(qa_world, ref.key)
    seen = truth.instance > 0
    assert (obs.instance[seen] == truth.instance[seen]).mean() > 0.9
    assert set(obs.labels.values()) <= {o.category for o in truth.objects}   # names from the cloud's instances
    boxes = src.boxes(ref.group)
    assert boxes and all(b["obb"] is None for b in boxes.values())
    for o in truth.objects:
        if o.instance_id in boxes:
            b = boxes[o.instance_id]["aabb"]
            assert np.all(b["min"] >= o.aabb_world["min"] - 0.03) and np.all(b["max"] <= o.aabb_world["max"] + 0.03)


def test_scannet_source_equals_the_world(qa_scannet, qa_world):
    """The regression test of the switch from reading the world's internals to reading ScanNet's format: the
    generator gives the same questions and answers (same views) from the written ScanNet folder as from the
    world itself, read with ScanNet's view keys and the values ScanNet's format stores (depth in mm, K to
    1e-6, poses to 1e-8). Checks every task; mvqa/multi-view pair views by pose (SSIM would see the JPEG)."""
    from encoders.spatialboost.qa import ScanNetSource
    from encoders.spatialboost.qa.sources import Observation, Source, ViewRef
    from suites.synthetic.world import list_views

    class WorldAsStored(Source):
        kind = "test-world"

        def __init__(self, root):
            self.root = root

        def refs(self):
            return [ViewRef(f"scene{s:04d}_00/{v}", f"scene{s:04d}_00", f"scannet_2d/scene{s:04d}_00/color/{v}.jpg", v)
                    for s, v in list_views(self.root)]

        def has_poses(self):
            return True

        def pose(self, ref):
            return np.round(world_view(self.root, ref.key, arrays=False).cam_to_world, 8)

        def load(self, ref):
            w = world_view(self.root, ref.key)
            depth = np.rint(w.depth.astype(np.float64) * 1000).astype(np.uint16).astype(np.float32) / 1000.0
            return Observation(ref, w.rgb, depth, w.instance, {o.instance_id: o.category for o in w.objects},
                               np.round(w.K, 6), np.round(w.cam_to_world, 8))

    def strip(r):
        return {k: v for k, v in r.items() if k not in ("image", "images")}

    compared = 0
    for opt in (QAOptions(seed=0), QAOptions(seed=1, order="random"), QAOptions(task="caption"),
                QAOptions(task="mvqa", metric="pose"), QAOptions(views=4, samples=4, metric="pose")):
        a = [strip(r) for r in iter_samples(WorldAsStored(qa_world), opt)]
        b = [strip(r) for r in iter_samples(ScanNetSource(qa_scannet), opt)]
        assert a and len(a) == len(b), opt
        for x, y in zip(a, b):
            assert x == y, (opt, x["id"])
        compared += len(a)
    assert compared >= 100   # 130 today: the five option sets on the tests' world (3 scenes x 9 views)


def _scannet_with_2d_labels(qa_world, root):
    """The ScanNet layout without the aggregation files and the label map, with label-filt/ PNGs of label ids
    100 + the world's category id (so only label-filt + a label map can name the instances); returns
    {label id: category} for the label map."""
    from PIL import Image
    from suites.synthetic.world import load_view
    from suites.synthetic.writers import write_scannet

    write_scannet(qa_world, root, val_fraction=0.34)
    (root / "scannetv2-labels.combined.tsv").unlink()
    names = {}
    for sd in sorted((root / "scannet_2d").iterdir()):
        s = int(sd.name[len("scene"):len("scene") + 4])
        (sd / f"{sd.name}.aggregation.json").unlink()
        for img in (sd / "color").iterdir():
            view = load_view(qa_world, s, int(img.stem))
            lab = np.zeros(view.instance.shape, np.uint16)
            for o in view.objects:
                lab[view.instance == o.instance_id] = 100 + o.category_id
                names[100 + o.category_id] = o.category
            Image.fromarray(view.instance.astype(np.uint8)).save(sd / "instance-filt" / f"{img.stem}.png")
            Image.fromarray(lab.astype(np.uint16)).save(sd / "label-filt" / f"{img.stem}.png")
    return names


def _write_label_map(path, names):
    rows = ["id\traw_category\tcategory\tcount\tnyu40id"] + [f"{i}\t{c} raw\t{c}\t1\t0" for i, c in sorted(names.items())]
    path.write_text("\n".join(rows) + "\n")


def _categories_vs_world(recs, qa_world):
    """Every object named in the object-level turns has the world's category of that instance."""
    from suites.synthetic.world import load_view

    checked = 0
    for r in recs:
        scene, frame = r["meta"]["source_views"][0].split("/")
        view = load_view(qa_world, int(scene[len("scene"):len("scene") + 4]), int(frame), arrays=False)
        cats = {o.instance_id: o.category for o in view.objects}
        for (q, a), t in zip(_pairs(r), r["meta"]["turns"]):
            if t["family"] == "cube_center":
                assert f"the {cats[t['values']['object']]} in region" in q
                checked += 1
    return checked


def test_scannet_label_map_names_categories(qa_world, tmp_path):
    from encoders.spatialboost.qa.cli import main

    root = tmp_path / "scannet"
    names = _scannet_with_2d_labels(qa_world, root)
    # no label map: categories are ScanNet ids, and the card (and the CLI) say why
    out = generate_dataset(root, tmp_path / "nomap", QAOptions(samples=6), progress=False)
    card = json.loads((out / CARD_FILE).read_text())
    assert any("scannetv2-labels.combined.tsv not found" in n for n in card["source"]["notes"])
    text = (out / DATA_FILE).read_text()
    assert re.search(r"the object 1\d\d in region", text)
    # the map given by path
    tsv = tmp_path / "labels.tsv"
    _write_label_map(tsv, names)
    recs = list(iter_samples(root, QAOptions(samples=12, seed=1, label_map=str(tsv))))
    assert "object 1" not in json.dumps(recs)
    assert _categories_vs_world(recs, qa_world) > 0
    # ... or found beside the scenes
    _write_label_map(root / "scannetv2-labels.combined.tsv", names)
    out = generate_dataset(root, tmp_path / "beside", QAOptions(samples=6), progress=False)
    card = json.loads((out / CARD_FILE).read_text())
    assert card["source"]["notes"] == [] and "object 1" not in (out / DATA_FILE).read_text()
    # bad input: a missing map given by path, a file that is not the label map
    assert main(["data", "generate", "--world", str(root), "--out", str(tmp_path / "x"), "--no-progress",
                 "--label-map", str(tmp_path / "nope.tsv")]) == 2
    (tmp_path / "bad.tsv").write_text("a\tb\n1\t2\n")
    with pytest.raises(ValueError, match="not ScanNet's label map"):
        list(iter_samples(root, QAOptions(samples=1, label_map=str(tmp_path / "bad.tsv"))))
