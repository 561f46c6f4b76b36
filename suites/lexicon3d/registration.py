"""``lexicon3d.registration``: partial-scene registration with a REGTR-style head on lifted features (paper
Table 3, GU; App. A.4).

Pairs: per scene, the source = the points seen by the first half of its frames, lifted from those frames
only; the target = the points seen by the second half, lifted from those (Lexicon3D: views 0-31 vs 32-63).
Each is farthest-point sampled to ``num_points``; the source gets a random rigid transform (rotation about a
random axis by up to ``max_rotation_deg``, translation up to ``max_translation`` per axis). Overlap labels:
a source point is in the overlap when the target's frames also see it (and vice versa). The head
(heads/regtr.py) is trained ``epochs`` x ``train_pairs`` fresh pairs per fitting scene; the epoch is
selected on fixed pairs of held-out train scenes (min mean RTE, the suite's validation metric, since version 5;
RR then mean RMSE until 4); the val split's fixed pairs
(``pairs_per_scene`` per scene, seeded: the same for every encoder) are reported. RR/RRE/RTE: regmetrics.py.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch

from harness.config import field
from harness.samples import PerSample
from harness.suite import MetricSpec, RunContext, SuiteResult, SuiteSpec
from heads.regtr import RegTRHead, regtr_loss
from suites.lexicon3d.common import LiftedSuite, LiftOptions, default_root, split_scenes
from suites.lexicon3d.features import Lifted
from suites.lexicon3d.regmetrics import farthest_point_sampling, icp, pair_metrics, random_rotation
from suites.lexicon3d.scannet import ScanNetData

METRICS = ("RR", "RRE", "RTE", "RMSE")


@dataclass(frozen=True)
class RegistrationOptions(LiftOptions):
    num_points: int = field(4096, min=3, help="farthest-point samples per partial cloud (Lexicon3D: 4096)")
    epochs: int = field(30, min=1, help="epochs (paper: 30)")
    train_pairs: int = field(1, min=1, help="fresh random pairs per fitting scene and epoch")
    pairs_per_scene: int = field(4, min=1, help="fixed random pairs per held-out / val scene")
    lr: float = field(1e-4, min=0, min_open=True, help="AdamW learning rate (REGTR: 1e-4)")
    weight_decay: float = field(1e-4, min=0, help="AdamW weight decay")
    d_model: int = field(256, min=8, help="transformer width (Lexicon3D/REGTR: 256)")
    num_heads: int = field(8, min=1, help="attention heads (8)")
    ffn_dim: int = field(1024, min=1, help="FFN width (1024)")
    num_layers: int = field(6, min=1, help="self + cross attention layers (6)")
    max_rotation_deg: float = field(180.0, min=0, max=180, help="random rotation angle bound of the source")
    max_translation: float = field(0.5, min=0, help="random translation bound per axis (m)")
    rr_threshold: float = field(0.05, min=0, min_open=True, help="RR: registration RMSE below this (m)")
    grad_clip: float = field(1.0, min=0, help="gradient-norm clip (0 = none)")
    distance_prior: float = field(0.0, min=0, help="not REGTR's: correspondence attention logits get "
                                  "-||x_s - x_t||^2 / sigma^2, sigma learned from this value (m); 0 = off (paper)")

    def __post_init__(self):
        super().__post_init__()
        if self.d_model % self.num_heads:
            from harness.config import ConfigError
            raise ConfigError(f"protocol.num_heads={self.num_heads}: must divide d_model={self.d_model}")


@dataclass
class Pair:
    xs: np.ndarray       # [n, 3] source points (transformed frame)
    fs: np.ndarray       # [n, D]
    xt: np.ndarray       # [m, 3] target points (world frame)
    ft: np.ndarray
    ov_s: np.ndarray     # [n] 1 where the target's frames see the source point
    ov_t: np.ndarray
    R: np.ndarray        # ground truth source -> target
    t: np.ndarray


def make_pair(lifted: Lifted, k: int, o: RegistrationOptions, rng: np.random.Generator) -> Pair | None:
    sl = lifted.scene(k)
    cnt = np.asarray(lifted.counts[:, sl])
    xyz = np.asarray(lifted.coords[sl], dtype=np.float64)
    ia, ib = np.flatnonzero(cnt[0] > 0), np.flatnonzero(cnt[1] > 0)
    if len(ia) < 3 or len(ib) < 3:
        return None
    ia = ia[farthest_point_sampling(xyz[ia], o.num_points, int(rng.integers(len(ia))))]
    ib = ib[farthest_point_sampling(xyz[ib], o.num_points, int(rng.integers(len(ib))))]
    Rr = random_rotation(rng, o.max_rotation_deg)
    tr = rng.uniform(-o.max_translation, o.max_translation, 3)
    c = xyz[ia].mean(0)
    xs = (xyz[ia] - c) @ Rr.T + c + tr                       # source frame: x' = Rr (x - c) + c + tr
    R = Rr.T                                                 # ground truth x = R x' + t
    t = c - Rr.T @ (c + tr)
    feats = lifted.feats
    return Pair(xs, np.asarray(feats[0, sl][ia], np.float32), xyz[ib], np.asarray(feats[1, sl][ib], np.float32),
                (cnt[1, ia] > 0).astype(np.float32), (cnt[0, ib] > 0).astype(np.float32), R, t)


def _t(x, dtype=torch.float32):
    return torch.from_numpy(np.asarray(x)).to(dtype)[None]


class RegistrationSuite(LiftedSuite):
    spec = SuiteSpec(
        name="lexicon3d.registration", version="5", task="3d-registration", heads=("regtr",),
        metrics=(MetricSpec("RTE", "min", "val relative translation error (m)"),
                 MetricSpec("RR", "max", "val registration recall (%): RMSE of the GT correspondences under the "
                                         "estimated pose < rr_threshold (0.05 m)"),
                 MetricSpec("RRE", "min", "val relative rotation error (deg)"),
                 MetricSpec("RMSE", "min", "val registration RMSE (m)"),
                 MetricSpec("val.RTE", "min", "RTE on pairs of the train scenes held out for selection (m)"),
                 MetricSpec("val.RR", "max", "RR on pairs of the train scenes held out for selection (%)")),
        # primary RTE (version 4; RR until 3): Lexicon3D's own code reports RTE and RRE (RR@0.05 m is ours, the
        # issue's definition), and RTE is threshold-free, so it ranks encoders at every size; RR@0.05 m is 0
        # for every encoder at CPU sizes (README). Version 5: the epoch is selected by that same val.RTE (until 4:
        # by val RR then RMSE, so the reported validation metric was not the one that picked the head)
        primary="RTE", validation="val.RTE", paper_table="Table 3",
        description="Partial-scene registration (first vs second half of each scene's views): REGTR-style "
                    "cross-encoder on lifted features, overlap-weighted Kabsch; RR@0.05 m, RRE, RTE.")
    Options = RegistrationOptions

    @classmethod
    def demo_protocol(cls, preset: str) -> dict:
        """CPU sizes (measured, README): 3,000 points per scene, block -4 (the builtin DINOv2's last block was
        fine-tuned for saliency), 256-point pairs, a d64 2-layer head, 12 epochs x 2 pairs per scene; the
        paper's motion (rotations about a random axis up to 180 deg, no motion prior). At these sizes no encoder
        reaches RR@0.05 m (nor ICP from the identity, 2 %, nor ICP from the head's pose); RTE / RRE / RMSE
        separate encoders: DINOv2's head aligns the clouds (RRE ~27 deg) and beats the identity and the
        features-free ICP, random-init's ends worse than the identity. The paper's sizes stay the defaults."""
        if preset == "tiny":
            return {"frame_size": (96, 128), "border": 4, "max_points": 500, "num_points": 64, "epochs": 2,
                    "d_model": 32, "num_heads": 2, "ffn_dim": 64, "num_layers": 1, "pairs_per_scene": 2,
                    "lr": 1e-3, "distance_prior": 0.3}
        return {"max_points": 3000, "layer": -4, "num_points": 256, "epochs": 12, "train_pairs": 2,
                "pairs_per_scene": 8, "d_model": 64, "num_heads": 4, "ffn_dim": 128, "num_layers": 2, "lr": 1e-3}

    def default_data(self, workspace):
        return default_root(workspace)

    def dataset_fingerprint(self, data) -> str:
        return ScanNetData(data).fingerprint()

    def validate(self, ctx: RunContext) -> dict:
        data = ScanNetData(ctx.data)
        return {"train_scenes": len(data.splits["train"]), "val_scenes": len(data.splits["val"])}

    def _fixed_pairs(self, lifted, scenes, seed: int, tag: int) -> list[tuple[str, Pair]]:
        out = []
        for k in scenes:
            for j in range(self.options.pairs_per_scene):
                p = make_pair(lifted, k, self.options, np.random.default_rng([seed, tag, k, j]))
                if p is not None:
                    out.append((f"{lifted.scenes[k]}/pair{j}", p))
        return out

    @torch.no_grad()
    def _evaluate(self, head, pairs, refine: bool = False) -> list[dict[str, float]]:
        """Per-pair metrics of the head's pose; with ``refine`` also of that pose refined by the floor's trimmed
        ICP (keys prefixed ``icp_``; our addition, not REGTR's or Lexicon3D's)."""
        head.eval()
        res = []
        for _, p in pairs:
            out = head(_t(p.fs), _t(p.xs), _t(p.ft), _t(p.xt))
            R, t = out["R"][0].double().numpy(), out["t"][0].double().numpy()
            r = pair_metrics(R, t, p.R, p.t, p.xs, p.ov_s, self.options.rr_threshold)
            if refine:
                r.update({f"icp_{k}": v for k, v in pair_metrics(*icp(p.xs, p.xt, R0=R, t0=t), p.R, p.t, p.xs, p.ov_s,
                                                                  self.options.rr_threshold).items()})
            res.append(r)
        return res

    def _train_and_score(self, ctx, lifted, layer, t_lift) -> SuiteResult:
        o = self.options
        fit, hold, val = split_scenes(lifted, o.holdout_fraction)
        torch.manual_seed(ctx.seed)
        head = RegTRHead(lifted.feats.shape[-1], o.d_model, o.num_heads, o.ffn_dim, o.num_layers,
                         distance_prior=o.distance_prior)
        opt = torch.optim.AdamW(head.parameters(), lr=o.lr, weight_decay=o.weight_decay)
        hold_pairs = self._fixed_pairs(lifted, hold, ctx.seed, 1)
        val_pairs = self._fixed_pairs(lifted, val, ctx.seed, 2)
        if not val_pairs:
            from suites.images import DataError
            raise DataError(f"'{ctx.data}': no val scene has points seen by both halves of its frames")
        best_rr, best_rte, best_state, best_epoch, step = float("nan"), float("nan"), None, 0, 0
        t_train = time.perf_counter()
        for epoch in range(o.epochs):
            head.train()
            rng = np.random.default_rng([ctx.seed, 0, epoch])
            losses = []
            for k in rng.permutation(fit).tolist():
                for _ in range(o.train_pairs):
                    p = make_pair(lifted, k, o, rng)
                    if p is None:
                        continue
                    out = head(_t(p.fs), _t(p.xs), _t(p.ft), _t(p.xt))
                    loss, _ = regtr_loss(out, _t(p.xs), _t(p.xt), _t(p.R), _t(p.t), _t(p.ov_s), _t(p.ov_t))
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    if o.grad_clip > 0:
                        torch.nn.utils.clip_grad_norm_(head.parameters(), o.grad_clip)
                    opt.step()
                    losses.append(float(loss.detach()))
                    step += 1
            res = self._evaluate(head, hold_pairs)
            rr = 100.0 * float(np.mean([r["RR"] for r in res])) if res else float("nan")
            rmse = float(np.mean([r["RMSE"] for r in res])) if res else float("nan")
            rte = float(np.mean([r["RTE"] for r in res])) if res else float("nan")
            ctx.log_curve({"regtr.train_loss": float(np.mean(losses)) if losses else float("nan"),
                           "regtr.val_RR": rr, "regtr.val_RMSE": rmse, "regtr.val_RTE": rte}, step)
            ctx.report_intermediate(rte, epoch)
            if best_state is None or rte < best_rte:   # NaN (no held-out pairs) never wins: the first epoch stays
                best_rr, best_rte, best_state, best_epoch = rr, rte, copy.deepcopy(head.state_dict()), epoch + 1
        train_s = time.perf_counter() - t_train
        head.load_state_dict(best_state)
        res = self._evaluate(head, val_pairs, refine=True)
        refined = [{m: r[f"icp_{m}"] for m in METRICS} for r in res]
        ids = [i for i, _ in val_pairs]
        floor = [pair_metrics(np.eye(3), np.zeros(3), p.R, p.t, p.xs, p.ov_s, o.rr_threshold) for _, p in val_pairs]
        floor_icp = [pair_metrics(*icp(p.xs, p.xt), p.R, p.t, p.xs, p.ov_s, o.rr_threshold) for _, p in val_pairs]
        metrics, per_sample = {}, {}
        for prefix, rows in (("", res), ("regtr_icp.", refined), ("floor.", floor), ("floor_icp.", floor_icp)):
            for m in METRICS:
                v = np.array([r[m] for r in rows], np.float64)
                scale = 100.0 if m == "RR" else 1.0
                metrics[f"{prefix}{m}"] = scale * float(v.mean())
                per_sample[f"{prefix}{m}"] = PerSample(ids, v, reduce="mean", scale=scale, columns=(m,))
        metrics["val.RR"], metrics["val.RTE"] = best_rr, best_rte
        for m in METRICS:
            metrics[f"regtr.{m}"] = metrics[m]
            per_sample[f"regtr.{m}"] = per_sample[m]
        details = {"floors": {"floor": "identity pose", "floor_icp": "trimmed point-to-point ICP from the identity "
                                 "(coordinates only, no features; regmetrics.icp)"},
                   "regtr_icp": "the head's pose refined by the same trimmed ICP (our addition; its controls are "
                                "floor_icp and random-init's regtr_icp)",
                   "pairs": {"fit_scenes": len(fit), "held_out_pairs": len(hold_pairs), "val_pairs": len(val_pairs)},
                   "overlap_fraction_val": float(np.mean([p.ov_s.mean() for _, p in val_pairs])),
                   "lifting_seconds": round(t_lift, 3), "lifting_cached": not lifted.computed,
                   "train_seconds": round(train_s, 3), "train_steps": step, "lifted_key": lifted.key}
        selection = {"regtr": {"epoch": best_epoch, "rule": "min mean RTE on held-out train pairs",
                               "val_RR": best_rr, "val_RTE": best_rte, "block": layer,
                               "params": sum(p.numel() for p in head.parameters())}}
        return SuiteResult(metrics=metrics, selection=selection, details=details, per_sample=per_sample)
