"""A world's identity: its generation parameters (``WorldConfig``) and the manifest ``world.json`` that
records them (format version, parameters, complete flag); compared on resume, hashed for caches."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from harness.atomic import atomic_write_json

from . import categories as C

__all__ = ["WorldConfig", "read_manifest", "world_fingerprint", "FORMAT_VERSION", "MANIFEST"]

FORMAT_VERSION = 1
MANIFEST = "world.json"


@dataclass(frozen=True)
class WorldConfig:
    """Generation parameters; all of them are recorded in world.json and compared on resume.

    Speed/quality knobs: ``image_size``, ``shadows`` (the most expensive effect on a
    CPU renderer), ``reflections`` (floor mirror pass), ``antialias`` (MSAA samples, 0 = off),
    ``shadow_size`` (shadow-map resolution).
    """

    seed: int = 0
    num_scenes: int = 8
    views_per_scene: int = 4
    image_size: tuple[int, int] = (240, 320)  # (H, W)
    min_objects: int = 3
    max_objects: int = 10
    categories: tuple[str, ...] = C.THING_NAMES
    shadows: bool = True
    reflections: bool = False
    antialias: int = 4
    shadow_size: int = 512
    fovy: float = 49.64  # degrees; 49.64 = NYU Kinect (f = 518.86 px at 480 rows)
    arc_degrees: float = 360.0  # camera path: arc around the objects' centre
    camera_height: tuple[float, float] = (1.2, 1.7)

    def __post_init__(self) -> None:
        def bad(name, why):
            raise ValueError(f"WorldConfig.{name}={getattr(self, name)!r}: {why}")

        for name in ("seed", "num_scenes", "views_per_scene", "min_objects", "max_objects", "antialias", "shadow_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                bad(name, "must be an integer")
        if self.num_scenes < 1:
            bad("num_scenes", "must be >= 1")
        if self.views_per_scene < 1:
            bad("views_per_scene", "must be >= 1")
        if self.min_objects < 1:
            bad("min_objects", "must be >= 1")
        if self.max_objects < self.min_objects:
            bad("max_objects", f"must be >= min_objects={self.min_objects}")
        if self.max_objects > 30:
            bad("max_objects", "more than 30 objects do not fit the rooms")
        if not (0 <= self.antialias <= 16):
            bad("antialias", "MSAA samples must be in 0..16")
        if not (64 <= self.shadow_size <= 8192):
            bad("shadow_size", "must be in 64..8192")
        size = tuple(self.image_size)
        if len(size) != 2 or not all(isinstance(v, (int, np.integer)) and 16 <= v <= 4096 for v in size):
            bad("image_size", "must be (H, W) integers in 16..4096")
        object.__setattr__(self, "image_size", (int(size[0]), int(size[1])))
        object.__setattr__(self, "categories", C.validate_categories(self.categories))
        if not (1.0 < float(self.fovy) < 170.0):
            bad("fovy", "vertical field of view must be in (1, 170) degrees")
        if not (0.0 < float(self.arc_degrees) <= 360.0):
            bad("arc_degrees", "must be in (0, 360]")
        ch = tuple(float(v) for v in self.camera_height)
        if len(ch) != 2 or not (0.2 <= ch[0] <= ch[1] <= 2.4):
            bad("camera_height", "must be (low, high) metres with 0.2 <= low <= high <= 2.4")
        object.__setattr__(self, "camera_height", ch)

    def to_params(self) -> dict:
        """JSON-normal form (tuples -> lists) used in the manifest and for comparisons."""
        return json.loads(json.dumps(asdict(self)))

    @staticmethod
    def from_params(p: dict) -> "WorldConfig":
        names = {f.name for f in fields(WorldConfig)}
        unknown = set(p) - names
        if unknown:
            raise ValueError(f"unknown world parameters: {sorted(unknown)}")
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in p.items()}
        return WorldConfig(**kw)


def _scene_name(i: int) -> str:
    return f"scene_{i:05d}"


def _tolist(x):
    if isinstance(x, dict):
        return {k: _tolist(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_tolist(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return x


def read_manifest(world_dir) -> dict:
    p = Path(world_dir) / MANIFEST
    if not p.is_file():
        raise ValueError(f"{p}: not a synthetic world (no {MANIFEST})")
    try:
        m = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: corrupt manifest: {e}") from None
    if m.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{p}: format_version {m.get('format_version')!r}, this code reads {FORMAT_VERSION}")
    return m


def world_fingerprint(world_dir) -> str:
    """Stable id of a world's content (= its parameters and format), for caches."""
    import hashlib

    m = read_manifest(world_dir)
    blob = json.dumps({"v": m["format_version"], "p": m["params"]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _check_or_write_manifest(out: Path, cfg: WorldConfig) -> None:
    params = cfg.to_params()
    p = out / MANIFEST
    if p.exists():
        m = read_manifest(out)
        old = m.get("params", {})
        diff = sorted(k for k in set(old) | set(params) if old.get(k) != params.get(k))
        if diff:
            detail = "; ".join(f"{k}: existing={old.get(k)!r} requested={params.get(k)!r}" for k in diff)
            raise ValueError(
                f"{out} holds a world made with different parameters ({', '.join(diff)}): {detail}. "
                "Use another folder or delete this one."
            )
        return
    if out.exists() and any(x.name != ".lock" for x in out.iterdir()):
        raise ValueError(f"{out} is not empty and is not a synthetic world; refusing to write into it")
    atomic_write_json(p, {"format_version": FORMAT_VERSION, "params": params, "complete": False})
