"""Camera poses (OpenCV convention): ``look_at`` and the orbit path around a scene's objects."""

from __future__ import annotations

import math

import numpy as np

from .. import categories as C
from .layout import _footprint
from .objects import oriented_box
from .spec import SceneSpec

__all__ = ["look_at", "orbit_cameras"]


def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """4x4 camera-to-world pose in the OpenCV convention (x right, y down, z forward)."""
    eye = np.asarray(eye, float)
    z = np.asarray(target, float) - eye
    n = np.linalg.norm(z)
    if n < 1e-9:
        raise ValueError("look_at: eye and target coincide")
    z /= n
    x = np.cross(z, np.asarray(up, float))
    if np.linalg.norm(x) < 1e-6:  # looking straight up/down: pick any right vector
        x = np.cross(z, np.array([0.0, 1.0, 0.0]))
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, 0], T[:3, 1], T[:3, 2], T[:3, 3] = x, y, z, eye
    return T


def orbit_cameras(
    spec: SceneSpec,
    n: int,
    rng: np.random.Generator,
    arc_degrees: float = 360.0,
    height: tuple[float, float] = (1.2, 1.7),
) -> list[np.ndarray]:
    """N camera-to-world poses on an arc around the objects, each inside the room and
    outside every object's footprint (grown by 0.3 m), looking at the objects' centre."""
    if n < 1:
        raise ValueError(f"views must be >= 1, got {n}")
    room = spec.room
    focus_objs = [o for o in spec.objects if C.by_name(o.category).support != "wall"] or list(spec.objects)
    if focus_objs:
        centres = np.array([oriented_box(o)["obb"]["center"] for o in focus_objs])
        target = centres.mean(0)
        target[2] = float(np.clip(target[2], 0.3, 0.9))
    else:
        target = np.array([0.0, 0.0, 0.5])
    r0 = float(rng.uniform(1.8, 3.0))
    th0 = float(rng.uniform(0, 2 * np.pi))
    h0 = float(rng.uniform(*height))
    step = np.deg2rad(arc_degrees) / n if arc_degrees < 360 or n == 1 else 2 * np.pi / n
    margin = 0.35
    fps = [_footprint(o) for o in spec.objects]

    def ok(p: np.ndarray) -> bool:
        if abs(p[0]) > room[0] / 2 - margin or abs(p[1]) > room[1] / 2 - margin:
            return False
        for c, h, R, z in fps:
            if z[1] < p[2] - 0.35:  # well below the camera (e.g. a table): fine to be above it
                continue
            q = R.T @ (p[:2] - c)
            if np.all(np.abs(q) <= h + 0.3):
                return False
        return True

    def blocked(p: np.ndarray, tgt: np.ndarray) -> float:
        """Fraction of the sight line eye->target that runs through object boxes."""
        ts = np.linspace(0.05, 0.9, 18)
        pts = p[None, :] + ts[:, None] * (tgt - p)[None, :]
        hit = np.zeros(len(ts), bool)
        for c, h, R, z in fps:
            q = (pts[:, :2] - c) @ R
            hit |= np.all(np.abs(q) <= h + 0.05, axis=1) & (pts[:, 2] >= z[0]) & (pts[:, 2] <= z[1])
        return float(hit.mean())

    poses = []
    for i in range(n):
        th = th0 + i * step
        hz = h0 + 0.12 * math.sin(2 * math.pi * i / max(n, 1))
        tgt = target + np.array([rng.normal(0, 0.1), rng.normal(0, 0.1), rng.normal(0, 0.05)])
        best, best_score = None, np.inf
        # preferred angle first, then the nearest angles on either side
        for dth in [0.0] + [s * a for a in np.linspace(0.15, np.pi, 12) for s in (1, -1)]:
            d = np.array([math.cos(th + dth), math.sin(th + dth)])
            for r in np.linspace(r0, 0.8, 12):
                p = np.array([tgt[0] + r * d[0], tgt[1] + r * d[1], hz])
                if not ok(p):
                    continue
                score = blocked(p, tgt) + 0.02 * abs(dth)
                if score < best_score:
                    best, best_score = p, score
                if score < 0.05:
                    break
            if best_score < 0.05:
                break
        if best is None:
            raise ValueError("no free camera position in this scene (objects fill the room)")
        # close to the target a fixed target height would mean staring at the floor:
        # cap the downward pitch at 35 degrees by raising the look-at point
        horiz = float(np.linalg.norm(best[:2] - tgt[:2]))
        tgt = tgt.copy()
        tgt[2] = max(tgt[2], best[2] - horiz * math.tan(math.radians(35.0)))
        poses.append(look_at(best, tgt))
    return poses
