"""Revisited Oxford/Paris: query/database images and the ``gnd_<name>.pkl`` ground truth."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np

from . import common
from ..views import load_view


def write_roxford(world_dir, out_root, name: str = "roxford5k", num_landmarks: int | None = None,
                  queries_per_landmark: int = 1, easy_angle: float = 60.0, junk_visibility: float = 0.25,
                  min_query_pixels: int = 200, landmarks: str = "first", overwrite: bool = False) -> Path:
    """Revisited Oxford/Paris layout: ``ROOT/jpg/<name>.jpg`` + ``ROOT/gnd_<name>.pkl``.

    The pickle (protocol 4, plain lists/ints/floats) is ``{'imlist': [...], 'qimlist': [...],
    'gnd': [{'bbx': [x1, y1, x2, y2], 'easy': [...], 'hard': [...], 'junk': [...]}]}``;
    queries are not in imlist (as in the real files). The first ``num_landmarks`` scenes
    (default: half) are landmarks, each with ``queries_per_landmark`` queries: the views
    showing the most object pixels, not neighbours of each other; every other view of a landmark scene is a positive:
    ``easy`` when the viewpoint (orbit angle around the landmark objects) differs from the
    query's by <= ``easy_angle`` degrees, else ``hard``; ``junk`` when the query's objects
    keep less than ``junk_visibility`` of their query-view pixels (occluded / out of view).
    Views of the other scenes are distractors. The query box ``bbx`` covers the objects
    visible in the query with >= 50 pixels. ``landmarks="last"`` takes the last
    ``num_landmarks`` scenes instead of the first, so two datasets written from one world
    (the Oxford and Paris defaults) have disjoint landmarks and queries.
    """
    from PIL import Image  # noqa: F401  (fail early if Pillow is missing)

    if not (0 < easy_angle < 180):
        raise ValueError(f"easy_angle must be in (0, 180) degrees, got {easy_angle!r}")
    if not (0 <= junk_visibility < 1):
        raise ValueError(f"junk_visibility must be in [0, 1), got {junk_visibility!r}")
    if queries_per_landmark < 1:
        raise ValueError(f"queries_per_landmark must be >= 1, got {queries_per_landmark!r}")
    if not name or any(ch in name for ch in "/\\ "):
        raise ValueError(f"bad dataset name {name!r}")
    scenes = common._views_by_scene(world_dir)
    ids = sorted(scenes)
    if num_landmarks is None:
        num_landmarks = max(1, len(ids) // 2)
    if not (1 <= num_landmarks <= len(ids)):
        raise ValueError(f"num_landmarks must be in 1..{len(ids)}, got {num_landmarks!r}")
    if landmarks not in ("first", "last"):
        raise ValueError(f"landmarks must be 'first' or 'last', got {landmarks!r}")
    landmark_ids = ids[:num_landmarks] if landmarks == "first" else ids[len(ids) - num_landmarks:]
    for s in landmark_ids:
        if len(scenes[s]) < queries_per_landmark + 1:
            raise ValueError(
                f"scene {s} has {len(scenes[s])} views: need views_per_scene >= queries_per_landmark + 1 "
                f"= {queries_per_landmark + 1} for retrieval positives"
            )
    args = dict(name=name, num_landmarks=num_landmarks, queries_per_landmark=queries_per_landmark,
                easy_angle=easy_angle, junk_visibility=junk_visibility, min_query_pixels=min_query_pixels)
    if landmarks != "first":   # the stamp of existing Oxford outputs stays as it was
        args["landmarks"] = landmarks
    with common._atomic_output(world_dir, out_root, "roxford", args, overwrite) as res:
        if res is None:
            return Path(out_root)
        tmp, info = res
        queries: list[tuple[int, int]] = []
        for s in landmark_ids:
            # queries = the views that show the scene's objects best (most visible object
            # pixels), taken greedily so that two queries are not neighbouring views
            vs = scenes[s]
            shown = {v: sum(o.pixels for o in load_view(world_dir, s, v, arrays=False).objects) for v in vs}
            order = sorted(vs, key=lambda v: (-shown[v], v))
            picks: list[int] = []
            for v in order:
                if len(picks) == queries_per_landmark:
                    break
                if all(min(abs(v - p), len(vs) - abs(v - p)) > 1 for p in picks) or len(vs) <= 2 * queries_per_landmark:
                    picks.append(v)
            for v in order:  # not enough well-separated views: fill up with the next best
                if len(picks) < queries_per_landmark and v not in picks:
                    picks.append(v)
            queries += [(s, v) for v in sorted(picks)]
        qset = set(queries)
        db = [(s, v) for s in ids for v in scenes[s] if (s, v) not in qset]
        nm = lambda s, v: f"synth_s{s:05d}_v{v:03d}"  # noqa: E731
        for s, v in db + queries:
            common._save_jpg(tmp / "jpg" / f"{nm(s, v)}.jpg", load_view(world_dir, s, v).rgb)
        db_index = {sv: i for i, sv in enumerate(db)}
        gnd = []
        for s, v in queries:
            q = load_view(world_dir, s, v, arrays=False)
            seen = [o for o in q.objects if o.pixels >= 50]
            if not seen or sum(o.pixels for o in seen) < min_query_pixels:
                seen = sorted(q.objects, key=lambda o: -o.pixels)[:1]
            boxes = np.array([o.bbox2d for o in seen if o.bbox2d is not None] or [[0, 0, 1, 1]], float)
            bbx = [float(boxes[:, 0].min()), float(boxes[:, 1].min()), float(boxes[:, 2].max()), float(boxes[:, 3].max())]
            qpix = {o.instance_id: o.pixels for o in seen}
            centre = np.mean([o.obb_world["center"] for o in q.objects], axis=0)
            qdir = q.cam_to_world[:2, 3] - centre[:2]
            easy, hard, junk = [], [], []
            for v2 in scenes[s]:
                if (s, v2) in qset:
                    continue
                d = load_view(world_dir, s, v2, arrays=False)
                dpix = {o.instance_id: o.pixels for o in d.objects}
                vis = sum(min(dpix.get(k, 0), p) for k, p in qpix.items()) / max(1, sum(qpix.values()))
                ddir = d.cam_to_world[:2, 3] - centre[:2]
                cosang = float(qdir @ ddir / (np.linalg.norm(qdir) * np.linalg.norm(ddir) + 1e-12))
                ang = math.degrees(math.acos(max(-1.0, min(1.0, cosang))))
                idx = db_index[(s, v2)]
                if vis < junk_visibility:
                    junk.append(idx)
                elif ang <= easy_angle:
                    easy.append(idx)
                else:
                    hard.append(idx)
            gnd.append({"bbx": bbx, "easy": easy, "hard": hard, "junk": junk})
        obj = {"imlist": [nm(s, v) for s, v in db], "qimlist": [nm(s, v) for s, v in queries], "gnd": gnd}
        with open(tmp / f"gnd_{name}.pkl", "wb") as f:
            pickle.dump(obj, f, protocol=4)
        info.update(landmark_scenes=landmark_ids, num_db=len(db), num_queries=len(queries))
    return Path(out_root)
