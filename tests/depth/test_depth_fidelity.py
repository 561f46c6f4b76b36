"""Protocol fidelity against DINOv2 / DINOv3 depth (issue #13 items 1-4): which blocks the heads read,
whether they are final-normed, and the DPT schedule."""
import math
from types import SimpleNamespace

import mlflow
import pytest

from depth_fixtures import make_nyud
from harness.config import build
from harness.runner import EvalConfig, evaluate
from heads.dpt import dpt_blocks
from suites.depth.suite import KittiOptions, NYUdOptions, NYUdSuite


def _enc(num_layers):
    return SimpleNamespace(info=SimpleNamespace(num_layers=num_layers, spec=f"fake-{num_layers}"))


@pytest.mark.parametrize("L, blocks", [(12, [2, 5, 8, 11]), (24, [4, 11, 17, 23]), (40, [9, 19, 29, 39])])
def test_linear_four_layers_are_dinov2s_evenly_spaced_blocks(L, blocks):
    """DINOv2 hub/depthers.py: ViT-S/B [2,5,8,11], ViT-L [4,11,17,23], ViT-g [9,19,29,39] (not the last 4)."""
    suite = NYUdSuite(NYUdOptions())
    assert suite._linear_blocks(_enc(L)) == blocks
    # "1 layer" = the last block, "4 layers" = all four (DepthInput reads the last n of the ascending list)
    from heads.depth import DepthInput
    import torch
    pat = {b: torch.full((1, 1, 1, 2), float(b)) for b in blocks}
    assert DepthInput(1, False).build(pat, {}, blocks).flatten().tolist() == [float(L - 1)] * 2
    assert DepthInput(4, False).build(pat, {}, blocks)[0, 0, 0, ::2].tolist() == [float(b) for b in blocks]


def test_last_n_blocks_stay_an_explicit_option():
    suite = NYUdSuite(NYUdOptions(linear_layers="last"))
    assert suite._linear_blocks(_enc(12)) == [8, 9, 10, 11]
    assert NYUdOptions().linear_layers == "spaced" and KittiOptions().linear_layers == "spaced"


def test_dpt_blocks_follow_the_per_depth_table():
    assert dpt_blocks(12) == [2, 5, 8, 11]
    assert dpt_blocks(24) == [4, 11, 17, 23]          # even spacing would give [5, 11, 17, 23]
    assert dpt_blocks(40) == [9, 19, 29, 39]
    assert NYUdSuite(NYUdOptions())._dpt_blocks(_enc(24)) == [4, 11, 17, 23]


def test_dpt_has_its_own_schedule_with_the_reference_defaults(tmp_path, workspace):
    o = NYUdOptions()
    assert (o.dpt_iterations, o.dpt_warmup, o.iterations) == (38400, 12800, 12500)
    data = make_nyud(tmp_path / "nyu", n_train=8, n_test=2)
    cfg = build(EvalConfig, {"encoder": "builtin:tiny-vit", "suite": "depth.nyud", "data": str(data),
                             "workspace": str(workspace), "progress": False, "head": "dpt",
                             "protocol": {"iterations": 2, "dpt_iterations": 9, "dpt_warmup": 3, "batch_size": 4,
                                          "dpt_channels": 8, "short_side": None, "dpt_lr": 1e-3,
                                          "curve_points": 3}})
    rec = evaluate(cfg)
    client = mlflow.MlflowClient(f"sqlite:///{workspace}/mlflow.db")
    lrs = [m.value for m in sorted(client.get_metric_history(rec.run_id, "dpt.lr"), key=lambda m: m.step)]
    # learning curve: held-out validation rmse every 3 steps, the last point = the reported val rmse
    curve = sorted((m.step, m.value) for m in client.get_metric_history(rec.run_id, "dpt.val_rmse_curve"))
    assert [s for s, _ in curve] == [3, 6, 9] and curve[-1][1] == pytest.approx(rec.metrics["dpt.val_rmse"])
    assert len(lrs) == 9                              # 9 DPT steps although the linear grid has 2
    # one-cycle: the lr rises for the 3 warm-up steps (peak at the 3rd, index 2), then decays
    assert max(range(9), key=lambda i: lrs[i]) == 2 and math.isclose(lrs[2], 1e-3, rel_tol=1e-6)
    assert lrs[0] < lrs[1] < lrs[2] and all(lrs[i] > lrs[i + 1] for i in range(2, 8))


def test_depth_heads_read_unnormed_blocks():
    """DINOv2 depthers: ``get_intermediate_layers(..., norm=False)`` for linear and DPT; the cache key
    carries ``norm`` (harness/cache.py), so normed classification features are never reused here."""
    calls = []

    def features(ds, layers, kinds, desc="", norm=True):
        calls.append((list(layers), tuple(kinds), norm))

    ctx = SimpleNamespace(heads=("linear", "dpt"), encoder=_enc(12), features=features)
    NYUdSuite(NYUdOptions())._features(ctx, SimpleNamespace(images_only=lambda: None), [2, 5, 8, 11], "test")
    assert calls == [([2, 5, 8, 11], ("patches", "cls"), False)]
