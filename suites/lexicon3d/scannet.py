"""ScanNet readers in the two layouts Lexicon3D / OpenScene use (one reader per format).

* ``scannet_3d/{train,val}/<scene>_vh_clean_2.pth``: a ``torch.save``d tuple ``(coords [N,3], colors [N,3],
  labels [N])`` (numpy arrays in OpenScene's originals, tensors in the world's copy). Loaded with
  ``torch.load(weights_only=True)``; numpy arrays need numpy's array constructors, so a second try allows
  exactly those (``torch.serialization.safe_globals``), never a plain unpickle.
* ``scannet_2d/<scene>/{color/N.jpg, depth/N.png (uint16 mm), pose/N.txt (4x4 camera-to-world),
  intrinsic/intrinsic_{depth,color}.txt}``. Intrinsics: ``intrinsic_depth.txt`` (at the depth PNG's size),
  else ``intrinsic_color.txt`` (at the colour JPG's size), else ScanNet's fixed fx = fy = 577.870605,
  cx = 319.5, cy = 239.5 at 640x480 (what Lexicon3D hard-codes); always rescaled to the frame size used.
"""
from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from suites.images import DataError

SCANNET_K_640 = np.array([[577.870605, 0.0, 319.5], [0.0, 577.870605, 239.5], [0.0, 0.0, 1.0]])
IGNORE = 255
N_CLASSES = 20
SUFFIX = "_vh_clean_2.pth"


class PoseError(DataError):
    """A pose file holds a finite matrix that is not a rigid camera-to-world transform."""


def _numpy_globals() -> list:
    core = getattr(np, "_core", None) or np.core
    dtypes = [type(np.dtype(t)) for t in ("f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "?")]
    return [core.multiarray._reconstruct, core.multiarray.scalar, np.ndarray, np.dtype, *dtypes]


def load_cloud(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(coords float64 [N,3], colors float32 [N,3], labels int64 [N]) of one ``*_vh_clean_2.pth``; any
    malformed or unsafe file is a DataError naming it."""
    path = Path(path)
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            with torch.serialization.safe_globals(_numpy_globals()):
                obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any parse failure of an untrusted file (the weights-only
        # unpickler raises IndexError, struct.error, ... on some garbage) is bad input naming the file
        raise DataError(f"cannot read ScanNet cloud '{path}' (torch.load weights_only, numpy arrays allowed): "
                        f"{type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
    if not isinstance(obj, (tuple, list)) or len(obj) < 3:
        raise DataError(f"'{path}' must hold a tuple (coords, colors, labels); got {type(obj).__name__}")
    arr = [np.asarray(x.numpy() if isinstance(x, torch.Tensor) else x) for x in obj[:3]]
    coords, colors, labels = arr
    n = len(coords)
    if coords.ndim != 2 or coords.shape[1] != 3 or n == 0:
        raise DataError(f"'{path}': coords must be [N,3] with N > 0, got {coords.shape}")
    if colors.shape != coords.shape or labels.shape != (n,):
        raise DataError(f"'{path}': colors {colors.shape} / labels {labels.shape} do not match coords {coords.shape}")
    if not np.isfinite(coords).all():
        raise DataError(f"'{path}': coords hold non-finite values")
    labels = labels.astype(np.int64)
    bad = (labels != IGNORE) & ((labels < 0) | (labels >= N_CLASSES))
    if bad.any():
        raise DataError(f"'{path}': label {int(labels[bad][0])} is not a ScanNet-20 class (0..19) or {IGNORE}")
    return coords.astype(np.float64), colors.astype(np.float32), labels


def read_pose(path: Path, tol: float = 1e-3) -> np.ndarray | None:
    """4x4 camera-to-world; None for ScanNet's invalid (non-finite) poses, which readers skip. A finite
    matrix that is not rigid (R^T R != I, det != +1, last row != 0 0 0 1) is a PoseError naming the file."""
    try:
        m = np.loadtxt(path, dtype=np.float64)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read pose file '{path}': {e}") from None
    if m.shape != (4, 4):
        raise PoseError(f"pose file '{path}' must hold a 4x4 matrix, got shape {m.shape}")
    if not np.isfinite(m).all():
        return None
    R = m[:3, :3]
    err = max(np.abs(R.T @ R - np.eye(3)).max(), abs(np.linalg.det(R) - 1.0), np.abs(m[3] - [0, 0, 0, 1]).max())
    if err > tol:
        raise PoseError(f"pose file '{path}' is not a rigid camera-to-world transform (R^T R = I, det R = 1, "
                        f"last row 0 0 0 1 violated by {err:.3g})")
    return m


def _read_k(path: Path) -> np.ndarray:
    try:
        m = np.loadtxt(path, dtype=np.float64)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read intrinsics '{path}': {e}") from None
    if m.shape not in ((4, 4), (3, 3)) or not np.isfinite(m).all() or m[0, 0] <= 0 or m[1, 1] <= 0:
        raise DataError(f"intrinsics '{path}' must be a 3x3 or 4x4 matrix with positive focal lengths")
    return m[:3, :3]


def _image_hw(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as im:
            return im.size[1], im.size[0]
    except OSError as e:
        raise DataError(f"cannot read image '{path}': {e}") from None


@dataclass
class Scene:
    """One scene: its cloud file and its 2D folder (frames sorted by their number)."""
    name: str
    split: str
    cloud: Path
    frames_dir: Path
    frame_ids: list[str]

    def color(self, f: str) -> Path:
        return self.frames_dir / "color" / f"{f}.jpg"

    def depth_path(self, f: str) -> Path:
        return self.frames_dir / "depth" / f"{f}.png"

    def pose(self, f: str) -> np.ndarray | None:
        return read_pose(self.frames_dir / "pose" / f"{f}.txt")

    def depth(self, f: str) -> np.ndarray:
        """Depth in metres (uint16 millimetres / 1000; 0 = no measurement)."""
        p = self.depth_path(f)
        try:
            with Image.open(p) as im:
                d = np.asarray(im)
        except OSError as e:
            raise DataError(f"cannot read depth '{p}': {e}") from None
        if d.ndim != 2:
            raise DataError(f"depth '{p}' must be a single-channel 16-bit PNG, got shape {d.shape}")
        return d.astype(np.float32) / 1000.0

    def intrinsics(self, hw: tuple[int, int]) -> np.ndarray:
        """K rescaled to a frame of size ``hw`` = (H, W)."""
        kd = self.frames_dir / "intrinsic" / "intrinsic_depth.txt"
        kc = self.frames_dir / "intrinsic" / "intrinsic_color.txt"
        if kd.is_file():
            K, ref = _read_k(kd), _image_hw(self.depth_path(self.frame_ids[0]))
        elif kc.is_file():
            K, ref = _read_k(kc), _image_hw(self.color(self.frame_ids[0]))
        else:
            K, ref = SCANNET_K_640.copy(), (480, 640)
        return rescale_k(K, ref, hw)


def rescale_k(K: np.ndarray, ref_hw: tuple[int, int], hw: tuple[int, int]) -> np.ndarray:
    """Intrinsics of a ``ref_hw`` frame resized to ``hw`` (pixel-centre convention: c' = (c + .5) s - .5)."""
    sy, sx = hw[0] / ref_hw[0], hw[1] / ref_hw[1]
    K = np.asarray(K, dtype=np.float64).copy()
    K[0, 0] *= sx
    K[1, 1] *= sy
    K[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
    K[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
    return K


def _frame_key(stem: str):
    return (0, int(stem), "") if stem.isdigit() else (1, 0, stem)


class ScanNetData:
    """The scenes of one ScanNet root (``scannet_3d`` + ``scannet_2d``) by split."""

    def __init__(self, root: Path):
        self.root = Path(root)
        d3, d2 = self.root / "scannet_3d", self.root / "scannet_2d"
        if not d3.is_dir() or not d2.is_dir():
            raise DataError(f"'{self.root}' is not a ScanNet root: need scannet_3d/{{train,val}}/*{SUFFIX} and "
                            "scannet_2d/<scene>/{color,depth,pose}/ (OpenScene/Lexicon3D layout)")
        self.splits: dict[str, list[Scene]] = {}
        for split in ("train", "val"):
            scenes = []
            for f in sorted((d3 / split).glob(f"*{SUFFIX}")):
                name = f.name[:-len(SUFFIX)]
                fd = d2 / name
                colors = sorted((p.stem for p in (fd / "color").glob("*.jpg")), key=_frame_key)
                if not colors:
                    raise DataError(f"scene '{name}' has no frames in '{fd / 'color'}' (expected N.jpg)")
                for sub, ext in (("depth", "png"), ("pose", "txt")):
                    miss = [c for c in colors if not (fd / sub / f"{c}.{ext}").is_file()]
                    if miss:
                        raise DataError(f"scene '{name}': '{fd / sub / f'{miss[0]}.{ext}'}' is missing")
                scenes.append(Scene(name, split, f, fd, colors))
            if not scenes:
                raise DataError(f"no scene clouds in '{d3 / split}' (expected <scene>{SUFFIX})")
            self.splits[split] = scenes

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for split, scenes in self.splits.items():
            for s in scenes:
                h.update(f"{split}/{s.name}/{s.cloud.stat().st_size}/{','.join(s.frame_ids)}".encode())
                for f in s.frame_ids:
                    h.update(str(s.color(f).stat().st_size).encode())
                    h.update(str(s.depth_path(f).stat().st_size).encode())
        return h.hexdigest()[:16]

    @property
    def scenes(self) -> list[Scene]:
        return self.splits["train"] + self.splits["val"]
