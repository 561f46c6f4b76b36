"""ImageNet linear probe (DINOv2 grid of 52 heads in one pass) and weighted kNN (paper Table 5)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from harness.config import field
from harness.device import seed_everything
from harness.suite import MetricSpec, RunContext, Suite, SuiteResult, SuiteSpec
from heads.knn import knn_predict
from heads.linear_grid import DINOV2_LRS, InputConfig, LinearGrid, topk_correct, train_linear_grid
from suites.classification.datasets import ImageFolderSplit
from suites.images import DataError, eval_transform, train_transform


@dataclass(frozen=True)
class ClsOptions:
    epochs: int = field(10, help="epochs of linear training (DINOv2: 10)")
    iters_per_epoch: int | None = field(None, help="iterations per epoch; None = one pass over train "
                                                   "(DINOv2 on ImageNet: 1250)")
    batch_size: int = field(256, help="linear-head batch size; lr is scaled by batch/256")
    lrs: tuple[float, ...] = field(DINOV2_LRS, help="learning-rate grid (one head each)")
    n_last_blocks: tuple[int, ...] = field((1, 4), help="CLS of the last n blocks concatenated")
    avgpool: tuple[bool, ...] = field((False, True), help="append the mean patch token of the last block")
    holdout_fraction: float = field(0.1, help="part of train held out to select the head (never val)")
    knn_k: tuple[int, ...] = field((10, 20, 100, 200), help="kNN neighbourhood sizes")
    knn_temperature: float = field(0.07, help="kNN vote temperature")
    image_size: int | None = field(None, help="crop size; None = the encoder's default")


class ClassificationSuite(Suite):
    spec = SuiteSpec(
        name="cls.imagenet", version="1", task="classification", heads=("linear", "knn"),
        default_head="linear,knn",
        metrics=(MetricSpec("lin.top1", "max", "selected linear head, val top-1 (%)"),
                 MetricSpec("lin.top5", "max", "selected linear head, val top-5 (%)"),
                 MetricSpec("knn.top1", "max", "kNN val top-1 (%) at the k selected on held-out train"),
                 MetricSpec("knn.top5", "max", "kNN val top-5 (%)")),
        primary="lin.top1", validation="lin.holdout_top1", paper_table="Table 5",
        description="ImageFolder train/val; DINOv2 linear grid (n_last_blocks x avgpool x lr) selected on "
                    "held-out train; weighted kNN (T=0.07).")
    Options = ClsOptions

    def _splits(self, data: Path, info, mode: str):
        train = ImageFolderSplit(data, "train")
        val = ImageFolderSplit(data, "val", classes=train.classes)
        size = self.options.image_size
        tf, tf_id = eval_transform(info, size)
        return train.with_transform(tf, tf_id), val.with_transform(tf, tf_id), train

    def dataset_fingerprint(self, data: Path) -> str:
        train = ImageFolderSplit(data, "train")
        val = ImageFolderSplit(data, "val", classes=train.classes)
        return f"{train.fingerprint()}-{val.fingerprint()}"

    @classmethod
    def default_data(cls, workspace) -> Path:
        from suites.synthetic.defaults import imagefolder_root
        return imagefolder_root(workspace)

    @classmethod
    def demo_protocol(cls, preset: str) -> dict:
        return {"epochs": 3 if preset == "tiny" else 10}

    @classmethod
    def search_space(cls):
        return {"holdout_fraction": ("grid", [0.1, 0.2])}

    def _holdout_split(self, labels: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Stratified: a fraction of every class (at least one when the class has two) is held out."""
        g = torch.Generator().manual_seed(seed)
        fit, hold = [], []
        for c in labels.unique():
            idx = (labels == c).nonzero().flatten()
            idx = idx[torch.randperm(len(idx), generator=g)]
            k = int(round(len(idx) * self.options.holdout_fraction))
            k = min(max(k, 1 if len(idx) > 1 else 0), len(idx) - 1)
            hold.append(idx[:k])
            fit.append(idx[k:])
        return torch.cat(fit).sort().values, torch.cat(hold).sort().values

    def _blocks(self, encoder) -> list[int]:
        n = max(self.options.n_last_blocks)
        if n > encoder.info.num_layers:
            raise DataError(f"n_last_blocks={n} but encoder '{encoder.info.spec}' has only "
                            f"{encoder.info.num_layers} blocks")
        return list(range(encoder.info.num_layers - n, encoder.info.num_layers))

    def validate(self, ctx: RunContext) -> dict:
        train, val, _ = self._splits(ctx.data, ctx.encoder.info, ctx.mode)
        images = torch.stack([train[0][0], val[0][0]]).to(ctx.device)
        blocks = self._blocks(ctx.encoder)
        out = ctx.encoder(images, layers=blocks)
        feats = {}
        for b in blocks:
            feats[f"cls.{b}"] = out.layers[b].cls.float().cpu()
            feats[f"avgpool.{b}"] = out.layers[b].patches.float().mean((1, 2)).cpu()
        inputs = [InputConfig(n, a) for n in self.options.n_last_blocks for a in self.options.avgpool]
        dims = {c: ctx.encoder.info.embed_dim * (c.n_blocks + int(c.avgpool)) for c in inputs}
        grid = LinearGrid(inputs, self.options.lrs, dims, len(train.classes))
        logits = grid(feats, blocks)
        knn = knn_predict(feats[f"cls.{blocks[-1]}"][:1], train.labels[:1], feats[f"cls.{blocks[-1]}"][1:],
                          len(train.classes), ks=(1,))
        return {"train_images": len(train), "val_images": len(val), "classes": len(train.classes),
                "feature_dim": int(out.cls.shape[-1]), "patch_grid": list(out.patches.shape[1:3]),
                "linear_heads": int(logits.shape[0]), "knn_scores": list(knn[1].shape)}

    def run(self, ctx: RunContext) -> SuiteResult:
        o = self.options
        gen = seed_everything(ctx.seed)
        enc = ctx.encoder
        blocks = self._blocks(enc)
        last = blocks[-1]
        train, val, raw_train = self._splits(ctx.data, enc.info, ctx.mode)
        n_classes = len(train.classes)
        kinds = ("cls", "avgpool")
        ftrain = ctx.features(train, blocks, kinds, desc="train features")
        fval = ctx.features(val, blocks, kinds, desc="val features")
        ytrain, yval = train.labels, val.labels
        fit_idx, hold_idx = self._holdout_split(ytrain, ctx.seed)

        def take(feats, idx=None):
            return {name: (feats.tensor(name) if idx is None else feats.tensor(name)[idx])
                    for name in feats.arrays}

        metrics: dict[str, float] = {}
        selection: dict = {}
        details: dict = {"n_train": len(train), "n_val": len(val), "n_classes": n_classes,
                         "n_fit": len(fit_idx), "n_holdout": len(hold_idx), "blocks": blocks}

        if "linear" in ctx.heads:
            inputs = [InputConfig(n, a) for n in o.n_last_blocks for a in o.avgpool]
            dim = enc.info.embed_dim
            dims = {c: dim * (c.n_blocks + int(c.avgpool)) for c in inputs}
            grid = LinearGrid(inputs, o.lrs, dims, n_classes, generator=gen)
            bs = min(o.batch_size, len(fit_idx))
            iters_per_epoch = o.iters_per_epoch or math.ceil(len(fit_idx) / bs)
            total = o.epochs * iters_per_epoch
            fit_feats = take(ftrain, fit_idx)
            fit_y = ytrain[fit_idx]
            if ctx.mode == "fast":
                def batches():
                    perm = torch.randperm(len(fit_y), generator=gen)
                    for s in range(0, len(perm) - bs + 1, bs):
                        sel = perm[s:s + bs]
                        yield {k: v[sel] for k, v in fit_feats.items()}, fit_y[sel]
            else:  # exact: random-resized-crop on the fly, encoder forward per batch (as the paper)
                aug = raw_train.with_transform(train_transform(enc.info, o.image_size), "train-rrc")
                subset = torch.utils.data.Subset(aug, fit_idx.tolist())

                def batches():
                    loader = torch.utils.data.DataLoader(subset, batch_size=bs, shuffle=True, drop_last=True,
                                                         generator=gen, num_workers=ctx.num_workers)
                    for images, y in loader:
                        with torch.no_grad():
                            out = enc(images.to(ctx.device), layers=blocks)
                        feats = {}
                        for b in blocks:
                            feats[f"cls.{b}"] = out.layers[b].cls.float().cpu()
                            feats[f"avgpool.{b}"] = out.layers[b].patches.float().mean((1, 2)).cpu()
                        yield feats, y

            hold_feats, hold_y = take(ftrain, hold_idx), ytrain[hold_idx]

            def on_step(step, loss):
                if step % 50 == 0 or step == total - 1:
                    ctx.log_curve({"lin.train_loss": loss}, step)
                if (step + 1) % iters_per_epoch == 0 and len(hold_y):   # the best head's held-out top-1
                    with torch.no_grad():
                        acc = topk_correct(grid(hold_feats, blocks), hold_y)[1].max()
                    ctx.report_intermediate(float(acc) / len(hold_y) * 100, (step + 1) // iters_per_epoch)

            train_linear_grid(grid, batches, blocks, total, bs, on_step=on_step)
            names = grid.head_names()
            with torch.no_grad():
                hold_logits = grid(take(ftrain, hold_idx), blocks)
                val_logits = grid(take(fval), blocks)
            hold_acc = topk_correct(hold_logits, ytrain[hold_idx])[1].float() / max(1, len(hold_idx)) * 100
            val_acc = topk_correct(val_logits, yval)
            val1 = val_acc[1].float() / len(yval) * 100
            val5 = val_acc[5].float() / len(yval) * 100
            best = int(torch.argmax(hold_acc))  # first best: ties go to the smaller lr / simpler input
            for k, name in enumerate(names):
                metrics[f"{name}.val_top1"] = float(val1[k])
                metrics[f"{name}.holdout_top1"] = float(hold_acc[k])
            metrics["lin.top1"] = float(val1[best])
            metrics["lin.top5"] = float(val5[best])
            metrics["lin.holdout_top1"] = float(hold_acc[best])
            metrics["lin.n_heads"] = float(len(names))
            selection["linear"] = {"head": names[best], "rule": "max top-1 on held-out train",
                                   "holdout_top1": float(hold_acc[best]), "iterations": total}

        if "knn" in ctx.heads:
            T = o.knn_temperature
            tr = ftrain.tensor(f"cls.{last}")
            scores_hold = knn_predict(tr[fit_idx], ytrain[fit_idx], tr[hold_idx], n_classes, o.knn_k, T)
            hold_top1 = {k: float((s.argmax(-1) == ytrain[hold_idx]).float().mean() * 100)
                         for k, s in scores_hold.items()}
            best_k = max(o.knn_k, key=lambda k: (hold_top1[k], -k))
            scores = knn_predict(tr, ytrain, fval.tensor(f"cls.{last}"), n_classes, o.knn_k, T)
            for k, s in scores.items():
                c = topk_correct(s.unsqueeze(0), yval)
                metrics[f"knn.k{k}.top1"] = float(c[1][0]) / len(yval) * 100
                metrics[f"knn.k{k}.top5"] = float(c[5][0]) / len(yval) * 100
            metrics["knn.top1"] = metrics[f"knn.k{best_k}.top1"]
            metrics["knn.top5"] = metrics[f"knn.k{best_k}.top5"]
            selection["knn"] = {"k": best_k, "rule": "max top-1 on held-out train", "T": T}
        return SuiteResult(metrics=metrics, selection=selection, details=details)
