"""Chunked cosine search equals a brute-force float64 ranking."""
import numpy as np
import pytest
import torch

from suites.retrieval.search import rank_gallery


def _brute(q, g):
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    s = qn.astype(np.float64) @ gn.astype(np.float64).T
    return np.argsort(-s, axis=1, kind="stable"), s


def _assert_same_ranking(ranks, ref, sims, atol=1e-5):
    """Equal up to swaps of items whose similarities are within atol."""
    assert ranks.shape == ref.shape
    got = np.take_along_axis(sims, ranks, axis=1)
    exp = np.take_along_axis(sims, ref, axis=1)
    np.testing.assert_allclose(got, exp, atol=atol)
    assert (ranks == ref).mean() > 0.99


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_full_ranking_matches_bruteforce(chunk):
    rng = np.random.default_rng(chunk)
    q = rng.standard_normal((9, 16)).astype(np.float32)
    g = rng.standard_normal((203, 16)).astype(np.float32) * rng.uniform(0.1, 10, (203, 1)).astype(np.float32)
    ref, sims = _brute(q, g)
    ranks, scores = rank_gallery(q, g, chunk=chunk, return_scores=True, max_block=50)  # several query blocks
    _assert_same_ranking(ranks, ref, sims)
    np.testing.assert_allclose(scores, np.take_along_axis(sims, ranks, axis=1), atol=1e-5)
    assert ranks.dtype == np.int64
    assert all(sorted(r) == list(range(203)) for r in ranks.tolist())


@pytest.mark.parametrize("chunk,k", [(5, 10), (64, 1), (300, 250), (17, 203)])
def test_topk_matches_bruteforce(chunk, k):
    rng = np.random.default_rng(k)
    q = rng.standard_normal((11, 8)).astype(np.float32)
    g = rng.standard_normal((203, 8)).astype(np.float32)
    ref, sims = _brute(q, g)
    ranks, scores = rank_gallery(q, g, chunk=chunk, topk=k, return_scores=True, max_block=40)
    kk = min(k, 203)
    _assert_same_ranking(ranks, ref[:, :kk], sims)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)


def test_inputs_float16_memmap_and_tensor(tmp_path):
    rng = np.random.default_rng(1)
    g = rng.standard_normal((100, 12)).astype(np.float16)
    mm = np.lib.format.open_memmap(tmp_path / "g.npy", mode="w+", dtype=np.float16, shape=g.shape)
    mm[:] = g
    mm.flush()
    q = torch.from_numpy(rng.standard_normal((3, 12)).astype(np.float32))
    ref, sims = _brute(q.numpy(), g.astype(np.float32))
    ranks = rank_gallery(q, np.load(tmp_path / "g.npy", mmap_mode="r"), chunk=9)
    _assert_same_ranking(ranks, ref, sims, atol=1e-3)


def test_scale_invariance_and_errors():
    rng = np.random.default_rng(2)
    q = rng.standard_normal((4, 6)).astype(np.float32)
    g = rng.standard_normal((50, 6)).astype(np.float32)
    np.testing.assert_array_equal(rank_gallery(q, g), rank_gallery(q * 3, g * 0.01))
    with pytest.raises(ValueError, match="dim"):
        rank_gallery(q, g[:, :5])
    with pytest.raises(ValueError, match="2-D"):
        rank_gallery(q[0], g)
    with pytest.raises(ValueError, match="topk"):
        rank_gallery(q, g, topk=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    rng = np.random.default_rng(4)
    q = rng.standard_normal((5, 32)).astype(np.float32)
    g = rng.standard_normal((1000, 32)).astype(np.float32)
    ref, sims = _brute(q, g)
    _assert_same_ranking(rank_gallery(q, g, device="cuda", chunk=128), ref, sims, atol=1e-4)
    _assert_same_ranking(rank_gallery(q, g, device="cuda", chunk=128, topk=20), ref[:, :20], sims, atol=1e-4)
