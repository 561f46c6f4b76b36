"""Expert demonstrations: CortexBench's pickles (read-only, restricted unpickler) and our own format.

Our format (written by the MetaWorld expert generator), one folder per task under the data root::

    <root>/<task>/index.json          {"format": "spatialboost-cortexbench-demos", "version": 1, "suite",
                                       "task", "env_id", "camera", "image_size", "fast_render",
                                       "episodes": [{"file", "seed", "length", "success", "return",
                                                     "first_success"}]}
    <root>/<task>/episode_000.npz     frames  uint8   [T, S, S, 3]  (RGB, rendered before the action)
                                      actions float32 [T, A]
                                      proprio float32 [T, P]        (MetaWorld: hand xyz + gripper)
                                      rewards float32 [T]
                                      success bool    [T]           (after the action)

Plain ``np.load(allow_pickle=False)`` reads it; nothing executes code. A task folder is written under a
temporary name and renamed when complete (``harness.atomic.atomic_dir``), so a half-written set is never
read.

CortexBench's files: ``<root>/<env_name>.pickle`` (e.g. ``assembly-v2-goal-observable.pickle``,
``dmc_walker_stand-v1.pickle``, ``pen-v0.pickle``): a list of paths, each a dict with ``observations``,
``actions``, ``rewards``, ``images`` [T, H, W, 3] and ``env_infos``. They are loaded with
``harness.safe_pickle`` (plain containers and numpy arrays only).
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from harness.atomic import atomic_dir, is_stale_temp
from suites.cortexbench.envs import CORTEXBENCH_ENV_NAMES, METAWORLD_CAMERA
from suites.images import DataError

FORMAT = "spatialboost-cortexbench-demos"
FORMAT_VERSION = 1


class DemoError(DataError):
    """A demonstration file is missing, unreadable or inconsistent; the message names it."""


@dataclass
class Episode:
    source: str                       # file (and path index) it came from, for messages
    actions: np.ndarray               # [T, A] float32
    proprio: np.ndarray               # [T, P] float32 (P may be 0)
    _frames: np.ndarray | None = None  # [T, H, W, 3] uint8, or loaded lazily from ``npz``
    npz: Path | None = None
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.actions)

    def frames(self) -> np.ndarray:
        if self._frames is not None:
            return self._frames
        with np.load(self.npz, allow_pickle=False) as z:
            return z["frames"]


@dataclass
class DemoSet:
    task: str
    episodes: list[Episode]
    frame_size: int
    source: str                       # folder or pickle file
    fingerprint: str
    info: dict = field(default_factory=dict)

    @property
    def action_dim(self) -> int:
        return int(self.episodes[0].actions.shape[1])

    @property
    def proprio_dim(self) -> int:
        return int(self.episodes[0].proprio.shape[1])


def _check_lengths(source: str, n_frames: int, n_actions: int, n_obs: int | None = None):
    if n_frames != n_actions or (n_obs is not None and n_obs != n_actions):
        obs = f", observations {n_obs}" if n_obs is not None else ""
        raise DemoError(f"demo '{source}': mismatched lengths: images/frames {n_frames}, actions {n_actions}{obs}")
    if n_actions == 0:
        raise DemoError(f"demo '{source}': empty episode")


# -- our format -----------------------------------------------------------------------------------

def write_episode(path: Path, frames, actions, proprio, rewards, success) -> None:
    np.savez_compressed(path, frames=np.asarray(frames, np.uint8), actions=np.asarray(actions, np.float32),
                        proprio=np.asarray(proprio, np.float32), rewards=np.asarray(rewards, np.float32),
                        success=np.asarray(success, bool))


def npz_shape(path: Path, key: str) -> tuple[int, ...]:
    """Shape of one array in an .npz without decompressing it (reads the .npy header only)."""
    with zipfile.ZipFile(path) as zf, zf.open(f"{key}.npy") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, _ = read(f)
    return tuple(shape)


def demo_fingerprint(root: Path, task: str) -> str:
    """Cheap identity of a task's demos: index bytes + file sizes, or the pickle's name and size."""
    root = Path(root)
    idx = root / task / "index.json"
    h = hashlib.sha256(task.encode())
    if idx.is_file():
        h.update(idx.read_bytes())
        for p in sorted((root / task).glob("*.npz")):
            h.update(f"{p.name}:{p.stat().st_size}".encode())
        return h.hexdigest()[:16]
    for name in (CORTEXBENCH_ENV_NAMES.get(task, task), task):
        for ext in (".pickle", ".pkl"):
            p = root / f"{name}{ext}"
            if p.is_file():
                h.update(f"{p.name}:{p.stat().st_size}".encode())
                return h.hexdigest()[:16]
    return h.hexdigest()[:16] + "-missing"


def read_npz_task(folder: Path, task: str, num_demos: int | None) -> DemoSet:
    index_path = folder / "index.json"
    try:
        index = json.loads(index_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DemoError(f"cannot read demo index '{index_path}': {e}") from None
    if index.get("format") != FORMAT or index.get("version") != FORMAT_VERSION:
        raise DemoError(f"'{index_path}' is not a {FORMAT} v{FORMAT_VERSION} index")
    entries = index["episodes"][:num_demos] if num_demos else index["episodes"]
    if not entries:
        raise DemoError(f"'{index_path}' lists no episodes")
    if num_demos and len(entries) < num_demos:
        raise DemoError(f"'{index_path}' has {len(entries)} episodes, the protocol asks for {num_demos}")
    h = hashlib.sha256(index_path.read_bytes())
    episodes = []
    for e in entries:
        p = folder / e["file"]
        try:
            shape = npz_shape(p, "frames")
            with np.load(p, allow_pickle=False) as z:
                actions, proprio = z["actions"], z["proprio"]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
            raise DemoError(f"cannot read demo episode '{p}': {err}") from None
        _check_lengths(str(p), shape[0], len(actions))
        if len(proprio) != len(actions):
            raise DemoError(f"demo '{p}': mismatched lengths: proprio {len(proprio)}, actions {len(actions)}")
        h.update(str(p.stat().st_size).encode())
        episodes.append(Episode(str(p), actions.astype(np.float32), proprio.astype(np.float32), npz=p,
                                meta={**e, "frame_shape": shape}))
    size = int(index["image_size"])
    return DemoSet(task, episodes, size, str(folder), h.hexdigest()[:16],
                   info={k: index.get(k) for k in ("camera", "fast_render", "msaa", "env_id", "suite")})


# -- CortexBench pickles --------------------------------------------------------------------------

def read_pickle_task(path: Path, task: str, num_demos: int | None, proprio_dim: int,
                     proprio_key: str | None) -> DemoSet:
    from harness.safe_pickle import UnsafePickleError, safe_load_pickle
    try:
        paths = safe_load_pickle(path)
    except UnsafePickleError as e:
        raise DemoError(str(e)) from None
    if not isinstance(paths, list) or not paths or not all(isinstance(p, dict) for p in paths):
        raise DemoError(f"demo file '{path}' should hold a non-empty list of path dicts")
    if num_demos and len(paths) < num_demos:
        raise DemoError(f"demo file '{path}' has {len(paths)} paths, the protocol asks for {num_demos}")
    paths = paths[:num_demos] if num_demos else paths
    episodes, size = [], None
    for i, p in enumerate(paths):
        src = f"{path} [path {i}]"
        missing = [k for k in ("images", "actions") if k not in p]
        if missing:
            raise DemoError(f"demo '{src}' has no {', '.join(missing)} (keys: {sorted(p)})")
        images = np.asarray(p["images"])
        actions = np.asarray(p["actions"], np.float32)
        obs = np.asarray(p["observations"]) if "observations" in p else None
        _check_lengths(src, len(images), len(actions), None if obs is None else len(obs))
        if images.ndim != 4 or images.shape[-1] != 3 or images.shape[1] != images.shape[2]:
            raise DemoError(f"demo '{src}': images should be [T, S, S, 3], got {list(images.shape)}")
        if size is not None and images.shape[1] != size:
            raise DemoError(f"demo '{src}': image size {images.shape[1]} differs from {size} in earlier paths")
        size = images.shape[1]
        if proprio_dim:
            infos = p.get("env_infos", {}) or {}
            if proprio_key and proprio_key in infos:
                proprio = np.asarray(infos[proprio_key], np.float32).reshape(len(actions), -1)
            elif obs is not None:
                proprio = np.asarray(obs, np.float32).reshape(len(actions), -1)[:, :proprio_dim]
            else:
                raise DemoError(f"demo '{src}' has neither env_infos['{proprio_key}'] nor observations "
                                f"for proprioception")
        else:
            proprio = np.zeros((len(actions), 0), np.float32)
        episodes.append(Episode(src, actions, proprio, _frames=images.astype(np.uint8)))
    st = path.stat()
    fp = hashlib.sha256(f"{path.name}:{st.st_size}:{len(episodes)}".encode()).hexdigest()[:16]
    return DemoSet(task, episodes, int(size), str(path), fp, info={"format": "cortexbench-pickle"})


def load_demos(root: Path, suite: str, task: str, num_demos: int | None, proprio_dim: int = 0,
               proprio_key: str | None = None) -> DemoSet:
    """Our npz folder ``<root>/<task>/`` if present, else CortexBench's ``<root>/<env_name>.pickle``."""
    root = Path(root)
    folder = root / task
    if (folder / "index.json").is_file():
        return read_npz_task(folder, task, num_demos)
    names = [CORTEXBENCH_ENV_NAMES.get(task, task), task]
    for name in names:
        for ext in (".pickle", ".pkl"):
            p = root / f"{name}{ext}"
            if p.is_file():
                return read_pickle_task(p, task, num_demos, proprio_dim, proprio_key)
    hint = (" Generate MetaWorld demos with `python -m suites.cortexbench.generate --out DIR`." if suite == "metaworld"
            else " Download CortexBench's demos (eai-vc cortexbench/mujoco_vc README).")
    raise DemoError(f"no demonstrations for {suite} task '{task}' under '{root}': expected "
                    f"'{folder / 'index.json'}' or '{root / (names[0] + '.pickle')}'.{hint}")


# -- frames for the feature cache -----------------------------------------------------------------

class DemoFrames(torch.utils.data.Dataset):
    """Every frame of every episode, in order; items ``(normalised image tensor, 0)`` for FeatureCache."""

    def __init__(self, demos: DemoSet, transform, transform_id: str):
        self.demos, self.transform, self.transform_id = demos, transform, transform_id
        self.offsets = np.cumsum([0] + [len(e) for e in demos.episodes])
        self._cached = (-1, None)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, i: int):
        ep = int(np.searchsorted(self.offsets, i, side="right") - 1)
        if self._cached[0] != ep:
            self._cached = (ep, self.demos.episodes[ep].frames())
        return self.transform(self._cached[1][i - self.offsets[ep]]), 0

    def fingerprint(self) -> str:
        return f"cortexbench-{self.demos.task}-{self.demos.fingerprint}-{len(self)}"


# -- MetaWorld expert generation ------------------------------------------------------------------

def _generate_episodes(task: str, seeds: list[int], size: int, horizon: int, fast_render: bool,
                       extra_steps: int, out: str, msaa: int | None = None) -> list[dict]:
    """Worker body (one process = one env + one renderer): scripted expert episodes, written as npz."""
    torch.set_num_threads(1)
    from suites.cortexbench.envs import MetaWorldEnv
    env = MetaWorldEnv(task, size, fast_render=fast_render, horizon=horizon, msaa=msaa)
    rows = []
    for seed in seeds:
        env.reset(seed)
        frames, actions, proprio, rewards, success = [], [], [], [], []
        first = None
        for t in range(env.horizon):
            frames.append(env.render())
            proprio.append(env.proprio())
            a = env.expert_action()
            r = env.step(a)
            actions.append(a)
            rewards.append(r.reward)
            success.append(r.success)
            if r.success and first is None:
                first = t
            if first is not None and t >= first + extra_steps:
                break
        name = f"episode_{seed:04d}.npz"
        write_episode(Path(out) / name, frames, actions, proprio, rewards, success)
        rows.append({"file": name, "seed": int(seed), "length": len(actions), "success": first is not None,
                     "first_success": first, "return": float(np.sum(rewards))})
    return rows


def generate_metaworld(root: Path, tasks, num_demos: int = 25, size: int = 256, *, seed0: int = 0,
                       horizon: int = 500, fast_render: bool = True, extra_steps: int = 0, workers: int = 2,
                       require_success: bool = True, progress: bool = True, msaa: int | None = None) -> Path:
    """Generate ``num_demos`` expert episodes per task with MetaWorld's scripted policies (seeds
    ``seed0..``; evaluation rollouts use other seeds). Episodes end ``extra_steps`` after the first success
    (or at ``horizon``). ``msaa``: offscreen multisamples (None = the model's 4). A task folder that is
    already complete with at least ``num_demos`` episodes at this size and these render flags is kept.
    Returns ``root``."""
    from suites.cortexbench.vecenv import spawn_pool
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for leftover in root.iterdir():          # task folders of a generator that was killed mid-way
        if is_stale_temp(leftover):
            shutil.rmtree(leftover, ignore_errors=True)
    for task in tasks:
        folder = root / task
        idx = folder / "index.json"
        if idx.is_file():
            old = json.loads(idx.read_text())
            if (old.get("image_size") == size and len(old.get("episodes", [])) >= num_demos
                    and old.get("msaa") == msaa and old.get("fast_render") == fast_render):
                continue
        start = time.perf_counter()
        seeds = list(range(seed0, seed0 + num_demos))
        n = max(1, min(workers, len(seeds)))
        chunks = [seeds[i::n] for i in range(n)]
        # replace=True: an incomplete or smaller set found above is swapped out only once the new one is whole
        with atomic_dir(folder, replace=True) as tmp:
            with spawn_pool(n) as pool:
                futs = [pool.submit(_generate_episodes, task, c, size, horizon, fast_render, extra_steps, str(tmp), msaa)
                        for c in chunks]
                rows = sorted((r for f in futs for r in f.result()), key=lambda r: r["seed"])
            failed = [r["seed"] for r in rows if not r["success"]]
            if failed and require_success:
                raise DemoError(f"MetaWorld's scripted expert failed on {task} for seeds {failed}")
            index = {"format": FORMAT, "version": FORMAT_VERSION, "suite": "metaworld", "task": task,
                     "env_id": f"{task}-v3-goal-observable", "camera": METAWORLD_CAMERA, "image_size": size,
                     "fast_render": fast_render, "msaa": msaa, "horizon": horizon, "extra_steps": extra_steps,
                     "expert": "metaworld.policies (scripted)", "episodes": rows,
                     "seconds": round(time.perf_counter() - start, 1)}
            (tmp / "index.json").write_text(json.dumps(index, indent=1))
        if progress:
            print(f"cortexbench: {task}: {len(rows)} expert demos at {size}px in {index['seconds']} s")
    return root
