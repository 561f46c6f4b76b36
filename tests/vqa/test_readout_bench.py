"""benchmarks/vqa_readout.py: the attention readout learns a comparison between two token positions (what a
relative-depth question asks of the visual tokens) and not noise; end to end on the hand-made layout."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from vqa.conftest import load_benchmark


def _bench():
    return load_benchmark("vqa_readout")


def _pairs(n, seed, shuffle=False):
    """Tokens [n, 16, 8]: two tokens carry a mark (feature 1 = +1 for "A", -1 for "B") at random positions and a
    "depth" (feature 0); label = 1 when B is closer. Shuffled labels: nothing to learn."""
    g = np.random.default_rng(seed)
    x = g.normal(0, 0.1, (n, 16, 8)).astype(np.float32)
    y = np.zeros(n, dtype=np.int64)
    for i in range(n):
        a, b = g.choice(16, 2, replace=False)
        da, db = g.uniform(1, 5, 2)
        x[i, a, :2], x[i, b, :2] = (da, 1.0), (db, -1.0)
        y[i] = int(db < da)
    if shuffle:
        y = g.permutation(y)
    return torch.from_numpy(x), torch.zeros(n, dtype=torch.long), y


def test_readout_learns_a_two_position_comparison_and_not_noise():
    m = _bench()
    for shuffle, lo, hi in ((False, 0.9, 1.0), (True, 0.0, 0.65)):
        trx, trt, tr_y = _pairs(1500, 0, shuffle)
        vax, vat, va_y = _pairs(400, 1, shuffle)
        pred, epoch, curve = m.train_readout(trx, trt, tr_y, vax, vat, epochs=25, seed=0)
        acc = float((pred.numpy().astype(np.int64) == va_y).mean())
        assert lo <= acc <= hi, (shuffle, acc)
        assert 0 <= epoch < 25 and len(curve) == 25


def test_readout_bench_end_to_end(layout, tmp_path):
    out = tmp_path / "r.json"
    assert _bench().main(["--workspace", str(tmp_path / "ws"), "--data", str(layout), "--encoder", "builtin:tiny-vit",
                          "--encoder", "random:builtin:tiny-vit", "--image-size", "32", "--depth-pairs", "4",
                          "--epochs", "2", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    root = Path(r["data"])
    for t in ("blink_depth_local", "spatialrgpt_qual_local"):
        n = len((root / f"{t}.jsonl").read_text().splitlines())
        assert r["tasks"][t]["val"] == n > 0
        assert r["tasks"][t]["cue"] is not None
        for e in r["encoders"].values():
            assert len(e["tasks"][t]["scores"]) == n and set(e["tasks"][t]["scores"]) <= {0.0, 1.0}
        ref, other = (np.array(e["tasks"][t]["scores"]) for e in r["encoders"].values())
        delta, low, high = r["encoders"]["random:builtin:tiny-vit"]["tasks"][t]["delta_vs_first"]
        assert delta == other.mean() - ref.mean() and low <= delta <= high


def test_readout_bench_without_data_uses_the_world_preset(tmp_path):
    import pytest

    from harness.errors import UserError
    with pytest.raises(UserError, match="unknown world preset 'nope'; presets: tiny, default, vqa"):
        _bench().main(["--workspace", str(tmp_path / "ws"), "--world", "nope", "--encoder", "builtin:tiny-vit"])
