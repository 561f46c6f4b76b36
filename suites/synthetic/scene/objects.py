"""Object builders: each category as primitive geoms in its object frame, and the exact boxes they span.

The object frame has its origin at the centre of the footprint on the support surface (z up), so an
object stands exactly on the floor / a table top / against a wall; boxes are computed from the primitives,
not sampled, so they are tight.
"""

from __future__ import annotations

import math

import numpy as np

from .spec import ObjectSpec

__all__ = ["object_box", "object_pose", "oriented_box", "box_corners"]


def _rotz(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


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
