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
