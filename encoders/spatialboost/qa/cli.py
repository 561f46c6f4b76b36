"""``spatialboost data generate`` (the lead wires :func:`add_data_parser` into harness/cli.py)."""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_data_parser", "run_generate", "main"]


def add_data_parser(subparsers) -> argparse.ArgumentParser:
    data = subparsers.add_parser("data", help="datasets for SpatialBoost training (spatial QA)")
    sub = data.add_subparsers(dest="data_cmd", required=True)
    g = sub.add_parser("generate", help="generate multi-turn spatial QA (LLaVA JSONL + dataset card)")
    g.add_argument("--world", required=True, help="ScanNet-format folder (scannet_2d/; the synthetic world written by write_scannet) or image folder")
    g.add_argument("--out", required=True, help="output folder")
    g.add_argument("--task", choices=["cot", "mvqa", "caption"], default="cot",
                   help="cot = 12-turn spatial chain of thought (stage 3); mvqa = multi-view VQA (stage 2); "
                        "caption = one-turn image captions (stage 1 alignment)")
    g.add_argument("--order", choices=["forward", "reverse", "random"], default="forward")
    g.add_argument("--levels", default="pix,obj,scene", help="comma list of pix,obj,scene")
    g.add_argument("--views", type=int, choices=[1, 2, 4, 8], default=1)
    g.add_argument("--samples", type=int, default=None, help="number of samples (default: one per view / pair)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--no-captions", action="store_true")
    g.add_argument("--metric", choices=["auto", "lpips", "ssim", "pose"], default="auto",
                   help="perceptual distance for view pairs")
    g.add_argument("--window", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"))
    g.add_argument("--label-map", default=None, metavar="TSV",
                   help="ScanNet's scannetv2-labels.combined.tsv naming label-filt ids (default: looked for beside "
                        "the scenes)")
    g.add_argument("--strict", action="store_true", help="stop on a bad view instead of skipping it")
    g.add_argument("--json", action="store_true", help="also write conversations.json (one JSON list)")
    g.add_argument("--tracking-uri", default=None, help="log the dataset as an MLflow artifact")
    g.add_argument("--no-progress", action="store_true")
    g.set_defaults(func=run_generate)
    return data


def run_generate(args) -> int:
    from pathlib import Path

    from .dataset import DATA_FILE, export_json, generate_dataset
    from .options import QAOptions

    try:
        opt = QAOptions(task=args.task, order=args.order, levels=args.levels, views=args.views, samples=args.samples,
                        seed=args.seed, captions=not args.no_captions, metric=args.metric,
                        window=tuple(args.window) if args.window else None, strict=args.strict,
                        label_map=args.label_map)
        out = generate_dataset(args.world, args.out, opt, progress=not args.no_progress,
                               tracking_uri=args.tracking_uri)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        export_json(Path(out) / DATA_FILE, Path(out) / "conversations.json")
    import json

    card = json.loads((Path(out) / "dataset_card.json").read_text())
    for note in card["source"].get("notes", []):
        print(f"warning: {note}", file=sys.stderr)
    print(f"{card['samples']} samples -> {Path(out) / DATA_FILE}; skipped: {card['skipped'] or 'none'}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="spatialboost")
    add_data_parser(p.add_subparsers(dest="cmd", required=True))
    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
