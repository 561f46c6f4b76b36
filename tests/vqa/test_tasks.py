"""Local task generation: answers agree with the known geometry of the hand-made layout; ids are stable."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from suites.vqa.lmms_tasks import UnknownTaskError, write_task
from suites.vqa.tasks import TASKS, GenOptions, VQADataError, cue_answer, depth_questions, generate, read_docs


@pytest.fixture(scope="module")
def generated(layout, tmp_path_factory):
    return generate(layout, tmp_path_factory.mktemp("gen") / "vqa", GenOptions(depth_pairs=4, object_pairs=2),
                    workers=2)


def test_depth_answers_follow_the_depth_map(generated, layout):
    docs = read_docs(generated / "blink_depth_local.jsonl")
    assert len(docs) == 2 * 4                               # 2 val views x 4 pairs
    assert [d["answer_index"] for d in docs[:4]] == [0, 1, 0, 1]     # balanced letters
    for d in docs:
        view = d["id"].split("#")[0]
        depth = np.asarray(Image.open(layout / f"images/{view}_depth.png")) / 1000
        (ya, xa), (yb, xb) = d["points_yx"]
        closer = 0 if depth[ya, xa] < depth[yb, xb] else 1
        assert closer == d["answer_index"]
        assert (xa < xb) == (closer == 0)                    # the ramp: further left = closer
        assert abs(depth[ya, xa] - depth[yb, xb]) / max(depth[ya, xa], depth[yb, xb]) >= 0.2
        marked = np.asarray(Image.open(generated / d["image"]).convert("RGB")).astype(int)
        assert marked.shape[:2] == depth.shape
    train = read_docs(generated / "train" / "blink_depth_local.jsonl")
    assert len(train) == 4 * 4 and not {d["id"] for d in train} & {d["id"] for d in docs}
    for d in docs + train:                                   # the stored cue flag is the geometry's
        (ya, _), (yb, _) = d["points_yx"]
        near, far = (ya, yb) if d["answer_index"] == 0 else (yb, ya)
        assert d["cue_agrees"] == (near > far)
    for view in range(0, len(train), 4):                     # per view: 2 pairs where the lower point is closer, 2 not
        assert sum(d["cue_agrees"] for d in train[view:view + 4]) == 2


def _floor_and_wall(H=60, W=80):
    """A camera looking at a floor (depth falls from 2 m at the bottom row to 6 m at the horizon, row 30) and a
    wall at 6 m above it, with a box at 1.5 m in the upper middle: the lower point is closer except on the box."""
    depth = np.full((H, W), 6.0)
    depth[30:] = np.linspace(6.0, 2.0, H - 30)[:, None]
    depth[8:22, 30:50] = 1.5
    return depth


def test_depth_pairs_defeat_the_lower_is_closer_shortcut():
    rec = {"id": "scene_00000/000"}
    depth = _floor_and_wall()
    qs = depth_questions(rec, depth, GenOptions(depth_pairs=8, depth_tries=2000))
    assert len(qs) == 8
    assert [q["answer_index"] for q in qs] == [0, 1] * 4
    lower_is_closer = [(0 if q["points"][0][0] > q["points"][1][0] else 1) == q["answer_index"] for q in qs]
    assert sum(lower_is_closer) == 4                         # the 2D cue scores exactly 50 %
    assert lower_is_closer == [q["cue_agrees"] for q in qs]
    for q in qs:
        (ya, xa), (yb, xb) = q["points"]
        closer = 0 if depth[ya, xa] < depth[yb, xb] else 1
        assert closer == q["answer_index"]
    only_floor = np.tile(np.linspace(6.0, 2.0, 60)[:, None], (1, 80))   # no pair can disagree: one cell, then stop
    assert len(depth_questions(rec, only_floor, GenOptions(depth_pairs=8))) == 1


def test_cue_answer_is_the_2d_shortcut():
    depth_doc = {"qtype": "depth", "points_yx": [[50, 10], [20, 60]], "answer_index": 1}
    assert cue_answer(depth_doc) == 0                        # A is lower in the image
    boxes = {"qtype": "leftright", "kind": "qualitative", "boxes_xyxy": [[0, 30, 10, 40], [50, 0, 70, 10]]}
    assert cue_answer(boxes) == "left"
    assert cue_answer({**boxes, "qtype": "abovebelow"}) == "below"
    assert cue_answer({**boxes, "qtype": "size"}) == "smaller"
    assert cue_answer({"qtype": "distance", "kind": "quantitative", "boxes_xyxy": boxes["boxes_xyxy"]}) is None
    assert cue_answer({"qtype": "size", "kind": "qualitative"}) is None     # a GEN_VERSION 1 doc: no boxes


def test_relations_and_quantities(generated):
    qual = read_docs(generated / "spatialrgpt_qual_local.jsonl")
    quant = read_docs(generated / "spatialrgpt_quant_local.jsonl")
    assert qual and quant
    for d in qual:                  # (chair, sofa) or (sofa, chair): chair is left, lower, smaller
        assert d["target"] in d["options"]
        assert d["answer"].lower().count(d["target"]) == 1
    sizes = {"width": {0.5, 2.0}, "height": {0.9, 1.0}}
    for d in quant:
        if d["qtype"] == "distance":   # centres (0.25, 0.2, 0.45) and (3.0, 0.5, 1.0)
            assert d["target_value"] == pytest.approx(np.linalg.norm([2.75, 0.3, 0.55]), rel=1e-6)
        else:
            assert any(d["target_value"] == pytest.approx(v) for v in sizes[d["qtype"]])
    conv = [json.loads(x) for x in (generated / "train" / "stage2.jsonl").read_text().splitlines()]
    assert all(c["conversations"][0]["value"].startswith("<image>\n") for c in conv)


def test_ids_are_stable_and_independent_of_workers(generated, layout, tmp_path):
    again = generate(layout, tmp_path / "again", GenOptions(depth_pairs=4, object_pairs=2), workers=1)
    for t in TASKS:
        ids = [d["id"] for d in read_docs(generated / f"{t}.jsonl")]
        assert [d["id"] for d in read_docs(again / f"{t}.jsonl")] == ids
    files = sorted(p.relative_to(generated) for p in generated.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for f in files:                      # two processes and one write the same bytes, in the same order
        assert (generated / f).read_bytes() == (again / f).read_bytes(), f


def test_missing_dataset_and_unknown_task_are_clear(generated, tmp_path):
    with pytest.raises(VQADataError, match="annotations.jsonl"):
        generate(tmp_path / "nowhere", tmp_path / "out")
    with pytest.raises(VQADataError, match="spatialrgpt_qual_local.jsonl' does not exist"):
        write_task("spatialrgpt_qual_local", tmp_path, tmp_path / "t")
    with pytest.raises(UnknownTaskError, match="Did you mean: blink_depth_local"):
        write_task("blink_depth_locl", generated, tmp_path / "t")
