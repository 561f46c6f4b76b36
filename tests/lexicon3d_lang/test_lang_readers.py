"""Readers of ScanRefer / ScanQA / SQA3D files, the world's generated files, and bad input."""
from __future__ import annotations

import json
import shutil

import pytest

from suites.images import DataError
from suites.lexicon3d.language import annotations as A
from suites.lexicon3d.language.common import read_split, scene_objects
from suites.lexicon3d.language.scenes import scannet_root
from suites.lexicon3d.scannet import ScanNetData


def _objects(root):
    sc = scannet_root(root)
    return scene_objects(sc, ScanNetData(sc))


def test_real_formats_read(real_format):
    objs = _objects(real_format)
    refer, _ = read_split(real_format, "scanrefer", "train", objs)
    assert refer and all(r.uid.count("/") == 2 and r.description.startswith("the ") for r in refer)
    qa, _ = read_split(real_format, "scanqa", "val", objs)
    assert qa and qa[0].question == "How many objects are there?" and qa[0].answers[0].isdigit()
    sqa, files = read_split(real_format, "sqa3d", "train", objs)
    assert len(files) == 2 and sqa[0].situation.startswith("I am facing") and sqa[0].qtype == "What"


def test_world_files_are_consistent_with_boxes(world_lang):
    """Every generated record names a real scene/object, counting answers match the boxes file."""
    objs = _objects(world_lang)
    for split in ("train", "val"):
        refer, _ = read_split(world_lang, "scanrefer", split, objs)
        assert len({r.uid for r in refer}) == len(refer)
        qa, _ = read_split(world_lang, "scanqa", split, objs)
        for q in qa:
            if q.question.startswith("how many"):
                names = [objs[q.scene].names[objs[q.scene].index(i)] for i in q.object_ids]
                assert len(set(names)) == 1
                assert q.answers[0] == ["zero", "one", "two", "three", "four", "five", "six"][len(q.object_ids)]
            if q.question.startswith("is there a "):         # presence: yes iff the class is in the boxes file
                cat = q.question[len("is there a "):-len(" in the room?")]
                assert q.answers[0] == ("yes" if cat in objs[q.scene].names else "no")
        presence = [q.answers[0] for q in qa if q.question.startswith("is there a ")]
        assert presence and presence.count("yes") == presence.count("no")      # balanced per scene
        sqa, _ = read_split(world_lang, "sqa3d", split, objs)
        assert all(q.situation.startswith("I am standing by the") for q in sqa)


def test_world_descriptions_single_out_their_object(world_lang):
    """Generator v3: at most REFER_PER_OBJECT descriptions per object; within a scene no description text
    names two objects; every size-rank / anchor-distance claim holds in the boxes file."""
    import re
    from collections import defaultdict

    import numpy as np

    from suites.lexicon3d.language.world import REFER_PER_OBJECT, plural
    objs = _objects(world_lang)
    checked = 0
    for split in ("train", "val"):
        refer, _ = read_split(world_lang, "scanrefer", split, objs)
        owner, per_obj = defaultdict(set), defaultdict(int)
        for r in refer:
            owner[(r.scene, r.description)].add(r.object_id)
            per_obj[(r.scene, r.object_id)] += 1
        assert max(per_obj.values()) <= REFER_PER_OBJECT
        assert all(len(v) == 1 for v in owner.values()), [k for k, v in owner.items() if len(v) > 1][:3]
        for r in refer:
            o = objs[r.scene]
            seen = o.points != 0
            c = o.centers()[:, :2]
            same = [j for j in range(len(o.ids)) if seen[j] and o.names[j] == r.object_name]
            i = o.index(r.object_id)
            m = re.fullmatch(r"the (.+) (closest to|farthest from) the (.+)\.", r.description) or re.fullmatch(
                r"of the (.+), this one is (nearest to|the farthest away from) the (.+)\.", r.description)
            if m:
                assert m.group(1) in (r.object_name, plural(r.object_name))
                a = [j for j in range(len(o.ids)) if seen[j] and o.names[j] == m.group(3)]
                assert len(a) == 1                                  # the anchor is unique in the scene
                d = {j: float(np.linalg.norm(c[j] - c[a[0]])) for j in same}
                pick = min(d, key=d.get) if m.group(2) in ("closest to", "nearest to") else max(d, key=d.get)
                assert pick == i and len(same) > 1
                checked += 1
            if r.description.endswith(("the largest one.", "the smallest one.")):
                vol = {j: float(np.prod(o.sizes()[j])) for j in same}
                pick = max(vol, key=vol.get) if "largest" in r.description else min(vol, key=vol.get)
                assert pick == i
                checked += 1
    assert checked > 0


def test_question_types():
    assert [A.question_type(q) for q in ("What is it?", "is it red", "How many", "Can I sit", "Which one",
                                         "Where is")] == ["What", "Is", "How", "Can", "Which", "Others"]


@pytest.mark.parametrize("kind,field,value,expect", [
    ("scanrefer", "scene_id", "scene9999_00", "scene9999_00"),
    ("scanrefer", "object_id", "4242", "object_id 4242"),
    ("scanqa", "scene_id", "scene9999_00", "scene9999_00"),
    ("scanqa", "object_ids", [4242], "object_id 4242"),
])
def test_unknown_scene_or_object_names_file_and_id(real_format, tmp_path, kind, field, value, expect):
    root = tmp_path / "bad"
    shutil.copytree(real_format, root, symlinks=True)
    path = A.find(root, kind, "train")
    recs = json.loads(path.read_text())
    recs[1][field] = value
    path.write_text(json.dumps(recs))
    with pytest.raises(DataError) as e:
        read_split(root, kind, "train", _objects(root))
    assert str(path) in str(e.value) and expect in str(e.value)


def test_sqa3d_unknown_scene_and_missing_answer(real_format, tmp_path):
    root = tmp_path / "bad"
    shutil.copytree(real_format, root, symlinks=True)
    qp = A.find(root, "sqa3d_q", "val")
    d = json.loads(qp.read_text())
    d["questions"][0]["scene_id"] = "scene7777_00"
    qp.write_text(json.dumps(d))
    with pytest.raises(DataError, match="scene7777_00") as e:
        read_split(root, "sqa3d", "val", _objects(root))
    assert str(qp) in str(e.value)
    d["questions"][0]["question_id"] = 987654
    qp.write_text(json.dumps(d))
    with pytest.raises(DataError, match="987654"):
        read_split(root, "sqa3d", "val", _objects(root))


def test_malformed_files(real_format, tmp_path):
    root = tmp_path / "bad"
    shutil.copytree(real_format, root, symlinks=True)
    path = A.find(root, "scanqa", "train")
    path.write_text("{not json")
    with pytest.raises(DataError, match="ScanQA_v1.0_train.json"):
        read_split(root, "scanqa", "train", _objects(root))
    path.write_text(json.dumps([{"question_id": "x", "scene_id": "s", "question": "q", "answers": []}]))
    with pytest.raises(DataError, match="no answers"):
        read_split(root, "scanqa", "train", _objects(root))
    (root / "scannet").unlink()
    with pytest.raises(DataError, match="no ScanNet root"):
        scannet_root(root)
