"""ScanNet as preprocessed for OpenScene / Lexicon3D (3D clouds + 2D frames)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import common
from .. import categories as C
from ..views import load_view


LABEL_MAP = "scannetv2-labels.combined.tsv"
SCANNET_FX_640 = 577.870605  # the fixed ScanNet depth intrinsics Lexicon3D assumes at 640x480


def _aggregation(sname: str, objects) -> dict:
    """ScanNet's ``<scene>.aggregation.json``: one segGroup per object, objectId = instance id - 1."""
    groups = [{"id": o.instance_id - 1, "objectId": o.instance_id - 1, "label": o.category, "segments": []}
              for o in sorted(objects, key=lambda o: o.instance_id)]
    return {"sceneId": f"scannet.{sname}", "appId": "spatialboost.synthetic", "segGroups": groups,
            "segmentsFile": None}


def _label_map_tsv() -> str:
    """``scannetv2-labels.combined.tsv`` (ScanNet's columns id, raw_category, category, count, nyu40id,
    nyu40class) with one row per class of the world; raw_category = the world's category name."""
    rows = ["id\traw_category\tcategory\tcount\tnyu40id\tnyu40class"]
    for c in C.CATEGORIES:
        sid, cat, nyu, nyu_name = C.SCANNET_LABELS[c.name]
        rows.append(f"{sid}\t{c.name}\t{cat}\t1\t{nyu}\t{nyu_name}")
    return "\n".join(rows) + "\n"


def _voxelise(points, colors, labels, inst, voxel: float):
    """Mean position/colour, majority label and instance per occupied voxel."""
    keys = np.floor(points / voxel).astype(np.int64)
    keys -= keys.min(0)
    dims = keys.max(0) + 1
    flat = (keys[:, 0] * dims[1] + keys[:, 1]) * dims[2] + keys[:, 2]
    uniq, inv = np.unique(flat, return_inverse=True)
    n = len(uniq)
    cnt = np.bincount(inv, minlength=n).astype(np.float64)
    pts = np.stack([np.bincount(inv, points[:, k], n) for k in range(3)], 1) / cnt[:, None]
    col = np.stack([np.bincount(inv, colors[:, k], n) for k in range(3)], 1) / cnt[:, None]

    def majority(values):
        pair = inv.astype(np.int64) * 65536 + values.astype(np.int64)
        pu, pc = np.unique(pair, return_counts=True)
        vox = pu // 65536
        order = np.lexsort((pc, vox))  # by voxel, then count ascending
        last = np.r_[vox[order][1:] != vox[order][:-1], True]
        out = np.zeros(n, np.int64)
        out[vox[order][last]] = (pu % 65536)[order][last]
        return out

    return pts, col, majority(labels), majority(inst)


def write_scannet(world_dir, out_root, val_fraction: float = 0.25, voxel: float = 0.02,
                  overwrite: bool = False) -> Path:
    """ScanNet as preprocessed for OpenScene / Lexicon3D.

    * ``scannet_3d/{train,val}/sceneXXXX_00_vh_clean_2.pth``: ``torch.save`` of a tuple of
      tensors ``(coords float32 [N,3] metres, colors float32 [N,3] in [-1,1], labels int64 [N])``
      with ScanNet-20 labels (255 = ignore); loadable with ``torch.load(weights_only=True)``.
      The cloud fuses every view's back-projected depth, voxelised at ``voxel`` metres.
    * ``scannet_3d/{split}/sceneXXXX_00_inst.pth``: int64 [N] instance id per point (0 = room).
    * ``scannet_3d/{split}/sceneXXXX_00_instances.json``: per object id, category, ScanNet-20
      label, axis-aligned and oriented world boxes, point count.
    * ``scannet_2d/sceneXXXX_00/{color/N.jpg, depth/N.png (uint16 mm), pose/N.txt (4x4
      camera-to-world, OpenCV axes as ScanNet), intrinsic/intrinsic_{depth,color}.txt (4x4)}``.
    * What ScanNet's raw scenes add (its 2D label export and the aggregation), so readers of
      ScanNet-style data (the spatial-QA generator) need nothing of the world:
      ``scannet_2d/sceneXXXX_00/instance-filt/N.png`` (uint8, ScanNet's 1-based instance ids =
      aggregation objectId + 1 = the world's instance ids; 0 = unannotated, incl. walls/floor/ceiling),
      ``label-filt/N.png`` (uint16 raw ScanNet label ids, the ``id`` column of
      ``scannetv2-labels.combined.tsv``; see ``categories.SCANNET_LABELS``),
      ``sceneXXXX_00.aggregation.json`` (``segGroups`` [{id, objectId, label, segments: []}]: label = the
      world's category; no mesh segmentation is written, so ``segments`` is empty) and, at the root,
      ``scannetv2-labels.combined.tsv`` with the rows of the ids used (id, raw_category, category, count,
      nyu40id, nyu40class). The exact 3D boxes are the ``_instances.json`` side file above (ScanNet
      itself derives boxes from the mesh + segments).

    The intrinsics are the world's (K of the rendered frames), not ScanNet's fixed
    577.87 @ 640x480: readers should take them from ``intrinsic_depth.txt``.
    """
    import torch

    common._check_fraction(val_fraction)
    if not (0.001 <= voxel <= 1.0):
        raise ValueError(f"voxel must be in [0.001, 1] metres, got {voxel!r}")
    sc20 = np.full(256, C.SCANNET20_IGNORE, np.int64)
    for c in C.CATEGORIES:
        sc20[c.id] = c.scannet20
    sc20[0] = C.SCANNET20_IGNORE
    # layout 2: + instance-filt/, label-filt/, aggregation.json, label map (an older output is not reused)
    args = dict(val_fraction=val_fraction, voxel=voxel, layout=2)
    scannet_lut = C.scannet_label_lut()
    with common._atomic_output(world_dir, out_root, "scannet", args, overwrite) as res:
        if res is None:
            return Path(out_root)
        tmp, info = res
        scenes = common._views_by_scene(world_dir)
        train, val = common.split_scenes(scenes, val_fraction)
        for split, ids in (("train", train), ("val", val)):
            d3 = tmp / "scannet_3d" / split
            d3.mkdir(parents=True, exist_ok=True)
            for s in ids:
                sname = f"scene{s:04d}_00"
                d2 = tmp / "scannet_2d" / sname
                P, Cc, L, I = [], [], [], []
                view = None
                for v in scenes[s]:
                    view = load_view(world_dir, s, v)
                    common._save_jpg(d2 / "color" / f"{v}.jpg", view.rgb)
                    common._save_png(d2 / "depth" / f"{v}.png", common._depth_u16(view.depth, 1000.0))
                    (d2 / "pose").mkdir(parents=True, exist_ok=True)
                    np.savetxt(d2 / "pose" / f"{v}.txt", view.cam_to_world, fmt="%.8f")
                    common._save_png(d2 / "instance-filt" / f"{v}.png", view.instance.astype(np.uint8))
                    common._save_png(d2 / "label-filt" / f"{v}.png", scannet_lut[np.clip(view.semantic, 0, 255)])
                    vv, uu = np.nonzero(view.depth > 0)
                    z = view.depth[vv, uu].astype(np.float64)
                    K = view.K
                    pc = np.stack([(uu - K[0, 2]) / K[0, 0] * z, (vv - K[1, 2]) / K[1, 1] * z, z], 1)
                    T = view.cam_to_world
                    P.append(pc @ T[:3, :3].T + T[:3, 3])
                    Cc.append(view.rgb[vv, uu].astype(np.float64))
                    L.append(sc20[np.clip(view.semantic[vv, uu], 0, 255)])
                    I.append(view.instance[vv, uu])
                K4 = np.eye(4)
                K4[:3, :3] = view.K
                (d2 / "intrinsic").mkdir(parents=True, exist_ok=True)
                np.savetxt(d2 / "intrinsic" / "intrinsic_depth.txt", K4, fmt="%.6f")
                np.savetxt(d2 / "intrinsic" / "intrinsic_color.txt", K4, fmt="%.6f")
                pts, col, lab, ins = _voxelise(np.concatenate(P), np.concatenate(Cc), np.concatenate(L), np.concatenate(I), voxel)
                coords = torch.from_numpy(pts.astype(np.float32))
                colors = torch.from_numpy((col / 127.5 - 1.0).astype(np.float32))
                labels = torch.from_numpy(lab.astype(np.int64))
                torch.save((coords, colors, labels), d3 / f"{sname}_vh_clean_2.pth")
                torch.save(torch.from_numpy(ins.astype(np.int64)), d3 / f"{sname}_inst.pth")
                counts = np.bincount(ins, minlength=len(view.objects) + 1)
                objs = []
                for o in view.objects:
                    cat = C.by_name(o.category)
                    objs.append({
                        "instance_id": o.instance_id, "category": o.category, "category_id": o.category_id,
                        "scannet20": cat.scannet20,
                        "aabb": {"min": o.aabb_world["min"].tolist(), "max": o.aabb_world["max"].tolist()},
                        "obb": {k: np.asarray(val_).tolist() for k, val_ in o.obb_world.items()},
                        "num_points": int(counts[o.instance_id]) if o.instance_id < len(counts) else 0,
                    })
                (d3 / f"{sname}_instances.json").write_text(json.dumps({"scene": sname, "objects": objs}, indent=1))
                (d2 / f"{sname}.aggregation.json").write_text(json.dumps(_aggregation(sname, view.objects), indent=1))
        (tmp / LABEL_MAP).write_text(_label_map_tsv())
        info.update(train_scenes=train, val_scenes=val, label_set="scannet20", ignore_index=C.SCANNET20_IGNORE,
                    scannet20_names=list(C.SCANNET20_NAMES), label_map=LABEL_MAP)
    return Path(out_root)
