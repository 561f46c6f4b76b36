"""Feature cache: one encoder forward per image per protocol, reused by every head and every run.

Key = hash(encoder fingerprint, dataset fingerprint, transform id, layers, stored kinds, norm): ``norm`` =
whether intermediate blocks carry the encoder's final norm (the default, whose keys are unchanged from
before the option existed) or are raw (``norm=False``, its own key). Arrays are
float16 ``.npy`` files opened as memmaps. A cache is written into ``<key>.tmp-<pid>@<host>`` and renamed when
complete, so a killed extraction never leaves a folder that a later run would read; the next cache
opened on that host removes such folders of dead processes.

Under ``torchrun`` (an initialised process group of more than one rank) extraction is data-parallel:
each rank encodes a contiguous shard of the dataset into ``<tmp>/shard-<rank>/`` of a folder shared by
all ranks (the cache root must be on a filesystem they all see), and rank 0 assembles the entry only
when every shard is complete; every rank then reads the same entry.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from harness.device import autocast, is_oom

KINDS = ("cls", "avgpool", "patches")


class FeatureDataset(Protocol):
    """What the cache needs: items ``(normalised image tensor [3,H,W], target)`` and a fingerprint."""
    transform_id: str

    def __len__(self) -> int: ...
    def __getitem__(self, i: int): ...
    def fingerprint(self) -> str: ...


@dataclass
class Features:
    """Arrays keyed ``"<kind>.<block>"`` (e.g. ``cls.11``, ``patches.8``), each [N, ...] float16."""
    arrays: dict[str, np.ndarray]
    key: str
    path: Path
    computed: bool = False                      # True when this call ran the encoder
    meta: dict = field(default_factory=dict)

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.arrays:
            raise KeyError(f"feature '{name}' not in cache {self.key}; has {sorted(self.arrays)}")
        return self.arrays[name]

    def tensor(self, name: str, dtype=torch.float32) -> torch.Tensor:
        return torch.from_numpy(np.array(self[name], dtype=np.float32)).to(dtype)


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    forwards: int = 0       # encoder forward calls made by this cache (a test counts them)


def remove_stale_temps(root: Path) -> list[Path]:
    """Remove ``<key>.tmp-<pid>@<host>`` folders whose writer (a process of this host) is gone: a
    kill -9 during extraction leaves one. Folders of live processes or of other hosts are left alone."""
    from harness.tracking import pid_alive
    removed = []
    for tmp in root.glob("*.tmp-*"):
        owner = tmp.name.rsplit(".tmp-", 1)[1]
        pid, _, host = owner.partition("@")
        if not pid.isdigit() or (host and host != platform.node()) or pid_alive(int(pid)):
            continue
        shutil.rmtree(tmp, ignore_errors=True)
        removed.append(tmp)
    return removed


class FeatureCache:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.stats = CacheStats()
        self.removed_stale = remove_stale_temps(self.root)

    @staticmethod
    def key(encoder_fp: str, dataset_fp: str, transform_id: str, layers: Sequence[int],
            kinds: Sequence[str], norm: bool = True, precision: str = "fp32") -> str:
        parts = [encoder_fp, dataset_fp, transform_id, sorted(set(layers)), sorted(set(kinds))]
        # normed fp32 entries keep the key they had before these options existed; bf16/fp16 features
        # differ from fp32 ones, so a low-precision run never reads (or writes) an fp32 entry
        extra = {k: v for k, v in (("norm", norm), ("precision", precision)) if v != {"norm": True,
                                                                                      "precision": "fp32"}[k]}
        if extra:
            parts.append(extra)
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]

    def get_or_compute(self, encoder, dataset: FeatureDataset, layers: Sequence[int],
                       kinds: Sequence[str] = ("cls",), *, device: torch.device | str = "cpu",
                       precision: str = "fp32", batch_size: int = 64, num_workers: int = 0,
                       progress: bool = True, desc: str = "features", norm: bool = True) -> Features:
        bad = [k for k in kinds if k not in KINDS]
        if bad:
            raise ValueError(f"unknown feature kind(s) {bad}; valid: {KINDS}")
        blocks = sorted(set(encoder.resolve_layers(layers)))
        norm = bool(norm)
        key = self.key(encoder.fingerprint(), dataset.fingerprint(), dataset.transform_id, blocks, kinds, norm,
                       precision)
        final = self.root / key
        if (final / "meta.json").is_file():
            self.stats.hits += 1
            return self._open(final, key)
        self.stats.misses += 1
        if _world_size() > 1:
            return self._compute_distributed(encoder, dataset, blocks, kinds, key, final, torch.device(device),
                                             precision, batch_size, num_workers, progress, desc, norm)
        tmp = self.root / f"{key}.tmp-{os.getpid()}@{platform.node()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            meta = self._extract(encoder, dataset, blocks, kinds, tmp, torch.device(device), precision,
                                 batch_size, num_workers, progress, desc, norm)
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
            try:
                os.rename(tmp, final)
            except OSError:  # another process finished the same key first
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        feats = self._open(final, key)
        feats.computed = True
        return feats

    def _compute_distributed(self, encoder, dataset, blocks, kinds, key, final, device, precision, batch_size,
                             num_workers, progress, desc, norm) -> Features:
        import torch.distributed as dist
        rank, world = dist.get_rank(), dist.get_world_size()
        name = [f"{key}.tmp-{os.getpid()}@{platform.node()}" if rank == 0 else None]
        dist.broadcast_object_list(name, src=0)      # one temp folder for all ranks, named by rank 0's pid
        tmp = self.root / name[0]
        n = len(dataset)
        per = -(-n // world)
        rows = range(min(n, rank * per), min(n, (rank + 1) * per))
        shard = tmp / f"shard-{rank}"
        shutil.rmtree(shard, ignore_errors=True)
        shard.mkdir(parents=True)
        error = None
        try:
            meta = self._extract(encoder, dataset, blocks, kinds, shard, device, precision, batch_size,
                                 num_workers, progress and rank == 0, desc, norm, rows=rows)
            (shard / "meta.json").write_text(json.dumps(meta))
        except Exception as e:   # noqa: BLE001 - every rank must reach the barrier, then all fail together
            error = f"rank {rank}: {type(e).__name__}: {e}"
        errors = [None] * world
        dist.all_gather_object(errors, error)
        failed = [e for e in errors if e]
        if not failed and rank == 0:
            try:
                self._assemble(tmp, final, world, n)
            except Exception as e:   # noqa: BLE001
                failed = [f"rank 0 assembling {tmp}: {e}"]
        outcome = [failed]
        dist.broadcast_object_list(outcome, src=0)
        if outcome[0]:
            if rank == 0:
                shutil.rmtree(tmp, ignore_errors=True)
            raise RuntimeError("distributed feature extraction failed: " + "; ".join(outcome[0]))
        feats = self._open(final, key)
        feats.computed = True
        return feats

    @staticmethod
    def _assemble(tmp: Path, final: Path, world: int, n: int) -> None:
        """The entry from its shards, only when all of them are complete; then published by rename."""
        metas = []
        for r in range(world):
            m = tmp / f"shard-{r}" / "meta.json"
            if not m.is_file():
                raise RuntimeError(f"shard {r} of {tmp} is incomplete")
            metas.append(json.loads(m.read_text()))
        names = sorted({a for m in metas for a in m["arrays"]})
        for name in names:
            parts = [(m["rows"], np.load(tmp / f"shard-{r}" / f"{name}.npy", mmap_mode="r"))
                     for r, m in enumerate(metas) if m["n"]]
            full = np.lib.format.open_memmap(tmp / f"{name}.npy", mode="w+", dtype=np.float16,
                                             shape=(n, *parts[0][1].shape[1:]))
            for (lo, hi), arr in parts:
                full[lo:hi] = arr
            full.flush()
            del full
        meta = {**next(m for m in metas if m["n"]), "arrays": names, "n": n, "rows": [0, n], "shards": world,
                "seconds": max(m["seconds"] for m in metas)}
        for r in range(world):
            shutil.rmtree(tmp / f"shard-{r}")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        try:
            os.rename(tmp, final)
        except OSError:   # another job finished the same key first
            shutil.rmtree(tmp, ignore_errors=True)

    def _open(self, path: Path, key: str) -> Features:
        meta = json.loads((path / "meta.json").read_text())
        arrays = {name: np.load(path / f"{name}.npy", mmap_mode="r") for name in meta["arrays"]}
        return Features(arrays=arrays, key=key, path=path, meta=meta)

    def _extract(self, encoder, dataset, blocks, kinds, out: Path, device, precision, batch_size,
                 num_workers, progress, desc, norm=True, rows: range | None = None) -> dict:
        """Features of ``rows`` (default: every item) into ``out``; row k of each array = item rows[k]."""
        encoder = encoder.to(device).eval()
        if len(dataset) == 0:
            raise ValueError("cannot extract features of an empty dataset")
        rows = range(len(dataset)) if rows is None else rows
        n = len(rows)
        arrays: dict[str, np.ndarray] = {}
        start = time.perf_counter()
        bar = tqdm(total=n, desc=desc, unit="img", disable=not progress, leave=False)
        i = 0
        bs = batch_size
        # only the requested blocks are stored: the forward may stop after the deepest (passed only then, so
        # plugin encoders written before the option still work)
        early = {"final": False} if max(blocks) < encoder.info.num_layers - 1 else {}
        while i < n:
            loader = DataLoader(torch.utils.data.Subset(dataset, rows[i:]), batch_size=bs, shuffle=False,
                                num_workers=num_workers)
            try:
                for images, _ in loader:
                    with torch.inference_mode(), autocast(device, precision):
                        # norm passed only when False: plugin encoders written before the option still work
                        res = encoder(images.to(device, non_blocking=True), layers=blocks,
                                      **({} if norm else {"norm": False}), **early)
                    self.stats.forwards += 1
                    b = images.shape[0]
                    for blk in blocks:
                        lf = res.layers[blk]
                        parts = {"cls": lf.cls, "avgpool": lf.patches.mean((1, 2)), "patches": lf.patches}
                        for kind in kinds:
                            name = f"{kind}.{blk}"
                            val = parts[kind].float().cpu().numpy().astype(np.float16)
                            if name not in arrays:
                                arrays[name] = np.lib.format.open_memmap(
                                    out / f"{name}.npy", mode="w+", dtype=np.float16, shape=(n, *val.shape[1:]))
                            arrays[name][i:i + b] = val
                    i += b
                    bar.update(b)
            except RuntimeError as e:
                if is_oom(e) and bs > 1:
                    bs //= 2
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                    tqdm.write(f"out of memory: retrying with batch size {bs}")
                    continue
                raise
        bar.close()
        for a in arrays.values():
            a.flush()
        return {"arrays": sorted(arrays), "n": n, "rows": [rows.start, rows.stop], "blocks": blocks, "kinds": list(kinds), "norm": norm,
                "encoder": encoder.info.spec, "encoder_fingerprint": encoder.fingerprint(),
                "dataset_fingerprint": dataset.fingerprint(), "transform_id": dataset.transform_id,
                "seconds": round(time.perf_counter() - start, 3), "final_batch_size": bs}


def _world_size() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1
