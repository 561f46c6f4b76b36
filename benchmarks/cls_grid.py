"""(a) The DINOv2 linear grid (52 heads) trained in one pass vs one head alone.

    .venv/bin/python benchmarks/cls_grid.py [--encoder builtin:dinov2-s14-focus] [--batch 32] [--iters 3]

Two numbers per setting, seconds per training iteration:
- heads only (features already in memory, `fast` mode): the 52 heads' own compute, which grows with
  the heads (their inputs are 1-5x wider than the single head's);
- encoder forward + heads (`exact` mode, the paper's on-the-fly augmentation): what one pass saves,
  since 52 separate runs would each repeat the encoder forward.
"""
from __future__ import annotations

import argparse
import time

import torch

from encoders.spec import build_encoder
from heads.linear_grid import DINOV2_LRS, InputConfig, LinearGrid, train_linear_grid


def grid_for(inputs, lrs, dim, classes):
    return LinearGrid(inputs, lrs, {c: dim * (c.n_blocks + int(c.avgpool)) for c in inputs}, classes)


def seconds_per_iter(grid, blocks, batch, iters, encoder=None, image_size=224, classes=1000):
    y = torch.randint(0, classes, (batch,))
    dim = grid.heads[0].weight.shape[1] if encoder is None else encoder.info.embed_dim   # input 0 = 1 block, no avgpool
    fixed = {f"cls.{b}": torch.randn(batch, dim) for b in blocks}
    fixed[f"avgpool.{blocks[-1]}"] = torch.randn(batch, dim)

    def batches():
        while True:
            if encoder is None:
                yield fixed, y
            else:
                with torch.no_grad():
                    out = encoder(torch.randn(batch, 3, image_size, image_size), layers=blocks)
                feats = {f"cls.{b}": out.layers[b].cls for b in blocks}
                feats[f"avgpool.{blocks[-1]}"] = out.layers[blocks[-1]].patches.mean((1, 2))
                yield feats, y

    train_linear_grid(grid, batches, blocks, 1, batch)  # warm-up
    t = time.perf_counter()
    train_linear_grid(grid, batches, blocks, iters, batch)
    return (time.perf_counter() - t) / iters


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder", default="builtin:dinov2-s14-focus")
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--iters", type=int, default=3)
    a = ap.parse_args()
    torch.manual_seed(0)
    enc = build_encoder(a.encoder)
    d, n = enc.info.embed_dim, enc.info.num_layers
    blocks = list(range(n - 4, n))
    one = [InputConfig(1, False)]
    full = [InputConfig(k, p) for k in (1, 4) for p in (False, True)]
    print(f"encoder {a.encoder} (D={d}), classes={a.classes}, batch={a.batch}, threads={torch.get_num_threads()}")
    h1 = seconds_per_iter(grid_for(one, (1e-3,), d, a.classes), blocks, a.batch, a.iters * 5, classes=a.classes)
    h52 = seconds_per_iter(grid_for(full, DINOV2_LRS, d, a.classes), blocks, a.batch, a.iters * 5, classes=a.classes)
    print(f"heads only      : 1 head {h1 * 1e3:8.1f} ms/iter | 52 heads {h52 * 1e3:8.1f} ms/iter | ratio {h52 / h1:.1f}x")
    e1 = seconds_per_iter(grid_for(one, (1e-3,), d, a.classes), blocks, a.batch, a.iters, enc, classes=a.classes)
    e52 = seconds_per_iter(grid_for(full, DINOV2_LRS, d, a.classes), blocks, a.batch, a.iters, enc, classes=a.classes)
    print(f"encoder + heads : 1 head {e1 * 1e3:8.1f} ms/iter | 52 heads {e52 * 1e3:8.1f} ms/iter | ratio {e52 / e1:.2f}x"
          f" | 52 separate runs {52 * e1 / e52:.1f}x slower than one pass")


if __name__ == "__main__":
    main()
