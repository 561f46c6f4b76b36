"""Policy rollouts in worker processes (spawn): one env, one renderer and one encoder copy per process.

Per step: render the frame (``SimEnv.render``, the cost), embed it with the frozen encoder (same transform
as the demo frames, rounded through float16 as the feature cache stores it), fuse the last ``H`` embeddings
(`heads.bc_policy.fuse_history`), append proprioception, act with the policy in eval mode.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

_W: dict = {}


def spawn_pool(n: int) -> ProcessPoolExecutor:
    os.environ.setdefault("MUJOCO_GL", "egl")
    return ProcessPoolExecutor(max_workers=n, mp_context=mp.get_context("spawn"))


@dataclass
class WorkerSpec:
    suite: str
    task: str
    size: int
    env_kwargs: dict
    encoder: object            # encoders.base.Encoder (pickled once per worker)
    crop: int | None
    device: str
    precision: str
    layer: int
    history: int
    use_proprio: bool
    threads: int = 1
    workspace: object = None       # harness.workspace.Workspace: a rebuilt encoder finds the run's converted weights


def _worker_encoder(spec: WorkerSpec):
    """Rebuild the encoder from its spec and load the run's weights into it; fall back to the pickled module.

    Rebuilding matters: a Hugging Face model unpickled in a fresh process (transformers 5.x) returns no
    hidden states, so the pickled copy alone is not safe for every family. The fingerprint must match."""
    enc = spec.encoder
    name = getattr(getattr(enc, "info", None), "spec", None)
    if name:
        try:
            from harness.registry import build_encoder
            from harness.workspace import open_workspace
            fresh = build_encoder(name, open_workspace(spec.workspace))
            fresh.load_state_dict(enc.state_dict())
            fresh._fingerprint = None
            if fresh.fingerprint() == enc.fingerprint():
                return fresh
        except Exception:  # noqa: BLE001 - not rebuildable from its spec (e.g. built in memory)
            pass
    return enc


def init_worker(spec: WorkerSpec) -> None:
    torch.set_num_threads(spec.threads)
    from suites.cortexbench.envs import make_env
    from suites.images import eval_transform
    _W.clear()
    _W["spec"] = spec
    _W["env"] = make_env(spec.suite, spec.task, spec.size, **spec.env_kwargs)
    _W["encoder"] = _worker_encoder(spec).to(spec.device).eval()
    _W["transform"] = eval_transform(spec.encoder.info, spec.crop)[0]


def embed(frames: list[np.ndarray]) -> torch.Tensor:
    from harness.device import autocast
    spec: WorkerSpec = _W["spec"]
    x = torch.stack([_W["transform"](f) for f in frames]).to(spec.device)
    dev = torch.device(spec.device)
    with torch.inference_mode(), autocast(dev, spec.precision):
        out = _W["encoder"](x, layers=[spec.layer])
    # the demo features come from the cache as float16: round the same way
    return out.layers[spec.layer].cls.float().cpu().half().float()


def rollout(policy_cfg: dict, policy_state: dict, seeds: list[int], stop_at_success: bool,
            record_seed: int | None = None, record_frames: int = 0) -> list[dict]:
    """Run one episode per seed; returns per-episode return, success at the last step executed
    (CortexBench's ``env_infos["success"][-1]``), whether success was ever reached (and when), length and
    timings. The episode of ``record_seed`` also returns ``frames``: ``record_frames`` of the frames it
    rendered anyway (evenly spaced over the horizon, plus the last), as ``[(step, frame), ...]``.

    ``policy_cfg["kind"]``: ``bc`` (the BC policy on fused frame embeddings, + proprioception when the spec
    says so), ``proprio`` (a BC policy on proprioception alone: no frame is rendered or embedded) or
    ``mean_action`` (a constant action: the floor; no frame is rendered either)."""
    from heads.bc_policy import policy_from_config, fuse_history
    spec: WorkerSpec = _W["spec"]
    env = _W["env"]
    kind = policy_cfg.get("kind", "bc")
    policy = policy_from_config(policy_cfg, policy_state)
    out = []
    for seed in seeds:
        t_render = t_embed = t_policy = t_sim = 0.0
        env.reset(seed)
        hist: list[torch.Tensor] = []
        total, success, steps, first = 0.0, False, 0, -1
        record = kind == "bc" and record_frames > 0 and seed == record_seed
        stride = max(1, -(-env.horizon // max(1, record_frames - 1)))
        frames: list[tuple[int, np.ndarray]] = []
        last = None
        for _ in range(env.horizon):
            t0 = t1 = t2 = time.perf_counter()
            if kind == "bc":
                frame = env.render()
                if record:
                    last = (steps, np.array(frame, copy=True))
                    if steps % stride == 0:
                        frames.append(last)
                t1 = time.perf_counter()
                e = embed([frame])[0]
                t2 = time.perf_counter()
                hist = (hist + [e])[-spec.history:] if hist else [e] * spec.history
                feat = fuse_history(torch.stack(hist)[None])
                if spec.use_proprio:
                    feat = torch.cat([feat, torch.from_numpy(env.proprio())[None]], 1)
            elif kind == "proprio":
                feat = torch.from_numpy(env.proprio())[None]
            else:
                feat = None
            with torch.inference_mode():
                action = policy(feat)[0].numpy()
            t3 = time.perf_counter()
            r = env.step(action)
            t4 = time.perf_counter()
            t_render += t1 - t0
            t_embed += t2 - t1
            t_policy += t3 - t2
            t_sim += t4 - t3
            total += r.reward
            success = r.success
            if success and first < 0:
                first = steps
            steps += 1
            if success and stop_at_success:
                break
        out.append({"seed": int(seed), "return": total, "success": bool(success), "reached": first >= 0,
                    "first_success": first, "steps": steps, "kind": kind,
                    "t_render": t_render, "t_embed": t_embed, "t_policy": t_policy, "t_sim": t_sim})
        if record and last is not None:
            out[-1]["frames"] = frames + ([last] if frames[-1][0] != last[0] else [])
    return out


class RolloutPool:
    """A pool of spawned workers for one task; ``evaluate`` spreads episode seeds over them."""

    def __init__(self, spec: WorkerSpec, workers: int):
        self.n = max(1, workers)
        self.pool = ProcessPoolExecutor(max_workers=self.n, mp_context=mp.get_context("spawn"),
                                        initializer=init_worker, initargs=(spec,))

    def evaluate(self, policy, seeds: list[int], stop_at_success: bool, record_frames: int = 0) -> list[dict]:
        """Roll ``policy`` (a ``BCPolicy`` or ``MeanActionPolicy``; its ``config()["kind"]`` says what it
        reads) out once per env seed; rows sorted by seed. ``record_frames`` > 0: the first seed's row also
        holds that many of its frames (``frames``, see :func:`rollout`)."""
        state = {k: v.detach().cpu() for k, v in policy.state_dict().items()}
        chunks = [seeds[i::self.n] for i in range(self.n) if seeds[i::self.n]]
        futs = [self.pool.submit(rollout, policy.config(), state, c, stop_at_success, seeds[0], record_frames)
                for c in chunks]
        rows = [r for f in futs for r in f.result()]
        return sorted(rows, key=lambda r: r["seed"])

    def close(self):
        self.pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
