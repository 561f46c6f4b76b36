"""The segmentation protocol as mmseg configs: per-head geometry, pipelines and the segmentor ConfigDict.

Linear (DINOv2 ``*_linear_config``): last layer; train = RandomResize(scale (4s, s), ratio 0.5-2.0) ->
RandomCrop(c, cat_max_ratio 0.75) -> flip -> PhotoMetricDistortion; test = Resize(4s, s) + slide c/stride.
+ms (DINOv2 ``*_ms_config``): last 4 layers resize-concatenated; 640 crops, ratio 1.0-3.0; test at scales
s * [1.0, 1.32, 1.73, 2.28, 3.0] with horizontal flip, softmax probabilities averaged at the original size.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class HeadGeometry:
    name: str                           # "linear" | "ms"
    layers: tuple[int, ...]             # encoder blocks (negative = from the end), head input order
    crop: int
    stride: int
    scale: int                          # short side of the test resize (long side <= 4x, mmseg's (2048, 512))
    ratio_range: tuple[float, float]    # RandomResize ratio range at training
    test_ratios: tuple[float, ...]      # multi-scale test (1.0 = single scale)
    flip: bool                          # test-time horizontal flip

    @property
    def scale_wh(self) -> tuple[int, int]:
        return (4 * self.scale, self.scale)

    def test_scales(self) -> list[tuple[int, int]]:
        """mmseg 0.x MultiScaleFlipAug (DINOv2): (int(L*r), int(S*r)) per ratio."""
        long, short = self.scale_wh
        return [(int(long * r), int(short * r)) for r in self.test_ratios]

    @property
    def n_augs(self) -> int:
        return len(self.test_ratios) * (2 if self.flip else 1)

    def transform_id(self) -> str:
        """The windows' identity (not the head's): linear and +ms heads with the same windows share one
        feature cache entry; the layers are part of the cache key."""
        return f"seg-s{self.scale}-c{self.crop}-st{self.stride}"


def label_check(num_classes: int, dataset: str) -> dict:
    return dict(type="CheckSegLabels", num_classes=num_classes, ignore_index=255, dataset=dataset)


def train_pipeline(geo: HeadGeometry, num_classes: int, dataset: str, cat_max_ratio: float = 0.75,
                   photometric: bool = True) -> list[dict]:
    pipe = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"), label_check(num_classes, dataset),
            dict(type="RandomResize", scale=geo.scale_wh, ratio_range=tuple(geo.ratio_range), keep_ratio=True),
            dict(type="RandomCrop", crop_size=(geo.crop, geo.crop), cat_max_ratio=cat_max_ratio),
            dict(type="RandomFlip", prob=0.5)]
    if photometric:
        pipe.append(dict(type="PhotoMetricDistortion"))
    pipe.append(dict(type="PackSegInputs"))
    return pipe


def eval_pipeline(geo: HeadGeometry, num_classes: int, dataset: str) -> list[dict]:
    """mmseg 1.x single-scale test pipeline (annotations loaded after Resize: GT stays at full size)."""
    return [dict(type="LoadImageFromFile"), dict(type="Resize", scale=geo.scale_wh, keep_ratio=True),
            dict(type="LoadAnnotations"), label_check(num_classes, dataset), dict(type="PackSegInputs")]


def load_pipeline(num_classes: int, dataset: str, resize: tuple[int, int] | None = None) -> list[dict]:
    """Image + checked labels as a results dict (our own slide / multi-scale loop resizes itself)."""
    pipe = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"), label_check(num_classes, dataset)]
    if resize is not None:
        pipe.append(dict(type="Resize", scale=resize, keep_ratio=True))
    return pipe


def segmentor_config(encoder_key: str, encoder_info, geo: HeadGeometry, num_classes: int, num_heads: int = 1,
                     precision: str = "fp32", seed: int | None = None):
    """``EncoderDecoder`` (frozen ``HarnessEncoder`` backbone + DINOv2 ``BNHead``) as an mmengine ConfigDict."""
    from suites.segmentation.mmseg_compat import import_mmseg
    ns = import_mmseg()
    d, n = encoder_info.embed_dim, len(geo.layers)
    head = dict(type="BNHead", num_heads=num_heads, seed=seed, num_classes=num_classes, dropout_ratio=0.0,
                align_corners=False, ignore_index=255,
                loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0))
    if n == 1:
        head.update(in_channels=d, channels=d, in_index=0)
    else:
        head.update(in_channels=[d] * n, channels=d * n, in_index=list(range(n)), input_transform="resize_concat")
    return ns.ConfigDict(
        type="EncoderDecoder",
        data_preprocessor=dict(type="SegDataPreProcessor", mean=[m * 255 for m in encoder_info.mean],
                               std=[s * 255 for s in encoder_info.std], bgr_to_rgb=True, pad_val=0,
                               seg_pad_val=255, size=(geo.crop, geo.crop)),
        backbone=dict(type="HarnessEncoder", encoder_key=encoder_key, layers=list(geo.layers), precision=precision),
        decode_head=head,
        train_cfg=dict(),
        test_cfg=dict(mode="slide", crop_size=(geo.crop, geo.crop), stride=(geo.stride, geo.stride)))


def build_segmentor(encoder, geo: HeadGeometry, num_classes: int, num_heads: int = 1, precision: str = "fp32",
                    seed: int | None = None):
    import warnings

    from suites.segmentation.mmseg_compat import import_mmseg, register_encoder
    ns = import_mmseg()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*avg_non_ignore.*")   # DINOv2 averages over all pixels
        warnings.filterwarnings("ignore", message=".*build_loss.*")
        return ns.MODELS.build(segmentor_config(register_encoder(encoder), encoder.info, geo, num_classes,
                                                num_heads, precision, seed))


def window_boxes(h: int, w: int, crop: int, stride: int) -> list[tuple[int, int, int, int]]:
    """mmseg ``slide_inference`` windows (y1, y2, x1, x2), rows outer; windows shrink to the image when it
    is smaller than the crop."""
    hg = max(h - crop + stride - 1, 0) // stride + 1
    wg = max(w - crop + stride - 1, 0) // stride + 1
    boxes = []
    for i in range(hg):
        for j in range(wg):
            y1, x1 = i * stride, j * stride
            y2, x2 = min(y1 + crop, h), min(x1 + crop, w)
            boxes.append((max(y2 - crop, 0), y2, max(x2 - crop, 0), x2))
    return boxes


def check_layers(encoder, layers: Sequence[int], head: str) -> None:
    from suites.images import DataError
    n = encoder.info.num_layers
    bad = [i for i in layers if not -n <= i < n]
    if bad:
        raise DataError(f"head '{head}' needs layers {list(layers)} but encoder '{encoder.info.spec}' has only "
                        f"{n} blocks")
