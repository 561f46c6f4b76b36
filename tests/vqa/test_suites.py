"""``vqa.*`` end to end on the hand-made layout: trainer stages 1-2 (encoder frozen), lmms-eval in-process,
MLflow run with per-sample records and lmms-eval's samples; the VLM is trained once per key and reused."""
from __future__ import annotations

import json

import numpy as np
import pytest

from harness.config import build
from harness.registry import SUITES
from harness.runner import EvalConfig, evaluate

LOCAL = ("vqa.blink_depth_local", "vqa.spatialrgpt_qual_local", "vqa.spatialrgpt_quant_local")


def _cfg(suite, data, ws, encoder="builtin:tiny-vit", **extra):
    proto = {**SUITES.get(suite).demo_protocol("tiny"), **extra}
    return build(EvalConfig, {"encoder": encoder, "suite": suite, "data": str(data), "workspace": str(ws),
                              "progress": False, "protocol": proto})


@pytest.fixture(scope="module")
def run_ws(tmp_path_factory):
    return tmp_path_factory.mktemp("vqa-runs")


def test_local_suites_end_to_end(layout, run_ws):
    import mlflow
    from harness.registry import build_encoder
    from harness.workspace import open_workspace
    enc = build_encoder("builtin:tiny-vit", open_workspace(run_ws))
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    recs = {name: evaluate(_cfg(name, layout, run_ws)) for name in LOCAL}
    vlm_dirs = list((run_ws / "vqa" / "vlm").iterdir())
    assert len(vlm_dirs) == 1                         # one VLM per (encoder, LM, data, recipe), shared by tasks
    from safetensors.torch import load_file
    ck = sorted((vlm_dirs[0] / "stage2").glob("ckpt-*"))[-1]
    saved = load_file(str(ck / "model.safetensors"))
    assert saved and not any(k.startswith("encoder.") for k in saved)      # the encoder is frozen
    assert any(k.startswith("lm.") for k in saved) and any(k.startswith("projector.") for k in saved)
    enc_after = build_encoder("builtin:tiny-vit", open_workspace(run_ws))
    assert all(np.array_equal(before[k].numpy(), v.numpy()) for k, v in enc_after.state_dict().items())
    client = mlflow.tracking.MlflowClient(f"sqlite:///{run_ws / 'mlflow.db'}")
    for name, rec in recs.items():
        assert 0 <= rec.metrics["acc"] <= 1 and 0 <= rec.metrics["floor.acc"] <= 1
        assert 1 <= rec.metrics["n"] <= 5                                    # tiny preset: limit 5
        arts = [a.path for a in client.list_artifacts(rec.run_id, "per_sample")]
        assert {"per_sample/acc.npz", "per_sample/floor.acc.npz"} <= set(arts)
        local = client.download_artifacts(rec.run_id, "lmms_eval_samples")
        rows = [json.loads(x) for f in sorted(__import__("pathlib").Path(local).glob("*.jsonl"))
                for x in f.read_text().splitlines()]
        assert len(rows) == rec.metrics["n"] and np.mean([r["acc"] for r in rows]) == pytest.approx(rec.metrics["acc"])
        assert np.mean([r["floor"] for r in rows]) == pytest.approx(rec.metrics["floor.acc"])
        if name == "vqa.spatialrgpt_quant_local":              # no 2D shortcut defined for quantities
            assert "floor_cue.acc" not in rec.metrics
        else:
            assert "per_sample/floor_cue.acc.npz" in arts and 0 <= rec.metrics["floor_cue.acc"] <= 1
    again = evaluate(_cfg("vqa.blink_depth_local", layout, run_ws))
    assert again.reused and again.metrics["acc"] == recs["vqa.blink_depth_local"].metrics["acc"]
    # Table 9 shows the 2D shortcut as its own floor row (floor_cue.acc, a floor kind), its Δ row with a CI,
    # and the signal check compares against it when it is the harder floor
    from reports.build import build_report
    md = build_report(f"sqlite:///{run_ws / 'mlflow.db'}", "spatialboost", run_ws / "report", tables=["table9"],
                      formats=("md",), resamples=200)["md"].read_text()
    t9 = md[md.index("### Table 9"):]
    cue_row = next(l for l in t9.splitlines() if l.startswith("| _floor (2D shortcut)_"))
    qual, quan, depth = cue_row.split(" | ")[1:4]
    assert qual == f"_{recs['vqa.spatialrgpt_qual_local'].metrics['floor_cue.acc']:.2f}_"
    assert quan == "-" and depth == f"_{recs['vqa.blink_depth_local'].metrics['floor_cue.acc']:.2f}_"
    cue_delta = next(l for l in t9.splitlines() if l.startswith("| _Δ baseline − floor (cue)_ |"))
    assert "[" in cue_delta.split(" | ")[1]                       # paired CI from the per-sample records


def test_bf16_trained_vlm_is_evaluated(layout, tmp_path):
    """precision=bf16 stores the frozen encoder in bf16 and trains under autocast; the evaluation must run the
    same way (regression: the bf16 patch tokens met the fp32 projector outside autocast)."""
    proto = SUITES.get("vqa.blink_depth_local").demo_protocol("tiny")
    rec = evaluate(build(EvalConfig, {"encoder": "builtin:tiny-vit", "suite": "vqa.blink_depth_local",
                                      "data": str(layout), "workspace": str(tmp_path), "progress": False,
                                      "precision": "bf16", "protocol": proto}))
    assert rec.tags["precision"] == "bf16" and rec.metrics["vlm_train_s"] > 0
    assert 1 <= rec.metrics["n"] <= 5 and 0 <= rec.metrics["acc"] <= 1


def test_floor_is_the_train_majority(layout, tmp_path):
    from suites.vqa.suite import SpatialRGPTQualLocalSuite, VQAOptions
    from suites.vqa.tasks import GenOptions, generate, read_docs
    root = generate(layout, tmp_path / "gen", GenOptions(depth_pairs=2, object_pairs=2))
    suite = SpatialRGPTQualLocalSuite(VQAOptions())
    docs = read_docs(root / "spatialrgpt_qual_local.jsonl")
    floor, _ = suite.floor(docs, root)
    train = read_docs(root / "train" / "spatialrgpt_qual_local.jsonl")
    for d, f in zip(docs, floor):          # same geometry in every view: the train majority is always right
        same = [t["target"] for t in train if t["qtype"] == d["qtype"]]
        assert f == float(max(set(same), key=same.count) == d["target"])


def test_bad_data_and_bad_protocol(tmp_path, run_ws):
    from harness.errors import UserError
    with pytest.raises(UserError, match="neither blink_depth_local.jsonl"):
        evaluate(_cfg("vqa.blink_depth_local", tmp_path, run_ws))
    with pytest.raises(UserError, match="protocol.tolerance"):
        build(SUITES.get("vqa.spatialrgpt_quant_local").Options, {"tolerance": 0}, prefix="protocol.")
    with pytest.raises(UserError, match="protocol.stage2_batch"):
        build(SUITES.get("vqa.blink_depth_local").Options, {"stage2_batch": 0}, prefix="protocol.")


def test_paper_and_demo_protocols_build():
    for name in (*LOCAL, "vqa.lmms"):
        cls = SUITES.get(name)
        for preset in ("tiny", "default"):
            build(cls.Options, cls.demo_protocol(preset), prefix="protocol.")
        o = cls.Options()
        assert (o.stage1_lr, o.stage1_batch, o.stage2_lr, o.stage2_batch, o.feature_layer) == (2e-3, 256, 2e-5, 128, -2)


@pytest.mark.slow
def test_real_benchmark_without_local_data_and_unknown_name(layout, run_ws):
    """lmms-eval's full task index (~2000 tasks): a typo lists close names; a real benchmark whose data is not
    on disk stops before any VLM is trained, with the reason and where to read how to provide it."""
    from harness.errors import UserError
    with pytest.raises(UserError, match="Did you mean: gqa"):
        evaluate(_cfg("vqa.lmms", layout, run_ws, task="gqaa"))
    n_vlm = len(list((run_ws / "vqa" / "vlm").glob("*"))) if (run_ws / "vqa" / "vlm").exists() else 0
    with pytest.raises(UserError, match="not available offline"):
        evaluate(_cfg("vqa.gqa", layout, run_ws))
    assert n_vlm == (len(list((run_ws / "vqa" / "vlm").glob("*"))) if (run_ws / "vqa" / "vlm").exists() else 0)


def test_cue_floor_scores_the_2d_shortcut(layout, tmp_path):
    """The hand-made layout: the chair (left, lower, smaller in 2D and 3D) and the sofa; depth is a left-right
    ramp, independent of the image row, so the balanced depth pairs leave the "lower is closer" cue at 50 %."""
    from suites.vqa.suite import BlinkDepthLocalSuite, SpatialRGPTQualLocalSuite, SpatialRGPTQuantLocalSuite, VQAOptions
    from suites.vqa.tasks import GenOptions, generate, read_docs
    root = generate(layout, tmp_path / "gen", GenOptions(depth_pairs=4, object_pairs=2))
    qual = read_docs(root / "spatialrgpt_qual_local.jsonl")
    cue = SpatialRGPTQualLocalSuite(VQAOptions()).cue_floor(qual)
    assert len(cue) == len(qual) > 0
    assert cue == [1.0] * len(qual)          # the chair is left, lower and smaller in the image as in 3D
    flipped = [{**d, "boxes_xyxy": d["boxes_xyxy"][::-1]} for d in qual]    # swap the regions' boxes: all wrong
    assert SpatialRGPTQualLocalSuite(VQAOptions()).cue_floor(flipped) == [0.0] * len(qual)
    depth = read_docs(root / "blink_depth_local.jsonl")
    dcue = BlinkDepthLocalSuite(VQAOptions()).cue_floor(depth)
    assert np.mean(dcue) == 0.5
    assert SpatialRGPTQuantLocalSuite(VQAOptions()).cue_floor(read_docs(root / "spatialrgpt_quant_local.jsonl")) is None
