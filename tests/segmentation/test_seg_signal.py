"""Issue #12/#13 for segmentation: the majority-class floor, per-sample statistics, the oracle, selection
without a hold-out when there is nothing to select, the held-out learning curve, option ranges."""
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from PIL import Image

from harness.config import ConfigError, build
from harness.runner import EvalConfig, evaluate, resolve
from harness.samples import PerSample
from heads.segmentation import patch_centre_labels
from segmentation.conftest import TINY


def _cfg(data, ws, suite="seg.ade20k", **kw):
    protocol = {**TINY, **kw.pop("protocol", {})}
    return build(EvalConfig, {"encoder": "builtin:tiny-vit", "suite": suite, "data": str(data), "workspace": str(ws),
                              "progress": False, "batch_size": 8, "protocol": protocol, **kw})


def _ade_labels(root: Path, split: str) -> dict[str, np.ndarray]:
    """ADE20K label maps read independently of mmseg: 0 (other) -> ignore, k -> k-1."""
    out = {}
    for f in sorted((root / "annotations" / split).glob("*.png")):
        raw = np.array(Image.open(f)).astype(np.int64)
        out[f"images/{split}/{f.stem}.jpg"] = np.where(raw == 0, 255, raw - 1)
    return out


def _independent_floor(root: Path, c: int = 150):
    counts = np.zeros(c, np.int64)
    for lab in _ade_labels(root, "training").values():
        counts += np.bincount(lab[lab != 255], minlength=c)
    major = int(np.argmax(counts))
    inter, union, correct, labelled = np.zeros(c), np.zeros(c), 0, 0
    for lab in _ade_labels(root, "validation").values():
        keep = lab != 255
        for k in np.unique(lab[keep]):
            union[k] += (lab == k).sum()
        inter[major] += (lab == major).sum()
        union[major] += keep.sum() - (lab == major).sum()     # predicted everywhere labelled
        correct += (lab == major).sum()
        labelled += keep.sum()
    present = union > 0
    return major, float((inter[present] / union[present]).mean() * 100), float(correct / labelled * 100)


def _per_sample(client, run_id, name, tmp) -> PerSample:
    return PerSample.load(client.download_artifacts(run_id, f"per_sample/{name}.npz", str(tmp)))


def test_floor_per_sample_and_no_holdout_with_one_lr(ade_root, workspace, tmp_path):
    rec = evaluate(_cfg(ade_root, workspace))
    m = rec.metrics
    major, miou, aacc = _independent_floor(ade_root)
    assert m["floor.mIoU"] == pytest.approx(miou, rel=1e-9) and m["floor.aAcc"] == pytest.approx(aacc, rel=1e-9)
    assert m["linear.mIoU"] > m["floor.mIoU"]                         # learnable colours beat the constant
    client = mlflow.MlflowClient(f"sqlite:///{workspace}/mlflow.db")
    result = client.download_artifacts(rec.run_id, "result.json", str(tmp_path))
    import json
    res = json.loads(Path(result).read_text())
    assert res["details"]["floor"]["class"] == major
    # #13.8: one lr = nothing to select: no hold-out, the head trains on every training image
    sel = res["selection"]["linear"]
    assert sel["policy"] == "full" and sel["held_out_images"] == 0 and sel["trained_on_images"] == 8
    assert res["details"]["n_holdout"] == 0 and res["details"]["heads"]["linear"]["train_images"] == 8
    assert "holdout_mIoU" not in m and "linear.holdout_mIoU" not in m
    # per-sample files reduce to the reported numbers and are keyed by the image's relative path
    ids = sorted(_ade_labels(ade_root, "validation"))
    assert "floor_map = " in res["details"]["floor"]["rule"]
    for name in ("mIoU", "linear.mIoU", "linear.aAcc", "linear.mAcc", "floor.mIoU", "floor.aAcc", "floor.mAcc",
                 "floor_map.mIoU", "floor_map.aAcc", "floor_map.mAcc"):
        ps = _per_sample(client, rec.run_id, name, tmp_path / name)
        assert sorted(ps.ids) == ids
        assert ps.value() == pytest.approx(m[name], rel=1e-9)
    ps = _per_sample(client, rec.run_id, "floor.mIoU", tmp_path / "f")
    assert ps.reduce == "miou" and ps.scale == 100 and ps.stats.shape == (3, 300)


def test_oracle_scores_100_and_majority_constant_scores_the_floor(ade_root):
    from suites.segmentation.datasets import read_ade20k
    from suites.segmentation.inference import majority_floor, score
    train, val = read_ade20k(ade_root, "training"), read_ade20k(ade_root, "validation")
    major, floor = majority_floor(train, val, None)

    def oracle(res):
        gt = torch.from_numpy(np.asarray(res["gt_seg_map"], dtype=np.int64))
        return torch.where(gt == 255, torch.zeros_like(gt), gt)[None]  # ignored pixels: any class

    def constant(res):
        return torch.full((1, *np.asarray(res["gt_seg_map"]).shape), major, dtype=torch.int64)

    perfect = score(val, None, oracle, 1)[0]
    assert perfect["mIoU"] == 100.0 and perfect["aAcc"] == 100.0 and perfect["mAcc"] == 100.0
    const = score(val, None, constant, 1)[0]
    assert const["mIoU"] == floor["mIoU"] and const["aAcc"] == floor["aAcc"]
    assert (major, floor["mIoU"], floor["aAcc"]) == pytest.approx(_independent_floor(ade_root), rel=1e-9)


def test_grid_refits_the_chosen_lr_and_logs_a_holdout_curve(ade_root, workspace, tmp_path):
    rec = evaluate(_cfg(ade_root, workspace, head="linear",
                        protocol={"lr_grid": [1e-3, 3e-2], "iters": 10, "curve_every": 5}))
    m = rec.metrics
    client = mlflow.MlflowClient(f"sqlite:///{workspace}/mlflow.db")
    import json
    res = json.loads(Path(client.download_artifacts(rec.run_id, "result.json", str(tmp_path))).read_text())
    sel = res["selection"]["linear"]
    best = max((1e-3, 3e-2), key=lambda lr: m[f"linear.lr{lr:g}.holdout_mIoU"])
    assert sel["policy"] == "refit" and sel["lr"] == best and sel["trained_on_images"] == 8
    assert sel["held_out_images"] == 1 and res["details"]["heads"]["linear"]["refit"]["train_images"] == 8
    assert "linear.holdout_mIoU" in m and "linear.lr0.001.mIoU" not in m   # val scores only the refit head
    curve = client.get_metric_history(rec.run_id, "linear.curve.holdout_mIoU")
    assert sorted(x.step for x in curve) == [5, 10]
    assert all(0 <= x.value <= 100 for x in curve)
    for lr in ("0.001", "0.03"):
        assert len(client.get_metric_history(rec.run_id, f"linear.lr{lr}.curve.holdout_mIoU")) == 2
    # a sweep needs held-out train: with one lr and selection=auto the run refuses before any work
    with pytest.raises(ConfigError, match="protocol.selection=refit"):
        evaluate(_cfg(ade_root, workspace, protocol={"iters": 3}), on_intermediate=lambda v, s: None)


def test_patch_centre_labels_follow_centre_padding():
    lab = torch.arange(30 * 17).view(1, 30, 17)
    out = patch_centre_labels(lab, 8)          # 4 x 3 cells; pad 2 rows (1 top), 7 cols (3 left)
    assert out.shape == (1, 4, 3)
    rows = [4 - 1 + 8 * i for i in range(4)]
    cols = [4 - 3 + 8 * j for j in range(3)]
    want = torch.tensor([[lab[0, r, c] if r < 30 and c < 17 else 255 for c in cols] for r in rows])
    assert torch.equal(out[0], want)
    with pytest.raises(ValueError):
        patch_centre_labels(lab, 0)


@pytest.mark.parametrize("key,value,msg", [("iters", 0, "protocol.iters=0: must be >= 1"),
                                           ("holdout_fraction", 1.0, "protocol.holdout_fraction=1.0: must be < 1"),
                                           ("lr_grid", [1e-3, 0.0], r"protocol.lr_grid\[1\]=0.0: must be > 0"),
                                           ("ms_test_ratios", [], "protocol.ms_test_ratios: must not be empty"),
                                           ("selection", "best", "not one of")])
def test_option_ranges_refused_before_any_work(ade_root, workspace, key, value, msg):
    with pytest.raises(ConfigError, match=msg):
        resolve(_cfg(ade_root, workspace, protocol={key: value}))


def _layout_ade20k(root: Path) -> Path:
    """Every label map is the same layout (class 1 = wall above, 2 = floor below, 3 = a band on the left),
    train at 48x64 and val at 96x128: a position prior in normalised coordinates predicts val exactly."""
    for split, (h, w) in (("training", (48, 64)), ("validation", (96, 128))):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "annotations" / split).mkdir(parents=True, exist_ok=True)
        lab = np.full((h, w), 2, np.uint8)
        lab[: h // 4] = 1                   # boundaries on the 16x16 grid: a quarter, an eighth
        lab[:, : w // 8] = 3
        for i in range(3):
            name = f"ADE_{split[:5]}_{i + 1:08d}"
            Image.fromarray(np.full((h, w, 3), 60 * i, np.uint8)).save(root / "images" / split / f"{name}.jpg")
            Image.fromarray(lab).save(root / "annotations" / split / f"{name}.png")
    return root


def test_position_prior_floor(tmp_path, ade_root):
    from suites.segmentation.datasets import read_ade20k
    from suites.segmentation.inference import majority_floor, prior_map, prior_map_floor
    root = _layout_ade20k(tmp_path / "ADEChallengeData2016")
    train, val = read_ade20k(root, "training"), read_ade20k(root, "validation")
    prior, f = prior_map_floor(train, val, None, grid=16)
    assert f["mIoU"] == pytest.approx(100.0) and f["aAcc"] == pytest.approx(100.0)   # another size, same layout
    assert majority_floor(train, val, None)[1]["mIoU"] < 50          # the constant misses two of three classes
    assert prior[0, -1] == 0 and prior[-1, -1] == 1 and prior[-1, 0] == 2          # mmseg's reduce_zero_label
    # on random rectangles: the prior equals an independent per-cell vote over the label maps (16x16 cells)
    train = read_ade20k(ade_root, "training")
    votes = np.zeros((16, 16, 150), np.int64)
    for lab in _ade_labels(ade_root, "training").values():
        h, w = lab.shape
        for y in range(h):
            for x in range(w):
                if lab[y, x] != 255:
                    votes[min(int((y + 0.5) * 16 / h), 15), min(int((x + 0.5) * 16 / w), 15), lab[y, x]] += 1
    expect = votes.argmax(-1)
    expect[votes.sum(-1) == 0] = votes.sum((0, 1)).argmax()
    assert np.array_equal(prior_map(train, 16), expect)
    from suites.segmentation.inference import cell_counts, class_counts
    assert np.array_equal(cell_counts(train, 16).sum((0, 1)), class_counts(train))   # one read serves both floors
