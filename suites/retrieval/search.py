"""Chunked cosine-similarity search (torch; CPU or CUDA).

Galleries come from the feature cache as float16 memmaps (Met: ~400k x D). Converting one to float32 at
once, or forming the full [n_queries, n_gallery] similarity matrix for many queries, would not fit, so
gallery rows are read, upcast and L2-normalised one chunk at a time, and the work is split into query
blocks whose similarity block stays under ``max_block`` elements.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["rank_gallery", "cosine_normalize"]


def cosine_normalize(x: torch.Tensor) -> torch.Tensor:
    """float32 and unit L2 norm per row (zero rows stay zero, so their similarities are 0)."""
    return F.normalize(x.float(), dim=1, eps=1e-12)


def _rows(x: Any, a: int, b: int, device: torch.device) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x[a:b]
    else:
        block = np.ascontiguousarray(x[a:b])
        if not block.flags.writeable:  # read-only memmap: torch wants a writable buffer
            block = block.copy()
        t = torch.from_numpy(block)
    return cosine_normalize(t.to(device, non_blocking=True))


def _shape(x: Any, what: str) -> tuple[int, int]:
    shp = tuple(x.shape)
    if len(shp) != 2:
        raise ValueError(f"{what} must be 2-D [n, dim], got shape {shp}")
    return shp  # type: ignore[return-value]


@torch.no_grad()
def rank_gallery(query_feats: Any, gallery_feats: Any, *, chunk: int = 32768, topk: int | None = None,
                 device: str | torch.device | None = None, return_scores: bool = False,
                 max_block: int = 1 << 24) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Rank gallery items for each query by cosine similarity (features L2-normalised here).

    query_feats [nq, D], gallery_feats [ng, D]: numpy arrays (memmaps welcome) or torch tensors, any
    float dtype; computation in float32 on ``device`` (default: the query tensor's device, else CPU).
    chunk: gallery rows processed at a time. topk: None -> full ranking [nq, ng] (stable: equal
    similarities keep gallery order, like a stable argsort); k -> the best min(k, ng) [nq, k] (order
    among exactly equal similarities unspecified). max_block: elements of one similarity block.
    Returns int64 indices (numpy, CPU), best first; with ``return_scores`` also float32 similarities.
    Peak memory ~ (4 + 8) bytes x the output size + one block, independent of a full similarity matrix
    for top-k.
    """
    nq, d = _shape(query_feats, "query_feats")
    ng, dg = _shape(gallery_feats, "gallery_feats")
    if d != dg:
        raise ValueError(f"query dim {d} != gallery dim {dg}")
    if ng == 0 or nq == 0:
        raise ValueError(f"empty input: {nq} queries, {ng} gallery items")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    if device is None:
        device = query_feats.device if isinstance(query_feats, torch.Tensor) else "cpu"
    device = torch.device(device)
    if topk is not None:
        if topk < 1:
            raise ValueError(f"topk must be >= 1, got {topk}")
        return _topk(query_feats, gallery_feats, nq, ng, min(int(topk), ng), chunk, device, return_scores,
                     max_block)
    return _full(query_feats, gallery_feats, nq, ng, chunk, device, return_scores, max_block)


def _full(q, g, nq, ng, chunk, device, return_scores, max_block):
    ranks = np.empty((nq, ng), dtype=np.int64)
    scores = np.empty((nq, ng), dtype=np.float32) if return_scores else None
    qb = max(1, min(nq, max_block // ng))
    for a in range(0, nq, qb):
        qa = _rows(q, a, a + qb, device)
        sims = torch.empty((qa.shape[0], ng), dtype=torch.float32, device=device)
        for c in range(0, ng, chunk):
            sims[:, c:c + chunk] = qa @ _rows(g, c, c + chunk, device).T
        b = a + qa.shape[0]
        if device.type == "cpu":  # sort straight into the output arrays (saves one copy of each)
            vals = torch.from_numpy(scores[a:b]) if scores is not None else torch.empty_like(sims)
            torch.sort(sims, dim=1, descending=True, stable=True, out=(vals, torch.from_numpy(ranks[a:b])))
        else:
            vals, idx = torch.sort(sims, dim=1, descending=True, stable=True)
            ranks[a:b] = idx.cpu().numpy()
            if scores is not None:
                scores[a:b] = vals.cpu().numpy()
            del idx
        del sims, vals
    return (ranks, scores) if return_scores else ranks


def _topk(q, g, nq, ng, k, chunk, device, return_scores, max_block):
    # gallery-outer loop: the gallery is read once; every query keeps a running top-k.
    qb = max(1, min(nq, max_block // min(chunk, ng)))
    qblocks = [(a, _rows(q, a, a + qb, device)) for a in range(0, nq, qb)]
    best_v = torch.full((nq, k), -float("inf"), device=device)
    best_i = torch.full((nq, k), -1, dtype=torch.int64, device=device)
    for c in range(0, ng, chunk):
        gc = _rows(g, c, c + chunk, device)
        kc = min(k, gc.shape[0])
        for a, qa in qblocks:
            v, i = torch.topk(qa @ gc.T, kc, dim=1)
            cat_v = torch.cat([best_v[a:a + qa.shape[0]], v], dim=1)
            cat_i = torch.cat([best_i[a:a + qa.shape[0]], i + c], dim=1)
            top_v, pos = torch.topk(cat_v, k, dim=1)
            best_v[a:a + qa.shape[0]] = top_v
            best_i[a:a + qa.shape[0]] = torch.gather(cat_i, 1, pos)
    ranks = best_i.cpu().numpy()
    return (ranks, best_v.cpu().numpy()) if return_scores else ranks
