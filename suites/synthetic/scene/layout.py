"""Room layout: random sampling of a scene and the validation every spec passes (inside the room,
no interpenetration: a separating-axis test on yaw-rotated footprints with z-interval overlap)."""

from __future__ import annotations

import colorsys
from typing import Sequence

import numpy as np

from .. import categories as C
from .objects import _rotz, object_box
from .spec import LightSpec, ObjectSpec, SceneSpec

__all__ = ["GAP", "sample_scene", "validate_spec", "objects_overlap"]

GAP = 0.02  # minimum clearance between objects (m)

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
