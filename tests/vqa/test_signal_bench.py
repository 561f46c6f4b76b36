"""benchmarks/vqa_signal.py end to end on the hand-made layout with tiny models: one VLM per encoder, the
three local tasks scored without lmms-eval, floors and paired CIs written; a second call reuses the VLMs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vqa.conftest import load_benchmark


def _bench():
    return load_benchmark("vqa_signal")


def test_signal_bench_scores_every_doc_and_reuses_vlms(layout, tmp_path):
    args = ["--workspace", str(tmp_path / "ws"), "--data", str(layout), "--encoder", "builtin:tiny-vit",
            "--encoder", "random:builtin:tiny-vit", "--set", "lm=builtin:tiny-qwen2", "stage1_steps=1",
            "stage1_batch=2", "stage2_steps=2", "stage2_batch=2", "micro_batch=2", "image_size=32",
            "depth_pairs=2", "object_pairs=1", "max_new_tokens=4", "grad_checkpointing=off",
            "--out", str(tmp_path / "s.json")]
    assert _bench().main(args) == 0
    r = json.loads((tmp_path / "s.json").read_text())
    root = Path(r["data"])
    for t, n in r["docs"].items():
        docs = [json.loads(x) for x in (root / f"{t}.jsonl").read_text().splitlines()]
        assert n == len(docs) > 0 and len(r["floors"][t]["scores"]) == n
        for spec, e in r["encoders"].items():
            scores = e["tasks"][t]["scores"]
            assert len(scores) == n and set(scores) <= {0.0, 1.0}
            assert e["tasks"][t]["acc"] == np.mean(scores)
        ref, other = (np.array(r["encoders"][s]["tasks"][t]["scores"]) for s in r["encoders"])
        delta, low, high = r["encoders"]["random:builtin:tiny-vit"]["tasks"][t]["delta_vs_first"]
        assert delta == other.mean() - ref.mean() and low <= delta <= high
    assert not any(e["reused"] for e in r["encoders"].values())
    assert r["encoders"]["builtin:tiny-vit"]["vlm"] != r["encoders"]["random:builtin:tiny-vit"]["vlm"]
    assert _bench().main(args) == 0
    again = json.loads((tmp_path / "s.json").read_text())
    assert all(e["reused"] for e in again["encoders"].values())      # the VLM cache: trained once per key
