"""Data-parallel feature extraction under torchrun (gloo, 2 CPU processes): each rank encodes its shard,
the entry is assembled only when all shards are complete, and it equals the single-process features."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def test_two_ranks_write_one_entry_equal_to_a_single_process(tmp_path):
    root = tmp_path / "cache"
    root.mkdir()
    n = 11                                        # not a multiple of the world size: uneven shards
    rc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                         str(Path(__file__).with_name("dist_cache_worker.py")),
                         str(root), str(n), str(ROOT)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert rc.returncode == 0, rc.stderr[-3000:]
    ranks = [json.loads((root / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["key"] == ranks[1]["key"] and all(r["computed"] for r in ranks)
    assert [r["forwards"] for r in ranks] == [2, 2]        # 6 and 5 images at batch 3: each rank its shard only
    entries = [p for p in root.iterdir() if p.is_dir()]
    assert [p.name for p in entries] == [ranks[0]["key"]]  # no temp or shard folders left
    meta = json.loads((entries[0] / "meta.json").read_text())
    assert meta["n"] == n and meta["shards"] == 2

    sys.path.insert(0, str(Path(__file__).parent))
    from dist_cache_worker import Images
    from harness.cache import FeatureCache
    from harness.registry import build_encoder
    single = FeatureCache(tmp_path / "single").get_or_compute(
        build_encoder("builtin:tiny-vit"), Images(n), [-1, -2], ("cls", "patches"), batch_size=4, progress=False)
    assert single.key == ranks[0]["key"]
    for name in single.arrays:
        a = np.asarray(np.load(entries[0] / f"{name}.npy"), np.float32)
        np.testing.assert_allclose(a, np.asarray(single[name], np.float32), atol=2e-3, rtol=2e-3)
