"""3D geometry for the spatial-QA generator (paper §3.2, App. D "Point Cloud Processing").

Conventions
-----------
* Camera frame: OpenCV (x right, y down, z forward), metres.
* Canonical frame (SpatialVLM's "canonical space"): right-handed, gravity aligned,
  ``+Y`` = up (the floor normal), floor at ``Y = 0``, ``+X`` = the anchor camera's
  right projected onto the floor, ``+Z = X x Y`` = horizontal direction *towards* the
  viewer; origin on the floor straight below the anchor camera. When no floor is found
  the frame is camera-relative: ``+Y`` = camera up (``-y``), origin at the camera
  (:attr:`Canonical.floor_found` is False, heights are then relative to the camera).
* Boxes: AABB ``{"min", "max"}``; OBB ``{"center", "size", "R"}`` with ``R``'s columns
  the box axes (the same layout the synthetic world writes).

What pytorch3d would have covered and what does it here: back-projection and point
transforms -> kornia (``depth_to_3d_v2``, ``transform_points``); rigid-pose composition,
inversion and geodesic distances -> roma (``Rigid``, ``rotmat_geodesic_distance``);
oriented-box IoU (pytorch3d ``box3d_overlap``) -> scipy ``HalfspaceIntersection`` +
``ConvexHull`` (+ ``linprog`` for the interior point); kNN outlier removal -> scipy
``cKDTree``; RANSAC plane fitting -> a vectorised numpy RANSAC below (no package).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "backproject",
    "backproject_pixels",
    "transform_points",
    "Canonical",
    "fit_floor_ransac",
    "canonical_from_floor",
    "camera_relative_canonical",
    "estimate_canonical",
    "clean_object_points",
    "aabb_from_points",
    "obb_from_points",
    "box_corners",
    "obb_volume",
    "obb_iou",
    "aabb_iou",
    "relative_pose",
    "fuse_points",
    "pose_distance",
]


# ----------------------------------------------------------------------------- back-projection
def backproject(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Dense back-projection (kornia ``depth_to_3d_v2``): HxW depth -> HxWx3 camera-frame points.
    Invalid depths (0, negative, NaN, inf) give NaN points."""
    import torch
    from kornia.geometry.depth import depth_to_3d_v2

    d = np.asarray(depth, np.float32)
    bad = ~np.isfinite(d) | (d <= 0)
    dt = torch.from_numpy(np.where(bad, 0.0, d).astype(np.float32))
    pts = depth_to_3d_v2(dt[None], torch.as_tensor(np.asarray(K, np.float32))[None])[0].numpy()
    pts[bad] = np.nan
    return pts


def backproject_pixels(u: np.ndarray, v: np.ndarray, z: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Sparse back-projection of pixel centres ``(u, v)`` (integer column/row) at depths ``z``.
    Same model as kornia's ``depth_to_3d_v2`` (pixel (u, v) -> ((u - cx) z / fx, (v - cy) z / fy, z))."""
    z = np.asarray(z, np.float64)
    x = (np.asarray(u, np.float64) - K[0, 2]) / K[0, 0] * z
    y = (np.asarray(v, np.float64) - K[1, 2]) / K[1, 1] * z
    return np.stack([x, y, z], -1)


def transform_points(T: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a 4x4 transform to Nx3 points (numpy; kornia.geometry.linalg.transform_points for tensors)."""
    pts = np.asarray(pts, np.float64)
    return pts @ T[:3, :3].T + T[:3, 3]


# ----------------------------------------------------------------------------- canonical space
@dataclass(frozen=True)
class Canonical:
    """``T`` maps anchor-camera points to the canonical frame; ``floor_found`` says whether the
    floor plane was found (else the frame is camera-relative); ``inliers`` = floor inlier count."""

    T: np.ndarray
    floor_found: bool
    inliers: int = 0
    camera_height: float = 0.0

    @property
    def up_cam(self) -> np.ndarray:
        """The up direction in camera coordinates."""
        return self.T[1, :3].copy()


def _frame_from_up(n: np.ndarray, d: float) -> np.ndarray:
    """Canonical transform from a unit up-normal ``n`` (camera frame) and offset ``d``
    (height of a camera point p = n.p + d)."""
    n = n / np.linalg.norm(n)
    x = np.array([1.0, 0.0, 0.0]) - n[0] * n
    if np.linalg.norm(x) < 1e-6:  # camera x parallel to up (rolled 90 degrees): use z
        x = np.array([0.0, 0.0, 1.0]) - n[2] * n
    x /= np.linalg.norm(x)
    z = np.cross(x, n)
    T = np.eye(4)
    T[0, :3], T[1, :3], T[2, :3] = x, n, z
    T[1, 3] = d
    return T


def camera_relative_canonical() -> Canonical:
    """Fallback frame: up = camera -y, origin at the camera."""
    return Canonical(T=_frame_from_up(np.array([0.0, -1.0, 0.0]), 0.0), floor_found=False)


def fit_floor_ransac(
    points: np.ndarray,
    up_prior=(0.0, -1.0, 0.0),
    max_angle_deg: float = 45.0,
    threshold: float = 0.02,
    iterations: int = 256,
    min_inlier_frac: float = 0.05,
    one_sided_frac: float = 0.95,
    max_points: int = 4000,
    rng: np.random.Generator | None = None,
):
    """RANSAC floor plane in camera coordinates. Returns ``(n, d, inliers)`` with unit ``n``
    pointing to the camera side (so camera height = d > 0) or None.

    A floor hypothesis must (1) have a normal within ``max_angle_deg`` of ``up_prior`` (camera
    -y for upright photos), (2) hold at least ``min_inlier_frac`` of the points within
    ``threshold`` metres, and (3) have at least ``one_sided_frac`` of all points on the camera's
    side (this rejects table tops, which have floor points below them). Among those the one with
    most inliers wins and is refined by least squares (SVD) on its inliers."""
    rng = rng if rng is not None else np.random.default_rng(0)
    P = np.asarray(points, np.float64)
    P = P[np.isfinite(P).all(1)]
    if len(P) < 50:
        return None
    if len(P) > max_points:
        P = P[rng.choice(len(P), max_points, replace=False)]
    N = len(P)
    idx = rng.integers(0, N, size=(iterations, 3))
    a, b, c = P[idx[:, 0]], P[idx[:, 1]], P[idx[:, 2]]
    n = np.cross(b - a, c - a)
    norm = np.linalg.norm(n, axis=1)
    ok = norm > 1e-9
    n = n[ok] / norm[ok, None]
    a = a[ok]
    d = -(n * a).sum(1)
    # orient towards the camera (origin): camera height = n.0 + d = d > 0
    s = np.where(d < 0, -1.0, 1.0)
    n *= s[:, None]
    d *= s
    prior = np.asarray(up_prior, np.float64)
    prior /= np.linalg.norm(prior)
    ok = (n @ prior) >= np.cos(np.deg2rad(max_angle_deg))
    ok &= d > threshold
    if not ok.any():
        return None
    n, d = n[ok], d[ok]
    h = P @ n.T + d  # N x M signed heights
    inl = (np.abs(h) < threshold).sum(0)
    above = (h > -3 * threshold).mean(0)
    good = (inl >= min_inlier_frac * N) & (above >= one_sided_frac)
    if not good.any():
        return None
    j = int(np.argmax(np.where(good, inl, -1)))
    nj, dj = n[j], d[j]
    # refine: least squares plane on the inliers (two rounds)
    for _ in range(2):
        Q = P[np.abs(P @ nj + dj) < threshold]
        if len(Q) < 3:
            break
        c0 = Q.mean(0)
        _, _, vt = np.linalg.svd(Q - c0, full_matrices=False)
        nn = vt[2]
        if nn @ nj < 0:
            nn = -nn
        nj, dj = nn, -float(nn @ c0)
    if dj <= 0:
        return None
    return nj, float(dj), int((np.abs(P @ nj + dj) < threshold).sum())


def canonical_from_floor(n: np.ndarray, d: float, inliers: int = 0) -> Canonical:
    return Canonical(T=_frame_from_up(np.asarray(n, np.float64), float(d)), floor_found=True, inliers=inliers,
                     camera_height=float(d))


def estimate_canonical(points: np.ndarray, rng: np.random.Generator | None = None, **ransac) -> Canonical:
    """Floor RANSAC on camera-frame points, camera-relative fallback when none is found."""
    r = fit_floor_ransac(points, rng=rng, **ransac)
    if r is None:
        return camera_relative_canonical()
    return canonical_from_floor(*r)


# ----------------------------------------------------------------------------- object clouds
def clean_object_points(pts: np.ndarray, k: int = 8, std_ratio: float = 2.0, max_points: int = 2000,
                        rng: np.random.Generator | None = None) -> np.ndarray:
    """Statistical outlier removal (open3d's ``remove_statistical_outlier``): drop points whose
    mean distance to their ``k`` nearest neighbours exceeds mean + ``std_ratio`` * std; before
    that a robust depth gate (median +- 4 MAD along z) removes flying pixels at depth edges.
    At most ``max_points`` (random subset) are kept."""
    from scipy.spatial import cKDTree

    P = np.asarray(pts, np.float64)
    P = P[np.isfinite(P).all(1)]
    if len(P) > max_points:
        rng = rng if rng is not None else np.random.default_rng(0)
        P = P[np.sort(rng.choice(len(P), max_points, replace=False))]
    if len(P) < 8:
        return P
    z = P[:, 2]
    med = np.median(z)
    mad = np.median(np.abs(z - med)) * 1.4826 + 1e-3
    P = P[np.abs(z - med) <= 4 * mad + 0.05]
    if len(P) <= k + 1:
        return P
    dist, _ = cKDTree(P).query(P, k=k + 1)
    m = dist[:, 1:].mean(1)
    keep = m <= m.mean() + std_ratio * m.std()
    return P[keep]


def aabb_from_points(P: np.ndarray) -> dict:
    return {"min": P.min(0), "max": P.max(0)}


def obb_from_points(P: np.ndarray) -> dict:
    """Gravity-aligned oriented box of canonical-frame points: PCA of the horizontal (X, Z)
    coordinates gives the yaw, the vertical extent is Y's. ``R`` columns = (major horizontal,
    up, minor horizontal); ``size`` = extents along them."""
    P = np.asarray(P, np.float64)
    xz = P[:, [0, 2]]
    c = xz.mean(0)
    if len(P) >= 3:
        cov = np.cov((xz - c).T)
        w, V = np.linalg.eigh(cov)
        a = V[:, 1]  # major axis (x, z)
    else:
        a = np.array([1.0, 0.0])
    a = a / (np.linalg.norm(a) + 1e-12)
    if a[0] < 0 or (a[0] == 0 and a[1] < 0):
        a = -a
    u1 = np.array([a[0], 0.0, a[1]])
    u2 = np.array([0.0, 1.0, 0.0])
    u3 = np.cross(u1, u2)
    R = np.stack([u1, u2, u3], 1)
    loc = P @ R
    lo, hi = loc.min(0), loc.max(0)
    return {"center": R @ ((lo + hi) / 2), "size": hi - lo, "R": R}


def box_corners(center, size, R) -> np.ndarray:
    """8x3 corners of an oriented box."""
    s = np.asarray(size, np.float64) / 2
    signs = np.array([[i, j, k] for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)], np.float64)
    return (signs * s) @ np.asarray(R, np.float64).T + np.asarray(center, np.float64)


def obb_volume(b: dict) -> float:
    return float(np.prod(np.asarray(b["size"], np.float64)))


def _halfspaces(b: dict) -> np.ndarray:
    R = np.asarray(b["R"], np.float64)
    c = np.asarray(b["center"], np.float64)
    s = np.asarray(b["size"], np.float64) / 2
    H = []
    for i in range(3):
        a = R[:, i]
        # a.x <= a.c + s_i  and  -a.x <= -a.c + s_i   (scipy form: A x + b <= 0)
        H.append(np.r_[a, -(a @ c) - s[i]])
        H.append(np.r_[-a, (a @ c) - s[i]])
    return np.array(H)


def obb_iou(b1: dict, b2: dict) -> float:
    """Exact IoU of two oriented boxes (convex polytope intersection): scipy
    ``HalfspaceIntersection`` (interior point from a Chebyshev-centre ``linprog``) + ``ConvexHull``."""
    from scipy.optimize import linprog
    from scipy.spatial import ConvexHull, HalfspaceIntersection
    from scipy.spatial import QhullError

    v1, v2 = obb_volume(b1), obb_volume(b2)
    if v1 <= 0 or v2 <= 0:
        return 0.0
    H = np.vstack([_halfspaces(b1), _halfspaces(b2)])
    A, bb = H[:, :3], -H[:, 3]
    norms = np.linalg.norm(A, axis=1, keepdims=True)
    res = linprog(np.r_[0, 0, 0, -1.0], A_ub=np.hstack([A, norms]), b_ub=bb,
                  bounds=[(None, None)] * 3 + [(0, None)], method="highs")
    if not res.success or res.x[3] < 1e-9:
        return 0.0
    try:
        hs = HalfspaceIntersection(H, res.x[:3])
        inter = ConvexHull(hs.intersections).volume
    except (QhullError, ValueError):
        return 0.0
    return float(inter / (v1 + v2 - inter))


def aabb_iou(a: dict, b: dict) -> float:
    lo = np.maximum(a["min"], b["min"])
    hi = np.minimum(a["max"], b["max"])
    inter = float(np.prod(np.clip(hi - lo, 0, None)))
    va = float(np.prod(np.asarray(a["max"]) - a["min"]))
    vb = float(np.prod(np.asarray(b["max"]) - b["min"]))
    return inter / (va + vb - inter) if va + vb - inter > 0 else 0.0


# ----------------------------------------------------------------------------- multi-view
def _rigid(T: np.ndarray):
    import roma
    import torch

    T = torch.as_tensor(np.asarray(T, np.float64))
    return roma.Rigid(T[:3, :3], T[:3, 3])


def relative_pose(cam_to_world_anchor: np.ndarray, cam_to_world_other: np.ndarray) -> np.ndarray:
    """4x4 transform taking points of the other camera into the anchor camera (roma ``Rigid``)."""
    rel = _rigid(cam_to_world_anchor).inverse().compose(_rigid(cam_to_world_other))
    return rel.to_homogeneous().numpy()


def fuse_points(clouds: list[np.ndarray], poses: list[np.ndarray], anchor: int = 0) -> np.ndarray:
    """Concatenate camera-frame clouds of several views in the anchor camera's frame."""
    out = []
    for P, T in zip(clouds, poses):
        if len(P) == 0:
            continue
        out.append(transform_points(relative_pose(poses[anchor], T), P))
    return np.concatenate(out) if out else np.zeros((0, 3))


def pose_distance(T1: np.ndarray, T2: np.ndarray, angle_scale_deg: float = 90.0, trans_scale: float = 2.0) -> float:
    """Viewpoint change in [0, 1]: mean of (rotation angle / angle_scale) and (baseline /
    trans_scale), each clipped to 1 (roma ``rotmat_geodesic_distance``)."""
    import roma
    import torch

    R1 = torch.as_tensor(np.asarray(T1, np.float64)[:3, :3])
    R2 = torch.as_tensor(np.asarray(T2, np.float64)[:3, :3])
    ang = float(np.rad2deg(roma.rotmat_geodesic_distance(R1, R2)))
    tr = float(np.linalg.norm(np.asarray(T1)[:3, 3] - np.asarray(T2)[:3, 3]))
    return 0.5 * (min(ang / angle_scale_deg, 1.0) + min(tr / trans_scale, 1.0))
