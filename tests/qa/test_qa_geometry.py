"""Geometry: back-projection, floor RANSAC / canonical frame, boxes, IoU, multi-view fusion."""

import numpy as np
import pytest

from encoders.spatialboost.qa import geometry as G


def test_backproject_kornia_matches_sparse():
    rng = np.random.default_rng(0)
    d = rng.uniform(0.5, 4, (12, 16)).astype(np.float32)
    d[3, 4] = 0
    d[5, 5] = np.nan
    d[6, 6] = np.inf
    K = np.array([[20.0, 0, 7.5], [0, 21.0, 5.5], [0, 0, 1]])
    P = G.backproject(d, K)
    assert np.isnan(P[3, 4]).all() and np.isnan(P[5, 5]).all() and np.isnan(P[6, 6]).all()
    v, u = 7, 9
    np.testing.assert_allclose(P[v, u], G.backproject_pixels(u, v, d[v, u], K), rtol=1e-5)


def _room(rng, up=np.array([0.0, -0.8, -0.6]), h=1.4, n=3000):
    """Camera-frame points: a floor h below the camera (normal `up`), a table top, a wall."""
    up = up / np.linalg.norm(up)
    a = np.cross(up, [1.0, 0, 0]); a /= np.linalg.norm(a)
    b = np.cross(up, a)
    fwd = -np.cross(np.cross([0, 0, 1.0], up), up); fwd /= np.linalg.norm(fwd)
    floor = (-h * up) + rng.uniform(-2, 2, (n, 1)) * a + rng.uniform(-2, 2, (n, 1)) * b
    floor = floor[floor[:, 2] > 0.3]
    table = (-(h - 0.75) * up) + rng.uniform(-0.3, 0.3, (400, 1)) * a + rng.uniform(-0.3, 0.3, (400, 1)) * b + 2.5 * fwd
    wall = 4.0 * fwd + rng.uniform(-2, 2, (800, 1)) * a + rng.uniform(0, 2.5, (800, 1)) * up - h * up
    P = np.concatenate([floor, table, wall])
    return P + rng.normal(0, 0.004, P.shape), up, h


def test_floor_ransac_recovers_plane_and_rejects_table_top():
    rng = np.random.default_rng(1)
    P, up, h = _room(rng)
    c = G.estimate_canonical(P, rng=rng)
    assert c.floor_found
    assert np.degrees(np.arccos(np.clip(c.up_cam @ up, -1, 1))) < 1.0
    assert abs(c.camera_height - h) < 0.02
    Q = G.transform_points(c.T, P)
    assert np.isclose(np.linalg.det(c.T[:3, :3]), 1.0)
    assert np.median(Q[: 1000, 1]) == pytest.approx(0.0, abs=0.01)  # floor at height 0


def test_no_floor_gives_camera_relative_fallback():
    rng = np.random.default_rng(2)
    wall = np.c_[rng.uniform(-2, 2, 2000), rng.uniform(-1, 1, 2000), np.full(2000, 3.0)]
    c = G.estimate_canonical(wall, rng=rng)
    assert not c.floor_found
    np.testing.assert_allclose(c.up_cam, [0, -1, 0])


def test_obb_iou_exact_cases():
    R = np.eye(3)
    a = {"center": np.zeros(3), "size": np.array([2.0, 1.0, 1.0]), "R": R}
    assert G.obb_iou(a, a) == pytest.approx(1.0, abs=1e-6)
    b = {"center": np.array([1.0, 0, 0]), "size": np.array([2.0, 1.0, 1.0]), "R": R}
    assert G.obb_iou(a, b) == pytest.approx(1 / 3, abs=1e-6)
    c = {"center": np.array([5.0, 0, 0]), "size": np.ones(3), "R": R}
    assert G.obb_iou(a, c) == 0.0
    # a unit cube rotated 45 degrees about up inside a cube: intersection computed by hull
    th = np.pi / 4
    Ry = np.array([[np.cos(th), 0, np.sin(th)], [0, 1, 0], [-np.sin(th), 0, np.cos(th)]])
    big = {"center": np.zeros(3), "size": np.full(3, 4.0), "R": R}
    rot = {"center": np.zeros(3), "size": np.ones(3), "R": Ry}
    assert G.obb_iou(big, rot) == pytest.approx(1 / 64, abs=1e-6)


def test_obb_from_points_is_gravity_aligned():
    rng = np.random.default_rng(3)
    th = 0.6
    loc = rng.uniform(-0.5, 0.5, (2000, 3)) * [1.2, 0.8, 0.4]
    Ry = np.array([[np.cos(th), 0, np.sin(th)], [0, 1, 0], [-np.sin(th), 0, np.cos(th)]])
    P = loc @ Ry.T + [1.0, 0.4, -2.0]
    b = G.obb_from_points(P)
    np.testing.assert_allclose(b["R"][:, 1], [0, 1, 0])
    np.testing.assert_allclose(b["center"], [1.0, 0.4, -2.0], atol=0.03)
    np.testing.assert_allclose(np.sort(b["size"]), np.sort([1.2, 0.8, 0.4]), atol=0.05)
    assert G.obb_iou(b, {"center": np.array([1.0, 0.4, -2.0]), "size": np.array([1.2, 0.8, 0.4]), "R": Ry}) > 0.85


def test_outlier_removal_drops_flying_pixels():
    rng = np.random.default_rng(4)
    P = rng.normal([0, 0, 2], 0.05, (500, 3))
    P = np.vstack([P, [[0, 0, 6.0], [0.1, 0, 5.0], [3, 3, 2]]])
    Q = G.clean_object_points(P)
    assert Q[:, 2].max() < 2.5 and np.abs(Q[:, 0]).max() < 1


def test_relative_pose_and_fusion():
    def pose(yaw, t):
        c, s = np.cos(yaw), np.sin(yaw)
        T = np.eye(4)
        T[:3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
        T[:3, 3] = t
        return T

    T0, T1 = pose(0.3, [1, 0, 0]), pose(-0.5, [0, 0.2, 2])
    Xw = np.array([[0.5, 0.1, 4.0], [1.0, -0.3, 3.0]])
    P0 = G.transform_points(np.linalg.inv(T0), Xw)
    P1 = G.transform_points(np.linalg.inv(T1), Xw)
    F = G.fuse_points([P0, P1], [T0, T1])
    np.testing.assert_allclose(F[:2], P0, atol=1e-9)
    np.testing.assert_allclose(F[2:], P0, atol=1e-9)
    assert 0 < G.pose_distance(T0, T1) <= 1 and G.pose_distance(T0, T0) == pytest.approx(0, abs=1e-6)


def test_world_views_floor_matches_ground_truth(qa_scannet, qa_world):
    from encoders.spatialboost.qa import ScanNetSource, compute_view_geometry
    from encoders.spatialboost.qa.estimators import Estimators
    from encoders.spatialboost.qa.sources import complete_observation

    from .conftest import world_view

    src = ScanNetSource(qa_scannet)
    for ref in src.refs()[::4]:
        obs = complete_observation(src.load(ref), Estimators())
        g = compute_view_geometry(obs)
        T = world_view(qa_world, ref.key, arrays=False).cam_to_world   # the truth, not what the reader read
        assert g.canonical.floor_found, ref.key
        up = T[:3, :3].T @ [0, 0, 1.0]
        assert np.degrees(np.arccos(np.clip(up @ g.canonical.up_cam, -1, 1))) < 2.0
        assert abs(g.canonical.camera_height - T[2, 3]) < 0.03
