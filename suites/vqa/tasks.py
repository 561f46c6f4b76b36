"""Local VQA tasks generated from the world's spatial annotations (``spatial_annotations_root``: per-view RGB,
metric depth, instance masks, 2D boxes, 3D boxes), written as lmms-eval task YAML + JSONL.

- ``blink_depth_local`` (BLINK relative depth): two points drawn on the image (red circle "A", blue circle "B"),
  "Which point is closer to the camera?", choices ``(A)`` / ``(B)``; lmms-eval ``multiple_choice`` (log-likelihood
  of each choice), scored exactly. Pairs differ by >= 20 % in depth; the closer letter is balanced, and so is
  whether the closer point is the lower one (a 2D shortcut that otherwise answers ~90 %, see ``depth_questions``).
- ``spatialrgpt_qual_local`` (SpatialRGPT-Bench qualitative): two objects boxed (red = region A, blue =
  region B); left/right (camera x of the 3D box centres, >= 0.1 m apart), above/below (world height of the
  centres, >= 0.1 m), bigger/smaller (3D box volume ratio >= 1.3). Free-form answer, rule judge.
- ``spatialrgpt_quant_local`` (quantitative): distance between the two boxed objects' 3D centres, width
  (largest horizontal side) and height of the red-boxed object, in metres; success = within 25 %.

Doc ids (``scene_XXXXX/VVV#k``) depend only on the annotations and the seed, so runs of different encoders
pair up. The world's train-split views give the VLM training data (stage 1: one caption per view naming its
visible objects left to right; stage 2: the three tasks' questions with answers); val-split views give the
test JSONL.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.atomic import atomic_dir
from harness.errors import UserError

TASKS = ("blink_depth_local", "spatialrgpt_qual_local", "spatialrgpt_quant_local")
QUAL_OPTIONS = {"leftright": ("left", "right"), "abovebelow": ("above", "below"), "size": ("bigger", "smaller")}
GEN_VERSION = "2"   # 2: depth pairs balanced over the "lower is closer" cue; docs carry the 2D boxes


class VQADataError(UserError, ValueError):
    """A local VQA dataset is missing or malformed."""


@dataclass(frozen=True)
class GenOptions:
    depth_pairs: int = 6          # relative-depth questions per view
    object_pairs: int = 3         # object pairs per view (each gives one qualitative + quantitative question)
    min_pixels: int = 300         # visible-object threshold
    depth_tries: int = 400        # random point pairs drawn per view to fill the depth questions from
    seed: int = 0


def _rng(view_id: str, seed: int) -> np.random.Generator:
    return np.random.default_rng(int(hashlib.sha256(f"{view_id}|{seed}".encode()).hexdigest()[:12], 16))


def read_annotations(root: Path) -> list[dict]:
    f = Path(root) / "annotations.jsonl"
    if not f.is_file():
        raise VQADataError(f"no spatial annotations at '{f}' (expected the world's spatial layout: "
                           f"annotations.jsonl + images/; see suites/vqa/README.md)")
    out = []
    for ln, line in enumerate(f.read_text().splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise VQADataError(f"{f}:{ln}: not valid JSON ({e.msg})") from None
    return out


def _load(root: Path, rel: str, what: str):
    from PIL import Image
    p = root / rel
    try:
        with Image.open(p) as im:
            return np.asarray(im).copy()
    except (OSError, ValueError) as e:
        raise VQADataError(f"{what} '{p}' cannot be read: {e}") from None


def _centre(box: dict) -> np.ndarray:
    return (np.asarray(box["min"]) + np.asarray(box["max"])) / 2


def _size(box: dict) -> np.ndarray:
    return np.asarray(box["max"]) - np.asarray(box["min"])


def _fmt_m(v: float) -> str:
    return f"{v:.2f} m"


def depth_questions(rec, depth_m: np.ndarray, opts: GenOptions) -> list[dict]:
    """Pairs of points >= 20 % apart in depth, balanced over two shortcuts: the answer letter alternates, and
    so does whether the closer point is also the lower one in the image. On a floor seen from above the lower
    point is the closer one in ~90 % of random pairs (the world: 87 % of train, 92 % of val pairs), so without
    the second balance "pick the lower circle" would pass the task with no depth perception at all; balanced,
    that cue scores 50 % (``floor_cue.acc``). Cells cycle (A closer, cue agrees), (B, disagrees), (A, disagrees),
    (B, agrees); a view stops at the first cell no candidate pair fills."""
    rng = _rng(rec["id"] + "#depth", opts.seed)
    H, W = depth_m.shape
    margin = int(0.1 * min(H, W))
    pools: dict[bool, list] = {True: [], False: []}   # candidate (closer, farther) pairs by "closer is lower"
    for _ in range(opts.depth_tries):
        (y1, y2), (x1, x2) = rng.integers(margin, H - margin, 2), rng.integers(margin, W - margin, 2)
        d1, d2 = float(depth_m[y1, x1]), float(depth_m[y2, x2])
        if min(d1, d2) <= 0 or math.hypot(y1 - y2, x1 - x2) < 0.2 * min(H, W):
            continue
        if abs(d1 - d2) / max(d1, d2) < 0.2:
            continue
        near, far = ((int(y1), int(x1)), (int(y2), int(x2))) if d1 < d2 else ((int(y2), int(x2)), (int(y1), int(x1)))
        pools[near[0] > far[0]].append((near, far))
    out, used = [], {True: 0, False: 0}
    for k in range(opts.depth_pairs):
        a_closer, agrees = k % 2 == 0, k % 4 in (0, 3)
        if used[agrees] == len(pools[agrees]):
            break
        near, far = pools[agrees][used[agrees]]
        used[agrees] += 1
        pa, pb = (near, far) if a_closer else (far, near)
        out.append({"points": [list(pa), list(pb)], "answer_index": 0 if a_closer else 1, "cue_agrees": agrees,
                    "depths": [float(depth_m[pa]), float(depth_m[pb])]})
    return out


def object_questions(rec, opts: GenOptions) -> list[dict]:
    rng = _rng(rec["id"] + "#objects", opts.seed)
    vis = [o for o in rec["objects"] if o["pixels"] >= opts.min_pixels]
    pairs = [(i, j) for i in range(len(vis)) for j in range(len(vis)) if i != j]
    rng.shuffle(pairs)
    out = []
    for i, j in pairs[: opts.object_pairs]:
        a, b = vis[i], vis[j]
        ca, cb = _centre(a["aabb_cam"]), _centre(b["aabb_cam"])
        wa, wb = _centre(a["aabb_world"]), _centre(b["aabb_world"])
        sa, sb = _size(a["aabb_world"]), _size(b["aabb_world"])
        kinds = []
        if abs(ca[0] - cb[0]) >= 0.1:
            kinds.append(("leftright", "left" if ca[0] < cb[0] else "right"))
        if abs(wa[2] - wb[2]) >= 0.1:
            kinds.append(("abovebelow", "above" if wa[2] > wb[2] else "below"))
        va, vb = float(np.prod(sa)), float(np.prod(sb))
        if max(va, vb) / max(min(va, vb), 1e-9) >= 1.3:
            kinds.append(("size", "bigger" if va > vb else "smaller"))
        quant = [("distance", float(np.linalg.norm(wa - wb))), ("width", float(max(sa[0], sa[1]))),
                 ("height", float(sa[2]))]
        qual = kinds[int(rng.integers(len(kinds)))] if kinds else None
        qk = quant[int(rng.integers(len(quant)))]
        out.append({"boxes": [a["bbox2d"], b["bbox2d"]], "categories": [a["category"], b["category"]],
                    "qual": qual, "quant": qk})
    return out


QUAL_TEXT = {
    "leftright": ("Is the object in the red box (region A) to the left or to the right of the object in the blue "
                  "box (region B)?", "Region A is to the {} of region B."),
    "abovebelow": ("Is the object in the red box (region A) above or below the object in the blue box (region B)?",
                   "Region A is {} region B."),
    "size": ("Is the object in the red box (region A) bigger or smaller than the object in the blue box "
             "(region B)?", "Region A is {} than region B."),
}
QUANT_TEXT = {
    "distance": "How far apart are the object in the red box (region A) and the object in the blue box (region B)?",
    "width": "How wide is the object in the red box (region A)?",
    "height": "How tall is the object in the red box (region A)?",
}
DEPTH_TEXT = ("Two points are circled on the image: A (red) and B (blue). Which point is closer to the camera?\n"
              "Select from the following choices.\n(A) A\n(B) B\nAnswer with the option's letter.")


def _draw(rgb: np.ndarray, points=(), boxes=()) -> "object":
    from PIL import Image, ImageDraw
    im = Image.fromarray(rgb[..., :3]).convert("RGB")
    d = ImageDraw.Draw(im)
    r = max(4, min(im.size) // 30)
    colours = [(255, 0, 0), (0, 80, 255)]
    for (y, x), c, label in zip(points, colours, "AB"):
        d.ellipse([x - r, y - r, x + r, y + r], outline=c, width=max(2, r // 2))
        d.text((x + r + 1, y - r), label, fill=c)
    for (x0, y0, x1, y1), c in zip(boxes, colours):
        d.rectangle([x0, y0, x1, y1], outline=c, width=3)
    return im


def cue_answer(doc: dict):
    """What a 2D shortcut answers, with no depth or 3D at all: the lower circle is the closer one; region A is
    left of / above B when its box centre is; bigger when its 2D box is. ``floor_cue.acc`` scores it like the model:
    an encoder that only lets the VLM find the marks in the image reaches this, not more. None where no such cue
    is defined (the quantities) or the doc lacks the marks' positions (GEN_VERSION 1 docs had no boxes)."""
    if doc.get("qtype") == "depth":
        (ya, _), (yb, _) = doc["points_yx"]
        return 0 if ya > yb else 1
    if doc.get("kind") != "qualitative" or "boxes_xyxy" not in doc:
        return None
    (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = doc["boxes_xyxy"]
    if doc["qtype"] == "leftright":
        return "left" if ax0 + ax1 < bx0 + bx1 else "right"
    if doc["qtype"] == "abovebelow":
        return "above" if ay0 + ay1 < by0 + by1 else "below"
    return "bigger" if (ax1 - ax0) * (ay1 - ay0) > (bx1 - bx0) * (by1 - by0) else "smaller"


def caption(rec, opts: GenOptions) -> str:
    vis = sorted((o for o in rec["objects"] if o["pixels"] >= opts.min_pixels), key=lambda o: _centre(o["aabb_cam"])[0])
    if not vis:
        return "An empty room."
    return "A room with " + ", ".join(f"a {o['category']}" for o in vis) + ", from left to right."


def _view_docs(ann_root: Path, images: Path, rec: dict, opts: GenOptions) -> tuple[dict | None, list]:
    """One view's (stage-1 caption record or None, [(task, doc)]), its images written into ``images``."""
    split = rec.get("split", "train")
    rgb = _load(ann_root, rec["rgb"], "image")
    depth = _load(ann_root, rec["depth"], "depth map").astype(np.float64) / float(rec.get("depth_scale", 1000))
    stem = rec["id"].replace("/", "_")
    cap, docs = None, []
    if split == "train":
        _draw(rgb).save(images / f"{stem}.png")
        cap = {"id": rec["id"], "image": f"../images/{stem}.png", "conversations": [
            {"from": "human", "value": "<image>\nDescribe the image briefly."},
            {"from": "gpt", "value": caption(rec, opts)}]}
    for k, q in enumerate(depth_questions(rec, depth, opts)):
        name = f"{stem}_d{k}.png"
        _draw(rgb, points=[tuple(p) for p in q["points"]]).save(images / name)
        docs.append(("blink_depth_local", {
            "id": f"{rec['id']}#d{k}", "image": f"images/{name}", "question": DEPTH_TEXT, "choices": ["(A)", "(B)"],
            "answer_index": q["answer_index"], "answer": ["(A)", "(B)"][q["answer_index"]], "kind": "choice",
            "qtype": "depth", "points_yx": q["points"], "depths_m": q["depths"], "cue_agrees": q["cue_agrees"]}))
    for k, q in enumerate(object_questions(rec, opts)):
        name = f"{stem}_o{k}.png"
        _draw(rgb, boxes=q["boxes"]).save(images / name)
        if q["qual"]:
            qt, ans = q["qual"]
            text, tmpl = QUAL_TEXT[qt]
            docs.append(("spatialrgpt_qual_local", {
                "id": f"{rec['id']}#q{k}", "image": f"images/{name}", "question": text, "answer": tmpl.format(ans),
                "target": ans, "options": list(QUAL_OPTIONS[qt]), "kind": "qualitative", "qtype": qt,
                "boxes_xyxy": q["boxes"]}))
        qt, val = q["quant"]
        docs.append(("spatialrgpt_quant_local", {
            "id": f"{rec['id']}#n{k}", "image": f"images/{name}", "question": QUANT_TEXT[qt], "answer": _fmt_m(val),
            "target_value": val, "kind": "quantitative", "qtype": qt, "boxes_xyxy": q["boxes"]}))
    return cap, docs


def default_workers() -> int:
    import os
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def generate(ann_root: Path, out: Path, opts: GenOptions = GenOptions(), workers: int | None = None) -> Path:
    """Write ``out/{task}.jsonl`` (val views), ``out/train/stage{1,2}.jsonl`` (train views) and ``out/images/``;
    atomic (a finished folder is reused). Views are drawn in ``workers`` processes (default: up to 8 cores);
    the output does not depend on ``workers`` (each view's questions are seeded by its id, order is kept)."""
    ann_root, out = Path(ann_root), Path(out)
    if (out / "done.json").is_file():
        return out
    recs = read_annotations(ann_root)
    workers = min(len(recs), default_workers() if workers is None else max(1, int(workers)))
    with atomic_dir(out, replace=True) as tmp:
        (tmp / "images").mkdir()
        (tmp / "train").mkdir()
        docs = {t: [] for t in TASKS}
        train_docs = {t: [] for t in TASKS}
        stage1, stage2 = [], []
        jobs = [(ann_root, tmp / "images", rec, opts) for rec in recs]
        if workers > 1:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor
            with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
                views = list(pool.map(_view_docs, *zip(*jobs), chunksize=max(1, len(jobs) // (4 * workers))))
        else:
            views = [_view_docs(*j) for j in jobs]
        for rec, (cap, view_docs) in zip(recs, views):
            split = rec.get("split", "train")
            if cap is not None:
                stage1.append(cap)
            for task, doc in view_docs:
                _route(doc, split, docs, train_docs, task, stage2)
        for t, ds in docs.items():
            if not ds:
                raise VQADataError(f"{ann_root}: no val-split views give a '{t}' question")
            (tmp / f"{t}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in ds))
            (tmp / "train" / f"{t}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in train_docs[t]))
        (tmp / "train" / "stage1.jsonl").write_text("".join(json.dumps(d) + "\n" for d in stage1))
        (tmp / "train" / "stage2.jsonl").write_text("".join(json.dumps(d) + "\n" for d in stage2))
        (tmp / "done.json").write_text(json.dumps({"version": GEN_VERSION, "counts": {t: len(d) for t, d in
                                                   docs.items()}, "stage1": len(stage1), "stage2": len(stage2)}))
    return out


def _route(doc: dict, split: str, test: dict, train_docs: dict, task: str, train: list) -> None:
    """A val-split doc goes to the task's test JSONL; a train-split doc to the task's train docs (floors) and,
    as a conversation, to the stage-2 data."""
    if split == "train":
        train_docs[task].append(doc)
        train.append({"id": doc["id"], "image": "../" + doc["image"], "conversations": [
            {"from": "human", "value": "<image>\n" + doc["question"]}, {"from": "gpt", "value": doc["answer"]}]})
    else:
        test[task].append(doc)


def read_docs(path: Path) -> list[dict]:
    if not Path(path).is_file():
        raise VQADataError(f"local VQA dataset '{path}' does not exist")
    return [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]


def add_data_arguments(ap, workspace_help: str) -> None:
    """``--workspace``, ``--data``, ``--world`` and ``--encoder`` of the VQA benchmarks (benchmarks/vqa_*.py)."""
    ap.add_argument("--workspace", required=True, help=workspace_help)
    ap.add_argument("--data", type=Path, help="spatial layout (annotations.jsonl) or generated task folder "
                    "(default: the spatial layout of --world's embedded world, rendered into the workspace)")
    ap.add_argument("--world", default="default", help="embedded-world preset when --data is not given: tiny, "
                    "default, or vqa (960 views: ~7k relative-depth training questions)")
    ap.add_argument("--encoder", action="append", required=True, help="encoder spec (repeat; the first is the "
                    "reference of the CIs)")


def open_data(args):
    """(workspace, data folder) of :func:`add_data_arguments`' arguments; the world is rendered when needed."""
    from harness.workspace import open_workspace
    ws = open_workspace(args.workspace, args.world)
    if args.data is not None:
        return ws, Path(args.data)
    from suites.synthetic.defaults import spatial_annotations_root
    return ws, spatial_annotations_root(ws)
