"""Oracle test (#13.12): a model that outputs the ground truth scores perfectly on every depth metric;
a linear depth head that outputs the training-mean depth everywhere scores exactly the floor row."""
import math

import numpy as np
import pytest
import torch

from depth_fixtures import make_nyud
from heads.depth import DepthInput, LinearDepthGrid
from suites.depth.metrics import METRICS
from suites.depth.suite import NYUdOptions, NYUdSuite

PERFECT = {"rmse": 0.0, "abs_rel": 0.0, "sq_rel": 0.0, "rmse_log": 0.0, "log10": 0.0, "silog": 0.0, "mae": 0.0,
           "delta1": 1.0, "delta2": 1.0, "delta3": 1.0}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from encoders.spec import build_encoder
    root = make_nyud(tmp_path_factory.mktemp("nyu-oracle") / "nyu", n_train=8, n_test=4)
    suite = NYUdSuite(NYUdOptions())
    d = suite._data(root, build_encoder("builtin:tiny-vit").info)
    metrics, per, details = {}, {}, {}
    test_idx = np.flatnonzero(d.test.has_gt)
    suite._floors(d, d.train.has_gt, test_idx, metrics, per, details)
    return suite, d, test_idx, metrics, per, details


def test_ground_truth_scores_perfectly(setup):
    suite, d, idx, *_ = setup

    def oracle(sel):
        return torch.stack([torch.from_numpy(d.test.gt(int(i))) for i in sel])[None]

    res = suite._evaluate(oracle, d.test, idx, batch=3)
    r = res.compute()
    assert set(PERFECT) == set(METRICS)
    for m, want in PERFECT.items():
        assert r[m] == pytest.approx(want, abs=1e-9), m
        rec = suite._per_sample(d.test, res, 0, "oracle")[f"oracle.{m}"]
        np.testing.assert_allclose(rec.stats[:, 0], want, atol=1e-9)
    assert r["n_images"] == len(idx)


def test_a_constant_linear_head_scores_the_floor(setup):
    """Zero weights and a bias that puts the softmax mass on the two bins around the train mean: the
    grid's own forward (patch map, x4 upsampling, bins) then predicts the mean everywhere."""
    suite, d, idx, metrics, per, details = setup
    mean = details["floor"]["train_mean_depth_m"]
    o = suite.options
    grid = LinearDepthGrid([DepthInput(1, False)], [0.01], 8, o.min_depth, o.max_depth, n_bins=64, norm="softmax")
    bins = grid.bins.double()
    j = int(torch.searchsorted(bins, torch.tensor(mean, dtype=torch.float64))) - 1
    w = (bins[j + 1] - mean) / (bins[j + 1] - bins[j])           # mean = w b_j + (1 - w) b_{j+1}
    bias = torch.full((64,), -1e4, dtype=torch.float64)
    bias[j], bias[j + 1] = math.log(w), math.log(1 - w)
    with torch.no_grad():
        grid.heads[0].weight.zero_()
        grid.heads[0].bias.copy_(bias.float().view(1, 1, -1))
    h, w_ = d.input_hw[0] // 16, d.input_hw[1] // 16

    def constant(sel):
        pat = {0: torch.randn(len(sel), h, w_, 8)}
        return grid(pat, {0: torch.randn(len(sel), 8)}, [0])

    res = suite._evaluate(constant, d.test, idx, batch=2)
    r = res.compute()
    for m in METRICS:
        assert r[m] == pytest.approx(metrics[f"floor.{m}"], rel=1e-4, abs=1e-6), m
    np.testing.assert_allclose(suite._per_sample(d.test, res, 0, "c")["c.rmse"].stats, per["floor.rmse"].stats,
                               rtol=1e-4)
    # the floor is a real baseline, not a perfect score, and the map floor is a different predictor
    assert metrics["floor.rmse"] > 0.1 and metrics["floor.delta1"] < 1.0
