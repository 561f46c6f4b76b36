"""A hand-made spatial layout (the world writer's format) with known geometry: fast, no MuJoCo."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def _obj(iid, cat, bbox, cam_min, cam_max, world_min, world_max, pixels=2000):
    return {"instance_id": iid, "category": cat, "category_id": iid, "pixels": pixels, "bbox2d": bbox,
            "aabb_cam": {"min": cam_min, "max": cam_max}, "aabb_world": {"min": world_min, "max": world_max}}


def make_layout(root: Path, n_views: int = 6) -> Path:
    """Views 0..n-1; the last third are val. Depth: a left-to-right ramp 1 m .. 5 m (so the closer of two points
    is the one further left). Objects: a chair left (x<0, low, small), a sofa right (x>0, higher, big)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    recs = []
    H, W = 48, 64
    for v in range(n_views):
        base = f"images/scene_{v:05d}/000"
        (root / base).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(root / f"{base}_rgb.png")
        depth_mm = np.tile(np.linspace(1000, 5000, W), (H, 1)).astype(np.uint16)
        Image.fromarray(depth_mm).save(root / f"{base}_depth.png")
        objs = [_obj(1, "chair", [5, 20, 25, 45], [-1.2, 0, 2], [-0.8, 0.5, 2.4], [0, 0, 0], [0.5, 0.4, 0.9]),
                _obj(2, "sofa", [35, 10, 60, 40], [0.5, -0.5, 3], [2.0, 0.3, 4], [2, 0, 0.5], [4.0, 1.0, 1.5])]
        recs.append({"id": f"scene_{v:05d}/000", "scene": v, "view": 0,
                     "split": "val" if v >= n_views * 2 // 3 else "train", "rgb": f"{base}_rgb.png",
                     "depth": f"{base}_depth.png", "depth_scale": 1000.0, "image_size": [H, W], "objects": objs})
    (root / "annotations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return root


@pytest.fixture(scope="session")
def layout(tmp_path_factory):
    return make_layout(tmp_path_factory.mktemp("vqa-layout") / "spatial")


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory):
    from harness.registry import build_encoder
    from harness.workspace import open_workspace
    from suites.vqa.vlm_cache import build_vlm
    ws = open_workspace(tmp_path_factory.mktemp("vqa-ws"))
    return build_vlm(build_encoder("builtin:tiny-vit", ws), "builtin:tiny-qwen2", -1, ws)


def load_benchmark(name: str):
    """A script of benchmarks/ as a module (they are scripts, not a package)."""
    import importlib.util
    path = Path(__file__).resolve().parents[2] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
