"""lmms-eval's overhead on a local multiple-choice task: its evaluator (in-process, through the
``spatialboost_vlm`` plugin, as ``vqa.*`` runs it) against a plain loop over the same documents that calls the
same scoring method (``VLMRunner.score_local`` -> ``continuation_loglik``) on the same trained VLM. Both must
give the same accuracy; the ratio of their wall times is the overhead (issue goal: under 1.2x).

    python benchmarks/vqa_overhead.py --run-dir WS/vqa/vlm/<key> --data WS/data/vqa-<...> --limit 64

``--run-dir`` is a finished VLM of the VLM cache (``<workspace>/vqa/vlm/<key>``, its ``pipeline.json`` names
the encoder, LM, feature layer, image size and precision it was trained with; the VLM is evaluated that way);
``--data`` the generated task folder (``<workspace>/data/vqa-*`` holding ``blink_depth_local.jsonl``). Each path
is timed twice, in alternating order, after one untimed warm-up document; the best of the two is reported.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", required=True, type=Path, help="finished VLM folder (<workspace>/vqa/vlm/<key>)")
    ap.add_argument("--data", required=True, type=Path, help="task folder holding blink_depth_local.jsonl")
    ap.add_argument("--encoder", default="", help="encoder spec (default: the one in pipeline.json)")
    ap.add_argument("--workspace", default="",
                    help="workspace the encoder / LM resolve in (default: from pipeline.json)")
    ap.add_argument("--limit", type=int, default=64, help="documents scored (default 64)")
    ap.add_argument("--task", default="blink_depth_local")
    args = ap.parse_args(argv)

    pipe = json.loads((args.run_dir / "pipeline.json").read_text())["config"]
    from suites.vqa.lmms_tasks import evaluate, offline_env, task_manager, write_task
    from suites.vqa.plugin import SpatialBoostLMM
    from suites.vqa.taskfns import make
    from suites.vqa.vlm_cache import load_trained_vlm
    from harness.workspace import open_workspace
    ws = open_workspace(args.workspace or pipe["workspace"])
    offline_env(ws.cache)
    vlm = load_trained_vlm(args.run_dir, args.encoder or pipe["encoder"], pipe["lm"], int(pipe["feature_layer"]), ws)
    model = SpatialBoostLMM.from_vlm(vlm, image_size=int(pipe["image_size"]), precision=pipe["precision"])
    fns = make(str(args.data), "choice")
    docs = [json.loads(x) for x in (args.data / f"{args.task}.jsonl").read_text().splitlines()][: args.limit]

    def own_loop(ds):
        correct = [model.score_local(d, fns, "choice") for d in ds]
        return sum(correct) / len(correct)

    with tempfile.TemporaryDirectory(prefix="vqa-overhead-") as tmp:
        write_task(args.task, args.data, Path(tmp) / args.task)
        manager = task_manager(Path(tmp), defaults=False)

        def lmms():
            out = evaluate(model, [args.task], manager, limit=args.limit)
            s = out["samples"][args.task]
            return sum(float(x["acc"]) for x in s) / len(s)

        own_loop(docs[:1])                                   # warm-up (weights paged in, oneDNN kernels built)
        times = {"lmms-eval": [], "own loop": []}
        accs = {}
        for order in (("lmms-eval", "own loop"), ("own loop", "lmms-eval")):
            for name in order:
                t0 = time.perf_counter()
                accs[name] = lmms() if name == "lmms-eval" else own_loop(docs)
                times[name].append(time.perf_counter() - t0)
    best = {k: min(v) for k, v in times.items()}
    print(f"{len(docs)} docs of {args.task}, VLM {args.run_dir.name} ({pipe['encoder']}, {pipe['lm']}, "
          f"{pipe['image_size']} px, {pipe['precision']})")
    for k in times:
        print(f"  {k:10s} acc {accs[k]:.4f}  wall {best[k]:7.2f} s (runs: {', '.join(f'{t:.2f}' for t in times[k])}) "
              f" {best[k] / len(docs):.3f} s/doc")
    print(f"  overhead: {best['lmms-eval'] / best['own loop']:.3f}x")
    if abs(accs["lmms-eval"] - accs["own loop"]) > 1e-9:
        print("  WARNING: the two paths disagree on accuracy")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
