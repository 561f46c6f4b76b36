"""Lifting on a scene with known geometry: a wall at 4 m and an object (a square at 2 m) in front of it.

Feature maps are painted per pixel at the frame's own resolution, so the bilinear upsampling is the identity
and every lifted value can be predicted exactly: the object's points get the object's paint, the visible
wall points the wall's, the wall points hidden behind the object (occlusion test) and the points in the
border band get nothing.
"""
import numpy as np
import pytest
import torch

from suites.lexicon3d.lifting import (LiftParams, frame_groups, lift, project, resize_depth, sample_features,
                                      voxel_select)
from suites.lexicon3d.scannet import rescale_k

H, W = 60, 80
K = np.array([[50.0, 0, 39.5], [0, 50.0, 29.5], [0, 0, 1]])
OBJ = (-0.4, 0.4, -0.3, 0.3)      # x0, x1, y0, y1 of the object square at z = 2 (world = camera 0 frame)


def _pose(tx: float) -> np.ndarray:
    T = np.eye(4)
    T[0, 3] = tx
    return T


def _render(tx: float):
    """Depth and an object mask of the camera at x = tx looking down +z (ray casting the two planes)."""
    u, v = np.meshgrid(np.arange(W), np.arange(H))
    rx, ry = (u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1]
    xo, yo = tx + rx * 2.0, ry * 2.0           # where the ray meets z = 2 (world coordinates)
    obj = (xo >= OBJ[0]) & (xo <= OBJ[1]) & (yo >= OBJ[2]) & (yo <= OBJ[3])
    return np.where(obj, 2.0, 4.0).astype(np.float32), obj


def _scene():
    g = np.arange(-1.5, 1.5001, 0.1)
    wx, wy = np.meshgrid(g, g)
    wall = np.stack([wx.ravel(), wy.ravel(), np.full(wx.size, 4.0)], 1)
    ox, oy = np.meshgrid(np.arange(-0.35, 0.3501, 0.1), np.arange(-0.25, 0.2501, 0.1))
    obj = np.stack([ox.ravel(), oy.ravel(), np.full(ox.size, 2.0)], 1)
    return np.concatenate([wall, obj]), len(wall)


def _expected_wall_visible(points, tx, border):
    """Wall points inside the frame minus the border whose line of sight misses the object."""
    pc = points - [tx, 0, 0]
    u = np.round(K[0, 0] * pc[:, 0] / pc[:, 2] + K[0, 2])
    v = np.round(K[1, 1] * pc[:, 1] / pc[:, 2] + K[1, 2])
    inside = (u >= border) & (v >= border) & (u < W - border) & (v < H - border)
    _, obj = _render(tx)
    hidden = np.zeros(len(points), bool)
    hidden[inside] = obj[v[inside].astype(int), u[inside].astype(int)]
    return inside & ~hidden


@pytest.mark.parametrize("border", [0, 10])
def test_painted_object_lands_on_its_points_only(border):
    points, n_wall = _scene()
    p = LiftParams(frame_hw=(H, W), border=border, occlusion=0.25)
    frames = []
    for tx, paint in ((0.0, 1.0), (0.3, 3.0)):
        depth, obj = _render(tx)
        fmap = torch.zeros(H, W, 2)
        fmap[..., 0] = torch.from_numpy(obj).float() * paint          # channel 0: the object's paint
        fmap[..., 1] = torch.from_numpy(~obj).float() * paint         # channel 1: the wall's
        frames.append((fmap, _pose(tx), K, depth))
    feats, counts = lift(points, frames, (H, W), p, 2, groups=np.array([0, 1]))
    is_obj = np.arange(len(points)) >= n_wall
    for g, (tx, paint) in enumerate(((0.0, 1.0), (0.3, 3.0))):
        vis_wall = _expected_wall_visible(points, tx, border) & ~is_obj
        pc = points - [tx, 0, 0]
        u = np.round(K[0, 0] * pc[:, 0] / pc[:, 2] + K[0, 2])
        v = np.round(K[1, 1] * pc[:, 1] / pc[:, 2] + K[1, 2])
        vis_obj = is_obj & (u >= border) & (v >= border) & (u < W - border) & (v < H - border)
        assert vis_obj[is_obj].all()                      # the object is fully in view of both cameras
        np.testing.assert_array_equal(counts[g] > 0, vis_wall | vis_obj)
        np.testing.assert_allclose(feats[g][vis_obj], [[paint, 0.0]] * int(vis_obj.sum()), atol=1e-6)
        np.testing.assert_allclose(feats[g][vis_wall], [[0.0, paint]] * int(vis_wall.sum()), atol=1e-6)
        assert np.all(feats[g][counts[g] == 0] == 0)
        # the occlusion test did something: wall points inside the frame were hidden by the object
        inside_wall = (~is_obj) & (u >= border) & (v >= border) & (u < W - border) & (v < H - border)
        assert (inside_wall & ~vis_wall).sum() >= 10
    # all frames in one group: the mean over frames where visible
    feats1, counts1 = lift(points, frames, (H, W), p, 2)
    np.testing.assert_allclose(feats1[0][is_obj], [[2.0, 0.0]] * int(is_obj.sum()), atol=1e-6)
    assert (counts1[0][is_obj] == 2).all()


def test_occlusion_threshold_and_relative_rule():
    pts = np.array([[0.0, 0.0, 2.2], [0.0, 0.0, 2.3], [0.0, 0.0, 1.8]])
    depth = np.full((H, W), 2.0, np.float32)
    vis, _, _ = project(pts, np.eye(4), K, depth, 0, 0.25)
    assert vis.tolist() == [True, False, True]
    vis, _, _ = project(pts, np.eye(4), K, depth, 0, 0.25, relative=True)     # 0.25 * 2 m = 0.5 m
    assert vis.tolist() == [True, True, True]
    depth[:] = 0                                                                # no measurement: never visible
    assert not project(pts, np.eye(4), K, depth, 0, 10.0)[0].any()
    assert not project(-pts, np.eye(4), K, np.full((H, W), 2.0), 0, 10.0)[0].any()   # behind the camera


def test_sample_features_equals_upsampling_then_indexing():
    fmap = torch.randn(3, 4, 5)
    up = torch.nn.functional.interpolate(fmap.permute(2, 0, 1)[None], size=(12, 16), mode="bilinear",
                                         align_corners=False)[0].permute(1, 2, 0)
    u, v = np.array([0, 3, 15, 7]), np.array([0, 11, 5, 6])
    np.testing.assert_allclose(sample_features(fmap, u, v, (12, 16)).numpy(), up[v, u].numpy(), atol=1e-5)


def test_rescale_k_and_helpers():
    K2 = rescale_k(np.array([[577.870605, 0, 319.5], [0, 577.870605, 239.5], [0, 0, 1]]), (480, 640), (240, 320))
    np.testing.assert_allclose(K2, [[288.9353025, 0, 159.5], [0, 288.9353025, 119.5], [0, 0, 1]])
    assert frame_groups(6).tolist() == [0, 0, 0, 1, 1, 1]
    assert frame_groups(64)[31] == 0 and frame_groups(64)[32] == 1
    pts = np.array([[0.01, 0.01, 0.01], [0.02, 0.02, 0.02], [0.06, 0.0, 0.0], [0.049, 0.0, 0.0]])
    assert voxel_select(pts, 0.05).tolist() == [0, 2]
    d = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert resize_depth(d, (6, 8))[5, 7] == 11
