"""Geometry of the renderer against analytic answers in hand-built scenes."""

from __future__ import annotations

import numpy as np
import pytest

from suites.synthetic import categories as C
from suites.synthetic import scene as S

H, W = 96, 128


def _bind(renderer, spec, **kw):
    cs = S.compile_scene(spec, (H, W), **kw)
    renderer.bind(cs, H, W)
    return cs


def _backproject(frame, mask):
    v, u = np.nonzero(mask)
    z = frame.depth[v, u].astype(np.float64)
    K = frame.K
    pc = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], 1)
    T = frame.cam_to_world
    return pc @ T[:3, :3].T + T[:3, 3]


BOX = S.ObjectSpec("box", (0.3, 0.2), (0.4, 0.6, 0.5), yaw=0.3, style=1)
OPEN = S.SceneSpec(room=(10.0, 10.0, 3.0), objects=(BOX,), walls=False, ceiling=False)


def test_intrinsics_from_fovy():
    from suites.synthetic.render import intrinsics

    K = intrinsics(480, 640, 49.64)
    assert K[0, 0] == pytest.approx(240 / np.tan(np.deg2rad(49.64 / 2)))
    assert K[0, 0] == pytest.approx(518.86, abs=0.1)  # NYU Kinect focal
    assert (K[0, 2], K[1, 2]) == (319.5, 239.5)


def test_floor_and_box_depth_match_analytic_planes(renderer):
    """Camera 2 m above the floor looking straight down: floor depth = 2, box top = 2 - 0.5."""
    cs = _bind(renderer, OPEN)
    f = renderer.render(S.look_at([0.0, 0.0, 2.0], [0.0, 0.0, 0.0], up=(0, 1, 0)))
    floor = (f.instance == 0) & (f.semantic == C.category_id("floor"))
    assert floor.sum() > 1000
    np.testing.assert_allclose(f.depth[floor], 2.0, atol=1e-4)
    box = f.instance == 1
    assert box.sum() > 100
    top = f.depth[box]
    assert top.min() == pytest.approx(1.5, abs=1e-4)  # top face
    assert top.max() < 2.0  # sides are between top and floor
    assert set(np.unique(f.semantic[box])) == {C.category_id("box")}
    assert cs.instances[0]["category"] == "box"


def test_wall_depth_is_distance_along_optical_axis(renderer):
    """Horizontal camera facing the +x wall: every +x-wall pixel has depth Lx/2 - x0."""
    spec = S.SceneSpec(room=(6.0, 5.0, 2.8), objects=())
    cs = _bind(renderer, spec)
    x0 = -1.0
    f = renderer.render(S.look_at([x0, 0.3, 1.4], [5.0, 0.3, 1.4]))
    import mujoco

    wall_gid = mujoco.mj_name2id(cs.model, mujoco.mjtObj.mjOBJ_GEOM, "wall2")  # the +x wall
    m = f.geom == wall_gid
    assert m.sum() > 0.5 * m.size
    np.testing.assert_allclose(f.depth[m], 3.0 - x0, atol=2e-4)
    assert f.semantic[m].min() == f.semantic[m].max() == C.category_id("wall")
    # the image centre looks straight at the wall
    assert f.depth[H // 2, W // 2] == pytest.approx(4.0, abs=2e-4)


def test_oblique_floor_backprojects_onto_plane_and_box_into_its_box(renderer):
    cs = _bind(renderer, OPEN)
    f = renderer.render(S.look_at([2.0, -1.5, 1.5], [0.3, 0.2, 0.25]))
    floor = (f.semantic == C.category_id("floor")) & (f.depth > 0)
    pts = _backproject(f, floor)
    assert np.abs(pts[:, 2]).max() < 1e-3  # z = 0 plane
    ob = cs.instances[0]["obb_world"]
    pts = _backproject(f, f.instance == 1)
    local = (pts - ob["center"]) @ ob["R"]
    assert np.all(np.abs(local) <= ob["size"] / 2 + 1e-3)
    # and the box surface is reached: points hit the faces
    assert np.abs(local).max(0) == pytest.approx(ob["size"] / 2, abs=2e-3)


def test_projection_of_box_corners_bounds_the_mask(renderer):
    cs = _bind(renderer, OPEN)
    T = S.look_at([1.8, 1.6, 1.2], [0.3, 0.2, 0.25])
    f = renderer.render(T)
    ob = cs.instances[0]["obb_world"]
    c = S.box_corners(ob["center"], ob["size"], ob["R"])
    w2c = np.linalg.inv(T)
    pc = c @ w2c[:3, :3].T + w2c[:3, 3]
    uv = pc @ f.K.T
    uv = uv[:, :2] / uv[:, 2:]
    v, u = np.nonzero(f.instance == 1)
    assert uv[:, 0].min() - 1 <= u.min() and u.max() <= uv[:, 0].max() + 1
    assert uv[:, 1].min() - 1 <= v.min() and v.max() <= uv[:, 1].max() + 1
    # silhouette extremes are within a pixel of the projected corners
    assert u.min() == pytest.approx(uv[:, 0].min(), abs=1.0)
    assert v.max() == pytest.approx(uv[:, 1].max(), abs=1.0)


def test_orientation_floor_at_bottom_ceiling_at_top(renderer):
    spec = S.SceneSpec(room=(6.0, 6.0, 2.8), objects=(S.ObjectSpec("lamp", (2.0, 0.0), (0.4, 0.4, 1.6)),))
    _bind(renderer, spec)
    f = renderer.render(S.look_at([-1.0, 0.0, 1.4], [2.0, 0.0, 1.4]))
    rows = np.arange(H)[:, None] * np.ones((1, W))
    floor = f.semantic == C.category_id("floor")
    ceil = f.semantic == C.category_id("ceiling")
    assert floor.any() and ceil.any()
    assert rows[floor].min() > H / 2 - 1  # floor only in the lower half
    assert rows[ceil].max() < H / 2  # ceiling only in the upper half
    lamp = f.instance == 1
    # the lamp's base is lower in the image than its shade: base rows > shade rows
    ys = np.nonzero(lamp)[0]
    assert ys.max() > H / 2 > ys.min()
    # x right: an object at +y (left of the camera looking along +x) appears on the left
    spec2 = S.SceneSpec(room=(6.0, 6.0, 2.8), objects=(S.ObjectSpec("box", (2.0, 1.0), (0.4, 0.4, 0.4)),))
    _bind(renderer, spec2)
    f2 = renderer.render(S.look_at([-1.0, 0.0, 1.4], [2.0, 0.0, 0.2]))
    xs = np.nonzero(f2.instance == 1)[1]
    assert xs.mean() < W / 2


def test_background_beyond_far_clip_is_invalid(renderer):
    _bind(renderer, OPEN)
    f = renderer.render(S.look_at([0.0, -3.0, 1.0], [0.0, 10.0, 1.0]))  # horizon: sky above
    sky = f.geom < 0
    assert sky[: H // 3].all()
    assert (f.depth[sky] == 0).all() and (f.instance[sky] == 0).all() and (f.semantic[sky] == 0).all()
    assert (f.depth[~sky] > 0).all()


def test_dropped_mujoco_renderer_does_not_blank_our_frames(renderer):
    """A mujoco.Renderer closed in the same process releases the thread's GL context."""
    import mujoco

    cs = _bind(renderer, OPEN)
    T = S.look_at([2.0, -1.5, 1.5], [0.3, 0.2, 0.25])
    before = renderer.render(T).rgb
    other = mujoco.Renderer(cs.model, 32, 32)
    other.update_scene(cs.data)
    other.render()
    other.close()
    del other
    after = renderer.render(T)
    assert after.rgb.max() > 0
    np.testing.assert_array_equal(before, after.rgb)


def test_blank_view_is_an_error_not_a_black_frame(renderer):
    from suites.synthetic.render import BlankFrameError

    _bind(renderer, OPEN)
    with pytest.raises(BlankFrameError):
        renderer.render(S.look_at([0.0, 0.0, 1.0], [0.0, 0.0, 5.0], up=(0, 1, 0)))  # straight up into nothing


def test_bad_pose_rejected(renderer):
    _bind(renderer, OPEN)
    T = np.eye(4)
    T[:3, :3] = np.diag([1.0, 1.0, -1.0])  # a reflection, not a rotation
    with pytest.raises(ValueError, match="rotation"):
        renderer.render(T)
