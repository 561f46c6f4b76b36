"""Depth metrics against hand-computed values and an independent per-image numpy loop."""
import math

import numpy as np
import pytest
import torch

from suites.depth.metrics import METRICS, DepthMetric, image_metrics


def _numpy_reference(pred, gt, mask, lo, hi):
    """Plain per-image loop, written from the definitions (BTS eval / Eigen et al.)."""
    out = {m: [] for m in METRICS}
    for p, g, k in zip(pred, gt, mask):
        p = np.clip(np.nan_to_num(p.astype(np.float64), nan=hi, posinf=hi, neginf=lo), lo, hi)
        valid = k & (g > 0) & (g > lo) & (g < hi)
        if not valid.any():
            continue
        p, g = p[valid], g[valid].astype(np.float64)
        thresh = np.maximum(g / p, p / g)
        out["delta1"].append(np.mean(thresh < 1.25))
        out["delta2"].append(np.mean(thresh < 1.25 ** 2))
        out["delta3"].append(np.mean(thresh < 1.25 ** 3))
        out["rmse"].append(np.sqrt(np.mean((g - p) ** 2)))
        out["abs_rel"].append(np.mean(np.abs(g - p) / g))
        out["sq_rel"].append(np.mean((g - p) ** 2 / g))
        out["mae"].append(np.mean(np.abs(g - p)))
        out["rmse_log"].append(np.sqrt(np.mean((np.log(g) - np.log(p)) ** 2)))
        out["log10"].append(np.mean(np.abs(np.log10(g) - np.log10(p))))
        err = np.log(p) - np.log(g)
        out["silog"].append(100 * np.sqrt(np.mean(err ** 2) - np.mean(err) ** 2))
    return {k: float(np.mean(v)) for k, v in out.items()}


def test_hand_computed_values():
    gt = torch.tensor([[1.0, 2.0], [4.0, 0.0]])
    pred = torch.tensor([[1.0, 1.0], [8.0, 5.0]])
    m = DepthMetric(1e-3, 10.0)
    m.process(pred, gt)
    r = m.compute()
    # valid pixels: (1,1), (2,1), (4,8); the gt=0 pixel is ignored
    assert r["rmse"] == pytest.approx(math.sqrt((0 + 1 + 16) / 3))
    assert r["abs_rel"] == pytest.approx((0 + 0.5 + 1.0) / 3)
    assert r["sq_rel"] == pytest.approx((0 + 0.5 + 4.0) / 3)
    assert r["mae"] == pytest.approx((0 + 1 + 4) / 3)
    assert r["delta1"] == pytest.approx(1 / 3) and r["delta2"] == pytest.approx(1 / 3)
    assert r["delta3"] == pytest.approx(1 / 3)                      # ratio 2 > 1.25**3 = 1.953
    g = np.log([1.0, 1.0, 8.0]) - np.log([1.0, 2.0, 4.0])          # (0, -ln2, ln2)
    assert r["rmse_log"] == pytest.approx(math.sqrt(2 * math.log(2) ** 2 / 3))
    assert r["silog"] == pytest.approx(100 * math.sqrt(np.mean(g ** 2) - np.mean(g) ** 2))
    assert r["log10"] == pytest.approx(2 * math.log10(2) / 3)
    assert r["n_images"] == 1 and r["n_skipped"] == 0


def test_delta3_threshold_is_strict():
    # 1.25**3 = 1.953125: a ratio of 2 is outside, 1.9 inside
    m = DepthMetric(1e-3, 10.0)
    m.process(torch.tensor([[2.0, 1.9]]), torch.tensor([[1.0, 1.0]]))
    assert m.compute()["delta3"] == pytest.approx(0.5)


def test_matches_numpy_loop_per_image_mean_masks_range_and_clamp():
    rng = np.random.default_rng(0)
    lo, hi = 1e-3, 10.0
    metric = DepthMetric(lo, hi)
    preds, gts, masks = [], [], []
    for hw in ((7, 9), (7, 9), (5, 6)):          # batches of different sizes stream through one object
        gt = rng.uniform(0.2, 12.0, (2, *hw)).astype(np.float32)     # some gt above max -> ignored
        gt[rng.random(gt.shape) < 0.2] = 0.0
        pred = rng.uniform(-1.0, 13.0, (2, *hw)).astype(np.float32)  # clamped to [lo, hi]
        pred[0, 0, 0] = np.nan
        mask = rng.random(gt.shape) < 0.8
        metric.process(torch.from_numpy(pred), torch.from_numpy(gt), torch.from_numpy(mask))
        preds += list(pred)
        gts += list(gt)
        masks += list(mask)
    ref = _numpy_reference(preds, gts, masks, lo, hi)
    got = metric.compute()
    for k in METRICS:
        assert got[k] == pytest.approx(ref[k], rel=1e-6), k
    assert got["n_images"] == 6


def test_per_image_mean_not_pixel_pooled_and_skipped_images():
    gt = torch.tensor([[[1.0, 1.0, 1.0, 1.0]], [[1.0, 0.0, 0.0, 0.0]], [[0.0, 0.0, 0.0, 0.0]]])
    pred = torch.tensor([[[1.0, 1.0, 1.0, 1.0]], [[3.0, 1.0, 1.0, 1.0]], [[1.0, 1.0, 1.0, 1.0]]])
    m = DepthMetric(1e-3, 10.0)
    m.process(pred, gt)
    r = m.compute()
    assert r["rmse"] == pytest.approx((0.0 + 2.0) / 2)       # pooled would be sqrt(4 / 5)
    assert r["n_images"] == 2 and r["n_skipped"] == 1


def test_head_dimension_and_bilinear_resize_to_gt():
    rng = np.random.default_rng(1)
    gt = torch.from_numpy(rng.uniform(0.5, 9.0, (2, 8, 12)).astype(np.float32))
    low = torch.from_numpy(rng.uniform(0.5, 9.0, (3, 2, 4, 6)).astype(np.float32))   # 3 heads at half size
    m = DepthMetric(1e-3, 10.0)
    m.process(low, gt)
    r = m.compute()
    assert r["rmse"].shape == (3,)
    up = torch.nn.functional.interpolate(low.reshape(6, 1, 4, 6), size=(8, 12), mode="bilinear",
                                         align_corners=False).reshape(3, 2, 8, 12)
    for k in range(3):
        one = DepthMetric(1e-3, 10.0)
        one.process(up[k], gt)
        assert r["rmse"][k] == pytest.approx(one.compute()["rmse"])


def test_perfect_prediction():
    gt = torch.rand(3, 10, 10) * 9 + 0.5
    vals = image_metrics(gt.clone(), gt, torch.ones_like(gt, dtype=torch.bool))
    for k in ("rmse", "abs_rel", "sq_rel", "rmse_log", "log10", "silog", "mae"):
        assert torch.allclose(vals[k], torch.zeros(3, dtype=torch.float64), atol=1e-6), k
    assert torch.all(vals["delta1"] == 1)
