"""A cache entry for arrays derived from cached 2D features (lifted point features), beside the feature
cache: ``<cache root>/derived/<key>/{<name>.npy, meta.json}``.

The feature cache (harness/cache.py) stores encoder outputs per image; lifting turns them into per-point
features, which are as costly to recompute and are shared by every Lexicon3D suite and later run, so they
get the same treatment: a key from their inputs (the 2D cache key plus the lifting parameters), written
into a temporary folder and renamed when complete (harness/atomic.py), so a killed lifting never leaves an
entry that a later run would read. Stale temporaries of dead processes are removed when the cache opens.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from harness.atomic import atomic_dir, is_stale_temp


@dataclass
class DerivedEntry:
    arrays: dict[str, np.ndarray]
    key: str
    path: Path
    meta: dict = field(default_factory=dict)
    computed: bool = False

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]


class DerivedCache:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        for p in self.root.iterdir():
            if is_stale_temp(p):
                import shutil
                shutil.rmtree(p, ignore_errors=True)

    @staticmethod
    def key(parts: dict) -> str:
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]

    def get_or_compute(self, parts: dict, compute: Callable[[], tuple[dict[str, np.ndarray], dict]]) -> DerivedEntry:
        """The entry of ``parts``; on a miss ``compute()`` returns (arrays, meta) and they are written atomically."""
        key = self.key(parts)
        final = self.root / key
        if (final / "meta.json").is_file():
            return self._open(final, key)
        arrays, meta = compute()
        with atomic_dir(final) as tmp:
            for name, a in arrays.items():
                with open(tmp / f"{name}.npy", "wb") as f:
                    np.save(f, np.ascontiguousarray(a))
            (tmp / "meta.json").write_text(json.dumps({"arrays": sorted(arrays), "parts": parts, **meta}, indent=1))
        entry = self._open(final, key)
        entry.computed = True
        return entry

    @staticmethod
    def _open(path: Path, key: str) -> DerivedEntry:
        meta = json.loads((path / "meta.json").read_text())
        arrays = {n: np.load(path / f"{n}.npy", mmap_mode="r") for n in meta["arrays"]}
        return DerivedEntry(arrays, key, path, meta)
