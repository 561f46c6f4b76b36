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

Encoders can train in parallel (one per core or GPU, each with its own ``--out``) and be combined afterwards::

    python benchmarks/vqa_signal.py --merge dinov2.json random.json --out signal.json
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


def spread(docs: list, n: int) -> list:
    """At most ``n`` of ``docs`` at evenly spaced positions, in order (all of them when ``n`` is 0 or enough)."""
    if n <= 0 or n >= len(docs):
        return docs
    return [docs[(i * len(docs)) // n] for i in range(n)]


def main(argv=None) -> int:
    from suites.vqa.tasks import add_data_arguments, open_data
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(ap, "workspace (VLM cache, converted weights, generated tasks)")
    ap.add_argument("--task", action="append", choices=sorted(TASK_SUITES), help="tasks (default: all three)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="VQAOptions overrides")
    ap.add_argument("--limit", type=int, default=0, help="score at most N docs per task, evenly spread over the task "
                    "file (it is ordered by scene: the first N would be a few scenes) (0 = all)")
    ap.add_argument("--out", type=Path, default=Path("vqa_signal.json"))
    ap.add_argument("--merge", type=Path, nargs="+", metavar="JSON",
                    help="only combine earlier --out files of other encoders on the same documents into --out "
                         "(paired CIs against the first file's first encoder)")
    m = argparse.ArgumentParser(add_help=False)     # --merge needs none of the training arguments
    m.add_argument("--merge", type=Path, nargs="+")
    m.add_argument("--out", type=Path, default=Path("vqa_signal.json"))
    margs, _ = m.parse_known_args(argv)
    if margs.merge:
        return merge_reports(margs.merge, margs.out)
    args = ap.parse_args(argv)

    import numpy as np
    import torch
    from harness.config import ConfigError, build, merge, parse_overrides
    from harness.registry import build_encoder
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
    docs = {t: spread(read_docs(root / f"{t}.jsonl"), args.limit) for t in tasks}
    report = {"device": args.device, "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else "",
              "torch": torch.__version__, "recipe": asdict(recipe), "options": asdict(options), "data": str(root),
              "generate_s": gen_s, "train_conversations": len(read_docs(root / "train" / "stage2.jsonl")),
              "docs": {t: len(d) for t, d in docs.items()}, "ids": {t: [d["id"] for d in ds] for t, ds in docs.items()},
              "floors": {}, "encoders": {}}
    for t in tasks:
        floor, how = suites[t].floor(docs[t], root)
        report["floors"][t] = {"acc": float(np.mean(floor)), "how": how, "scores": [float(x) for x in floor]}
        cue = suites[t].cue_floor(docs[t])
        if cue is not None:
            report["floors"][t]["cue"] = {"acc": float(np.mean(cue)), "scores": cue}

    def save():
        write_report(report, args.out)

    for spec in args.encoder:
        enc = build_encoder(spec, ws)
        _sync(args.device)
        t0 = time.perf_counter()
        vlm, info = train_or_load(enc, recipe, root / "train" / "stage1.jsonl", root / "train" / "stage2.jsonl",
                                  ws, device=args.device, echo=lambda s: None,
                                  grad_checkpointing=options.grad_checkpointing, progress=True,
                                  prefetch_steps=options.prefetch_steps)
        _sync(args.device)
        entry = {"train_s": time.perf_counter() - t0, "reused": not info["trained_stages"], "vlm": info["key"],
                 "losses": info["losses"], "tasks": {},
                 "step_s_median": {st: float(np.median(v)) for st, v in info["step_seconds"].items() if v}}
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
        per_step = ", ".join(f"stage {st} {v:.3f} s/step" for st, v in entry["step_s_median"].items())
        print(f"{spec}: VLM stages 1+2 {entry['train_s']:.1f} s{' (reused)' if entry['reused'] else ''}"
              f"{f' (median {per_step})' if per_step else ''}", flush=True)
        report["encoders"][spec] = entry
        save()
        del runner, vlm
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()

    print_table(report)
    save()
    return 0


def print_table(report: dict) -> None:
    """The markdown table: floor, 2D cue and each encoder's accuracy, later encoders paired-bootstrapped against
    the first; writes each ``delta_vs_first`` into ``report``."""
    from results.stats import vs_first
    specs = list(report["encoders"])
    print(f"\n| task | floor | 2D cue | {' | '.join(specs)} |\n|---|---|---|{'---|' * len(specs)}")
    for t, ids in report["ids"].items():
        cells, cis = vs_first(ids, {spec: report["encoders"][spec]["tasks"][t]["scores"] for spec in specs})
        for spec, ci in cis.items():
            report["encoders"][spec]["tasks"][t]["delta_vs_first"] = [ci.delta, ci.low, ci.high]
        cue = report["floors"][t].get("cue")
        print(f"| {t} | {report['floors'][t]['acc']:.3f} | {'-' if cue is None else '%.3f' % cue['acc']} | "
              f"{' | '.join(cells)} |")


def merge_reports(paths: list[Path], out: Path) -> int:
    """One report from runs of different encoders on the same documents (e.g. one encoder per core or per GPU,
    in parallel): the first file's first encoder is the reference of the paired CIs."""
    from harness.errors import UserError
    reports = [json.loads(Path(p).read_text()) for p in paths]
    merged = reports[0]
    for p, r in zip(paths[1:], reports[1:]):
        if r.get("ids") != merged.get("ids"):
            raise UserError(f"'{p}' scored other documents than '{paths[0]}' (data {r.get('data')!r} vs "
                            f"{merged.get('data')!r}, tasks {sorted(r.get('ids') or {})}, --limit): not comparable")
        for spec, entry in r["encoders"].items():
            if spec in merged["encoders"]:
                raise UserError(f"encoder {spec!r} is in more than one of {[str(x) for x in paths]}")
            merged["encoders"][spec] = entry
    merged["merged_from"] = [str(p) for p in paths]
    print_table(merged)
    write_report(merged, out)
    return 0


def write_report(report: dict, out: Path) -> None:
    """Whole or not at all: a killed run leaves the previous file."""
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1))
    tmp.replace(out)


if __name__ == "__main__":
    import sys
    from harness.errors import UserError
    try:
        raise SystemExit(main())
    except UserError as e:           # bad data / encoder / LM: the message names the file or value
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)
