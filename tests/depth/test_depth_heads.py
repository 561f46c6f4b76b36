"""Depth heads and losses: bins, the linear-head rule, grid shapes / per-head lr, DPT, SigLoss, gradient loss."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from heads.depth import (DepthInput, DepthLoss, LinearDepthGrid, depth_bins, gradient_log_loss, probs_to_depth,
                         sig_loss)
from heads.dpt import DPTDepthHead, dpt_blocks


def test_log_bins_are_geometric_from_min_to_max_unlike_torch_logspace():
    b = depth_bins(1e-3, 10.0, 256, "log").double()
    assert b[0].item() == pytest.approx(1e-3, rel=1e-5) and b[-1].item() == pytest.approx(10.0, rel=1e-5)
    ratios = b[1:] / b[:-1]
    assert torch.allclose(ratios, torch.full_like(ratios, (10.0 / 1e-3) ** (1 / 255)), rtol=1e-4)
    wrong = torch.logspace(1e-3, 10.0, 256)          # DINOv2 "SID" / probe3d: 10**0.001 .. 10**10
    assert wrong[-1] > 1e9 and wrong[0] > 1.0
    kitti = depth_bins(1e-3, 80.0, 256, "log")
    assert kitti[-1].item() == pytest.approx(80.0, rel=1e-5)
    u = depth_bins(1e-3, 10.0, 256, "uniform")
    assert torch.allclose(u, torch.linspace(1e-3, 10.0, 256))


def test_linear_normalisation_is_relu_plus_point_one_renormalised():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 3, 4, generator=g)
    bins = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    got = probs_to_depth(logits, bins, "linear")
    p = torch.relu(logits) + 0.1
    p = p / p.sum(1, keepdim=True)
    ref = (p * bins.view(1, -1, 1, 1)).sum(1)
    torch.testing.assert_close(got, ref)
    assert got.min() >= 1.0 and got.max() <= 5.0
    sm = torch.softmax(logits, 1)
    torch.testing.assert_close(probs_to_depth(logits, bins, "softmax"), (sm * bins.view(1, -1, 1, 1)).sum(1))


def test_upsampling_logits_equals_dinov2_upsampling_features_then_conv():
    """DINOv2 BNHead resizes features x4 and then applies the 1x1 conv; we apply it first."""
    g = torch.Generator().manual_seed(0)
    grid = LinearDepthGrid([DepthInput(1, True)], [0.1], embed_dim=6, min_depth=1e-3, max_depth=10.0, n_bins=16,
                           generator=g)
    with torch.no_grad():
        grid.heads[0].weight.normal_(0, 1.0, generator=g)
        grid.heads[0].bias.normal_(0, 1.0, generator=g)
    patches = {0: torch.randn(2, 3, 5, 6, generator=g)}
    cls = {0: torch.randn(2, 6, generator=g)}
    ours = grid(patches, cls, [0])[0]                                            # [B, 12, 20]
    feat = torch.cat([patches[0], cls[0][:, None, None].expand(-1, 3, 5, -1)], -1).permute(0, 3, 1, 2)
    feat = F.interpolate(feat, scale_factor=4, mode="bilinear", align_corners=False)
    w = grid.heads[0].weight[0].T[:, :, None, None]
    logits = F.conv2d(feat, w, grid.heads[0].bias[0, 0])
    ref = probs_to_depth(logits, grid.bins, "linear")
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)


def test_grid_shapes_gradients_and_per_head_learning_rate():
    g = torch.Generator().manual_seed(0)
    inputs = [DepthInput(n, c) for n in (1, 2) for c in (False, True)]
    lrs = (0.01, 0.1, 1.0)
    grid = LinearDepthGrid(inputs, lrs, embed_dim=8, min_depth=1e-3, max_depth=10.0, n_bins=32, generator=g)
    assert grid.n_heads == 12 and len(grid.head_names()) == 12 and grid.head_names()[0] == "lin.l1.lr0.01"
    assert [h.weight.shape for h in grid.heads] == [(3, 8, 32), (3, 16, 32), (3, 16, 32), (3, 32, 32)]
    patches = {b: torch.randn(2, 3, 4, 8, generator=g) for b in (5, 6)}
    cls = {b: torch.randn(2, 8, generator=g) for b in (5, 6)}
    out = grid(patches, cls, [5, 6], chunk=2)
    assert out.shape == (12, 2, 12, 16)
    torch.testing.assert_close(out, grid(patches, cls, [5, 6]))             # chunking changes nothing
    assert out.min() >= 1e-3 and out.max() <= 10.0
    gt = torch.rand(2, 24, 32) * 9 + 0.5
    valid = torch.ones_like(gt, dtype=torch.bool)
    pred = F.interpolate(out.reshape(24, 1, 12, 16), size=(24, 32), mode="bilinear").reshape(12, 2, 24, 32)
    sig_loss(pred, gt, valid).sum().backward()
    before = [h.weight.detach().clone() for h in grid.heads]
    grads = [h.weight.grad.clone() for h in grid.heads]
    assert all((gr.abs().sum((1, 2)) > 0).all() for gr in grads)            # every head gets a gradient
    opt = torch.optim.SGD(grid.parameters(), lr=1.0, momentum=0.9)
    grid.scale_grads(1.0)
    opt.step()
    for h, b0, gr in zip(grid.heads, before, grads):                      # first SGD step: w -= lr_k * grad_k
        for k, lr in enumerate(lrs):
            torch.testing.assert_close(h.weight[k].detach(), b0[k] - lr * gr[k])


def test_sigloss_matches_hand_formula_and_warm_up():
    rng = np.random.default_rng(0)
    pred = rng.uniform(0.5, 9.0, (3, 2, 5, 6)).astype(np.float32)      # 3 heads
    gt = rng.uniform(0.5, 9.0, (2, 5, 6)).astype(np.float32)
    valid = rng.random((2, 5, 6)) < 0.7
    got = sig_loss(torch.from_numpy(pred), torch.from_numpy(gt), torch.from_numpy(valid))
    warm = sig_loss(torch.from_numpy(pred), torch.from_numpy(gt), torch.from_numpy(valid), warm_up=True)
    for k in range(3):
        g = np.log(pred[k][valid].astype(np.float64) + 1e-3) - np.log(gt[valid].astype(np.float64) + 1e-3)
        n = g.size
        var = ((g - g.mean()) ** 2).sum() / (n - 1)                      # unbiased, as torch.var
        assert got[k].item() == pytest.approx(math.sqrt(var + 0.15 * g.mean() ** 2), rel=1e-5)
        assert warm[k].item() == pytest.approx(math.sqrt(0.15 * g.mean() ** 2), rel=1e-5)
    loss = DepthLoss(warm_iter=100)
    t = [torch.from_numpy(x) for x in (pred, gt, valid)]
    torch.testing.assert_close(loss(*t, step=99), warm)
    torch.testing.assert_close(loss(*t, step=100), got)
    # scale invariance: pred = c * gt costs only the mean term
    s = sig_loss(torch.from_numpy(gt) * 2.0, torch.from_numpy(gt), torch.ones(2, 5, 6, dtype=torch.bool))
    assert s.item() < math.sqrt(0.15) * math.log(2) * 1.01


def test_gradient_loss_is_spatial_per_image():
    rng = np.random.default_rng(0)
    gt = torch.from_numpy(rng.uniform(1.0, 9.0, (2, 16, 20)).astype(np.float32))
    valid = torch.ones_like(gt, dtype=torch.bool)
    assert gradient_log_loss(gt, gt, valid).item() == 0.0
    assert gradient_log_loss(gt * 3.0, gt, valid).item() < 2e-3          # constant log-ratio (up to eps)
    noisy = gt * torch.from_numpy(rng.uniform(0.5, 1.5, (2, 16, 20)).astype(np.float32))
    loss = gradient_log_loss(torch.stack([noisy, gt]), gt, valid)
    assert loss.shape == (2,) and loss[0] > 0.1 and loss[1].abs() < 1e-5
    # hand computation at stride 1 only
    d = (torch.log(noisy + 1e-3) - torch.log(gt + 1e-3)).double()
    ref = ((d[:, :-2] - d[:, 2:]).abs().sum() + (d[:, :, :-2] - d[:, :, 2:]).abs().sum()) / valid.sum()
    assert gradient_log_loss(noisy, gt, valid, strides=(1,)).item() == pytest.approx(ref.item(), rel=1e-5)
    assert DepthLoss(0, grad_weight=0.5)(noisy, gt, valid, 0).item() == pytest.approx(
        (sig_loss(noisy, gt, valid) + 0.5 * gradient_log_loss(noisy, gt, valid)).item())


def test_dpt_head_shapes_readout_and_gradients():
    torch.manual_seed(0)
    head = DPTDepthHead(embed_dim=32, min_depth=1e-3, channels=16)
    assert [c.out_channels for c in head.reassemble.projects] == [4, 8, 16, 32]      # [D/8, D/4, D/2, D]
    patches = [torch.randn(2, 5, 7, 32) for _ in range(4)]
    cls = [torch.randn(2, 32) for _ in range(4)]
    out = head(patches, cls)
    # odd grids round up at the stride-2 branch, as DINOv2's head: 5x7 -> 3x4 -> ... -> 16 * (6, 8)
    assert out.shape == (2, 96, 128) and out.min() >= 1e-3
    for seed in range(5):                          # the final bias keeps relu alive at init (see heads/dpt.py)
        torch.manual_seed(seed)
        assert (DPTDepthHead(32, channels=16)(patches, cls) > 0.5).all()
    assert head([p[:, :4, :6] for p in patches], cls).shape == (2, 64, 96)     # 16x the patch grid
    out.mean().backward()
    assert all(p.grad is not None for p in head.parameters())
    with torch.no_grad():
        other = head(patches, [c + 1.0 for c in cls])
    assert not torch.allclose(out.detach(), other)                        # readout "project" uses CLS
    assert dpt_blocks(12) == [2, 5, 8, 11] and dpt_blocks(4) == [0, 1, 2, 3] and dpt_blocks(24)[-1] == 23


@pytest.mark.parametrize("norm, up", [("linear", 4), ("linear", 1), ("softmax", 4)])
def test_fused_linear_bins_match_autograd_reference(norm, up):
    """The grid's fused channels-last path == interpolate + probs_to_depth on NCHW, values and gradients."""
    g = torch.Generator().manual_seed(0)
    grid = LinearDepthGrid([DepthInput(1, False)], [0.1, 1.0], embed_dim=4, min_depth=1e-3, max_depth=10.0,
                           n_bins=16, norm=norm, upsample=up, generator=g)
    logits = torch.randn(2, 3, 4, 5, 16, generator=g, dtype=torch.float64)          # [k, B, h, w, C]
    a = logits.clone().requires_grad_()
    b = logits.clone().requires_grad_()
    grid.bins = grid.bins.double()
    out = grid.logits_to_depth(a)
    assert torch.equal(a.detach(), logits)                                    # input untouched
    x = F.interpolate(b.permute(0, 1, 4, 2, 3).reshape(6, 16, 4, 5), scale_factor=up, mode="bilinear",
                      align_corners=False)
    ref = probs_to_depth(x, grid.bins, norm).reshape(2, 3, 4 * up, 5 * up)
    torch.testing.assert_close(out, ref)
    w = torch.randn(out.shape, generator=g, dtype=torch.float64)
    (out * w).sum().backward()
    (ref * w).sum().backward()
    torch.testing.assert_close(a.grad, b.grad)
