"""The DPT head trains through the one head-grid loop (heads.grid.train_grid via heads.dpt.train_dpt): the
same losses, learning rates and weights, bit for bit, as a plain AdamW + OneCycleLR + clipping loop written
out here; and the grid's shared pieces (selection, stacked linear maps)."""
import numpy as np
import torch

from heads.depth import DepthLoss, resize_to
from heads.dpt import DPTDepthHead, train_dpt
from heads.grid import StackedLinear, select

BLOCKS = [0, 1, 2, 3]


def _batches():
    g = torch.Generator().manual_seed(1)
    while True:
        pat = {b: torch.randn(2, 6, 8, 32, generator=g) for b in BLOCKS}
        cl = {b: torch.randn(2, 32, generator=g) for b in BLOCKS}
        t = torch.rand(2, 40, 56, generator=g) * 9 + 0.5
        yield pat, cl, t, t > 1


def _plain_loop(total, lr, warmup, wd, clip):
    torch.manual_seed(0)
    head = DPTDepthHead(32, 1e-3, 8)
    loss_fn = DepthLoss(2, 0.5)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=wd)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=warmup / total,
                                                anneal_strategy="cos", div_factor=25.0, final_div_factor=1000.0,
                                                cycle_momentum=False)
    it, log = _batches(), []
    head.train()
    for step in range(total):
        pat, cl, target, valid = next(it)
        pred = head([pat[b] for b in BLOCKS], [cl[b] for b in BLOCKS])
        loss = loss_fn(resize_to(pred, tuple(target.shape[-2:])), target, valid, step)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(head.parameters(), clip)
        log.append((float(loss.detach()), opt.param_groups[0]["lr"]))
        opt.step()
        if step < total - 1:
            sched.step()
    return head, log


def test_train_dpt_matches_a_plain_adamw_one_cycle_loop():
    ref, ref_log = _plain_loop(7, 3e-4, 2, 1e-4, 0.05)          # a small clip so that clipping acts
    torch.manual_seed(0)
    head, log = DPTDepthHead(32, 1e-3, 8), []
    last = train_dpt(head, _batches(), BLOCKS, 7, DepthLoss(2, 0.5), lr=3e-4, warmup=2, weight_decay=1e-4,
                     grad_clip=0.05, on_step=lambda step, loss, lr: log.append((loss, lr)))
    assert log == ref_log and last == log[-1][0]
    assert log[0][1] < log[2][1] > log[-1][1]                     # warm-up then decay
    for a, b in zip(head.parameters(), ref.parameters()):
        assert torch.equal(a, b)
    assert not head.training


def test_select_first_best_and_nan_is_worst():
    assert select([0.3, 0.1, 0.1, float("nan")], "min") == 1
    assert select(np.array([float("nan"), 2.0, 5.0, 5.0]), "max") == 2
    assert select(torch.tensor([1.0, 3.0]), "max") == 1


def test_stacked_linear_vectors_and_maps_are_the_same_map():
    lin = StackedLinear(3, 5, 4, generator=torch.Generator().manual_seed(0))
    x = torch.randn(6, 5)
    want = torch.stack([x @ lin.weight[k] + lin.bias[k, 0] for k in range(3)])
    torch.testing.assert_close(lin(x), want)                                  # [B, D] -> [K, B, C]
    torch.testing.assert_close(lin(x.view(2, 3, 1, 5)), want.view(3, 2, 3, 1, 4))   # maps keep their shape
    torch.testing.assert_close(lin(x.view(2, 3, 1, 5), slice(1, 2)), want[1:2].view(1, 2, 3, 1, 4))


def test_dpt_numbers_do_not_depend_on_the_cache(tmp_path, workspace):
    """A cold feature cache (DataLoaders that advance the global RNG) and a warm one give the same DPT run."""
    from depth_fixtures import make_nyud
    from harness.config import build
    from harness.runner import EvalConfig, evaluate
    data = make_nyud(tmp_path / "nyu", n_train=8, n_test=3)
    cfg = {"encoder": "builtin:tiny-vit", "suite": "depth.nyud", "data": str(data), "workspace": str(workspace),
           "progress": False, "head": "dpt", "protocol": {"batch_size": 4, "dpt_channels": 8, "sig_warm_iter": 2,
                                                          "dpt_iterations": 6, "dpt_warmup": 2}}
    cold = evaluate(build(EvalConfig, cfg))
    warm = evaluate(build(EvalConfig, {**cfg, "force": True}))
    assert not warm.reused and warm.run_id != cold.run_id
    for k in ("dpt.rmse", "dpt.val_rmse", "dpt.abs_rel"):
        assert warm.metrics[k] == cold.metrics[k], k
