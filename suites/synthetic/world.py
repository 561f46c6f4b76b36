"""The synthetic world: generation (parallel, resumable, deterministic); the public entry point.

Parameters and manifest live in ``manifest.py``, reading in ``views.py``; both are re-exported here.

A *world* is a folder::

    world.json                      manifest: format version + generation parameters (+ complete flag)
    scenes/scene_00000/scene.json   spec, per-object world boxes, per-view camera + annotations
    scenes/scene_00000/scene.xml    the MJCF that was rendered (for inspection / re-rendering)
    scenes/scene_00000/000/rgb.png        uint8 RGB
    scenes/scene_00000/000/depth.npy      float32 metres along the optical axis, 0 = invalid
    scenes/scene_00000/000/instance.png   uint16, 0 = room/nothing, 1..N = objects of the scene
    scenes/scene_00000/000/semantic.png   uint8 semantic id (categories.py), 0 = nothing

Every scene is rendered into a temporary folder (``harness.atomic.atomic_dir``) and renamed when
complete, so a scene folder is either absent or whole; a killed generation
resumes with the scenes that are missing. Scene ``i`` depends only on
``(seed, i)`` and the parameters, never on which worker rendered it.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from harness.atomic import atomic_dir, atomic_write_json

from .manifest import FORMAT_VERSION, MANIFEST, WorldConfig, _check_or_write_manifest, _scene_name, _tolist
from .manifest import read_manifest, world_fingerprint
from .views import ObjectAnno, View, iter_views, list_views, load_view

__all__ = [
    "WorldConfig",
    "ObjectAnno",
    "View",
    "generate_world",
    "load_view",
    "iter_views",
    "list_views",
    "read_manifest",
    "world_fingerprint",
    "FORMAT_VERSION",
    "MANIFEST",
    "annotate",
    "render_scene_views",
]


def _box_to_cam(obb: dict, world_to_cam: np.ndarray) -> tuple[dict, dict]:
    from .scene import box_corners

    R = world_to_cam[:3, :3]
    t = world_to_cam[:3, 3]
    c = R @ np.asarray(obb["center"]) + t
    Rc = R @ np.asarray(obb["R"])
    corners = box_corners(c, obb["size"], Rc)
    return {"center": c, "size": np.asarray(obb["size"]), "R": Rc}, {"min": corners.min(0), "max": corners.max(0)}


# ------------------------------------------------------------------------- one scene
def _write_png(path: Path, arr: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(arr).save(path, compress_level=1)


def render_scene_views(cfg: WorldConfig, scene_index: int):
    """Render every view of one scene in memory: (spec, compiled, frames, annotations)."""
    from . import scene as S
    from .render import get_renderer

    rng = np.random.default_rng([cfg.seed, scene_index])
    spec = S.sample_scene(rng, cfg.categories, cfg.min_objects, cfg.max_objects, reflections=cfg.reflections)
    poses = S.orbit_cameras(
        spec, cfg.views_per_scene, np.random.default_rng([cfg.seed, scene_index, 1]), cfg.arc_degrees, cfg.camera_height
    )
    H, W = cfg.image_size
    compiled = S.compile_scene(spec, (H, W), cfg.fovy, cfg.shadows, cfg.antialias, cfg.shadow_size)
    r = get_renderer()
    r.bind(compiled, H, W, shadows=cfg.shadows, reflections=cfg.reflections)
    frames, annos = [], []
    try:
        for pose in poses:
            f = r.render(pose)
            frames.append(f)
            annos.append(annotate(f, compiled.instances))
    finally:
        r.unbind()
    return spec, compiled, frames, annos


def annotate(frame, instances: list[dict]) -> list[dict]:
    """Per object: visible pixels, 2D box, camera-frame boxes."""
    n = len(instances)
    counts = np.bincount(frame.instance.ravel(), minlength=n + 1)
    w2c = np.linalg.inv(frame.cam_to_world)
    out = []
    for inst in instances:
        k = inst["instance_id"]
        px = int(counts[k]) if k < len(counts) else 0
        bbox = None
        if px:
            m = frame.instance == k
            ys = np.flatnonzero(m.any(1))
            xs = np.flatnonzero(m.any(0))
            bbox = [int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1]
        obb_c, aabb_c = _box_to_cam(inst["obb_world"], w2c)
        out.append({"instance_id": k, "pixels": px, "bbox2d": bbox, "obb_cam": obb_c, "aabb_cam": aabb_c})
    return out


def _generate_scene(params: dict, out_dir: str, scene_index: int) -> int:
    """Worker entry point: render one scene into a temp dir, then rename it into place."""
    cfg = WorldConfig.from_params(params)
    scenes = Path(out_dir) / "scenes"
    final = scenes / _scene_name(scene_index)
    if final.exists():
        return scene_index
    try:
        spec, compiled, frames, annos = render_scene_views(cfg, scene_index)
    except ValueError as e:
        raise ValueError(f"scene {scene_index} (seed={cfg.seed}): {e}") from None
    views = []
    with atomic_dir(final) as tmp:   # another writer finishing the same scene first wins; ours is dropped
        for v, (f, a) in enumerate(zip(frames, annos)):
            vd = tmp / f"{v:03d}"
            vd.mkdir()
            _write_png(vd / "rgb.png", f.rgb)
            np.save(vd / "depth.npy", f.depth.astype(np.float32))
            _write_png(vd / "instance.png", f.instance.astype(np.uint16))
            _write_png(vd / "semantic.png", f.semantic.astype(np.uint8))
            views.append({"view_id": v, "K": f.K, "cam_to_world": f.cam_to_world, "objects": a})
        meta = {
            "scene_id": scene_index,
            "image_size": list(cfg.image_size),
            "spec": spec.to_dict(),
            "instances": compiled.instances,
            "views": views,
        }
        (tmp / "scene.json").write_text(json.dumps(_tolist(meta)))
        (tmp / "scene.xml").write_text(compiled.xml)
    return scene_index


def _worker_init(parent_pid: int | None = None) -> None:
    # the worker processes are the parallel unit: one BLAS/OpenMP thread each. Mesa's
    # llvmpipe rasteriser threads (LP_NUM_THREADS) are left at Mesa's default: forcing 0 or 1
    # was not faster on a loaded 2-core machine (benchmarks/world_throughput.py --lp-threads).
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(k, "1")
    if parent_pid is not None:
        _die_with_parent(parent_pid)


def _die_with_parent(parent_pid: int) -> None:
    """A worker must not outlive the process that started it (a kill -9 of ``demo`` would otherwise leave
    workers rendering the queued scenes for minutes). Linux: the kernel sends SIGKILL when the parent dies
    (PR_SET_PDEATHSIG); elsewhere a daemon thread polls the parent pid. The parent may already be gone."""
    import signal
    import threading

    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # died before the signal was armed
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


# ------------------------------------------------------------------------- public API
def generate_world(cfg: WorldConfig, out_dir, workers: int = 2, progress: bool = True) -> Path:
    """Generate (or finish generating) a world into ``out_dir``; returns the folder.

    Refuses (ValueError) a folder that holds a world made with other parameters.
    ``workers`` <= 1 renders in this process; otherwise a spawn-context process pool.
    Only one generation may write a folder at a time (an advisory lock enforces it).
    """
    import fcntl

    if not isinstance(cfg, WorldConfig):
        raise ValueError(f"cfg must be a WorldConfig, got {type(cfg).__name__}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers must be an integer >= 0, got {workers!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lock_f = open(out / ".lock", "w")
    try:
        try:
            fcntl.flock(lock_f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"{out}: another generation is writing this world right now") from None
        _check_or_write_manifest(out, cfg)
        scenes = out / "scenes"
        scenes.mkdir(exist_ok=True)
        # temp folders of a killed run (we hold the lock: nobody else writes here): never read, just redo.
        # ".tmp-scene_*" is the name older versions used
        for stale in [*scenes.glob(".tmp-*"), *scenes.glob(".scene_*.tmp-*")]:
            shutil.rmtree(stale, ignore_errors=True)
        todo = [i for i in range(cfg.num_scenes) if not (scenes / _scene_name(i)).is_dir()]
        params = cfg.to_params()
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=cfg.num_scenes, initial=cfg.num_scenes - len(todo), desc="synthetic world", unit="scene")
        try:
            import multiprocessing as mp

            if mp.current_process().daemon and workers > 1:  # daemonic pool workers cannot fork children
                workers = 1
            if workers <= 1 or len(todo) <= 1:
                for i in todo:
                    _generate_scene(params, str(out), i)
                    if bar:
                        bar.update(1)
            else:
                from concurrent.futures import ProcessPoolExecutor, as_completed

                ctx = mp.get_context("spawn")
                with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=ctx, initializer=_worker_init, initargs=(os.getpid(),)) as ex:
                    futs = [ex.submit(_generate_scene, params, str(out), i) for i in todo]
                    try:
                        for fut in as_completed(futs):
                            fut.result()
                            if bar:
                                bar.update(1)
                    except BaseException:
                        # stop at the first failure; finished scenes stay (resume picks up the rest)
                        for f in futs:
                            f.cancel()
                        raise
        finally:
            if bar:
                bar.close()
        m = read_manifest(out)
        if not m.get("complete"):
            m["complete"] = True
            m["completed_at"] = time.strftime("%Y-%m-%dT%H:%M:%S")
            atomic_write_json(out / MANIFEST, m)
    finally:
        lock_f.close()
    return out
