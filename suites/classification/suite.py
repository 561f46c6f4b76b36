"""ImageNet linear probe (DINOv2 grid of 52 heads in one pass) and weighted kNN (paper Table 5)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from harness.config import ConfigError, field
from harness.device import seed_everything
from harness.samples import PerSample
from harness.suite import MetricSpec, RunContext, Suite, SuiteResult, SuiteSpec
from heads.grid import select
from heads.knn import knn_predict
from heads.linear_grid import DINOV2_LRS, InputConfig, LinearGrid, topk_correct, topk_hits, train_linear_grid
from suites.classification.datasets import ImageFolderSplit
from suites.classification.figures import per_class_accuracy
from suites.images import DataError, eval_transform, train_transform


@dataclass(frozen=True)
class ClsOptions:
    epochs: int = field(10, min=1, help="epochs of linear training (DINOv2: 10)")
    iters_per_epoch: int | None = field(None, min=1, help="iterations per epoch; None = one pass over train "
                                                          "(DINOv2 on ImageNet: 1250)")
    batch_size: int = field(256, min=1, help="linear-head batch size; lr is scaled by batch/256")
    lrs: tuple[float, ...] = field(DINOV2_LRS, min=0, min_open=True, nonempty=True,
                                   help="learning-rate grid (one head each)")
    n_last_blocks: tuple[int, ...] = field((1, 4), min=1, nonempty=True,
                                           help="CLS of the last n blocks concatenated")
    avgpool: tuple[bool, ...] = field((False, True), nonempty=True,
                                      help="append the mean patch token of the last block")
    holdout_fraction: float = field(0.1, min=0, max=1, max_open=True,
                                    help="part of train held out to select the head (never val); 0 = none, "
                                         "allowed only when there is nothing to select")
    single_candidate: Literal["skip_holdout", "refit"] = field(
        "skip_holdout", help="linear grid of one head: skip_holdout = train it on all of train (no held-out "
                             "number); refit = train on the fit part, report its held-out top-1 (what a sweep "
                             "optimises), then retrain on all of train for the reported number")
    a6_lr_range: tuple[float, float] = field((1e-4, 0.1), min=0, min_open=True,
                                             help="paper App. A.6 variant, reported as lin_a6.*: the grid's "
                                                  "last-block-CLS heads (n=1, no avgpool) with lr in this range, "
                                                  "selected on held-out train")
    knn_k: tuple[int, ...] = field((10, 20, 100, 200), min=1, nonempty=True, help="kNN neighbourhood sizes")
    knn_temperature: float = field(0.07, min=0, min_open=True, help="kNN vote temperature")
    image_size: int | None = field(None, min=1, help="crop size; None = the encoder's default")

    def __post_init__(self):
        lo, hi = self.a6_lr_range
        if lo > hi:
            raise ConfigError(f"protocol.a6_lr_range={list(self.a6_lr_range)}: the low end exceeds the high end")


class ClassificationSuite(Suite):
    spec = SuiteSpec(
        name="cls.imagenet", version="2", task="classification", heads=("linear", "knn"),
        default_head="linear,knn",
        metrics=(MetricSpec("lin.top1", "max", "selected linear head, val top-1 (%)"),
                 MetricSpec("lin.top5", "max", "selected linear head, val top-5 (%)"),
                 MetricSpec("knn.top1", "max", "kNN val top-1 (%) at the k selected on held-out train"),
                 MetricSpec("knn.top5", "max", "kNN val top-5 (%)"),
                 MetricSpec("lin_a6.top1", "max", "paper App. A.6 variant: last-block CLS heads, lr 1e-4..1e-1, "
                                                  "val top-1 (%)"),
                 MetricSpec("lin_a6.top5", "max", "paper App. A.6 variant, val top-5 (%)")),
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
        """CPU sizes. ``default``: 112 px crops (the world's object crops are mostly smaller; a quarter of
        224 px's encoder cost), batch 64 x 20 epochs = 120 steps: the held-out top-1 of DINOv2-S's best
        head plateaus after ~6 epochs (learning curve in suites/classification/README.md)."""
        if preset == "tiny":
            return {"epochs": 3}
        return {"image_size": 112, "epochs": 20, "batch_size": 64}

    @classmethod
    def search_space(cls):
        return {"holdout_fraction": ("grid", [0.1, 0.2])}

    def _holdout_split(self, labels: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Stratified: a fraction of every class (at least one when the class has two) is held out;
        ``holdout_fraction=0`` holds out nothing."""
        if self.options.holdout_fraction == 0:
            return torch.arange(len(labels)), torch.zeros(0, dtype=torch.long)
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

    def _inputs(self) -> list[InputConfig]:
        return [InputConfig(n, a) for n in self.options.n_last_blocks for a in self.options.avgpool]

    def _check_selection(self, heads) -> None:
        """Before any work: a hold-out of 0 is only allowed when no head has candidates to choose from."""
        o = self.options
        if o.holdout_fraction > 0:
            return
        n_lin = len(self._inputs()) * len(o.lrs)
        if "linear" in heads and (n_lin > 1 or o.single_candidate == "refit"):
            raise ConfigError(f"protocol.holdout_fraction=0 leaves no held-out data to select among {n_lin} "
                              "linear heads (or to score the refit option); use a fraction in (0, 1)")
        if "knn" in heads and len(o.knn_k) > 1:
            raise ConfigError(f"protocol.holdout_fraction=0 leaves no held-out data to select among kNN "
                              f"k={list(o.knn_k)}; use a fraction in (0, 1) or a single k")

    @staticmethod
    def majority_floor(train_labels: torch.Tensor, val_labels: torch.Tensor, n_classes: int,
                       ks=(1, 5)) -> dict[int, torch.Tensor]:
        """The trivial predictor: the training set's class frequencies as the same logits for every image.
        -> {k: bool [n_val]} (label among the k most frequent training classes; ties: lower class index)."""
        counts = torch.bincount(train_labels, minlength=n_classes).double()
        # a strictly decreasing tie-break keeps topk deterministic: the lower index wins a tie
        logits = counts - torch.arange(n_classes, dtype=torch.float64) / (2 * n_classes)
        return {k: h[0] for k, h in topk_hits(logits.expand(1, len(val_labels), n_classes), val_labels, ks).items()}

    def _blocks(self, encoder) -> list[int]:
        n = max(self.options.n_last_blocks)
        if n > encoder.info.num_layers:
            raise DataError(f"n_last_blocks={n} but encoder '{encoder.info.spec}' has only "
                            f"{encoder.info.num_layers} blocks")
        return list(range(encoder.info.num_layers - n, encoder.info.num_layers))

    def validate(self, ctx: RunContext) -> dict:
        self._check_selection(ctx.heads)
        train, val, _ = self._splits(ctx.data, ctx.encoder.info, ctx.mode)
        images = torch.stack([train[0][0], val[0][0]]).to(ctx.device)
        blocks = self._blocks(ctx.encoder)
        out = ctx.encoder(images, layers=blocks)
        feats = {}
        for b in blocks:
            feats[f"cls.{b}"] = out.layers[b].cls.float().cpu()
            feats[f"avgpool.{b}"] = out.layers[b].patches.float().mean((1, 2)).cpu()
        inputs = self._inputs()
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
        self._check_selection(ctx.heads)
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
        val_ids = [smp.rel for smp in val.samples]
        everything, nothing = torch.arange(len(ytrain)), torch.zeros(0, dtype=torch.long)

        def take(feats, idx=None):
            return {name: (feats.tensor(name) if idx is None else feats.tensor(name)[idx])
                    for name in feats.arrays}

        metrics: dict[str, float] = {}
        selection: dict = {}
        per_sample: dict[str, PerSample] = {}
        details: dict = {"n_train": len(train), "n_val": len(val), "n_classes": n_classes,
                         "n_fit": len(fit_idx), "n_holdout": len(hold_idx), "blocks": blocks}

        figure_hits = None   # (head, chosen candidate, per-image correctness) of the primary head

        def correct(name: str, hits: torch.Tensor) -> None:
            """Report ``name`` (percent) and its per-image correctness, keyed by the val image's path."""
            h = hits.double().numpy()
            metrics[name] = float(h.sum()) * 100 / len(h)     # the same arithmetic as the per-head numbers
            per_sample[name] = PerSample(val_ids, h, reduce="mean", scale=100.0, columns=("correct",))

        # the floor: always predict the training set's majority class (top-5: its 5 most frequent)
        floor = self.majority_floor(ytrain, yval, n_classes)
        correct("floor.top1", floor[1])
        correct("floor.top5", floor[5])
        details["floor"] = {"rule": "majority class of train (top-5: the 5 most frequent)",
                            "class": train.classes[int(torch.bincount(ytrain, minlength=n_classes).argmax())]}

        if "linear" in ctx.heads:
            inputs = self._inputs()
            names = [f"lin.{c.name}.lr{lr:g}" for c in inputs for lr in o.lrs]
            single = len(names) == 1
            if single and o.single_candidate == "skip_holdout":
                # nothing to select: the one head trains on all of train, as DINOv2 does without a grid
                grid = self._train_grid(ctx, inputs, gen, everything, nothing, ftrain, raw_train, blocks, ytrain)
                hold_acc, n_trained = None, len(ytrain)
                how = "skipped: one candidate, trained on all of train"
            else:
                grid = self._train_grid(ctx, inputs, gen, fit_idx, hold_idx, ftrain, raw_train, blocks, ytrain)
                with torch.no_grad():
                    hold_logits = grid(take(ftrain, hold_idx), blocks)
                hold_acc = topk_correct(hold_logits, ytrain[hold_idx])[1].float() / max(1, len(hold_idx)) * 100
                how, n_trained = f"{len(hold_idx)} held-out train images ({o.holdout_fraction:g})", len(fit_idx)
                if single:   # refit: the held-out number is measured, the reported head sees all of train
                    grid = self._train_grid(ctx, inputs, gen, everything, nothing, ftrain, raw_train, blocks,
                                            ytrain, curve_prefix="lin.refit")
                    how, n_trained = how + "; then refit on all of train", len(ytrain)
            with torch.no_grad():
                val_logits = grid(take(fval), blocks)
            hits = topk_hits(val_logits, yval)
            for kk, name in enumerate(names):
                metrics[f"{name}.val_top1"] = float(hits[1][kk].double().sum()) * 100 / len(yval)
                if hold_acc is not None:
                    metrics[f"{name}.holdout_top1"] = float(hold_acc[kk])
            # first best: ties go to the smaller lr / simpler input
            best = select(hold_acc, "max") if hold_acc is not None else 0
            correct("lin.top1", hits[1][best])
            figure_hits = ("lin", names[best], hits[1][best])
            correct("lin.top5", hits[5][best])
            if hold_acc is not None:
                metrics["lin.holdout_top1"] = float(hold_acc[best])
            metrics["lin.n_heads"] = float(len(names))
            selection["linear"] = {"head": names[best], "rule": "max top-1 on held-out train", "holdout": how,
                                   "holdout_top1": None if hold_acc is None else float(hold_acc[best]),
                                   "trained_on": n_trained, "iterations": self._iterations(n_trained)}

            # paper App. A.6: last-block CLS only, lr grid 1e-4..1e-1 (a subset of the 52 heads, same pass)
            lo, hi = o.a6_lr_range
            a6 = [kk for kk, (c, lr) in enumerate((c, lr) for c in inputs for lr in o.lrs)
                  if c.n_blocks == 1 and not c.avgpool and lo * (1 - 1e-9) <= lr <= hi * (1 + 1e-9)]
            if a6:
                b6 = a6[select(hold_acc[a6], "max")] if hold_acc is not None else a6[0]
                correct("lin_a6.top1", hits[1][b6])
                correct("lin_a6.top5", hits[5][b6])
                if hold_acc is not None:
                    metrics["lin_a6.holdout_top1"] = float(hold_acc[b6])
                selection["linear_a6"] = {"head": names[b6], "rule": "max top-1 on held-out train among "
                                          f"last-block CLS heads with lr in [{lo:g}, {hi:g}] (paper App. A.6)",
                                          "candidates": len(a6)}
            else:
                details["linear_a6"] = (f"not reported: the grid has no last-block CLS head (n_last_blocks 1, "
                                        f"avgpool false) with lr in [{lo:g}, {hi:g}]")

        if "knn" in ctx.heads:
            T = o.knn_temperature
            tr = ftrain.tensor(f"cls.{last}")
            if len(o.knn_k) > 1:
                scores_hold = knn_predict(tr[fit_idx], ytrain[fit_idx], tr[hold_idx], n_classes, o.knn_k, T)
                hold_top1 = {k: float((s.argmax(-1) == ytrain[hold_idx]).float().mean() * 100)
                             for k, s in scores_hold.items()}
                best_k = max(o.knn_k, key=lambda k: (hold_top1[k], -k))
                rule = "max top-1 on held-out train"
            else:
                best_k, rule = o.knn_k[0], "one k: nothing to select (no hold-out)"
            scores = knn_predict(tr, ytrain, fval.tensor(f"cls.{last}"), n_classes, o.knn_k, T)
            for k, s in scores.items():
                c = topk_correct(s.unsqueeze(0), yval)
                metrics[f"knn.k{k}.top1"] = float(c[1][0]) / len(yval) * 100
                metrics[f"knn.k{k}.top5"] = float(c[5][0]) / len(yval) * 100
            kh = topk_hits(scores[best_k].unsqueeze(0), yval)
            correct("knn.top1", kh[1][0])
            if figure_hits is None:
                figure_hits = ("knn", f"k={best_k}", kh[1][0])
            correct("knn.top5", kh[5][0])
            selection["knn"] = {"k": best_k, "rule": rule, "T": T}
        figures = {}
        if figure_hits is not None:
            head, label, h = figure_hits
            figures["per_class_top1"] = per_class_accuracy(
                h.numpy(), yval.numpy(), list(train.classes),
                f"{head} ({label}) per-class val top-1, {enc.info.spec}")
        return SuiteResult(metrics=metrics, selection=selection, details=details, per_sample=per_sample,
                           figures=figures)

    def _iterations(self, n_fit: int) -> int:
        o = self.options
        bs = min(o.batch_size, n_fit)
        return o.epochs * (o.iters_per_epoch or math.ceil(n_fit / bs))

    def _train_grid(self, ctx: RunContext, inputs, gen, fit_idx, hold_idx, ftrain, raw_train, blocks, ytrain,
                    curve_prefix: str = "lin") -> LinearGrid:
        """Train every (input x lr) head on the ``fit_idx`` images; log the loss and, after each epoch, the
        best head's held-out top-1 (the learning curve; sweeps prune on it)."""
        o = self.options
        enc = ctx.encoder
        dim = enc.info.embed_dim
        dims = {c: dim * (c.n_blocks + int(c.avgpool)) for c in inputs}
        grid = LinearGrid(inputs, o.lrs, dims, len(raw_train.classes), generator=gen)
        bs = min(o.batch_size, len(fit_idx))
        iters_per_epoch = o.iters_per_epoch or math.ceil(len(fit_idx) / bs)
        total = o.epochs * iters_per_epoch
        fit_feats = {name: ftrain.tensor(name)[fit_idx] for name in ftrain.arrays}
        fit_y = ytrain[fit_idx]
        if ctx.mode == "fast":
            def batches():
                perm = torch.randperm(len(fit_y), generator=gen)
                for s in range(0, len(perm) - bs + 1, bs):
                    sel = perm[s:s + bs]
                    yield {k: v[sel] for k, v in fit_feats.items()}, fit_y[sel]
        else:  # exact: random-resized-crop + flip on the fly, encoder forward per batch (as the paper)
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

        hold_feats = {name: ftrain.tensor(name)[hold_idx] for name in ftrain.arrays}
        hold_y = ytrain[hold_idx]

        def on_step(step, loss):
            if step % 50 == 0 or step == total - 1:
                ctx.log_curve({f"{curve_prefix}.train_loss": loss}, step)
            if (step + 1) % iters_per_epoch == 0 and len(hold_y):   # the best head's held-out top-1
                with torch.no_grad():
                    acc = float(topk_correct(grid(hold_feats, blocks), hold_y)[1].max()) / len(hold_y) * 100
                epoch = (step + 1) // iters_per_epoch
                ctx.log_curve({f"{curve_prefix}.holdout_top1_curve": acc}, epoch)
                ctx.report_intermediate(acc, epoch)

        train_linear_grid(grid, batches, blocks, total, bs, on_step=on_step)
        return grid
