"""Write a synthetic world in the native on-disk formats of the real benchmarks.

One module per format (``nyud``, ``kitti``, ``ade20k``, ``voc``, ``imagefolder``, ``roxford``, ``scannet``,
``spatial``) on a common preamble (``common``: scene split, the atomic + idempotent output folder, image
savers). Each ``write_X(world_dir, out_root, ...) -> Path`` is re-exported here; see README.md for layouts.
"""

from __future__ import annotations

from . import common
from .ade20k import write_ade20k
from .common import STAMP, split_scenes
from .imagefolder import write_imagefolder
from .kitti import write_kitti
from .nyud import write_nyud
from .roxford import write_roxford
from .scannet import write_scannet
from .spatial import write_spatial_annotations
from .voc import write_voc

__all__ = [
    "split_scenes",
    "write_nyud",
    "write_kitti",
    "write_ade20k",
    "write_voc",
    "write_imagefolder",
    "write_roxford",
    "write_scannet",
    "write_spatial_annotations",
    "WRITERS",
    "STAMP",
    "common",
]

WRITERS = {
    "nyud": write_nyud,
    "kitti": write_kitti,
    "ade20k": write_ade20k,
    "voc": write_voc,
    "imagefolder": write_imagefolder,
    "roxford": write_roxford,
    "scannet": write_scannet,
    "spatial": write_spatial_annotations,
}
