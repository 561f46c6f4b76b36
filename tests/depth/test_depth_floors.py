"""Floor rows (train-mean depth, per-pixel train-mean map) and per-sample records of the depth suites,
checked against an independent numpy computation read straight from the files."""
import math

import numpy as np
import pytest
from PIL import Image

from depth_fixtures import make_nyud
from harness.config import build
from harness.runner import EvalConfig, evaluate
from harness.samples import PerSample
from suites.depth.datasets import eigen_mask
from suites.depth.metrics import METRICS
from suites.depth.suite import NYUdOptions, NYUdSuite

PROTOCOL = {"iterations": 6, "lrs": [0.01, 0.1], "batch_size": 4, "dpt_channels": 8, "sig_warm_iter": 2,
            "short_side": None, "dpt_iterations": 6, "dpt_warmup": 2, "curve_points": 2}


@pytest.fixture(scope="module")
def nyud(tmp_path_factory):
    return make_nyud(tmp_path_factory.mktemp("nyu-floor") / "nyu", n_train=10, n_test=5)


def _read_list(root, name):
    rows = [line.split() for line in (root / name).read_text().splitlines() if line.strip()]
    return [(r[0].lstrip("/"), r[1].lstrip("/")) for r in rows]


def _depth(root, rel):
    return np.asarray(Image.open(root / rel), dtype=np.float64) / 1000.0


def _independent_floors(root, lo=1e-3, hi=10.0):
    """Train mean over valid train pixels (inside the NYU white-border crop, scaled), per-pixel mean map,
    then per-image rmse / abs_rel / delta1 on the test split inside the Eigen crop."""
    train = [_depth(root, d) for _, d in _read_list(root, "nyu_train.txt")]
    h, w = train[0].shape
    y1, y2 = int(45 / 480 * h), int(472 / 480 * h)      # NYU_TRAIN_CROP (43, 45, 608, 472), scaled
    x1, x2 = int(43 / 640 * w), int(608 / 640 * w)
    region = np.zeros((h, w), bool)
    region[y1:y2, x1:x2] = True
    valid = [(d > lo) & (d < hi) & region for d in train]
    mean = sum(d[v].sum() for d, v in zip(train, valid)) / sum(v.sum() for v in valid)
    cnt = sum(v.astype(float) for v in valid)
    fmap = np.where(cnt > 0, sum(np.where(v, d, 0) for d, v in zip(train, valid)) / np.maximum(cnt, 1), mean)
    out = {"floor": {"rmse": [], "abs_rel": [], "delta1": []}, "floor_map": {"rmse": [], "abs_rel": [], "delta1": []}}
    ids = []
    for img, dep in _read_list(root, "nyu_test.txt"):
        gt = _depth(root, dep)
        v = (gt > lo) & (gt < hi) & eigen_mask(gt.shape)
        ids.append(img)
        for name, pred in (("floor", np.full_like(gt, mean)), ("floor_map", fmap)):
            p, g = pred[v], gt[v]
            out[name]["rmse"].append(np.sqrt(np.mean((g - p) ** 2)))
            out[name]["abs_rel"].append(np.mean(np.abs(g - p) / g))
            out[name]["delta1"].append(np.mean(np.maximum(g / p, p / g) < 1.25))
    return mean, ids, out


def test_floors_equal_an_independent_computation(nyud):
    from encoders.spec import build_encoder
    suite = NYUdSuite(NYUdOptions())
    d = suite._data(nyud, build_encoder("builtin:tiny-vit").info)
    metrics, per, details = {}, {}, {}
    suite._floors(d, d.train.has_gt, np.flatnonzero(d.test.has_gt), metrics, per, details)
    mean, ids, ref = _independent_floors(nyud)
    assert details["floor"]["train_mean_depth_m"] == pytest.approx(mean, rel=1e-6)
    for kind in ("floor", "floor_map"):
        for m in ("rmse", "abs_rel", "delta1"):
            assert metrics[f"{kind}.{m}"] == pytest.approx(np.mean(ref[kind][m]), rel=1e-5), (kind, m)
            rec = per[f"{kind}.{m}"]
            assert rec.ids == ids            # the test image's relative path as the list file gives it
            np.testing.assert_allclose(rec.stats[:, 0], ref[kind][m], rtol=1e-5)
        assert set(f"{kind}.{m}" for m in METRICS) <= set(metrics)
    # the per-pixel map knows where the near box tends to be less than a constant does not: it is a
    # different predictor, and both are positive, finite scores
    assert metrics["floor.rmse"] != metrics["floor_map.rmse"] and math.isfinite(metrics["floor_map.rmse"])


def test_floor_frames_subsamples_evenly(nyud):
    from encoders.spec import build_encoder
    suite = NYUdSuite(NYUdOptions(floor_frames=3))
    d = suite._data(nyud, build_encoder("builtin:tiny-vit").info)
    details = {}
    suite._floors(d, d.train.has_gt, np.flatnonzero(d.test.has_gt), {}, {}, details)
    assert details["floor"]["train_frames_read"] == 3


def test_run_logs_per_sample_records_that_reduce_to_the_metrics(nyud, workspace):
    import mlflow
    cfg = build(EvalConfig, {"encoder": "builtin:tiny-vit", "suite": "depth.nyud", "data": str(nyud),
                             "workspace": str(workspace), "progress": False, "protocol": dict(PROTOCOL)})
    rec = evaluate(cfg)
    m = rec.metrics
    client = mlflow.MlflowClient(f"sqlite:///{workspace}/mlflow.db")
    local = client.download_artifacts(rec.run_id, "per_sample")
    test_ids = [img for img, _ in _read_list(nyud, "nyu_test.txt")]
    for name in ("rmse", "lin.rmse", "dpt.rmse", "lin.delta1", "dpt.abs_rel", "floor.rmse", "floor_map.rmse",
                 "floor.delta1", "floor_map.silog"):
        ps = PerSample.load(f"{local}/{name}.npz")
        assert ps.ids == test_ids, name
        assert ps.reduce == "mean"
        assert ps.value() == pytest.approx(m[name], rel=1e-9), name
    curve = sorted((x.step, x.value) for x in client.get_metric_history(rec.run_id, "lin.val_rmse_best"))
    assert [s for s, _ in curve] == [3, 6] and curve[-1][1] == pytest.approx(m["lin.val_rmse"])
    # the unprefixed metrics are the first head's (linear), sample by sample
    a, b = PerSample.load(f"{local}/rmse.npz"), PerSample.load(f"{local}/lin.rmse.npz")
    np.testing.assert_array_equal(a.stats, b.stats)
