"""The synthetic world: generation (parallel, resumable, deterministic) and reading.

A *world* is a folder::

    world.json                      manifest: format version + generation parameters (+ complete flag)
    scenes/scene_00000/scene.json   spec, per-object world boxes, per-view camera + annotations
    scenes/scene_00000/scene.xml    the MJCF that was rendered (for inspection / re-rendering)
    scenes/scene_00000/000/rgb.png        uint8 RGB
    scenes/scene_00000/000/depth.npy      float32 metres along the optical axis, 0 = invalid
    scenes/scene_00000/000/instance.png   uint16, 0 = room/nothing, 1..N = objects of the scene
    scenes/scene_00000/000/semantic.png   uint8 semantic id (categories.py), 0 = nothing

Every scene is rendered into ``scenes/.tmp-scene_XXXXX-<pid>`` and renamed when
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
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Iterator

import numpy as np

from . import categories as C

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
]

FORMAT_VERSION = 1
MANIFEST = "world.json"


@dataclass(frozen=True)
class WorldConfig:
    """Generation parameters; all of them are recorded in world.json and compared on resume.

    Speed/quality knobs: ``image_size``, ``shadows`` (the most expensive effect on a
    CPU renderer), ``reflections`` (floor mirror pass), ``antialias`` (MSAA samples, 0 = off),
    ``shadow_size`` (shadow-map resolution).
    """

    seed: int = 0
    num_scenes: int = 8
    views_per_scene: int = 4
    image_size: tuple[int, int] = (240, 320)  # (H, W)
    min_objects: int = 3
    max_objects: int = 10
    categories: tuple[str, ...] = C.THING_NAMES
    shadows: bool = True
    reflections: bool = False
    antialias: int = 4
    shadow_size: int = 512
    fovy: float = 49.64  # degrees; 49.64 = NYU Kinect (f = 518.86 px at 480 rows)
    arc_degrees: float = 360.0  # camera path: arc around the objects' centre
    camera_height: tuple[float, float] = (1.2, 1.7)

    def __post_init__(self) -> None:
        def bad(name, why):
            raise ValueError(f"WorldConfig.{name}={getattr(self, name)!r}: {why}")

        for name in ("seed", "num_scenes", "views_per_scene", "min_objects", "max_objects", "antialias", "shadow_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                bad(name, "must be an integer")
        if self.num_scenes < 1:
            bad("num_scenes", "must be >= 1")
        if self.views_per_scene < 1:
            bad("views_per_scene", "must be >= 1")
        if self.min_objects < 1:
            bad("min_objects", "must be >= 1")
        if self.max_objects < self.min_objects:
            bad("max_objects", f"must be >= min_objects={self.min_objects}")
        if self.max_objects > 30:
            bad("max_objects", "more than 30 objects do not fit the rooms")
        if not (0 <= self.antialias <= 16):
            bad("antialias", "MSAA samples must be in 0..16")
        if not (64 <= self.shadow_size <= 8192):
            bad("shadow_size", "must be in 64..8192")
        size = tuple(self.image_size)
        if len(size) != 2 or not all(isinstance(v, (int, np.integer)) and 16 <= v <= 4096 for v in size):
            bad("image_size", "must be (H, W) integers in 16..4096")
        object.__setattr__(self, "image_size", (int(size[0]), int(size[1])))
        object.__setattr__(self, "categories", C.validate_categories(self.categories))
        if not (1.0 < float(self.fovy) < 170.0):
            bad("fovy", "vertical field of view must be in (1, 170) degrees")
        if not (0.0 < float(self.arc_degrees) <= 360.0):
            bad("arc_degrees", "must be in (0, 360]")
        ch = tuple(float(v) for v in self.camera_height)
        if len(ch) != 2 or not (0.2 <= ch[0] <= ch[1] <= 2.4):
            bad("camera_height", "must be (low, high) metres with 0.2 <= low <= high <= 2.4")
        object.__setattr__(self, "camera_height", ch)

    def to_params(self) -> dict:
        """JSON-normal form (tuples -> lists) used in the manifest and for comparisons."""
        return json.loads(json.dumps(asdict(self)))

    @staticmethod
    def from_params(p: dict) -> "WorldConfig":
        names = {f.name for f in fields(WorldConfig)}
        unknown = set(p) - names
        if unknown:
            raise ValueError(f"unknown world parameters: {sorted(unknown)}")
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in p.items()}
        return WorldConfig(**kw)


@dataclass
class ObjectAnno:
    """One object in one view. Boxes: ``aabb_*`` = {min, max}; ``obb_*`` = {center, size, R}
    (R columns = the box axes in that frame). ``bbox2d`` = [x1, y1, x2, y2] pixel edges
    (x2/y2 exclusive) of the visible mask, None when not visible."""

    instance_id: int
    category: str
    category_id: int
    pixels: int
    bbox2d: list[int] | None
    aabb_world: dict
    obb_world: dict
    aabb_cam: dict
    obb_cam: dict


@dataclass
class View:
    scene_id: int
    view_id: int
    rgb: np.ndarray  # uint8 HxWx3
    depth: np.ndarray  # float32 HxW metres, 0 = invalid
    instance: np.ndarray  # int32 HxW
    semantic: np.ndarray  # int32 HxW
    K: np.ndarray  # 3x3
    cam_to_world: np.ndarray  # 4x4, OpenCV convention
    objects: list[ObjectAnno] = field(default_factory=list)
    paths: dict = field(default_factory=dict)  # file paths of this view's arrays


# ------------------------------------------------------------------------- helpers
def _scene_name(i: int) -> str:
    return f"scene_{i:05d}"


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _tolist(x):
    if isinstance(x, dict):
        return {k: _tolist(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_tolist(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return x


def _box_to_cam(obb: dict, world_to_cam: np.ndarray) -> tuple[dict, dict]:
    from .scene import box_corners

    R = world_to_cam[:3, :3]
    t = world_to_cam[:3, 3]
    c = R @ np.asarray(obb["center"]) + t
    Rc = R @ np.asarray(obb["R"])
    corners = box_corners(c, obb["size"], Rc)
    return {"center": c, "size": np.asarray(obb["size"]), "R": Rc}, {"min": corners.min(0), "max": corners.max(0)}


def read_manifest(world_dir) -> dict:
    p = Path(world_dir) / MANIFEST
    if not p.is_file():
        raise ValueError(f"{p}: not a synthetic world (no {MANIFEST})")
    try:
        m = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: corrupt manifest: {e}") from None
    if m.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{p}: format_version {m.get('format_version')!r}, this code reads {FORMAT_VERSION}")
    return m


def world_fingerprint(world_dir) -> str:
    """Stable id of a world's content (= its parameters and format), for caches."""
    import hashlib

    m = read_manifest(world_dir)
    blob = json.dumps({"v": m["format_version"], "p": m["params"]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _check_or_write_manifest(out: Path, cfg: WorldConfig) -> None:
    params = cfg.to_params()
    p = out / MANIFEST
    if p.exists():
        m = read_manifest(out)
        old = m.get("params", {})
        diff = sorted(k for k in set(old) | set(params) if old.get(k) != params.get(k))
        if diff:
            detail = "; ".join(f"{k}: existing={old.get(k)!r} requested={params.get(k)!r}" for k in diff)
            raise ValueError(
                f"{out} holds a world made with different parameters ({', '.join(diff)}): {detail}. "
                "Use another folder or delete this one."
            )
        return
    if out.exists() and any(x.name != ".lock" for x in out.iterdir()):
        raise ValueError(f"{out} is not empty and is not a synthetic world; refusing to write into it")
    _atomic_write_text(p, json.dumps({"format_version": FORMAT_VERSION, "params": params, "complete": False}, indent=1))


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
    tmp = scenes / f".tmp-{_scene_name(scene_index)}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    views = []
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
    try:
        os.rename(tmp, final)
    except OSError:
        if final.exists():  # another writer finished it first
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            raise
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
        for stale in scenes.glob(".tmp-*"):  # left by a killed run: never read, just redo
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
            _atomic_write_text(out / MANIFEST, json.dumps(m, indent=1))
    finally:
        lock_f.close()
    return out


def _scene_index(scene_id) -> int:
    if isinstance(scene_id, str):
        s = scene_id.removeprefix("scene_")
        if not s.isdigit():
            raise ValueError(f"bad scene id {scene_id!r}")
        return int(s)
    return int(scene_id)


_SCENE_CACHE: dict = {}


def _scene_meta(world_dir: Path, scene_id) -> dict:
    p = Path(world_dir) / "scenes" / _scene_name(_scene_index(scene_id)) / "scene.json"
    key = (str(p), p.stat().st_mtime_ns if p.exists() else None)
    if key in _SCENE_CACHE:
        return _SCENE_CACHE[key]
    if not p.is_file():
        raise ValueError(f"{p}: scene {scene_id!r} is not in this world (or not finished)")
    meta = json.loads(p.read_text())
    if len(_SCENE_CACHE) > 64:
        _SCENE_CACHE.clear()
    _SCENE_CACHE[key] = meta
    return meta


def _np_box(d: dict) -> dict:
    return {k: np.asarray(v, dtype=np.float64) for k, v in d.items()}


def load_view(world_dir, scene_id, view_id: int, arrays: bool = True) -> View:
    """Read one view. ``arrays=False`` skips the images (annotations only)."""
    from PIL import Image

    world_dir = Path(world_dir)
    meta = _scene_meta(world_dir, scene_id)
    views = meta["views"]
    if not (0 <= int(view_id) < len(views)):
        raise ValueError(f"view {view_id!r} out of range 0..{len(views) - 1} in scene {scene_id!r}")
    vm = views[int(view_id)]
    vd = world_dir / "scenes" / _scene_name(meta["scene_id"]) / f"{int(view_id):03d}"
    paths = {k: vd / n for k, n in (("rgb", "rgb.png"), ("depth", "depth.npy"), ("instance", "instance.png"), ("semantic", "semantic.png"))}
    H, W = meta["image_size"]
    if arrays:
        rgb = np.asarray(Image.open(paths["rgb"]).convert("RGB"))
        depth = np.load(paths["depth"]).astype(np.float32)
        instance = np.asarray(Image.open(paths["instance"])).astype(np.int32)
        semantic = np.asarray(Image.open(paths["semantic"])).astype(np.int32)
    else:
        rgb = np.zeros((0, 0, 3), np.uint8)
        depth = np.zeros((0, 0), np.float32)
        instance = semantic = np.zeros((0, 0), np.int32)
    insts = {d["instance_id"]: d for d in meta["instances"]}
    objects = []
    for o in vm["objects"]:
        w = insts[o["instance_id"]]
        objects.append(
            ObjectAnno(
                instance_id=o["instance_id"],
                category=w["category"],
                category_id=w["category_id"],
                pixels=o["pixels"],
                bbox2d=o["bbox2d"],
                aabb_world=_np_box(w["aabb_world"]),
                obb_world=_np_box(w["obb_world"]),
                aabb_cam=_np_box(o["aabb_cam"]),
                obb_cam=_np_box(o["obb_cam"]),
            )
        )
    return View(
        scene_id=int(meta["scene_id"]),
        view_id=int(view_id),
        rgb=rgb,
        depth=depth,
        instance=instance,
        semantic=semantic,
        K=np.asarray(vm["K"], np.float64),
        cam_to_world=np.asarray(vm["cam_to_world"], np.float64),
        objects=objects,
        paths=paths,
    )


def list_views(world_dir, require_complete: bool = True) -> list[tuple[int, int]]:
    """(scene_id, view_id) of every finished view, in order."""
    world_dir = Path(world_dir)
    m = read_manifest(world_dir)
    if require_complete and not m.get("complete"):
        raise ValueError(f"{world_dir}: world generation is not complete; run generate_world again to finish it")
    out = []
    for d in sorted((world_dir / "scenes").glob("scene_*")):
        if d.is_dir():
            meta = _scene_meta(world_dir, d.name)
            out += [(int(meta["scene_id"]), v) for v in range(len(meta["views"]))]
    return out


def iter_views(world_dir, arrays: bool = True, require_complete: bool = True) -> Iterator[View]:
    for s, v in list_views(world_dir, require_complete):
        yield load_view(world_dir, s, v, arrays=arrays)
