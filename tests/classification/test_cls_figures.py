"""The classification run's figure: per-class val top-1 of the reported head, checked against an
independent count and logged as figures/per_class_top1.png."""
import mlflow
import numpy as np
from PIL import Image

from fixtures import make_imagefolder
from harness.config import build
from harness.runner import EvalConfig, evaluate
from suites.classification.figures import per_class_accuracy


def test_per_class_bars_match_counts():
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    hits = np.array([1, 0, 1, 1, 1, 0, 0, 0, 1])
    fig = per_class_accuracy(hits, labels, ["a", "b", "c", "d"], "t")
    bars = [p.get_height() for p in fig.axes[0].patches]
    np.testing.assert_allclose(bars, [200 / 3, 100.0, 25.0, 0.0])           # class d has no val image
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["a (n=3)", "b (n=2)", "c (n=4)", "d (n=0)"]


def test_run_logs_per_class_figure(tmp_path, workspace):
    data = make_imagefolder(tmp_path / "if", n_classes=3, train_per_class=6)
    cfg = build(EvalConfig, {"encoder": "builtin:tiny-vit", "suite": "cls.imagenet", "data": str(data),
                             "workspace": str(workspace), "progress": False, "head": "knn",
                             "protocol": {"knn_k": [1, 3]}})
    rec = evaluate(cfg)
    client = mlflow.MlflowClient(f"sqlite:///{workspace}/mlflow.db")
    assert [a.path for a in client.list_artifacts(rec.run_id, "figures")] == ["figures/per_class_top1.png"]
    png = client.download_artifacts(rec.run_id, "figures/per_class_top1.png", str(tmp_path))
    assert min(Image.open(png).size) > 200
