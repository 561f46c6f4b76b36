"""Fixtures of the Lexicon3D language suites: the tiny world's ScanNet root + its generated language files
(one per session), and hand-made annotation files in each dataset's real JSON format on the same scenes."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_ws(tmp_path_factory):
    from harness.workspace import Workspace
    return Workspace(tmp_path_factory.mktemp("lexlang") / "ws", world="tiny")


@pytest.fixture(scope="session")
def world_lang(tiny_ws):
    """The tiny world's language root (ScanRefer / ScanQA / SQA3D files + ``scannet`` link)."""
    from suites.lexicon3d.language.common import default_root
    return default_root(tiny_ws)


def _objects(scannet: Path, split: str):
    out = {}
    for f in sorted((scannet / "scannet_3d" / split).glob("*_instances.json")):
        d = json.loads(f.read_text())
        out[d["scene"]] = [o for o in d["objects"] if o["num_points"] > 0]
    return out


@pytest.fixture(scope="session")
def real_format(world_lang, tmp_path_factory):
    """Hand-written records in the published formats (ScanRefer's string ids and tokens, ScanQA's
    object_names, SQA3D's split question / annotation files under ``sqa_task/balanced``) on the tiny
    world's scenes, the ScanNet root linked beside them."""
    root = tmp_path_factory.mktemp("realfmt") / "lang"
    scannet = (world_lang / "scannet").resolve()
    (root / "ScanRefer").mkdir(parents=True)
    (root / "sqa_task" / "balanced").mkdir(parents=True)
    os.symlink(scannet, root / "scannet")
    for split in ("train", "val"):
        objs = _objects(scannet, split)
        refer, qa, qs, an = [], [], [], []
        for scene, ob in objs.items():
            for o in ob:
                desc = f"the {o['category']} in the room ."
                refer.append({"scene_id": scene, "object_id": str(o["instance_id"] - 1), "object_name": o["category"],
                              "ann_id": "0", "description": desc, "token": desc.split()})
            qa.append({"answers": [str(len(ob))], "object_ids": [o["instance_id"] - 1 for o in ob],
                       "object_names": [o["category"] for o in ob], "question": "How many objects are there?",
                       "question_id": f"{split}-{scene}-0", "scene_id": scene})
            qid = len(qs) + (0 if split == "train" else 1000)
            qs.append({"alternative_situation": [], "question": f"What is in front of me?", "question_id": qid,
                       "scene_id": scene, "situation": f"I am facing the {ob[0]['category']}."})
            an.append({"answer_type": "other", "answers": [{"answer": ob[0]["category"], "answer_confidence": "yes",
                                                            "answer_id": 1}], "position": {"x": 0, "y": 0, "z": 0},
                       "question_id": qid, "question_type": "N/A", "rotation": {"_w": 1, "_x": 0, "_y": 0, "_z": 0},
                       "scene_id": scene})
        (root / "ScanRefer" / f"ScanRefer_filtered_{split}.json").write_text(json.dumps(refer))
        (root / f"ScanQA_v1.0_{split}.json").write_text(json.dumps(qa))
        (root / "sqa_task" / "balanced" / f"v1_balanced_questions_{split}_scannetv2.json").write_text(
            json.dumps({"info": {}, "questions": qs}))
        (root / "sqa_task" / "balanced" / f"v1_balanced_sqa_annotations_{split}_scannetv2.json").write_text(
            json.dumps({"info": {}, "annotations": an}))
    return root
