"""Readers of the language annotations in their published formats (one reader per format).

* ScanRefer (daveredrum/ScanRefer): ``ScanRefer_filtered_{train,val}.json`` = a list of
  ``{scene_id, object_id, object_name, ann_id, description, token?}`` (ids are strings in the release).
* ScanQA (ATR-DBI/ScanQA): ``ScanQA_v1.0_{train,val}.json`` = a list of
  ``{question_id, scene_id, question, answers: [..], object_ids: [..], object_names: [..]}``.
* SQA3D (SilongYong/SQA3D, ``sqa_task/balanced/``): ``v1_balanced_questions_{split}_scannetv2.json``
  ``{"questions": [{question_id, scene_id, situation, question, alternative_situation}]}`` and
  ``v1_balanced_sqa_annotations_{split}_scannetv2.json`` ``{"annotations": [{question_id, scene_id,
  answers: [{answer, answer_confidence, answer_id}], question_type?, position, rotation}]}``.

Files are looked up in the annotation root and in its ``ScanRefer/``, ``ScanQA/``, ``balanced/`` or
``sqa_task/balanced/`` subfolder. Every record is checked against the scenes and objects of the ScanNet root
(`check`): an unknown scene or object id is a DataError naming the file and the id.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from suites.images import DataError

FILES = {
    "scanrefer": ("ScanRefer_filtered_{split}.json", ("", "ScanRefer")),
    "scanqa": ("ScanQA_v1.0_{split}.json", ("", "ScanQA")),
    "sqa3d_q": ("v1_balanced_questions_{split}_scannetv2.json", ("", "balanced", "sqa_task/balanced")),
    "sqa3d_a": ("v1_balanced_sqa_annotations_{split}_scannetv2.json", ("", "balanced", "sqa_task/balanced")),
}


@dataclass
class Referral:
    uid: str                 # stable sample id: scene/object/ann
    scene: str
    object_id: int
    object_name: str
    description: str


@dataclass
class Question:
    uid: str                 # stable sample id (the dataset's question_id)
    scene: str
    question: str
    answers: list[str]
    object_ids: list[int] = field(default_factory=list)
    situation: str = ""
    qtype: str = ""


def find(root: Path, kind: str, split: str) -> Path:
    name, subs = FILES[kind]
    name = name.format(split=split)
    for s in subs:
        p = Path(root) / s / name
        if p.is_file():
            return p
    raise DataError(f"'{Path(root)}' has no {name} (looked in {', '.join(repr(s or '.') for s in subs)})")


def _load(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read '{path}': {e}") from None


def _field(path: Path, rec, key: str, i: int):
    if not isinstance(rec, dict) or key not in rec:
        raise DataError(f"'{path}': record {i} has no '{key}'")
    return rec[key]


def read_scanrefer(path: Path) -> list[Referral]:
    data = _load(path)
    if not isinstance(data, list):
        raise DataError(f"'{path}': expected a JSON list of ScanRefer records")
    out = []
    for i, r in enumerate(data):
        scene = str(_field(path, r, "scene_id", i))
        oid = _field(path, r, "object_id", i)
        try:
            oid = int(oid)
        except (TypeError, ValueError):
            raise DataError(f"'{path}': record {i} has a non-integer object_id {oid!r}") from None
        ann = str(r.get("ann_id", i))
        out.append(Referral(f"{scene}/{oid}/{ann}", scene, oid, str(r.get("object_name", "")),
                            str(_field(path, r, "description", i))))
    return out


def read_scanqa(path: Path) -> list[Question]:
    data = _load(path)
    if not isinstance(data, list):
        raise DataError(f"'{path}': expected a JSON list of ScanQA records")
    out = []
    for i, r in enumerate(data):
        answers = _field(path, r, "answers", i)
        if not isinstance(answers, list) or not answers:
            raise DataError(f"'{path}': record {i} ({r.get('question_id')}) has no answers")
        try:
            oids = [int(x) for x in r.get("object_ids", [])]
        except (TypeError, ValueError):
            raise DataError(f"'{path}': record {i} has non-integer object_ids {r.get('object_ids')!r}") from None
        out.append(Question(str(_field(path, r, "question_id", i)), str(_field(path, r, "scene_id", i)),
                            str(_field(path, r, "question", i)), [str(a) for a in answers], oids))
    return out


def question_type(q: str) -> str:
    """SQA3D's breakdown (Ma et al. 2023, Table 3): the question's first word among What / Is / How / Can /
    Which, else Others."""
    w = (q.strip().split() or [""])[0].lower()
    return {"what": "What", "is": "Is", "how": "How", "can": "Can", "which": "Which"}.get(w, "Others")


def read_sqa3d(qpath: Path, apath: Path) -> list[Question]:
    qs, an = _load(qpath), _load(apath)
    if not isinstance(qs, dict) or not isinstance(qs.get("questions"), list):
        raise DataError(f"'{qpath}': expected {{\"questions\": [...]}} (SQA3D balanced questions)")
    if not isinstance(an, dict) or not isinstance(an.get("annotations"), list):
        raise DataError(f"'{apath}': expected {{\"annotations\": [...]}} (SQA3D balanced annotations)")
    answers = {}
    for i, a in enumerate(an["annotations"]):
        ans = _field(apath, a, "answers", i)
        if not isinstance(ans, list) or not ans or not all(isinstance(x, dict) and "answer" in x for x in ans):
            raise DataError(f"'{apath}': annotation {i} needs answers [{{answer: ...}}]")
        answers[str(_field(apath, a, "question_id", i))] = [str(x["answer"]) for x in ans]
    out = []
    for i, q in enumerate(qs["questions"]):
        qid = str(_field(qpath, q, "question_id", i))
        if qid not in answers:
            raise DataError(f"'{qpath}': question_id {qid} has no annotation in '{apath}'")
        text = str(_field(qpath, q, "question", i))
        out.append(Question(qid, str(_field(qpath, q, "scene_id", i)), text, answers[qid],
                            situation=str(_field(qpath, q, "situation", i)), qtype=question_type(text)))
    return out


def check(path: Path, records, objects: dict, check_objects: bool = True) -> None:
    """Every record names a scene of the ScanNet root and (ScanRefer, ScanQA) objects of that scene."""
    for r in records:
        if r.scene not in objects:
            raise DataError(f"'{path}': {r.uid} names scene '{r.scene}', which is not in the ScanNet root "
                            f"({len(objects)} scenes)")
        if not check_objects:
            continue
        for oid in ([r.object_id] if isinstance(r, Referral) else r.object_ids):
            if objects[r.scene].index(oid) is None:
                raise DataError(f"'{path}': {r.uid} names object_id {oid}, which scene '{r.scene}' does not have")
