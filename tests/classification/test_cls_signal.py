"""Classification signal and fidelity: the majority-class floor, per-image correctness, oracle models,
the paper's App. A.6 variant, single-candidate selection, option ranges, the paper config."""
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from fixtures import make_imagefolder
from harness.cache import Features, FeatureCache
from harness.commands.cli import main
from harness.config import ConfigError, build
from harness.registry import SUITES
from harness.runner import EvalConfig, evaluate
from harness.samples import check_consistent
from harness.suite import RunContext

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def unbalanced(tmp_path_factory):
    """3 classes with 9 / 5 / 3 training images (a unique majority that survives the hold-out) and
    4 / 4 / 4 val images written in the ImageFolder layout."""
    root = tmp_path_factory.mktemp("unbal") / "data"
    make_imagefolder(root, n_classes=3, train_per_class=9, val_per_class=4)
    for c, keep in ((1, 5), (2, 3)):
        for p in sorted((root / "train" / f"n{c:08d}").iterdir())[keep:]:
            p.unlink()
    return root


def _suite(**protocol):
    cls = SUITES.get("cls.imagenet")
    return cls(build(cls.Options, protocol))


class _OracleContext(RunContext):
    """Features that come from the labels instead of an encoder: ``perfect`` = one-hot of the class in
    every block's CLS and mean patch token, ``constant`` = the same vector for every image."""
    kind: str = "perfect"

    def features(self, dataset, layers, kinds=("cls",), desc="features"):
        n, dim = len(dataset), self.encoder.info.embed_dim
        y = dataset.labels
        if self.kind == "perfect":
            x = torch.zeros(n, dim)
            x[torch.arange(n), y] = 10.0
        else:
            x = torch.ones(n, dim)
        arrays = {f"{k}.{b}": x.numpy().astype(np.float16) for b in layers for k in kinds}
        return Features(arrays, key=f"oracle-{self.kind}", path=Path("."))


def _oracle_run(data, kind, tmp_path, **protocol):
    from encoders.spec import build_encoder
    s = _suite(**protocol)
    ctx = _OracleContext(encoder=build_encoder("builtin:tiny-vit"), data=data, heads=("linear", "knn"), mode="fast",
                         device=torch.device("cpu"), precision="fp32", batch_size=8, num_workers=0, seed=0,
                         cache=FeatureCache(tmp_path / "cache"), progress=False)
    ctx.kind = kind
    res = s.run(ctx)
    for name, samples in res.per_sample.items():
        check_consistent(name, res.metrics[name], samples)
    return res


def _labels(data, split):
    return [p.parent.name for p in sorted((data / split).glob("*/*.JPEG"))]


def test_floor_is_the_training_majority_class(unbalanced, tmp_path):
    res = _oracle_run(unbalanced, "perfect", tmp_path, epochs=1, lrs=[0.1], n_last_blocks=[1], avgpool=[False],
                      knn_k=[1])
    train, val = _labels(unbalanced, "train"), _labels(unbalanced, "val")
    counts = Counter(train)
    majority = max(sorted(counts), key=lambda c: counts[c])
    assert res.metrics["floor.top1"] == pytest.approx(100 * sum(v == majority for v in val) / len(val))
    assert res.metrics["floor.top5"] == pytest.approx(100.0)          # 3 classes: all among the top 5
    ps = res.per_sample["floor.top1"]
    assert sorted(ps.ids) == sorted(str(p.relative_to(unbalanced)) for p in (unbalanced / "val").glob("*/*.JPEG"))
    assert ps.scale == 100 and ps.reduce == "mean"
    assert set(np.unique(ps.stats)) <= {0.0, 1.0}


def test_floor_top5_ties_go_to_the_lower_class_index():
    y = torch.tensor([0, 1, 1, 2, 2, 3, 4, 5, 6])      # classes 1 and 2 lead; 0 and 3..6 tie with one each
    hits = SUITES.get("cls.imagenet").majority_floor(y, torch.arange(7), 7)
    assert hits[1].tolist() == [False, True, False, False, False, False, False]
    assert hits[5].tolist() == [True, True, True, True, True, False, False]


def test_oracle_perfect_features_score_100(unbalanced, tmp_path):
    res = _oracle_run(unbalanced, "perfect", tmp_path, epochs=30, batch_size=8, knn_k=[1, 5])
    assert res.metrics["lin.top1"] == 100.0
    assert res.metrics["knn.top1"] == 100.0
    assert res.metrics["lin_a6.top1"] == 100.0


def test_oracle_constant_features_score_the_floor(unbalanced, tmp_path):
    # with one vector for every image a head can only learn the class prior (its bias): the majority class
    res = _oracle_run(unbalanced, "constant", tmp_path, epochs=30, batch_size=8, lrs=[0.1], n_last_blocks=[1],
                      avgpool=[False], knn_k=[200])
    assert res.metrics["lin.top1"] == res.metrics["floor.top1"]
    assert res.metrics["knn.top1"] == res.metrics["floor.top1"]
    np.testing.assert_array_equal(res.per_sample["lin.top1"].stats, res.per_sample["floor.top1"].stats)


def test_runner_logs_floor_and_per_sample_artifacts(unbalanced, workspace):
    rec = evaluate(build(EvalConfig, {"encoder": "builtin:tiny-vit", "suite": "cls.imagenet", "data": str(unbalanced),
                                      "workspace": str(workspace), "progress": False,
                                      "protocol": {"epochs": 2, "lrs": [0.01, 0.1]}}))
    for m in ("floor.top1", "floor.top5", "lin.top1", "knn.top1", "lin_a6.top1"):
        assert m in rec.metrics
    from harness.samples import PerSample
    import mlflow
    client = mlflow.MlflowClient(f"sqlite:///{workspace}/mlflow.db")
    names = {Path(a.path).name for a in client.list_artifacts(rec.run_id, "per_sample")}
    assert {"lin.top1.npz", "knn.top1.npz", "floor.top1.npz", "lin_a6.top1.npz"} <= names
    local = client.download_artifacts(rec.run_id, "per_sample/lin.top1.npz", str(workspace / "dl"))
    assert PerSample.load(local).value() == pytest.approx(rec.metrics["lin.top1"])


def test_a6_variant_is_the_best_last_block_cls_head_in_range(unbalanced, tmp_path):
    res = _oracle_run(unbalanced, "perfect", tmp_path, epochs=2, lrs=[1e-5, 1e-3, 0.05, 0.2])
    sel = res.selection["linear_a6"]
    head = sel["head"]
    assert head.startswith("lin.b1.lr") and float(head.split(".lr")[1]) in (1e-3, 0.05)
    assert sel["candidates"] == 2
    hold = {lr: res.metrics[f"lin.b1.lr{lr:g}.holdout_top1"] for lr in (1e-3, 0.05)}
    assert res.metrics["lin_a6.holdout_top1"] == max(hold.values())
    assert res.metrics["lin_a6.top1"] == res.metrics[f"{head}.val_top1"]
    none = _oracle_run(unbalanced, "perfect", tmp_path, epochs=1, lrs=[1e-5, 0.2])
    assert "lin_a6.top1" not in none.metrics and "not reported" in none.details["linear_a6"]


def test_single_candidate_skips_the_holdout(unbalanced, tmp_path):
    one = dict(epochs=2, lrs=[0.1], n_last_blocks=[1], avgpool=[False], knn_k=[10])
    res = _oracle_run(unbalanced, "perfect", tmp_path, **one)
    sel = res.selection["linear"]
    assert sel["trained_on"] == res.details["n_train"] == 17            # all of train, nothing held out
    assert sel["holdout"].startswith("skipped") and "lin.holdout_top1" not in res.metrics
    assert res.selection["knn"]["rule"].startswith("one k")
    refit = _oracle_run(unbalanced, "perfect", tmp_path, single_candidate="refit", **one)
    assert refit.selection["linear"]["trained_on"] == 17 and "refit" in refit.selection["linear"]["holdout"]
    assert "lin.holdout_top1" in refit.metrics                         # what a sweep optimises
    # no hold-out at all is fine when nothing is selected, refused when something is
    _oracle_run(unbalanced, "perfect", tmp_path, holdout_fraction=0, **one)
    with pytest.raises(ConfigError, match="protocol.holdout_fraction=0"):
        _oracle_run(unbalanced, "perfect", tmp_path, holdout_fraction=0, epochs=1, lrs=[0.1, 0.01])


@pytest.mark.parametrize("override, message", [
    ("protocol.holdout_fraction=1.5", "protocol.holdout_fraction=1.5: must be < 1"),
    ("protocol.holdout_fraction=-0.5", "protocol.holdout_fraction=-0.5: must be >= 0"),
    ("protocol.epochs=-1", "protocol.epochs=-1: must be >= 1"),
    ("protocol.knn_k=[0]", "protocol.knn_k[0]=0: must be >= 1"),
    ("protocol.lrs=[]", "protocol.lrs: must not be empty"),
    ("protocol.batch_size=0", "protocol.batch_size=0: must be >= 1"),
    ("protocol.knn_temperature=0", "protocol.knn_temperature=0.0: must be > 0"),
    ("protocol.a6_lr_range=[0.1,0.001]", "protocol.a6_lr_range"),
])
def test_out_of_range_options_are_refused_before_work(override, message, unbalanced, tmp_path, capsys):
    ws = tmp_path / "ws"
    assert main(["eval", "--encoder", "builtin:tiny-vit", "--suite", "cls.imagenet", "--data", str(unbalanced),
                 "--workspace", str(ws), override]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (ws / "mlflow.db").exists()


def test_paper_config_reproduces_the_paper_protocol():
    cfg = yaml.safe_load((ROOT / "configs" / "paper" / "cls_imagenet_dinov2.yaml").read_text())
    assert cfg["mode"] == "exact"                      # random-resized-crop + flip, as DINOv2/DINOv3 train
    cls = SUITES.get("cls.imagenet")
    opts = build(cls.Options, cfg["protocol"])
    assert opts.epochs == 10 and opts.iters_per_epoch == 1250 and opts.batch_size == 1024
    assert len(opts.lrs) * len(opts.n_last_blocks) * len(opts.avgpool) == 52
    assert opts.a6_lr_range == (1e-4, 0.1)
    assert cfg["head"] == "linear,knn"


def test_default_demo_protocol_is_valid_and_tiny_stays_small():
    cls = SUITES.get("cls.imagenet")
    for preset in ("tiny", "default"):
        build(cls.Options, cls.demo_protocol(preset))
    assert cls.demo_protocol("tiny")["epochs"] <= 3
