"""DINOv2's weighted kNN classifier: cosine similarity of L2-normalised features, votes softmax(sim/T)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def knn_predict(train: torch.Tensor, train_labels: torch.Tensor, query: torch.Tensor, n_classes: int,
                ks=(10, 20, 100, 200), T: float = 0.07, chunk: int = 1024) -> dict[int, torch.Tensor]:
    """-> {k: class scores [Q, C]}; k larger than the bank is clipped to the bank size."""
    if not ks or min(ks) < 1:
        raise ValueError(f"kNN needs k >= 1, got {tuple(ks)}")
    if train.shape[0] == 0:
        raise ValueError("kNN needs a non-empty training bank")
    train = F.normalize(train.float(), dim=-1)
    query = F.normalize(query.float(), dim=-1)
    kmax = min(max(ks), train.shape[0])
    out = {k: [] for k in ks}
    for s in range(0, query.shape[0], chunk):
        sim = query[s:s + chunk] @ train.T                      # [q, N]
        top_sim, top_idx = sim.topk(kmax, dim=-1)
        votes = F.one_hot(train_labels[top_idx], n_classes).float()   # [q, kmax, C]
        w = (top_sim / T).exp()
        for k in ks:
            kk = min(k, kmax)
            out[k].append((votes[:, :kk] * w[:, :kk, None]).sum(1))
    return {k: torch.cat(v) for k, v in out.items()}
