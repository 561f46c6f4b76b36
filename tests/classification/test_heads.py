import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import top_k_accuracy_score

from heads.knn import knn_predict
from heads.linear_grid import InputConfig, LinearGrid, cosine_factor, topk_correct, train_linear_grid


def test_stacked_grid_equals_one_param_group_per_head():
    """Scaling each head's gradient by its lr == SGD with a param group per head (momentum, wd 0)."""
    torch.manual_seed(0)
    blocks = [0, 1]
    feats = {"cls.0": torch.randn(64, 8), "cls.1": torch.randn(64, 8), "avgpool.1": torch.randn(64, 8)}
    y = torch.randint(0, 3, (64,))
    lrs = (0.01, 0.5)
    cfg = InputConfig(2, True)
    grid = LinearGrid([cfg], lrs, {cfg: 24}, 3, generator=torch.Generator().manual_seed(0))
    refs = []
    for h in range(len(lrs)):
        lin = torch.nn.Linear(24, 3)
        with torch.no_grad():
            lin.weight.copy_(grid.heads[0].weight[h].T)
            lin.bias.copy_(grid.heads[0].bias[h, 0])
        refs.append(lin)
    opt = torch.optim.SGD([{"params": r.parameters(), "lr": lr * 16 / 256} for r, lr in zip(refs, lrs)],
                          momentum=0.9)
    total = 8

    def batches():
        for s in range(0, 64, 16):
            yield {k: v[s:s + 16] for k, v in feats.items()}, y[s:s + 16]

    train_linear_grid(grid, batches, blocks, total, batch_size=16)
    it = iter(batches())
    for step in range(total):
        try:
            f, yy = next(it)
        except StopIteration:
            it = iter(batches())
            f, yy = next(it)
        x = cfg.build(f, blocks)
        loss = sum(F.cross_entropy(r(x), yy) for r in refs)
        opt.zero_grad()
        loss.backward()
        for g, lr in zip(opt.param_groups, lrs):
            g["lr"] = lr * 16 / 256 * cosine_factor(step, total)
        opt.step()
    for h, r in enumerate(refs):
        torch.testing.assert_close(grid.heads[0].weight[h].T, r.weight, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(grid.heads[0].bias[h, 0], r.bias, atol=1e-6, rtol=1e-5)


def test_topk_correct_matches_sklearn():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 50, 7, generator=g)
    y = torch.randint(0, 7, (50,), generator=g)
    got = topk_correct(logits, y, ks=(1, 5))
    for h in range(3):
        for k in (1, 5):
            ref = top_k_accuracy_score(y.numpy(), logits[h].numpy(), k=k, labels=list(range(7)), normalize=False)
            assert int(got[k][h]) == int(ref)


def test_knn_matches_a_plain_loop():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(40, 6)).astype(np.float32)
    labels = rng.integers(0, 4, 40)
    query = rng.normal(size=(9, 6)).astype(np.float32)
    scores = knn_predict(torch.from_numpy(train), torch.from_numpy(labels), torch.from_numpy(query), 4,
                         ks=(5, 100), T=0.07, chunk=4)
    tn = train / np.linalg.norm(train, axis=1, keepdims=True)
    for qi, q in enumerate(query):
        sim = tn @ (q / np.linalg.norm(q))
        order = np.argsort(-sim)
        for k in (5, 100):
            ref = np.zeros(4)
            for j in order[:min(k, 40)]:
                ref[labels[j]] += np.exp(sim[j] / 0.07)
            np.testing.assert_allclose(scores[k][qi].numpy(), ref, rtol=1e-4)
