"""Is the answer to a local VQA question in an encoder's visual tokens? A VLM-free probe for ``vqa.*``.

The VQA suites need a trained VLM per encoder, and a VLM that has learnt to read two marks off 64-256 visual
tokens costs GPU hours (suites/vqa/README.md). This asks the cheaper question first, the way the other suites
do it: freeze the encoder, cache the VLM's visual tokens (same image size, same block, same preprocessing as
the VLM trainer) of every marked image, and train a small attention readout (a 2-layer transformer over the
tokens, one learned query per question type) on the train split's questions; score the val split's. If a real
encoder's readout does not beat a random-init one's, the task (not the VLM) is the first suspect; if it does,
the answer is in the tokens, and a VLM at the floor is a VLM-training problem (scale, recipe), not a data one.

Tasks: ``blink_depth_local`` (label: the answer letter) and ``spatialrgpt_qual_local`` (label: the first or
second of the relation's two options). Prints, per task, the floor (train majority), the 2D cue floor
(:func:`suites.vqa.tasks.cue_answer`), each encoder's val accuracy and the paired bootstrap CI against the
first encoder; writes per-document scores and the learning curves to ``--out``.

    python benchmarks/vqa_readout.py --workspace WS --world vqa --depth-pairs 10 \\
        --encoder builtin:dinov2-s14-focus --encoder random:builtin:dinov2-s14-focus --image-size 112
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

TASKS = ("blink_depth_local", "spatialrgpt_qual_local")


def labels(docs: list[dict]) -> np.ndarray:
    """Binary labels: the answer letter (depth), or whether the target is the relation's second option."""
    return np.array([d["answer_index"] if "answer_index" in d else d["options"].index(d["target"])
                     for d in docs], dtype=np.int64)


@torch.no_grad()
def visual_tokens(encoder, paths: list[Path], size: int, layer: int, device: str, precision: str,
                  batch: int = 64, desc: str = "") -> torch.Tensor:
    """[N, h*w, D] float16: the VLM's visual tokens (the trainer's ImageLoader, block ``layer``, normed)."""
    from tqdm import tqdm

    from encoders.spatialboost.data import ImageLoader
    from harness.device import autocast
    load = ImageLoader(size, encoder.info.mean, encoder.info.std)
    encoder.eval().to(device)
    out = []
    for i in tqdm(range(0, len(paths), batch), desc=desc, unit="batch", leave=False, disable=None):
        x = torch.stack([load(p) for p in paths[i:i + batch]]).to(device)
        with autocast(torch.device(device), precision):
            f = encoder(x, layers=(layer,), final=False).layers[layer].patches
        out.append(f.flatten(1, 2).to(torch.float16).cpu())
    return torch.cat(out)


class Readout(nn.Module):
    """Tokens -> linear to ``width`` + learned positions; a learned query per question type attends over them
    through ``depth`` transformer layers; a linear logit."""

    def __init__(self, dim: int, n_tokens: int, n_types: int, width: int = 128, depth: int = 2):
        super().__init__()
        self.proj = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, width))
        self.pos = nn.Parameter(torch.zeros(1, n_tokens, width))
        self.query = nn.Embedding(n_types, width)
        layer = nn.TransformerEncoderLayer(width, 4, 2 * width, dropout=0.1, batch_first=True, norm_first=True)
        self.body = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.head = nn.Linear(width, 1)
        nn.init.normal_(self.pos, std=0.02)

    def forward(self, tokens: torch.Tensor, qtype: torch.Tensor) -> torch.Tensor:
        x = self.proj(tokens.float()) + self.pos
        x = self.body(torch.cat([self.query(qtype)[:, None], x], 1))
        return self.head(x[:, 0]).squeeze(-1)


def train_readout(tr_x, tr_t, tr_y, va_x, va_t, epochs: int, seed: int, lr: float = 5e-4, batch: int = 128,
                  holdout: float = 0.1, device: str = "cpu"):
    """Train on ``1 - holdout`` of the train split (on ``device``), pick the epoch by the held-out part's
    accuracy, return the picked epoch's val predictions (bool, on the CPU), the epoch and the curve."""
    import copy
    tr_x, tr_t, va_x, va_t = (a.to(device) for a in (tr_x, tr_t, va_x, va_t))
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(tr_y), generator=g)
    n_ho = max(1, int(holdout * len(tr_y)))
    ho, fit = perm[:n_ho], perm[n_ho:]
    torch.manual_seed(seed)
    model = Readout(tr_x.shape[-1], tr_x.shape[1], int(max(tr_t.max(), va_t.max())) + 1).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    steps = epochs * ((len(fit) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.1)
    yf = torch.as_tensor(tr_y, dtype=torch.float32, device=device)

    def predict(x, t):
        model.eval()
        with torch.no_grad():
            return torch.cat([model(x[i:i + 512], t[i:i + 512]) for i in range(0, len(t), 512)]) > 0

    ho = ho.to(device)
    best_acc, best_state, best_epoch, curve = -1.0, None, -1, []
    for ep in range(epochs):
        model.train()
        order = fit[torch.randperm(len(fit), generator=g)].to(device)
        for i in range(0, len(order), batch):
            j = order[i:i + batch]
            loss = nn.functional.binary_cross_entropy_with_logits(model(tr_x[j], tr_t[j]), yf[j])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        ho_acc = float((predict(tr_x[ho], tr_t[ho]) == yf[ho].bool()).float().mean())
        curve.append({"epoch": ep, "loss": loss.item(), "holdout_acc": ho_acc})
        if ho_acc > best_acc:
            best_acc, best_state, best_epoch = ho_acc, copy.deepcopy(model.state_dict()), ep
    model.load_state_dict(best_state)
    return predict(va_x, va_t).cpu(), best_epoch, curve


def main(argv=None) -> int:
    from suites.vqa.tasks import add_data_arguments, open_data
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_arguments(ap, "workspace (converted weights, generated tasks)")
    ap.add_argument("--task", action="append", choices=TASKS, help="tasks (default: both)")
    ap.add_argument("--image-size", type=int, default=112, help="the VLM's image size (demo: 112)")
    ap.add_argument("--feature-layer", type=int, default=-2, help="the VLM's visual-token block (LLaVA: -2)")
    ap.add_argument("--depth-pairs", type=int, default=6, help="depth questions per view when generating")
    ap.add_argument("--epochs", type=int, default=20, help="readout epochs (the held-out part picks one)")
    ap.add_argument("--seeds", type=int, default=1, help="readout seeds per encoder (scores are averaged)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    ap.add_argument("--out", type=Path, default=Path("vqa_readout.json"))
    args = ap.parse_args(argv)

    from harness.registry import build_encoder
    from results.stats import vs_first
    from suites.vqa.suite import BlinkDepthLocalSuite, SpatialRGPTQualLocalSuite, VQAOptions
    from suites.vqa.tasks import read_docs

    ws, args.data = open_data(args)
    tasks = args.task or list(TASKS)
    suites = {t: cls(VQAOptions(depth_pairs=args.depth_pairs)) for t, cls in
              zip(TASKS, (BlinkDepthLocalSuite, SpatialRGPTQualLocalSuite)) if t in tasks}
    root = suites[tasks[0]].task_root(args.data, ws)
    split = {t: {"train": read_docs(root / "train" / f"{t}.jsonl"), "val": read_docs(root / f"{t}.jsonl")}
             for t in tasks}
    qtypes = sorted({d["qtype"] for t in tasks for s in split[t].values() for d in s})
    report = {"data": str(root), "image_size": args.image_size, "feature_layer": args.feature_layer,
              "epochs": args.epochs, "seeds": args.seeds, "tasks": {}, "encoders": {}}
    for t in tasks:
        va = split[t]["val"]
        cue = suites[t].cue_floor(va)
        report["tasks"][t] = {"train": len(split[t]["train"]), "val": len(va),
                              "floor": float(np.mean(suites[t].floor(va, root)[0])),
                              "cue": None if cue is None else float(np.mean(cue))}

    for spec in args.encoder:
        enc = build_encoder(spec, ws)
        entry = report["encoders"][spec] = {"tasks": {}}
        for t in tasks:
            t0 = time.perf_counter()
            feats = {s: visual_tokens(enc, [root / d["image"] for d in docs], args.image_size, args.feature_layer,
                                      args.device, args.precision, desc=f"{spec} {t} {s}")
                     for s, docs in split[t].items()}
            t1 = time.perf_counter()
            types = {s: torch.tensor([qtypes.index(d["qtype"]) for d in docs]) for s, docs in split[t].items()}
            y_va = labels(split[t]["val"])
            correct, curves = [], []
            for seed in range(args.seeds):
                pred, ep, curve = train_readout(feats["train"], types["train"], labels(split[t]["train"]),
                                                feats["val"], types["val"], args.epochs, seed, device=args.device)
                correct.append((pred.numpy().astype(np.int64) == y_va).astype(float))
                curves.append({"picked_epoch": ep, "curve": curve})
            scores = np.mean(correct, 0)
            entry["tasks"][t] = {"acc": float(scores.mean()), "scores": scores.tolist(), "seeds": curves,
                                 "features_s": t1 - t0, "readout_s": time.perf_counter() - t1}
            cue = report["tasks"][t]["cue"]
            print(f"{spec}: {t} readout acc {scores.mean():.3f} (floor {report['tasks'][t]['floor']:.3f}, 2D cue "
                  f"{'-' if cue is None else '%.3f' % cue}, {len(scores)} val docs; features {t1 - t0:.0f} s, readout "
                  f"{time.perf_counter() - t1:.0f} s)", flush=True)
        del enc

    print(f"\n| task | floor | 2D cue | {' | '.join(args.encoder)} |\n|---|---|---|{'---|' * len(args.encoder)}")
    for t in tasks:
        ids = [d["id"] for d in split[t]["val"]]
        cells, cis = vs_first(ids, {spec: report["encoders"][spec]["tasks"][t]["scores"] for spec in args.encoder})
        for spec, ci in cis.items():
            report["encoders"][spec]["tasks"][t]["delta_vs_first"] = [ci.delta, ci.low, ci.high]
        r = report["tasks"][t]
        print(f"| {t} | {r['floor']:.3f} | {'-' if r['cue'] is None else '%.3f' % r['cue']} | {' | '.join(cells)} |")
    args.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    import sys
    from harness.errors import UserError
    try:
        raise SystemExit(main())
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)
