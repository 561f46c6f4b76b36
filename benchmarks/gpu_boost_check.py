"""GPU verification of the SpatialBoost trainer (issue #19): stage 3 on DINOv2-S + SmolLM2-135M in bf16 for a few
hundred steps on the world's chain-of-thought data, then ``depth.nyud`` (linear head) on the world for the
baseline and the boosted encoder: RMSE of each, the paired Δ with its 95 % bootstrap CI, stage-3 tokens/s and
peak memory.

    python benchmarks/gpu_boost_check.py [--steps 300] [--device auto] [--json OUT.json]
    python benchmarks/gpu_boost_check.py --device cpu         # CPU fallback: fewer steps, the tiny world

Sizes: on a GPU the ``default`` world (24 scenes x 6 views, 240x320), 256 CoT conversations, ``--steps`` (300)
optimiser steps of 8 conversations (micro-batch 4), the paper's lr 2e-5, max_length 2048, and depth.nyud's
``demo_protocol("default")``; budget a few minutes on one H100 (stage 3 ~ 1-2 min, depth ~ 1 min per encoder).
On the CPU (no GPU present, or ``--device cpu``): the ``tiny`` world, 16 conversations, ``--steps`` (default 4)
steps of 4 at max_length 640 in fp32 (bf16 autocast on a CPU is slower than fp32), and ``demo_protocol("tiny")``.
The printed note says which ran. Workspace: ``--workspace`` or ``$SPATIALBOOST_HOME``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def sizes(device: str, steps: int | None) -> dict:
    if device == "cuda":
        return dict(world="default", samples=256, steps=steps or 300, batch=8, micro=4, max_length=2048,
                    precision="bf16", preset="default", lr=2e-5)
    return dict(world="tiny", samples=16, steps=steps or 4, batch=4, micro=2, max_length=640, precision="fp32",
                preset="tiny", lr=2e-5)


def per_sample(uri: str, run_id: str, metric: str):
    from results.samples_store import PerSampleStore
    with PerSampleStore(uri) as store:
        ps = store.get(run_id, metric)
    if isinstance(ps, str):
        raise RuntimeError(ps)
    return ps


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=0, help="stage-3 optimiser steps (GPU 300, CPU 4)")
    ap.add_argument("--device", default="auto", help="auto (cuda when present), cuda, cpu")
    ap.add_argument("--workspace", default=os.environ.get("SPATIALBOOST_HOME", ""))
    ap.add_argument("--encoder", default="builtin:dinov2-s14-focus")
    ap.add_argument("--lm", default="builtin:smollm2-135m")
    ap.add_argument("--json", help="also write the summary here")
    ap.add_argument("--restart", action="store_true", help="retrain stage 3 even if this config finished before")
    a = ap.parse_args(argv)
    import torch
    device = ("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device
    s = sizes(device, a.steps or None)
    t_all = time.perf_counter()
    from harness.workspace import open_workspace
    from suites.synthetic.defaults import scannet_root, world_dir
    ws = open_workspace(a.workspace or None, world=s["world"])
    world_dir(ws, progress=False)           # rendered in spawned workers, before the trainer's imports
    root = scannet_root(ws)
    from harness.config import build
    from harness.registry import SUITES
    from harness.runner import EvalConfig, evaluate, tracking_uri
    from encoders.spatialboost.qa import QAOptions, generate_dataset
    from encoders.spatialboost.trainer import BoostConfig, BoostTrainer
    from results.stats import delta_ci
    cot = Path(ws.data) / f"qa-gpu-check-{s['world']}-cot-{s['samples']}"
    if not (cot / "conversations.jsonl").is_file():
        generate_dataset(root, cot, QAOptions(task="cot", samples=s["samples"], seed=0), progress=False)
    cfg = build(BoostConfig, {
        "encoder": a.encoder, "lm": a.lm, "stages": [3], "device": device, "precision": s["precision"],
        "grad_checkpointing": "on" if device == "cuda" else "off", "max_length": s["max_length"],
        "image_root": str(root), "workspace": str(ws.root), "experiment": "gpu-boost-check", "progress": False,
        "checkpoint_every": 100, "resume": not a.restart,
        "stage3": {"data": str(cot / "conversations.jsonl"), "batch_size": s["batch"], "micro_batch_size": s["micro"],
                   "max_steps": s["steps"], "lr": s["lr"]}})
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    tr = BoostTrainer(cfg, echo=lambda m: print(f"[boost] {m}", flush=True))
    spec = tr.run()
    train_s = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated() / 2**30 if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    tps = []
    rid = tr.pipeline["runs"].get("stage3")
    if rid:                 # from the stage-3 run (also when an earlier call of this config trained it)
        tps = [m.value for m in tr.tracker.client.get_metric_history(rid, "tokens_per_s")]
        info = tr.tracker.client.get_run(rid).info
        if info.end_time:
            train_s = (info.end_time - info.start_time) / 1000
    if 3 not in tr.results:         # trained by an earlier call: this process's peak says nothing
        peak = None
    from encoders.spatialboost.checkpoints import latest_checkpoint, read_state
    losses = read_state(latest_checkpoint(tr.run_dir, 3))["losses"]
    del tr
    suite = SUITES.get("depth.nyud")
    rows = {}
    for name, enc in (("baseline", a.encoder), ("boosted", spec)):
        t = time.perf_counter()
        ecfg = build(EvalConfig, {"encoder": enc, "suite": "depth.nyud", "workspace": str(ws.root),
                                  "world": s["world"], "experiment": "gpu-boost-check", "head": "linear",
                                  "protocol": suite.demo_protocol(s["preset"]), "device": device,
                                  "progress": False, "batch_size": 32})
        rec = evaluate(ecfg)
        uri = tracking_uri(ecfg, ws)
        rows[name] = {"run_id": rec.run_id, "rmse": rec.metrics.get("rmse"), "s": round(time.perf_counter() - t, 1),
                      "ps": per_sample(uri, rec.run_id, "rmse")}
    ci = delta_ci(rows["baseline"]["ps"], rows["boosted"]["ps"])
    gpu = torch.cuda.get_device_name() if device == "cuda" else "none (CPU fallback: fewer steps, tiny world)"
    out = {"device": device, "gpu": gpu, "torch_threads": torch.get_num_threads(), **{k: s[k] for k in s},
           "boosted": spec, "stage3_s": round(train_s, 1), "loss_first": losses[0], "loss_last": losses[-1],
           "tokens_per_s_median": round(statistics.median(tps), 1) if tps else None,
           "peak_mem_gib": None if peak is None else round(peak, 2), "peak_mem_kind": "cuda max_memory_allocated" if device == "cuda"
           else "process max RSS",
           "rmse_baseline": rows["baseline"]["rmse"], "rmse_boosted": rows["boosted"]["rmse"],
           "delta_rmse": ci.delta, "ci95": [ci.low, ci.high], "significant": ci.significant, "n_images": ci.n,
           "eval_s": {k: v["s"] for k, v in rows.items()}, "total_s": round(time.perf_counter() - t_all, 1)}
    print(json.dumps(out, indent=1))
    print(f"note: ran on {device} ({gpu}); stage 3 {s['steps']} steps x {s['batch']} conversations, "
          f"{s['precision']}; depth.nyud linear RMSE baseline {out['rmse_baseline']:.4f} -> boosted "
          f"{out['rmse_boosted']:.4f}, delta {ci.delta:+.4f} [{ci.low:+.4f}, {ci.high:+.4f}] "
          f"({'significant' if ci.significant else 'CI includes 0'})")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
