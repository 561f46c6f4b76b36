"""CortexBench's behaviour-cloning policy on frozen embeddings (eai-vc ``mujoco_vc``, mjrl BatchNormMLP).

- ``fuse_history``: the embeddings of the last ``H`` frames (oldest first, the first frame repeated at the
  start of an episode) become ``[e1-e0, e2-e1, ..., e_last]`` (eai-vc ``fuse_embeddings_flare``).
- ``BCPolicy``: BatchNorm1d on the input, then Linear+ReLU hidden layers (256, 256, 256) and a linear
  output (mjrl ``FCNetworkWithBatchNorm``; dropout 0). Trained with MSE, Adam 1e-3, batch 256; actions
  are the network output in eval mode (the Gaussian policy's mean).
- ``MeanActionPolicy``: the floor of every CortexBench table (issue #12): the mean training action,
  whatever the observation; rolled out with the same protocol, it says what a task gives for free.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn


def history_indices(length: int, window: int) -> np.ndarray:
    """[T, window] frame indices: row t = (max(t-window+1, 0), ..., t), oldest first."""
    t = np.arange(length)[:, None]
    k = np.arange(window - 1, -1, -1)[None, :]
    return np.maximum(t - k, 0)


def fuse_history(emb: torch.Tensor) -> torch.Tensor:
    """[B, H, D] embeddings (oldest first) -> [B, H*D] = deltas of consecutive embeddings + the last one."""
    deltas = [emb[:, i + 1] - emb[:, i] for i in range(emb.shape[1] - 1)]
    return torch.cat(deltas + [emb[:, -1]], dim=1)


def episode_features(emb: torch.Tensor, proprio: torch.Tensor | None, window: int) -> torch.Tensor:
    """All timesteps of one episode: [T, D] embeddings (+ [T, P] proprioception) -> [T, window*D (+P)]."""
    idx = torch.from_numpy(history_indices(emb.shape[0], window))
    feats = fuse_history(emb[idx])
    if proprio is not None and proprio.shape[-1] > 0:
        feats = torch.cat([feats, proprio.to(feats.dtype)], dim=1)
    return feats


class BCPolicy(nn.Module):
    def __init__(self, in_dim: int, act_dim: int, hidden: Sequence[int] = (256, 256, 256), dropout: float = 0.0,
                 kind: str = "bc"):
        super().__init__()
        self.kind = kind    # what rollouts feed it: "bc" fused frame embeddings (+ proprio), "proprio" only that
        self.in_dim, self.act_dim, self.hidden = int(in_dim), int(act_dim), tuple(int(h) for h in hidden)
        self.input_bn = nn.BatchNorm1d(self.in_dim)
        sizes = (self.in_dim, *self.hidden, self.act_dim)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_bn(x)
        for layer in self.layers[:-1]:
            x = self.dropout(torch.relu(layer(x)))
        return self.layers[-1](x)

    def config(self) -> dict:
        return {"kind": self.kind, "in_dim": self.in_dim, "act_dim": self.act_dim, "hidden": list(self.hidden)}


class MeanActionPolicy(nn.Module):
    """Outputs the mean of the training actions for every input (no encoder, no observation)."""
    kind = "mean_action"

    def __init__(self, action):
        super().__init__()
        self.register_buffer("action", torch.as_tensor(action, dtype=torch.float32).reshape(-1).clone())

    @classmethod
    def fit(cls, actions: torch.Tensor) -> "MeanActionPolicy":
        return cls(torch.as_tensor(actions, dtype=torch.float32).mean(0))

    def forward(self, x: torch.Tensor | None = None) -> torch.Tensor:
        n = 1 if x is None else len(x)
        return self.action[None].expand(n, -1)

    def config(self) -> dict:
        return {"kind": self.kind, "act_dim": int(self.action.numel())}


def policy_from_config(cfg: dict, state: dict) -> nn.Module:
    """Rebuild a policy shipped to a rollout worker as (``config()``, ``state_dict()``); eval mode."""
    kind = cfg.get("kind", "bc")
    if kind == "mean_action":
        return MeanActionPolicy(state["action"]).eval()
    if kind not in ("bc", "proprio"):
        raise ValueError(f"unknown policy kind '{kind}'")
    policy = BCPolicy(cfg["in_dim"], cfg["act_dim"], cfg["hidden"], kind=kind)
    policy.load_state_dict(state)
    return policy.eval()


def train_epoch(policy: BCPolicy, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, batch_size: int,
                generator: torch.Generator, on_step: Callable[[float], None] | None = None) -> float:
    """One shuffled pass over (x, y) with MSE; a trailing batch of one sample is dropped (BatchNorm
    cannot train on it). Returns the mean batch loss."""
    policy.train()
    perm = torch.randperm(len(x), generator=generator)
    losses = []
    for s in range(0, len(perm), batch_size):
        sel = perm[s:s + batch_size]
        if len(sel) < 2:
            continue
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.mse_loss(policy(x[sel]), y[sel])
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(losses[-1])
    policy.eval()
    return float(np.mean(losses)) if losses else float("nan")
