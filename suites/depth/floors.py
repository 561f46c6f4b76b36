"""Encoder-independent reference rows of the depth suites (a mixin of the suites, ``suite.py``)."""
from __future__ import annotations

import numpy as np
import torch

from suites.depth.metrics import METRICS
from suites.images import DataError


class DepthFloors:
    def _floors(self, d, train_ok: np.ndarray, test_idx: np.ndarray, metrics, per_sample, details) -> None:
        """Encoder-independent reference rows, scored on the test split with the same metric code:
        ``floor.*`` = the mean training depth everywhere (over the valid pixels of the training frames),
        ``floor_map.*`` = the per-pixel mean training depth map (pixels never valid in train take the
        global mean), resized bilinearly to each test frame as any prediction is. At most ``floor_frames``
        evenly spaced training frames are read."""
        o = self.options
        idx = np.flatnonzero(train_ok)
        if len(idx) > o.floor_frames:
            idx = idx[np.unique(np.linspace(0, len(idx) - 1, o.floor_frames).round().astype(np.int64))]
        ref = d.native_hw
        total, count = 0.0, 0
        msum = np.zeros(ref, dtype=np.float64)
        mcnt = np.zeros(ref, dtype=np.float64)
        for i in idx:
            gt = d.train.gt(int(i))
            valid = (gt > o.min_depth) & (gt < o.max_depth) & d.train.train_mask(gt.shape)
            total += float(gt[valid].sum(dtype=np.float64))
            count += int(valid.sum())
            if gt.shape != ref:
                import torch.nn.functional as F
                gt = F.interpolate(torch.from_numpy(gt)[None, None], size=ref, mode="nearest")[0, 0].numpy()
                valid = F.interpolate(torch.from_numpy(valid)[None, None].float(), size=ref,
                                      mode="nearest")[0, 0].numpy() > 0.5
            msum += np.where(valid, gt, 0.0)
            mcnt += valid
        if count == 0:
            raise DataError(f"'{d.train.listing}' has no valid training depth pixel in "
                            f"({o.min_depth}, {o.max_depth}) m")
        mean = total / count
        fmap = torch.from_numpy(np.where(mcnt > 0, msum / np.maximum(mcnt, 1), mean).astype(np.float32))

        def predict(sel):
            const = torch.full((len(sel), *ref), mean, dtype=torch.float32)
            return torch.stack([const, fmap.expand(len(sel), *ref)])

        res = self._evaluate(predict, d.test, test_idx, o.eval_batch_size)
        vals = res.compute()
        for row, prefix in enumerate(("floor", "floor_map")):
            for m in METRICS:
                metrics[f"{prefix}.{m}"] = float(vals[m][row])
            per_sample.update(self._per_sample(d.test, res, row, prefix))
        details["floor"] = {"train_mean_depth_m": round(mean, 6), "train_frames_read": int(len(idx)),
                            "map_hw": list(ref), "rule": "floor = train mean depth everywhere; floor_map = "
                                                         "per-pixel train mean map"}

