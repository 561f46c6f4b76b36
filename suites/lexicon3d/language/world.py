"""The world's ScanRefer / ScanQA / SQA3D files, generated from the WRITTEN ScanNet root only (boxes and
categories from ``<scene>_instances.json``, colours from the cloud's per-point colours and ``_inst.pth``),
never from the world's internals, so the generator also runs on any ScanNet root that has those files.

Descriptions (ScanRefer): category + colour + nearest neighbour, and, where the class repeats in the scene
(distractors), what singles the target out: its size rank or being the closest / farthest of its class to a
unique anchor object. Questions (ScanQA): counting (balanced: every repeated class and as many classes
seen once), presence ("is there a X in the room?", as many absent classes as present ones), colour, "what
is next to / on the X", the largest object. Situated questions (SQA3D): "I am standing by the A facing the B." + what is on my left / right /
behind me, is X on my left, how many objects are in front of me, which of X / Y is closer, can I see X
without turning around. Every answer follows from the boxes; ambiguous cases (margins under 0.3 m) are
not asked. The colour names are the nearest of a small palette to the object's mean point colour.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from harness.atomic import atomic_dir, atomic_write_json
from suites.lexicon3d.language.scenes import SceneObjects, load_objects
from suites.lexicon3d.scannet import ScanNetData, load_cloud

VERSION = 3        # 2: balanced counting, presence yes/no questions, 30 situated questions per scene;
                   # 3: up to REFER_PER_OBJECT (v2: 4) ScanRefer descriptions per object (QA files unchanged)
REFER_PER_OBJECT = 10
PALETTE = {"red": (200, 40, 40), "green": (40, 160, 60), "blue": (40, 70, 200), "yellow": (220, 200, 40),
           "orange": (230, 130, 30), "purple": (130, 50, 160), "pink": (230, 130, 180), "brown": (120, 80, 40),
           "white": (235, 235, 235), "gray": (128, 128, 128), "black": (25, 25, 25)}
NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
MARGIN = 0.3


def colour_name(rgb: np.ndarray) -> str:
    names = list(PALETTE)
    ref = np.array([PALETTE[n] for n in names], np.float64)
    return names[int(np.argmin(((ref - np.asarray(rgb, np.float64)) ** 2).sum(1)))]


def plural(c: str) -> str:
    if c.endswith("shelf"):
        return c[:-1] + "ves"
    return c + ("es" if c.endswith(("s", "x", "sh", "ch")) else "s")


def object_colours(scene, objs: SceneObjects) -> list[str | None]:
    """Colour name per object from the mean colour of its points (``_inst.pth`` instance id = object id +
    1); None when the scene has no instance file or the object no point."""
    import torch
    inst_path = scene.cloud.with_name(scene.cloud.name.replace("_vh_clean_2.pth", "_inst.pth"))
    if not inst_path.is_file():
        return [None] * len(objs.ids)
    _, colors, _ = load_cloud(scene.cloud)
    inst = torch.load(inst_path, map_location="cpu", weights_only=True).numpy()
    rgb = (colors.astype(np.float64) + 1.0) * 127.5
    out = []
    for oid in objs.ids:
        m = inst == oid + 1
        out.append(colour_name(rgb[m].mean(0)) if m.any() else None)
    return out


class _Scene:
    def __init__(self, objs: SceneObjects, colours):
        keep = np.flatnonzero(objs.points != 0)       # objects no frame saw cannot be described
        self.ids = objs.ids[keep]
        self.cat = [objs.names[k] for k in keep]
        self.col = [colours[k] for k in keep]
        self.box = objs.boxes[keep]
        self.c = (self.box[:, :3] + self.box[:, 3:]) / 2
        self.vol = np.prod(self.box[:, 3:] - self.box[:, :3], 1)
        self.n = len(keep)
        self.all_cats = set(objs.names)                 # unseen objects too: never asked as absent

    def count(self, cat: str) -> int:
        return sum(c == cat for c in self.cat)

    def nearest(self, i: int, among=None) -> int | None:
        cand = [j for j in (range(self.n) if among is None else among) if j != i]
        if not cand:
            return None
        d = np.linalg.norm(self.c[cand, :2] - self.c[i, :2], axis=1)
        return cand[int(np.argmin(d))]

    def name(self, i: int) -> str:
        return f"{self.col[i]} {self.cat[i]}" if self.col[i] else self.cat[i]


def describe(s: _Scene, i: int, per_object: int = REFER_PER_OBJECT) -> list[str]:
    """Up to ``per_object`` descriptions that single object ``i`` out (every one is discriminative: a class
    that repeats is told apart by its size rank, its distance rank to a unique anchor, or a colour no other
    object of its class has). The first four are generator v2's (in v2's order); v3 adds paraphrases and
    more anchors, so the same val objects give more paired samples and the head sees more wordings."""
    c = s.cat[i]
    nb = s.nearest(i)
    first = f"this is a {s.name(i)}." + (f" it is next to the {s.cat[nb]}." if nb is not None else "")
    out = [first]
    same = [j for j in range(s.n) if s.cat[j] == c]
    anchors = []                       # (description) closest / farthest of its class to a unique anchor
    if len(same) > 1:
        order = sorted(same, key=lambda j: s.vol[j])
        if i == order[-1] and s.vol[order[-1]] > 1.2 * s.vol[order[-2]]:
            out.append(f"there are {NUMBERS[min(len(same), 10)]} {plural(c)} in the room. this is the largest one.")
        elif i == order[0] and s.vol[order[1]] > 1.2 * s.vol[order[0]]:
            out.append(f"there are {NUMBERS[min(len(same), 10)]} {plural(c)} in the room. this is the smallest one.")
        for a in range(s.n):
            if s.cat[a] == c or s.count(s.cat[a]) != 1:
                continue
            d = sorted((float(np.linalg.norm(s.c[j, :2] - s.c[a, :2])), j) for j in same)
            if d[0][1] == i and d[1][0] - d[0][0] > MARGIN:
                anchors.append((f"the {c} closest to the {s.cat[a]}.", f"of the {plural(c)}, this one is nearest "
                                f"to the {s.cat[a]}."))
            elif d[-1][1] == i and d[-1][0] - d[-2][0] > MARGIN:
                anchors.append((f"the {c} farthest from the {s.cat[a]}.", f"of the {plural(c)}, this one is the "
                                f"farthest away from the {s.cat[a]}."))
        room = max(0, 4 - len(out))                             # v2: at most four in all
        out += [a for a, _ in anchors[:room]]
        extra = [a for a, _ in anchors[room:]]
        col_unique = s.col[i] is not None and sum(s.col[j] == s.col[i] for j in same) == 1
        if col_unique:
            extra += [f"the {s.col[i]} {c}.", f"there are several {plural(c)}. find the {s.col[i]} one."]
        extra += [b for _, b in anchors]
    else:
        out.append(f"the {c} in this room.")
        others = sorted((j for j in range(s.n) if j != i), key=lambda j: float(np.linalg.norm(s.c[j, :2] - s.c[i, :2])))
        extra = [f"find the {c}.", f"the only {c} in the room."]
        if s.col[i]:
            extra += [f"the {s.col[i]} {c}.", f"there is a {c} in the room. it is {s.col[i]}."]
        extra += [f"a {c} near the {s.cat[j]}." for j in others[1:3]]
        if nb is not None:
            extra.append(f"look for the {c} beside the {s.cat[nb]}.")
    out = out[:4] + extra
    seen, uniq = set(), []
    for d in out:
        if d not in seen:
            seen.add(d)
            uniq.append(d)
    return uniq[:per_object]


def scanqa_questions(s: _Scene, scene: str, start: int, rng: np.random.Generator, categories: list[str]) -> list[dict]:
    qs = []

    def add(q, a, objs):
        qs.append({"question_id": f"{scene}-{start + len(qs)}", "scene_id": scene, "question": q, "answers": [a],
                   "object_ids": [int(s.ids[j]) for j in objs], "object_names": [s.cat[j] for j in objs]})

    present = sorted(set(s.cat))
    # counting, balanced: every class that repeats, and as many (at least one) of the classes seen once
    multi = [c for c in present if s.count(c) > 1]
    once = [c for c in present if s.count(c) == 1]
    keep = set(multi) | {once[int(k)] for k in rng.permutation(len(once))[:max(1, len(multi))]}
    for cat in present:
        if cat in keep:
            js = [j for j in range(s.n) if s.cat[j] == cat]
            add(f"how many {plural(cat)} are in the room?", NUMBERS[min(len(js), 10)], js)
    # presence, balanced yes / no: as many absent classes (of the whole dataset's) as present ones
    absent = [c for c in categories if c not in s.all_cats]
    k = min(len(present), len(absent))
    for cat in [present[int(j)] for j in rng.permutation(len(present))[:k]]:
        add(f"is there a {cat} in the room?", "yes", [j for j in range(s.n) if s.cat[j] == cat])
    for cat in [absent[int(j)] for j in rng.permutation(len(absent))[:k]]:
        add(f"is there a {cat} in the room?", "no", [])
    for i in range(s.n):
        unique = s.count(s.cat[i]) == 1
        nb = s.nearest(i)
        if s.col[i] and unique:
            add(f"what color is the {s.cat[i]}?", s.col[i], [i])
        if unique and nb is not None:
            d = sorted(float(np.linalg.norm(s.c[j, :2] - s.c[i, :2])) for j in range(s.n) if j != i)
            if len(d) == 1 or d[1] - d[0] > MARGIN / 2:
                add(f"what is next to the {s.cat[i]}?", s.cat[nb], [i, nb])
        if unique and s.cat[i] == "table":
            top = s.box[i, 5]
            on = [j for j in range(s.n) if j != i and abs(s.box[j, 2] - top) < 0.05
                  and np.all(s.c[j, :2] >= s.box[i, :2]) and np.all(s.c[j, :2] <= s.box[i, 3:5])]
            if on:
                add("what is on the table?", s.cat[on[0]], [i, on[0]])
    order = np.argsort(-s.vol)
    if s.n > 1 and s.vol[order[0]] > 1.2 * s.vol[order[1]]:
        add("what is the largest object in the room?", s.cat[order[0]], [int(order[0])])
    return qs


def _yaw_quat(f: np.ndarray) -> dict:
    yaw = float(np.arctan2(f[1], f[0]))
    return {"_w": float(np.cos(yaw / 2)), "_x": 0.0, "_y": 0.0, "_z": float(np.sin(yaw / 2))}


def sqa_questions(s: _Scene, scene: str, rng: np.random.Generator, start: int, per_scene: int):
    """(questions, annotations) of situated questions in SQA3D's balanced-file records."""
    uniq = [j for j in range(s.n) if s.count(s.cat[j]) == 1]
    Q, A = [], []
    pairs = [(a, b) for a in uniq for b in uniq if a != b]
    rng.shuffle(pairs)
    for a, b in pairs:
        if len(Q) >= per_scene:
            break
        p = s.c[a, :2]
        f = s.c[b, :2] - p
        if np.linalg.norm(f) < 0.5:
            continue
        f = f / np.linalg.norm(f)
        left = np.array([-f[1], f[0]])
        others = [j for j in range(s.n) if j not in (a, b)]
        rel = {j: s.c[j, :2] - p for j in others}
        fwd = {j: float(rel[j] @ f) for j in others}
        lat = {j: float(rel[j] @ left) for j in others}
        dist = {j: float(np.linalg.norm(rel[j])) for j in others}
        situation = f"I am standing by the {s.cat[a]} facing the {s.cat[b]}."
        cands = []
        for side, sign in (("left", 1), ("right", -1)):
            js = sorted((dist[j], j) for j in others if sign * lat[j] > MARGIN)
            if js:
                cands.append((f"What is on my {side}?", s.cat[js[0][1]], [a, b, js[0][1]]))
        behind = sorted((dist[j], j) for j in others if fwd[j] < -MARGIN)
        if behind:
            cands.append(("What is behind me?", s.cat[behind[0][1]], [a, b, behind[0][1]]))
        for j in others:
            if s.count(s.cat[j]) == 1 and abs(lat[j]) > MARGIN:
                cands.append((f"Is the {s.cat[j]} on my left?", "yes" if lat[j] > 0 else "no", [a, b, j]))
            if s.count(s.cat[j]) == 1 and abs(fwd[j]) > MARGIN:
                cands.append((f"Can I see the {s.cat[j]} without turning around?", "yes" if fwd[j] > 0 else "no",
                              [a, b, j]))
        n_front = sum(fwd[j] > MARGIN for j in others)
        if all(abs(fwd[j]) > MARGIN for j in others):
            cands.append(("How many objects are in front of me?", NUMBERS[min(n_front + 1, 10)], [a, b]))
        u2 = [j for j in others if s.count(s.cat[j]) == 1]
        for x, y in zip(u2, u2[1:]):
            if abs(dist[x] - dist[y]) > MARGIN:
                near = x if dist[x] < dist[y] else y
                cands.append((f"Which is closer to me, the {s.cat[x]} or the {s.cat[y]}?", s.cat[near], [a, b, x, y]))
        if not cands:
            continue
        for k in rng.permutation(len(cands))[:2]:
            q, ans, objs = cands[int(k)]
            qid = start + len(Q)
            Q.append({"question_id": qid, "scene_id": scene, "situation": situation, "question": q,
                      "alternative_situation": []})
            A.append({"question_id": qid, "scene_id": scene, "question_type": "N/A",
                      "answer_type": "other", "answers": [{"answer": ans, "answer_confidence": "yes", "answer_id": 1}],
                      "position": {"x": float(p[0]), "y": float(p[1]), "z": 0.0}, "rotation": _yaw_quat(f),
                      "object_ids": [int(s.ids[j]) for j in objs]})
    return Q, A


def write_language(scannet_root: Path, out: Path, sqa_per_scene: int = 30, seed: int = 0,
                   refer_per_object: int = REFER_PER_OBJECT) -> Path:
    """ScanRefer / ScanQA / SQA3D files for every scene of ``scannet_root`` into ``out`` (atomic folder),
    with a relative symlink ``out/scannet`` to the ScanNet root the suites lift features from."""
    out = Path(out)
    if (out / "lexicon3d_language.json").is_file():
        return out
    data = ScanNetData(scannet_root)
    rng, qa_rng = np.random.default_rng(seed), np.random.default_rng([seed, 1])
    categories = set()          # the classes some scene's frames see: the candidates of "is there a X"
    for split, scenes in data.splits.items():
        for sc in scenes:
            o = load_objects(scannet_root, sc.name, split)
            categories |= {n for n, p in zip(o.names, o.points) if p != 0}
    categories = sorted(categories)
    with atomic_dir(out) as tmp:
        stats = {}
        for split, scenes in data.splits.items():
            refer, scanqa, sq, sa = [], [], [], []
            for sc in scenes:
                objs = load_objects(scannet_root, sc.name, split)
                s = _Scene(objs, object_colours(sc, objs))
                for i in range(s.n):
                    for k, d in enumerate(describe(s, i, refer_per_object)):
                        refer.append({"scene_id": sc.name, "object_id": str(int(s.ids[i])), "object_name": s.cat[i],
                                      "ann_id": str(k), "description": d, "token": d.replace(".", " .").split()})
                scanqa += scanqa_questions(s, sc.name, len(scanqa), qa_rng, categories)
                q, a = sqa_questions(s, sc.name, rng, len(sq) + (0 if split == "train" else 10 ** 6), sqa_per_scene)
                sq += q
                sa += a
            atomic_write_json(tmp / f"ScanRefer_filtered_{split}.json", refer)
            atomic_write_json(tmp / f"ScanQA_v1.0_{split}.json", scanqa)
            info = {"data_type": "scannetv2", "data_subtype": split, "generator": "spatialboost world"}
            atomic_write_json(tmp / "balanced" / f"v1_balanced_questions_{split}_scannetv2.json", {**info, "questions": sq})
            atomic_write_json(tmp / "balanced" / f"v1_balanced_sqa_annotations_{split}_scannetv2.json",
                              {**info, "annotations": sa})
            stats[split] = {"scenes": len(scenes), "scanrefer": len(refer), "scanqa": len(scanqa), "sqa3d": len(sq)}
        os.symlink(os.path.relpath(Path(scannet_root).resolve(), out.resolve()), tmp / "scannet")
        atomic_write_json(tmp / "lexicon3d_language.json", {"version": VERSION, "seed": seed,
                                                            "refer_per_object": refer_per_object, "counts": stats})
    return out
