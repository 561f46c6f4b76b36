"""The three suites end to end (runner, MLflow, per-sample checks) on the tiny world's generated files and
on hand-made files in each dataset's real format; the tiny demo protocol passes the options' checks."""
from __future__ import annotations

import math

import pytest

from harness.config import build
from harness.registry import SUITES
from harness.runner import EvalConfig, evaluate

NAMES = ("lexicon3d.scanrefer", "lexicon3d.scanqa", "lexicon3d.sqa3d")


def _cfg(suite, data, ws, **extra):
    proto = {**SUITES.get(suite).demo_protocol("tiny"), **extra}
    return build(EvalConfig, {"encoder": "builtin:tiny-vit", "suite": suite, "data": str(data),
                              "workspace": str(ws), "progress": False, "protocol": proto})


@pytest.fixture(scope="module")
def run_ws(tmp_path_factory):
    return tmp_path_factory.mktemp("lexlang-runs")


def _check(rec, name):
    spec = SUITES.get(name).spec
    for m in spec.metrics:
        if m.name.startswith("em1.") or m.name == "meteor":   # types absent from a small val split are NaN;
            continue                                         # METEOR is off in the tiny preset (missing, not 0)
        assert m.name in rec.metrics, m.name
        assert 0 <= rec.metrics[m.name] <= (1000 if m.name == "cider" else 100), (m.name, rec.metrics[m.name])
    assert any(k.startswith("floor.") for k in rec.metrics)


@pytest.mark.parametrize("name", NAMES)
def test_suite_on_the_world(name, world_lang, run_ws):
    rec = evaluate(_cfg(name, world_lang, run_ws))
    _check(rec, name)
    again = evaluate(_cfg(name, world_lang, run_ws))
    assert again.reused and again.metrics[SUITES.get(name).spec.primary] == rec.metrics[SUITES.get(name).spec.primary]


@pytest.mark.parametrize("name", NAMES)
def test_suite_on_real_formats(name, real_format, run_ws):
    rec = evaluate(_cfg(name, real_format, run_ws))
    _check(rec, name)
    if name == "lexicon3d.sqa3d":
        assert not math.isnan(rec.metrics["em1.what"])      # every fixture question starts with "What"


def test_demo_and_paper_protocols_build():
    for name in NAMES:
        cls = SUITES.get(name)
        for preset in ("tiny", "default"):
            build(cls.Options, cls.demo_protocol(preset), prefix="protocol.")
        o = build(cls.Options, {}, prefix="protocol.")
        assert o.epochs in (30, 35)                               # the paper's epochs stay the default


def test_optional_pretraining_stage(real_format, run_ws, tmp_path):
    """The 3D-Language first stage: a JSONL of {scene, text} captions trains the Q-Former before the QA
    epochs (its loss is logged); an unknown scene in it is an error naming the file and the line."""
    import json

    from suites.images import DataError
    from suites.lexicon3d.language.scenes import scannet_root
    from suites.lexicon3d.scannet import ScanNetData
    scenes = [s.name for s in ScanNetData(scannet_root(real_format)).scenes]
    good = tmp_path / "lang3d.jsonl"
    good.write_text("\n".join(json.dumps({"scene": s, "text": f"a room called {s}"}) for s in scenes) + "\n")
    rec = evaluate(_cfg("lexicon3d.scanqa", real_format, run_ws, pretrain=str(good), pretrain_epochs=2))
    result = json.loads(next(run_ws.rglob(f"{rec.run_id}/**/result.json")).read_text())
    details = result.get("details", result)
    assert len(details["pretrain_loss"]) == 2 and not math.isnan(rec.metrics["em1"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"scene": scenes[0], "text": "ok"}) + "\n" + json.dumps({"scene": "scene9999_00", "text": "x"}))
    with pytest.raises(DataError, match=r"bad\.jsonl' line 2: unknown scene 'scene9999_00'"):
        evaluate(_cfg("lexicon3d.scanqa", real_format, run_ws, pretrain=str(bad), pretrain_epochs=1))


def test_classify_head_floors_and_oracle(world_lang, run_ws):
    """The closed-set head runs end to end (runner checks each PerSample reduces to its metric); floor.em1
    is the majority fitting answer per question type, recomputed here from the files; features=oracle runs."""
    import json
    from collections import Counter

    import numpy as np

    from suites.lexicon3d.language.common import read_split, scene_objects, split_names
    from suites.lexicon3d.language.metrics import exact_match
    from suites.lexicon3d.language.scenes import scannet_root
    from suites.lexicon3d.qa3d import prefix_type
    from suites.lexicon3d.scannet import ScanNetData
    def cfg(**extra):
        return build(EvalConfig, {"encoder": "builtin:tiny-vit", "suite": "lexicon3d.scanqa", "data": str(world_lang),
                                  "workspace": str(run_ws), "progress": False, "head": "classify",
                                  "protocol": {**SUITES.get("lexicon3d.scanqa").demo_protocol("tiny"), "epochs": 3,
                                               **extra}})
    rec = evaluate(cfg())
    _check(rec, "lexicon3d.scanqa")
    result = json.loads(next(run_ws.rglob(f"{rec.run_id}/**/result.json")).read_text())
    details = result.get("details", result)
    assert details["head"] == "classify" and len(details["held_out_em1_curve"]) == 3
    # independent floor: majority answer per two-word question prefix over the fitting scenes
    scannet = scannet_root(world_lang)
    objs = scene_objects(scannet, ScanNetData(scannet))
    train, _ = read_split(world_lang, "scanqa", "train", objs)
    val, _ = read_split(world_lang, "scanqa", "val", objs)
    fit_names = set(details["fit_scenes"])
    by_t = {}
    for q in train:
        if q.scene in fit_names:
            by_t.setdefault(" ".join(q.question.lower().split()[:2]).rstrip("?"), Counter())[q.answers[0]] += 1
    top = sum(by_t.values(), Counter()).most_common(1)[0][0]
    expect = np.mean([exact_match(by_t[t].most_common(1)[0][0] if (t := prefix_type(q.question)) in by_t else top,
                                  q.answers) for q in val])
    assert rec.metrics["floor.em1"] == pytest.approx(100 * expect)
    oracle = evaluate(cfg(features="oracle"))
    assert not math.isnan(oracle.metrics["em1"]) and oracle.metrics["floor.em1"] == rec.metrics["floor.em1"]


def test_one_head_at_a_time(world_lang, run_ws):
    from harness.errors import UserError
    cfg = build(EvalConfig, {"encoder": "builtin:tiny-vit", "suite": "lexicon3d.sqa3d", "data": str(world_lang),
                             "workspace": str(run_ws), "progress": False, "head": "qformer,classify",
                             "protocol": SUITES.get("lexicon3d.sqa3d").demo_protocol("tiny")})
    with pytest.raises(UserError, match="one head at a time"):
        evaluate(cfg)
