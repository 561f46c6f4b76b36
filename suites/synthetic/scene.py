"""Procedural indoor scenes: specs, random sampling, MJCF, exact object boxes.

A scene is a plain, JSON-serialisable :class:`SceneSpec` (room + objects +
lights); :func:`build_mjcf` turns it into MJCF text and :func:`compile_scene`
into a MuJoCo model plus the geom -> instance / category tables the renderer
needs. Objects are static bodies built from primitives in an object frame
whose origin is the centre of the footprint on the support surface (z up), so
placing an object on the floor or a table top is exact and analytic: no
physics settling, no interpenetration (footprints are checked with a
separating-axis test in 3D, with a small gap).

World frame: metres, z up, floor at z = 0, room centred on the origin.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from . import categories as C

__all__ = [
    "ObjectSpec",
    "LightSpec",
    "SceneSpec",
    "CompiledScene",
    "sample_scene",
    "orbit_cameras",
    "look_at",
    "build_mjcf",
    "compile_scene",
    "validate_spec",
    "object_box",
]

GAP = 0.02  # minimum clearance between objects (m)
WALL_T = 0.1  # wall / ceiling thickness (m)

# size ranges (width x, depth y, height z) in metres; "small" = version put on a table
_SIZES: dict[str, tuple[tuple[float, float], ...]] = {
    "chair": ((0.40, 0.55), (0.40, 0.55), (0.80, 1.00)),
    "table": ((0.80, 1.60), (0.60, 1.00), (0.70, 0.78)),
    "sofa": ((1.50, 2.20), (0.80, 1.00), (0.75, 0.95)),
    "cabinet": ((0.50, 1.20), (0.35, 0.60), (0.70, 1.90)),
    "bookshelf": ((0.60, 1.20), (0.28, 0.40), (1.20, 2.00)),
    "bed": ((1.00, 1.60), (1.90, 2.10), (0.80, 1.10)),
    "lamp": ((0.30, 0.50), None, (1.30, 1.80)),  # None: same as x (round)
    "plant-pot": ((0.30, 0.60), None, (0.50, 1.30)),
    "box": ((0.25, 0.60), (0.25, 0.60), (0.20, 0.60)),
    "ball": ((0.20, 0.40), None, None),  # None height: sphere
    "cylinder-can": ((0.15, 0.35), None, (0.30, 0.70)),
    "bottle": ((0.08, 0.14), None, (0.25, 0.45)),
    "mug": ((0.10, 0.14), None, (0.10, 0.14)),
    "book": ((0.20, 0.35), (0.25, 0.40), (0.03, 0.08)),
    "picture": ((0.40, 1.20), (0.03, 0.03), (0.30, 0.90)),
}
_SMALL_SIZES: dict[str, tuple[tuple[float, float], ...]] = {
    "box": ((0.10, 0.30), (0.10, 0.30), (0.08, 0.25)),
    "ball": ((0.07, 0.20), None, None),
    "cylinder-can": ((0.06, 0.10), None, (0.10, 0.18)),
    "bottle": ((0.06, 0.09), None, (0.20, 0.33)),
    "mug": ((0.08, 0.10), None, (0.09, 0.12)),
    "book": ((0.15, 0.25), (0.20, 0.30), (0.02, 0.05)),
}


# ----------------------------------------------------------------------------- specs
@dataclass(frozen=True)
class ObjectSpec:
    """One object. ``xy``/``base_z``: footprint centre and the height it stands on;
    ``dims``: full extents (x width, y depth, z height) of its object-frame box;
    ``yaw``: rotation about +z (radians); ``style``: seed for builder variations."""

    category: str
    xy: tuple[float, float]
    dims: tuple[float, float, float]
    yaw: float = 0.0
    base_z: float = 0.0
    rgba: tuple[float, float, float, float] = (0.6, 0.6, 0.6, 1.0)
    rgba2: tuple[float, float, float, float] = (0.3, 0.3, 0.3, 1.0)
    texture: str = "none"  # none | checker | gradient | noise
    style: int = 0


@dataclass(frozen=True)
class LightSpec:
    pos: tuple[float, float, float]
    dir: tuple[float, float, float] = (0.0, 0.0, -1.0)
    diffuse: tuple[float, float, float] = (0.6, 0.6, 0.6)
    directional: bool = False
    cutoff: float = 75.0


@dataclass(frozen=True)
class SceneSpec:
    """A whole scene; ``room`` = (size x, size y, height) in metres."""

    room: tuple[float, float, float] = (5.0, 5.0, 2.8)
    objects: tuple[ObjectSpec, ...] = ()
    lights: tuple[LightSpec, ...] = (LightSpec(pos=(0.0, 0.0, 2.7)),)
    floor_rgba: tuple[float, float, float, float] = (0.55, 0.45, 0.35, 1.0)
    floor_rgba2: tuple[float, float, float, float] = (0.35, 0.28, 0.2, 1.0)
    floor_texture: str = "checker"
    wall_rgba: tuple[float, float, float, float] = (0.8, 0.8, 0.75, 1.0)
    ceiling: bool = True
    walls: bool = True
    floor_reflectance: float = 0.0
    ambient: float = 0.25

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "SceneSpec":
        d = dict(d)
        d["room"] = tuple(d["room"])
        d["objects"] = tuple(
            ObjectSpec(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in o.items()})
            for o in d.get("objects", ())
        )
        d["lights"] = tuple(
            LightSpec(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in li.items()})
            for li in d.get("lights", ())
        )
        for k in ("floor_rgba", "floor_rgba2", "wall_rgba"):
            if k in d:
                d[k] = tuple(d[k])
        return SceneSpec(**d)


# ----------------------------------------------------------------------------- geometry helpers
def _rotz(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _quat_wxyz(R: np.ndarray) -> tuple[float, float, float, float]:
    """Rotation matrix -> unit quaternion (w, x, y, z)."""
    m = R
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    if tr > 0:
        s = math.sqrt(tr + 1.0) * 2
        w, x, y, z = 0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) * 2
        w, x, y, z = (m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s
    elif m[1, 1] > m[2, 2]:
        s = math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) * 2
        w, x, y, z = (m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s
    else:
        s = math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) * 2
        w, x, y, z = (m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s
    q = np.array([w, x, y, z])
    q /= np.linalg.norm(q)
    return tuple(float(v) for v in q)


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


# a geom in the object frame: type, MuJoCo size, pos, rotation matrix, material slot ("a"/"b"/"e")
_Geom = tuple[str, tuple[float, ...], tuple[float, float, float], np.ndarray, str]
_I3 = np.eye(3)
_RX90 = np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])  # cylinder axis z -> y
_RY90 = np.array([[0, 0, 1.0], [0, 1.0, 0], [-1.0, 0, 0]])  # cylinder axis z -> x


def _box(cx, cy, z0, sx, sy, sz, slot="a") -> _Geom:
    return ("box", (sx / 2, sy / 2, sz / 2), (cx, cy, z0 + sz / 2), _I3, slot)


def _cyl(cx, cy, z0, r, h, slot="a", R=_I3) -> _Geom:
    return ("cylinder", (r, h / 2), (cx, cy, z0 + h / 2), R, slot)


def _geom_halfext(g: _Geom) -> np.ndarray:
    """Half extents of a geom's tight box in its own frame."""
    t, s = g[0], g[1]
    if t == "box":
        return np.array(s[:3])
    if t == "sphere":
        return np.array([s[0]] * 3)
    if t == "cylinder":
        return np.array([s[0], s[0], s[1]])
    if t == "capsule":
        return np.array([s[0], s[0], s[1] + s[0]])
    if t == "ellipsoid":
        return np.array(s[:3])
    raise ValueError(f"no extent rule for geom type {t!r}")


# ----------------------------------------------------------------------------- object builders
def _build_object(o: ObjectSpec) -> list[_Geom]:
    """Primitive geoms of one object, all inside its dims box (x,y centred, z from 0)."""
    sx, sy, sz = o.dims
    st = np.random.default_rng(o.style)
    cat = o.category
    g: list[_Geom] = []
    if cat == "chair":
        seat_h = sz * st.uniform(0.48, 0.56)
        t = min(0.045, sx * 0.1, sy * 0.1)
        seat_t = min(0.05, seat_h * 0.3)
        lx, ly = sx / 2 - t / 2, sy / 2 - t / 2
        round_legs = st.random() < 0.5
        for ix in (-1, 1):
            for iy in (-1, 1):
                if round_legs:
                    g.append(_cyl(ix * lx, iy * ly, 0.0, t / 2, seat_h - seat_t, "b"))
                else:
                    g.append(_box(ix * lx, iy * ly, 0.0, t, t, seat_h - seat_t, "b"))
        g.append(_box(0, 0, seat_h - seat_t, sx, sy, seat_t, "a"))
        bt = min(0.05, sy * 0.15)
        g.append(_box(0, sy / 2 - bt / 2, seat_h, sx, bt, sz - seat_h, "a"))
    elif cat == "table":
        top_t = min(0.04, sz * 0.1)
        if st.random() < 0.25 and max(sx, sy) < 1.2:  # pedestal table
            r = min(sx, sy) * 0.3
            bh = min(0.03, sz * 0.05)
            g.append(_cyl(0, 0, 0, r, bh, "b"))
            g.append(_cyl(0, 0, bh, min(0.04, r * 0.3), sz - top_t - bh, "b"))
        else:
            t = min(0.05, sx * 0.15, sy * 0.15)
            inset = min(st.uniform(0.03, 0.08), sx * 0.1, sy * 0.1)
            for ix in (-1, 1):
                for iy in (-1, 1):
                    g.append(
                        _box(ix * (sx / 2 - inset - t / 2), iy * (sy / 2 - inset - t / 2), 0, t, t, sz - top_t, "b")
                    )
        g.append(_box(0, 0, sz - top_t, sx, sy, top_t, "a"))
    elif cat == "sofa":
        base_h = sz * 0.5
        arm_w = min(st.uniform(0.12, 0.2), sx * 0.15)
        back_d = min(st.uniform(0.18, 0.25), sy * 0.3)
        arm_h = sz * st.uniform(0.65, 0.75)
        g.append(_box(0, 0, 0.0, sx, sy, base_h * 0.6, "b"))
        g.append(_box(0, -back_d / 2, base_h * 0.6, sx - 2 * arm_w, sy - back_d, base_h * 0.4, "a"))
        g.append(_box(0, sy / 2 - back_d / 2, base_h * 0.6, sx, back_d, sz - base_h * 0.6, "a"))
        for ix in (-1, 1):
            g.append(_box(ix * (sx / 2 - arm_w / 2), -back_d / 2, base_h * 0.6, arm_w, sy - back_d, arm_h - base_h * 0.6, "a"))
    elif cat == "cabinet":
        front = min(0.025, sy * 0.1)
        g.append(_box(0, front / 2, 0, sx, sy - front, sz, "a"))
        n = int(st.integers(1, 4))
        hh = sz / n
        gap = min(0.02, hh * 0.1)
        for k in range(n):
            g.append(_box(0, -sy / 2 + front / 2 + front / 4, k * hh + gap, sx * 0.9, front / 2, hh - 2 * gap, "a"))
            hz = min(0.03, hh * 0.2)
            g.append(_box(0, -sy / 2 + front / 4, k * hh + hh * 0.5 - hz / 2, min(0.15, sx * 0.3), front / 2, hz, "b"))
    elif cat == "bookshelf":
        t = min(0.025, sx * 0.05, sz * 0.05)
        bp = min(0.01, sy * 0.05)
        g.append(_box(-sx / 2 + t / 2, 0, 0, t, sy, sz, "a"))
        g.append(_box(sx / 2 - t / 2, 0, 0, t, sy, sz, "a"))
        g.append(_box(0, sy / 2 - bp / 2, 0, sx - 2 * t, bp, sz, "a"))
        n = int(st.integers(3, 6))
        for k in range(n + 1):
            z = k * (sz - t) / n
            g.append(_box(0, -bp / 2, z, sx - 2 * t, sy - bp, t, "a"))
        # a few books on the shelves (part of the bookshelf instance)
        gap = (sz - t) / n
        inner = sy - bp
        for k in range(n):
            x = -sx / 2 + t + 0.01
            while True:
                w = st.uniform(0.02, 0.05)
                h = (gap - t) * st.uniform(0.5, 0.85)
                if x + w > sx / 2 - t - 0.01 or st.random() < 0.08:
                    break
                d = inner * st.uniform(0.6, 0.95)
                g.append(_box(x + w / 2, sy / 2 - bp - d / 2, k * gap + t, w, d, h, "b"))
                x += w + st.uniform(0.0, 0.01)
    elif cat == "bed":
        frame_h = min(0.3, sz * 0.35)
        head_d = min(0.08, sy * 0.05)
        mat_h = min(0.22, sz * 0.25)
        g.append(_box(0, -head_d / 2, 0, sx, sy - head_d, frame_h, "b"))
        g.append(_box(0, -head_d / 2, frame_h, sx * 0.96, (sy - head_d) * 0.97, mat_h, "a"))
        g.append(_box(0, sy / 2 - head_d / 2, 0, sx, head_d, sz, "b"))
        pil_h = min(0.1, sz * 0.1)
        pry = min(0.15, sy * 0.1)
        top = frame_h + mat_h
        g.append(("ellipsoid", (sx * 0.3, pry, pil_h / 2), (0.0, sy / 2 - head_d - pry - 0.02 * sy, top + pil_h / 2), _I3, "e"))
    elif cat == "lamp":
        r = min(sx, sy) / 2
        shade_h = min(0.3, sz * 0.2)
        bh = min(0.03, sz * 0.05)
        g.append(_cyl(0, 0, 0, r * 0.7, bh, "b"))
        g.append(_cyl(0, 0, bh, min(0.015, r * 0.2), sz - shade_h - bh, "b"))
        g.append(_cyl(0, 0, sz - shade_h, r, shade_h, "e"))
    elif cat == "plant-pot":
        r = min(sx, sy) / 2
        pot_h = sz * st.uniform(0.3, 0.45)
        g.append(_cyl(0, 0, 0, r * 0.65, pot_h, "a"))
        fh = sz - pot_h
        g.append(("ellipsoid", (r, r, fh / 2), (0.0, 0.0, pot_h + fh / 2), _I3, "e"))
    elif cat == "box":
        g.append(_box(0, 0, 0, sx, sy, sz, "a"))
        if st.random() < 0.4:  # a lid
            g.append(_box(0, 0, sz * 0.85, sx, sy, sz * 0.15, "b"))
    elif cat == "ball":
        r = min(sx, sy, sz) / 2
        g.append(("sphere", (r,), (0.0, 0.0, r), _I3, "a"))
    elif cat == "cylinder-can":
        r = min(sx, sy) / 2
        g.append(_cyl(0, 0, 0, r, sz, "a"))
        ch = min(0.01, sz * 0.1)
        g.append(_cyl(0, 0, sz - ch, r * 0.9, ch, "b"))
    elif cat == "bottle":
        r = min(sx, sy) / 2
        body = sz * 0.62
        g.append(_cyl(0, 0, 0, r, body, "a"))
        g.append(_cyl(0, 0, body, r * 0.65, sz * 0.1, "a"))
        g.append(_cyl(0, 0, body + sz * 0.1, r * 0.35, sz * 0.2, "a"))
        g.append(_cyl(0, 0, sz * 0.92, r * 0.4, sz * 0.08, "b"))
    elif cat == "mug":
        hw = min(0.025, sx * 0.25)  # handle reach
        r = min(sx - hw, sy) / 2
        cx = sx / 2 - hw - r  # body touches the handle region
        ht = min(0.012, hw * 0.5, sz * 0.1)  # handle bar thickness
        g.append(_cyl(cx, 0, 0, r, sz, "a"))
        g.append(_box(sx / 2 - ht / 2, 0, sz * 0.2, ht, ht, sz * 0.6, "a"))
        arm = hw - ht + min(0.002, r * 0.1)  # connectors reach slightly into the body
        for zc in (sz * 0.2, sz * 0.8 - ht):
            g.append(_box(sx / 2 - ht - arm / 2, 0, zc, arm, ht, ht, "a"))
    elif cat == "book":
        cover = min(0.004, sz * 0.2)
        g.append(_box(0, 0, 0, sx, sy, cover, "a"))
        g.append(_box(0, 0, sz - cover, sx, sy, cover, "a"))
        g.append(_box(-sx / 2 + cover / 2, 0, 0, cover, sy, sz, "a"))
        pin = min(0.004, sx * 0.05)
        g.append(_box(cover / 2 - pin / 2, 0, cover, sx - cover - pin, sy * 0.97, sz - 2 * cover, "b"))
    elif cat == "picture":
        fr = min(0.05, sx * 0.1, sz * 0.1)
        cd = min(0.01, sy * 0.3)
        g.append(_box(0, cd / 2, 0, sx, sy - cd, sz, "b"))
        g.append(_box(0, -sy / 2 + cd / 2, fr, sx - 2 * fr, cd, sz - 2 * fr, "a"))
    else:  # pragma: no cover - guarded by validate_spec
        raise ValueError(f"no builder for category {cat!r}")
    return g


def object_box(o: ObjectSpec) -> tuple[np.ndarray, np.ndarray]:
    """Tight object-frame box (lo, hi) of an object's geoms (exact for these primitives)."""
    lo = np.full(3, np.inf)
    hi = np.full(3, -np.inf)
    for geom in _build_object(o):
        he = np.abs(geom[3]) @ _geom_halfext(geom)
        p = np.asarray(geom[2])
        lo = np.minimum(lo, p - he)
        hi = np.maximum(hi, p + he)
    return lo, hi


def object_pose(o: ObjectSpec) -> np.ndarray:
    """4x4 object-to-world transform."""
    T = np.eye(4)
    T[:3, :3] = _rotz(o.yaw)
    T[:3, 3] = (o.xy[0], o.xy[1], o.base_z)
    return T


def oriented_box(o: ObjectSpec) -> dict:
    """World-frame oriented box {center, size, R} and axis-aligned box {min, max}."""
    lo, hi = object_box(o)
    T = object_pose(o)
    c_local = (lo + hi) / 2
    center = T[:3, :3] @ c_local + T[:3, 3]
    size = hi - lo
    corners = box_corners(center, size, T[:3, :3])
    return {
        "obb": {"center": center, "size": size, "R": T[:3, :3].copy()},
        "aabb": {"min": corners.min(0), "max": corners.max(0)},
    }


def box_corners(center, size, R) -> np.ndarray:
    """8x3 corners of an oriented box."""
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], float)
    return (signs * (np.asarray(size) / 2)) @ np.asarray(R).T + np.asarray(center)


# ----------------------------------------------------------------------------- validation
def _footprint(o: ObjectSpec):
    lo, hi = object_box(o)
    R = _rotz(o.yaw)[:2, :2]
    c = R @ ((lo[:2] + hi[:2]) / 2) + np.asarray(o.xy)
    return c, (hi[:2] - lo[:2]) / 2, R, (o.base_z + lo[2], o.base_z + hi[2])


def _rects_overlap(c1, h1, R1, c2, h2, R2, gap: float) -> bool:
    """Separating-axis test for two oriented rectangles grown by gap/2 each."""
    h1 = h1 + gap / 2
    h2 = h2 + gap / 2
    d = c2 - c1
    for axis in (R1[:, 0], R1[:, 1], R2[:, 0], R2[:, 1]):
        r1 = h1[0] * abs(axis @ R1[:, 0]) + h1[1] * abs(axis @ R1[:, 1])
        r2 = h2[0] * abs(axis @ R2[:, 0]) + h2[1] * abs(axis @ R2[:, 1])
        if abs(axis @ d) > r1 + r2:
            return False
    return True


def objects_overlap(a: ObjectSpec, b: ObjectSpec, gap: float = GAP) -> bool:
    ca, ha, Ra, za = _footprint(a)
    cb, hb, Rb, zb = _footprint(b)
    if za[1] <= zb[0] + 1e-9 or zb[1] <= za[0] + 1e-9:  # stacked (e.g. mug on a table)
        return False
    return _rects_overlap(ca, ha, Ra, cb, hb, Rb, gap)


def _inside_room(o: ObjectSpec, room, tol: float = 1e-6) -> bool:
    c, h, R, z = _footprint(o)
    corners = np.array([c + R @ (np.array([sx, sy]) * h) for sx in (-1, 1) for sy in (-1, 1)])
    return bool(
        np.all(np.abs(corners[:, 0]) <= room[0] / 2 + tol)
        and np.all(np.abs(corners[:, 1]) <= room[1] / 2 + tol)
        and z[0] >= -tol
        and z[1] <= room[2] + tol
    )


def validate_spec(spec: SceneSpec) -> None:
    """Raise ValueError naming the offending value when a spec cannot be built."""
    room = tuple(float(v) for v in spec.room)
    if len(room) != 3 or min(room) <= 0:
        raise ValueError(f"room must be three positive sizes (x, y, height) in metres, got {spec.room!r}")
    for i, o in enumerate(spec.objects):
        cat = C.by_name(o.category)
        if cat.kind != "thing":
            raise ValueError(f"object {i}: category {o.category!r} is room structure, not an object")
        if len(o.dims) != 3 or min(o.dims) <= 0:
            raise ValueError(f"object {i} ({o.category}): dims must be three positive sizes, got {o.dims!r}")
        if o.texture not in ("none", "checker", "gradient", "noise"):
            raise ValueError(f"object {i} ({o.category}): unknown texture {o.texture!r}")
        if not _inside_room(o, room):
            raise ValueError(f"object {i} ({o.category}) at {tuple(o.xy)} with dims {tuple(o.dims)} is outside the room {room}")
    objs = spec.objects
    for i in range(len(objs)):
        for j in range(i + 1, len(objs)):
            if objects_overlap(objs[i], objs[j], gap=0.0):
                raise ValueError(
                    f"objects {i} ({objs[i].category}) and {j} ({objs[j].category}) interpenetrate; "
                    "move them apart"
                )
    for k, li in enumerate(spec.lights):
        if li.directional and np.linalg.norm(li.dir) < 1e-9:
            raise ValueError(f"light {k}: zero direction")
    for k in ("floor_texture",):
        if getattr(spec, k) not in ("none", "checker", "gradient", "noise"):
            raise ValueError(f"{k}: unknown texture {getattr(spec, k)!r}")


# ----------------------------------------------------------------------------- sampling
def _colour(rng, sat=(0.2, 0.8), val=(0.35, 0.95)) -> tuple[float, float, float, float]:
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(*sat), rng.uniform(*val))
    return (round(r, 4), round(g, 4), round(b, 4), 1.0)


def _sample_dims(rng, cat: str, small: bool) -> tuple[float, float, float]:
    rx, ry, rz = (_SMALL_SIZES if small and cat in _SMALL_SIZES else _SIZES)[cat]
    x = rng.uniform(*rx)
    y = x if ry is None else rng.uniform(*ry)
    z = x if rz is None else rng.uniform(*rz)
    return (round(x, 4), round(y, 4), round(z, 4))


def _sample_object(rng, cat: str, small: bool, inst: int) -> dict:
    tex = rng.choice(["none", "none", "checker", "gradient", "noise"])
    return dict(
        category=cat,
        dims=_sample_dims(rng, cat, small),
        rgba=_colour(rng),
        rgba2=_colour(rng, sat=(0.0, 0.5), val=(0.15, 0.7)),
        texture=str(tex),
        style=int(rng.integers(0, 2**31 - 1)),
    )


def sample_scene(
    rng: np.random.Generator,
    categories: Sequence[str] = C.THING_NAMES,
    min_objects: int = 3,
    max_objects: int = 10,
    reflections: bool = False,
    max_tries: int = 30,
) -> SceneSpec:
    """Draw a random room with ``min_objects..max_objects`` non-overlapping objects."""
    categories = C.validate_categories(categories)
    if min_objects < 1 or max_objects < min_objects:
        raise ValueError(f"need 1 <= min_objects <= max_objects, got min_objects={min_objects}, max_objects={max_objects}")
    last_err = ""
    for _ in range(max_tries):
        room = (round(rng.uniform(4.5, 7.5), 3), round(rng.uniform(4.5, 7.5), 3), round(rng.uniform(2.6, 3.0), 3))
        n = int(rng.integers(min_objects, max_objects + 1))
        cats = [str(c) for c in rng.choice(np.array(categories, dtype=object), size=n)]
        # fail fast when the smallest versions of the floor objects cannot fit the floor
        need = sum(_SIZES[c][0][0] * (_SIZES[c][1] or _SIZES[c][0])[0] for c in cats if C.by_name(c).support == "floor")
        if need > 0.6 * room[0] * room[1]:
            last_err = f"{n} objects need >= {need:.1f} m^2 of floor, the room has {room[0] * room[1]:.1f} m^2"
            continue
        try:
            objects = _place(rng, room, cats)
        except _PlaceError as e:
            last_err = str(e)
            continue
        lights = []
        nl = int(rng.integers(1, 3))
        for k in range(nl):
            lights.append(
                LightSpec(
                    pos=(round(rng.uniform(-room[0] / 4, room[0] / 4), 3), round(rng.uniform(-room[1] / 4, room[1] / 4), 3), room[2] - 0.05),
                    dir=(round(rng.uniform(-0.2, 0.2), 3), round(rng.uniform(-0.2, 0.2), 3), -1.0),
                    diffuse=tuple(round(v * rng.uniform(0.45, 0.75) / nl**0.5, 3) for v in (1.0, rng.uniform(0.9, 1.0), rng.uniform(0.8, 1.0))),
                    cutoff=float(round(rng.uniform(70, 85), 2)),
                )
            )
        return SceneSpec(
            room=room,
            objects=tuple(objects),
            lights=tuple(lights),
            floor_rgba=_colour(rng, sat=(0.1, 0.5), val=(0.3, 0.8)),
            floor_rgba2=_colour(rng, sat=(0.1, 0.5), val=(0.2, 0.6)),
            floor_texture=str(rng.choice(["checker", "gradient", "noise", "none"])),
            wall_rgba=_colour(rng, sat=(0.0, 0.35), val=(0.6, 0.95)),
            floor_reflectance=round(float(rng.uniform(0.1, 0.3)), 3) if reflections else 0.0,
            ambient=round(float(rng.uniform(0.2, 0.35)), 3),
        )
    raise ValueError(f"could not build a scene with {min_objects}..{max_objects} objects after {max_tries} tries: {last_err}")


class _PlaceError(Exception):
    pass


def _place(rng, room, cats: list[str]) -> list[ObjectSpec]:
    """Place categories without overlap: floor furniture, then table props, then wall pictures."""
    order = sorted(range(len(cats)), key=lambda i: {"floor": 0, "table": 1, "wall": 2}[C.by_name(cats[i]).support])
    placed: list[ObjectSpec | None] = [None] * len(cats)
    # furniture clusters around a focus point (as rooms are furnished around a centre of
    # use), so that a camera orbiting the cluster sees objects rather than empty floor
    focus = np.array([rng.uniform(-0.15, 0.15) * room[0], rng.uniform(-0.15, 0.15) * room[1]])
    spread = np.array([0.22 * room[0], 0.22 * room[1]])
    tables: list[ObjectSpec] = []

    def free(o: ObjectSpec) -> bool:
        if not _inside_room(o, room):
            return False
        return not any(p is not None and objects_overlap(o, p) for p in placed)

    for i in order:
        cat = cats[i]
        sup = C.by_name(cat).support
        ok = False
        for attempt in range(200):
            if sup == "table" and tables and attempt < 150 and rng.random() < 0.8:
                t = tables[int(rng.integers(len(tables)))]
                kw = _sample_object(rng, cat, True, i)
                lo, hi = object_box(t)
                m = max(kw["dims"][:2]) / 2 + 0.02
                ax, ay = (hi[0] - lo[0]) / 2 - m, (hi[1] - lo[1]) / 2 - m
                if ax <= 0 or ay <= 0:
                    continue
                local = np.array([rng.uniform(-ax, ax), rng.uniform(-ay, ay), 0.0])
                p = _rotz(t.yaw) @ local + np.array([t.xy[0], t.xy[1], 0.0])
                o = ObjectSpec(xy=(round(p[0], 4), round(p[1], 4)), yaw=round(float(rng.uniform(0, 2 * np.pi)), 4), base_z=float(hi[2] + t.base_z), **kw)
            elif sup == "wall":
                kw = _sample_object(rng, cat, False, i)
                w = int(rng.integers(4))
                half = (room[0] / 2, room[1] / 2)
                along = room[0] if w in (0, 1) else room[1]  # length of the chosen wall
                s = rng.uniform(-along / 2 + kw["dims"][0] / 2 + 0.1, along / 2 - kw["dims"][0] / 2 - 0.1) if along > kw["dims"][0] + 0.2 else None
                if s is None:
                    continue
                d = kw["dims"][1] / 2
                z = rng.uniform(0.9, max(0.95, room[2] - kw["dims"][2] - 0.3))
                # object +y points into the wall (its back), front faces the room
                if w == 0:  # wall at +y
                    xy, yaw = (s, half[1] - d), 0.0
                elif w == 1:  # wall at -y
                    xy, yaw = (s, -half[1] + d), np.pi
                elif w == 2:  # wall at +x
                    xy, yaw = (half[0] - d, s), -np.pi / 2
                else:  # wall at -x
                    xy, yaw = (-half[0] + d, s), np.pi / 2
                o = ObjectSpec(xy=(round(xy[0], 4), round(xy[1], 4)), yaw=round(float(yaw), 6), base_z=round(float(z), 4), **kw)
            else:
                kw = _sample_object(rng, cat, sup == "table" and rng.random() < 0.5, i)
                r = np.hypot(*kw["dims"][:2]) / 2
                grow = 1.0 + attempt / 100.0  # widen the cluster when it is crowded
                x, y = rng.normal(focus, spread * grow)
                x = float(np.clip(x, -room[0] / 2 + r * 0.7, room[0] / 2 - r * 0.7))
                y = float(np.clip(y, -room[1] / 2 + r * 0.7, room[1] / 2 - r * 0.7))
                yaw = rng.choice([0.0, np.pi / 2, np.pi, -np.pi / 2]) + rng.normal(0, 0.15) if rng.random() < 0.6 else rng.uniform(-np.pi, np.pi)
                o = ObjectSpec(xy=(round(x, 4), round(y, 4)), yaw=round(float(yaw), 4), **kw)
            if free(o):
                ok = True
                break
        if not ok:
            raise _PlaceError(f"no free place for a {cat} in a room of {room}")
        placed[i] = o
        if cat == "table":
            tables.append(o)
    return [p for p in placed if p is not None]


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


# ----------------------------------------------------------------------------- MJCF
def _f(v) -> str:
    return " ".join(f"{float(x):.6g}" for x in np.atleast_1d(v))


def _texture_xml(name: str, kind: str, rgb1, rgb2, size: int = 64) -> str:
    if kind == "checker":
        return f'<texture name="{name}" type="cube" builtin="checker" rgb1="{_f(rgb1[:3])}" rgb2="{_f(rgb2[:3])}" width="{size}" height="{size}"/>'
    if kind == "gradient":
        return f'<texture name="{name}" type="cube" builtin="gradient" rgb1="{_f(rgb1[:3])}" rgb2="{_f(rgb2[:3])}" width="{size}" height="{size}"/>'
    if kind == "noise":
        return (
            f'<texture name="{name}" type="cube" builtin="flat" mark="random" random="0.08" rgb1="{_f(rgb1[:3])}" '
            f'markrgb="{_f(rgb2[:3])}" width="{size}" height="{size}"/>'
        )
    raise ValueError(kind)


def build_mjcf(spec: SceneSpec, image_size=(240, 320), fovy: float = 49.64, shadows: bool = True,
               antialias: int = 4, shadow_size: int = 512) -> tuple[str, list[tuple[str, int, int]]]:
    """MJCF text of a scene, plus [(geom name, instance id, semantic id)] for every geom.

    Instance 0 is the room; things are 1..N in the order of ``spec.objects``.
    """
    validate_spec(spec)
    Lx, Ly, H = spec.room
    H_img, W_img = image_size
    assets: list[str] = []
    body: list[str] = []
    table: list[tuple[str, int, int]] = []

    # floor
    ft = spec.floor_texture
    if ft == "none":
        assets.append(f'<material name="m_floor" rgba="{_f(spec.floor_rgba)}" reflectance="{spec.floor_reflectance}"/>')
    else:
        kind = "checker" if ft == "checker" else ft
        typ = "2d"
        if kind == "checker":
            assets.append(f'<texture name="t_floor" type="{typ}" builtin="checker" rgb1="{_f(spec.floor_rgba[:3])}" rgb2="{_f(spec.floor_rgba2[:3])}" width="128" height="128"/>')
        elif kind == "gradient":
            assets.append(f'<texture name="t_floor" type="{typ}" builtin="gradient" rgb1="{_f(spec.floor_rgba[:3])}" rgb2="{_f(spec.floor_rgba2[:3])}" width="128" height="128"/>')
        else:
            assets.append(f'<texture name="t_floor" type="{typ}" builtin="flat" mark="random" random="0.05" rgb1="{_f(spec.floor_rgba[:3])}" markrgb="{_f(spec.floor_rgba2[:3])}" width="128" height="128"/>')
        rep = max(1.0, round(max(Lx, Ly) / 1.0))
        assets.append(f'<material name="m_floor" texture="t_floor" texrepeat="{rep} {rep}" reflectance="{spec.floor_reflectance}"/>')
    body.append(f'<geom name="floor" type="plane" size="{Lx / 2:.6g} {Ly / 2:.6g} 0.1" material="m_floor"/>')
    table.append(("floor", 0, C.category_id("floor")))
    wall_id = C.category_id("wall")
    assets.append(f'<material name="m_wall" rgba="{_f(spec.wall_rgba)}" specular="0.1"/>')
    if spec.walls:
        for k, (pos, size) in enumerate(
            [
                ((0, Ly / 2 + WALL_T / 2, H / 2), (Lx / 2 + WALL_T, WALL_T / 2, H / 2)),
                ((0, -Ly / 2 - WALL_T / 2, H / 2), (Lx / 2 + WALL_T, WALL_T / 2, H / 2)),
                ((Lx / 2 + WALL_T / 2, 0, H / 2), (WALL_T / 2, Ly / 2, H / 2)),
                ((-Lx / 2 - WALL_T / 2, 0, H / 2), (WALL_T / 2, Ly / 2, H / 2)),
            ]
        ):
            body.append(f'<geom name="wall{k}" type="box" pos="{_f(pos)}" size="{_f(size)}" material="m_wall"/>')
            table.append((f"wall{k}", 0, wall_id))
    if spec.ceiling:
        assets.append('<material name="m_ceiling" rgba="0.92 0.92 0.9 1" specular="0"/>')
        body.append(f'<geom name="ceiling" type="box" pos="0 0 {H + WALL_T / 2:.6g}" size="{Lx / 2 + WALL_T:.6g} {Ly / 2 + WALL_T:.6g} {WALL_T / 2:.6g}" material="m_ceiling"/>')
        table.append(("ceiling", 0, C.category_id("ceiling")))

    for i, o in enumerate(spec.objects):
        inst = i + 1
        sem = C.category_id(o.category)
        ma, mb, me = f"m{inst}a", f"m{inst}b", f"m{inst}e"
        if o.texture == "none":
            assets.append(f'<material name="{ma}" rgba="{_f(o.rgba)}" specular="0.3" shininess="0.3"/>')
        else:
            assets.append(_texture_xml(f"t{inst}", o.texture, o.rgba, o.rgba2, 32))
            assets.append(f'<material name="{ma}" texture="t{inst}" specular="0.3" shininess="0.3"/>')
        assets.append(f'<material name="{mb}" rgba="{_f(o.rgba2)}" specular="0.2"/>')
        if o.category == "lamp":
            assets.append(f'<material name="{me}" rgba="1 0.95 0.8 1" emission="0.6"/>')
        elif o.category == "plant-pot":
            g = np.random.default_rng(o.style + 1)
            assets.append(f'<material name="{me}" rgba="{g.uniform(0.1, 0.3):.3f} {g.uniform(0.4, 0.7):.3f} {g.uniform(0.1, 0.3):.3f} 1"/>')
        else:
            assets.append(f'<material name="{me}" rgba="0.95 0.95 0.95 1"/>')
        mats = {"a": ma, "b": mb, "e": me}
        body.append(f'<body name="obj{inst}" pos="{o.xy[0]:.6g} {o.xy[1]:.6g} {o.base_z:.6g}" quat="{_f(_quat_wxyz(_rotz(o.yaw)))}">')
        for k, (typ, size, pos, R, slot) in enumerate(_build_object(o)):
            name = f"o{inst}_{k}"
            rot = "" if np.allclose(R, _I3) else f' quat="{_f(_quat_wxyz(R))}"'
            body.append(f'  <geom name="{name}" type="{typ}" size="{_f(size)}" pos="{_f(pos)}"{rot} material="{mats[slot]}"/>')
            table.append((name, inst, sem))
        body.append("</body>")

    for k, li in enumerate(spec.lights):
        body.append(
            f'<light name="light{k}" pos="{_f(li.pos)}" dir="{_f(li.dir)}" diffuse="{_f(li.diffuse)}" specular="0.1 0.1 0.1" '
            f'directional="{str(li.directional).lower()}" castshadow="{str(shadows).lower()}" cutoff="{li.cutoff}" exponent="1"/>'
        )
    body.append(f'<camera name="view" pos="0 0 1" fovy="{fovy:.6g}"/>')
    amb = spec.ambient
    xml = f"""<mujoco model="synthetic_scene">
  <compiler angle="radian"/>
  <statistic extent="10" center="0 0 1"/>
  <visual>
    <global offwidth="{max(W_img, 64)}" offheight="{max(H_img, 64)}"/>
    <quality offsamples="{int(antialias)}" shadowsize="{int(shadow_size)}"/>
    <map znear="0.004" zfar="6" shadowclip="1.0"/>
    <headlight ambient="{amb} {amb} {amb}" diffuse="0.25 0.25 0.25" specular="0 0 0"/>
  </visual>
  <default><geom contype="0" conaffinity="0"/></default>
  <asset>
    {chr(10).join('    ' + a for a in assets).strip()}
  </asset>
  <worldbody>
    {chr(10).join('    ' + b for b in body).strip()}
  </worldbody>
</mujoco>
"""
    return xml, table


@dataclass
class CompiledScene:
    """A compiled model with the lookup tables the renderer needs."""

    model: Any
    data: Any
    xml: str
    geom_instance: np.ndarray  # int32 [ngeom]
    geom_semantic: np.ndarray  # int32 [ngeom]
    spec: SceneSpec
    instances: list[dict] = field(default_factory=list)  # per thing: id, category, category_id, boxes


def compile_scene(spec: SceneSpec, image_size=(240, 320), fovy: float = 49.64, shadows: bool = True,
                  antialias: int = 4, shadow_size: int = 512) -> CompiledScene:
    from ._mj import mujoco

    xml, table = build_mjcf(spec, image_size, fovy, shadows, antialias, shadow_size)
    try:
        model = mujoco.MjModel.from_xml_string(xml)
    except Exception as e:  # compiler errors: make them name the scene problem
        raise ValueError(f"scene spec cannot be compiled by MuJoCo: {e}") from e
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    gi = np.zeros(model.ngeom, np.int32)
    gs = np.zeros(model.ngeom, np.int32)
    for name, inst, sem in table:
        gid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, name)
        gi[gid] = inst
        gs[gid] = sem
    instances = []
    for i, o in enumerate(spec.objects):
        b = oriented_box(o)
        instances.append(
            {
                "instance_id": i + 1,
                "category": o.category,
                "category_id": C.category_id(o.category),
                "obb_world": b["obb"],
                "aabb_world": b["aabb"],
            }
        )
    return CompiledScene(model, data, xml, gi, gs, spec, instances)
