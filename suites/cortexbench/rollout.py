"""Policy rollouts in lockstep: many episodes stepped together, one batched encoder forward per env step.

The envs live in worker processes (`suites.cortexbench.vecenv`: simulation + one renderer per process); the
encoder and the policies stay in this process. Per step, for every running episode: the frame rendered
before the action (`SimEnv.render`) is embedded with the frozen encoder (same transform as the demo frames,
rounded through float16 as the feature cache stores them) in ONE forward over all episodes that need a
frame, the last ``H`` embeddings are fused (`heads.bc_policy.fuse_history`), proprioception appended, and
each policy acts on its episodes in eval mode. An episode's numbers depend only on its policy and env seed,
not on which other episodes share its steps (tested: lockstep rows == one-episode-at-a-time rows).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from heads.bc_policy import fuse_history


@dataclass
class Embedder:
    """Frames -> [N, D] [CLS] embeddings of block ``layer`` (one batched forward)."""
    encoder: object
    transform: object
    layer: int
    device: torch.device
    precision: str = "fp32"

    def __call__(self, frames: list[np.ndarray]) -> torch.Tensor:
        from harness.device import autocast
        x = torch.stack([self.transform(f) for f in frames]).to(self.device)
        with torch.inference_mode(), autocast(self.device, self.precision):
            out = self.encoder(x, layers=[self.layer], final=False)   # stops after that block (base contract)
        # the demo features come from the cache as float16: round the same way
        return out.layers[self.layer].cls.float().cpu().half().float()


class _Episode:
    __slots__ = ("job", "slot", "seed", "policy", "frame", "proprio", "hist", "total", "success", "steps", "first",
                 "t_render", "t_embed", "t_policy", "t_sim", "frames", "last")

    def __init__(self, job, slot, seed, policy):
        self.job, self.slot, self.seed, self.policy = job, slot, seed, policy
        self.frame = self.proprio = None
        self.hist: list[torch.Tensor] = []
        self.total, self.success, self.steps, self.first = 0.0, False, 0, -1
        self.t_render = self.t_embed = self.t_policy = self.t_sim = 0.0
        self.frames: list[tuple[int, np.ndarray]] = []
        self.last = None

    def row(self, kind: str) -> dict:
        out = {"seed": int(self.seed), "return": self.total, "success": bool(self.success), "reached": self.first >= 0,
               "first_success": self.first, "steps": self.steps, "kind": kind, "t_render": self.t_render,
               "t_embed": self.t_embed, "t_policy": self.t_policy, "t_sim": self.t_sim}
        if self.last is not None:
            out["frames"] = self.frames + ([self.last] if self.frames[-1][0] != self.last[0] else [])
        return out


def run_rollouts(envs, policies: list, jobs: list[tuple[int, int]], *, embed=None, history: int = 3,
                 use_proprio: bool = True, stop_at_success: bool = False, record_job: int | None = None,
                 record_frames: int = 0) -> list[dict]:
    """Roll out ``jobs`` = ``[(policy index, env seed), ...]`` on ``envs`` (`vecenv.EnvWorkers` or
    `vecenv.LocalEnvs`), up to ``envs.n`` of them in lockstep; one row per job, in job order: return,
    success at the last step executed (CortexBench's ``env_infos["success"][-1]``), whether and when success
    was first reached, steps, CPU seconds per part (``t_render``/``t_sim`` in the env's process, ``t_embed``/
    ``t_policy`` here; batched work split evenly over its episodes). The episode of job ``record_job`` also returns ``frames``:
    ``record_frames`` of the frames it rendered anyway (evenly spaced over the horizon, plus the last), as
    ``[(step, frame), ...]``.

    A policy's ``kind`` says what it reads: ``bc`` (fused frame embeddings, + proprioception if
    ``use_proprio``), ``proprio`` (proprioception alone: nothing is rendered or embedded) or
    ``mean_action`` (a constant action, the floor: nothing is rendered either)."""
    kinds = [getattr(p, "kind", "bc") for p in policies]
    horizon = envs.horizon
    stride = max(1, -(-horizon // max(1, record_frames - 1)))
    rows: list[dict | None] = [None] * len(jobs)
    for start in range(0, len(jobs), envs.n):
        eps = [_Episode(j, j - start, jobs[j][1], jobs[j][0]) for j in range(start, min(start + envs.n, len(jobs)))]
        needs = {e.job: kinds[e.policy] == "bc" for e in eps}
        for e, (frame, proprio, t_r, t_s) in zip(eps, envs.reset([(e.slot, e.seed, needs[e.job]) for e in eps])):
            e.frame, e.proprio, e.t_render, e.t_sim = frame, proprio, t_r, t_s
        active = list(eps)
        for t in range(horizon):
            if not active:
                break
            seeing = [e for e in active if needs[e.job]]
            for e in seeing:
                if e.job == record_job and record_frames > 0:
                    e.last = (e.steps, e.frame)
                    if e.steps % stride == 0:
                        e.frames.append(e.last)
            if seeing:
                t0 = time.process_time()
                emb = embed([e.frame for e in seeing])
                dt = (time.process_time() - t0) / len(seeing)
                for e, v in zip(seeing, emb):
                    e.hist = (e.hist + [v])[-history:] if e.hist else [v] * history
                    e.t_embed += dt
            actions = {}
            for p in sorted({e.policy for e in active}):
                group = [e for e in active if e.policy == p]
                t0 = time.process_time()
                if kinds[p] == "bc":
                    feat = fuse_history(torch.stack([torch.stack(e.hist) for e in group]))
                    if use_proprio:
                        feat = torch.cat([feat, torch.from_numpy(np.stack([e.proprio for e in group]))], 1)
                elif kinds[p] == "proprio":
                    feat = torch.from_numpy(np.stack([e.proprio for e in group]))
                else:
                    feat = torch.zeros(len(group), 0)
                with torch.inference_mode():    # row by row: a batched matmul may round differently
                    act = torch.cat([policies[p](f[None]) for f in feat]).numpy()
                dt = (time.process_time() - t0) / len(group)
                for e, a in zip(group, act):
                    actions[e.job] = a
                    e.t_policy += dt
            render_next = t < horizon - 1
            out = envs.step([(e.slot, actions[e.job], needs[e.job] and render_next) for e in active])
            still = []
            for e, (reward, success, frame, proprio, t_r, t_s) in zip(active, out):
                e.total += reward
                e.success = success
                if success and e.first < 0:
                    e.first = e.steps
                e.steps += 1
                e.frame, e.proprio = frame, proprio
                e.t_render += t_r
                e.t_sim += t_s
                if not (success and stop_at_success):
                    still.append(e)
            active = still
        for e in eps:
            rows[e.job] = e.row(kinds[e.policy])
    return rows
