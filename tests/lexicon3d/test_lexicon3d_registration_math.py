"""Kabsch against independent implementations (scipy, roma), RR/RRE/RTE against hand-computed values, the
REGTR head's shapes and loss."""
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from heads.regtr import RegTRHead, SinePositionalEncoding3D, kabsch, regtr_loss, transform
from suites.lexicon3d.regmetrics import (farthest_point_sampling, icp, kabsch_np, pair_metrics, random_rotation,
                                         registration_rmse, rre_deg, rte)


def _t(x):
    return torch.from_numpy(np.asarray(x, np.float64))


def test_kabsch_recovers_known_pose():
    rng = np.random.default_rng(0)
    R = Rotation.random(random_state=1).as_matrix()
    t = np.array([0.3, -1.2, 2.0])
    src = rng.normal(size=(50, 3))
    tgt = src @ R.T + t
    Re, te = kabsch(_t(src), _t(tgt))
    assert np.abs(Re.numpy() - R).max() < 1e-6 and np.abs(te.numpy() - t).max() < 1e-6
    # zero-weighted outliers are ignored
    bad = tgt.copy()
    bad[:10] += rng.normal(size=(10, 3)) * 5
    w = np.ones(50)
    w[:10] = 0
    Re, te = kabsch(_t(src), _t(bad), _t(w))
    assert np.abs(Re.numpy() - R).max() < 1e-6 and np.abs(te.numpy() - t).max() < 1e-6
    # batched
    Rb, tb = kabsch(_t(np.stack([src, src])), _t(np.stack([tgt, tgt])))
    assert Rb.shape == (2, 3, 3) and np.abs(Rb[1].numpy() - R).max() < 1e-6


def test_kabsch_matches_scipy_and_roma_with_noise_and_weights():
    roma = pytest.importorskip("roma")
    rng = np.random.default_rng(2)
    src = rng.normal(size=(40, 3))
    R = Rotation.random(random_state=3).as_matrix()
    tgt = src @ R.T + [1.0, 2.0, 3.0] + rng.normal(size=(40, 3)) * 0.2
    w = rng.uniform(0.1, 2.0, 40)
    Re, te = kabsch(_t(src), _t(tgt), _t(w))
    cs, ct = (w[:, None] * src).sum(0) / w.sum(), (w[:, None] * tgt).sum(0) / w.sum()
    ref, _ = Rotation.align_vectors(tgt - ct, src - cs, weights=w)       # rotation of src onto tgt
    np.testing.assert_allclose(Re.numpy(), ref.as_matrix(), atol=1e-8)
    np.testing.assert_allclose(te.numpy(), ct - ref.as_matrix() @ cs, atol=1e-8)
    Rr, tr = roma.rigid_points_registration(_t(src), _t(tgt), weights=_t(w))
    np.testing.assert_allclose(Re.numpy(), Rr.numpy(), atol=1e-8)
    np.testing.assert_allclose(te.numpy(), tr.numpy(), atol=1e-8)


def test_kabsch_reflection_fix():
    """Targets that are a mirror image of the source: the best orthogonal fit is a reflection (det -1);
    Kabsch must return the best proper rotation instead, as scipy does."""
    rng = np.random.default_rng(4)
    src = rng.normal(size=(30, 3)) * [3.0, 2.0, 0.5]
    M = np.diag([1.0, 1.0, -1.0]) @ Rotation.random(random_state=5).as_matrix()   # det -1
    tgt = src @ M.T
    Re, _ = kabsch(_t(src), _t(tgt))
    Re = Re.numpy()
    assert abs(np.linalg.det(Re) - 1.0) < 1e-9 and np.abs(Re.T @ Re - np.eye(3)).max() < 1e-9
    # without the fix the SVD solution would be the reflection itself
    U, _, Vt = np.linalg.svd((src - src.mean(0)).T @ (tgt - tgt.mean(0)))
    assert np.linalg.det(Vt.T @ U.T) < 0
    ref, _ = Rotation.align_vectors(tgt - tgt.mean(0), src - src.mean(0))
    np.testing.assert_allclose(Re, ref.as_matrix(), atol=1e-8)


def test_metrics_by_hand():
    Rz90 = np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])
    assert rre_deg(Rz90, np.eye(3)) == pytest.approx(90.0)
    assert rre_deg(np.eye(3) * (1 + 1e-12), np.eye(3)) == 0.0            # clamped, never nan
    assert rre_deg(np.diag([1.0, -1, -1]), np.eye(3)) == pytest.approx(180.0)
    assert rte([0.3, 0.4, 0.0], [0, 0, 0]) == pytest.approx(0.5)
    src = np.array([[1.0, 0, 0], [0, 1, 0], [0, 0, 0], [5, 5, 5]])
    ov = np.array([1, 1, 1, 0])
    m = pair_metrics(np.eye(3), np.array([0.03, 0, 0]), np.eye(3), np.zeros(3), src, ov)
    assert m == pytest.approx({"RRE": 0.0, "RTE": 0.03, "RMSE": 0.03, "RR": 1.0})
    m = pair_metrics(np.eye(3), np.array([0.06, 0, 0]), np.eye(3), np.zeros(3), src, ov)
    assert m["RR"] == 0.0 and m["RMSE"] == pytest.approx(0.06)
    # rotation error: points (1,0,0), (0,1,0), (0,0,0) under Rz90 vs I move by sqrt2, sqrt2, 0
    assert registration_rmse(Rz90, np.zeros(3), np.eye(3), np.zeros(3), src, ov) == pytest.approx(np.sqrt(4 / 3))
    # no overlap point: all source points count
    assert registration_rmse(np.eye(3), [0, 0, 0.1], np.eye(3), np.zeros(3), src, np.zeros(4)) == pytest.approx(0.1)


def test_random_rotation_and_fps():
    rng = np.random.default_rng(0)
    for _ in range(20):
        R = random_rotation(rng, 30.0)
        assert abs(np.linalg.det(R) - 1) < 1e-9 and rre_deg(R, np.eye(3)) <= 30.0 + 1e-6
    x = np.array([[0.0, 0, 0], [0.1, 0, 0], [10, 0, 0], [5, 0, 0], [0.2, 0, 0]])
    assert farthest_point_sampling(x, 3, 0).tolist() == [0, 2, 3]
    assert farthest_point_sampling(x, 9).tolist() == [0, 1, 2, 3, 4]
    # the column-wise implementation picks exactly what the textbook one does (ties included): the pairs,
    # hence every number of the suite, did not change with it
    for k in range(10):
        y = rng.normal(size=(int(rng.integers(50, 800)), 3)) * 3
        y = np.round(y, 1) if k % 2 else y
        m, s0 = int(rng.integers(3, min(200, len(y)))), int(rng.integers(len(y)))
        ref = [s0]
        d = ((y - y[s0]) ** 2).sum(1)
        for _ in range(1, m):
            ref.append(int(d.argmax()))
            d = np.minimum(d, ((y - y[ref[-1]]) ** 2).sum(1))
        assert farthest_point_sampling(y, m, s0).tolist() == ref


def test_regtr_head_shapes_and_loss_backward():
    torch.manual_seed(0)
    head = RegTRHead(16, d=32, heads=4, ffn=64, layers=2)
    fs, ft = torch.randn(1, 20, 16), torch.randn(1, 25, 16)
    xs, xt = torch.randn(1, 20, 3), torch.randn(1, 25, 3)
    out = head(fs, xs, ft, xt)
    assert out["corr_s"].shape == (1, 20, 3) and out["corr_t"].shape == (1, 25, 3)
    assert out["R"].shape == (1, 3, 3) and abs(torch.linalg.det(out["R"]).item() - 1) < 1e-4
    R = torch.from_numpy(Rotation.random(random_state=0).as_matrix()).float()[None]
    loss, parts = regtr_loss(out, xs, xt, R, torch.zeros(1, 3), torch.ones(1, 20), torch.ones(1, 25))
    loss.backward()
    assert set(parts) == {"overlap", "corr", "pose"} and head.proj.weight.grad is not None
    assert torch.allclose(transform(R, torch.zeros(1, 3), xs), xs @ R[0].T)
    pe = SinePositionalEncoding3D(256)(torch.zeros(4, 3))
    assert pe.shape == (4, 256) and pe[0, :42].abs().max() == 0 and pe[0, 42:84].min() == 1


def test_icp_floor_recovers_small_motion_and_kabsch_np_matches_torch():
    rng = np.random.default_rng(5)
    # a "room": floor + two walls + a box, so point-to-point ICP has a unique basin for a small motion
    pts = np.concatenate([np.c_[rng.uniform(0, 4, 300), rng.uniform(0, 3, 300), np.zeros(300)],
                          np.c_[np.zeros(150), rng.uniform(0, 3, 150), rng.uniform(0, 2.5, 150)],
                          np.c_[rng.uniform(0, 4, 150), np.zeros(150), rng.uniform(0, 2.5, 150)],
                          np.c_[rng.uniform(1, 1.6, 100), rng.uniform(1, 1.5, 100), rng.uniform(0, 0.8, 100)]])
    R = Rotation.from_rotvec(np.radians(4.0) * np.array([0.3, 0.2, 0.93]) / np.linalg.norm([0.3, 0.2, 0.93])).as_matrix()
    t = np.array([0.08, -0.05, 0.03])
    src = (pts - t) @ R                                # R src + t = pts
    Re, te = icp(src, pts, iters=100, trim=0.9)
    assert rre_deg(Re, R) < 1e-4 and rte(te, t) < 1e-6
    # a large motion is outside ICP's basin: the floor does not solve the task by construction
    R2 = Rotation.from_rotvec([0, 0, np.radians(90.0)]).as_matrix()
    src2 = (pts - pts.mean(0)) @ R2 + pts.mean(0)       # R2 src2 + t2 = pts
    t2 = pts.mean(0) - R2 @ pts.mean(0)
    Re2, _ = icp(src2, pts)
    assert rre_deg(Re2, R2) > 10
    # ... but started near the answer (the regtr_icp refinement of a head's pose) it converges to it
    R0 = Rotation.from_rotvec([0, 0, np.radians(85.0)]).as_matrix()
    Re3, te3 = icp(src2, pts, iters=100, trim=0.9, R0=R0, t0=t2 + 0.05)
    assert rre_deg(Re3, R2) < 1e-4 and rte(te3, t2) < 1e-6
    a, b = rng.normal(size=(30, 3)), rng.normal(size=(30, 3))
    Rn, tn = kabsch_np(a, b)
    Rt, tt = kabsch(_t(a), _t(b))
    np.testing.assert_allclose(Rn, Rt.numpy(), atol=1e-10)
    np.testing.assert_allclose(tn, tt.numpy(), atol=1e-10)


def test_regtr_distance_prior_matches_nearest_points():
    """With a sharp distance prior the correspondence attention picks each point's nearest neighbour in the
    other cloud, whatever the features: identical clouds register to the identity, and a tiny shift of the
    source (far below the point spacing) is recovered."""
    torch.manual_seed(0)
    g = np.stack(np.meshgrid(np.arange(5), np.arange(5), np.arange(4), indexing="ij"), -1).reshape(-1, 3) * 0.5
    x = torch.from_numpy(g).float()[None]
    head = RegTRHead(8, 16, 2, 32, 1, distance_prior=0.01).eval()
    f = torch.randn(1, len(g), 8)
    with torch.no_grad():
        out = head(f, x, torch.randn(1, len(g), 8), x)
        np.testing.assert_allclose(out["corr_s"][0].numpy(), g, atol=1e-5)
        assert np.abs(out["R"][0].numpy() - np.eye(3)).max() < 1e-5 and out["t"].abs().max() < 1e-5
        shift = torch.tensor([0.02, -0.01, 0.015])
        out = head(f, x - shift, f, x)               # source = target moved by -shift: GT t = +shift
        np.testing.assert_allclose(out["t"][0].numpy(), shift.numpy(), atol=1e-4)
    assert RegTRHead(8, 16, 2, 32, 1).log_sigma is None   # off by default (the paper's head)
