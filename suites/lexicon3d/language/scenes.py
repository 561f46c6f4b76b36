"""Scene objects (3D boxes) for grounding and QA, and what the language suites need from a data root.

A language data root holds the annotation JSON (ScanRefer / ScanQA / SQA3D, their real file names) and the
ScanNet root the lifting reads (OpenScene layout, ``suites/lexicon3d/scannet.py``): either the root itself
(annotation files put beside ``scannet_3d/``) or a ``scannet`` entry inside it (a folder or a symlink; the
world's language root links ``scannet -> ../scannet-<world>``).

Boxes, per scene, from the first that exists:
* ``scannet_3d/<split>/<scene>_instances.json`` (the world's side file: instance_id, category, aabb);
* ``scannet_data/<scene>_bbox.npy`` (ScanRefer's preprocessing, *unaligned* boxes, the frame of OpenScene's
  clouds): rows (cx, cy, cz, dx, dy, dz, label, object_id).
Object ids are ScanNet's aggregation ``objectId`` (0-based) as ScanRefer / ScanQA use them; the world's
instance ids are objectId + 1.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from suites.images import DataError


@dataclass
class SceneObjects:
    scene: str
    ids: np.ndarray          # [M] int64 object ids (ScanRefer's object_id)
    names: list[str]         # [M] category names
    boxes: np.ndarray        # [M, 6] float64 axis-aligned (xmin, ymin, zmin, xmax, ymax, zmax)
    points: np.ndarray       # [M] int64 points the world saw (-1 = unknown)

    def index(self, object_id: int) -> int | None:
        hit = np.flatnonzero(self.ids == int(object_id))
        return int(hit[0]) if len(hit) else None

    def centers(self) -> np.ndarray:
        return (self.boxes[:, :3] + self.boxes[:, 3:]) / 2

    def sizes(self) -> np.ndarray:
        return self.boxes[:, 3:] - self.boxes[:, :3]


def scannet_root(root: Path) -> Path:
    root = Path(root)
    sub = root / "scannet"
    if (sub / "scannet_3d").is_dir():
        return sub.resolve()
    if (root / "scannet_3d").is_dir():
        return root
    raise DataError(f"'{root}' holds no ScanNet root: need '{root}/scannet_3d' (annotations beside it) or "
                    f"'{sub}/scannet_3d' (a folder or symlink)")


def _read_instances(path: Path, scene: str) -> SceneObjects:
    try:
        objs = json.loads(path.read_text())["objects"]
        ids = np.array([int(o["instance_id"]) - 1 for o in objs], np.int64)
        names = [str(o["category"]) for o in objs]
        boxes = np.array([list(o["aabb"]["min"]) + list(o["aabb"]["max"]) for o in objs], np.float64).reshape(-1, 6)
        pts = np.array([int(o.get("num_points", -1)) for o in objs], np.int64)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"cannot read object boxes '{path}': {type(e).__name__}: {e}") from None
    return SceneObjects(scene, ids, names, boxes, pts)


def _read_bbox_npy(path: Path, scene: str) -> SceneObjects:
    try:
        a = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read object boxes '{path}': {e}") from None
    if a.ndim != 2 or a.shape[1] < 8:
        raise DataError(f"'{path}': expected rows (cx, cy, cz, dx, dy, dz, label, object_id), got {a.shape}")
    c, s = a[:, :3].astype(np.float64), a[:, 3:6].astype(np.float64)
    return SceneObjects(scene, a[:, 7].astype(np.int64), [f"class{int(v)}" for v in a[:, 6]],
                        np.concatenate([c - s / 2, c + s / 2], 1), np.full(len(a), -1, np.int64))


def load_objects(scannet: Path, scene: str, split: str) -> SceneObjects:
    inst = Path(scannet) / "scannet_3d" / split / f"{scene}_instances.json"
    if inst.is_file():
        return _read_instances(inst, scene)
    npy = Path(scannet) / "scannet_data" / f"{scene}_bbox.npy"
    if npy.is_file():
        return _read_bbox_npy(npy, scene)
    raise DataError(f"no object boxes for scene '{scene}': expected '{inst}' or '{npy}'")


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Axis-aligned 3D IoU of boxes a [..., 6] and b [..., 6] (min corner, max corner), broadcast."""
    lo = np.maximum(a[..., :3], b[..., :3])
    hi = np.minimum(a[..., 3:], b[..., 3:])
    inter = np.clip(hi - lo, 0, None).prod(-1)
    va = np.clip(a[..., 3:] - a[..., :3], 0, None).prod(-1)
    vb = np.clip(b[..., 3:] - b[..., :3], 0, None).prod(-1)
    union = va + vb - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def pool_objects(coords: np.ndarray, feats: np.ndarray, seen: np.ndarray, boxes: np.ndarray,
                 pad: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Object features = mean of the lifted features of the points inside each box (Lexicon3D / paper
    App. A.4: average pooling within ground-truth boxes), counting only points seen by >= 1 frame.
    Returns (features [M, D] float32, points used [M]); a box with no seen point gets zeros."""
    M, D = len(boxes), feats.shape[1]
    out = np.zeros((M, D), np.float32)
    n = np.zeros(M, np.int64)
    for m, b in enumerate(boxes):
        inside = seen & np.all((coords >= b[:3] - pad) & (coords <= b[3:] + pad), axis=1)
        n[m] = int(inside.sum())
        if n[m]:
            out[m] = feats[inside].mean(0)
    return out, n


def lifted_instances(scene, params, scene_index: int, n_points: int) -> np.ndarray | None:
    """Instance id (= object id + 1, 0 = none) of each lifted point of ``scene``, from the world's
    ``<scene>_inst.pth`` beside the cloud, selected as the lifting selects its points; None where the data
    has no instance file (OpenScene's clouds have none)."""
    import torch

    from suites.lexicon3d.lifting import select_points
    from suites.lexicon3d.scannet import load_cloud
    path = scene.cloud.with_name(scene.cloud.name.replace("_vh_clean_2.pth", "_inst.pth"))
    if not path.is_file():
        return None
    coords, _, _ = load_cloud(scene.cloud)
    try:
        inst = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is a DataError naming it
        raise DataError(f"cannot read instance ids '{path}': {type(e).__name__}: {e}") from None
    inst = np.asarray(inst.numpy() if hasattr(inst, "numpy") else inst).reshape(-1)
    if len(inst) != len(coords):
        raise DataError(f"'{path}' holds {len(inst)} instance ids for a cloud of {len(coords)} points")
    out = inst[select_points(coords, params, scene_index)].astype(np.int64)
    if len(out) != n_points:
        raise DataError(f"'{path}': {len(out)} selected points, the lifted scene has {n_points}")
    return out


def pool_instances(feats: np.ndarray, seen: np.ndarray, inst: np.ndarray, ids: np.ndarray):
    """Object features = mean of the lifted features of the object's own seen points (instance id =
    object id + 1). Returns (features [M, D] float32, points used [M])."""
    out = np.zeros((len(ids), feats.shape[1]), np.float32)
    n = np.zeros(len(ids), np.int64)
    for m, oid in enumerate(ids):
        sel = seen & (inst == oid + 1)
        n[m] = int(sel.sum())
        if n[m]:
            out[m] = feats[sel].mean(0)
    return out, n
