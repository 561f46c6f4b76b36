"""Sample generation: answer/geometry consistency (randomized), options, output format, bad input."""

import json
import re

import numpy as np
import pytest

from encoders.spatialboost.qa import (CARD_FILE, DATA_FILE, Estimators, Generator, OpenVocabFilter, QAOptions,
                                      generate_dataset, iter_samples)
from encoders.spatialboost.qa import templates as T

from .conftest import world_view

NUM = r"(-?\d+(?:\.\d+)?) (cm|m)"


def _len(text):
    """All lengths stated in a text, in metres."""
    return [float(v) / (100 if u == "cm" else 1) for v, u in re.findall(NUM, text)]


def _vecs(text):
    return [np.array([float(x) for x in m.split(", ")]) for m in re.findall(r"\((-?[\d.]+, -?[\d.]+, -?[\d.]+)\) m", text)]


def _pairs(rec):
    c = rec["conversations"]
    return [(c[i]["value"], c[i + 1]["value"]) for i in range(0, len(c), 2)]


@pytest.fixture(scope="module")
def samples(qa_scannet):
    recs = []
    for seed in range(3):
        recs += list(iter_samples(qa_scannet, QAOptions(seed=seed)))
    assert len(recs) >= 50
    return recs


def test_structure_twelve_turns_forward(samples):
    for rec in samples:
        levels = [t["level"] for t in rec["meta"]["turns"]]
        assert levels == ["pix"] * 5 + ["obj"] * 4 + ["scene"] + ["caption"] * 2
        conv = rec["conversations"]
        assert [m["from"] for m in conv] == ["human", "gpt"] * 12
        assert conv[0]["value"].startswith("<image>\n") and conv[0]["value"].count("<image>") == 1
        assert all("<image>" not in m["value"] for m in conv[1:])
        assert isinstance(rec["image"], str) and "images" not in rec
        assert all(m["value"].strip() and "{" not in m["value"] for m in conv)


def test_pixel_answers_agree_with_depth_maps(samples, qa_scannet, qa_world):
    from PIL import Image

    cache = {}
    n_dist = 0
    for rec in samples:
        key = rec["meta"]["source_views"][0]
        if key not in cache:
            scene, frame = key.split("/")
            d2 = qa_scannet / "scannet_2d" / scene
            depth = np.asarray(Image.open(d2 / "depth" / f"{frame}.png")).astype(np.float32) / 1000.0  # ScanNet: mm
            K = np.loadtxt(d2 / "intrinsic" / "intrinsic_depth.txt")[:3, :3]
            truth = world_view(qa_world, key)  # the stored depth is the world's to the millimetre
            assert np.abs(depth - truth.depth).max() <= 0.0005 + 1e-6 and np.allclose(K, truth.K, atol=1e-6)
            cache[key] = (depth, K)
        depth, K = cache[key]
        for (q, a), t in zip(_pairs(rec), rec["meta"]["turns"]):
            vals = t.get("values", {})
            if t["family"] in ("point_depth", "point_distance"):
                u, v = (int(x) for x in vals["point"])
                assert depth[v, u] == pytest.approx(vals["depth"], rel=1e-6)
                H, W = depth.shape
                assert f"({(u + 0.5) / W:.3f}, {(v + 0.5) / H:.3f})" in q
            if t["family"] == "point_depth":
                # asked for depth: answered with z of the depth map, never with "distance from the camera"
                assert "distance" not in q and "far" not in q and "from the camera" not in a
                assert _len(a)[-1] == pytest.approx(vals["depth"], abs=0.0051)
            elif t["family"] == "point_distance":
                # asked how far: answered with the Euclidean distance camera centre -> point (from K and z)
                n_dist += 1
                z = float(depth[v, u])
                ray = np.array([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], 1.0])
                euclid = z * float(np.linalg.norm(ray))
                assert _len(a)[-1] == pytest.approx(euclid, abs=0.0051)
                assert vals["distance"] == pytest.approx(euclid, rel=1e-6)
            elif t["family"] == "point_closer":
                assert (vals["za"] < vals["zb"]) == vals["truth"]
                assert a.split(",")[0] in (("Yes", "Indeed", "Correct") if vals["truth"] else ("No", "In fact", "Incorrect"))
                assert abs(vals["za"] - vals["zb"]) >= 0.05
            elif t["family"] == "point_which_closer":
                assert vals["z_closer"] < vals["z_farther"]
                assert a.startswith(f"Point {vals['closer']}")
    assert n_dist > 0


def test_object_and_scene_answers_agree_with_boxes(samples):
    n_pred = 0
    for rec in samples:
        pairs = _pairs(rec)
        turns = rec["meta"]["turns"]
        centers = {}
        for (q, a), t in zip(pairs, turns):
            vals = t.get("values", {})
            if t["family"] == "cube_center":
                (c,) = _vecs(a)
                np.testing.assert_allclose(c, vals["center"], atol=0.0051)
                centers[vals["object"]] = c
            elif t["family"] == "cube_identify":
                cs = _vecs(a)
                for oid, c, cv in zip(vals["objects"], cs, vals["centers"]):
                    np.testing.assert_allclose(c, cv, atol=0.0051)
                    centers[oid] = c
            elif t["family"] == "cube_extent":
                np.testing.assert_allclose(_len(a), vals["size_wdh"], atol=0.0051)
            elif t["family"] in ("left", "right"):
                n_pred += 1
                xa, xb = vals["a_cam"][0], vals["b_cam"][0]
                assert vals["truth"] == ((xa < xb) if t["family"] == "left" else (xa > xb))
                assert a.split(",")[0] in (("Yes", "Indeed", "Correct") if vals["truth"] else ("No", "In fact", "Incorrect"))
            elif t["family"] in ("above", "below"):
                assert vals["truth"] == ((vals["a_up"] > vals["b_up"]) if t["family"] == "above" else (vals["a_up"] < vals["b_up"]))
            elif t["family"] in ("behind", "front"):
                za, zb = vals["a_cam"][2], vals["b_cam"][2]
                assert vals["truth"] == ((za > zb) if t["family"] == "behind" else (za < zb))
            elif t["family"] == "distance":
                stated = _len(a)[-1]
                assert stated == pytest.approx(vals["distance"], abs=0.0051)
                # the chain of thought: the distance follows from the centres stated earlier (within rounding)
                ca, cb = centers[vals["a"]], centers[vals["b"]]
                assert stated == pytest.approx(float(np.linalg.norm(ca - cb)), abs=0.02)
                assert _vecs(a) and np.allclose(_vecs(a)[0], ca)
    assert n_pred > 0


def test_left_right_agrees_with_ground_truth_for_separated_objects(qa_scannet, qa_world):
    """Estimated (visible-surface) centres vs the world's boxes: same left/right when clearly apart."""
    gen = Generator(qa_scannet, QAOptions(seed=0))
    checked = 0
    for (ref,) in gen.units():
        ctx = gen.context((ref,))
        gt = {o.instance_id: o for o in world_view(qa_world, ref.key, arrays=False).objects}
        H, W = ctx.anchor.size
        inside = [o for o in ctx.objects if o.bbox2d[0] > 0 and o.bbox2d[1] > 0 and o.bbox2d[2] < W and o.bbox2d[3] < H]
        for a in inside:
            for b in inside:
                ga, gb = gt[a.instance_id].obb_cam["center"], gt[b.instance_id].obb_cam["center"]
                if ga[0] - gb[0] > 0.4:
                    assert a.center_cam[0] > b.center_cam[0]
                    checked += 1
    assert checked > 5


def test_orders_levels_views(qa_scannet):
    rev = next(iter_samples(qa_scannet, QAOptions(order="reverse", samples=1)))
    assert [t["level"] for t in rev["meta"]["turns"]] == ["scene"] + ["obj"] * 4 + ["pix"] * 5 + ["caption"] * 2
    assert "From the centers" not in rev["conversations"][1]["value"]
    rnd = list(iter_samples(qa_scannet, QAOptions(order="random", samples=4, seed=1)))
    assert any([t["level"] for t in r["meta"]["turns"]][:10] != ["pix"] * 5 + ["obj"] * 4 + ["scene"] for r in rnd)
    for r in rnd:
        assert sorted(t["level"] for t in r["meta"]["turns"][:10]) == sorted(["pix"] * 5 + ["obj"] * 4 + ["scene"])
    for levels, n in (("pix", 5), ("obj", 4), ("scene", 1), ("pix,obj", 9), ("pix,scene", 6), ("obj,scene", 5)):
        r = next(iter_samples(qa_scannet, QAOptions(levels=levels, samples=1, captions=False)))
        assert len(r["meta"]["turns"]) == n, levels
    for views in (2, 4, 8):
        recs = list(iter_samples(qa_scannet, QAOptions(views=views, samples=3)))
        assert recs, views
        for r in recs:
            assert len(r["images"]) == views and "image" not in r
            first = r["conversations"][0]["value"]
            assert first.startswith("<image>\n" * views) and first.count("<image>") == views
            assert len(set(r["meta"]["source_views"])) == views
            assert len({k.split("/")[0] for k in r["meta"]["source_views"]}) == 1  # one scene


def test_options_validation():
    with pytest.raises(ValueError, match="order"):
        QAOptions(order="sideways")
    with pytest.raises(ValueError, match="levels"):
        QAOptions(levels="pix,foo")
    with pytest.raises(ValueError, match="views"):
        QAOptions(views=3)
    with pytest.raises(ValueError, match="samples"):
        QAOptions(samples=0)
    assert QAOptions(levels="scene,pix").levels == ("pix", "scene")
    with pytest.raises(Exception):
        QAOptions().seed = 3  # frozen


def test_dataset_files_deterministic_and_card(qa_scannet, tmp_path):
    opt = QAOptions(samples=30, seed=7)  # more samples than views: views are cycled
    a = generate_dataset(qa_scannet, tmp_path / "a", opt, progress=False)
    b = generate_dataset(qa_scannet, tmp_path / "b", opt, progress=False)
    ta, tb = (a / DATA_FILE).read_text(), (b / DATA_FILE).read_text()
    assert ta == tb
    lines = ta.splitlines()
    assert len(lines) == 30 and len({json.loads(x)["id"] for x in lines}) == 30
    c = generate_dataset(qa_scannet, tmp_path / "c", QAOptions(samples=30, seed=8), progress=False)
    assert (c / DATA_FILE).read_text() != ta
    card = json.loads((a / CARD_FILE).read_text())
    assert card["samples"] == 30 and card["seed"] == 7
    assert card["turns_per_level"] == {"pix": 150, "obj": 120, "scene": 30, "caption": 60}
    assert sum(card["turns_per_template_family"].values()) == 360
    assert card["samples_per_view_count"] == {"1": 30}
    assert not list(a.glob(".*tmp*"))


def test_mvqa_stage2(qa_scannet, tmp_path):
    out = generate_dataset(qa_scannet, tmp_path / "mv", QAOptions(task="mvqa", metric="ssim"), progress=False)
    card = json.loads((out / CARD_FILE).read_text())
    assert card["view_pairs"]["metric"] == "ssim" and card["view_pairs"]["window"] == [0.4, 0.75]
    recs = [json.loads(x) for x in (out / DATA_FILE).read_text().splitlines()]
    assert recs
    for r in recs:
        assert len(r["images"]) == 2 and r["conversations"][0]["value"].startswith("<image>\n<image>\n")
        fams = [t["family"] for t in r["meta"]["turns"]]
        assert fams[0].startswith("common") and fams[1].startswith("choice") and fams[2].startswith("adversarial")
        mc = r["meta"]["turns"][1]["values"]
        letter = r["conversations"][3]["value"][0]
        assert letter == mc["answer"] and f"{letter}. the " in r["conversations"][2]["value"]
    pose = list(iter_samples(qa_scannet, QAOptions(task="mvqa", metric="pose", samples=2)))
    assert len(pose) == 2


# ----------------------------------------------------------------------------- bad input
def test_missing_depth_is_counted_or_raises(scannet_copy, tmp_path):
    p = scannet_copy / "scannet_2d" / "scene0000_00" / "depth" / "0.png"
    p.unlink()
    out = generate_dataset(scannet_copy, tmp_path / "o", QAOptions(), progress=False)
    card = json.loads((out / CARD_FILE).read_text())
    assert card["skipped"].get("missing depth") == 1
    assert str(p) in card["skip_examples"]["missing depth"][0]
    assert all("scene0000_00/0#" not in json.loads(x)["id"] for x in (out / DATA_FILE).read_text().splitlines())
    with pytest.raises(ValueError, match="depth/0.png"):
        list(iter_samples(scannet_copy, QAOptions(strict=True)))


def test_nan_inf_depth_is_masked(qa_scannet):
    """Depth from an estimator or another reader may hold NaN/inf (ScanNet's PNGs only 0): masked, never stated."""
    from encoders.spatialboost.qa import ScanNetSource

    class Holes(ScanNetSource):
        def load(self, ref):
            obs = super().load(ref)
            if ref.key == "scene0000_00/0":
                obs.depth[::2, :] = np.nan
                obs.depth[1::4, :] = np.inf
                seen.append(obs.depth.copy())
            return obs

    seen = []
    gen = Generator(Holes(qa_scannet), QAOptions(seed=0))
    recs = [r for r in gen if r["meta"]["source_views"] == ["scene0000_00/0"]]
    assert recs and seen
    d = seen[0]
    for r in recs:
        for m in r["conversations"]:
            assert "nan" not in m["value"].lower() and "inf" not in m["value"].lower()
        for t in r["meta"]["turns"]:
            if t["family"] == "point_depth":
                u, v = (int(x) for x in t["values"]["point"])
                assert np.isfinite(d[v, u]) and t["values"]["depth"] == pytest.approx(d[v, u])


class _BadSeg:
    def segment(self, rgb):
        H, W = rgb.shape[:2]
        return np.zeros((H + 1, W), np.int32), {}


class _OneObjectSeg:
    def segment(self, rgb):
        m = np.zeros(rgb.shape[:2], np.int32)
        m[10:30, 10:30] = 1
        return m, {1: "box"}


def test_mask_size_mismatch_and_single_object(qa_scannet):
    gen = Generator(qa_scannet, QAOptions(), Estimators(segmenter=_BadSeg()))
    assert list(gen) == []
    assert gen.stats.skipped["mask size mismatch"] == 27
    assert "mask is 96x73, image is 96x72" in gen.stats.skip_examples["mask size mismatch"][0]
    with pytest.raises(ValueError, match="mask is 96x73"):
        list(iter_samples(qa_scannet, QAOptions(strict=True), Estimators(segmenter=_BadSeg())))
    gen = Generator(qa_scannet, QAOptions(), Estimators(segmenter=_OneObjectSeg()))
    assert list(gen) == [] and gen.stats.skipped["fewer than two objects"] == 27


def test_multiview_without_poses_is_an_error(tmp_path):
    from PIL import Image

    for i in range(3):
        Image.fromarray(np.full((20, 30, 3), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")

    class Depth:
        def estimate_depth(self, rgb):
            return np.full(rgb.shape[:2], 2.0, np.float32), None

    with pytest.raises(ValueError, match="poses"):
        list(iter_samples(tmp_path, QAOptions(views=2), Estimators(depth=Depth(), segmenter=_OneObjectSeg())))
    gen = Generator(tmp_path, QAOptions())  # no estimators: every view lacks depth -> counted
    assert list(gen) == [] and gen.stats.skipped["missing depth"] == 3


def test_image_filter_and_custom_captioner(qa_scannet):
    class Scorer:
        def scores(self, rgb, labels):
            p = np.zeros(len(labels))
            p[-1 if rgb.mean() > 1e9 else 0] = 1.0  # always "indoor scene"
            return p

    class RejectAll:
        def scores(self, rgb, labels):
            p = np.zeros(len(labels))
            p[-1] = 1
            return p

    class Cap:
        def caption(self, ctx, rng):
            return [("Q1?", "A1."), ("Q2?", f"{len(ctx.objects)} objects.")]

    r = next(iter_samples(qa_scannet, QAOptions(samples=1), Estimators(image_filter=OpenVocabFilter(Scorer()), captioner=Cap())))
    assert r["conversations"][-4]["value"] == "Q1?" and r["conversations"][-1]["value"].endswith("objects.")
    gen = Generator(qa_scannet, QAOptions(), Estimators(image_filter=OpenVocabFilter(RejectAll())))
    assert list(gen) == [] and gen.stats.skipped["image filter"] == 27
    assert "a sketch" in gen.stats.skip_examples["image filter"][0]


def test_cli_and_mlflow(qa_scannet, qa_world, tmp_path, capsys):
    from encoders.spatialboost.qa.cli import main

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    rc = main(["data", "generate", "--world", str(qa_scannet), "--out", str(tmp_path / "cli"), "--samples", "3",
               "--levels", "pix,obj", "--order", "reverse", "--seed", "2", "--json", "--no-progress",
               "--tracking-uri", uri])
    assert rc == 0
    data = json.loads((tmp_path / "cli" / "conversations.json").read_text())
    assert len(data) == 3 and data[0]["meta"]["order"] == "reverse"
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=uri)
    exp = c.get_experiment_by_name("spatialboost-data")
    (run,) = c.search_runs([exp.experiment_id])
    arts = [a.path for a in c.list_artifacts(run.info.run_id, "dataset")]
    assert "dataset/conversations.jsonl" in arts and "dataset/dataset_card.json" in arts
    assert main(["data", "generate", "--world", str(tmp_path / "nope"), "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    # the world's own folder is not a format the generator reads: a clear error that says what to pass
    assert main(["data", "generate", "--world", str(qa_world), "--out", str(tmp_path / "y"), "--no-progress"]) == 2
    assert "write_scannet" in capsys.readouterr().err and not (tmp_path / "y").exists()


def test_formatting():
    assert T.fmt_len(0.456) == "46 cm" and T.fmt_len(0.996) == "1.00 m" and T.fmt_len(2.345) == "2.35 m" or T.fmt_len(2.345) == "2.34 m"
    assert T.rounded_len(0.456) == 0.46
    assert T.fmt_vec([0.1234, -1.0, 2]) == "(0.12, -1.00, 2.00) m"


def test_cli_generate_without_samples_shows_progress(qa_scannet, qa_world, tmp_path):
    """`spatialboost data generate --world DIR --out DIR` (no --samples, progress bar on): one sample per view."""
    import subprocess
    import sys
    from pathlib import Path

    from suites.synthetic.world import list_views

    exe = Path(sys.executable).parent / "spatialboost"
    res = subprocess.run([str(exe), "data", "generate", "--world", str(qa_scannet), "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "spatial QA (cot" in res.stderr          # the bar ran (it counts without a total)
    lines = (tmp_path / "o" / DATA_FILE).read_text().splitlines()
    card = json.loads((tmp_path / "o" / CARD_FILE).read_text())
    assert len(lines) == card["samples"] == len(list_views(qa_world)) - sum(card["skipped"].values())
    assert f"{len(lines)} samples ->" in res.stdout


def test_caption_task_stage1(qa_scannet, qa_world):
    """Stage-1 alignment data: one instruction + caption per view, naming the objects the view shows."""
    recs = list(iter_samples(qa_scannet, QAOptions(task="caption", samples=8)))
    assert len(recs) == 8
    for r in recs:
        conv = r["conversations"]
        assert len(conv) == 2 and conv[0]["value"].startswith("<image>\n") and isinstance(r["image"], str)
        assert r["meta"]["task"] == "caption" and r["meta"]["turns"][0]["level"] == "caption"
        shown = {o.category for o in world_view(qa_world, r["meta"]["source_views"][0], arrays=False).objects
                 if o.pixels >= 30}
        named = {c for c in shown if c in conv[1]["value"]}
        assert named, (conv[1]["value"], shown)
    with pytest.raises(ValueError, match="single-view"):
        QAOptions(task="caption", views=2)


def test_demo_generates_the_right_kind_of_data_per_stage(qa_scannet, tmp_path):
    """The demo trains stage 1 on captions, stage 2 on multi-view VQA, stage 3 on the chain of thought (#13.10)."""
    from harness.commands.demo import PRESETS, _spatial_qa
    from harness.workspace import Workspace

    files = _spatial_qa(Workspace(tmp_path), qa_scannet, PRESETS["tiny"], "tiny", False)
    assert sorted(files) == [1, 2, 3] and len(set(files.values())) == 3
    for stage, task, n_turns, n_images in ((1, "caption", 1, 1), (2, "mvqa", 3, 2), (3, "cot", 12, 1)):
        recs = [json.loads(x) for x in files[stage].read_text().splitlines()]
        assert len(recs) == PRESETS["tiny"].qa_samples
        for r in recs:
            assert r["meta"]["task"] == task and len(r["meta"]["turns"]) == n_turns
            assert r["conversations"][0]["value"].count("<image>") == n_images
