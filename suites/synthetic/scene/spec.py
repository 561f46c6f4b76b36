"""Scene specs: plain, frozen, JSON-serialisable records (room + objects + lights).

A spec is all that is sampled; everything else (geoms, boxes, MJCF) is derived from it, so a scene can be
stored as JSON (``scene.json``) and rebuilt exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["ObjectSpec", "LightSpec", "SceneSpec"]


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
