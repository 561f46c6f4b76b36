"""Readers for the real on-disk depth benchmarks (one reader per format; the synthetic world writes them).

NYUd v2 (BTS / DINOv3 ``dinov3/data/datasets/nyu.py`` convention)::

    ROOT/nyu_train.txt, ROOT/nyu_test.txt     lines ``image_relpath depth_relpath focal``
    depth = 16-bit grayscale PNG in millimetres (value / 1000 -> metres), 0 = no measurement

KITTI Eigen split (BTS / Monocular-Depth-Estimation-Toolbox convention)::

    ROOT/kitti_eigen_{train,test}.txt         (else BTS's eigen_{train,test}_files_with_gt.txt)
    lines ``rgb_relpath depth_relpath focal``; depth_relpath ``None`` = no ground truth for that frame
    depth = 16-bit grayscale PNG, value / 256 -> metres, 0 = invalid
    rgb paths are relative to ROOT/<rgb_dir>, depth paths to ROOT/<depth_dir> (both default ROOT)

Paths are stripped of a leading ``/`` (the BTS lists write ``/kitchen_0028b/rgb_00045.jpg``). Every list
entry is checked at construction (file exists); a depth map is checked when read (16-bit grayscale PNG
of the RGB image's size). Each failure raises ``DataError`` naming the file.

A split yields ``(normalised image tensor [3,H,W], depth tensor [1,H,W])`` at the encoder input size
(depth resized nearest-neighbour), which is what the feature cache and the training loop read; the
native-resolution ground truth for evaluation comes from ``gt(i)`` and ``eval_mask(i)``.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from suites.images import DataError, files_fingerprint, read_rgb

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)   # before with_input(...)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# NYU: the white-border crop used for training (DINOv3 NYUCrop, x1, y1, x2, y2 at 640x480) and the
# Eigen evaluation crop (rows 45:471, cols 41:601 at 480x640), both scaled to other sizes.
NYU_TRAIN_CROP = (43, 45, 608, 472)
EIGEN_CROP = (45, 471, 41, 601)
NYU_REF_HW = (480, 640)
# KITTI: Kitti-Benchmark crop (352 x 1216, bottom-centred) and the Garg crop as fractions of the full
# (uncropped) frame (BTS / AdaBins eval: rows 0.40810811..0.99189189 h, cols 0.03594771..0.96405229 w).
KB_HW = (352, 1216)
KITTI_REF_HW = (375, 1242)
GARG_CROP = (0.40810811, 0.99189189, 0.03594771, 0.96405229)


@dataclass(frozen=True)
class DepthSample:
    image: str               # relative to the rgb root
    depth: str | None        # relative to the depth root; None = no ground truth (KITTI)
    focal: float
    line: int                # 1-based line in the split file (for messages)


def png_header(path: Path) -> tuple[int, int, int, int]:
    """(width, height, bit_depth, colour_type) from a PNG's IHDR, without decoding it."""
    try:
        with open(path, "rb") as f:
            head = f.read(29)
    except OSError as e:
        raise DataError(f"cannot read depth map '{path}': {e}") from None
    if len(head) < 26 or head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise DataError(f"depth map '{path}' is not a PNG file")
    w, h = struct.unpack(">II", head[16:24])
    return w, h, head[24], head[25]


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image without decoding its pixels."""
    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, SyntaxError) as e:
        raise DataError(f"cannot read image '{path}': {e}") from None


def read_depth_png(path: Path, scale: float, expect_wh: tuple[int, int] | None = None) -> np.ndarray:
    """16-bit grayscale PNG -> float32 metres (value / scale), 0 stays 0 (= invalid).

    An 8-bit PNG (a common export mistake that silently quantises depth to 256 levels) or a colour PNG is
    refused, as is a map whose size differs from its RGB image (``expect_wh``)."""
    w, h, bits, colour = png_header(path)
    if bits != 16 or colour != 0:
        kind = {0: "grayscale", 2: "RGB", 3: "palette", 4: "grayscale+alpha", 6: "RGBA"}.get(colour, "?")
        raise DataError(f"depth map '{path}' is a {bits}-bit {kind} PNG; expected a 16-bit grayscale PNG "
                        f"(depth * {scale:g} as uint16)")
    if expect_wh is not None and (w, h) != tuple(expect_wh):
        raise DataError(f"depth map '{path}' is {w}x{h} but its RGB image is {expect_wh[0]}x{expect_wh[1]} "
                        "(width x height)")
    try:
        with Image.open(path) as im:
            arr = np.asarray(im)
    except (OSError, SyntaxError) as e:
        raise DataError(f"cannot read depth map '{path}': {e}") from None
    return arr.astype(np.float32) / float(scale)


def read_split_file(listing: Path, rgb_root: Path, depth_root: Path, allow_none: bool) -> list[DepthSample]:
    """Parse ``image depth focal`` lines; every named file must exist."""
    if not listing.is_file():
        raise DataError(f"split file '{listing}' does not exist")
    samples = []
    for n, line in enumerate(listing.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 3:
            raise DataError(f"{listing}:{n}: expected 'image_relpath depth_relpath focal', got '{line.strip()}'")
        img, dep, foc = parts
        try:
            focal = float(foc)
        except ValueError:
            raise DataError(f"{listing}:{n}: focal '{foc}' is not a number") from None
        img = img.strip("/")
        if not (rgb_root / img).is_file():
            raise DataError(f"{listing}:{n}: image '{rgb_root / img}' does not exist")
        if dep == "None":
            if not allow_none:
                raise DataError(f"{listing}:{n}: depth path 'None' is not allowed in this format "
                                "(every NYUd frame has ground truth)")
            depth = None
        else:
            depth = dep.strip("/")
            if not (depth_root / depth).is_file():
                raise DataError(f"{listing}:{n}: depth map '{depth_root / depth}' does not exist")
        samples.append(DepthSample(img, depth, focal, n))
    if not samples:
        raise DataError(f"split file '{listing}' lists no samples")
    return samples


def round_to_multiple(x: float, m: int) -> int:
    return max(m, int(round(x / m)) * m)


def scaled_box(box_hw: tuple[int, int, int, int], ref_hw: tuple[int, int], hw: tuple[int, int]):
    """(y1, y2, x1, x2) defined at ``ref_hw`` -> the same region at ``hw`` (DINOv3's int() scaling)."""
    y1, y2, x1, x2 = box_hw
    h, w = hw
    return (int(y1 / ref_hw[0] * h), int(y2 / ref_hw[0] * h), int(x1 / ref_hw[1] * w), int(x2 / ref_hw[1] * w))


def eigen_mask(hw: tuple[int, int]) -> np.ndarray:
    """NYU Eigen crop (rows 45:471, cols 41:601 at 480x640), scaled to ``hw``."""
    y1, y2, x1, x2 = scaled_box(EIGEN_CROP, NYU_REF_HW, hw)
    m = np.zeros(hw, dtype=bool)
    m[y1:y2, x1:x2] = True
    return m


def kb_crop_box(hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the KB crop: 352x1216 bottom-centred (BTS ``top = h - 352``,
    ``left = (w - 1216) // 2``). Frames smaller than that (scaled synthetic worlds) get the same fraction
    of the frame (352/375 x 1216/1242), bottom-centred."""
    h, w = hw
    ch, cw = KB_HW
    if h < ch or w < cw:
        ch = int(round(h * KB_HW[0] / KITTI_REF_HW[0]))
        cw = int(round(w * KB_HW[1] / KITTI_REF_HW[1]))
    return h - ch, (w - cw) // 2, ch, cw


def garg_mask(full_hw: tuple[int, int], kb_box: tuple[int, int, int, int] | None) -> np.ndarray:
    """Garg crop defined on the full frame, expressed in the (optionally KB-cropped) frame."""
    h, w = full_hw
    fy1, fy2, fx1, fx2 = GARG_CROP
    full = np.zeros((h, w), dtype=bool)
    full[int(fy1 * h):int(fy2 * h), int(fx1 * w):int(fx2 * w)] = True
    if kb_box is None:
        return full
    top, left, ch, cw = kb_box
    return full[top:top + ch, left:left + cw]


class DepthSplit(torch.utils.data.Dataset):
    """One split of a depth dataset. Subclasses set the format constants and the crops."""

    name: str = "depth"
    depth_scale: float = 1000.0
    allow_none: bool = False

    def __init__(self, root: str | Path, split: str, listing: Path, rgb_root: Path, depth_root: Path):
        self.root = Path(root)
        self.split = split
        self.listing = listing
        self.rgb_root = rgb_root
        self.depth_root = depth_root
        self.samples = read_split_file(listing, rgb_root, depth_root, self.allow_none)
        self.input_hw: tuple[int, int] | None = None     # encoder input size (H, W); None = native
        self.transform_id = f"{self.name}-{self.crop_id()}-native-imagenet"
        self._norm = (torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1))
        self._augment: Callable | None = None
        self._interp = "bicubic"
        self.targets = True        # False: items carry an empty target (feature extraction reads no depth)

    # -- configuration ------------------------------------------------------------------------
    def with_input(self, input_hw: tuple[int, int], mean: Sequence[float], std: Sequence[float],
                   interpolation: str = "bicubic", augment: Callable | None = None,
                   augment_id: str = "") -> "DepthSplit":
        """A copy that yields images resized to ``input_hw`` and normalised with ``mean``/``std``;
        ``augment(image[3,H,W] in [0,1], depth[1,H,W]) -> (image, depth)`` runs before normalisation."""
        other = object.__new__(type(self))
        other.__dict__.update(self.__dict__)
        other.input_hw = (int(input_hw[0]), int(input_hw[1]))
        other._norm = (torch.tensor(list(mean), dtype=torch.float32).view(3, 1, 1),
                       torch.tensor(list(std), dtype=torch.float32).view(3, 1, 1))
        other._interp = interpolation
        other._augment = augment
        mean_s = ",".join(f"{v:.4f}" for v in mean)
        std_s = ",".join(f"{v:.4f}" for v in std)
        other.transform_id = (f"{self.name}-{self.crop_id()}-resize{other.input_hw[0]}x{other.input_hw[1]}-"
                              f"{interpolation}-mean{mean_s}-std{std_s}" + (f"-{augment_id}" if augment else ""))
        return other

    def images_only(self) -> "DepthSplit":
        """Same images and ``transform_id``; the target is an empty tensor (the feature cache discards it)."""
        other = object.__new__(type(self))
        other.__dict__.update(self.__dict__)
        other.targets = False
        return other

    def crop_id(self) -> str:
        return "full"

    def native_crop(self, hw: tuple[int, int]) -> tuple[int, int, int, int] | None:
        """(top, left, h, w) applied to image and depth before anything else (KITTI: KB crop)."""
        return None

    def eval_mask(self, i: int, hw: tuple[int, int] | None = None) -> np.ndarray:
        """The benchmark's evaluation crop for sample i at ``hw`` (default: its ground-truth size)."""
        raise NotImplementedError

    def train_mask(self, hw: tuple[int, int]) -> np.ndarray:
        """Pixels of a full (resized) frame that training may use (NYU: inside the white-border crop)."""
        return np.ones(hw, dtype=bool)

    # -- identity -------------------------------------------------------------------------------
    def fingerprint(self) -> str:
        rels = [str(self.rgb_root.relative_to(self.root) / s.image) if self.rgb_root != self.root else s.image
                for s in self.samples]
        deps = [str((self.depth_root / s.depth).relative_to(self.root)) for s in self.samples if s.depth]
        extra = f"{self.name}|{self.split}|{self.depth_scale}|" + ",".join(f"{s.focal:g}" for s in self.samples)
        return files_fingerprint(self.root, rels + deps, extra=extra)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def has_gt(self) -> np.ndarray:
        return np.array([s.depth is not None for s in self.samples], dtype=bool)

    # -- reading --------------------------------------------------------------------------------
    def _rgb(self, i: int) -> Image.Image:
        img = read_rgb(self.rgb_root / self.samples[i].image)
        box = self.native_crop((img.height, img.width))
        if box is not None:
            top, left, h, w = box
            img = img.crop((left, top, left + w, top + h))
        return img

    def gt(self, i: int) -> np.ndarray:
        """Native-resolution ground truth in metres (after the format's fixed crop), 0 = invalid.
        A frame without ground truth (KITTI ``None``) gives an all-zero map of the image size."""
        s = self.samples[i]
        img_path = self.rgb_root / s.image
        wh = image_size(img_path)
        if s.depth is None:
            d = np.zeros((wh[1], wh[0]), dtype=np.float32)
        else:
            d = read_depth_png(self.depth_root / s.depth, self.depth_scale, expect_wh=wh)
        box = self.native_crop(d.shape)
        if box is not None:
            top, left, h, w = box
            d = d[top:top + h, left:left + w]
        return d

    def native_hw(self, i: int = 0) -> tuple[int, int]:
        w, h = image_size(self.rgb_root / self.samples[i].image)
        box = self.native_crop((h, w))
        return (box[2], box[3]) if box is not None else (h, w)

    def _to_input(self, x: torch.Tensor) -> torch.Tensor:
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as TF
        h, w = self.input_hw or x.shape[-2:]
        if tuple(x.shape[-2:]) != (h, w):
            x = TF.resize(x, [h, w], interpolation=InterpolationMode(self._interp), antialias=True).clamp_(0, 1)
        mean, std = self._norm
        return (x - mean) / std

    def __getitem__(self, i: int):
        """-> (normalised image [3,H,W], depth [1,H,W] in metres, 0 = invalid) at ``input_hw`` (native if None)."""
        from torchvision.transforms import functional as TF
        img = self._rgb(i)
        x = TF.pil_to_tensor(img).float().div_(255.0)
        if not self.targets and self._augment is None:
            return self._to_input(x), torch.zeros(0)
        depth = torch.from_numpy(self.gt(i))[None]
        if tuple(x.shape[-2:]) != tuple(depth.shape[-2:]):
            raise DataError(f"image '{self.rgb_root / self.samples[i].image}' and its depth map differ in size")
        if self._augment is not None:
            x, depth = self._augment(x, depth)
        if self.input_hw is not None and tuple(depth.shape[-2:]) != tuple(self.input_hw):
            depth = F.interpolate(depth[None], size=self.input_hw, mode="nearest")[0]
        return self._to_input(x), depth


class NYUDepth(DepthSplit):
    name = "nyu"
    depth_scale = 1000.0
    allow_none = False
    LISTS = {"train": "nyu_train.txt", "test": "nyu_test.txt"}

    def __init__(self, root: str | Path, split: str):
        root = Path(root)
        if split not in self.LISTS:
            raise DataError(f"NYUd has splits {list(self.LISTS)}, not '{split}'")
        super().__init__(root, split, root / self.LISTS[split], root, root)

    def eval_mask(self, i: int, hw: tuple[int, int] | None = None) -> np.ndarray:
        return eigen_mask(hw or self.native_hw(i))

    def train_mask(self, hw: tuple[int, int]) -> np.ndarray:
        x1, y1, x2, y2 = NYU_TRAIN_CROP
        ty1, ty2, tx1, tx2 = scaled_box((y1, y2, x1, x2), NYU_REF_HW, hw)
        m = np.zeros(hw, dtype=bool)
        m[ty1:ty2, tx1:tx2] = True
        return m

    def train_crop_box(self, hw: tuple[int, int]) -> tuple[int, int, int, int]:
        """(top, left, h, w) of the NYU white-border crop at ``hw``."""
        x1, y1, x2, y2 = NYU_TRAIN_CROP
        ty1, ty2, tx1, tx2 = scaled_box((y1, y2, x1, x2), NYU_REF_HW, hw)
        return ty1, tx1, ty2 - ty1, tx2 - tx1


class KittiDepth(DepthSplit):
    name = "kitti"
    depth_scale = 256.0
    allow_none = True
    LISTS = {"train": ("kitti_eigen_train.txt", "eigen_train_files_with_gt.txt"),
             "test": ("kitti_eigen_test.txt", "eigen_test_files_with_gt.txt")}

    def __init__(self, root: str | Path, split: str, rgb_dir: str = "", depth_dir: str = "",
                 kb_crop: bool = True):
        root = Path(root)
        if split not in self.LISTS:
            raise DataError(f"KITTI has splits {list(self.LISTS)}, not '{split}'")
        names = self.LISTS[split]
        listing = next((root / n for n in names if (root / n).is_file()), None)
        if listing is None:
            raise DataError(f"KITTI root '{root}' has no split file for '{split}' (looked for "
                            f"{' or '.join(names)})")
        self.kb_crop = kb_crop
        super().__init__(root, split, listing, root / rgb_dir if rgb_dir else root,
                         root / depth_dir if depth_dir else root)

    def crop_id(self) -> str:
        return "kb" if self.kb_crop else "full"

    def native_crop(self, hw):
        return kb_crop_box(tuple(hw)) if self.kb_crop else None

    def eval_mask(self, i: int, hw: tuple[int, int] | None = None) -> np.ndarray:
        w, h = image_size(self.rgb_root / self.samples[i].image)
        m = garg_mask((h, w), self.native_crop((h, w)))
        if hw is not None and tuple(hw) != m.shape:
            m = F.interpolate(torch.from_numpy(m)[None, None].float(), size=tuple(hw), mode="nearest")[0, 0].bool().numpy()
        return m
