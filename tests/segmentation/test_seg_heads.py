"""heads/segmentation.py: K stacked BN+1x1 heads equal K separate DINOv2 BNHeads; the poly schedule."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from heads.segmentation import StackedBNLinear, poly_warmup_lr, resize_concat, train_heads


class RefHead(nn.Module):
    """DINOv2's BNHead: BatchNorm2d(affine) -> (dropout 0) -> conv_seg 1x1."""

    def __init__(self, d, c):
        super().__init__()
        self.bn = nn.BatchNorm2d(d)
        self.conv_seg = nn.Conv2d(d, c, 1)

    def forward(self, x):
        return self.conv_seg(self.bn(x))


def _ref_from(stacked: StackedBNLinear, k: int) -> RefHead:
    ref = RefHead(stacked.in_channels, stacked.num_classes)
    with torch.no_grad():
        ref.bn.weight.copy_(stacked.gamma[k])
        ref.bn.bias.copy_(stacked.beta[k])
        ref.conv_seg.weight.copy_(stacked.weight[k][:, :, None, None])
        ref.conv_seg.bias.copy_(stacked.bias[k])
    return ref


def _loss(logits, y):
    return F.cross_entropy(F.interpolate(logits, size=y.shape[-2:], mode="bilinear"), y, ignore_index=255)


def test_stacked_heads_equal_separate_bnheads_trained_with_adamw():
    g = torch.Generator().manual_seed(0)
    d, c, lrs, iters = 12, 5, (1e-3, 3e-2), 12
    stacked = StackedBNLinear(d, c, num_heads=2, generator=g)
    with torch.no_grad():    # non-trivial affine so that the folding is exercised
        for k in range(2):
            stacked.gamma[k].uniform_(0.5, 1.5, generator=g)
            stacked.beta[k].uniform_(-0.2, 0.2, generator=g)
    refs = [_ref_from(stacked, k) for k in range(2)]
    data = [(torch.randn(4, d, 3, 5, generator=g), torch.randint(0, c, (4, 12, 20), generator=g)) for _ in range(iters)]
    for i in range(0, iters, 3):
        data[i][1][:, :2] = 255                                   # ignored pixels
    kw = dict(weight_decay=1e-2, betas=(0.9, 0.999), warmup_iters=4, warmup_ratio=1e-3, power=1.0, min_lr=0.0)

    def batches():
        yield from data
    train_heads(stacked, batches, _loss, lrs, iters, **kw)

    for k, ref in enumerate(refs):
        opt = torch.optim.AdamW(ref.parameters(), lr=lrs[k], betas=kw["betas"], weight_decay=kw["weight_decay"])
        ref.train()
        for step, (x, y) in enumerate(data):
            for gp in opt.param_groups:
                gp["lr"] = poly_warmup_lr(lrs[k], step, iters, kw["warmup_iters"], kw["warmup_ratio"])
            opt.zero_grad()
            _loss(ref(x), y).backward()
            opt.step()
        ref.eval()
        torch.testing.assert_close(stacked.gamma[k].detach(), ref.bn.weight.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(stacked.weight[k].detach(), ref.conv_seg.weight[:, :, 0, 0].detach(),
                                   rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(stacked.norm.running_mean, ref.bn.running_mean)
        torch.testing.assert_close(stacked.norm.running_var, ref.bn.running_var)
        x = torch.randn(2, d, 4, 4, generator=g)
        out = stacked(x)[:, k * c:(k + 1) * c]
        torch.testing.assert_close(out, ref(x), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(stacked.project(stacked.normalize(x), k), ref(x), rtol=1e-4, atol=1e-5)
    # the two lrs really gave two different heads
    assert not torch.allclose(stacked.weight[0], stacked.weight[1])


def test_poly_schedule_with_linear_warmup_matches_mmcv_formula():
    base, total, w, r = 1e-3, 100, 10, 1e-6
    assert poly_warmup_lr(base, 0, total, w, r) == pytest.approx(base * r)
    assert poly_warmup_lr(base, w, total, w, r) == pytest.approx(base * (1 - w / total))
    assert poly_warmup_lr(base, total, total, w, r) == pytest.approx(0.0)
    assert poly_warmup_lr(base, total, total, w, r, min_lr=1e-5) == pytest.approx(1e-5)
    t = 4   # mmcv: poly(t) * (1 - (1 - t/W) * (1 - ratio))
    assert poly_warmup_lr(base, t, total, w, r) == pytest.approx(base * (1 - t / total) * (1 - (1 - t / w) * (1 - r)))
    lrs = [poly_warmup_lr(base, s, total, w, r) for s in range(total + 1)]
    assert max(lrs) == lrs[w] and all(a >= b for a, b in zip(lrs[w:], lrs[w + 1:]))


def test_resize_concat_matches_first_map_size():
    a, b = torch.randn(1, 3, 4, 6), torch.randn(1, 2, 2, 3)
    out = resize_concat([a, b])
    assert out.shape == (1, 5, 4, 6)
    torch.testing.assert_close(out[:, :3], a)
    with pytest.raises(ValueError, match="num_heads"):
        StackedBNLinear(4, 2, num_heads=0)
    copy.deepcopy(StackedBNLinear(4, 2, num_heads=2))
