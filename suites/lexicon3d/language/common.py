"""What the three language suites share: the data root (annotations + ScanNet root), the world's default,
scene boxes for every lifted scene, the text-feature cache, the dataset fingerprint."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from suites.images import DataError
from suites.lexicon3d.derived import DerivedCache
from suites.lexicon3d.language import annotations as A
from suites.lexicon3d.language.scenes import SceneObjects, load_objects, scannet_root
from suites.lexicon3d.scannet import ScanNetData


def default_root(workspace) -> Path:
    """``<workspace>/data/lexicon3d-lang-<world>-v<generator version>``: the world's ScanRefer / ScanQA / SQA3D files generated
    from the written ScanNet root (``scannet-<world>``, linked as ``scannet``)."""
    from suites.lexicon3d.common import default_root as scannet_default
    from suites.lexicon3d.language.world import VERSION, write_language
    scannet = scannet_default(workspace)
    return write_language(scannet, Path(workspace.data) / f"lexicon3d-lang-{workspace.world}-v{VERSION}")


def fingerprint(root: Path, files: list[Path]) -> str:
    h = hashlib.sha256(ScanNetData(scannet_root(root)).fingerprint().encode())
    for f in files:
        h.update(f.name.encode())
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()[:16]


def scene_objects(scannet: Path, data: ScanNetData) -> dict[str, SceneObjects]:
    return {s.name: load_objects(scannet, s.name, s.split) for s in data.scenes}


def encode_texts(ctx, spec: str, max_tokens: int, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Token features of ``texts`` (unique strings), cached beside the lifted features: text features do
    not depend on the vision encoder, so every encoder's run reuses them."""
    from suites.lexicon3d.language.text import TextEncoder
    cache = DerivedCache(Path(ctx.cache.root) / "derived")
    parts = {"text": spec, "max_tokens": max_tokens,
             "texts": hashlib.sha256("\n".join(texts).encode()).hexdigest(), "n": len(texts), "v": 1}

    def compute():
        enc = TextEncoder(spec, max_tokens, ctx.device)
        tok, mask = enc.encode(texts)
        return {"tokens": tok.half().numpy(), "mask": mask.numpy()}, {"dim": enc.dim}

    e = cache.get_or_compute(parts, compute)
    return torch.from_numpy(np.array(e["tokens"], np.float32)), torch.from_numpy(np.array(e["mask"])), e.meta["dim"]


def split_names(lifted, fraction: float) -> tuple[set[str], set[str], set[str]]:
    from suites.lexicon3d.common import split_scenes
    fit, hold, val = split_scenes(lifted, fraction)
    return ({lifted.scenes[k] for k in fit}, {lifted.scenes[k] for k in hold}, {lifted.scenes[k] for k in val})


def read_split(root: Path, kind: str, split: str, objects: dict, limit: int | None = None):
    """Records of one split, checked against the scenes/objects (unknown ids name the file)."""
    if kind == "sqa3d":
        qp, ap = A.find(root, "sqa3d_q", split), A.find(root, "sqa3d_a", split)
        recs, path, files = A.read_sqa3d(qp, ap), qp, [qp, ap]
    else:
        path = A.find(root, kind, split)
        recs = A.read_scanrefer(path) if kind == "scanrefer" else A.read_scanqa(path)
        files = [path]
    A.check(path, recs, objects, check_objects=kind != "sqa3d")
    if not recs:
        raise DataError(f"'{path}' holds no records")
    return recs, files
