"""Dual-channel attention (paper §3.1, Eq. 1) over every supported backbone family.

(a) identity at init, (b) one/two optimiser steps move exactly Attn+ and ``a``, (c) gradient reaches ``a``,
(d) safetensors state-dict round trip into a freshly wrapped model, (e) parameter increase, (f) error for a
model without attention, (g) the LoRA ablation trains only LoRA parameters; plus call-signature fidelity."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from encoders.spatialboost import dual_attention as da
from encoders.spatialboost.dual_attention import (DualChannelAttention, DualChannelConfig, alpha_stats,
                                                  apply_full_finetune, apply_lora, dual_channel_parameters,
                                                  find_attention_modules, named_dual_channel_parameters,
                                                  wrap_dual_channel)

from ._families import FAMILIES, Family

ATOL = 1e-6
FAMILY_IDS = [f.name for f in FAMILIES]


@pytest.fixture(params=FAMILIES, ids=FAMILY_IDS)
def family(request) -> Family:
    return request.param


def _loss(outputs, seed: int = 123) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return sum(((o - torch.randn(o.shape, generator=g)) ** 2).mean() for o in outputs)


def _max_diff(xs, ys) -> float:
    return max((x - y).abs().max().item() for x, y in zip(xs, ys))


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


# -- (a) identity at initialisation ----------------------------------------------------------------------
def test_identity_at_init(family):
    model, x = family.build(0), family.images()
    with torch.no_grad():
        ref = family.run(model, x)
    report = wrap_dual_channel(model)
    assert len(report.wrapped) == family.n_blocks
    assert set(report.kinds.values()) == {family.kind}
    assert all(isinstance(model.get_submodule(n), DualChannelAttention) for n in report.wrapped)
    with torch.no_grad():
        out = family.run(model, x)
    assert _max_diff(ref, out) <= ATOL
    # alpha = sigmoid(0) = 0.5 everywhere (paper: a zero-initialised)
    for mean, lo, hi in alpha_stats(model).values():
        assert mean == lo == hi == 0.5


# -- (b) + (c) optimiser steps move exactly Attn+ and a; gradient reaches a -------------------------------
def test_training_moves_only_attn_plus_and_a(family):
    model, x = family.build(0), family.images()
    wrap_dual_channel(model)
    dual = {n for n, _ in named_dual_channel_parameters(model)}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == dual, "only Attn+ parameters and the a vectors may require grad"
    a_names = {n for n in dual if n.endswith(".a")}
    assert len(a_names) == family.n_blocks
    before = _snapshot(model)
    opt = torch.optim.AdamW(dual_channel_parameters(model), lr=1e-2, weight_decay=0.0)
    params = dict(model.named_parameters())

    # step 1: Attn+ == Attn, so d(out)/d(a) = alpha' * (Attn - Attn+) = 0 (exactly, except for
    # nn.MultiheadAttention in eval mode: torch's fused fast path serves the frozen branch only, ~1e-7 apart)
    opt.zero_grad()
    _loss(family.run(model, x)).backward()
    for n, p in params.items():
        if n not in dual:
            assert p.grad is None, f"frozen parameter {n} received a gradient"
    for n in a_names:
        assert params[n].grad is not None and params[n].grad.abs().max() <= 1e-6
        if family.kind != "mha":
            assert torch.count_nonzero(params[n].grad) == 0
    opt.step()

    # step 2 (c): Attn+ has moved away from Attn, the gradient now reaches every a
    opt.zero_grad()
    _loss(family.run(model, x)).backward()
    for n in a_names:
        g = params[n].grad
        assert g is not None and torch.isfinite(g).all() and g.abs().max() > 1e-6, n
    opt.step()

    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}
    unchanged_frozen = [n for n in params if n not in dual and n in changed]
    assert not unchanged_frozen, f"frozen parameters changed: {unchanged_frozen}"
    assert changed <= dual
    # every a and every Attn+ weight matrix moved (bias vectors may get ~0 gradient, e.g. a key bias)
    must_move = {n for n in dual if n.endswith(".a") or params[n].ndim >= 2}
    assert must_move <= changed, f"did not move: {sorted(must_move - changed)}"
    stats = alpha_stats(model)
    assert len(stats) == family.n_blocks and any(hi != lo for _, lo, hi in stats.values())


# -- (d) state-dict round trip through safetensors ---------------------------------------------------------
def test_state_dict_round_trip(family, tmp_path):
    model, x = family.build(0), family.images()
    report = wrap_dual_channel(model)
    opt = torch.optim.AdamW(dual_channel_parameters(model), lr=1e-2)
    for _ in range(2):
        opt.zero_grad()
        _loss(family.run(model, x)).backward()
        opt.step()
    sd = model.state_dict()
    for name in report.wrapped:      # the documented key layout
        assert f"{name}.a" in sd
        assert any(k.startswith(f"{name}.orig.") for k in sd)
        assert any(k.startswith(f"{name}.plus.") for k in sd)
    path = tmp_path / "boosted.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))

    fresh = family.build(1)                  # different random base weights
    wrap_dual_channel(fresh)
    missing, unexpected = fresh.load_state_dict(load_file(str(path)), strict=True)
    assert not missing and not unexpected
    with torch.no_grad():
        assert _max_diff(family.run(model, x), family.run(fresh, x)) == 0.0
    assert alpha_stats(fresh) == alpha_stats(model)


# -- (e) parameter increase --------------------------------------------------------------------------------
def test_parameter_increase_reported(family):
    model = family.build(0)
    n0 = sum(p.numel() for p in model.parameters())
    report = wrap_dual_channel(model)
    added = sum(p.numel() for p in dual_channel_parameters(model))
    assert report.params_before == n0
    assert report.params_after == sum(p.numel() for p in model.parameters())
    assert report.params_added == added == report.trainable_params
    assert report.increase_pct == pytest.approx(100.0 * added / n0)
    assert report.increase_pct > 0
    print(f"\n[{family.name}] {report.summary()}")


# -- (f) no attention ----------------------------------------------------------------------------------------
def test_error_lists_found_module_types():
    class VisionTransformerX(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3)
            self.body = nn.Sequential(nn.ReLU(), nn.Linear(8, 8), nn.Linear(8, 8))

    with pytest.raises(ValueError) as e:
        wrap_dual_channel(VisionTransformerX())
    msg = str(e.value)
    assert "no recognisable attention layers in VisionTransformerX" in msg
    for t in ("Conv2d", "Sequential", "ReLU", "Linear x2"):
        assert t in msg


# -- (g) LoRA and full fine-tuning ablations (Table 17) ---------------------------------------------------------
def test_lora_trains_only_lora_parameters(family):
    model, x = family.build(0), family.images()
    with torch.no_grad():
        ref = family.run(model, x)
    report = apply_lora(model, r=4, alpha=8)
    per_layer = {"fused_qkv": 2, "separate_qkv": 4, "mha": 1}[family.kind]
    assert len(report.targets) == per_layer * family.n_blocks
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert report.params_trainable == sum(p.numel() for n, p in model.named_parameters() if n in trainable)
    with torch.no_grad():                    # lora_B starts at zero: same function
        assert _max_diff(ref, family.run(model, x)) <= ATOL
    before = _snapshot(model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    for _ in range(2):
        opt.zero_grad()
        _loss(family.run(model, x)).backward()
        opt.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert changed and changed <= trainable, sorted(changed - trainable)
    assert any("lora_A" in n for n in changed) and any("lora_B" in n for n in changed)


def test_full_finetune_unfreezes_everything_and_refuses_dual_channel():
    fam = FAMILIES[0]
    model = fam.build(0)
    for p in model.parameters():
        p.requires_grad_(False)
    rep = apply_full_finetune(model)
    assert rep.params_trainable == rep.params_total and all(p.requires_grad for p in model.parameters())
    wrapped = fam.build(0)
    wrap_dual_channel(wrapped)
    with pytest.raises(ValueError, match="alternative to dual-channel"):
        apply_full_finetune(wrapped)
    with pytest.raises(ValueError, match="alternative to dual-channel"):
        apply_lora(wrapped)


# -- layer selection and config -------------------------------------------------------------------------------
def test_layer_selection():
    fam = next(f for f in FAMILIES if f.name == "dinov2_hub_replica")   # 4 blocks in 2 chunks
    names = [n for n, _, _ in find_attention_modules(fam.build(0))]
    assert names == ["blocks.0.0.attn", "blocks.0.1.attn", "blocks.1.2.attn", "blocks.1.3.attn"]
    assert wrap_dual_channel(fam.build(0), DualChannelConfig(layers="last_2")).wrapped == names[2:]
    rep = wrap_dual_channel(fam.build(0), DualChannelConfig(layers=[0, -1]))
    assert rep.wrapped == [names[0], names[3]] and rep.skipped == names[1:3]
    with pytest.raises(ValueError, match="out of range"):
        wrap_dual_channel(fam.build(0), DualChannelConfig(layers=[4]))
    with pytest.raises(ValueError, match="last_<k>"):
        wrap_dual_channel(fam.build(0), DualChannelConfig(layers="first_2"))
    model = fam.build(0)
    wrap_dual_channel(model)
    with pytest.raises(ValueError, match="already"):
        wrap_dual_channel(model)


def test_non_block_attention_is_opt_in():
    fam = next(f for f in FAMILIES if f.name == "hf_siglip")
    rep = wrap_dual_channel(fam.build(0))
    assert rep.skipped == ["head.attention"]            # SigLIP's attention-pooling head (an nn.MultiheadAttention)
    model, x = fam.build(0), fam.images()
    with torch.no_grad():
        ref = fam.run(model, x)
    rep = wrap_dual_channel(model, DualChannelConfig(include_non_block=True))
    assert rep.wrapped[-1] == "head.attention" and rep.kinds["head.attention"] == "mha"
    with torch.no_grad():
        assert _max_diff(ref, fam.run(model, x)) <= ATOL


def test_ambiguous_stacks_need_the_vision_tower():
    import open_clip
    fam = next(f for f in FAMILIES if f.name == "open_clip")
    fam.build(0)   # registers the tiny config
    clip = open_clip.create_model("SB-Tiny-ViT-test", pretrained=None)
    with pytest.raises(ValueError, match="ambiguous"):
        wrap_dual_channel(clip, DualChannelConfig(layers="last_1"))


def test_copy_weights_false_and_a_init():
    fam = FAMILIES[0]
    model, x = fam.build(0), fam.images()
    with torch.no_grad():
        ref = fam.run(model, x)
    wrap_dual_channel(model, DualChannelConfig(copy_weights=False, a_init=2.0))
    with torch.no_grad():
        assert _max_diff(ref, fam.run(model, x)) > 1e-3
    (mean, lo, hi), = list(alpha_stats(model).values())[:1]
    assert mean == pytest.approx(torch.sigmoid(torch.tensor(2.0)).item())


def test_freeze_rest_false_only_freezes_wrapped_originals():
    fam = FAMILIES[0]
    model = fam.build(0)
    wrap_dual_channel(model, DualChannelConfig(freeze_rest=False))
    for n, p in model.named_parameters():
        assert p.requires_grad == (".orig." not in n), n


@pytest.mark.parametrize("name", ["timm_vit", "hf_clip", "open_clip"])
def test_share_out_proj_variant(name, tmp_path):
    """QKV-only Attn+ (frozen output projection shared): the layout that gives the paper's +25%."""
    from safetensors.torch import load_model, save_model
    fam = next(f for f in FAMILIES if f.name == name)
    model, x = fam.build(0), fam.images()
    with torch.no_grad():
        ref = fam.run(model, x)
    full = wrap_dual_channel(fam.build(0))
    rep = wrap_dual_channel(model, DualChannelConfig(share_out_proj=True))
    d = {"timm_vit": 64, "hf_clip": 32, "open_clip": 64}[name]
    assert full.params_added - rep.params_added == fam.n_blocks * (d * d + d)   # no trainable out-proj copy
    with torch.no_grad():
        assert _max_diff(ref, fam.run(model, x)) <= ATOL
    _, att = next(iter(da.dual_channel_modules(model)))
    out_name = {"timm_vit": "proj", "hf_clip": "out_proj", "open_clip": "out_proj"}[name]
    shared = att.plus.get_submodule(out_name)
    assert shared is att.orig.get_submodule(out_name) and not shared.weight.requires_grad
    assert {n for n, _ in named_dual_channel_parameters(model)} == {
        n for n, p in model.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW(dual_channel_parameters(model), lr=1e-2)
    for _ in range(2):
        opt.zero_grad()
        _loss(fam.run(model, x)).backward()
        opt.step()
    assert torch.equal(shared.weight, fam.build(0).state_dict()[f"{full.wrapped[0]}.{out_name}.weight"])
    save_model(model, str(tmp_path / "m.safetensors"))
    fresh = fam.build(1)
    wrap_dual_channel(fresh, DualChannelConfig(share_out_proj=True))
    load_model(fresh, str(tmp_path / "m.safetensors"))
    with torch.no_grad():
        assert _max_diff(fam.run(model, x), fam.run(fresh, x)) == 0.0


# -- call-signature fidelity ----------------------------------------------------------------------------------
@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_attention_signature(batch_first):
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([nn.MultiheadAttention(16, 2, batch_first=batch_first)])

    net = Net().eval()
    mha = net.blocks[0]
    q = torch.randn(2, 5, 16) if batch_first else torch.randn(5, 2, 16)
    kpm = torch.zeros(2, 5, dtype=torch.bool)
    kpm[0, -1] = True
    mask = torch.zeros(5, 5, dtype=torch.bool)
    mask[0, 1] = True
    kwargs = dict(key_padding_mask=kpm, need_weights=True, attn_mask=mask, average_attn_weights=False)
    with torch.no_grad():
        ref_out, ref_w = mha(q, q, q, **kwargs)
        wrap_dual_channel(net)
        out = net.blocks[0](q, q, q, **kwargs)
    assert isinstance(out, tuple) and len(out) == 2
    assert (out[0] - ref_out).abs().max() <= ATOL
    assert out[1].shape == ref_w.shape and (out[1] - ref_w).abs().max() <= ATOL


def test_hub_attn_bias_keyword_is_forwarded():
    fam = next(f for f in FAMILIES if f.name == "dinov2_hub_replica")
    model = fam.build(0)
    orig_attn = model.blocks[0][0].attn
    x, bias = torch.randn(2, 5, 32), torch.randn(2, 2, 5, 5)
    with torch.no_grad():
        ref = orig_attn(x, attn_bias=bias)
        wrap_dual_channel(model)
        assert (model.blocks[0][0].attn(x, attn_bias=bias) - ref).abs().max() <= ATOL


@pytest.mark.parametrize("name", ["hf_dinov2", "hf_clip"])
def test_hf_output_attentions_one_per_layer(name):
    """transformers records attentions with hooks on every Dinov2Attention/CLIPAttention instance; the wrapper
    must not double them (Attn+ is an instance of the same class), and returns the frozen channel's maps."""
    fam = next(f for f in FAMILIES if f.name == name)
    model, x = fam.build(0), fam.images()
    model.set_attn_implementation("eager")
    with torch.no_grad():
        ref = model(pixel_values=x, output_attentions=True, output_hidden_states=True)
    wrap_dual_channel(model)
    with torch.no_grad():
        out = model(pixel_values=x, output_attentions=True, output_hidden_states=True)
    assert len(out.attentions) == len(ref.attentions) == fam.n_blocks
    assert len(out.hidden_states) == len(ref.hidden_states)
    assert _max_diff(ref.attentions, out.attentions) <= ATOL
    # switching the attention backend afterwards reaches Attn+ too (HF config is shared, not copied)
    model.set_attn_implementation("sdpa")
    plus = next(m for _, m in da.dual_channel_modules(model)).plus
    assert plus.config._attn_implementation == "sdpa"


def test_weights_from_plus():
    fam = next(f for f in FAMILIES if f.name == "hf_clip")
    model, x = fam.build(0), fam.images()
    model.set_attn_implementation("eager")
    wrap_dual_channel(model, DualChannelConfig(weights_from="plus"))
    with torch.no_grad():
        out = model(pixel_values=x, output_attentions=True)
    assert len(out.attentions) == fam.n_blocks


def test_lora_on_multihead_attention_is_exact_w_plus_delta():
    """Our MHA LoRA computes W + (alpha/r) B A for both in_proj and out_proj, and never touches W
    (peft 0.21.2's LoRA MultiheadAttention would give W_out + 2 dW_out)."""
    import torch.nn.functional as F
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([nn.MultiheadAttention(16, 2, batch_first=True)])

    net = Net().eval()
    m = net.blocks[0]
    w_in, w_out = m.in_proj_weight.detach().clone(), m.out_proj.weight.detach().clone()
    rep = apply_lora(net, r=2, alpha=4)
    assert rep.targets == ["blocks.0"]
    with torch.no_grad():
        for n, p in net.named_parameters():
            if "lora_" in n:
                p.normal_(0, 0.3)
    pin = m.parametrizations.in_proj_weight[0]
    pout = m.out_proj.parametrizations.weight[0]
    d_in = pin.lora_B @ pin.lora_A * 2.0
    d_out = pout.lora_B @ pout.lora_A * 2.0
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        out = m(x, x, x, need_weights=False)[0]
        xt = x.transpose(0, 1)
        ref = F.multi_head_attention_forward(xt, xt, xt, 16, 2, w_in + d_in, m.in_proj_bias, None, None, False, 0.0,
                                             w_out + d_out, m.out_proj.bias, training=False,
                                             need_weights=False)[0].transpose(0, 1)
    assert (out - ref).abs().max() <= 1e-5
    assert torch.equal(m.parametrizations.in_proj_weight.original, w_in)
    assert torch.equal(m.out_proj.parametrizations.weight.original, w_out)
