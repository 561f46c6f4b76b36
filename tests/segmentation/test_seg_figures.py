"""The segmentation run's figure: per-class val IoU bars of the reported head, logged as
figures/per_class_iou.png."""
import mlflow
import numpy as np
from PIL import Image

from harness.config import build
from harness.runner import EvalConfig, evaluate
from segmentation.conftest import TINY
from suites.segmentation.figures import per_class_iou


def test_per_class_iou_bars_and_absent_classes():
    fig = per_class_iou([50.0, None, 12.5, 0.0], [80.0, None, 0.0, 0.0], "t")
    ax = fig.axes[0]
    np.testing.assert_allclose([p.get_height() for p in ax.patches[:4]], [50.0, 0.0, 12.5, 0.0])
    assert any("mIoU 20.8" in t.get_text() for t in ax.get_legend().get_texts())   # nanmean of 50, 12.5, 0


def test_run_logs_per_class_iou(ade_root, workspace, tmp_path):
    cfg = build(EvalConfig, {"encoder": "builtin:tiny-vit", "suite": "seg.ade20k", "data": str(ade_root),
                             "workspace": str(workspace), "progress": False, "batch_size": 8, "head": "linear",
                             "protocol": {**TINY, "iters": 4}})
    rec = evaluate(cfg)
    client = mlflow.MlflowClient(f"sqlite:///{workspace}/mlflow.db")
    assert [a.path for a in client.list_artifacts(rec.run_id, "figures")] == ["figures/per_class_iou.png"]
    png = client.download_artifacts(rec.run_id, "figures/per_class_iou.png", str(tmp_path))
    assert min(Image.open(png).size) > 200
