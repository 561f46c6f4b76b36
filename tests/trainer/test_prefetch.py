"""Batches built in background threads (``prefetch_steps``) are the batches the loop would build itself: the
training is the same, step for step, with and without prefetching."""
import threading

import pytest
import torch

from harness.config import ConfigError, build
from encoders.spatialboost.data import BatchPrefetcher
from encoders.spatialboost.trainer import BoostConfig, BoostTrainer

from .conftest import tiny_overrides


def test_prefetcher_returns_each_step_in_order_and_builds_ahead():
    built, main = [], threading.get_ident()

    def make(step):
        built.append((step, threading.get_ident() != main))
        return [step * 10]

    with BatchPrefetcher(make, 9, depth=2) as pf:
        got = [pf.get(s) for s in range(3, 9)]
    assert got == [[s * 10] for s in range(3, 9)]
    assert sorted(s for s, _ in built) == list(range(3, 9))     # each step once, none past the stop
    assert all(in_thread for _, in_thread in built)


def test_prefetcher_depth_zero_builds_in_the_caller():
    seen = []
    pf = BatchPrefetcher(lambda s: seen.append(threading.get_ident()) or [s], 3, depth=0)
    assert [pf.get(s) for s in range(3)] == [[0], [1], [2]]
    assert set(seen) == {threading.get_ident()}
    pf.close()


def test_prefetcher_reraises_a_failed_build():
    def make(step):
        if step == 2:
            raise OSError("disk gone")
        return [step]

    with BatchPrefetcher(make, 5, depth=2) as pf:
        assert pf.get(0) == [0] and pf.get(1) == [1]
        with pytest.raises(OSError, match="disk gone"):
            pf.get(2)


def test_negative_prefetch_is_refused(qa_file, tmp_path):
    with pytest.raises(ConfigError, match="prefetch_steps"):
        build(BoostConfig, tiny_overrides(qa_file, tmp_path / "ws", prefetch_steps=-1))


@pytest.mark.parametrize("stage", [1, 2])
def test_training_is_identical_with_and_without_prefetch(qa_file, tmp_path, stage):
    def train(depth):
        ov = tiny_overrides(qa_file, tmp_path / f"ws{depth}", tracking=False, checkpoint_every=1000,
                            prefetch_steps=depth)
        ov[f"stage{stage}"] = {**ov[f"stage{stage}"], "max_steps": 5}      # 8 samples / 4: crosses an epoch
        tr = BoostTrainer(build(BoostConfig, ov), echo=lambda m: None)
        res = tr.train_stage(stage, None, None)
        return res.losses, {n: p.detach().clone() for n, p in tr.vlm.named_parameters()}

    loss0, p0 = train(0)
    loss2, p2 = train(2)
    assert len(loss0) == 5 and loss0 == loss2
    assert p0.keys() == p2.keys() and all(torch.equal(p0[n], p2[n]) for n in p0)


def test_vqa_speed_options_do_not_change_the_vlm_recipe():
    """``prefetch_steps`` and ``grad_checkpointing`` change speed only: a VLM trained with either is reused."""
    from suites.vqa.suite import BlinkDepthLocalSuite, VQAOptions
    base = BlinkDepthLocalSuite(build(VQAOptions, {})).recipe("bf16")
    fast = BlinkDepthLocalSuite(build(VQAOptions, {"prefetch_steps": 0, "grad_checkpointing": "off"})).recipe("bf16")
    other = BlinkDepthLocalSuite(build(VQAOptions, {"stage2_lr": 1e-4})).recipe("bf16")
    assert fast == base and other != base


def test_prefetch_auto_is_off_on_cpu_and_explicit_values_win(qa_file, tmp_path):
    def depth(**kw):
        cfg = build(BoostConfig, tiny_overrides(qa_file, tmp_path / "ws", tracking=False, **kw))
        return BoostTrainer(cfg, echo=lambda m: None)._prefetch_depth()

    assert depth() == 0                     # CPU: the threads would compete with the compute
    assert depth(prefetch_steps=3) == 3 and depth(prefetch_steps=0) == 0
