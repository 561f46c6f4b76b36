"""Per-view geometry (computed once per view, reused by every sample) and its multi-view fusion."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from . import geometry as G
from .sources import Observation, ViewError

__all__ = ["Object3D", "ViewGeometry", "SceneObject", "compute_view_geometry", "single_view_objects",
           "fused_objects", "MIN_OBJECT_PIXELS", "MIN_OBJECT_POINTS"]

MIN_OBJECT_PIXELS = 30
MIN_OBJECT_POINTS = 20
POINT_POOL = 24  # candidate query pixels kept per object
GLOBAL_POOL = 48  # candidate query pixels anywhere
CLOUD_KEEP = 384  # cleaned camera-frame points kept per object (fusion input)


@dataclass
class Object3D:
    """One object seen in one view (camera frame of that view)."""

    instance_id: int
    category: str
    bbox2d: tuple  # x1, y1, x2, y2 pixel edges (x2/y2 exclusive)
    pixels: int
    uvz: np.ndarray  # Px3 (u, v, depth) query pixels inside the eroded mask
    cloud: np.ndarray  # Nx3 cleaned camera-frame points (subsample)


@dataclass
class ViewGeometry:
    key: str
    group: str
    image: str
    size: tuple  # (H, W)
    K: np.ndarray
    cam_to_world: np.ndarray | None
    canonical: G.Canonical
    objects: list[Object3D]
    uvz: np.ndarray  # global pool of valid query pixels
    invalid_depth_frac: float = 0.0
    notes: list = field(default_factory=list)

    def object(self, iid: int) -> Object3D | None:
        for o in self.objects:
            if o.instance_id == iid:
                return o
        return None


@dataclass
class SceneObject:
    """An object of a sample, in the anchor's canonical frame."""

    instance_id: int
    category: str
    obb: dict  # canonical
    aabb: dict  # canonical
    center: np.ndarray  # canonical OBB centre
    center_cam: np.ndarray  # the same point in the anchor camera frame
    view: int  # index (in the sample's image list) of the view where it shows most
    bbox2d: tuple
    size_hw: tuple  # (H, W) of that view
    pixels: int
    uvz: np.ndarray | None  # query pixels in the anchor view (None if not visible there)


def _rng_for(key: str, seed: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(key.encode())])


def compute_view_geometry(obs: Observation, seed: int = 0, min_pixels: int = MIN_OBJECT_PIXELS,
                          min_points: int = MIN_OBJECT_POINTS, dense: bool = True) -> ViewGeometry:
    """Back-project one view, find its canonical frame, extract per-object clouds.

    ``dense=True`` back-projects the whole depth map with kornia; ``dense=False`` back-projects
    only the pixels needed (same numbers, faster)."""
    from scipy.ndimage import binary_erosion, find_objects

    rng = _rng_for(obs.ref.key, seed)
    depth = np.asarray(obs.depth, np.float32)
    H, W = depth.shape
    valid = np.isfinite(depth) & (depth > 0)
    inv_frac = 1.0 - float(valid.mean())
    if valid.sum() < 50:
        raise ViewError(f"{obs.files.get('depth', obs.ref.key)}: view {obs.ref.key} has no valid depth", "no valid depth")
    depth = np.where(valid, depth, 0.0).astype(np.float32)
    K = np.asarray(obs.K, np.float64)
    if dense:
        pts = G.backproject(depth, K)
        vv, uu = np.nonzero(valid)
        sel = rng.choice(len(vv), min(4000, len(vv)), replace=False)
        floor_pts = pts[vv[sel], uu[sel]].astype(np.float64)
    else:
        pts = None
        vv, uu = np.nonzero(valid)
        sel = rng.choice(len(vv), min(4000, len(vv)), replace=False)
        floor_pts = G.backproject_pixels(uu[sel], vv[sel], depth[vv[sel], uu[sel]], K)
    canon = G.estimate_canonical(floor_pts, rng=rng)

    inst = np.asarray(obs.instance)
    objs = []
    slices = find_objects(np.clip(inst, 0, None)) if inst.max() > 0 else []
    for i, sl in enumerate(slices, start=1):
        if sl is None or i not in obs.labels:
            continue
        m = inst[sl] == i
        npx = int(m.sum())
        if npx < min_pixels:
            continue
        vmask = m & valid[sl]
        er = binary_erosion(vmask)
        core = er if er.sum() >= max(min_points, 0.3 * vmask.sum()) else vmask
        cv, cu = np.nonzero(core)
        if len(cv) < min_points:
            continue
        cv = cv + sl[0].start
        cu = cu + sl[1].start
        if len(cv) > 4000:
            s = np.sort(rng.choice(len(cv), 4000, replace=False))
            cv, cu = cv[s], cu[s]
        z = depth[cv, cu]
        P = pts[cv, cu].astype(np.float64) if pts is not None else G.backproject_pixels(cu, cv, z, K)
        P = G.clean_object_points(P, rng=rng)
        if len(P) < min_points:
            continue
        if len(P) > CLOUD_KEEP:
            P = P[rng.choice(len(P), CLOUD_KEEP, replace=False)]
        # query pixels: inside the eroded mask, depth close to the object's median (no edge pixels)
        zmed = np.median(z)
        okq = np.abs(z - zmed) < max(0.25, 0.15 * zmed)
        qi = np.flatnonzero(okq)
        if len(qi) == 0:
            continue
        qi = rng.choice(qi, min(POINT_POOL, len(qi)), replace=False)
        uvz = np.stack([cu[qi], cv[qi], z[qi]], 1).astype(np.float64)
        ys, xs = np.nonzero(m)
        bbox = (int(xs.min() + sl[1].start), int(ys.min() + sl[0].start), int(xs.max() + sl[1].start) + 1,
                int(ys.max() + sl[0].start) + 1)
        objs.append(Object3D(i, str(obs.labels[i]), bbox, npx, uvz, P.astype(np.float32)))
    gi = rng.choice(len(vv), min(GLOBAL_POOL, len(vv)), replace=False)
    guvz = np.stack([uu[gi], vv[gi], depth[vv[gi], uu[gi]]], 1).astype(np.float64)
    return ViewGeometry(obs.ref.key, obs.ref.group, obs.ref.image, (H, W), K,
                        None if obs.cam_to_world is None else np.asarray(obs.cam_to_world, np.float64),
                        canon, objs, guvz, inv_frac)


def _make(o_id, cat, P_cam_anchor, canon: G.Canonical, view, bbox, hw, px, uvz) -> SceneObject:
    Pc = G.transform_points(canon.T, P_cam_anchor)
    obb = G.obb_from_points(Pc)
    aabb = G.aabb_from_points(Pc)
    c = np.asarray(obb["center"])
    Tinv = np.linalg.inv(canon.T)
    c_cam = Tinv[:3, :3] @ c + Tinv[:3, 3]
    return SceneObject(o_id, cat, obb, aabb, c, c_cam, view, bbox, hw, px, uvz)


def single_view_objects(g: ViewGeometry) -> list[SceneObject]:
    return [_make(o.instance_id, o.category, o.cloud.astype(np.float64), g.canonical, 0, o.bbox2d, g.size, o.pixels,
                  o.uvz) for o in g.objects]


def fused_objects(geoms: list[ViewGeometry]) -> tuple[list[SceneObject], G.Canonical]:
    """Objects of several views fused in the anchor (``geoms[0]``) camera frame, then boxed in the
    anchor's canonical frame (floor from the anchor; when the anchor sees no floor, from the
    fused scene). Instance ids must be consistent across the views (same scene)."""
    poses = [g.cam_to_world for g in geoms]
    for g, T in zip(geoms, poses):
        if T is None:
            raise ValueError(f"view {g.key} ({g.image}) has no camera pose: multi-view samples need poses "
                             "(ground truth or a reconstructor)")
    rel = [np.eye(4)] + [G.relative_pose(poses[0], T) for T in poses[1:]]
    canon = geoms[0].canonical
    if not canon.floor_found:
        pts = [G.transform_points(r, o.cloud) for r, g in zip(rel, geoms) for o in g.objects]
        gp = [G.transform_points(r, G.backproject_pixels(g.uvz[:, 0], g.uvz[:, 1], g.uvz[:, 2], g.K)) for r, g in zip(rel, geoms)]
        allp = np.concatenate(pts + gp) if pts or gp else np.zeros((0, 3))
        canon = G.estimate_canonical(allp)
    ids: dict[int, list] = {}
    for vi, (r, g) in enumerate(zip(rel, geoms)):
        for o in g.objects:
            ids.setdefault(o.instance_id, []).append((vi, o, G.transform_points(r, o.cloud)))
    out = []
    for iid, parts in sorted(ids.items()):
        P = np.concatenate([p for _, _, p in parts])
        vi, best, _ = max(parts, key=lambda t: t[1].pixels)
        anchor_part = [o for v, o, _ in parts if v == 0]
        uvz = anchor_part[0].uvz if anchor_part else None
        out.append(_make(iid, best.category, P, canon, vi, best.bbox2d, geoms[vi].size, best.pixels, uvz))
    return out, canon
