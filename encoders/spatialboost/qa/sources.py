"""Readers of the inputs: ScanNet-format scenes (real ScanNet or the synthetic world written as ScanNet by
``suites.synthetic.writers.write_scannet``), plain image folders.

A source lists :class:`ViewRef` (cheap: ids and paths) and loads an :class:`Observation`
(arrays) for one view. Problems with one view raise :class:`ViewError` (a ValueError that
names the file); the dataset builder counts them as skips or re-raises them in strict mode.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .estimators import Estimators, default_intrinsics

__all__ = ["ViewRef", "Observation", "ViewError", "Source", "ScanNetSource", "ImageFolderSource", "open_source"]

log = logging.getLogger(__name__)
IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
SCANNET_LABEL_MAP = "scannetv2-labels.combined.tsv"


class ViewError(ValueError):
    """A view cannot be used; ``reason`` is a short category for the dataset card."""

    def __init__(self, msg: str, reason: str):
        super().__init__(msg)
        self.reason = reason


@dataclass(frozen=True)
class ViewRef:
    key: str  # unique, e.g. "scene0000_00/3"
    group: str  # views of one scene share a group (multi-view)
    image: str  # image path relative to the source root (written into the dataset)
    index: int = 0


@dataclass
class Observation:
    ref: ViewRef
    rgb: np.ndarray  # uint8 HxWx3
    depth: np.ndarray | None  # float32 HxW metres, 0/NaN/inf = invalid
    instance: np.ndarray | None  # int32 HxW, 0 = none
    labels: dict[int, str]  # instance id -> category
    K: np.ndarray | None
    cam_to_world: np.ndarray | None  # 4x4 OpenCV axes, None = unknown
    files: dict = field(default_factory=dict)  # what was read (for messages)


def _read_image(path: Path, mode=None) -> np.ndarray:
    from PIL import Image

    if not path.is_file():
        raise ViewError(f"{path}: file is missing", "missing file")
    try:
        im = Image.open(path)
        if mode:
            im = im.convert(mode)
        return np.asarray(im)
    except Exception as e:  # noqa: BLE001 - PIL raises many types
        raise ViewError(f"{path}: unreadable image ({e})", "unreadable image") from None


class Source:
    root: Path
    kind: str = "?"
    notes: tuple | list = ()  # what the reader could not do (e.g. no label map); copied into the dataset card

    def refs(self) -> list[ViewRef]:
        raise NotImplementedError

    def load(self, ref: ViewRef) -> Observation:
        raise NotImplementedError

    def has_poses(self) -> bool:
        return False

    def pose(self, ref: ViewRef) -> np.ndarray | None:
        return None

    def fingerprint(self) -> str:
        import hashlib

        h = hashlib.sha256(self.kind.encode())
        for r in self.refs():
            h.update(r.key.encode())
        return h.hexdigest()[:16]


# ----------------------------------------------------------------------------- ScanNet format
class ScanNetSource(Source):
    """ScanNet-style scenes: ``scannet_2d/<scene>/{color/N.jpg, depth/N.png (uint16 mm), pose/N.txt,
    intrinsic/intrinsic_depth.txt}``.

    Instance masks, in this order: ScanNet's 2D export ``instance-filt/N.png`` (1-based instance ids = the
    aggregation's objectId + 1), each instance named by ``<scene>.aggregation.json`` (segGroups' label) or,
    without it, by the majority ``label-filt/N.png`` id named through ``scannetv2-labels.combined.tsv``;
    otherwise the instance-labelled cloud ``scannet_3d/*/<scene>_inst.pth`` (+ ``_instances.json``) projected
    into each view with a depth test; otherwise a segmenter must be given. ``boxes(scene)`` gives the
    objects' 3D boxes (exact from an ``_instances.json`` side file, else axis-aligned from the cloud)."""

    kind = "scannet"

    def __init__(self, root, depth_scale: float = 1000.0, label_map: str | Path | None = None):
        self.root = Path(root)
        self.d2 = self.root / "scannet_2d"
        if not self.d2.is_dir():
            raise ValueError(f"{self.root}: no scannet_2d/ folder")
        self.depth_scale = depth_scale
        self._clouds: dict = {}
        self._agg: dict = {}
        self.notes = []
        # label-filt/ images hold ScanNet label ids; scannetv2-labels.combined.tsv names them
        self.label_map_path = find_scannet_label_map(self.root, label_map)
        self.label_map = read_scannet_label_map(self.label_map_path) if self.label_map_path else {}
        # (only where label-filt/ must name instances: scenes with an aggregation file are named by it)
        if self.label_map_path is None and any((sd / "label-filt").is_dir() and not any(sd.glob("*.aggregation.json"))
                                               for sd in self.d2.iterdir() if sd.is_dir()):
            self.notes.append(f"ScanNet label map {SCANNET_LABEL_MAP} not found (give it with --label-map, or put it "
                              f"in {self.root} or {self.d2}): label-filt categories are named 'object <label id>'")
            log.warning(self.notes[-1])

    def aggregation(self, scene: str) -> dict[int, str]:
        """Instance id (objectId + 1) -> label from ``<scene>.aggregation.json`` ({} when there is none)."""
        if scene not in self._agg:
            p = next((q for q in (self.d2 / scene / f"{scene}.aggregation.json",
                                  self.d2 / scene / f"{scene}_vh_clean.aggregation.json") if q.is_file()), None)
            out: dict[int, str] = {}
            if p is not None:
                try:
                    groups = json.loads(p.read_text())["segGroups"]
                    out = {int(g["objectId"]) + 1: str(g["label"]) for g in groups}
                except (ValueError, KeyError, TypeError) as e:
                    raise ViewError(f"{p}: not a ScanNet aggregation file ({type(e).__name__}: {e})",
                                    "unreadable aggregation") from None
            self._agg[scene] = out
        return self._agg[scene]

    def boxes(self, scene: str) -> dict[int, dict]:
        """World-frame 3D boxes per instance id: ``{"aabb": {min, max}, "obb": {center, size, R} | None}``.

        Exact from ``scannet_3d/*/<scene>_instances.json`` when present (the synthetic world writes it),
        else the axis-aligned box of each instance's points in ``<scene>_inst.pth`` (no OBB); {} without
        either."""
        hit = self._scene_3d(scene)
        if hit is None:
            return {}
        js = hit / f"{scene}_instances.json"
        if js.is_file():
            objs = json.loads(js.read_text())["objects"]
            return {int(o["instance_id"]): {"aabb": {k: np.asarray(v, np.float64) for k, v in o["aabb"].items()},
                                            "obb": {k: np.asarray(v, np.float64) for k, v in o["obb"].items()}}
                    for o in objs}
        cl = self._cloud(scene)
        if cl is None:
            return {}
        coords, inst, _ = cl
        return {int(i): {"aabb": {"min": coords[inst == i].min(0), "max": coords[inst == i].max(0)}, "obb": None}
                for i in np.unique(inst[inst > 0])}

    def category(self, label_id: int) -> str:
        name = self.label_map.get(int(label_id))
        return name if name else f"object {int(label_id)}"

    def refs(self) -> list[ViewRef]:
        out = []
        for sd in sorted(p for p in self.d2.iterdir() if p.is_dir()):
            col = sd / "color"
            frames = sorted((int(p.stem) for p in col.glob("*") if p.stem.isdigit()), key=int) if col.is_dir() else []
            for n in frames:
                img = next((col / f"{n}{e}" for e in IMAGE_EXT if (col / f"{n}{e}").is_file()), col / f"{n}.jpg")
                out.append(ViewRef(f"{sd.name}/{n}", sd.name, str(img.relative_to(self.root)), n))
        return out

    def has_poses(self) -> bool:
        return True

    def pose(self, ref):
        p = self.d2 / ref.group / "pose" / f"{ref.index}.txt"
        if not p.is_file():
            return None
        T = np.loadtxt(p)
        if T.shape != (4, 4) or not np.isfinite(T).all():
            return None  # ScanNet marks lost tracking with -inf poses
        return T

    def _scene_3d(self, scene: str) -> Path | None:
        for split in ("train", "val", "test"):
            d = self.root / "scannet_3d" / split
            if (d / f"{scene}_inst.pth").is_file() and (d / f"{scene}_vh_clean_2.pth").is_file():
                return d
        return None

    def _cloud(self, scene: str):
        if scene not in self._clouds:
            hit = self._scene_3d(scene)
            if hit is None:
                self._clouds[scene] = None
            else:
                import torch

                coords = torch.load(hit / f"{scene}_vh_clean_2.pth", weights_only=True)[0].numpy().astype(np.float64)
                inst = torch.load(hit / f"{scene}_inst.pth", weights_only=True).numpy()
                labels = {}
                js = hit / f"{scene}_instances.json"
                if js.is_file():
                    labels = {int(o["instance_id"]): o["category"] for o in json.loads(js.read_text())["objects"]}
                self._clouds[scene] = (coords, inst, labels)
        return self._clouds[scene]

    def load(self, ref: ViewRef) -> Observation:
        sd = self.d2 / ref.group
        rgb = _read_image(self.root / ref.image, "RGB")
        dp = sd / "depth" / f"{ref.index}.png"
        if not dp.is_file():
            raise ViewError(f"{dp}: depth is missing for view {ref.key}", "missing depth")
        depth = _read_image(dp).astype(np.float32) / self.depth_scale
        Kp = sd / "intrinsic" / "intrinsic_depth.txt"
        if not Kp.is_file():
            raise ViewError(f"{Kp}: intrinsics are missing for view {ref.key}", "missing intrinsics")
        K = np.loadtxt(Kp)[:3, :3].copy()
        if rgb.shape[:2] != depth.shape:  # real ScanNet: 1296x968 colour, 640x480 depth -> resample colour
            from PIL import Image

            rgb = np.asarray(Image.fromarray(rgb).resize(depth.shape[::-1], Image.BILINEAR))
        T = self.pose(ref)
        inst, labels = None, {}
        ip = sd / "instance-filt" / f"{ref.index}.png"
        if ip.is_file():
            inst = _fit(_read_image(ip).astype(np.int32), depth.shape)
            agg = self.aggregation(ref.group)
            lp = sd / "label-filt" / f"{ref.index}.png"
            lab = _fit(_read_image(lp).astype(np.int32), depth.shape) if lp.is_file() and not agg else None
            for i in np.unique(inst[inst > 0]):
                if int(i) in agg:
                    labels[int(i)] = agg[int(i)]
                elif lab is not None:
                    labels[int(i)] = self.category(int(np.bincount(lab[inst == i]).argmax()))
        else:
            cl = self._cloud(ref.group)
            if cl is not None and T is not None:
                inst, labels = _project_instances(cl, depth, K, T)
                agg = self.aggregation(ref.group)   # ScanNet's names win over the side file's
                labels = {i: agg.get(i, name) for i, name in labels.items()}
        return Observation(ref, rgb, depth, inst, labels, K, T, files={"rgb": str(self.root / ref.image), "depth": str(dp)})


def _fit(mask: np.ndarray, shape) -> np.ndarray:
    """A label image at the depth resolution (nearest neighbour; real ScanNet exports may differ in size)."""
    if mask.shape == tuple(shape):
        return mask
    from PIL import Image

    return np.asarray(Image.fromarray(mask.astype(np.int32)).resize(tuple(shape)[::-1], Image.NEAREST)).astype(np.int32)


def find_scannet_label_map(root: Path, given: str | Path | None = None) -> Path | None:
    """The label map given by path (must exist), else ``scannetv2-labels.combined.tsv`` beside the scenes
    (in the root, ``scannet_2d/`` or the root's parent); None when there is none."""
    if given:
        p = Path(given).expanduser()
        if p.is_dir():
            p = p / SCANNET_LABEL_MAP
        if not p.is_file():
            raise ValueError(f"ScanNet label map '{p}' does not exist")
        return p
    for d in (root, root / "scannet_2d", root.parent):
        if (d / SCANNET_LABEL_MAP).is_file():
            return d / SCANNET_LABEL_MAP
    return None


def read_scannet_label_map(path: Path) -> dict[int, str]:
    """``id -> category`` from ScanNet's ``scannetv2-labels.combined.tsv`` (tab-separated, header row with
    ``id``, ``raw_category``, ``category``, ...); ``category`` falls back to ``raw_category`` when empty."""
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        rows = csv.DictReader(f, delimiter="\t")
        cols = set(rows.fieldnames or ())
        if "id" not in cols or not cols & {"category", "raw_category"}:
            raise ValueError(f"{path}: not ScanNet's label map (needs the tab-separated columns 'id' and "
                             f"'category'; found {sorted(cols)[:6]})")
        out = {}
        for r in rows:
            try:
                i = int(r["id"])
            except (TypeError, ValueError):
                raise ValueError(f"{path}: line {rows.line_num}: id {r['id']!r} is not an integer") from None
            out[i] = (r.get("category") or r.get("raw_category") or "").strip()
    return out


def _project_instances(cloud, depth, K, T, tol: float = 0.05):
    """Instance map of a view from an instance-labelled scene cloud (z-buffer + depth test)."""
    coords, inst, labels = cloud
    H, W = depth.shape
    w2c = np.linalg.inv(T)
    P = coords @ w2c[:3, :3].T + w2c[:3, 3]
    z = P[:, 2]
    ok = (z > 1e-3) & (inst > 0)
    u = np.round(P[ok, 0] / z[ok] * K[0, 0] + K[0, 2]).astype(np.int64)
    v = np.round(P[ok, 1] / z[ok] * K[1, 1] + K[1, 2]).astype(np.int64)
    zz, ii = z[ok], inst[ok]
    m = (u >= 0) & (u < W) & (v >= 0) & (v < H)
    u, v, zz, ii = u[m], v[m], zz[m], ii[m]
    d = depth[v, u]
    m = (d > 0) & (np.abs(d - zz) < tol)
    out = np.zeros((H, W), np.int32)
    out[v[m], u[m]] = ii[m]
    # a voxelised cloud leaves holes: close them with a small max-filter over labelled neighbours
    from scipy.ndimage import grey_dilation

    filled = grey_dilation(out, size=(3, 3))
    out = np.where((out == 0) & (depth > 0), filled, out)
    present = set(np.unique(out).tolist()) - {0}
    return out, {i: labels.get(i, f"object {i}") for i in present}


# ----------------------------------------------------------------------------- plain images
class ImageFolderSource(Source):
    """A folder of images (recursively); depth and segmentation come from estimators. Each
    sub-folder is one group (multi-view needs a reconstructor)."""

    kind = "images"

    def __init__(self, root):
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"{self.root}: not a folder")

    def refs(self) -> list[ViewRef]:
        files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_EXT and p.is_file())
        return [ViewRef(str(p.relative_to(self.root)), str(p.parent.relative_to(self.root)),
                        str(p.relative_to(self.root)), i) for i, p in enumerate(files)]

    def load(self, ref: ViewRef) -> Observation:
        rgb = _read_image(self.root / ref.image, "RGB")
        return Observation(ref, rgb, None, None, {}, None, None, files={"rgb": str(self.root / ref.image)})


def open_source(path, label_map: str | Path | None = None) -> Source:
    p = Path(path)
    if (p / "scannet_2d").is_dir():
        return ScanNetSource(p, label_map=label_map)
    if (p / "world.json").is_file():   # the world's own folder is not a dataset format: refuse, say what to pass
        raise ValueError(f"{p}: a synthetic world folder; the QA generator reads ScanNet-style data: write the world "
                         "with suites.synthetic.writers.write_scannet(world, out) (the embedded default: "
                         "suites.synthetic.defaults.scannet_root(workspace)) and pass that folder")
    if p.is_dir():
        return ImageFolderSource(p)
    raise ValueError(f"{p}: not a ScanNet-format folder (scannet_2d/) or an image folder")


def complete_observation(obs: Observation, est: Estimators) -> Observation:
    """Fill/override depth, K and masks from the estimators; check what is there."""
    H, W = obs.rgb.shape[:2]
    name = obs.files.get("rgb", obs.ref.key)
    if est.depth is not None:
        d, K = est.depth.estimate_depth(obs.rgb)
        obs.depth = np.asarray(d, np.float32)
        if K is not None:
            obs.K = np.asarray(K, np.float64)
    if est.segmenter is not None:
        inst, labels = est.segmenter.segment(obs.rgb)
        obs.instance, obs.labels = np.asarray(inst, np.int32), dict(labels)
    if obs.depth is None:
        raise ViewError(f"{name}: view {obs.ref.key} has no depth (give a depth estimator)", "missing depth")
    if obs.instance is None:
        raise ViewError(f"{name}: view {obs.ref.key} has no instance masks (give a segmenter)", "missing masks")
    if obs.depth.shape != (H, W):
        raise ViewError(f"{obs.files.get('depth', name)}: depth is {obs.depth.shape[1]}x{obs.depth.shape[0]}, "
                        f"image is {W}x{H} (view {obs.ref.key})", "depth size mismatch")
    if obs.instance.shape != (H, W):
        raise ViewError(f"{obs.files.get('instance', name)}: mask is {obs.instance.shape[1]}x{obs.instance.shape[0]}, "
                        f"image is {W}x{H} (view {obs.ref.key})", "mask size mismatch")
    if obs.K is None:
        obs.K = default_intrinsics(H, W)
    return obs
