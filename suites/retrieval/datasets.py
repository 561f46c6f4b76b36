"""Readers for the real on-disk layouts of the retrieval datasets (one reader per format).

- Revisited Oxford / Paris (filipradenovic/revisitop ``python/dataset.py``)::

      ROOT/gnd_roxford5k.pkl | gnd_rparis6k.pkl   {imlist, qimlist, gnd: [{bbx, easy, hard, junk}]}
      ROOT/jpg/<name>.jpg                          names in imlist/qimlist carry no extension

  Queries are cropped to ``bbx`` (x0, y0, x1, y1; pixels, 0-based) before any processing; the database
  (``imlist``) excludes the queries. Images in ``jpg/`` that no list mentions are ignored (the Paris
  tarball holds 20 corrupt images that the revisited lists dropped).
- The Met (nikosips/met ``code/utils/datasets.py``)::

      ROOT/ground_truth/MET_database.json   [{"id": int, "path": "MET/<id>/<n>.jpg"}, ...]
      ROOT/ground_truth/mini_MET_database.json
      ROOT/ground_truth/testset.json        [{"path": ..., "MET_id": int}  (no MET_id: distractor)]
      ROOT/ground_truth/valset.json
      ROOT/images/<path>

  (The reference reads images from ``dirname(info_dir)/images/<path>``; ``info_dir``/``im_root`` can be
  overridden the same way.) Distractor queries get label -1.
- AmsterTime (seyrankhademi/AmsterTime README, v1/v2 release)::

      ROOT/new/<NNNN>.png   street view         ROOT/old/<NNNN>.jpg   archival
      ROOT/image_pairs.csv  (sources; not needed)

  A pair = the same file stem in both folders (stems have gaps: rejected pairs were removed). An
  optional task file (``tasks/retrieval*.csv``, column ``query`` = ``new/0003.png`` ...) restricts both
  query sets and galleries to the images it lists, as the reference's evaluation does.

Every reader checks the whole layout up front and stops with an error that names the file and what is
wrong (missing keys, listed images that are absent, degenerate boxes, bad indices). Images are opened
lazily; datasets follow the torch Dataset protocol and the feature cache's ``FeatureDataset``.
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image, ImageFile

from suites.images import DataError
from suites.retrieval.safe_pickle import UnsafePickleError, safe_load_pickle

__all__ = [
    "DatasetFormatError", "ImageRecord", "ImageListDataset", "load_rgb",
    "REVISITED_GND", "QueryGnd", "RevisitedData", "load_revisited",
    "MetData", "load_met", "AmsterTimeData", "load_amstertime",
    "make_transform", "RetrievalTransform", "patch_multiple_size",
]

IMAGE_EXTS = (".jpg", ".jpeg", ".png")
REVISITED_GND = {"roxford5k": "gnd_roxford5k.pkl", "rparis6k": "gnd_rparis6k.pkl"}


class DatasetFormatError(DataError):
    """The on-disk data does not match the expected layout; the message names the file and the problem.
    (A ``suites.images.DataError``, so the CLI reports it as bad input.)"""


def _few(items: Sequence[Any], n: int = 5) -> str:
    shown = ", ".join(str(x) for x in list(items)[:n])
    return shown + (f", ... ({len(items)} in all)" if len(items) > n else "")


# ----------------------------------------------------------------------------------------------------
# generic lazy image list
# ----------------------------------------------------------------------------------------------------
def load_rgb(path: str | Path) -> Image.Image:
    """Open an image as RGB. A truncated file is read as far as it goes, with a warning (revisitop's
    loader does the same, globally); the PIL flag is set only for that one read."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, SyntaxError) as e:
        if "truncated" not in str(e).lower():
            raise DatasetFormatError(f"cannot read image {path}: {e}") from None
    old = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        with Image.open(path) as im:
            img = im.convert("RGB")
    except (OSError, SyntaxError) as e:
        raise DatasetFormatError(f"cannot read image {path}: {e}") from None
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = old
    warnings.warn(f"image {path} is truncated; read what is there")
    return img


@dataclass(frozen=True)
class ImageRecord:
    relpath: str                                            # relative to the dataset's image root, '/'
    label: Any = None                                       # class id / place id / None
    bbox: tuple[float, float, float, float] | None = None   # crop (x0, y0, x1, y1) in pixels
    name: str = ""                                          # id in the ground truth (for messages)


def _stat_sizes(root: Path, relpaths: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    sizes = np.empty(len(relpaths), dtype=np.int64)
    missing = []
    for i, rp in enumerate(relpaths):
        try:
            st = os.stat(root / rp)
        except OSError:
            st = None
        if st is None or not stat.S_ISREG(st.st_mode):
            sizes[i] = -1
            missing.append(rp)
        else:
            sizes[i] = st.st_size
    return sizes, missing


def _crop(img: Image.Image, bbox, what: str) -> Image.Image:
    """Crop like revisitop's ``pil_loader(...).crop(bbx)`` (PIL rounds the box), but clipped to the image
    as the MATLAB reference ``crop_qim`` does (PIL would pad outside pixels with black)."""
    w, h = img.size
    x0, y0, x1, y1 = bbox
    box = (max(0.0, x0), max(0.0, y0), min(float(w), x1), min(float(h), y1))
    r = tuple(int(round(v)) for v in box)
    if r[2] <= r[0] or r[3] <= r[1]:
        raise DatasetFormatError(f"{what}: box {tuple(bbox)} leaves nothing of the {w}x{h} image")
    return img.crop(r)


class ImageListDataset:
    """Lazy list of images: ``ds[i] -> (transform(image) or PIL image, i)``.

    The index is the target so that features line up with ground-truth indices. ``transform_id``
    names the preprocessing for the feature-cache key. ``fingerprint()`` = sha256 of relative paths,
    file sizes, labels, boxes and ``extra`` (e.g. the ground-truth digest).
    """

    def __init__(self, root: str | Path, records: Sequence[ImageRecord], *, transform: Callable | None = None,
                 transform_id: str = "pil", extra: str = "", sizes: np.ndarray | None = None,
                 split: str = ""):
        self.root = Path(root)
        self.records = list(records)
        self.transform = transform
        self.transform_id = transform_id
        self.extra = extra
        self.split = split
        self._sizes = sizes
        self._fp: str | None = None

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        rec = self.records[i]
        path = self.root / rec.relpath
        img = load_rgb(path)
        if rec.bbox is not None:
            img = _crop(img, rec.bbox, f"{path} (query '{rec.name or rec.relpath}')")
        if self.transform is not None:
            img = self.transform(img)
        return img, i

    @property
    def labels(self) -> list:
        return [r.label for r in self.records]

    @property
    def paths(self) -> list[Path]:
        return [self.root / r.relpath for r in self.records]

    def with_transform(self, transform: Callable | None, transform_id: str) -> "ImageListDataset":
        """Same images, another preprocessing (shares records and the computed sizes)."""
        ds = ImageListDataset(self.root, self.records, transform=transform, transform_id=transform_id,
                              extra=self.extra, sizes=self._sizes, split=self.split)
        ds._fp = self._fp
        return ds

    def sizes(self) -> np.ndarray:
        if self._sizes is None:
            sizes, missing = _stat_sizes(self.root, [r.relpath for r in self.records])
            if missing:
                raise DatasetFormatError(f"{self.root}: {len(missing)} listed image(s) are missing: {_few(missing)}")
            self._sizes = sizes
        return self._sizes

    def fingerprint(self) -> str:
        if self._fp is None:
            h = hashlib.sha256()
            h.update(f"split={self.split}\nextra={self.extra}\n".encode())
            for rec, size in zip(self.records, self.sizes()):
                h.update(json.dumps([rec.relpath, int(size), rec.label, rec.bbox]).encode())
                h.update(b"\n")
            self._fp = h.hexdigest()[:16]
        return self._fp


# ----------------------------------------------------------------------------------------------------
# Revisited Oxford / Paris
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class QueryGnd:
    name: str
    bbx: tuple[float, float, float, float]
    easy: np.ndarray
    hard: np.ndarray
    junk: np.ndarray

    def as_dict(self) -> dict:
        return {"bbx": self.bbx, "easy": self.easy, "hard": self.hard, "junk": self.junk}


@dataclass
class RevisitedData:
    name: str                 # roxford5k | rparis6k
    root: Path
    gnd_path: Path
    imlist: list[str]
    qimlist: list[str]
    gnd: list[QueryGnd]
    sizes_db: np.ndarray = field(repr=False)
    sizes_q: np.ndarray = field(repr=False)

    @property
    def image_dir(self) -> Path:
        return self.root / "jpg"

    def gnd_digest(self) -> str:
        h = hashlib.sha256()
        for g in self.gnd:
            h.update(json.dumps([g.name, list(g.bbx), g.easy.tolist(), g.hard.tolist(), g.junk.tolist()]).encode())
        return h.hexdigest()

    def fingerprint(self) -> str:
        """sha256 of the dataset name, relative paths, file sizes and the ground truth."""
        h = hashlib.sha256(f"{self.name}\n{self.gnd_digest()}\n".encode())
        for names, sizes in ((self.imlist, self.sizes_db), (self.qimlist, self.sizes_q)):
            for n, s in zip(names, sizes):
                h.update(f"{_jpg(n)}\t{int(s)}\n".encode())
        return h.hexdigest()[:16]

    def database(self, transform: Callable | None = None, transform_id: str = "pil") -> ImageListDataset:
        recs = [ImageRecord(_jpg(n), name=n) for n in self.imlist]
        return ImageListDataset(self.image_dir, recs, transform=transform, transform_id=transform_id,
                                extra=f"{self.name}:db", sizes=self.sizes_db, split="db")

    def queries(self, transform: Callable | None = None, transform_id: str = "pil") -> ImageListDataset:
        """Query images cropped to their ``bbx`` (the revisited protocol requires the crop)."""
        recs = [ImageRecord(_jpg(g.name), bbox=g.bbx, name=g.name) for g in self.gnd]
        return ImageListDataset(self.image_dir, recs, transform=transform, transform_id=transform_id,
                                extra=f"{self.name}:query:{self.gnd_digest()[:16]}", sizes=self.sizes_q,
                                split="query")

    def gnd_dicts(self) -> list[dict]:
        return [g.as_dict() for g in self.gnd]

    def protocol(self, level: str) -> list[dict[str, np.ndarray]]:
        from suites.retrieval.metrics import revisitop_protocol
        return revisitop_protocol(self.gnd_dicts(), level)  # type: ignore[arg-type]


def _jpg(name: str) -> str:
    return name if name.lower().endswith(".jpg") else name + ".jpg"


def _indices(v: Any, n: int, where: str) -> np.ndarray:
    try:
        a = np.asarray(v if v is not None else [], dtype=np.float64).ravel()
    except (TypeError, ValueError) as e:
        raise DatasetFormatError(f"{where} is not a list of indices ({e})") from None
    if a.size and (not np.all(np.isfinite(a)) or np.any(a != np.round(a))):
        raise DatasetFormatError(f"{where} holds non-integer values")
    a = a.astype(np.int64)
    bad = a[(a < 0) | (a >= n)]
    if bad.size:
        raise DatasetFormatError(f"{where} has indices outside the database of {n} images: {_few(bad.tolist())}")
    return a


def _bbx(v: Any, where: str) -> tuple[float, float, float, float]:
    try:
        b = [float(x) for x in np.asarray(v, dtype=np.float64).ravel()]
    except (TypeError, ValueError):
        raise DatasetFormatError(f"{where}: bbx {v!r} is not 4 numbers") from None
    if len(b) != 4 or not all(math.isfinite(x) for x in b):
        raise DatasetFormatError(f"{where}: bbx {v!r} is not 4 finite numbers (x0, y0, x1, y1)")
    if b[2] <= b[0] or b[3] <= b[1]:
        raise DatasetFormatError(f"{where}: bbx {b} is empty or degenerate (need x1 > x0 and y1 > y0)")
    return (b[0], b[1], b[2], b[3])


def load_revisited(root: str | Path, name: str | None = None) -> RevisitedData:
    """Read ``ROOT/gnd_<name>.pkl`` (restricted unpickler) and check ``ROOT/jpg``.

    name: ``roxford5k`` or ``rparis6k``; None -> whichever gnd file ROOT holds.
    """
    root = Path(root)
    if name is None:
        found = [n for n, f in REVISITED_GND.items() if (root / f).is_file()]
        if len(found) != 1:
            raise DatasetFormatError(f"{root}: expected exactly one of {sorted(REVISITED_GND.values())}, "
                                     f"found {found or 'none'}")
        name = found[0]
    if name not in REVISITED_GND:
        raise DatasetFormatError(f"unknown revisited dataset {name!r}; valid: {sorted(REVISITED_GND)}")
    gnd_path = root / REVISITED_GND[name]
    if not gnd_path.is_file():
        raise DatasetFormatError(f"{gnd_path}: ground-truth file not found")
    try:
        cfg = safe_load_pickle(gnd_path)
    except UnsafePickleError as e:
        raise DatasetFormatError(str(e)) from e
    if not isinstance(cfg, dict):
        raise DatasetFormatError(f"{gnd_path}: expected a dict, got {type(cfg).__name__}")
    missing = [k for k in ("imlist", "qimlist", "gnd") if k not in cfg]
    if missing:
        raise DatasetFormatError(f"{gnd_path}: missing key(s) {missing} (expected imlist, qimlist, gnd)")
    imlist = [str(x) for x in cfg["imlist"]]
    qimlist = [str(x) for x in cfg["qimlist"]]
    raw = list(cfg["gnd"])
    if len(raw) != len(qimlist):
        raise DatasetFormatError(f"{gnd_path}: {len(raw)} gnd entries but {len(qimlist)} query names")
    n = len(imlist)
    gnd = []
    for i, (qn, g) in enumerate(zip(qimlist, raw)):
        where = f"{gnd_path}: gnd[{i}] (query '{qn}')"
        if not isinstance(g, dict):
            raise DatasetFormatError(f"{where} is a {type(g).__name__}, not a dict")
        miss = [k for k in ("bbx", "easy", "hard", "junk") if k not in g]
        if miss:
            raise DatasetFormatError(f"{where} lacks key(s) {miss}")
        gnd.append(QueryGnd(qn, _bbx(g["bbx"], where),
                            *(_indices(g[k], n, f"{where} '{k}'") for k in ("easy", "hard", "junk"))))
    img_dir = root / "jpg"
    if not img_dir.is_dir():
        raise DatasetFormatError(f"{img_dir}: image folder not found (expected ROOT/jpg/<name>.jpg)")
    sizes_db, miss_db = _stat_sizes(img_dir, [_jpg(x) for x in imlist])
    sizes_q, miss_q = _stat_sizes(img_dir, [_jpg(x) for x in qimlist])
    if miss_db or miss_q:
        parts = []
        if miss_db:
            parts.append(f"{len(miss_db)} of {len(imlist)} database images (e.g. {_few(miss_db)})")
        if miss_q:
            parts.append(f"{len(miss_q)} of {len(qimlist)} query images (e.g. {_few(miss_q)})")
        raise DatasetFormatError(f"{img_dir}: images listed in {gnd_path.name} are missing: " + "; ".join(parts))
    return RevisitedData(name, root, gnd_path, imlist, qimlist, gnd, sizes_db, sizes_q)


# ----------------------------------------------------------------------------------------------------
# The Met
# ----------------------------------------------------------------------------------------------------
MET_DISTRACTOR = -1


@dataclass
class MetData:
    info_dir: Path
    image_root: Path                              # the folder that holds the "path" entries
    database: ImageListDataset                    # exemplars, label = Met class id
    queries: dict[str, ImageListDataset]          # "val" / "test"; label = MET_id or -1 (distractor)

    @property
    def n_classes(self) -> int:
        return len(set(self.database.labels))

    def fingerprint(self) -> str:
        h = hashlib.sha256(self.database.fingerprint().encode())
        for k in sorted(self.queries):
            h.update(f"{k}:{self.queries[k].fingerprint()}".encode())
        return h.hexdigest()[:16]


def _read_json_list(path: Path) -> list:
    if not path.is_file():
        raise DatasetFormatError(f"{path}: ground-truth file not found")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetFormatError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, list):
        raise DatasetFormatError(f"{path}: expected a JSON list of entries, got {type(data).__name__}")
    return data


def _met_records(path: Path, label_key: str, required: bool) -> list[ImageRecord]:
    recs = []
    for i, e in enumerate(_read_json_list(path)):
        if not isinstance(e, dict) or "path" not in e:
            raise DatasetFormatError(f"{path}: entry {i} has no 'path'")
        if label_key in e:
            try:
                label = int(e[label_key])
            except (TypeError, ValueError):
                raise DatasetFormatError(f"{path}: entry {i} has a non-integer '{label_key}': {e[label_key]!r}") from None
        elif required:
            raise DatasetFormatError(f"{path}: entry {i} ('{e['path']}') has no '{label_key}'")
        else:
            label = MET_DISTRACTOR
        recs.append(ImageRecord(str(e["path"]), label=label, name=str(e["path"])))
    return recs


def load_met(root: str | Path | None = None, *, splits: Sequence[str] = ("val", "test"), mini: bool = False,
             info_dir: str | Path | None = None, im_root: str | Path | None = None,
             check_images: bool = True) -> MetData:
    """Read Met ground truth (``ROOT/ground_truth``) and check images (``ROOT/images``).

    mini: use ``mini_MET_database.json`` (the reference has no mini query files). With ``info_dir``,
    images default to ``dirname(info_dir)/images`` as in the reference; ``im_root`` overrides that
    (images at ``im_root/images/<path>``).
    """
    if info_dir is None:
        if root is None:
            raise ValueError("give root or info_dir")
        info_dir = Path(root) / "ground_truth"
    info_dir = Path(info_dir)
    base = Path(im_root) if im_root is not None else info_dir.parent
    image_root = base / "images"
    bad = [s for s in splits if s not in ("val", "test")]
    if bad:
        raise ValueError(f"unknown Met split(s) {bad}; valid: val, test")
    db_file = info_dir / (("mini_" if mini else "") + "MET_database.json")
    db = _met_records(db_file, "id", required=True)
    if not db:
        raise DatasetFormatError(f"{db_file}: no database entries")
    qs = {s: _met_records(info_dir / f"{s}set.json", "MET_id", required=False) for s in splits}
    if not image_root.is_dir():
        raise DatasetFormatError(f"{image_root}: image folder not found (expected <root>/images/<path>)")
    sizes = {}
    if check_images:
        for split, recs in [("db", db)] + list(qs.items()):
            sz, missing = _stat_sizes(image_root, [r.relpath for r in recs])
            if missing:
                src = db_file if split == "db" else info_dir / f"{split}set.json"
                raise DatasetFormatError(f"{image_root}: {len(missing)} of {len(recs)} images listed in "
                                         f"{src.name} are missing: {_few(missing)}")
            sizes[split] = sz
    tag = "mini" if mini else "full"
    database = ImageListDataset(image_root, db, extra=f"met:{tag}:db", sizes=sizes.get("db"), split="db")
    queries = {s: ImageListDataset(image_root, r, extra=f"met:{s}", sizes=sizes.get(s), split=s)
               for s, r in qs.items()}
    return MetData(info_dir, image_root, database, queries)


# ----------------------------------------------------------------------------------------------------
# AmsterTime
# ----------------------------------------------------------------------------------------------------
@dataclass
class AmsterTimeData:
    root: Path
    old: ImageListDataset      # archival images, label = pair stem
    new: ImageListDataset      # street-view images, same order and labels

    def fingerprint(self) -> str:
        return hashlib.sha256(f"{self.old.fingerprint()}:{self.new.fingerprint()}".encode()).hexdigest()[:16]


def _stems(folder: Path) -> dict[str, str]:
    if not folder.is_dir():
        raise DatasetFormatError(f"{folder}: folder not found (AmsterTime needs ROOT/new and ROOT/old)")
    out: dict[str, str] = {}
    dup = []
    for f in sorted(os.listdir(folder)):
        stem, ext = os.path.splitext(f)
        if ext.lower() not in IMAGE_EXTS:
            continue
        if stem in out:
            dup.append(f)
        out[stem] = f
    if dup:
        raise DatasetFormatError(f"{folder}: several images share a stem: {_few(dup)}")
    return out


def _task_stems(task_file: Path) -> dict[str, set[str]]:
    if not task_file.is_file():
        raise DatasetFormatError(f"{task_file}: task file not found")
    with open(task_file, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "query" not in reader.fieldnames:
            raise DatasetFormatError(f"{task_file}: expected a CSV with a 'query' column (e.g. tasks/retrieval.csv)")
        out: dict[str, set[str]] = {"new": set(), "old": set()}
        for i, row in enumerate(reader):
            parts = (row["query"] or "").strip().split("/")
            if len(parts) < 2 or parts[-2] not in out:
                raise DatasetFormatError(f"{task_file}: row {i + 2}: query {row['query']!r} is not new/<file> or old/<file>")
            out[parts[-2]].add(os.path.splitext(parts[-1])[0])
    return out


def load_amstertime(root: str | Path, task_file: str | Path | None = None) -> AmsterTimeData:
    """Pair ``ROOT/old/<stem>.*`` with ``ROOT/new/<stem>.*``; optional task file restricts the images."""
    root = Path(root)
    old, new = _stems(root / "old"), _stems(root / "new")
    only_old = sorted(set(old) - set(new))
    only_new = sorted(set(new) - set(old))
    if only_old or only_new:
        msg = []
        if only_old:
            msg.append(f"{len(only_old)} archival image(s) without a street view: {_few([old[s] for s in only_old])}")
        if only_new:
            msg.append(f"{len(only_new)} street view(s) without an archival image: {_few([new[s] for s in only_new])}")
        raise DatasetFormatError(f"{root}: old/ and new/ do not pair up by file name: " + "; ".join(msg))
    if not old:
        raise DatasetFormatError(f"{root}: no images in old/ and new/")
    old_keep, new_keep = sorted(old), sorted(new)
    extra = "amstertime:all"
    if task_file is not None:
        tf = Path(task_file)
        wanted = _task_stems(tf)
        for side, have in (("old", old), ("new", new)):
            absent = sorted(wanted[side] - set(have))
            if absent:
                raise DatasetFormatError(f"{tf}: lists {len(absent)} {side}/ image(s) not in {root / side}: {_few(absent)}")
        old_keep, new_keep = sorted(wanted["old"]), sorted(wanted["new"])
        extra = "amstertime:task:" + hashlib.sha256(
            json.dumps([old_keep, new_keep]).encode()).hexdigest()[:16]
    old_ds = ImageListDataset(root, [ImageRecord(f"old/{old[s]}", label=s, name=s) for s in old_keep],
                              extra=extra, split="old")
    new_ds = ImageListDataset(root, [ImageRecord(f"new/{new[s]}", label=s, name=s) for s in new_keep],
                              extra=extra, split="new")
    return AmsterTimeData(root, old_ds, new_ds)


# ----------------------------------------------------------------------------------------------------
# preprocessing (paper App. A.7)
# ----------------------------------------------------------------------------------------------------
def patch_multiple_size(width: int, height: int, patch: int) -> tuple[int, int]:
    """Nearest multiple of ``patch`` per side (at least one patch): Met keeps each image's resolution."""
    return (max(patch, int(round(width / patch)) * patch), max(patch, int(round(height / patch)) * patch))


class RetrievalTransform:
    """PIL image -> normalised float tensor [3, H, W] (a class, not a closure, so DataLoader workers
    started with 'spawn' can pickle it)."""

    def __init__(self, image_size: tuple[int, int] | None, mean: Sequence[float], std: Sequence[float],
                 patch_size: int | None, interpolation: str):
        self.image_size = image_size          # (h, w) or None = nearest multiple of patch_size
        self.mean = tuple(float(x) for x in mean)
        self.std = tuple(float(x) for x in std)
        self.patch_size = patch_size
        self.interpolation = interpolation

    def __call__(self, img: Image.Image):
        import torch
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as TF

        if self.image_size is None:
            w, h = patch_multiple_size(img.width, img.height, int(self.patch_size))  # type: ignore[arg-type]
        else:
            h, w = self.image_size
        if (w, h) != img.size:
            img = TF.resize(img, [h, w], interpolation=InterpolationMode(self.interpolation), antialias=True)
        x = TF.pil_to_tensor(img).float().div_(255.0)
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return (x - mean) / std


def make_transform(image_size: int | tuple[int, int] | None, mean: Sequence[float], std: Sequence[float], *,
                   patch_size: int | None = None, interpolation: str = "bicubic") -> tuple[Callable, str]:
    """PIL image -> normalised float tensor [3, H, W]; returns (transform, transform_id).

    image_size=224 -> resized to 224x224 (the whole image, aspect ratio not kept, so no query content
    is cropped away); None -> each side to the nearest multiple of ``patch_size`` (Met protocol; such
    images differ in size, so batch them one by one).
    """
    if image_size is None:
        if not patch_size:
            raise ValueError("image_size=None (nearest multiple of the patch size) needs patch_size")
        size = None
    elif isinstance(image_size, int):
        size = (image_size, image_size)
    else:
        size = (int(image_size[0]), int(image_size[1]))
    tf = RetrievalTransform(size, mean, std, patch_size, interpolation)
    size_id = f"patchmult{patch_size}" if size is None else f"{size[0]}x{size[1]}"
    tid = f"retrieval:{size_id}:{interpolation}:mean={list(tf.mean)}:std={list(tf.std)}"
    return tf, tid
