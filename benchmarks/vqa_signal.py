"""Does the VQA suite separate encoders? Train one VLM per encoder (the suite's VLM cache and recipe) and score
the three local tasks with the same scoring the lmms-eval tasks use (:meth:`VLMRunner.score_local`), without
lmms-eval: so it also runs on a bare GPU image that has torch + transformers but not our full lock. Prints, per
task, each encoder's accuracy, the floor (train majority / median), and the paired bootstrap CI of each encoder
minus the first one; writes everything (per-document scores, stage losses, wall times) to ``--out``.

    python benchmarks/vqa_signal.py --workspace WS --world vqa \\
        --encoder builtin:dinov2-s14-focus --encoder random:builtin:dinov2-s14-focus \\
        --device cuda --precision bf16 --set image_size=224 stage2_batch=32 micro_batch=32 --out signal.json

``--data`` is a spatial layout (``annotations.jsonl``; tasks are generated into the workspace) or a generated
task folder; without it, ``--world``'s embedded world (``vqa``: 960 views) is rendered into the workspace. The recipe starts from the suite's demo protocol (``VQAOptions`` + ``demo_protocol("default")``)
and ``--set KEY=VALUE`` changes any ``VQAOptions`` field (stage steps / batches / lrs, image size, depth pairs,
...). VLM wall time (stages 1+2) is measured with the device synchronised; a VLM already in the cache is
reused and reported with ``"reused": true``.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

TASK_SUITES = {"blink_depth_local": "BlinkDepthLocalSuite", "spatialrgpt_qual_local": "SpatialRGPTQualLocalSuite",
               "spatialrgpt_quant_local": "SpatialRGPTQuantLocalSuite"}


def _sync(device: str) -> None:
    import torch
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(argv=None) -> int:
    from suites.vqa.tasks import add_data_arguments, open_data
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(ap, "workspace (VLM cache, converted weights, generated tasks)")
    ap.add_argument("--task", action="append", choices=sorted(TASK_SUITES), help="tasks (default: all three)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="VQAOptions overrides")
    ap.add_argument("--limit", type=int, default=0, help="score at most N docs per task (0 = all)")
    ap.add_argument("--out", type=Path, default=Path("vqa_signal.json"))
    args = ap.parse_args(argv)

    import numpy as np
    import torch
    from harness.config import ConfigError, build, merge, parse_overrides
    from harness.registry import build_encoder
    from results.stats import vs_first
    from suites.vqa import suite as vqa_suite
    from suites.vqa.lmms_tasks import KIND
    from suites.vqa.taskfns import make
    from suites.vqa.tasks import read_docs
    from suites.vqa.vlm_cache import train_or_load
    from suites.vqa.vlm_runner import VLMRunner

    ws, args.data = open_data(args)
    try:
        options = build(vqa_suite.VQAOptions, merge(vqa_suite.BlinkDepthLocalSuite.demo_protocol("default"),
                                                    parse_overrides(args.set)), prefix="--set ")
    except ConfigError as e:
        ap.error(str(e))
    tasks = args.task or list(TASK_SUITES)
    suites = {t: getattr(vqa_suite, TASK_SUITES[t])(options) for t in tasks}
    t0 = time.perf_counter()
    root = suites[tasks[0]].task_root(args.data, ws)
    gen_s = time.perf_counter() - t0
    recipe = suites[tasks[0]].recipe(args.precision)
    docs = {t: read_docs(root / f"{t}.jsonl")[: args.limit or None] for t in tasks}
    report = {"device": args.device, "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else "",
              "torch": torch.__version__, "recipe": asdict(recipe), "options": asdict(options), "data": str(root),
              "generate_s": gen_s, "train_conversations": len(read_docs(root / "train" / "stage2.jsonl")),
              "docs": {t: len(d) for t, d in docs.items()}, "floors": {}, "encoders": {}}
    for t in tasks:
        floor, how = suites[t].floor(docs[t], root)
        report["floors"][t] = {"acc": float(np.mean(floor)), "how": how, "scores": [float(x) for x in floor]}
        cue = suites[t].cue_floor(docs[t])
        if cue is not None:
            report["floors"][t]["cue"] = {"acc": float(np.mean(cue)), "scores": cue}

    def save():
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=1))
        tmp.replace(args.out)

    for spec in args.encoder:
        enc = build_encoder(spec, ws)
        _sync(args.device)
        t0 = time.perf_counter()
        vlm, info = train_or_load(enc, recipe, root / "train" / "stage1.jsonl", root / "train" / "stage2.jsonl",
                                  ws, device=args.device, echo=lambda s: None,
                                  grad_checkpointing=options.grad_checkpointing)
        _sync(args.device)
        entry = {"train_s": time.perf_counter() - t0, "reused": not info["trained_stages"], "vlm": info["key"],
                 "losses": info["losses"], "tasks": {}}
        runner = VLMRunner(vlm, image_size=options.image_size, device=args.device,
                           max_new_tokens=options.max_new_tokens, precision=recipe.precision)
        for t in tasks:
            fns = make(str(root), KIND[t], options.tolerance, options.judge)
            t1 = time.perf_counter()
            scores = [runner.score_local(d, fns, KIND[t], options.max_new_tokens) for d in docs[t]]
            entry["tasks"][t] = {"acc": float(np.mean(scores)), "eval_s": time.perf_counter() - t1,
                                 "scores": scores}
            cue = report["floors"][t].get("cue")
            print(f"{spec}: {t} acc {entry['tasks'][t]['acc']:.3f} (floor {report['floors'][t]['acc']:.3f}"
                  f"{'' if cue is None else ', 2D cue %.3f' % cue['acc']}, "
                  f"{len(scores)} docs, {entry['tasks'][t]['eval_s']:.0f} s)", flush=True)
        print(f"{spec}: VLM stages 1+2 {entry['train_s']:.1f} s{' (reused)' if entry['reused'] else ''}",
              flush=True)
        report["encoders"][spec] = entry
        save()
        del runner, vlm
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()

    print(f"\n| task | floor | 2D cue | {' | '.join(args.encoder)} |\n|---|---|---|{'---|' * len(args.encoder)}")
    for t in tasks:
        ids = [d["id"] for d in docs[t]]
        cells, cis = vs_first(ids, {spec: report["encoders"][spec]["tasks"][t]["scores"] for spec in args.encoder})
        for spec, ci in cis.items():
            report["encoders"][spec]["tasks"][t]["delta_vs_first"] = [ci.delta, ci.low, ci.high]
        cue = report["floors"][t].get("cue")
        print(f"| {t} | {report['floors'][t]['acc']:.3f} | {'-' if cue is None else '%.3f' % cue['acc']} | "
              f"{' | '.join(cells)} |")
    save()
    return 0


if __name__ == "__main__":
    import sys
    from harness.errors import UserError
    try:
        raise SystemExit(main())
    except UserError as e:           # bad data / encoder / LM: the message names the file or value
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)
