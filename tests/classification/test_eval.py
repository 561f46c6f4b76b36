"""End to end through the CLI's runner: MLflow run with all heads, reuse, determinism, bad input."""
import mlflow
import pytest

from fixtures import make_imagefolder
from harness.commands.cli import main
from harness.config import build
from harness.runner import EvalConfig, evaluate


def _cfg(data, ws, **kw):
    base = {"encoder": "builtin:tiny-vit", "suite": "cls.imagenet", "data": str(data), "workspace": str(ws),
            "progress": False, "protocol": {"epochs": 3}}
    base.update(kw)
    return build(EvalConfig, base)


@pytest.fixture(scope="module")
def imagefolder(tmp_path_factory):
    return make_imagefolder(tmp_path_factory.mktemp("if") / "data", n_classes=3, train_per_class=10)


def test_eval_logs_52_heads_selection_knn_and_reuses(imagefolder, workspace):
    rec = evaluate(_cfg(imagefolder, workspace))
    assert not rec.reused
    lin = [k for k in rec.metrics if k.startswith("lin.b") and k.endswith(".val_top1")]
    assert len(lin) == 52
    assert rec.metrics["lin.n_heads"] == 52
    for m in ("lin.top1", "lin.top5", "knn.top1", "knn.top5", "knn.k20.top1"):
        assert 0 <= rec.metrics[m] <= 100
    run = mlflow.MlflowClient(f"sqlite:///{workspace}/mlflow.db").get_run(rec.run_id)
    assert run.info.status == "FINISHED"
    for tag in ("encoder", "encoder_fingerprint", "suite", "head", "dataset", "mode", "config_hash", "git_sha",
                "harness_version", "dataset_fingerprint"):
        assert run.data.tags[tag]
    assert run.data.tags["head"] == "linear,knn"
    assert int(run.data.tags["cache_forwards"]) > 0
    assert run.data.params["protocol.epochs"] == "3"
    # the selected head's number is one of the 52 and was chosen on held-out train
    sel = [k for k in lin if rec.metrics[k.replace("val_top1", "holdout_top1")] == rec.metrics["lin.holdout_top1"]]
    assert any(rec.metrics[k] == rec.metrics["lin.top1"] for k in sel)

    again = evaluate(_cfg(imagefolder, workspace))
    assert again.reused and again.run_id == rec.run_id

    forced = evaluate(_cfg(imagefolder, workspace, force=True))
    assert not forced.reused and forced.run_id != rec.run_id
    run2 = mlflow.MlflowClient(f"sqlite:///{workspace}/mlflow.db").get_run(forced.run_id)
    assert run2.data.tags["cache_forwards"] == "0"         # every feature came from the cache
    assert forced.metrics["lin.top1"] == rec.metrics["lin.top1"]  # determinism on CPU


def test_same_seed_same_numbers_other_seed_differs(imagefolder, tmp_path):
    a = evaluate(_cfg(imagefolder, tmp_path / "a"))
    b = evaluate(_cfg(imagefolder, tmp_path / "b"))
    c = evaluate(_cfg(imagefolder, tmp_path / "c", seed=1))
    for ws, rec in (("a", a), ("b", b), ("c", c)):   # each workspace's own store holds its run
        client = mlflow.MlflowClient(f"sqlite:///{tmp_path / ws}/mlflow.db")
        assert client.get_run(rec.run_id).info.status == "FINISHED"
    keys = [k for k in a.metrics if k != "seconds"]
    assert {k: a.metrics[k] for k in keys} == {k: b.metrics[k] for k in keys}
    assert any(a.metrics[k] != c.metrics[k] for k in keys if k.endswith("holdout_top1"))


def test_exact_mode_runs_and_is_recorded(imagefolder, workspace):
    rec = evaluate(_cfg(imagefolder, workspace, mode="exact", head="linear",
                        protocol={"epochs": 1, "lrs": [0.01, 0.1], "n_last_blocks": [1]}))
    assert rec.tags["mode"] == "exact" and rec.metrics["lin.n_heads"] == 4


@pytest.mark.parametrize("argv, message", [
    (["--suite", "cls.imagenett"], "unknown suites 'cls.imagenett'. Did you mean: cls.imagenet"),
    (["--suite", "cls.imagenet", "--head", "dpt"], "head 'dpt' is not available for suite cls.imagenet"),
    (["--suite", "cls.imagenet", "--data", "/no/such/dir"], "data: path '/no/such/dir' does not exist"),
    (["--suite", "cls.imagenet", "protocol.epochz=1"], "unknown config key 'protocol.epochz'"),
    (["--suite", "cls.imagenet", "tracking_uri=http://127.0.0.1:9"], "is unreachable"),
])
def test_cli_bad_input(argv, message, imagefolder, workspace, capsys):
    argv = ["eval", "--encoder", "builtin:tiny-vit", "--workspace", str(workspace), *argv]
    if "--data" not in argv:
        argv += ["--data", str(imagefolder)]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_empty_class_folder_and_corrupt_image(tmp_path, workspace, capsys):
    data = make_imagefolder(tmp_path / "d", n_classes=2, train_per_class=3, val_per_class=2)
    (data / "train" / "n_empty").mkdir()
    assert main(["eval", "--encoder", "builtin:tiny-vit", "--suite", "cls.imagenet", "--data", str(data),
                 "--workspace", str(workspace)]) == 2
    err = capsys.readouterr().err
    assert f"class folder '{data / 'train' / 'n_empty'}' is empty" in err
    (data / "train" / "n_empty").rmdir()
    bad = data / "val" / "n00000000" / "broken.JPEG"
    bad.write_bytes(b"not a jpeg")
    assert main(["eval", "--encoder", "builtin:tiny-vit", "--suite", "cls.imagenet", "--data", str(data),
                 "--workspace", str(workspace), "--no-progress"]) == 2
    assert f"cannot read image '{bad}'" in capsys.readouterr().err
    assert not [p for p in (workspace / "cache").iterdir() if ".tmp-" in p.name]


def test_validate_runs_one_batch_without_logging(imagefolder, workspace, capsys):
    assert main(["validate", "--encoder", "builtin:tiny-vit", "--suite", "cls.imagenet", "--data",
                 str(imagefolder), "--workspace", str(workspace)]) == 0
    out = capsys.readouterr().out
    assert '"linear_heads": 52' in out and "ok: config resolved" in out
    assert not (workspace / "mlflow.db").exists()
    assert not any((workspace / "cache").iterdir()) if (workspace / "cache").exists() else True


def test_real_dinov2_focus_end_to_end(imagefolder, workspace):
    rec = evaluate(_cfg(imagefolder, workspace, encoder="builtin:dinov2-s14-focus",
                        protocol={"epochs": 2, "image_size": 112}))
    assert len([k for k in rec.metrics if k.endswith(".val_top1")]) == 52
    assert rec.metrics["knn.top1"] > 100 / 3  # real features separate colour/shape classes above chance
    assert rec.tags["encoder_fingerprint"]
