"""The common preamble of the writers: write a synthetic world in the native on-disk formats of the real benchmarks.

Each ``write_X(world_dir, out_root, ...)`` produces exactly the layout the real
dataset reader expects (see README.md), so the harness's real readers are what
the embedded demo exercises. All writers are

* deterministic: same world + same arguments -> byte-identical files;
* atomic: everything is written into a temporary folder next to ``out_root``
  (``harness.atomic.atomic_dir``) and renamed into place at the end, so a half-written dataset is never visible;
* idempotent: if ``out_root`` already holds the output of the same writer for the
  same world and arguments (``.synthetic_writer.json`` stamp), it is returned
  as is; anything else in the way is refused unless ``overwrite=True``.

Splits are by scene (no scene in both splits): the last ``ceil(val_fraction * n)``
scenes form the validation/test split. A one-scene world puts that scene in both.

Helpers here are called as ``common._x`` from the format modules, so a test can patch one of them (e.g.
make ``_save_jpg`` fail) for every writer.
"""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from harness.atomic import atomic_dir

from ..manifest import read_manifest, world_fingerprint
from ..views import list_views

__all__ = ["split_scenes", "STAMP", "JPEG_QUALITY"]

STAMP = ".synthetic_writer.json"
JPEG_QUALITY = 95


def split_scenes(scene_ids, val_fraction: float = 0.25) -> tuple[list[int], list[int]]:
    """Deterministic scene-level split: (train scenes, val scenes)."""
    ids = sorted(int(s) for s in set(scene_ids))
    if not (0.0 < float(val_fraction) < 1.0):
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    if not ids:
        raise ValueError("the world has no scenes")
    if len(ids) == 1:
        return ids, ids
    n_val = min(len(ids) - 1, max(1, math.ceil(val_fraction * len(ids))))
    return ids[:-n_val], ids[-n_val:]


def _views_by_scene(world_dir) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for s, v in list_views(world_dir, require_complete=True):
        out.setdefault(s, []).append(v)
    return out


@contextmanager
def _atomic_output(world_dir, out_root, writer: str, args: dict, overwrite: bool):
    """Yield a temp folder (or None when an identical output already exists), then publish it."""
    world_dir = Path(world_dir)
    read_manifest(world_dir)
    out_root = Path(out_root)
    stamp = {"writer": writer, "world_fingerprint": world_fingerprint(world_dir), "args": _jsonable(args)}
    if out_root.exists():
        old = None
        sp = out_root / STAMP
        if sp.is_file():
            try:
                old = json.loads(sp.read_text())
            except json.JSONDecodeError:
                old = None
        same = old is not None and all(old.get(k) == v for k, v in stamp.items())
        if same and not overwrite:
            yield None
            return
        if not overwrite:
            why = "was written by a different writer/world/arguments" if old else "exists and is not a synthetic output"
            raise ValueError(f"{out_root} {why}; pass overwrite=True or choose another out_root")
    # replace: with overwrite=True the old output is swapped out; otherwise it did not exist a moment ago
    # (an identical writer that finishes first wins and our copy is dropped)
    with atomic_dir(out_root, replace=overwrite) as tmp:
        info: dict = {}
        yield tmp, info
        stamp.update(_jsonable(info))
        (tmp / STAMP).write_text(json.dumps(stamp, indent=1, sort_keys=True))


def _jsonable(x):
    return json.loads(json.dumps(x, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def _save_jpg(path: Path, rgb: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, quality=JPEG_QUALITY, subsampling=0)


def _save_png(path: Path, arr: np.ndarray, palette=None) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    if palette is not None:  # index PNG: pixel values are class ids, colours only for viewing
        a = np.ascontiguousarray(arr, dtype=np.uint8)
        im = Image.frombytes("P", (a.shape[1], a.shape[0]), a.tobytes())
        im.putpalette(palette)
    else:
        im = Image.fromarray(arr)
    im.save(path)


def _depth_u16(depth: np.ndarray, scale: float) -> np.ndarray:
    """Metres -> uint16 with value = round(depth * scale); 0 stays 0 (invalid), overflow -> 0."""
    v = np.rint(depth.astype(np.float64) * scale)
    v[(depth <= 0) | (v > 65535)] = 0
    return v.astype(np.uint16)


def _check_fraction(val_fraction):
    if not (0.0 < float(val_fraction) < 1.0):
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
