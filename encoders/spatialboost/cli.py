"""``spatialboost boost``: run SpatialBoost stages 1-3 on an encoder and print the boosted spec.

    spatialboost boost --encoder SPEC --data QA.jsonl --stages 1,2,3 [--lm PATH|builtin:tiny-qwen2|
                       builtin:smollm2-135m] [CONFIG.yaml] [key=value ...]

Precedence: defaults (paper App. A) < CONFIG.yaml < flags < key=value overrides. Multi-process:
``torchrun --nproc_per_node N -m encoders.spatialboost.cli boost ...`` (gloo on CPU, nccl on GPU).
The last line printed is the boosted spec (``boosted:<run>/boosted``), usable wherever an encoder spec is.
"""
from __future__ import annotations

import argparse
import sys

from harness.config import build, describe, load_yaml, merge, parse_overrides

EPILOG = """examples:
  spatialboost boost --encoder builtin:tiny-vit --data qa.jsonl stage1.batch_size=8 stage2.batch_size=8
  spatialboost boost --encoder builtin:dinov2-s14-focus --lm builtin:smollm2-135m --data qa.jsonl --stages 3
  spatialboost boost boost.yaml variant=lora stage3.lr=1e-4
  torchrun --nproc_per_node 2 -m encoders.spatialboost.cli boost --encoder builtin:tiny-vit --data qa.jsonl
  spatialboost boost --dry-run --encoder dinov2-l --lm qwen2-7b --stages 2 --world-size 8 strategy=fsdp
"""


def boost_config(args):
    from .trainer import BoostConfig
    # argparse puts a lone key=value into `config`; move it to the overrides
    if args.config and "=" in args.config and not args.config.endswith((".yaml", ".yml")):
        args.overrides = [args.config, *args.overrides]
        args.config = None
    data = load_yaml(args.config) if args.config else {}
    flags = {k: v for k, v in {"encoder": args.encoder, "data": args.data, "lm": args.lm,
                               "stages": args.stages, "variant": args.variant, "device": args.device,
                               "workspace": args.workspace, "experiment": args.experiment}.items()
             if v is not None}
    if args.no_progress:
        flags["progress"] = False
    if args.restart:
        flags["resume"] = False
    return build(BoostConfig, merge(merge(data, flags), parse_overrides(args.overrides)))


def _help_text() -> str:
    from .trainer import BoostConfig
    rows = describe(BoostConfig)
    w = max(len(r[0]) for r in rows)
    return "config keys (key=value):\n" + "\n".join(f"  {k:<{w}}  {d!s:<18} {h}" for k, _, d, h in rows)


def cmd_boost(args) -> int:
    from harness.errors import UserError
    from .trainer import run_boost
    try:
        cfg = boost_config(args)
        if args.print_config:
            from harness.config import to_yaml
            print(to_yaml(cfg))
            return 0
        if args.dry_run:
            return dry_run(cfg, args)
        # a bad --lm / --data / encoder stops here before any run folder or MLflow run exists
        spec = run_boost(cfg, echo=lambda m: print(m, file=sys.stderr))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if spec:
        print(spec)
    return 0


def dry_run(cfg, args) -> int:
    """Print the memory estimate per GPU of each configured stage (no weights, data or run folder touched);
    exit status 0 when every stage fits, 3 when one does not."""
    import os
    from .memory import EstimateError, dry_run_report
    world = args.world_size or int(os.environ.get("WORLD_SIZE", "1"))
    try:
        text, ests = dry_run_report(cfg, world, args.gpu_memory)
    except EstimateError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(text)
    return 0 if all(e.fits for e in ests) else 3


def add_boost_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("boost", help="train an encoder with SpatialBoost (stages 1-3) and export it",
                              description=__doc__, epilog=EPILOG + "\n" + _help_text(),
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", help="YAML config (optional); flags and key=value override it")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. stage3.lr=1e-5 variant=lora")
    p.add_argument("--encoder", help="encoder spec to boost (default builtin:tiny-vit)")
    p.add_argument("--data", help="LLaVA-style conversations (.json/.jsonl) for every stage without its own "
                                  "file (per stage: stage1.data=CAPTIONS stage2.data=INSTRUCT_MVQA "
                                  "stage3.data=COT; one file for several stages is warned about)")
    p.add_argument("--stages", help="comma-separated stages to run (default 1,2,3)")
    p.add_argument("--lm", help="language model: builtin:tiny-qwen2 (default), builtin:smollm2-135m, or a local "
                                "AutoModelForCausalLM folder (e.g. Qwen2-7B-Instruct as in the paper)")
    p.add_argument("--variant", choices=["dual", "full", "lora"], help="stage-3 encoder training (Table 17)")
    p.add_argument("--device", help="auto (default), cpu, cuda")
    p.add_argument("--workspace", help="runtime data folder (default: $SPATIALBOOST_HOME or ./workspace)")
    p.add_argument("--experiment", help="MLflow experiment (default spatialboost-boost)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--restart", action="store_true", help="ignore existing checkpoints of this config")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--dry-run", action="store_true", help="print the estimated memory per GPU of each stage "
                   "(parameter counts from configs; nothing loads) and exit: 0 fits, 3 does not")
    p.add_argument("--world-size", type=int, default=0, help="GPUs for --dry-run (default $WORLD_SIZE or 1)")
    p.add_argument("--gpu-memory", type=float, default=80.0, help="GB per GPU for --dry-run (default 80)")
    p.set_defaults(func=cmd_boost)
    return p


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="spatialboost")
    sub = parser.add_subparsers(dest="command", required=True)
    add_boost_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
