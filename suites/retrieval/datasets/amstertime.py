"""AmsterTime (seyrankhademi/AmsterTime README, v1/v2 release)::

    ROOT/new/<NNNN>.png   street view         ROOT/old/<NNNN>.jpg   archival
    ROOT/image_pairs.csv  (sources; not needed)

A pair = the same file stem in both folders (stems have gaps: rejected pairs were removed). An optional
task file (``tasks/retrieval*.csv``, column ``query`` = ``new/0003.png`` ...) restricts both query sets
and galleries to the images it lists, as the reference's evaluation does.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from suites.retrieval.datasets.common import DatasetFormatError, ImageListDataset, ImageRecord, _few

__all__ = ["AmsterTimeData", "load_amstertime"]

IMAGE_EXTS = (".jpg", ".jpeg", ".png")


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

