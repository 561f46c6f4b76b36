"""Lifted point features of a ScanNet root for one encoder: 2D patch maps through the feature cache (one
forward per frame), lifted per scene (lifting.py), the result cached as a derived entry keyed by the 2D
cache key plus the lifting parameters, so every Lexicon3D suite and later run shares one lifting pass."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms import v2 as T

from suites.images import read_rgb
from suites.lexicon3d.derived import DerivedCache
from suites.lexicon3d.lifting import LiftParams, frame_groups, lift, resize_depth, select_points
from suites.lexicon3d.scannet import ScanNetData, Scene, load_cloud

try:
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover
    tqdm = None

_INTERP = {"bicubic": T.InterpolationMode.BICUBIC, "bilinear": T.InterpolationMode.BILINEAR,
           "nearest": T.InterpolationMode.NEAREST}


def input_hw(frame_hw: tuple[int, int], patch: int) -> tuple[int, int]:
    """The encoder input: each side of the frame rounded to the nearest multiple of the patch size."""
    return tuple(max(patch, int(round(s / patch)) * patch) for s in frame_hw)


class FrameDataset:
    """Every frame (with a valid pose) of every scene, resized to the encoder input and normalised with
    the encoder's own mean/std (Lexicon3D's DINOv2 script uses CLIP's: deliberately not copied)."""

    def __init__(self, data: ScanNetData, p: LiftParams, info):
        self.data = data
        self.items: list[tuple[Scene, str]] = []
        self.poses: dict[tuple[str, str], np.ndarray] = {}
        self.skipped: list[str] = []
        for s in data.scenes:
            for f in s.frame_ids[::p.frame_stride]:
                pose = s.pose(f)
                if pose is None:
                    self.skipped.append(f"{s.name}/{f}")
                    continue
                self.items.append((s, f))
                self.poses[(s.name, f)] = pose
        self.hw = input_hw(p.frame_hw, info.patch_size)
        self.tf = T.Compose([T.ToImage(), T.Resize(self.hw, interpolation=_INTERP[info.interpolation], antialias=True),
                             T.ToDtype(torch.float32, scale=True), T.Normalize(info.mean, info.std)])
        self.transform_id = f"lexicon3d-frames-{self.hw[0]}x{self.hw[1]}-{info.interpolation}-stride{p.frame_stride}"
        self._fp = f"{data.fingerprint()}-{len(self.items)}"

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        s, f = self.items[i]
        return self.tf(read_rgb(s.color(f))), 0

    def fingerprint(self) -> str:
        return self._fp


@dataclass
class Lifted:
    """Per-point arrays of all scenes, concatenated (scene k = rows offsets[k]:offsets[k+1])."""
    scenes: list[str]
    splits: list[str]
    offsets: np.ndarray
    coords: np.ndarray       # [N, 3] float32
    labels: np.ndarray       # [N] int64
    feats: np.ndarray        # [2, N, D] float16: mean over first-half / second-half frames
    counts: np.ndarray       # [2, N] int32: visible frames per group
    key: str = ""
    computed: bool = False
    seconds: float = 0.0

    def scene(self, k: int) -> slice:
        return slice(int(self.offsets[k]), int(self.offsets[k + 1]))

    def all_views(self, sl: slice) -> np.ndarray:
        """Mean over every frame = the count-weighted mean of the two groups (float32 [n, D])."""
        c = self.counts[:, sl].astype(np.float32)
        f = self.feats[:, sl].astype(np.float32)
        return (f[0] * c[0][:, None] + f[1] * c[1][:, None]) / np.maximum(c.sum(0), 1)[:, None]


def lifted_features(ctx, data: ScanNetData, p: LiftParams, layer: int, desc: str = "lifting") -> Lifted:
    """Lifted features of ``layer`` (a resolved block index) for every scene of ``data``."""
    enc = ctx.encoder
    frames = FrameDataset(data, p, enc.info)
    feats2d = ctx.features(frames, [layer], ("patches",), desc="frame features")
    pm = feats2d[f"patches.{layer}"]
    cache = DerivedCache(Path(ctx.cache.root) / "derived")
    parts = {"features2d": feats2d.key, "layer": layer, "lift": p.key(), "clouds": data.fingerprint()}
    index = {key: i for i, key in enumerate((s.name, f) for s, f in frames.items)}

    def compute():
        t0 = time.perf_counter()
        scenes = data.scenes
        bar = tqdm(total=len(scenes), desc=desc, unit="scene", disable=not ctx.progress, leave=False) if tqdm else None
        C, L, Fs, Cs, off = [], [], [], [], [0]
        for k, s in enumerate(scenes):
            coords, _, labels = load_cloud(s.cloud)
            sel = select_points(coords, p, k)
            pts = coords[sel]
            fids = [f for f in s.frame_ids[::p.frame_stride] if (s.name, f) in index]
            K = s.intrinsics(p.frame_hw) if fids else None
            items = ((torch.from_numpy(np.asarray(pm[index[(s.name, f)]], dtype=np.float32)),
                      frames.poses[(s.name, f)], K, resize_depth(s.depth(f), p.frame_hw)) for f in fids)
            f, c = lift(pts, items, p.frame_hw, p, pm.shape[-1], frame_groups(len(fids)))
            if f.shape[0] == 1:   # a scene with a single frame: no second half
                f, c = np.concatenate([f, np.zeros_like(f)]), np.concatenate([c, np.zeros_like(c)])
            C.append(pts.astype(np.float32))
            L.append(labels[sel])
            Fs.append(f.astype(np.float16))
            Cs.append(c)
            off.append(off[-1] + len(pts))
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        arrays = {"coords": np.concatenate(C), "labels": np.concatenate(L), "feats": np.concatenate(Fs, axis=1),
                  "counts": np.concatenate(Cs, axis=1), "offsets": np.asarray(off, np.int64)}
        meta = {"scenes": [s.name for s in scenes], "splits": [s.split for s in scenes],
                "skipped_frames": frames.skipped, "seconds": round(time.perf_counter() - t0, 3)}
        return arrays, meta

    e = cache.get_or_compute(parts, compute)
    return Lifted(e.meta["scenes"], e.meta["splits"], np.asarray(e["offsets"]), e["coords"], e["labels"], e["feats"],
                  e["counts"], e.key, e.computed, e.meta.get("seconds", 0.0))
