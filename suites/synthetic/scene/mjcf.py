"""MJCF text of a scene spec and its compiled MuJoCo model with the geom -> instance / semantic tables."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import categories as C
from .layout import validate_spec
from .objects import _I3, _build_object, _rotz, oriented_box
from .spec import SceneSpec

__all__ = ["WALL_T", "build_mjcf", "CompiledScene", "compile_scene"]

WALL_T = 0.1  # wall / ceiling thickness (m)


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
    from .._mj import mujoco

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
