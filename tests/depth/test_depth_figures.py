"""The depth run's figure: error maps of 3 fixed test images, checked against an independent computation and
logged as figures/error_maps.png."""
from types import SimpleNamespace

import mlflow
import numpy as np
import torch
from PIL import Image

from depth_fixtures import make_nyud
from harness.config import build
from harness.runner import EvalConfig, evaluate
from suites.depth.figures import error_maps, figure_indices


def test_error_maps_show_prediction_ground_truth_and_error_on_evaluated_pixels():
    rng = np.random.default_rng(0)
    gts = [rng.uniform(0.5, 9.0, (12, 16)).astype(np.float32) for _ in range(3)]
    gts[1][:3] = 0.0                                    # invalid rows: no ground truth, no error
    masks = [np.ones((12, 16), bool) for _ in range(3)]
    masks[2][:, :4] = False                             # outside the benchmark crop
    ds = SimpleNamespace(gt=lambda i: gts[i], eval_mask=lambda i, hw: masks[i],
                         samples=[SimpleNamespace(image=f"img{i}.jpg") for i in range(3)])
    pred = torch.full((1, 3, 6, 8), 3.0)
    pred[0, 0] = 20.0                                   # beyond max_depth: clamped as the metric does
    fig = error_maps(lambda sel: pred[:, list(sel)], ds, np.array([2, 0, 1]), 1e-3, 10.0, "t")
    axes = fig.axes[:9]
    for r in range(3):
        want_pred = np.full((12, 16), 10.0 if r == 0 else 3.0)
        valid = masks[r] & (gts[r] > 1e-3) & (gts[r] < 10.0)
        np.testing.assert_allclose(axes[3 * r].images[0].get_array(), want_pred, rtol=1e-6)
        err = np.asarray(axes[3 * r + 2].images[0].get_array(), dtype=np.float64)
        np.testing.assert_allclose(err[valid], np.abs(want_pred - gts[r])[valid], rtol=1e-5)
        assert np.isnan(err[~valid]).all() and (~valid).sum() == (0, 48, 48)[r]
        assert f"img{r}.jpg" in axes[3 * r].get_title()


def test_figure_indices_are_fixed_and_spread():
    assert list(figure_indices(np.arange(10, 20))) == [10, 14, 19]   # rounded to even at 4.5
    assert list(figure_indices(np.array([3, 5]))) == [3, 5]


def test_run_logs_error_maps(tmp_path, workspace):
    data = make_nyud(tmp_path / "nyu", n_train=8, n_test=4)
    cfg = build(EvalConfig, {"encoder": "builtin:tiny-vit", "suite": "depth.nyud", "data": str(data),
                             "workspace": str(workspace), "progress": False, "head": "linear",
                             "protocol": {"iterations": 4, "lrs": [0.01], "n_last_layers": [1],
                                          "cls_concat": [False], "batch_size": 4, "sig_warm_iter": 1}})
    rec = evaluate(cfg)
    client = mlflow.MlflowClient(f"sqlite:///{workspace}/mlflow.db")
    assert [a.path for a in client.list_artifacts(rec.run_id, "figures")] == ["figures/error_maps.png"]
    png = client.download_artifacts(rec.run_id, "figures/error_maps.png", str(tmp_path))
    w, h = Image.open(png).size
    assert w > 300 and h > 300 and h > w * 0.6             # 3 rows of 3 panels
