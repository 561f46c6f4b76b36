"""Q-Former head for 3D question answering (paper App. A.4, the 3D-LLM architecture): learned queries
cross-attend to the scene's point features (with a Fourier encoding of the points' xyz), and are projected
into a frozen causal LM's input space as a soft prefix before the text prompt. Only the Q-Former trains;
the LM answers by greedy decoding with a length cap.

3D-LLM initialises its Q-Former from BLIP-2 (a BERT-base); no such weights are available offline, so this
one starts from random weights (sizes are options)."""
from __future__ import annotations

import math

import torch
from torch import nn

from heads.attention import SelfCrossLayer


def fourier_xyz(xyz: torch.Tensor, bands: int = 8, max_freq: float = 4.0) -> torch.Tensor:
    """[..., 3] metres -> [..., 3 * 2 * bands] sin/cos features at log-spaced frequencies (cycles per metre)."""
    freqs = torch.logspace(0, math.log10(max_freq), bands, device=xyz.device) * 2 * math.pi
    a = xyz[..., None] * freqs                                       # [..., 3, bands]
    return torch.cat([a.sin(), a.cos()], -1).flatten(-2)


class QFormer(nn.Module):
    """``forward(feats [B,N,D], xyz [B,N,3], mask [B,N] bool (True = real)) -> prefix [B, Q, lm_dim]``."""

    def __init__(self, point_dim: int, lm_dim: int, queries: int = 32, d: int = 768, layers: int = 6,
                 heads: int = 12, dropout: float = 0.1, bands: int = 8):
        super().__init__()
        self.bands = bands
        self.queries = nn.Parameter(torch.randn(queries, d) * 0.02)
        self.point_in = nn.Sequential(nn.LayerNorm(point_dim), nn.Linear(point_dim, d))
        self.pos_in = nn.Linear(6 * bands, d)
        self.layers = nn.ModuleList(SelfCrossLayer(d, heads, 4 * d, dropout, residual_dropout=False) for _ in range(layers))
        self.out = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, lm_dim))

    def forward(self, feats, xyz, mask):
        kv = self.point_in(feats) + self.pos_in(fourier_xyz(xyz, self.bands))
        q = self.queries[None].expand(feats.shape[0], -1, -1)
        for layer in self.layers:
            q = layer(q, kv, None, ~mask)
        return self.out(q)


class PrefixLM:
    """A frozen causal LM (HF ``AutoModelForCausalLM`` + tokenizer) that takes a soft prefix before the text:
    ``[prefix][prompt][answer eos]``; the loss covers the answer tokens only."""

    def __init__(self, model, tokenizer):
        self.model, self.tok = model, tokenizer
        self.model.eval().requires_grad_(False)
        self.embed = model.get_input_embeddings()
        self.eos = tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos

    def _ids(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def loss(self, prefix: torch.Tensor, prompts: list[str], answers: list[str]) -> torch.Tensor:
        B, Q, _ = prefix.shape
        seqs, labels = [], []
        for p, a in zip(prompts, answers):
            pi, ai = self._ids(p), self._ids(" " + a) + [self.eos]
            seqs.append(pi + ai)
            labels.append([-100] * len(pi) + ai)
        L = max(map(len, seqs))
        ids = torch.full((B, L), self.pad, dtype=torch.long)
        lab = torch.full((B, Q + L), -100, dtype=torch.long)
        am = torch.zeros(B, Q + L, dtype=torch.long)
        for b, (s, l) in enumerate(zip(seqs, labels)):
            ids[b, :len(s)] = torch.tensor(s)
            lab[b, Q:Q + len(l)] = torch.tensor(l)
            am[b, :Q + len(s)] = 1
        dev = prefix.device
        emb = torch.cat([prefix.to(self.embed.weight.dtype), self.embed(ids.to(dev))], 1)
        return self.model(inputs_embeds=emb, attention_mask=am.to(dev), labels=lab.to(dev)).loss

    @torch.no_grad()
    def generate(self, prefix: torch.Tensor, prompts: list[str], max_new_tokens: int) -> list[str]:
        """Greedy answers; prompts left-padded so every sequence ends where generation starts."""
        B, Q, _ = prefix.shape
        ids = [self._ids(p) for p in prompts]
        L = max(map(len, ids))
        tok = torch.full((B, L), self.pad, dtype=torch.long)
        am = torch.zeros(B, Q + L, dtype=torch.long)
        for b, s in enumerate(ids):
            tok[b, L - len(s):] = torch.tensor(s)
        dev = prefix.device
        text = self.embed(tok.to(dev))
        emb = torch.zeros(B, Q + L, prefix.shape[-1], dtype=text.dtype, device=dev)
        for b, s in enumerate(ids):
            pad = L - len(s)                     # [pads][prefix][prompt]
            emb[b, pad:pad + Q] = prefix[b].to(text.dtype)
            emb[b, pad + Q:] = text[b, pad:]
            am[b, pad:] = 1
        out = self.model.generate(inputs_embeds=emb, attention_mask=am.to(dev), max_new_tokens=max_new_tokens,
                                  do_sample=False, num_beams=1, eos_token_id=self.eos, pad_token_id=self.pad)
        texts = [self.tok.decode([t for t in row.tolist() if t not in (self.eos, self.pad)],
                                 skip_special_tokens=True) for row in out]
        return [t.strip().split("\n", 1)[0].strip() for t in texts]     # an answer ends at its first line break


class QAClassifier(nn.Module):
    """Closed-set answer head (ScanQA's own baseline form: a classifier over the fitting answers) with the
    Q-Former's body: learned queries and the question's token features share the self-attention (as BLIP-2's
    Q-Former shares it between queries and text), every token cross-attends to the scene's points, and the
    mean of the query outputs scores each candidate answer. No LM: the CPU-sized alternative to
    ``QFormer`` + ``PrefixLM`` (same point input, same layer).

    ``forward(feats [B,N,D], xyz [B,N,3], mask [B,N], txt [B,T,E], txt_mask [B,T]) -> logits [B, answers]``."""

    def __init__(self, point_dim: int, text_dim: int, answers: int, queries: int = 8, d: int = 128,
                 layers: int = 2, heads: int = 4, dropout: float = 0.1, bands: int = 8):
        super().__init__()
        self.bands = bands
        self.queries = nn.Parameter(torch.randn(queries, d) * 0.02)
        self.point_in = nn.Sequential(nn.LayerNorm(point_dim), nn.Linear(point_dim, d))
        self.pos_in = nn.Linear(6 * bands, d)
        self.txt_in = nn.Sequential(nn.LayerNorm(text_dim), nn.Linear(text_dim, d))
        self.layers = nn.ModuleList(SelfCrossLayer(d, heads, 4 * d, dropout, residual_dropout=False) for _ in range(layers))
        self.out = nn.Sequential(nn.LayerNorm(d), nn.Dropout(dropout), nn.Linear(d, answers))

    def forward(self, feats, xyz, mask, txt, txt_mask):
        kv = self.point_in(feats) + self.pos_in(fourier_xyz(xyz, self.bands))
        B, Q = feats.shape[0], self.queries.shape[0]
        x = torch.cat([self.queries[None].expand(B, -1, -1), self.txt_in(txt)], 1)
        pad = torch.cat([torch.zeros(B, Q, dtype=torch.bool, device=feats.device), ~txt_mask], 1)
        for layer in self.layers:
            x = layer(x, kv, pad, ~mask)
        return self.out(x[:, :Q].mean(1))
