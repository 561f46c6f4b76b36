"""Is lexicon3d.registration well posed at a given size? Scores, on the val pairs the suite would draw, what
needs no training: the identity, Kabsch on oracle correspondences (each ground-truth-moved overlap source
point matched to its nearest target point), the features-free ICP floor, ICP (untrimmed) on the ground-truth
overlap points only (what a perfect overlap prediction would buy ICP), and Kabsch on feature nearest
neighbours (cosine). Reads one lifted entry of the derived cache (a folder ``<cache>/derived/<key>``, written
by any Lexicon3D run).

    python benchmarks/registration_floors.py WORKSPACE/cache/derived/<key> [num_points=256] [max_rotation_deg=180]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from suites.lexicon3d.common import split_scenes
from suites.lexicon3d.features import Lifted
from suites.lexicon3d.registration import RegistrationOptions, make_pair
from suites.lexicon3d.regmetrics import icp, kabsch_np, pair_metrics


def open_lifted(folder: Path) -> Lifted:
    meta = json.loads((folder / "meta.json").read_text())
    a = {n: np.load(folder / f"{n}.npy", mmap_mode="r") for n in meta["arrays"]}
    return Lifted(meta["scenes"], meta["splits"], np.asarray(a["offsets"]), a["coords"], a["labels"], a["feats"],
                  a["counts"], folder.name)


def main(folder: str, *overrides: str) -> None:
    from scipy.spatial import cKDTree
    kv = {k: float(v) for k, v in (o.split("=", 1) for o in overrides)}
    o = RegistrationOptions(num_points=int(kv.get("num_points", 256)), max_rotation_deg=kv.get("max_rotation_deg", 180.0),
                            pairs_per_scene=int(kv.get("pairs_per_scene", 8)))
    lifted = open_lifted(Path(folder))
    _, _, val = split_scenes(lifted, o.holdout_fraction)
    pairs = [p for k in val for j in range(o.pairs_per_scene)
             if (p := make_pair(lifted, k, o, np.random.default_rng([0, 2, k, j]))) is not None]   # the suite's seed-0 val pairs
    rows: dict[str, list] = {"identity": [], "oracle Kabsch": [], "ICP (floor_icp)": [], "ICP, GT overlap only": [],
                             "feature NN Kabsch": []}
    for p in pairs:
        ov = p.ov_s > 0 if p.ov_s.any() else np.ones(len(p.xs), bool)
        _, j = cKDTree(p.xt).query(p.xs[ov] @ p.R.T + p.t)
        fs = p.fs / (np.linalg.norm(p.fs, axis=1, keepdims=True) + 1e-6)
        ft = p.ft / (np.linalg.norm(p.ft, axis=1, keepdims=True) + 1e-6)
        for name, (R, t) in (("identity", (np.eye(3), np.zeros(3))), ("oracle Kabsch", kabsch_np(p.xs[ov], p.xt[j])),
                             ("ICP (floor_icp)", icp(p.xs, p.xt)),
                             ("ICP, GT overlap only", icp(p.xs[ov], p.xt[p.ov_t > 0] if p.ov_t.any() else p.xt, trim=1.0)),
                             ("feature NN Kabsch", kabsch_np(p.xs, p.xt[(fs @ ft.T).argmax(1)]))):
            rows[name].append(pair_metrics(R, t, p.R, p.t, p.xs, p.ov_s, o.rr_threshold))
    print(f"{len(pairs)} val pairs, {o.num_points} points, rotations <= {o.max_rotation_deg} deg, "
          f"overlap {np.mean([p.ov_s.mean() for p in pairs]):.2f}")
    for name, r in rows.items():
        m = {k: float(np.mean([x[k] for x in r])) for k in ("RR", "RRE", "RTE", "RMSE")}
        print(f"  {name:20s} RR {100 * m['RR']:5.1f} %  RRE {m['RRE']:6.2f} deg  RTE {m['RTE']:.3f} m  RMSE {m['RMSE']:.3f} m")


if __name__ == "__main__":
    main(*sys.argv[1:])
