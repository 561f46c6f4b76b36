"""Write a synthetic world in the native on-disk formats of the real benchmarks.

Each ``write_X(world_dir, out_root, ...)`` produces exactly the layout the real
dataset reader expects (see README.md), so the harness's real readers are what
the embedded demo exercises. All writers are

* deterministic: same world + same arguments -> byte-identical files;
* atomic: everything is written into ``.tmp-<name>-<pid>`` next to ``out_root``
  and renamed into place at the end, so a half-written dataset is never visible;
* idempotent: if ``out_root`` already holds the output of the same writer for the
  same world and arguments (``.synthetic_writer.json`` stamp), it is returned
  as is; anything else in the way is refused unless ``overwrite=True``.

Splits are by scene (no scene in both splits): the last ``ceil(val_fraction * n)``
scenes form the validation/test split. A one-scene world puts that scene in both.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from . import categories as C
from .world import list_views, load_view, read_manifest, world_fingerprint

__all__ = [
    "split_scenes",
    "write_nyud",
    "write_kitti",
    "write_ade20k",
    "write_voc",
    "write_imagefolder",
    "write_roxford",
    "write_scannet",
    "write_spatial_annotations",
    "WRITERS",
    "STAMP",
]

STAMP = ".synthetic_writer.json"
JPEG_QUALITY = 95


# ------------------------------------------------------------------------- shared helpers
def split_scenes(scene_ids, val_fraction: float = 0.25) -> tuple[list[int], list[int]]:
    """Deterministic scene-level split: (train scenes, val scenes)."""
    ids = sorted(int(s) for s in set(scene_ids))
    if not (0.0 < float(val_fraction) < 1.0):
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    if not ids:
        raise ValueError("the world has no scenes")
    if len(ids) == 1:
        return ids, ids
    n_val = min(len(ids) - 1, max(1, math.ceil(val_fraction * len(ids))))
    return ids[:-n_val], ids[-n_val:]


def _views_by_scene(world_dir) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for s, v in list_views(world_dir, require_complete=True):
        out.setdefault(s, []).append(v)
    return out


@contextmanager
def _atomic_output(world_dir, out_root, writer: str, args: dict, overwrite: bool):
    """Yield a temp folder (or None when an identical output already exists), then publish it."""
    world_dir = Path(world_dir)
    read_manifest(world_dir)
    out_root = Path(out_root)
    stamp = {"writer": writer, "world_fingerprint": world_fingerprint(world_dir), "args": _jsonable(args)}
    if out_root.exists():
        old = None
        sp = out_root / STAMP
        if sp.is_file():
            try:
                old = json.loads(sp.read_text())
            except json.JSONDecodeError:
                old = None
        same = old is not None and all(old.get(k) == v for k, v in stamp.items())
        if same and not overwrite:
            yield None
            return
        if not overwrite:
            why = "was written by a different writer/world/arguments" if old else "exists and is not a synthetic output"
            raise ValueError(f"{out_root} {why}; pass overwrite=True or choose another out_root")
    out_root.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_root.parent / f".tmp-{out_root.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        info: dict = {}
        yield tmp, info
        stamp.update(_jsonable(info))
        (tmp / STAMP).write_text(json.dumps(stamp, indent=1, sort_keys=True))
        if out_root.exists():
            trash = out_root.parent / f".trash-{out_root.name}-{os.getpid()}"
            os.rename(out_root, trash)
            os.rename(tmp, out_root)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(tmp, out_root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _jsonable(x):
    return json.loads(json.dumps(x, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def _save_jpg(path: Path, rgb: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, quality=JPEG_QUALITY, subsampling=0)


def _save_png(path: Path, arr: np.ndarray, palette=None) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    if palette is not None:  # index PNG: pixel values are class ids, colours only for viewing
        a = np.ascontiguousarray(arr, dtype=np.uint8)
        im = Image.frombytes("P", (a.shape[1], a.shape[0]), a.tobytes())
        im.putpalette(palette)
    else:
        im = Image.fromarray(arr)
    im.save(path)


def _depth_u16(depth: np.ndarray, scale: float) -> np.ndarray:
    """Metres -> uint16 with value = round(depth * scale); 0 stays 0 (invalid), overflow -> 0."""
    v = np.rint(depth.astype(np.float64) * scale)
    v[(depth <= 0) | (v > 65535)] = 0
    return v.astype(np.uint16)


def _check_fraction(val_fraction):
    if not (0.0 < float(val_fraction) < 1.0):
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")


# ------------------------------------------------------------------------- NYUd v2 (BTS)
def write_nyud(world_dir, out_root, val_fraction: float = 0.25, overwrite: bool = False) -> Path:
    """NYU Depth v2, BTS convention (DINOv3 ``NYU`` reader).

    ``ROOT/nyu_train.txt`` and ``ROOT/nyu_test.txt`` with lines
    ``<split>/<scene>/rgb_XXXXX.jpg <split>/<scene>/sync_depth_XXXXX.png <focal>``
    (paths relative to ROOT); depth = uint16 PNG in millimetres, 0 = no measurement.
    """
    _check_fraction(val_fraction)
    args = dict(val_fraction=val_fraction)
    with _atomic_output(world_dir, out_root, "nyud", args, overwrite) as res:
        if res is None:
            return Path(out_root)
        tmp, info = res
        scenes = _views_by_scene(world_dir)
        train, val = split_scenes(scenes, val_fraction)
        for split, ids, list_name in (("train", train, "nyu_train.txt"), ("test", val, "nyu_test.txt")):
            lines = []
            for s in ids:
                for v in scenes[s]:
                    view = load_view(world_dir, s, v)
                    rel = f"{split}/scene_{s:05d}"
                    img = f"{rel}/rgb_{v:05d}.jpg"
                    dep = f"{rel}/sync_depth_{v:05d}.png"
                    _save_jpg(tmp / img, view.rgb)
                    _save_png(tmp / dep, _depth_u16(view.depth, 1000.0))
                    lines.append(f"{img} {dep} {view.K[0, 0]:.4f}")
            (tmp / list_name).write_text("\n".join(lines) + "\n")
        info.update(train_scenes=train, test_scenes=val, depth_unit="mm", depth_scale=1000.0)
    return Path(out_root)


# ------------------------------------------------------------------------- KITTI Eigen (BTS)
def write_kitti(world_dir, out_root, val_fraction: float = 0.25, depth_scale: float = 8.0,
                missing_gt_every: int = 0, overwrite: bool = False) -> Path:
    """KITTI Eigen split, BTS convention.

    Lists ``ROOT/eigen_train_files_with_gt.txt`` / ``ROOT/eigen_test_files_with_gt.txt`` with
    lines ``<rgb_relpath> <depth_relpath|None> <focal>``; both paths are relative to ROOT
    (so BTS's data_path = gt_path = ROOT). RGB: ``synthetic/synthetic_drive_XXXX_sync/
    image_02/data/XXXXXXXXXX.png``; depth: ``synthetic_drive_XXXX_sync/proj_depth/groundtruth/
    image_02/XXXXXXXXXX.png``, uint16, value/256 = metres, 0 = invalid.

    The indoor world is scaled by ``depth_scale`` (default 8: 0.5-9 m rooms become
    4-72 m, KITTI's 0-80 m range). Scaling the whole world with the same intrinsics
    leaves the image unchanged, so scaled depth is exact for the same RGB.
    ``missing_gt_every=k`` (>0) writes ``None`` for every k-th frame, as KITTI lists do.
    """
    _check_fraction(val_fraction)
    if not (depth_scale > 0):
        raise ValueError(f"depth_scale must be > 0, got {depth_scale!r}")
    if missing_gt_every < 0:
        raise ValueError(f"missing_gt_every must be >= 0, got {missing_gt_every!r}")
    args = dict(val_fraction=val_fraction, depth_scale=depth_scale, missing_gt_every=missing_gt_every)
    with _atomic_output(world_dir, out_root, "kitti", args, overwrite) as res:
        if res is None:
            return Path(out_root)
        tmp, info = res
        scenes = _views_by_scene(world_dir)
        train, val = split_scenes(scenes, val_fraction)
        for ids, list_name in ((train, "eigen_train_files_with_gt.txt"), (val, "eigen_test_files_with_gt.txt")):
            lines = []
            for s in ids:
                drive = f"synthetic_drive_{s:04d}_sync"
                for v in scenes[s]:
                    view = load_view(world_dir, s, v)
                    rgb_rel = f"synthetic/{drive}/image_02/data/{v:010d}.png"
                    _save_png(tmp / rgb_rel, view.rgb)
                    if missing_gt_every and (v % missing_gt_every == missing_gt_every - 1):
                        dep_rel = "None"
                    else:
                        dep_rel = f"{drive}/proj_depth/groundtruth/image_02/{v:010d}.png"
                        _save_png(tmp / dep_rel, _depth_u16(view.depth * depth_scale, 256.0))
                    lines.append(f"{rgb_rel} {dep_rel} {view.K[0, 0]:.4f}")
            (tmp / list_name).write_text("\n".join(lines) + "\n")
        info.update(train_scenes=train, test_scenes=val, depth_unit="1/256 m", world_scale=depth_scale)
    return Path(out_root)


# ------------------------------------------------------------------------- ADE20K (mmseg)
def write_ade20k(world_dir, out_root, val_fraction: float = 0.25, overwrite: bool = False) -> Path:
    """ADE20K as read by mmseg: ``images/{training,validation}/ADE_*.jpg`` and
    ``annotations/{training,validation}/ADE_*.png`` (uint8 class index; 0 = other, ignored
    with reduce_zero_label; classes 1..K = the semantic ids of categories.py)."""
    _check_fraction(val_fraction)
    with _atomic_output(world_dir, out_root, "ade20k", dict(val_fraction=val_fraction), overwrite) as res:
        if res is None:
            return Path(out_root)
        tmp, info = res
        scenes = _views_by_scene(world_dir)
        train, val = split_scenes(scenes, val_fraction)
        for split, tag, ids in (("training", "train", train), ("validation", "val", val)):
            k = 0
            for s in ids:
                for v in scenes[s]:
                    k += 1
                    view = load_view(world_dir, s, v)
                    name = f"ADE_{tag}_{k:08d}"
                    _save_jpg(tmp / "images" / split / f"{name}.jpg", view.rgb)
                    _save_png(tmp / "annotations" / split / f"{name}.png", view.semantic.astype(np.uint8))
        info.update(classes=list(C.ALL_NAMES), num_classes=C.NUM_CLASSES, ignore_index=0)
    return Path(out_root)


# ------------------------------------------------------------------------- Pascal VOC 2012
def _boundary(labels: np.ndarray, width: int) -> np.ndarray:
    """Pixels within ``width`` of a change of label (VOC's 'void' outline)."""
    b = np.zeros(labels.shape, bool)
    b[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    b[:, :-1] |= labels[:, 1:] != labels[:, :-1]
    b[1:, :] |= labels[1:, :] != labels[:-1, :]
    b[:-1, :] |= labels[1:, :] != labels[:-1, :]
    for _ in range(max(0, width - 1)):
        g = b.copy()
        g[1:] |= b[:-1]
        g[:-1] |= b[1:]
        g[:, 1:] |= b[:, :-1]
        g[:, :-1] |= b[:, 1:]
        b = g
    return b


def write_voc(world_dir, out_root, val_fraction: float = 0.25, border: int = 0, overwrite: bool = False) -> Path:
    """Pascal VOC 2012 as read by mmseg: ``VOCdevkit/VOC2012/{JPEGImages/*.jpg,
    SegmentationClass/*.png, SegmentationObject/*.png, ImageSets/Segmentation/{train,val,
    trainval}.txt}``. Class PNGs are palette PNGs: 0 = background (room structure too),
    1..N = object categories (``categories.voc_class_names()``), 255 = ignore on a
    ``border``-pixel outline of objects (0 = no outline)."""
    _check_fraction(val_fraction)
    if border < 0:
        raise ValueError(f"border must be >= 0, got {border!r}")
    args = dict(val_fraction=val_fraction, border=border)
    with _atomic_output(world_dir, out_root, "voc", args, overwrite) as res:
        if res is None:
            return Path(out_root)
        tmp, info = res
        root = tmp / "VOCdevkit" / "VOC2012"
        pal = C.voc_palette()
        lut = C.voc_lut()
        scenes = _views_by_scene(world_dir)
        train, val = split_scenes(scenes, val_fraction)
        sets = {"train": [], "val": []}
        for split, ids in (("train", train), ("val", val)):
            for s in ids:
                for v in scenes[s]:
                    view = load_view(world_dir, s, v)
                    name = f"synth_{s:05d}_{v:03d}"
                    cls = lut[np.clip(view.semantic, 0, 255)]
                    obj = np.clip(view.instance, 0, 254).astype(np.uint8)
                    if border:
                        edge = _boundary(obj, border)
                        cls = cls.copy()
                        cls[edge] = 255
                        obj = obj.copy()
                        obj[edge] = 255
                    _save_jpg(root / "JPEGImages" / f"{name}.jpg", view.rgb)
                    _save_png(root / "SegmentationClass" / f"{name}.png", cls, palette=pal)
                    _save_png(root / "SegmentationObject" / f"{name}.png", obj, palette=pal)
                    sets[split].append(name)
        d = root / "ImageSets" / "Segmentation"
        d.mkdir(parents=True)
        (d / "train.txt").write_text("\n".join(sets["train"]) + "\n")
        (d / "val.txt").write_text("\n".join(sets["val"]) + "\n")
        (d / "trainval.txt").write_text("\n".join(sets["train"] + sets["val"]) + "\n")
        info.update(classes=list(C.voc_class_names()), num_classes=len(C.voc_class_names()), ignore_index=255)
    return Path(out_root)


# ------------------------------------------------------------------------- ImageNet-style folders
def write_imagefolder(world_dir, out_root, val_fraction: float = 0.25, min_pixels: int = 400,
                      margin: float = 0.15, crop_size: int | None = None, overwrite: bool = False) -> Path:
    """Object-centric crops: ``train/<class>/*.JPEG`` and ``val/<class>/*.JPEG``.

    One square crop per visible object with at least ``min_pixels`` visible pixels, around
    its visible 2D box grown by ``margin``; ``crop_size`` resizes crops (None keeps them).
    Only classes that have crops in *both* splits are written, so class indices agree
    between train and val (the dropped classes are listed in the stamp file).
    """
    from PIL import Image

    _check_fraction(val_fraction)
    if min_pixels < 1:
        raise ValueError(f"min_pixels must be >= 1, got {min_pixels!r}")
    if crop_size is not None and crop_size < 8:
        raise ValueError(f"crop_size must be >= 8 or None, got {crop_size!r}")
    args = dict(val_fraction=val_fraction, min_pixels=min_pixels, margin=margin, crop_size=crop_size)
    with _atomic_output(world_dir, out_root, "imagefolder", args, overwrite) as res:
        if res is None:
            return Path(out_root)
        tmp, info = res
        scenes = _views_by_scene(world_dir)
        train, val = split_scenes(scenes, val_fraction)
        crops: dict[str, list] = {"train": [], "val": []}
        for split, ids in (("train", train), ("val", val)):
            for s in ids:
                for v in scenes[s]:
                    view = load_view(world_dir, s, v)
                    H, W = view.rgb.shape[:2]
                    for o in view.objects:
                        if o.pixels < min_pixels or o.bbox2d is None:
                            continue
                        x1, y1, x2, y2 = o.bbox2d
                        side = max(x2 - x1, y2 - y1) * (1 + 2 * margin)
                        side = int(min(max(side, 8), H, W))
                        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
                        a = int(round(min(max(cx - side / 2, 0), W - side)))
                        b = int(round(min(max(cy - side / 2, 0), H - side)))
                        crop = view.rgb[b : b + side, a : a + side]
                        crops[split].append((o.category, f"s{s:05d}_v{v:03d}_i{o.instance_id:02d}", crop))
        cls_train = {c for c, _, _ in crops["train"]}
        cls_val = {c for c, _, _ in crops["val"]}
        keep = sorted(cls_train & cls_val)
        if not keep:
            raise ValueError(
                "no category has object crops in both splits; generate more scenes/views or lower min_pixels"
            )
        for split in ("train", "val"):
            for cat, name, crop in crops[split]:
                if cat not in keep:
                    continue
                im = Image.fromarray(crop)
                if crop_size:
                    im = im.resize((crop_size, crop_size), Image.BILINEAR)
                p = tmp / split / cat / f"{name}.JPEG"
                p.parent.mkdir(parents=True, exist_ok=True)
                im.save(p, format="JPEG", quality=JPEG_QUALITY)
        info.update(classes=keep, dropped_classes=sorted((cls_train | cls_val) - set(keep)))
    return Path(out_root)


# ------------------------------------------------------------------------- Revisited Oxford/Paris
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
    scenes = _views_by_scene(world_dir)
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
    with _atomic_output(world_dir, out_root, "roxford", args, overwrite) as res:
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
            _save_jpg(tmp / "jpg" / f"{nm(s, v)}.jpg", load_view(world_dir, s, v).rgb)
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


# ------------------------------------------------------------------------- ScanNet (OpenScene / Lexicon3D)
SCANNET_FX_640 = 577.870605  # the fixed ScanNet depth intrinsics Lexicon3D assumes at 640x480


def _voxelise(points, colors, labels, inst, voxel: float):
    """Mean position/colour, majority label and instance per occupied voxel."""
    keys = np.floor(points / voxel).astype(np.int64)
    keys -= keys.min(0)
    dims = keys.max(0) + 1
    flat = (keys[:, 0] * dims[1] + keys[:, 1]) * dims[2] + keys[:, 2]
    uniq, inv = np.unique(flat, return_inverse=True)
    n = len(uniq)
    cnt = np.bincount(inv, minlength=n).astype(np.float64)
    pts = np.stack([np.bincount(inv, points[:, k], n) for k in range(3)], 1) / cnt[:, None]
    col = np.stack([np.bincount(inv, colors[:, k], n) for k in range(3)], 1) / cnt[:, None]

    def majority(values):
        pair = inv.astype(np.int64) * 65536 + values.astype(np.int64)
        pu, pc = np.unique(pair, return_counts=True)
        vox = pu // 65536
        order = np.lexsort((pc, vox))  # by voxel, then count ascending
        last = np.r_[vox[order][1:] != vox[order][:-1], True]
        out = np.zeros(n, np.int64)
        out[vox[order][last]] = (pu % 65536)[order][last]
        return out

    return pts, col, majority(labels), majority(inst)


def write_scannet(world_dir, out_root, val_fraction: float = 0.25, voxel: float = 0.02,
                  overwrite: bool = False) -> Path:
    """ScanNet as preprocessed for OpenScene / Lexicon3D.

    * ``scannet_3d/{train,val}/sceneXXXX_00_vh_clean_2.pth``: ``torch.save`` of a tuple of
      tensors ``(coords float32 [N,3] metres, colors float32 [N,3] in [-1,1], labels int64 [N])``
      with ScanNet-20 labels (255 = ignore); loadable with ``torch.load(weights_only=True)``.
      The cloud fuses every view's back-projected depth, voxelised at ``voxel`` metres.
    * ``scannet_3d/{split}/sceneXXXX_00_inst.pth``: int64 [N] instance id per point (0 = room).
    * ``scannet_3d/{split}/sceneXXXX_00_instances.json``: per object id, category, ScanNet-20
      label, axis-aligned and oriented world boxes, point count.
    * ``scannet_2d/sceneXXXX_00/{color/N.jpg, depth/N.png (uint16 mm), pose/N.txt (4x4
      camera-to-world, OpenCV axes as ScanNet), intrinsic/intrinsic_{depth,color}.txt (4x4)}``.

    The intrinsics are the world's (K of the rendered frames), not ScanNet's fixed
    577.87 @ 640x480: readers should take them from ``intrinsic_depth.txt``.
    """
    import torch

    _check_fraction(val_fraction)
    if not (0.001 <= voxel <= 1.0):
        raise ValueError(f"voxel must be in [0.001, 1] metres, got {voxel!r}")
    sc20 = np.full(256, C.SCANNET20_IGNORE, np.int64)
    for c in C.CATEGORIES:
        sc20[c.id] = c.scannet20
    sc20[0] = C.SCANNET20_IGNORE
    args = dict(val_fraction=val_fraction, voxel=voxel)
    with _atomic_output(world_dir, out_root, "scannet", args, overwrite) as res:
        if res is None:
            return Path(out_root)
        tmp, info = res
        scenes = _views_by_scene(world_dir)
        train, val = split_scenes(scenes, val_fraction)
        for split, ids in (("train", train), ("val", val)):
            d3 = tmp / "scannet_3d" / split
            d3.mkdir(parents=True, exist_ok=True)
            for s in ids:
                sname = f"scene{s:04d}_00"
                d2 = tmp / "scannet_2d" / sname
                P, Cc, L, I = [], [], [], []
                view = None
                for v in scenes[s]:
                    view = load_view(world_dir, s, v)
                    _save_jpg(d2 / "color" / f"{v}.jpg", view.rgb)
                    _save_png(d2 / "depth" / f"{v}.png", _depth_u16(view.depth, 1000.0))
                    (d2 / "pose").mkdir(parents=True, exist_ok=True)
                    np.savetxt(d2 / "pose" / f"{v}.txt", view.cam_to_world, fmt="%.8f")
                    vv, uu = np.nonzero(view.depth > 0)
                    z = view.depth[vv, uu].astype(np.float64)
                    K = view.K
                    pc = np.stack([(uu - K[0, 2]) / K[0, 0] * z, (vv - K[1, 2]) / K[1, 1] * z, z], 1)
                    T = view.cam_to_world
                    P.append(pc @ T[:3, :3].T + T[:3, 3])
                    Cc.append(view.rgb[vv, uu].astype(np.float64))
                    L.append(sc20[np.clip(view.semantic[vv, uu], 0, 255)])
                    I.append(view.instance[vv, uu])
                K4 = np.eye(4)
                K4[:3, :3] = view.K
                (d2 / "intrinsic").mkdir(parents=True, exist_ok=True)
                np.savetxt(d2 / "intrinsic" / "intrinsic_depth.txt", K4, fmt="%.6f")
                np.savetxt(d2 / "intrinsic" / "intrinsic_color.txt", K4, fmt="%.6f")
                pts, col, lab, ins = _voxelise(np.concatenate(P), np.concatenate(Cc), np.concatenate(L), np.concatenate(I), voxel)
                coords = torch.from_numpy(pts.astype(np.float32))
                colors = torch.from_numpy((col / 127.5 - 1.0).astype(np.float32))
                labels = torch.from_numpy(lab.astype(np.int64))
                torch.save((coords, colors, labels), d3 / f"{sname}_vh_clean_2.pth")
                torch.save(torch.from_numpy(ins.astype(np.int64)), d3 / f"{sname}_inst.pth")
                counts = np.bincount(ins, minlength=len(view.objects) + 1)
                objs = []
                for o in view.objects:
                    cat = C.by_name(o.category)
                    objs.append({
                        "instance_id": o.instance_id, "category": o.category, "category_id": o.category_id,
                        "scannet20": cat.scannet20,
                        "aabb": {"min": o.aabb_world["min"].tolist(), "max": o.aabb_world["max"].tolist()},
                        "obb": {k: np.asarray(val_).tolist() for k, val_ in o.obb_world.items()},
                        "num_points": int(counts[o.instance_id]) if o.instance_id < len(counts) else 0,
                    })
                (d3 / f"{sname}_instances.json").write_text(json.dumps({"scene": sname, "objects": objs}, indent=1))
        info.update(train_scenes=train, val_scenes=val, label_set="scannet20", ignore_index=C.SCANNET20_IGNORE,
                    scannet20_names=list(C.SCANNET20_NAMES))
    return Path(out_root)


# ------------------------------------------------------------------------- spatial-QA annotations
def write_spatial_annotations(world_dir, out_root, val_fraction: float = 0.25, overwrite: bool = False) -> Path:
    """Per-view records for the spatial-QA generator: ``ROOT/annotations.jsonl`` (one JSON
    object per view) and ``ROOT/images/<scene>/<view>_{rgb.png,depth.png,instance.png}``.

    Each record: id, scene, view, split, rgb/depth/instance paths (relative to ROOT),
    depth_scale (1000: uint16 mm), K, cam_to_world (OpenCV axes), image_size (H, W),
    world_up ([0,0,1]; floor plane z = 0), and objects [{instance_id (= value in the
    instance PNG), category, category_id, pixels, bbox2d, aabb_world, obb_world,
    aabb_cam, obb_cam}] for every object of the scene (pixels = 0 when not visible).
    """
    _check_fraction(val_fraction)
    with _atomic_output(world_dir, out_root, "spatial", dict(val_fraction=val_fraction), overwrite) as res:
        if res is None:
            return Path(out_root)
        tmp, info = res
        scenes = _views_by_scene(world_dir)
        train, val = split_scenes(scenes, val_fraction)
        split_of = {s: "train" for s in train}
        split_of.update({s: "val" for s in val})
        lines = []
        for s in sorted(scenes):
            for v in scenes[s]:
                view = load_view(world_dir, s, v)
                base = f"images/scene_{s:05d}/{v:03d}"
                _save_png(tmp / f"{base}_rgb.png", view.rgb)
                _save_png(tmp / f"{base}_depth.png", _depth_u16(view.depth, 1000.0))
                _save_png(tmp / f"{base}_instance.png", view.instance.astype(np.uint16))
                rec = {
                    "id": f"scene_{s:05d}/{v:03d}",
                    "scene": s,
                    "view": v,
                    "split": split_of[s] if len(scenes) > 1 else "train",
                    "rgb": f"{base}_rgb.png",
                    "depth": f"{base}_depth.png",
                    "depth_scale": 1000.0,
                    "instance": f"{base}_instance.png",
                    "K": view.K.tolist(),
                    "cam_to_world": view.cam_to_world.tolist(),
                    "image_size": list(view.rgb.shape[:2]),
                    "world_up": [0.0, 0.0, 1.0],
                    "floor_height": 0.0,
                    "objects": [
                        {
                            "instance_id": o.instance_id,
                            "category": o.category,
                            "category_id": o.category_id,
                            "pixels": o.pixels,
                            "bbox2d": o.bbox2d,
                            "aabb_world": {k: x.tolist() for k, x in o.aabb_world.items()},
                            "obb_world": {k: x.tolist() for k, x in o.obb_world.items()},
                            "aabb_cam": {k: x.tolist() for k, x in o.aabb_cam.items()},
                            "obb_cam": {k: x.tolist() for k, x in o.obb_cam.items()},
                        }
                        for o in view.objects
                    ],
                }
                lines.append(json.dumps(rec))
        (tmp / "annotations.jsonl").write_text("\n".join(lines) + "\n")
        info.update(train_scenes=train, val_scenes=val, records=len(lines))
    return Path(out_root)


WRITERS = {
    "nyud": write_nyud,
    "kitti": write_kitti,
    "ade20k": write_ade20k,
    "voc": write_voc,
    "imagefolder": write_imagefolder,
    "roxford": write_roxford,
    "scannet": write_scannet,
    "spatial": write_spatial_annotations,
}
