"""REGTR-style cross-encoder for partial point-cloud registration (Yew & Lee 2022; Lexicon3D's GU probe).

Per cloud: ``Linear(D, d)`` on the point features, a 3D sine positional encoding of the point coordinates
(each in its own frame), then ``layers`` x [self-attention within each cloud, cross-attention to the other
cloud, FFN] (pre-norm, positions added to queries and keys as in REGTR). Output heads: an overlap logit per
point, and a correspondence = the attention-weighted mean of the other cloud's coordinates (REGTR's
"weighted coordinates" variant, which a probe trained on a few scenes learns far faster than REGTR's final
coordinate-regressing MLP). The pose is the overlap-weighted Kabsch fit over both directions' correspondences.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def kabsch(src: torch.Tensor, tgt: torch.Tensor, weights: torch.Tensor | None = None,
           eps: float = 1e-9) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted least-squares rigid transform (R, t) with R src + t ~ tgt (Kabsch-Umeyama without scale).
    ``src``/``tgt`` [..., N, 3], ``weights`` [..., N] (>= 0). The reflection fix: det(R) = +1 always
    (the last singular direction is flipped when the best orthogonal fit is a reflection)."""
    if weights is None:
        weights = torch.ones(src.shape[:-1], dtype=src.dtype, device=src.device)
    w = weights / weights.sum(-1, keepdim=True).clamp_min(eps)
    cs = (w[..., None] * src).sum(-2, keepdim=True)
    ct = (w[..., None] * tgt).sum(-2, keepdim=True)
    H = (src - cs).transpose(-1, -2) @ (w[..., None] * (tgt - ct))      # [..., 3, 3]
    U, _, Vh = torch.linalg.svd(H)
    V = Vh.transpose(-1, -2)
    d = torch.sign(torch.linalg.det(V @ U.transpose(-1, -2)))
    d = torch.where(d == 0, torch.ones_like(d), d)
    D = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], -1))
    R = V @ D @ U.transpose(-1, -2)
    t = ct.squeeze(-2) - (R @ cs.transpose(-1, -2)).squeeze(-1)
    return R, t


class SinePositionalEncoding3D(nn.Module):
    """Sine/cosine of each coordinate at ``d // 6`` geometric frequencies (DETR's 2D encoding in 3D, as
    REGTR's PositionEmbeddingCoordsSine), zero-padded to ``d``; ``scale`` converts metres to radians (the
    shortest period is 2 pi / scale = 0.25 m, the longest 1000x that)."""

    def __init__(self, d: int, scale: float = 8 * math.pi, temperature: float = 1000.0):
        super().__init__()
        self.d = d
        self.nf = max(1, d // 6)
        self.scale = scale
        self.register_buffer("freq", temperature ** (torch.arange(self.nf, dtype=torch.float32) / self.nf),
                             persistent=False)

    def forward(self, xyz: torch.Tensor) -> torch.Tensor:
        x = xyz[..., None] * self.scale / self.freq                      # [..., 3, nf]
        enc = torch.cat([x.sin(), x.cos()], -1).flatten(-2)               # [..., 6 nf]
        return F.pad(enc, (0, self.d - enc.shape[-1]))


class CrossEncoderLayer(nn.Module):
    def __init__(self, d: int, heads: int, ffn: int, dropout: float = 0.0):
        super().__init__()
        self.n1, self.n2, self.n3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.self_attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(d, ffn), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn, d))

    def forward(self, a, b, pa, pb):
        """One layer for both clouds (shared weights, as REGTR)."""
        ha, hb = self.n1(a), self.n1(b)
        a = a + self.self_attn(ha + pa, ha + pa, ha, need_weights=False)[0]
        b = b + self.self_attn(hb + pb, hb + pb, hb, need_weights=False)[0]
        ha, hb = self.n2(a), self.n2(b)
        a2 = a + self.cross_attn(ha + pa, hb + pb, hb, need_weights=False)[0]
        b2 = b + self.cross_attn(hb + pb, ha + pa, ha, need_weights=False)[0]
        return a2 + self.ffn(self.n3(a2)), b2 + self.ffn(self.n3(b2))


class RegTRHead(nn.Module):
    def __init__(self, in_dim: int, d: int = 256, heads: int = 8, ffn: int = 1024, layers: int = 6,
                 pos_scale: float = 8 * math.pi, distance_prior: float = 0.0):
        super().__init__()
        # optional (not REGTR's): attention logits of the correspondence heads get -||x_s - x_t||^2 / sigma^2
        # with a learned sigma starting at ``distance_prior`` (m), i.e. the prior that the two clouds are
        # roughly aligned already (small random motions); 0 = off
        self.log_sigma = nn.Parameter(torch.tensor(math.log(distance_prior))) if distance_prior > 0 else None
        self.proj = nn.Linear(in_dim, d)
        self.pos = SinePositionalEncoding3D(d, pos_scale)
        self.layers = nn.ModuleList([CrossEncoderLayer(d, heads, ffn) for _ in range(layers)])
        self.norm = nn.LayerNorm(d)
        self.overlap = nn.Linear(d, 1)
        self.q = nn.Linear(d, d)
        self.k = nn.Linear(d, d)

    def forward(self, fs, xs, ft, xt) -> dict[str, torch.Tensor]:
        """fs [B,N,D] / xs [B,N,3] source features / coordinates, ft / xt target. Returns overlap logits,
        correspondences (source points in the target frame and vice versa) and the pose (R, t) source->target."""
        xs_c = xs - xs.mean(1, keepdim=True)                # encodings of centred coordinates: translation-free
        xt_c = xt - xt.mean(1, keepdim=True)
        ps, pt = self.pos(xs_c), self.pos(xt_c)
        a, b = self.proj(fs), self.proj(ft)
        for layer in self.layers:
            a, b = layer(a, b, ps, pt)
        a, b = self.norm(a), self.norm(b)
        scale = 1.0 / math.sqrt(a.shape[-1])
        logit_st = self.q(a) @ self.k(b).transpose(1, 2) * scale                   # [B, N, M]
        logit_ts = self.q(b) @ self.k(a).transpose(1, 2) * scale                   # [B, M, N]
        if self.log_sigma is not None:
            prior = torch.cdist(xs, xt) ** 2 / torch.exp(2 * self.log_sigma)
            logit_st, logit_ts = logit_st - prior, logit_ts - prior.transpose(1, 2)
        att_st, att_ts = torch.softmax(logit_st, -1), torch.softmax(logit_ts, -1)
        corr_s = att_st @ xt                                # source points predicted in the target frame
        corr_t = att_ts @ xs                                # target points predicted in the source frame
        ov_s, ov_t = self.overlap(a).squeeze(-1), self.overlap(b).squeeze(-1)
        src = torch.cat([xs, corr_t], 1)
        tgt = torch.cat([corr_s, xt], 1)
        w = torch.cat([torch.sigmoid(ov_s), torch.sigmoid(ov_t)], 1)
        R, t = kabsch(src, tgt, w)
        return {"overlap_s": ov_s, "overlap_t": ov_t, "corr_s": corr_s, "corr_t": corr_t, "R": R, "t": t}


def transform(R: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """R x + t for points [..., N, 3] with R [..., 3, 3], t [..., 3]."""
    return x @ R.transpose(-1, -2) + t[..., None, :]


def regtr_loss(out: dict, xs, xt, R_gt, t_gt, ov_s, ov_t, w_overlap: float = 1.0, w_corr: float = 1.0,
               w_pose: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
    """Overlap BCE (both clouds) + correspondence L1 on the ground-truth overlap points (both directions) +
    transformation loss (mean distance between the source under the estimated and the true pose)."""
    bce = 0.5 * (F.binary_cross_entropy_with_logits(out["overlap_s"], ov_s)
                 + F.binary_cross_entropy_with_logits(out["overlap_t"], ov_t))
    gs = transform(R_gt, t_gt, xs)                                         # source in the target frame
    Rinv = R_gt.transpose(-1, -2)
    gt_ = transform(Rinv, -(Rinv @ t_gt[..., None]).squeeze(-1), xt)      # target in the source frame

    def masked_l1(pred, gt, m):
        e = (pred - gt).abs().sum(-1)
        return (e * m).sum() / m.sum().clamp_min(1.0)

    corr = 0.5 * (masked_l1(out["corr_s"], gs, ov_s) + masked_l1(out["corr_t"], gt_, ov_t))
    pose = (transform(out["R"], out["t"], xs) - gs).norm(dim=-1).mean()
    total = w_overlap * bce + w_corr * corr + w_pose * pose
    return total, {"overlap": float(bce.detach()), "corr": float(corr.detach()), "pose": float(pose.detach())}
