"""Fixtures for the SpatialBoost trainer tests: tiny images + LLaVA-style conversations, the boosted scheme."""
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from harness.registry import ENCODERS  # noqa: E402

if "boosted" not in ENCODERS:
    ENCODERS.register("boosted", "encoders.spatialboost.boosted:build_boosted")


def make_dataset(folder: Path, n: int = 8, multiview_every: int = 3, turns: int = 2, seed: int = 0) -> Path:
    """n samples; every `multiview_every`-th has two views; `turns` QA turns each. Returns the JSONL path."""
    from PIL import Image
    from encoders.spatialboost.data import write_jsonl
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "img").mkdir(exist_ok=True)
    recs = []
    for i in range(n):
        views = 2 if multiview_every and i % multiview_every == 0 else 1
        names = []
        for v in range(views):
            arr = rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)
            name = f"img/{i:03d}_{v}.png"
            Image.fromarray(arr).save(folder / name)
            names.append(name)
        conv = []
        for t in range(turns):
            q = ("<image>\n" * views if t == 0 else "") + f"How far is object {t} in scene {i}?"
            conv += [{"from": "human", "value": q}, {"from": "gpt", "value": f"About {i + t * 0.5:.1f} m."}]
        rec = {"id": f"s{i}", "conversations": conv}
        if views == 1:
            rec["image"] = names[0]
        else:
            rec["images"] = names
        recs.append(rec)
    return write_jsonl(folder / "qa.jsonl", recs)


@pytest.fixture
def qa_file(tmp_path):
    return make_dataset(tmp_path / "data")


def tiny_overrides(data: Path, ws: Path, **kw) -> dict:
    d = {"encoder": "builtin:tiny-vit", "lm": "builtin:tiny-qwen2", "data": str(data), "workspace": str(ws),
         "progress": False, "max_length": 512,
         "stage1": {"batch_size": 4, "micro_batch_size": 2, "lr": 1e-2},
         "stage2": {"batch_size": 4, "micro_batch_size": 2, "lr": 1e-3},
         "stage3": {"batch_size": 4, "micro_batch_size": 2, "lr": 1e-3}}
    d.update(kw)
    return d
