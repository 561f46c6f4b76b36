"""End to end through harness.runner.evaluate on tiny NYUd / KITTI fixtures written in the real formats."""
import math

import mlflow
import pytest

from depth_fixtures import make_kitti, make_nyud
from harness.config import ConfigError, build
from harness.runner import EvalConfig, evaluate, validate
from suites.depth.metrics import METRICS
from suites.depth.suite import KittiSuite, NYUdOptions
from suites.images import DataError

PROTOCOL = {"iterations": 8, "lrs": [0.01, 0.1], "batch_size": 4, "dpt_channels": 8, "sig_warm_iter": 2,
            "short_side": None, "dpt_iterations": 8, "dpt_warmup": 2}


def _cfg(data, ws, suite="depth.nyud", **kw):
    base = {"encoder": "builtin:tiny-vit", "suite": suite, "data": str(data), "workspace": str(ws),
            "progress": False, "protocol": dict(PROTOCOL)}
    base.update(kw)
    return build(EvalConfig, base)


@pytest.fixture(scope="module")
def nyud(tmp_path_factory):
    return make_nyud(tmp_path_factory.mktemp("nyu") / "nyu", n_train=12, n_test=4)


def test_linear_then_dpt_logged_finite_and_share_the_cache(nyud, workspace):
    rec = evaluate(_cfg(nyud, workspace, head="linear"))
    m = rec.metrics
    for k in (*METRICS, "val.rmse", "lin.rmse", "lin.val_rmse"):
        assert math.isfinite(m[k]), k
    assert m["rmse"] == m["lin.rmse"] and 0 <= m["delta1"] <= 1
    assert m["lin.n_heads"] == 8 and m["test.n_images"] == 4
    assert len([k for k in m if k.startswith("lin.l") and k.endswith(".test_rmse")]) == 8
    client = mlflow.MlflowClient(f"sqlite:///{workspace}/mlflow.db")
    run = client.get_run(rec.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["mode"] == "fast"
    curve = client.get_metric_history(rec.run_id, "lin.train_loss")
    assert len(curve) >= 2 and all(math.isfinite(c.value) for c in curve)
    # selection was made on the held-out part of train: the chosen head has the smallest val rmse
    val = {k: v for k, v in m.items() if k.endswith(".val_rmse") and k.startswith("lin.l")}
    assert m["lin.val_rmse"] == min(val.values())

    dpt = evaluate(_cfg(nyud, workspace, head="dpt"))
    for k in (*METRICS, "val.rmse", "dpt.rmse"):
        assert math.isfinite(dpt.metrics[k]), k
    assert dpt.metrics["rmse"] == dpt.metrics["dpt.rmse"]
    run = client.get_run(dpt.run_id)
    assert run.data.tags["cache_forwards"] == "0"       # tiny-vit's DPT blocks 0..3 = the linear lin.4 blocks
    assert client.get_metric_history(dpt.run_id, "dpt.train_loss")


def test_exact_mode_runs_with_augmentation_and_is_recorded(nyud, workspace):
    rec = evaluate(_cfg(nyud, workspace, head="linear", mode="exact",
                        protocol={**PROTOCOL, "n_last_layers": [1], "cls_concat": [True], "lrs": [0.05]}))
    assert rec.tags["mode"] == "exact" and rec.metrics["lin.n_heads"] == 1
    assert math.isfinite(rec.metrics["rmse"])


def test_kitti_none_frames_are_skipped_and_counted(tmp_path, workspace):
    data = make_kitti(tmp_path / "kitti", n_train=6, n_test=4, no_gt=(1,))
    rec = evaluate(_cfg(data, workspace, suite="depth.kitti", head="linear",
                        protocol={**PROTOCOL, "n_last_layers": [1], "cls_concat": [False]}))
    assert rec.metrics["test.n_no_gt"] == 1 and rec.metrics["test.n_images"] == 3
    assert math.isfinite(rec.metrics["rmse"])
    assert KittiSuite.Options().max_depth == 80.0 and KittiSuite.Options().grad_loss_weight == 0.5


def test_head_asking_for_more_layers_than_the_encoder_has(nyud, workspace):
    cfg = _cfg(nyud, workspace, head="linear", protocol={"n_last_layers": [1, 6]})
    with pytest.raises(DataError, match=r"n_last_layers asks for the last 6 blocks but encoder 'builtin:tiny-vit' "
                                        r"has only 4"):
        validate(cfg)
    with pytest.raises(DataError, match=r"dpt_layers=\[0, 1, 2, 9\]"):
        validate(_cfg(nyud, workspace, head="dpt", protocol={"dpt_layers": [0, 1, 2, 9]}))
    with pytest.raises(ConfigError, match="protocol.holdout_fraction"):
        validate(_cfg(nyud, workspace, protocol={"holdout_fraction": 1.5}))
    report = validate(_cfg(nyud, workspace, head="linear"))
    assert report["check"]["linear"]["heads"] == 8 and report["check"]["input_hw"] == [48, 64]


@pytest.mark.parametrize("key, value, message", [
    ("iterations", 0, r"protocol.iterations=0: must be >= 1"),
    ("lrs", [0.01, 0.0], r"protocol.lrs\[1\]=0.0: must be > 0"),
    ("n_last_layers", [], r"protocol.n_last_layers: must not be empty"),
    ("holdout_fraction", 1.0, r"protocol.holdout_fraction=1.0: must be < 1"),
    ("short_side", 4, r"protocol.short_side=4: must be >= 8"),
    ("min_depth", 0.0, r"protocol.min_depth=0.0: must be > 0"),
    ("dpt_warmup", 40000, r"protocol.dpt_warmup=40000: must be < dpt_iterations"),
    ("max_depth", 1e-4, r"protocol.min_depth=0.001: need min_depth < max_depth"),
])
def test_out_of_range_options_are_refused_naming_the_key(key, value, message):
    with pytest.raises(ConfigError, match=message):
        build(NYUdOptions, {key: value}, prefix="protocol.")
    assert build(NYUdOptions, {"short_side": None}, prefix="protocol.").short_side is None
