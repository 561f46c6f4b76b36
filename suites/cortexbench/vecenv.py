"""Simulator slots for lockstep rollouts: ``n`` envs of one task spread over spawned worker processes.

Each worker holds its share of the envs and ONE renderer (`suites.cortexbench.envs.FrameRenderer`; every
env of the process renders through it with its own model and data, which gives the frame that env's own
renderer would give), steps them and returns frames + proprioception. The workers hold no encoder and no
policy: the caller embeds all frames of a step in one batched forward (`suites.cortexbench.rollout`).

``LocalEnvs`` is the same interface over env objects in this process (tests, fake envs).
"""
from __future__ import annotations

import atexit
import multiprocessing as mp
import os
import time
import traceback
from dataclasses import dataclass, field


@dataclass(frozen=True)
class EnvSpec:
    suite: str
    task: str
    size: int
    env_kwargs: tuple = field(default=())      # sorted (key, value) pairs, hashable

    @classmethod
    def of(cls, suite: str, task: str, size: int, env_kwargs: dict) -> "EnvSpec":
        return cls(suite, task, int(size), tuple(sorted(env_kwargs.items())))


def _build(spec: EnvSpec, n: int) -> list:
    from suites.cortexbench.envs import make_env
    first = make_env(spec.suite, spec.task, spec.size, **dict(spec.env_kwargs))
    return [first] + [make_env(spec.suite, spec.task, spec.size, renderer=first.renderer, **dict(spec.env_kwargs))
                      for _ in range(n - 1)]


def _clock() -> float:
    """CPU seconds of this process (the renderer's threads included): robust to other load on the machine."""
    return time.process_time()


def _reset(envs, items):
    """items: [(slot, seed, render)] -> [(frame | None, proprio, render CPU s, sim CPU s)]"""
    out = []
    for slot, seed, render in items:
        t0 = _clock()
        envs[slot].reset(seed)
        t1 = _clock()
        frame = envs[slot].render() if render else None
        out.append((frame, envs[slot].proprio(), _clock() - t1, t1 - t0))
    return out


def _step(envs, items):
    """items: [(slot, action, render)] -> [(reward, success, frame | None, proprio, render CPU s, sim CPU s)]"""
    out = []
    for slot, action, render in items:
        t0 = _clock()
        r = envs[slot].step(action)
        t1 = _clock()
        frame = envs[slot].render() if render else None
        out.append((r.reward, r.success, frame, envs[slot].proprio(), _clock() - t1, t1 - t0))
    return out


def _worker(conn, spec: EnvSpec, n: int) -> None:
    os.environ.setdefault("MUJOCO_GL", "egl")
    try:
        envs = _build(spec, n)
        conn.send(("ok", envs[0].horizon))
    except Exception:  # noqa: BLE001 - reported to the parent with its traceback
        conn.send(("error", traceback.format_exc()))
        return
    while True:
        try:
            cmd, items = conn.recv()
        except EOFError:
            return
        if cmd == "close":
            return
        try:
            conn.send(("ok", (_reset if cmd == "reset" else _step)(envs, items)))
        except Exception:  # noqa: BLE001
            conn.send(("error", traceback.format_exc()))


class LocalEnvs:
    """``n`` env slots in this process (the same interface as :class:`EnvWorkers`)."""

    def __init__(self, envs: list):
        self.envs, self.n, self.horizon = list(envs), len(envs), envs[0].horizon

    def reset(self, items):
        return _reset(self.envs, items)

    def step(self, items):
        return _step(self.envs, items)

    def close(self):
        pass


class EnvWorkers:
    """``n`` env slots over ``workers`` spawned processes (slot i lives in process i % workers); ``reset`` and
    ``step`` send every process its items at once, so the processes simulate and render in parallel."""

    def __init__(self, spec: EnvSpec, n: int, workers: int = 2):
        os.environ.setdefault("MUJOCO_GL", "egl")
        self.spec, self.n = spec, int(n)
        self.w = max(1, min(int(workers), self.n))
        ctx = mp.get_context("spawn")
        self.conns, self.procs = [], []
        for i in range(self.w):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_worker, args=(child, spec, len(range(i, self.n, self.w))), daemon=True)
            p.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(p)
        self.horizon = [self._recv(c) for c in self.conns][0]

    def _recv(self, conn):
        try:
            status, payload = conn.recv()
        except EOFError:
            self.close()
            raise RuntimeError(f"a rollout worker for {self.spec.suite} '{self.spec.task}' died") from None
        if status != "ok":
            self.close()
            raise RuntimeError(f"rollout worker for {self.spec.suite} '{self.spec.task}' failed:\n{payload}")
        return payload

    def _call(self, cmd, items):
        per = [[] for _ in range(self.w)]
        where = []
        for it in items:
            k = it[0] % self.w
            where.append((k, len(per[k])))
            per[k].append((it[0] // self.w, *it[1:]))
        busy = [k for k in range(self.w) if per[k]]
        for k in busy:
            self.conns[k].send((cmd, per[k]))
        got = {k: self._recv(self.conns[k]) for k in busy}
        return [got[k][j] for k, j in where]

    def reset(self, items):
        return self._call("reset", items)

    def step(self, items):
        return self._call("step", items)

    def alive(self) -> bool:
        return all(p.is_alive() for p in self.procs)

    def close(self):
        for c in self.conns:
            try:
                c.send(("close", None))
            except (OSError, BrokenPipeError):
                pass
        for p in self.procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
        self.conns, self.procs = [], []


def spawn_pool(n: int):
    """A spawned process pool (the demo generator's workers: one env + one renderer each)."""
    from concurrent.futures import ProcessPoolExecutor
    os.environ.setdefault("MUJOCO_GL", "egl")
    return ProcessPoolExecutor(max_workers=n, mp_context=mp.get_context("spawn"))


_KEPT: dict = {}


def shared_workers(spec: EnvSpec, n: int, workers: int) -> EnvWorkers:
    """Env workers kept for this process: evaluations of the same task and sizes (e.g. the demo's encoders,
    one after the other) reuse them instead of spawning and building the envs again. One set is kept; a
    different spec closes it. Envs are reseeded at every reset, so reuse does not change any result."""
    key = (spec, int(n), int(workers))
    old = _KEPT.get("key")
    if old == key and _KEPT["pool"].alive():
        return _KEPT["pool"]
    if "pool" in _KEPT:
        _KEPT.pop("pool").close()
    _KEPT["pool"], _KEPT["key"] = EnvWorkers(spec, n, workers), key
    return _KEPT["pool"]


def close_shared() -> None:
    if "pool" in _KEPT:
        _KEPT.pop("pool").close()
    _KEPT.clear()


atexit.register(close_shared)
