"""Slide inference, multi-scale + flip test-time augmentation, and mIoU through mmseg's ``IoUMetric``.

One loop serves every head trained in the same pass: each window goes through the encoder once, then
through all K heads. For one head and one scale it computes exactly what mmseg's
``EncoderDecoder.predict`` does with ``test_cfg=dict(mode='slide')`` (windows, per-window logits resized
to the window, averaged where windows overlap, resized to the original image, argmax); a test checks
it against mmseg. With several scales / flip it averages the per-head softmax probabilities at the
original size, as mmseg's ``aug_test`` (0.x, used by DINOv2) and ``SegTTAModel`` (1.x) do.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from suites.segmentation.datasets import SegSplit
from suites.segmentation.protocol import HeadGeometry, load_pipeline, window_boxes
from suites.segmentation.windows import normalize_bgr


class SegIoU:
    """mmengine's two-step pattern: ``process`` per image through mmseg's ``IoUMetric``, ``compute`` at the
    end from float64 area sums through ``IoUMetric.total_area_to_metrics`` (unrounded; mmseg's own
    ``compute_metrics`` rounds to 2 decimals). mIoU = nanmean over classes of TP/(TP+FP+FN): a class absent
    from both prediction and ground truth is NaN and left out; mAcc likewise over classes present in GT."""

    def __init__(self, num_classes: int, class_names: Sequence[str] | None = None, ignore_index: int = 255):
        from suites.segmentation.mmseg_compat import import_mmseg
        ns = import_mmseg()
        self.num_classes = num_classes
        self.metric = ns.IoUMetric(iou_metrics=["mIoU"], ignore_index=ignore_index, prefix="seg")
        self.metric.dataset_meta = {"classes": tuple(class_names or [str(i) for i in range(num_classes)])}

    def process(self, pred: torch.Tensor, label: torch.Tensor) -> None:
        """pred, label: [H, W] integer maps of the same size (label may hold the ignore index)."""
        self.metric.process({}, [{"pred_sem_seg": {"data": pred[None]},
                                  "gt_sem_seg": {"data": label[None].to(pred.device)}}])

    def totals(self) -> tuple[torch.Tensor, ...]:
        """Summed (intersection, union, predicted, labelled) areas per class, float64."""
        if not self.metric.results:
            raise ValueError("no image was processed")
        return tuple(torch.stack([r[i].double() for r in self.metric.results]).sum(0) for i in range(4))

    def per_image(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-image (intersection, union, labelled) areas, each [N, C] float64, in processing order:
        the rows the paired bootstrap resamples (``miou`` / ``ratio`` reducers of harness.samples)."""
        if not self.metric.results:
            raise ValueError("no image was processed")
        return tuple(torch.stack([r[i].double() for r in self.metric.results]).numpy() for i in (0, 1, 3))

    def compute(self) -> dict:
        inter, union, pred, label = self.totals()
        ret = self.metric.total_area_to_metrics(inter, union, pred, label, ["mIoU"])
        iou, acc = np.asarray(ret["IoU"], float), np.asarray(ret["Acc"], float)
        return {"mIoU": float(np.nanmean(iou) * 100), "aAcc": float(ret["aAcc"] * 100),
                "mAcc": float(np.nanmean(acc) * 100), "IoU": [None if np.isnan(v) else float(v * 100) for v in iou],
                "n_images": len(self.metric.results)}


@torch.no_grad()
def window_inputs(model, x: torch.Tensor, boxes, window_batch: int) -> list[torch.Tensor]:
    """Normalised head inputs (BN in eval mode) of every window, computed in batches of windows."""
    head = model.decode_head
    out = []
    for s in range(0, len(boxes), window_batch):
        crops = torch.cat([x[:, :, y1:y2, x1:x2] for y1, y2, x1, x2 in boxes[s:s + window_batch]], 0)
        out.append(head.heads.normalize(head.features(model.backbone(crops))))
    return out


@torch.no_grad()
def slide_logits(model, xhat: list[torch.Tensor], boxes, size: tuple[int, int], heads: Sequence[int],
                 window_batch: int) -> torch.Tensor:
    """Heads ``heads`` over all windows -> [1, len(heads)*C, H, W] logits averaged where windows overlap."""
    hd = model.decode_head
    c = hd.num_classes
    h, w = size
    first = xhat[0]
    preds = first.new_zeros((1, len(heads) * c, h, w))
    count = first.new_zeros((1, 1, h, w))
    for s, chunk in zip(range(0, len(boxes), window_batch), xhat):
        logits = torch.cat([hd.heads.project(chunk, k) for k in heads], 1)
        y1, y2, x1, x2 = boxes[s]
        logits = F.interpolate(logits, size=(y2 - y1, x2 - x1), mode="bilinear", align_corners=hd.align_corners)
        for j, (y1, y2, x1, x2) in enumerate(boxes[s:s + window_batch]):
            preds[:, :, y1:y2, x1:x2] += logits[j:j + 1]
            count[:, :, y1:y2, x1:x2] += 1
    return preds / count


@torch.no_grad()
def predict_image(model, img: np.ndarray, geo: HeadGeometry, info, window_batch: int = 16,
                  max_bytes: int = 2 << 30) -> torch.Tensor:
    """HWC uint8 BGR image at its original size -> predictions [K, H0, W0] (long) of all K heads."""
    import mmcv
    hd = model.decode_head
    k_all, c = hd.num_heads, hd.num_classes
    device = next(hd.parameters()).device
    h0, w0 = img.shape[:2]
    n_aug = geo.n_augs
    acc = None if n_aug == 1 else torch.zeros((k_all, c, h0, w0), device=device)
    preds = None
    for scale in geo.test_scales():
        resized = mmcv.imrescale(img, scale, interpolation="bilinear", backend="cv2")
        x = normalize_bgr(resized, info.mean, info.std).unsqueeze(0).to(device)
        hr, wr = x.shape[-2:]
        boxes = window_boxes(hr, wr, geo.crop, geo.stride)
        chunk = max(1, int(max_bytes // (c * hr * wr * 4)))
        for flip in ((False, True) if geo.flip else (False,)):
            xhat = window_inputs(model, x.flip(-1) if flip else x, boxes, window_batch)
            for k0 in range(0, k_all, chunk):
                ks = list(range(k0, min(k_all, k0 + chunk)))
                logits = slide_logits(model, xhat, boxes, (hr, wr), ks, window_batch)
                if flip:
                    logits = logits.flip(-1)
                logits = F.interpolate(logits, size=(h0, w0), mode="bilinear", align_corners=hd.align_corners)
                logits = logits.view(len(ks), c, h0, w0)
                if acc is None:
                    preds = logits.argmax(1) if preds is None else torch.cat([preds, logits.argmax(1)])
                else:
                    acc[ks[0]:ks[-1] + 1] += logits.softmax(1)
    return acc.argmax(1) if acc is not None else preds


def score(split: SegSplit, indices: Sequence[int] | None, predict, num_heads: int, *, progress: bool = False,
          desc: str = "eval") -> list[dict]:
    """Score any predictor on ``split`` (or a subset) with the suite's metric code: ``predict(results)``
    gets mmseg's loaded results dict (``img`` BGR at its original size, ``gt_seg_map``) and returns
    [num_heads, H, W] class maps. Each head's dict holds mIoU / aAcc / mAcc, per-class IoU, and
    ``ids`` (image paths relative to the dataset root) + ``per_image`` (intersection, union, labelled
    areas [N, C]) for the per-sample statistics."""
    ds = split.build(load_pipeline(split.num_classes, split.dataset), indices=indices, test_mode=True)
    names = ds.metainfo.get("classes")
    metrics = [SegIoU(split.num_classes, names) for _ in range(num_heads)]
    ids = []
    for i in tqdm(range(len(ds)), desc=desc, unit="img", disable=not progress, leave=False):
        res = ds[i]
        ids.append(_relative_id(split, res["img_path"]))
        preds = predict(res)
        label = torch.from_numpy(np.asarray(res["gt_seg_map"], dtype=np.int64))
        for k, m in enumerate(metrics):
            m.process(preds[k].cpu(), label)
    return [{**m.compute(), "ids": ids, "per_image": m.per_image()} for m in metrics]


def _relative_id(split: SegSplit, path: str) -> str:
    """A sample id stable across encoders and machines: the image path relative to the dataset root."""
    from pathlib import Path
    try:
        return Path(path).relative_to(split.root).as_posix()
    except ValueError:
        return Path(path).as_posix()


@torch.no_grad()
def evaluate(model, split: SegSplit, indices: Sequence[int] | None, geo: HeadGeometry, info, *,
             window_batch: int = 16, progress: bool = False, desc: str = "eval") -> list[dict]:
    """mIoU / aAcc / mAcc (+ per-class IoU, per-image areas) of every head of ``model`` on ``split``."""
    model.eval()
    return score(split, indices, lambda res: predict_image(model, res["img"], geo, info, window_batch),
                 model.decode_head.num_heads, progress=progress, desc=desc)


def class_counts(split: SegSplit) -> np.ndarray:
    """Labelled pixels per class over the whole split (ignore pixels and reduce_zero_label applied as in
    training), from the label maps alone: no image is decoded, no encoder runs. (:func:`cell_counts` with one
    cell.)"""
    return cell_counts(split, grid=1).reshape(-1)


@torch.no_grad()
def majority_floor(train: SegSplit, val: SegSplit, indices: Sequence[int] | None, *, counts: np.ndarray | None = None,
                   progress: bool = False) -> tuple[int, dict]:
    """The trivial floor: the majority class of the training labels predicted at every pixel, scored on
    ``val`` by the same code as the heads (ties: the smaller class index). ``counts``: the training split's
    labelled pixels per class when already counted (:func:`cell_counts` summed), else they are counted."""
    counts = class_counts(train) if counts is None else counts
    if counts.sum() == 0:
        raise ValueError(f"the {train.dataset} training split '{train.source}' has no labelled pixel")
    major = int(np.argmax(counts))

    def constant(res):
        h, w = np.asarray(res["gt_seg_map"]).shape[:2]
        return torch.full((1, h, w), major, dtype=torch.int64)

    return major, score(val, indices, constant, 1, progress=progress, desc="floor")[0]


def _cells(n: int, grid: int) -> np.ndarray:
    """The grid cell of each of ``n`` pixel rows (or columns): their centres in normalised image coordinates,
    so images of any size share one prior map."""
    return np.minimum(((np.arange(n) + 0.5) * grid / n).astype(np.int64), grid - 1)


def cell_counts(split: SegSplit, grid: int = 64) -> np.ndarray:
    """[grid, grid, C] labelled pixels per class in each cell of the split's label maps (normalised coordinates;
    ignore pixels left out, reduce_zero_label applied as in training). Summed over cells: :func:`class_counts`."""
    from suites.segmentation.protocol import label_check
    c = split.num_classes
    ds = split.build([dict(type="LoadAnnotations"), label_check(c, split.dataset)], test_mode=True)
    counts = np.zeros(grid * grid * c, np.int64)
    for i in range(len(ds)):
        seg = np.asarray(ds[i]["gt_seg_map"], dtype=np.int64)
        cell = _cells(seg.shape[0], grid)[:, None] * grid + _cells(seg.shape[1], grid)[None, :]
        keep = seg < c
        counts += np.bincount((cell * c + seg)[keep], minlength=grid * grid * c)
    return counts.reshape(grid, grid, c)


def prior_map(split: SegSplit, grid: int = 64, counts: np.ndarray | None = None) -> np.ndarray:
    """[grid, grid] the most frequent class of each cell over the split's label maps (:func:`cell_counts`;
    cells no label reaches take the overall majority class; ties: smaller index)."""
    counts = cell_counts(split, grid) if counts is None else counts
    if counts.sum() == 0:
        raise ValueError(f"the {split.dataset} training split '{split.source}' has no labelled pixel")
    out = counts.argmax(-1)
    out[counts.sum(-1) == 0] = int(np.argmax(counts.sum((0, 1))))
    return out


@torch.no_grad()
def prior_map_floor(train: SegSplit, val: SegSplit, indices: Sequence[int] | None, *, grid: int = 64,
                    counts: np.ndarray | None = None, progress: bool = False) -> tuple[np.ndarray, dict]:
    """The position-prior floor: each pixel gets the class most frequent at its place (normalised coordinates)
    in the training label maps, with no image content; scored on ``val`` by the same code as the heads. A
    camera that sees floor below and walls above makes this floor far stronger than the majority class."""
    prior = prior_map(train, grid, counts)

    def predict(res):
        h, w = np.asarray(res["gt_seg_map"]).shape[:2]
        return torch.from_numpy(prior[_cells(h, grid)[:, None], _cells(w, grid)[None, :]])[None]

    return prior, score(val, indices, predict, 1, progress=progress, desc="floor_map")[0]
