"""Readers for ADE20K and Pascal VOC 2012 in their real on-disk layouts, through mmseg's dataset classes.

- ADE20K (``ADE20KDataset``): ``ROOT/images/{training,validation}/*.jpg`` and
  ``ROOT/annotations/{training,validation}/*.png``; 0 = "other" (ignored via reduce_zero_label),
  1..150 = classes (150 remain), 255 = ignore.
- Pascal VOC 2012 (``PascalVOCDataset``): ``ROOT[/VOCdevkit/VOC2012]/{JPEGImages/*.jpg,
  SegmentationClass/*.png, ImageSets/Segmentation/{train,val}.txt}``; 21 classes, 255 = ignore. When
  ``ImageSets/Segmentation/trainaug.txt`` (or ``train_aug.txt``) and ``SegmentationClassAug/`` exist, the
  training split is the augmented one (10,582 images with SBD labels), as in the DINOv2 protocol.

mmseg's loaders do not check that the files they list exist; :func:`read_split` does, and stops with a
:class:`~suites.images.DataError` naming the split file / image / label map. Class indices outside the
dataset's range are caught when a label map is loaded (``CheckSegLabels`` in every pipeline).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from suites.images import DataError, files_fingerprint

ADE20K_CLASSES = 150
VOC_CLASSES = 21


@dataclass
class SegSplit:
    """One split: the mmseg dataset config (minus pipeline) and the validated (image, label) pairs."""
    dataset: str                    # "ade20k" | "voc"
    split: str                      # "training"/"validation" (ADE20K), "train"/"trainaug"/"val" (VOC)
    dataset_type: str               # the mmseg class
    root: Path                      # mmseg data_root
    kwargs: dict[str, Any]          # data_prefix, ann_file, reduce_zero_label, ...
    items: list[tuple[str, str]]    # (image, label map) paths relative to root
    num_classes: int
    reduce_zero_label: bool
    source: str = ""                # what was read (for details/README)
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.items)

    def fingerprint(self) -> str:
        return files_fingerprint(self.root, [p for pair in self.items for p in pair],
                                 extra=f"{self.dataset}|{self.split}|{self.source}")

    def config(self, pipeline: Sequence[dict], indices: Sequence[int] | None = None, test_mode: bool = False):
        from suites.segmentation.mmseg_compat import import_mmseg
        ns = import_mmseg()
        cfg = dict(type=self.dataset_type, data_root=str(self.root), pipeline=list(pipeline), test_mode=test_mode,
                   serialize_data=False, **self.kwargs)
        if indices is not None:
            cfg["indices"] = list(indices)
        return ns.ConfigDict(cfg)

    def build(self, pipeline: Sequence[dict] = (), indices: Sequence[int] | None = None, test_mode: bool = False):
        """The mmseg dataset over this split (optionally a subset), with ``pipeline``."""
        from suites.segmentation.mmseg_compat import import_mmseg
        ns = import_mmseg()
        return ns.DATASETS.build(self.config(pipeline, indices, test_mode))


def _mmseg_items(dataset_type: str, root: Path, kwargs: dict) -> list[dict]:
    from suites.segmentation.mmseg_compat import import_mmseg
    ns = import_mmseg()
    ds = ns.DATASETS.build(ns.ConfigDict(type=dataset_type, data_root=str(root), pipeline=[], serialize_data=False,
                                         **kwargs))
    return [ds.get_data_info(i) for i in range(len(ds))]


def _relative(root: Path, p: str) -> str:
    try:
        return str(Path(p).relative_to(root))
    except ValueError:
        return p


def read_ade20k(root: str | Path, split: str) -> SegSplit:
    """``split``: "training" or "validation"."""
    root = Path(root)
    if split not in ("training", "validation"):
        raise ValueError(f"ADE20K split must be 'training' or 'validation', got {split!r}")
    img_dir, ann_dir = root / "images" / split, root / "annotations" / split
    for d in (img_dir, ann_dir):
        if not d.is_dir():
            raise DataError(f"ADE20K root '{root}' has no '{d.relative_to(root)}/' folder (expected "
                            f"images/{{training,validation}}/*.jpg and annotations/{{training,validation}}/*.png)")
    kwargs = dict(data_prefix=dict(img_path=f"images/{split}", seg_map_path=f"annotations/{split}"),
                  reduce_zero_label=True)
    items = []
    for info in _mmseg_items("ADE20KDataset", root, kwargs):
        img, seg = info["img_path"], info["seg_map_path"]
        if not Path(seg).is_file():
            raise DataError(f"ADE20K image '{img}' has no label map: '{seg}' does not exist")
        items.append((_relative(root, img), _relative(root, seg)))
    if not items:
        raise DataError(f"ADE20K folder '{img_dir}' holds no .jpg images")
    return SegSplit("ade20k", split, "ADE20KDataset", root, kwargs, items, ADE20K_CLASSES, True,
                    source=f"images/{split}")


def voc_root(root: str | Path) -> Path:
    """Accept the folder holding ``VOCdevkit/``, ``VOCdevkit/`` itself, or ``VOC2012/``."""
    root = Path(root)
    for cand in (root / "VOCdevkit" / "VOC2012", root / "VOC2012", root):
        if (cand / "JPEGImages").is_dir() and (cand / "ImageSets" / "Segmentation").is_dir():
            return cand
    raise DataError(f"'{root}' is not a Pascal VOC 2012 root: expected VOCdevkit/VOC2012/{{JPEGImages,"
                    f"SegmentationClass,ImageSets/Segmentation}}")


AUG_LISTS = ("trainaug.txt", "train_aug.txt")


def read_voc(root: str | Path, split: str, prefer_aug: bool = True) -> SegSplit:
    """``split``: "train" (the augmented list when present and ``prefer_aug``) or "val"."""
    if split not in ("train", "val"):
        raise ValueError(f"VOC split must be 'train' or 'val', got {split!r}")
    base = voc_root(root)
    sets = base / "ImageSets" / "Segmentation"
    ann_file, seg_dir, name = sets / f"{split}.txt", "SegmentationClass", split
    if split == "train" and prefer_aug and (base / "SegmentationClassAug").is_dir():
        aug = [sets / n for n in AUG_LISTS if (sets / n).is_file()]
        if aug:
            ann_file, seg_dir, name = aug[0], "SegmentationClassAug", "trainaug"
    if not ann_file.is_file():
        raise DataError(f"Pascal VOC split file '{ann_file}' does not exist")
    lines = ann_file.read_text().splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            raise DataError(f"{ann_file}:{n}: empty line (one image name per line expected)")
    kwargs = dict(data_prefix=dict(img_path="JPEGImages", seg_map_path=seg_dir),
                  ann_file=str(ann_file.relative_to(base)))
    items = []
    for n, info in enumerate(_mmseg_items("PascalVOCDataset", base, kwargs), 1):
        img, seg = info["img_path"], info["seg_map_path"]
        if not Path(img).is_file():
            raise DataError(f"{ann_file}:{n}: names image '{lines[n - 1].strip()}' but '{img}' does not exist")
        if not Path(seg).is_file():
            raise DataError(f"{ann_file}:{n}: image '{lines[n - 1].strip()}' has no label map: '{seg}' does "
                            f"not exist")
        items.append((_relative(base, img), _relative(base, seg)))
    if not items:
        raise DataError(f"Pascal VOC split file '{ann_file}' lists no images")
    return SegSplit("voc", name, "PascalVOCDataset", base, kwargs, items, VOC_CLASSES, False,
                    source=str(ann_file.relative_to(base)), meta={"labels": seg_dir})
