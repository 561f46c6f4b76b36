"""After one optimiser step, exactly the parameters each stage / variant trains have changed."""
import pytest
import torch

from harness.config import build
from encoders.spatialboost.trainer import BoostConfig, BoostTrainer

from .conftest import tiny_overrides


def _snap(vlm):
    return {n: p.detach().clone() for n, p in vlm.named_parameters()}


def _changed(before, vlm):
    return {n for n, p in vlm.named_parameters() if n not in before or not torch.equal(before[n], p.detach())}


def _step(tr, stage):
    if stage == 3:
        tr.apply_variant()          # wrap / LoRA first, so that names before and after the step agree
    before = _snap(tr.vlm)
    tr.train_stage(stage, None, None)
    return before, _changed(before, tr.vlm)


def _trainer(qa_file, tmp_path, **kw):
    ov = tiny_overrides(qa_file, tmp_path / "ws", tracking=False, checkpoint_every=1000, **kw)
    for s in (1, 2, 3):
        ov[f"stage{s}"] = {**ov[f"stage{s}"], "max_steps": 1}
    return BoostTrainer(build(BoostConfig, ov), echo=lambda m: None)


def test_stage_parameters_dual(qa_file, tmp_path):
    tr = _trainer(qa_file, tmp_path)
    names = [n for n, _ in tr.vlm.named_parameters()]
    proj = {n for n in names if n.startswith("projector.")}
    lm = {n for n in names if n.startswith("lm.")}
    _, ch1 = _step(tr, 1)
    assert ch1 == proj
    _, ch2 = _step(tr, 2)
    # Qwen2's k_proj bias has a zero gradient in exact arithmetic (softmax is invariant to a constant key
    # shift); in floating point it is ~1e-10 and Adam may or may not move it
    k_bias = {n for n in lm if n.endswith("k_proj.bias")}
    assert proj | (lm - k_bias) <= ch2 <= proj | lm
    before, ch3 = _step(tr, 3)
    names3 = {n for n, _ in tr.vlm.named_parameters()}
    plus = {n for n in names3 if ".plus." in n}
    alphas = {n for n in names3 if n.endswith(".a")}
    assert plus and len(alphas) == 4
    # step 1: Attn+ == Attn so dL/da = 0; Attn+ and the projector move, the frozen original, LM, rest do not
    assert ch3 == proj | plus
    assert not any(".orig." in n or n.startswith("lm.") for n in ch3)
    # a second step moves alpha as well
    before = _snap(tr.vlm)
    tr.cfg = tr.cfg.__class__(**{**tr.cfg.__dict__, "stage3": tr.cfg.stage3.__class__(
        **{**tr.cfg.stage3.__dict__, "max_steps": 2})})
    tr.train_stage(3, None, None)
    ch = _changed(before, tr.vlm)
    assert alphas <= ch and ch <= proj | plus | alphas


@pytest.mark.parametrize("variant", ["full", "lora"])
def test_stage3_ablation_variants(qa_file, tmp_path, variant):
    tr = _trainer(qa_file, tmp_path, variant=variant, stage3_projector=False)
    _, ch = _step(tr, 3)
    enc = {n for n, _ in tr.vlm.named_parameters() if n.startswith("encoder.")}
    assert not any(n.startswith(("lm.", "projector.")) for n in ch)
    if variant == "full":
        assert ch == enc
    else:
        lora_b = {n for n in enc if "lora_B" in n}
        assert lora_b and ch == lora_b            # B starts at 0, so dL/dA = 0 at the first step
        assert not any("base_layer" in n for n in ch)
