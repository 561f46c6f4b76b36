"""The Met (nikosips/met ``code/utils/datasets.py``)::

    ROOT/ground_truth/MET_database.json   [{"id": int, "path": "MET/<id>/<n>.jpg"}, ...]
    ROOT/ground_truth/mini_MET_database.json
    ROOT/ground_truth/testset.json        [{"path": ..., "MET_id": int}  (no MET_id: distractor)]
    ROOT/ground_truth/valset.json
    ROOT/images/<path>

(The reference reads images from ``dirname(info_dir)/images/<path>``; ``info_dir``/``im_root`` can be
overridden the same way.) Distractor queries get label -1.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from suites.retrieval.datasets.common import (DatasetFormatError, ImageListDataset, ImageRecord, _few,
                                              _stat_sizes)

__all__ = ["MET_DISTRACTOR", "MetData", "load_met"]

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

