"""Bad input stops before any output (#14); per-stage data (#13.10); the boost.* run tags of a candidate."""
import json

import pytest

from harness.commands.cli import main
from harness.config import build

from .conftest import make_dataset, tiny_overrides

OVERRIDES = ["max_length=512",
         "stage1.batch_size=2", "stage1.micro_batch_size=2", "stage2.batch_size=2", "stage2.micro_batch_size=2",
         "stage3.batch_size=2", "stage3.micro_batch_size=2", "stage1.max_steps=1", "stage2.max_steps=1",
         "stage3.max_steps=1"]


def boost(*args, extra=()):
    """`spatialboost boost` with the tiny models (flags first: argparse wants the key=value overrides last)."""
    return main(["boost", "--encoder", "builtin:tiny-vit", "--no-progress", *args, *OVERRIDES, *extra])


def _runs(ws):
    """Every MLflow run of the workspace store (none when the store was never created)."""
    if not (ws / "mlflow.db").exists():
        return []
    from mlflow.tracking import MlflowClient
    c = MlflowClient(tracking_uri=f"sqlite:///{ws / 'mlflow.db'}")
    return [r for e in c.search_experiments() for r in c.search_runs([e.experiment_id])]


def _nothing_written(ws):
    assert not (ws / "boost").exists() or not any((ws / "boost").iterdir())
    assert _runs(ws) == []


@pytest.mark.parametrize("lm,match", [("does-not-exist", "is not a local folder"),
                                      ("builtin:tiny-qwen3", "did you mean builtin:tiny-qwen2")])
def test_bad_lm_is_a_clear_error_before_any_output(qa_file, tmp_path, capsys, lm, match):
    ws = tmp_path / "ws"
    rc = boost("--data", str(qa_file), "--lm", lm, "--workspace", str(ws))
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: lm=") and match in err and "Traceback" not in err
    _nothing_written(ws)


def test_missing_or_malformed_data_leaves_no_run(qa_file, tmp_path, capsys):
    ws = tmp_path / "ws"
    rc = boost("--data", str(tmp_path / "missing.jsonl"), "--workspace", str(ws))
    err = capsys.readouterr().err
    assert rc == 2 and "missing.jsonl" in err and "does not exist" in err
    rc = boost("--data", str(qa_file), "--workspace", str(ws), extra=[f"stage3.data={tmp_path / 'nope.jsonl'}"])
    assert rc == 2 and "stage3.data=" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text(qa_file.read_text().splitlines()[0] + "\n{not json\n")
    rc = boost("--data", str(bad), "--workspace", str(ws))
    assert rc == 2 and "bad.jsonl:2: not valid JSON" in capsys.readouterr().err
    _nothing_written(ws)
    assert not list(ws.rglob("pipeline.json"))


def test_failure_mid_training_marks_runs_failed(qa_file, tmp_path):
    from encoders.spatialboost.trainer import BoostConfig, BoostTrainer
    ov = tiny_overrides(qa_file, tmp_path / "ws")
    for s in (1, 2, 3):
        ov[f"stage{s}"] = {**ov[f"stage{s}"], "max_steps": 1}
    tr = BoostTrainer(build(BoostConfig, ov), echo=lambda m: None)
    real = tr.train_stage

    def boom(stage, *a):
        if stage == 2:
            raise RuntimeError("disk full")
        return real(stage, *a)
    tr.train_stage = boom
    with pytest.raises(RuntimeError, match="disk full"):
        tr.run()
    runs = {r.info.run_name: r for r in _runs(tmp_path / "ws")}
    assert runs["stage1"].info.status == "FINISHED"
    parent = next(r for n, r in runs.items() if n.startswith("boost "))
    assert parent.info.status == "FAILED" and "disk full" in parent.data.tags["error"]


def test_per_stage_data_and_shared_file_warning(tmp_path, capsys):
    from encoders.spatialboost.data import file_id
    from encoders.spatialboost.trainer import BoostConfig, BoostTrainer
    files = {s: make_dataset(tmp_path / f"d{s}", n=4, seed=s) for s in (1, 2, 3)}
    ov = tiny_overrides(files[3], tmp_path / "ws", tracking=False)
    for s in (1, 2, 3):
        ov[f"stage{s}"] = {**ov[f"stage{s}"], "data": str(files[s])}
    msgs = []
    tr = BoostTrainer(build(BoostConfig, ov), echo=msgs.append)
    assert not tr.warnings and not any("warning" in m for m in msgs)
    assert {s: tr.data_for(s).id for s in (1, 2, 3)} == {s: file_id(files[s]) for s in (1, 2, 3)}
    # one file for stages 2 and 3 (stage 1 has its own): warned, naming the stages
    ov["stage2"] = {**ov["stage2"], "data": str(files[3])}
    tr = BoostTrainer(build(BoostConfig, ov), echo=msgs.append)
    assert len(tr.warnings) == 1 and "serves stages 2, 3" in tr.warnings[0]
    # `boost --data X`: X for every stage, with the warning on stderr
    rc = boost("--data", str(files[3]), "--workspace", str(tmp_path / "ws2"))
    out = capsys.readouterr()
    assert rc == 0 and "warning:" in out.err and "serves stages 1, 2, 3" in out.err
    assert out.out.strip().splitlines()[-1].startswith("boosted:")


def test_overriding_some_stage_keys_keeps_that_stages_defaults():
    """`stage1.batch_size=8` must not reset stage 1's lr to another stage's default (it once became 2e-5)."""
    from encoders.spatialboost.trainer import PAPER_DEFAULTS, BoostConfig
    cfg = build(BoostConfig, {"stage1": {"batch_size": 8}, "stage2": {"max_steps": 3}, "stage3": {"data": "x"}})
    assert (cfg.stage1.lr, cfg.stage1.batch_size) == (PAPER_DEFAULTS[1][0], 8)
    assert (cfg.stage2.lr, cfg.stage2.batch_size) == PAPER_DEFAULTS[2]
    assert (cfg.stage3.lr, cfg.stage3.batch_size) == PAPER_DEFAULTS[3]
    assert build(BoostConfig, {}).stage1 == build(BoostConfig, {"stage1": {}}).stage1
