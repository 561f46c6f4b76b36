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

The package splits that by job: ``spec`` (the records), ``objects`` (primitive builders, exact boxes),
``layout`` (sampling, validation), ``cameras`` (look-at, orbit path), ``mjcf`` (MJCF text, compiled model).
Everything is re-exported here, so ``from suites.synthetic import scene as S; S.sample_scene(...)`` works.
"""

from __future__ import annotations

from .cameras import look_at, orbit_cameras
from .layout import GAP, objects_overlap, sample_scene, validate_spec
from .mjcf import WALL_T, CompiledScene, build_mjcf, compile_scene
from .objects import box_corners, object_box, object_pose, oriented_box
from .spec import LightSpec, ObjectSpec, SceneSpec

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
    "object_pose",
    "oriented_box",
    "box_corners",
    "objects_overlap",
    "GAP",
    "WALL_T",
]
