"""Step time of SpatialBoost: stage 3 dual-channel attention vs plain full fine-tuning of the same encoder, or
(``--stage 2``) stage 2 (projector + LM trained) with and without gradient checkpointing.

    python benchmarks/trainer_step.py [--preset tiny|default|all] [--steps 3] [--batch 2] [--device auto]
    python benchmarks/trainer_step.py --stage 2 [--preset ...]      # rows ckpt-off / ckpt-on

Presets: ``tiny`` = builtin:tiny-vit + builtin:tiny-qwen2; ``default`` = builtin:dinov2-s14-focus +
builtin:smollm2-135m. Each (preset, variant) runs in its own process (clean peak memory). One stage-3
optimiser step = encoder forward (with grad) -> projector -> frozen LM -> answer-token loss -> backward ->
AdamW. Reports ms/step (median of the timed steps after one warm-up), tokens/s (all sequence tokens incl.
visual ones), trainable parameters, peak memory (CUDA: max_memory_allocated; CPU: process max RSS) and the
dual/full step-time ratio (goal <= 1.35). Samples: 12-turn single-view spatial QA conversations. On the CPU
``step_peak_mib`` = max RSS after the steps minus RSS before them (what the steps added over the loaded model;
0 when loading peaked higher); on CUDA the allocator's peak.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PRESETS = {"tiny": ("builtin:tiny-vit", "builtin:tiny-qwen2"),
           "default": ("builtin:dinov2-s14-focus", "builtin:smollm2-135m")}


def make_data(folder: Path, n: int) -> Path:
    import numpy as np
    from PIL import Image
    from encoders.spatialboost.data import write_jsonl
    rng = np.random.default_rng(0)
    recs = []
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        conv = []
        for t in range(12):
            q = ("<image>\n" if t == 0 else "") + f"What is the depth of point {t} in the image?"
            conv += [{"from": "human", "value": q}, {"from": "gpt", "value": f"Point {t} is {1 + 0.1 * t:.2f} m away."}]
        recs.append({"id": f"b{i}", "image": f"{i}.png", "conversations": conv})
    return write_jsonl(folder / "qa.jsonl", recs)


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) / 1024


def child(preset: str, variant: str, steps: int, batch: int, device: str, stage: int = 3,
          precision: str = "auto") -> dict:
    import resource
    import torch
    from harness.config import build
    from encoders.spatialboost.data import ImageLoader, collate
    from encoders.spatialboost.trainer import BoostConfig, BoostTrainer
    from harness.device import autocast
    enc, lm = PRESETS[preset]
    with tempfile.TemporaryDirectory() as tmp:
        data = make_data(Path(tmp), batch)
        ckpt = {"ckpt-on": "on", "ckpt-off": "off"}.get(variant, "auto")
        cfg = build(BoostConfig, {"encoder": enc, "lm": lm, "data": str(data), "stages": [stage],
                                  "variant": variant if stage == 3 else "dual", "grad_checkpointing": ckpt,
                                  "tracking": False, "progress": False, "device": device, "max_length": 4096,
                                  "precision": precision,
                                  "run_dir": str(Path(tmp) / "run"), "workspace": os.environ.get("SPATIALBOOST_HOME", "")})
        tr = BoostTrainer(cfg, echo=lambda m: None)
        if stage == 3:
            tr.apply_variant()
        params = tr.set_trainable(stage)
        opt = torch.optim.AdamW(params, lr=2e-5)
        ds = tr.data_for(stage)
        loader = ImageLoader(tr.image_size, tr.vlm.encoder.info.mean, tr.vlm.encoder.info.std)
        b = collate([ds[i] for i in range(batch)], loader, tr.vlm.tokenizer.pad_token_id or 0).to(tr.device)
        tr.vlm.train()
        tr.vlm.encoder.eval()
        tr.vlm.lm.train(stage == 2)
        times = []
        import gc
        gc.collect()
        rss0 = _rss_mib()
        if tr.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        for i in range(steps + 1):
            if tr.device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            with autocast(tr.device, tr.precision):
                s, n = tr.vlm(b)
            (s / n).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if tr.device.type == "cuda":
                torch.cuda.synchronize()
            if i:
                times.append(time.perf_counter() - t0)
        ms = 1000 * statistics.median(times)
        peak = (torch.cuda.max_memory_allocated() / 2**20 if tr.device.type == "cuda"
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        step_peak = (torch.cuda.max_memory_allocated() / 2**20 if tr.device.type == "cuda"
                     else max(0.0, peak - rss0))
        return {"preset": preset, "variant": variant, "stage": stage, "step_peak_mib": round(step_peak, 1), "device": str(tr.device), "precision": tr.precision,
                "ms_per_step": round(ms, 1), "tokens_per_s": round(int(b.attention_mask.sum()) / (ms / 1000), 1),
                "seq_len": int(b.input_ids.shape[1]), "batch": batch,
                "trainable_params": sum(p.numel() for p in params), "peak_mem_mib": round(peak, 1),
                "torch_threads": torch.get_num_threads()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="all", choices=["tiny", "default", "all"])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--stage", type=int, default=3, choices=[2, 3], help="3: dual vs full; 2: gradient checkpointing off/on")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                    help="autocast of the step (auto: bf16 on CUDA, fp32 on the CPU, as the trainer)")
    ap.add_argument("--json", help="also write the rows to this file")
    ap.add_argument("--_child", nargs=2, metavar=("PRESET", "VARIANT"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a._child:
        print(json.dumps(child(a._child[0], a._child[1], a.steps, a.batch, a.device, a.stage, a.precision)))
        return 0
    rows = []
    for preset in (["tiny", "default"] if a.preset == "all" else [a.preset]):
        for variant in (("full", "dual") if a.stage == 3 else ("ckpt-off", "ckpt-on")):
            r = subprocess.run([sys.executable, __file__, "--_child", preset, variant, "--steps", str(a.steps),
                                "--batch", str(a.batch), "--device", a.device, "--stage", str(a.stage),
                                "--precision", a.precision],
                               capture_output=True, text=True)
            if r.returncode:
                print(r.stderr[-3000:], file=sys.stderr)
                return r.returncode
            rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
    print(f"stage {a.stage}, precision {rows[0]['precision']}\n{'preset':8} {'variant':8} {'device':6} {'ms/step':>9} {'tok/s':>9} {'seq':>5} "
          f"{'trainable':>11} {'peak MiB':>9} {'step MiB':>9}")
    for r in rows:
        print(f"{r['preset']:8} {r['variant']:8} {r['device']:6} {r['ms_per_step']:9.1f} {r['tokens_per_s']:9.1f} "
              f"{r['seq_len']:5d} {r['trainable_params']:11,d} {r['peak_mem_mib']:9.1f} {r['step_peak_mib']:9.1f}")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    if a.stage == 2:
        return 0
    for preset in dict.fromkeys(r["preset"] for r in rows):
        f = next(r for r in rows if r["preset"] == preset and r["variant"] == "full")
        d = next(r for r in rows if r["preset"] == preset and r["variant"] == "dual")
        ratio = d["ms_per_step"] / f["ms_per_step"]
        print(f"{preset}: dual / full step time = {ratio:.2f}x (goal <= 1.35x) {'OK' if ratio <= 1.35 else 'OVER'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
