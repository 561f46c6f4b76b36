"""mIoU / aAcc / mAcc through mmseg's IoUMetric against an independent numpy confusion matrix."""
import numpy as np
import pytest
import torch

from suites.segmentation.inference import SegIoU


def _numpy_metrics(preds, labels, c, ignore=255):
    conf = np.zeros((c, c), np.int64)
    for p, l in zip(preds, labels):
        keep = l != ignore
        np.add.at(conf, (l[keep], p[keep]), 1)
    tp = np.diag(conf).astype(float)
    gt, pr = conf.sum(1), conf.sum(0)
    union = gt + pr - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        acc = np.where(gt > 0, tp / gt, np.nan)
    return {"mIoU": np.nanmean(iou) * 100, "aAcc": tp.sum() / gt.sum() * 100, "mAcc": np.nanmean(acc) * 100}, iou


@pytest.mark.parametrize("seed", [0, 1])
def test_miou_matches_numpy_on_random_label_maps(seed):
    rng = np.random.default_rng(seed)
    c = 7
    preds, labels = [], []
    for _ in range(4):
        h, w = rng.integers(5, 30, size=2)
        lab = rng.integers(0, c - 1, size=(h, w))            # class c-1 never in GT
        lab[rng.random((h, w)) < 0.2] = 255                   # ignored pixels
        pred = np.where(rng.random((h, w)) < 0.6, lab, rng.integers(0, c - 2, size=(h, w)))
        pred[pred == 255] = 0
        preds.append(pred)
        labels.append(lab)
    labels[0][labels[0] == 2] = 0                              # make class 2 rarer
    m = SegIoU(c)
    for p, l in zip(preds, labels):
        m.process(torch.from_numpy(p), torch.from_numpy(l))
    got = m.compute()
    ref, iou = _numpy_metrics(preds, labels, c)
    for k in ("mIoU", "aAcc", "mAcc"):
        assert got[k] == pytest.approx(ref[k], rel=1e-9, abs=1e-9)
    # class c-1: absent from GT and predictions -> NaN, left out of the mean (mmseg semantics)
    assert got["IoU"][c - 1] is None and np.isnan(iou[c - 1])


def test_class_predicted_but_absent_counts_as_zero():
    m = SegIoU(3)
    lab = torch.tensor([[0, 0], [1, 255]])
    m.process(torch.tensor([[0, 2], [1, 1]]), lab)
    got = m.compute()
    assert got["IoU"] == [50.0, 100.0, 0.0]
    assert got["mIoU"] == pytest.approx(50.0) and got["aAcc"] == pytest.approx(200 / 3)
    with pytest.raises(ValueError, match="no image"):
        SegIoU(3).compute()
