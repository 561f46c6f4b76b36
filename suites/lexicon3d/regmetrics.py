"""Registration metrics and pair geometry (numpy, float64).

- RRE (deg) = arccos(clamp((tr(R_gt^T R_est) - 1) / 2, -1, 1)), as Lexicon3D's code.
- RTE (m) = ||t_est - t_gt||.
- RR@tau: Lexicon3D's code has none; here the 3DMatch-style registration RMSE of the ground-truth
  correspondences under the estimated pose, sqrt(mean_i ||T_est s_i - T_gt s_i||^2) over the source points
  that lie in the overlap (seen by the target's views; all source points when none do), and RR = RMSE < tau
  (tau = 0.05 m).
"""
from __future__ import annotations

import numpy as np


def rre_deg(R_est: np.ndarray, R_gt: np.ndarray) -> float:
    c = (np.trace(R_gt.T @ R_est) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


def rte(t_est: np.ndarray, t_gt: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(t_est, np.float64) - np.asarray(t_gt, np.float64)))


def registration_rmse(R_est, t_est, R_gt, t_gt, src: np.ndarray, overlap: np.ndarray | None = None) -> float:
    pts = src if overlap is None or not np.any(overlap) else src[np.asarray(overlap, bool)]
    d = pts @ (np.asarray(R_est) - np.asarray(R_gt)).T + (np.asarray(t_est) - np.asarray(t_gt))
    return float(np.sqrt((d ** 2).sum(1).mean()))


def pair_metrics(R_est, t_est, R_gt, t_gt, src, overlap, tau: float = 0.05) -> dict[str, float]:
    rmse = registration_rmse(R_est, t_est, R_gt, t_gt, src, overlap)
    return {"RRE": rre_deg(R_est, R_gt), "RTE": rte(t_est, t_gt), "RMSE": rmse, "RR": float(rmse < tau)}


def random_rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    """Rotation about a uniformly random axis by an angle uniform in [0, max_deg] (Rodrigues)."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    a = np.radians(rng.uniform(0.0, max_deg))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * (k @ k)


def farthest_point_sampling(x: np.ndarray, m: int, start: int = 0) -> np.ndarray:
    """Indices of ``m`` points chosen greedily farthest from those already chosen (all when fewer)."""
    n = len(x)
    if n <= m:
        return np.arange(n)
    out = np.empty(m, np.int64)
    out[0] = start
    c0, c1, c2 = np.asarray(x, np.float64).T.copy()       # per-coordinate columns: 3x faster than .sum(1) of
    # [n, 3] and the same numbers ((a + b) + c, numpy's order for 3 terms); FPS was a third of a training step
    d = (c0 - c0[start]) ** 2 + (c1 - c1[start]) ** 2 + (c2 - c2[start]) ** 2
    for i in range(1, m):
        j = out[i] = int(d.argmax())
        np.minimum(d, (c0 - c0[j]) ** 2 + (c1 - c1[j]) ** 2 + (c2 - c2[j]) ** 2, out=d)
    return out


def kabsch_np(src: np.ndarray, tgt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unweighted least-squares rigid fit R src + t ~ tgt with det R = +1 (numpy, for the geometric floor)."""
    cs, ct = src.mean(0), tgt.mean(0)
    U, _, Vt = np.linalg.svd((src - cs).T @ (tgt - ct))
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(Vt.T @ U.T)) or 1.0])
    R = Vt.T @ D @ U.T
    return R, ct - R @ cs


def icp(src: np.ndarray, tgt: np.ndarray, iters: int = 30, trim: float = 0.5, R0: np.ndarray | None = None,
        t0: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Trimmed point-to-point ICP (each iteration matches every source point to its nearest target point, keeps
    the ``trim`` fraction with the smallest distances and refits with Kabsch), from (R0, t0) (default: the
    identity). From the identity it is the features-free floor: it uses the fact that the random transforms are
    small, which the head must learn; from the head's pose it is the ``regtr_icp`` refinement."""
    from scipy.spatial import cKDTree
    tree = cKDTree(tgt)
    R = np.eye(3) if R0 is None else np.asarray(R0, np.float64)
    t = np.zeros(3) if t0 is None else np.asarray(t0, np.float64)
    for _ in range(iters):
        d, j = tree.query(src @ R.T + t)
        keep = d <= np.quantile(d, trim)
        R_new, t_new = kabsch_np(src[keep], tgt[j[keep]])
        if np.allclose(R_new, R, atol=1e-10) and np.allclose(t_new, t, atol=1e-10):
            break
        R, t = R_new, t_new
    return R, t
