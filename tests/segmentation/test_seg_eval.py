"""End to end through the harness runner: ADE20K/VOC fixtures, tiny-vit, linear and +ms, fast and exact."""
import mlflow
import numpy as np
import pytest
from PIL import Image

from harness.commands.cli import main
from harness.config import ConfigError, build
from harness.runner import EvalConfig, evaluate, resolve, validate
from segmentation.conftest import TINY
from segmentation.seg_fixtures import make_ade20k


def _cfg(data, ws, suite="seg.ade20k", **kw):
    base = {"encoder": "builtin:tiny-vit", "suite": suite, "data": str(data), "workspace": str(ws),
            "progress": False, "batch_size": 8, "protocol": dict(TINY)}
    protocol = kw.pop("protocol", {})
    base["protocol"].update(protocol)
    base.update(kw)
    return build(EvalConfig, base)


MS = {"ms_test_ratios": [1.0, 1.5]}   # two scales x flip keep the test short; the paper's five are the default


def test_ade20k_linear_and_ms_fast_end_to_end(ade_root, workspace):
    rec = evaluate(_cfg(ade_root, workspace, head="linear,ms", protocol=MS))
    assert not rec.reused
    m = rec.metrics
    for head in ("linear", "ms"):
        for k in ("mIoU", "aAcc", "mAcc"):
            assert 0 <= m[f"{head}.{k}"] <= 100
    assert m["mIoU"] == m["linear.mIoU"]                          # unprefixed = the first head
    assert m["linear.aAcc"] > 50 and m["ms.aAcc"] > 50            # learnable colours: far above chance
    client = mlflow.MlflowClient(f"sqlite:///{workspace}/mlflow.db")
    run = client.get_run(rec.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["mode"] == "fast" and run.data.tags["head"] == "linear,ms"
    assert int(run.data.tags["cache_forwards"]) > 0
    assert [x.value for x in client.get_metric_history(rec.run_id, "linear.train_loss")]
    again = evaluate(_cfg(ade_root, workspace, head="linear,ms", protocol=MS))
    assert again.reused and again.run_id == rec.run_id
    forced = evaluate(_cfg(ade_root, workspace, head="linear,ms", protocol=MS, force=True))
    assert client.get_run(forced.run_id).data.tags["cache_forwards"] == "0"   # train windows from the cache
    assert forced.metrics["linear.mIoU"] == pytest.approx(m["linear.mIoU"])   # deterministic on CPU
    assert forced.metrics["ms.mIoU"] == pytest.approx(m["ms.mIoU"])


def test_exact_mode_with_lr_grid_selects_on_holdout(ade_root, workspace):
    rec = evaluate(_cfg(ade_root, workspace, mode="exact", protocol={"lr_grid": [1e-3, 3e-2], "iters": 8,
                                                                 "selection": "holdout"}))
    m = rec.metrics
    assert rec.tags["mode"] == "exact" and m["linear.n_heads"] == 2
    assert {"linear.lr0.001.mIoU", "linear.lr0.03.mIoU", "linear.lr0.03.holdout_mIoU", "linear.holdout_mIoU"} <= set(m)
    best = max((0.001, 0.03), key=lambda lr: m[f"linear.lr{lr:g}.holdout_mIoU"])
    assert m["mIoU"] == m[f"linear.lr{best:g}.mIoU"]


def test_voc_linear_fast_and_validate(voc_root, workspace):
    rec = evaluate(_cfg(voc_root, workspace, suite="seg.voc", protocol={"iters": 10}))
    assert 0 <= rec.metrics["mIoU"] <= 100 and rec.tags["suite"] == "seg.voc"
    check = validate(_cfg(voc_root, workspace, suite="seg.voc", head="linear,ms"))["check"]
    assert check["train_split"] == "ImageSets/Segmentation/trainaug.txt" and check["train_images"] == 8
    assert check["ms"]["logits"] == [1, 21, 4, 4] and len(check["ms"]["features"]) == 4


def test_bad_inputs_stop_with_named_errors(tmp_path, workspace, capsys):
    data = make_ade20k(tmp_path / "ade", n_train=3, n_val=1)
    bad = data / "annotations" / "validation" / "ADE_val_00000001.png"
    lab = np.array(Image.open(bad))
    lab[0, 0] = 151
    Image.fromarray(lab).save(bad)
    argv = ["eval", "--encoder", "builtin:tiny-vit", "--suite", "seg.ade20k", "--data", str(data),
            "--workspace", str(workspace), "--no-progress"] + [f"protocol.{k}={v}" for k, v in TINY.items()]
    assert main(argv) == 2
    assert f"label map '{bad}' holds class index 151" in capsys.readouterr().err
    assert main(argv[:-len(TINY)] + ["--head", "ms", "protocol.ms_layers=6"]) == 2
    assert "head 'ms' needs the last 6 layers but encoder 'builtin:tiny-vit' has only 4 blocks" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="did you mean 'protocol.iters'"):
        resolve(_cfg(data, workspace, protocol={"iter": 3}))
