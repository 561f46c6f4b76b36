"""``lexicon3d.semantic``: 3D semantic segmentation by a linear probe on lifted point features (paper Table 3,
3D SU; App. A.4). One ``nn.Linear(D, 20)`` over ScanNet-20, cross-entropy, lr 1e-4, 20 epochs; the epoch is
selected on train scenes held out from fitting, the val split is reported: overall point accuracy and mIoU
from one dataset-level confusion matrix (nan-mean over the classes present in ground truth or prediction).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from harness.config import field
from harness.samples import PerSample
from harness.suite import MetricSpec, RunContext, SuiteResult, SuiteSpec
from suites.lexicon3d.common import LiftedSuite, LiftOptions, default_root, split_scenes
from suites.lexicon3d.scannet import IGNORE, N_CLASSES, ScanNetData


@dataclass(frozen=True)
class SemanticOptions(LiftOptions):
    epochs: int = field(20, min=1, help="epochs over the fitting scenes (paper: 20)")
    lr: float = field(1e-4, min=0, min_open=True, help="Adam learning rate (paper: 1e-4)")
    batch_points: int | None = field(None, min=1, help="points per step; None = one scene per step")
    optimizer: Literal["adam", "sgd"] = field("adam", help="optimiser of the linear layer")
    block_size: float = field(1.0, min=0, min_open=True, hash=False,
                              help="per-sample records: val points grouped in xy blocks of this size (m)")
    height_bin: float = field(0.1, min=0, min_open=True,
                              help="floor_height: height bins (m) of the height-prior floor")


def confusion(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    ok = gt != IGNORE
    return np.bincount(gt[ok] * N_CLASSES + pred[ok], minlength=N_CLASSES * N_CLASSES).reshape(N_CLASSES, N_CLASSES)


def scores(conf: np.ndarray) -> tuple[float, float]:
    """(accuracy %, mIoU %) of a confusion matrix [gt, pred]."""
    inter = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - inter
    acc = inter.sum() / max(conf.sum(), 1)
    present = union > 0
    miou = (inter[present] / union[present]).mean() if present.any() else float("nan")
    return 100.0 * acc, 100.0 * miou


def block_records(scene: str, xy: np.ndarray, pred: np.ndarray, gt: np.ndarray, size: float):
    """Per-block rows: ids, (correct, total), (intersections[20], unions[20]); they sum to the dataset's."""
    ok = gt != IGNORE
    xy, pred, gt = xy[ok], pred[ok], gt[ok]
    b = np.floor(xy / size).astype(np.int64)
    keys, inv = np.unique(b, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    n = len(keys)
    hit = pred == gt
    inter = np.zeros((n, N_CLASSES))
    np.add.at(inter, (inv[hit], gt[hit]), 1)
    gtc = np.zeros((n, N_CLASSES))
    np.add.at(gtc, (inv, gt), 1)
    prc = np.zeros((n, N_CLASSES))
    np.add.at(prc, (inv, pred), 1)
    ids = [f"{scene}/{x}_{y}" for x, y in keys]
    acc = np.stack([np.bincount(inv, hit.astype(np.float64), n), np.bincount(inv, minlength=n).astype(np.float64)], 1)
    return ids, acc, np.concatenate([inter, gtc + prc - inter], 1)


def heights(coords: np.ndarray) -> np.ndarray:
    """Each point's height above its scene's floor: z minus the scene's 1st-percentile z (ScanNet's axis-aligned
    scenes are z-up; the percentile ignores a few points below the floor)."""
    z = np.asarray(coords, dtype=np.float64)[:, 2]
    return z - np.percentile(z, 1) if len(z) else z


def height_prior(h: np.ndarray, labels: np.ndarray, bin_m: float) -> np.ndarray:
    """[bins] the most frequent fitting class of each height bin (``bin_m`` metres; the last bin takes all that
    is higher; bins no fitting point reaches take the majority class; ties: the smaller class)."""
    ok = labels != IGNORE
    b = np.clip(np.floor(h[ok] / bin_m), 0, None).astype(np.int64)
    n = int(b.max()) + 1 if len(b) else 1
    counts = np.zeros((n, N_CLASSES), np.int64)
    np.add.at(counts, (b, labels[ok]), 1)
    out = counts.argmax(1)
    out[counts.sum(1) == 0] = int(counts.sum(0).argmax())
    return out


def apply_height_prior(prior: np.ndarray, h: np.ndarray, bin_m: float) -> np.ndarray:
    return prior[np.clip(np.floor(h / bin_m), 0, len(prior) - 1).astype(np.int64)]


class SemanticSuite(LiftedSuite):
    spec = SuiteSpec(
        name="lexicon3d.semantic", version="2", task="3d-semantic", heads=("linear",),
        metrics=(MetricSpec("mIoU", "max", "val mIoU (%) of the selected epoch, dataset-level confusion"),
                 MetricSpec("acc", "max", "val overall point accuracy (%)"),
                 MetricSpec("val.mIoU", "max", "mIoU on the train scenes held out for selection (%)")),
        primary="mIoU", validation="val.mIoU", paper_table="Table 3",
        description="ScanNet-20 point classification: Linear(D, 20) on multi-view lifted features, CE, "
                    "epoch selected on held-out train scenes.")
    Options = SemanticOptions

    @classmethod
    def demo_protocol(cls, preset: str) -> dict:
        """Sized from learning curves on the world (see README): fewer points per scene, a mid-depth block
        (the builtin DINOv2's last block was fine-tuned for saliency), more steps at a larger lr."""
        if preset == "tiny":
            return {"epochs": 3, "lr": 1e-2, "frame_size": (96, 128), "border": 4, "max_points": 500}
        return {"epochs": 20, "lr": 3e-3, "batch_points": 2048, "max_points": 3000, "layer": -4}

    def default_data(self, workspace):
        return default_root(workspace)

    def dataset_fingerprint(self, data) -> str:
        return ScanNetData(data).fingerprint()

    def validate(self, ctx: RunContext) -> dict:
        data = ScanNetData(ctx.data)
        return {"train_scenes": len(data.splits["train"]), "val_scenes": len(data.splits["val"])}

    def _predict(self, head, lifted, scenes) -> dict[int, np.ndarray]:
        out = {}
        with torch.no_grad():
            for k in scenes:
                x = torch.from_numpy(lifted.all_views(lifted.scene(k)))
                out[k] = head(x).argmax(1).numpy()
        return out

    def _conf(self, lifted, preds) -> np.ndarray:
        return sum((confusion(p, np.asarray(lifted.labels[lifted.scene(k)])) for k, p in preds.items()),
                   np.zeros((N_CLASSES, N_CLASSES), np.int64))

    def _train_and_score(self, ctx, lifted, layer, t_lift) -> SuiteResult:
        o = self.options
        fit, hold, val = split_scenes(lifted, o.holdout_fraction)
        gen = torch.Generator().manual_seed(ctx.seed)
        torch.manual_seed(ctx.seed)
        dim = lifted.feats.shape[-1]
        head = torch.nn.Linear(dim, N_CLASSES)
        opt = (torch.optim.Adam(head.parameters(), lr=o.lr) if o.optimizer == "adam"
               else torch.optim.SGD(head.parameters(), lr=o.lr, momentum=0.9))
        fit_data = []
        for k in fit:
            sl = lifted.scene(k)
            y = np.asarray(lifted.labels[sl])
            ok = y != IGNORE
            fit_data.append((torch.from_numpy(lifted.all_views(sl)[ok]), torch.from_numpy(y[ok])))
        fit_data = [d for d in fit_data if len(d[1])]
        best, best_state, best_epoch, step = -1.0, None, 0, 0
        for epoch in range(o.epochs):
            head.train()
            losses = []
            for j in torch.randperm(len(fit_data), generator=gen).tolist():
                x, y = fit_data[j]
                bs = o.batch_points or len(y)
                perm = torch.randperm(len(y), generator=gen)
                for s in range(0, len(y), bs):
                    b = perm[s:s + bs]
                    loss = F.cross_entropy(head(x[b]), y[b])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    losses.append(float(loss.detach()))
                    step += 1
            head.eval()
            _, v = scores(self._conf(lifted, self._predict(head, lifted, hold)))
            ctx.log_curve({"linear.train_loss": float(np.mean(losses)) if losses else float("nan"),
                           "linear.val_mIoU": v}, step)
            ctx.report_intermediate(v, epoch)
            if v > best:
                best, best_state, best_epoch = v, copy.deepcopy(head.state_dict()), epoch + 1
        head.load_state_dict(best_state)
        head.eval()
        preds = self._predict(head, lifted, val)
        metrics, per_sample = {}, {}
        labels_fit = np.concatenate([d[1].numpy() for d in fit_data]) if fit_data else np.zeros(0, np.int64)
        majority = int(np.bincount(labels_fit, minlength=N_CLASSES).argmax())
        floor = {k: np.full(len(p), majority, np.int64) for k, p in preds.items()}
        # the height prior: what a point's height above the floor alone predicts (floor, wall, table tops...)
        fit_h = [(heights(lifted.coords[lifted.scene(k)]), np.asarray(lifted.labels[lifted.scene(k)])) for k in fit]
        prior = height_prior(np.concatenate([h for h, _ in fit_h]) if fit_h else np.zeros(0),
                             np.concatenate([y for _, y in fit_h]) if fit_h else np.zeros(0, np.int64), o.height_bin)
        floor_height = {k: apply_height_prior(prior, heights(lifted.coords[lifted.scene(k)]), o.height_bin)
                        for k in preds}
        for prefix, pr in (("", preds), ("floor.", floor), ("floor_height.", floor_height)):
            acc, miou = scores(self._conf(lifted, pr))
            metrics[f"{prefix}acc"], metrics[f"{prefix}mIoU"] = acc, miou
            ids, accs, ious = [], [], []
            for k, p in pr.items():
                sl = lifted.scene(k)
                i, a, u = block_records(lifted.scenes[k], np.asarray(lifted.coords[sl])[:, :2], p,
                                        np.asarray(lifted.labels[sl]), o.block_size)
                ids += i
                accs.append(a)
                ious.append(u)
            per_sample[f"{prefix}acc"] = PerSample(ids, np.concatenate(accs), reduce="ratio", scale=100.0,
                                                   columns=("correct", "labelled"))
            per_sample[f"{prefix}mIoU"] = PerSample(
                ids, np.concatenate(ious), reduce="miou", scale=100.0,
                columns=tuple(f"inter.{c}" for c in range(N_CLASSES)) + tuple(f"union.{c}" for c in range(N_CLASSES)))
        metrics["val.mIoU"] = best
        metrics["linear.mIoU"], metrics["linear.acc"] = metrics["mIoU"], metrics["acc"]
        per_sample["linear.mIoU"], per_sample["linear.acc"] = per_sample["mIoU"], per_sample["acc"]
        conf = self._conf(lifted, preds)
        inter = np.diag(conf).astype(float)
        union = conf.sum(0) + conf.sum(1) - inter
        seen = lifted.counts.sum(0) > 0
        details = {"floors": {"floor": f"majority class of the fitting points ({majority})",
                              "floor_height": f"majority class per {o.height_bin:g} m of height above the floor "
                                              "(fitting points; no features)"},
                   "per_class_iou": {str(c): (float(100 * inter[c] / union[c]) if union[c] else None)
                                     for c in range(N_CLASSES)},
                   "scenes": {"fit": len(fit), "held_out": len(hold), "val": len(val)},
                   "points": int(len(lifted.labels)), "points_seen_by_no_frame": int((~seen).sum()),
                   "lifting_seconds": round(t_lift, 3), "lifting_cached": not lifted.computed,
                   "lifted_key": lifted.key}
        selection = {"linear": {"epoch": best_epoch, "rule": "max mIoU on the held-out train scenes",
                                "val_mIoU": best, "block": layer, "lr": o.lr}}
        return SuiteResult(metrics=metrics, selection=selection, details=details, per_sample=per_sample)
