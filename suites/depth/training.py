"""Training and scoring of the depth heads on cached features: the linear grid and the DPT head, both
trained by ``heads/grid.py``'s loop (a mixin of the suites, ``suite.py``)."""
from __future__ import annotations

import time

import numpy as np
import torch

from heads.depth import train_depth_grid
from heads.dpt import train_dpt
from heads.grid import select
from suites.depth.metrics import METRICS


class DepthTraining:
    def _run_linear(self, ctx, d, fit, hold, test_idx, gen, metrics, selection, details,
                    per_sample) -> dict[str, float]:
        o = self.options
        enc = ctx.encoder
        blocks = self._linear_blocks(enc)
        ftrain = self._features(ctx, d.train, blocks, "train features")
        ftest = self._features(ctx, d.test, blocks, "test features")
        grid = self._grid(enc.info.embed_dim, generator=gen).to(ctx.device)
        batches = self._batches(ctx, d, ftrain, fit, blocks, gen)
        total = o.iterations
        every = max(1, total // 50)
        val_every = self._val_every(total)
        bar = self._progress(ctx, total, "linear depth heads")
        start = time.perf_counter()
        val_seconds = 0.0

        def predictor(feats):
            def predict(sel):
                pat = {b: torch.from_numpy(np.asarray(feats[f"patches.{b}"][sel], dtype=np.float32)).to(ctx.device)
                       for b in blocks}
                cl = {b: torch.from_numpy(np.asarray(feats[f"cls.{b}"][sel], dtype=np.float32)).to(ctx.device)
                      for b in blocks}
                return grid(pat, cl, blocks, chunk=o.head_chunk)
            return predict

        def on_step(step, losses):
            nonlocal val_seconds
            if step % every == 0 or step == total - 1:
                finite = losses[torch.isfinite(losses)]
                ctx.log_curve({"lin.train_loss": float(finite.mean()) if len(finite) else float("nan"),
                               "lin.train_loss_min": float(finite.min()) if len(finite) else float("nan")}, step)
            if val_every and ((step + 1) % val_every == 0 and step + 1 < total):
                t = time.perf_counter()
                v = np.asarray(self._evaluate(predictor(ftrain), d.train, hold, o.eval_batch_size).compute()["rmse"],
                               dtype=np.float64).reshape(-1)
                ctx.log_curve({"lin.val_rmse_best": float(np.nanmin(v)), "lin.val_rmse_mean": float(np.nanmean(v))},
                              step + 1)
                val_seconds += time.perf_counter() - t
            if bar is not None:
                bar.update(1)

        train_depth_grid(grid, batches, blocks, total, self._loss(), chunk=o.head_chunk, on_step=on_step,
                         device=ctx.device)
        if bar is not None:
            bar.close()
        details["linear_train_seconds"] = round(time.perf_counter() - start - val_seconds, 3)
        details["linear_curve_seconds"] = round(val_seconds, 3)

        val = self._evaluate(predictor(ftrain), d.train, hold, o.eval_batch_size).compute()
        test_metric = self._evaluate(predictor(ftest), d.test, test_idx, o.eval_batch_size)
        test = test_metric.compute()
        names = grid.head_names()
        val_rmse = np.nan_to_num(np.asarray(val["rmse"], dtype=np.float64), nan=np.inf)
        ctx.log_curve({"lin.val_rmse_best": float(val_rmse.min()),
                       "lin.val_rmse_mean": float(np.nanmean(np.asarray(val["rmse"], dtype=np.float64)))}, total)
        best = select(val["rmse"], "min")   # first best: ties go to the smaller lr / simpler input
        for k, name in enumerate(names):
            metrics[f"{name}.val_rmse"] = float(val["rmse"][k])
            metrics[f"{name}.test_rmse"] = float(test["rmse"][k])
        out = {m: float(test[m][best]) for m in METRICS}
        out["val.rmse"] = float(val["rmse"][best])
        for m, v in out.items():
            metrics[f"lin.{m}" if m != "val.rmse" else "lin.val_rmse"] = v
        metrics["lin.n_heads"] = float(len(names))
        per_sample.update(self._per_sample(d.test, test_metric, best, "lin"))
        details["linear_images_without_valid_pixels"] = {"val": val["n_skipped"], "test": test["n_skipped"]}
        selection["linear"] = {"head": names[best], "rule": "min rmse on the part of train held out",
                               "val_rmse": out["val.rmse"], "iterations": o.iterations, "blocks": blocks,
                               "n_holdout": int(len(hold))}
        test_predict = predictor(ftest)
        out["predict"] = lambda sel: test_predict(sel)[best:best + 1]   # the figure's: the selected head
        return out

    def _run_dpt(self, ctx, d, fit, hold, test_idx, gen, metrics, selection, details,
                 per_sample) -> dict[str, float]:
        o = self.options
        enc = ctx.encoder
        blocks = self._dpt_blocks(enc)
        ftrain = self._features(ctx, d.train, blocks, "train features (dpt)")
        ftest = self._features(ctx, d.test, blocks, "test features (dpt)")
        with torch.random.fork_rng(devices=[]):   # its init must not depend on the global RNG's history
            torch.manual_seed(ctx.seed)              # (a feature-cache miss runs DataLoaders that advance it)
            head = self._dpt(enc.info.embed_dim)
        head = head.to(ctx.device)
        total = o.dpt_iterations
        batches = self._batches(ctx, d, ftrain, fit, blocks, gen)
        every = max(1, total // 50)
        bar = self._progress(ctx, total, "dpt depth head")
        start = time.perf_counter()
        val_every = self._val_every(total)
        val_seconds = 0.0

        def predictor(feats):
            def predict(sel):
                pat = [torch.from_numpy(np.asarray(feats[f"patches.{b}"][sel], dtype=np.float32)).to(ctx.device)
                       for b in blocks]
                cl = [torch.from_numpy(np.asarray(feats[f"cls.{b}"][sel], dtype=np.float32)).to(ctx.device)
                      for b in blocks]
                return head(pat, cl)[None]
            return predict

        def on_step(step, loss, lr_now):
            nonlocal val_seconds
            if step % every == 0 or step == total - 1:
                ctx.log_curve({"dpt.train_loss": loss, "dpt.lr": lr_now}, step)
            if val_every and ((step + 1) % val_every == 0 and step + 1 < total):
                t = time.perf_counter()
                head.eval()
                v = self._evaluate(predictor(ftrain), d.train, hold, o.eval_batch_size).compute()["rmse"]
                ctx.log_curve({"dpt.val_rmse_curve": float(np.asarray(v).reshape(-1)[0])}, step + 1)
                head.train()
                val_seconds += time.perf_counter() - t
            if bar is not None:
                bar.update(1)

        train_dpt(head, batches, blocks, total, self._loss(), lr=o.dpt_lr, warmup=o.dpt_warmup,
                  weight_decay=o.dpt_weight_decay, grad_clip=o.dpt_grad_clip, on_step=on_step, device=ctx.device)
        if bar is not None:
            bar.close()
        details["dpt_train_seconds"] = round(time.perf_counter() - start - val_seconds, 3)
        details["dpt_curve_seconds"] = round(val_seconds, 3)
        head.eval()

        val = self._evaluate(predictor(ftrain), d.train, hold, o.eval_batch_size).compute()
        test_metric = self._evaluate(predictor(ftest), d.test, test_idx, o.eval_batch_size)
        test = test_metric.compute()
        per_sample.update(self._per_sample(d.test, test_metric, 0, "dpt"))
        out = {m: float(np.asarray(test[m]).reshape(-1)[0]) for m in METRICS}
        out["val.rmse"] = float(np.asarray(val["rmse"]).reshape(-1)[0])
        ctx.log_curve({"dpt.val_rmse_curve": out["val.rmse"]}, total)
        for m, v in out.items():
            metrics[f"dpt.{m}" if m != "val.rmse" else "dpt.val_rmse"] = v
        details["dpt_images_without_valid_pixels"] = {"val": val["n_skipped"], "test": test["n_skipped"]}
        selection["dpt"] = {"lr": o.dpt_lr, "blocks": blocks, "channels": o.dpt_channels,
                            "val_rmse": out["val.rmse"], "iterations": total, "warmup": o.dpt_warmup,
                            "params": sum(p.numel() for p in head.parameters())}
        out["predict"] = predictor(ftest)      # the figure's predictions (one head: row 0)
        return out


