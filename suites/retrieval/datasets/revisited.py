"""Revisited Oxford / Paris (filipradenovic/revisitop ``python/dataset.py``)::

    ROOT/gnd_roxford5k.pkl | gnd_rparis6k.pkl   {imlist, qimlist, gnd: [{bbx, easy, hard, junk}]}
    ROOT/jpg/<name>.jpg                          names in imlist/qimlist carry no extension

Queries are cropped to ``bbx`` (x0, y0, x1, y1; pixels, 0-based) before any processing; the database
(``imlist``) excludes the queries. Images in ``jpg/`` that no list mentions are ignored (the Paris
tarball holds 20 corrupt images that the revisited lists dropped). The ground truth is read with the
restricted unpickler (``harness.safe_pickle``).
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from harness.safe_pickle import UnsafePickleError, safe_load_pickle
from suites.retrieval.datasets.common import (DatasetFormatError, ImageListDataset, ImageRecord, _few,
                                              _stat_sizes)

__all__ = ["REVISITED_GND", "QueryGnd", "RevisitedData", "load_revisited"]

REVISITED_GND = {"roxford5k": "gnd_roxford5k.pkl", "rparis6k": "gnd_rparis6k.pkl"}


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

