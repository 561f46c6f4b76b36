"""benchmarks/vqa_signal.py end to end on the hand-made layout with tiny models: one VLM per encoder, the
three local tasks scored without lmms-eval, floors and paired CIs written; a second call reuses the VLMs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

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

    # one encoder per process, merged afterwards: the same table and paired CIs as one run of both
    one = args[: args.index("--encoder")] + ["--encoder", "random:builtin:tiny-vit"] + args[args.index("--set"):-2]
    assert _bench().main(one + ["--out", str(tmp_path / "r.json")]) == 0
    solo = args[: args.index("--encoder")] + ["--encoder", "builtin:tiny-vit"] + args[args.index("--set"):-2]
    assert _bench().main(solo + ["--out", str(tmp_path / "d.json")]) == 0
    assert _bench().main(["--merge", str(tmp_path / "d.json"), str(tmp_path / "r.json"),
                          "--out", str(tmp_path / "m.json")]) == 0
    m = json.loads((tmp_path / "m.json").read_text())
    assert list(m["encoders"]) == ["builtin:tiny-vit", "random:builtin:tiny-vit"]
    for t in m["docs"]:
        assert m["encoders"]["random:builtin:tiny-vit"]["tasks"][t]["delta_vs_first"] == \
            again["encoders"]["random:builtin:tiny-vit"]["tasks"][t]["delta_vs_first"]


def test_merge_refuses_runs_on_other_documents(tmp_path):
    from harness.errors import UserError
    a = {"data": "x", "ids": {"blink_depth_local": ["1", "2"]}, "floors": {}, "encoders": {"e1": {}}}
    b = {"data": "y", "ids": {"blink_depth_local": ["1", "3"]}, "floors": {}, "encoders": {"e2": {}}}
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    with pytest.raises(UserError, match="other documents"):
        _bench().main(["--merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--out", str(tmp_path / "m.json")])
    assert not (tmp_path / "m.json").exists()
    with pytest.raises(UserError, match="more than one"):
        _bench().main(["--merge", str(tmp_path / "a.json"), str(tmp_path / "a.json"), "--out", str(tmp_path / "m.json")])


def test_limit_spreads_docs_over_the_file():
    spread = _bench().spread
    docs = list(range(10))
    assert spread(docs, 0) == docs and spread(docs, 10) == docs and spread(docs, 20) == docs
    assert spread(docs, 5) == [0, 2, 4, 6, 8]          # every scene's share, not the first five
    assert spread(docs, 3) == [0, 3, 6] and spread(list(range(2258)), 400)[-1] > 2200
    assert len(set(spread(list(range(2258)), 400))) == 400
