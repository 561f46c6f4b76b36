"""Checkpoints as users have them (#13.13): each family's official release layout, loaded through the
documented spec, gives the same features as the same weights through another route.

Weights come from the libraries' own model classes with tiny configs (Hugging Face folders are written by
``save_pretrained``, so they are the published layout). The torch.hub ``.pth`` layouts of DINOv2/DINOv3
are written from the same weights with the key names and shapes Meta publishes (``cls_token``,
``pos_embed`` [1, 1+N, D], ``mask_token`` [1, D], ``blocks.N.attn.qkv``, ``blocks.N.ls1.gamma``; DINOv3:
``storage_tokens``, ``rope_embed.periods``, ``blocks.N.attn.qkv.bias_mask``). When a clone of the real
repo is named by ``SPATIALBOOST_DINOV2_REPO`` / ``SPATIALBOOST_DINOV3_REPO``, the layouts written here are
also checked key-for-key against the real model class and loaded through ``torchhub:``.
"""
import os

import pytest
import torch

from encoders.adapters import EncoderSpecError
from encoders.spec import build_encoder

TOL = dict(rtol=1e-4, atol=1e-4)


def _randomise(model, seed=0):
    """Every parameter non-trivial (LayerScale, biases, norms), so a dropped or mis-mapped key shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            p.copy_(torch.randn(p.shape, generator=g) * 0.1 + (1.0 if p.ndim == 1 and "norm" in _ else 0.0))
    return model


def _features(spec, x, layers=(0, 1, -1), norm=True):
    enc = build_encoder(spec)
    with torch.no_grad():
        return enc, enc(x, layers=list(layers), norm=norm)


def _assert_same(a, b, layers=(0, 1, -1)):
    torch.testing.assert_close(a.cls, b.cls, **TOL)
    torch.testing.assert_close(a.patches, b.patches, **TOL)
    for i in layers:
        torch.testing.assert_close(a.layers[i].patches, b.layers[i].patches, **TOL)
        torch.testing.assert_close(a.layers[i].cls, b.layers[i].cls, **TOL)


# ----------------------------------------------------------------------------------------------- DINOv2
def _dinov2_hf(tmp_path, registers=0):
    from transformers import Dinov2Config, Dinov2Model, Dinov2WithRegistersConfig, Dinov2WithRegistersModel
    kw = dict(hidden_size=48, num_hidden_layers=3, num_attention_heads=3, intermediate_size=192, patch_size=14,
              image_size=70)
    model = (Dinov2WithRegistersModel(Dinov2WithRegistersConfig(num_register_tokens=registers, **kw)) if registers
             else Dinov2Model(Dinov2Config(**kw)))
    _randomise(model)
    model.save_pretrained(tmp_path / "hf-dinov2")
    return model


def _hf_vit_to_meta(sd, depth, prefix="encoder.layer.", registers=None):
    """HF (in-memory names) -> Meta hub layout: the mapping of transformers' DINOv2 conversion script, reversed."""
    e = "embeddings."
    out = {"cls_token": sd[e + "cls_token"], "pos_embed": sd[e + "position_embeddings"],
           "mask_token": sd[e + "mask_token"].reshape(1, -1),
           "patch_embed.proj.weight": sd[e + "patch_embeddings.projection.weight"],
           "patch_embed.proj.bias": sd[e + "patch_embeddings.projection.bias"],
           "norm.weight": sd["layernorm.weight"], "norm.bias": sd["layernorm.bias"]}
    if registers is not None:
        out["register_tokens"] = sd[e + "register_tokens"]
    for i in range(depth):
        p, b = f"{prefix}{i}.", f"blocks.{i}."
        out[b + "attn.qkv.weight"] = torch.cat([sd[p + f"attention.{t}_proj.weight"] for t in "qkv"])
        out[b + "attn.qkv.bias"] = torch.cat([sd[p + f"attention.{t}_proj.bias"] for t in "qkv"])
        out[b + "attn.proj.weight"] = sd[p + "attention.o_proj.weight"]
        out[b + "attn.proj.bias"] = sd[p + "attention.o_proj.bias"]
        for j in (1, 2):
            for w in ("weight", "bias"):
                out[b + f"norm{j}.{w}"] = sd[p + f"norm{j}.{w}"]
                out[b + f"mlp.fc{j}.{w}"] = sd[p + f"mlp.fc{j}.{w}"]
            out[b + f"ls{j}.gamma"] = sd[p + f"layer_scale{j}.lambda1"]
    return {k: v.clone().contiguous() for k, v in out.items()}


DINOV2_TIMM = "timm:vit_small_patch14_dinov2?ckpt={ckpt}&depth=3&embed_dim=48&num_heads=3"


def test_dinov2_meta_pth_loads_with_the_readme_spec_and_matches_hf(tmp_path):
    model = _dinov2_hf(tmp_path)
    meta = _hf_vit_to_meta(model.state_dict(), 3)
    assert meta["pos_embed"].shape == (1, 1 + 25, 48) and meta["mask_token"].shape == (1, 48)
    torch.save(meta, tmp_path / "dinov2_vits14_pretrain.pth")
    x = torch.randn(2, 3, 70, 70, generator=torch.Generator().manual_seed(0))
    spec = DINOV2_TIMM.format(ckpt=tmp_path / "dinov2_vits14_pretrain.pth") + "&img_size=70"
    _, timm_out = _features(spec, x)
    _, hf_out = _features(f"hf:{tmp_path / 'hf-dinov2'}?img_size=70", x)
    _assert_same(timm_out, hf_out)
    _, timm_raw = _features(spec, x, norm=False)
    _, hf_raw = _features(f"hf:{tmp_path / 'hf-dinov2'}?img_size=70", x, norm=False)
    _assert_same(timm_raw, hf_raw)
    # safetensors of the same layout too
    from safetensors.torch import save_file
    save_file(meta, tmp_path / "dinov2.safetensors")
    _, st_out = _features(spec.replace("dinov2_vits14_pretrain.pth", "dinov2.safetensors"), x)
    _assert_same(st_out, hf_out)


def test_dinov2_meta_pth_at_another_resolution_resamples_the_position_table(tmp_path):
    model = _dinov2_hf(tmp_path)
    torch.save(_hf_vit_to_meta(model.state_dict(), 3), tmp_path / "d.pth")
    enc = build_encoder(DINOV2_TIMM.format(ckpt=tmp_path / "d.pth") + "&img_size=42")
    assert enc.model.pos_embed.shape == (1, 1 + 9, 48) and enc.info.image_size == (42, 42)
    ref = build_encoder(DINOV2_TIMM.format(ckpt=tmp_path / "d.pth") + "&img_size=70")
    for k, v in ref.model.state_dict().items():   # everything else is the checkpoint's
        if k != "pos_embed":
            assert torch.equal(v, enc.model.state_dict()[k]), k
    with torch.no_grad():
        out = enc(torch.randn(1, 3, 42, 42), layers=[0])
    assert out.patches.shape == (1, 3, 3, 48)


def test_dinov2_with_registers_meta_layout(tmp_path):
    model = _dinov2_hf(tmp_path, registers=4)
    meta = _hf_vit_to_meta(model.state_dict(), 3, registers=4)
    torch.save(meta, tmp_path / "dinov2_vits14_reg4_pretrain.pth")
    x = torch.randn(2, 3, 70, 70, generator=torch.Generator().manual_seed(0))
    spec = ("timm:vit_small_patch14_reg4_dinov2?ckpt={}&depth=3&embed_dim=48&num_heads=3&img_size=70"
            .format(tmp_path / "dinov2_vits14_reg4_pretrain.pth"))
    enc, timm_out = _features(spec, x)
    assert enc.info.num_prefix_tokens == 5
    hf_enc, hf_out = _features(f"hf:{tmp_path / 'hf-dinov2'}?img_size=70", x)
    assert hf_enc.info.num_prefix_tokens == 5
    _assert_same(timm_out, hf_out)


# ----------------------------------------------------------------------------------------------- DINOv3
def _dinov3_hf(tmp_path):
    from transformers import DINOv3ViTConfig, DINOv3ViTModel
    cfg = DINOv3ViTConfig(hidden_size=48, num_hidden_layers=3, num_attention_heads=3, intermediate_size=192,
                          patch_size=16, image_size=64, num_register_tokens=4, key_bias=False)
    model = _randomise(DINOv3ViTModel(cfg))
    model.save_pretrained(tmp_path / "hf-dinov3")
    return model


def _dinov3_hf_to_meta(sd, depth, heads):
    """HF DINOv3ViTModel -> the dinov3 repo's ``.pth`` layout (``dinov3_vits16_pretrain_lvd1689m-*.pth``)."""
    e = "embeddings."
    d = sd[e + "cls_token"].shape[-1]
    head_dim = d // heads
    out = {"cls_token": sd[e + "cls_token"], "storage_tokens": sd[e + "register_tokens"],
           "mask_token": sd[e + "mask_token"].reshape(1, d),
           "patch_embed.proj.weight": sd[e + "patch_embeddings.weight"],
           "patch_embed.proj.bias": sd[e + "patch_embeddings.bias"],
           # RoPE periods: a buffer the model recomputes; published with the checkpoint
           "rope_embed.periods": 100.0 ** (2 * torch.arange(head_dim // 4) / (head_dim // 2)),
           "norm.weight": sd["norm.weight"], "norm.bias": sd["norm.bias"]}
    for i in range(depth):
        p, b = f"model.layer.{i}.", f"blocks.{i}."
        out[b + "attn.qkv.weight"] = torch.cat([sd[p + f"attention.{t}_proj.weight"] for t in "qkv"])
        out[b + "attn.qkv.bias"] = torch.cat([sd[p + "attention.q_proj.bias"], torch.zeros(d),
                                              sd[p + "attention.v_proj.bias"]])
        out[b + "attn.qkv.bias_mask"] = torch.cat([torch.ones(d), torch.zeros(d), torch.ones(d)])
        out[b + "attn.proj.weight"] = sd[p + "attention.o_proj.weight"]
        out[b + "attn.proj.bias"] = sd[p + "attention.o_proj.bias"]
        for j, (hf_mlp) in ((1, "up_proj"), (2, "down_proj")):
            for w in ("weight", "bias"):
                out[b + f"norm{j}.{w}"] = sd[p + f"norm{j}.{w}"]
                out[b + f"mlp.fc{j}.{w}"] = sd[p + f"mlp.{hf_mlp}.{w}"]
            out[b + f"ls{j}.gamma"] = sd[p + f"layer_scale{j}.lambda1"]
    return {k: v.clone().contiguous() for k, v in out.items()}


def test_dinov3_meta_pth_through_timm_matches_hf(tmp_path):
    model = _dinov3_hf(tmp_path)
    torch.save(_dinov3_hf_to_meta(model.state_dict(), 3, 3), tmp_path / "dinov3_vits16_pretrain.pth")
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    spec = ("timm:vit_small_patch16_dinov3_qkvb?ckpt={}&depth=3&embed_dim=48&num_heads=3&img_size=64"
            .format(tmp_path / "dinov3_vits16_pretrain.pth"))
    enc, timm_out = _features(spec, x)
    hf_enc, hf_out = _features(f"hf:{tmp_path / 'hf-dinov3'}", x)
    assert enc.info.num_prefix_tokens == hf_enc.info.num_prefix_tokens == 5
    _assert_same(timm_out, hf_out)
    _assert_same(_features(spec, x, norm=False)[1], _features(f"hf:{tmp_path / 'hf-dinov3'}", x, norm=False)[1])
    # timm's bias-free variant would drop the (non-zero) q/v biases: refused, naming the right variant
    from encoders.checkpoint import CheckpointError
    with pytest.raises(CheckpointError, match="_qkvb"):
        build_encoder(spec.replace("vit_small_patch16_dinov3_qkvb", "vit_small_patch16_dinov3"))


# ------------------------------------------------------------------------- the real hub repos, when present
TINY_HUBCONF = {
    "dinov2": """
import sys
sys.path.insert(0, {repo!r})
from functools import partial
from dinov2.layers import MemEffAttention, NestedTensorBlock as Block
from dinov2.models.vision_transformer import DinoVisionTransformer

def tiny(pretrained=False):  # hub's dinov2_vits14 (vit_small + _make_dinov2_model defaults), 3 blocks of 48
    return DinoVisionTransformer(img_size=518, patch_size=14, init_values=1.0, ffn_layer="mlp", block_chunks=0,
                                 num_register_tokens=0, interpolate_antialias=False, interpolate_offset=0.1,
                                 embed_dim=48, depth=3, num_heads=3, mlp_ratio=4,
                                 block_fn=partial(Block, attn_class=MemEffAttention))
""",
    "dinov3": """
import sys
sys.path.insert(0, {repo!r})
from dinov3.hub.backbones import _make_dinov3_vit

def tiny(pretrained=False):  # hub's dinov3_vits16 arguments, 3 blocks of 48
    return _make_dinov3_vit(img_size=224, patch_size=16, in_chans=3, pos_embed_rope_base=100,
                            pos_embed_rope_normalize_coords="separate", pos_embed_rope_rescale_coords=2,
                            pos_embed_rope_dtype="fp32", embed_dim=48, depth=3, num_heads=3, ffn_ratio=4,
                            qkv_bias=True, drop_path_rate=0.0, layerscale_init=1.0e-05, norm_layer="layernormbf16",
                            ffn_layer="mlp", ffn_bias=True, proj_bias=True, n_storage_tokens=4, mask_k_bias=True,
                            pretrained=False, compact_arch_name="vits")
"""}


@pytest.mark.parametrize("which", ["dinov2", "dinov3"])
def test_layouts_written_here_are_the_real_repos_layouts(which, tmp_path):
    """Runs against a local clone named by SPATIALBOOST_DINOV2_REPO / SPATIALBOOST_DINOV3_REPO (no download):
    the layouts written above are key-for-key the real model's, and ``torchhub:`` gives the same features."""
    repo = os.environ.get(f"SPATIALBOOST_{which.upper()}_REPO")
    if not repo:
        pytest.skip(f"SPATIALBOOST_{which.upper()}_REPO is not set (a local clone of facebookresearch/{which})")
    if which == "dinov2":
        from transformers import Dinov2Config, Dinov2Model
        model = _randomise(Dinov2Model(Dinov2Config(hidden_size=48, num_hidden_layers=3, num_attention_heads=3,
                                                    intermediate_size=192, patch_size=14, image_size=518)))
        model.save_pretrained(tmp_path / "hf")
        meta = _hf_vit_to_meta(model.state_dict(), 3)
        size = 518
        timm_spec = DINOV2_TIMM + "&img_size=518"
    else:
        model = _dinov3_hf(tmp_path)
        (tmp_path / "hf-dinov3").rename(tmp_path / "hf")
        meta = _dinov3_hf_to_meta(model.state_dict(), 3, 3)
        size = 64
        timm_spec = "timm:vit_small_patch16_dinov3_qkvb?ckpt={ckpt}&depth=3&embed_dim=48&num_heads=3&img_size=64"
    hub = tmp_path / "hub"
    hub.mkdir()
    (hub / "hubconf.py").write_text(TINY_HUBCONF[which].format(repo=repo))
    own = torch.hub.load(str(hub), "tiny", source="local").state_dict()
    assert {k: tuple(v.shape) for k, v in meta.items()} == {k: tuple(v.shape) for k, v in own.items()}
    torch.save(meta, tmp_path / "w.pth")
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    hub_spec = f"torchhub:{hub}:tiny?ckpt={tmp_path / 'w.pth'}&img_size={size}"
    _, hub_out = _features(hub_spec, x)
    _assert_same(hub_out, _features(timm_spec.format(ckpt=tmp_path / "w.pth"), x)[1])
    _assert_same(hub_out, _features(f"hf:{tmp_path / 'hf'}?img_size={size}", x)[1])
    _assert_same(_features(hub_spec, x, norm=False)[1],
                 _features(f"hf:{tmp_path / 'hf'}?img_size={size}", x, norm=False)[1])


# ------------------------------------------------------------------------------------------------- CLIP
def _open_clip_tiny(tmp_path, name, cfg):
    import json

    import open_clip
    folder = tmp_path / f"oc-{name}"
    folder.mkdir()
    (folder / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(folder)
    return _randomise(open_clip.create_model(name, pretrained=None))


def _openai_to_hf_clip(sd, depth):
    """OpenAI / open_clip CLIP layout -> transformers CLIPModel (the mapping of its conversion script)."""
    v, o = "visual.", {}
    o["vision_model.embeddings.class_embedding"] = sd[v + "class_embedding"]
    o["vision_model.embeddings.patch_embedding.weight"] = sd[v + "conv1.weight"]
    o["vision_model.embeddings.position_embedding.weight"] = sd[v + "positional_embedding"]
    for hf, oc in (("pre_layrnorm", "ln_pre"), ("post_layernorm", "ln_post")):
        for w in ("weight", "bias"):
            o[f"vision_model.{hf}.{w}"] = sd[f"{v}{oc}.{w}"]
    o["visual_projection.weight"] = sd[v + "proj"].t()
    for i in range(depth):
        p, b = f"{v}transformer.resblocks.{i}.", f"vision_model.encoder.layers.{i}."
        for t, w, bias in zip("qkv", sd[p + "attn.in_proj_weight"].chunk(3), sd[p + "attn.in_proj_bias"].chunk(3)):
            o[b + f"self_attn.{t}_proj.weight"], o[b + f"self_attn.{t}_proj.bias"] = w, bias
        for hf, oc in (("self_attn.out_proj", "attn.out_proj"), ("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"),
                       ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")):
            for w in ("weight", "bias"):
                o[f"{b}{hf}.{w}"] = sd[f"{p}{oc}.{w}"]
    return {k: t.clone().contiguous() for k, t in o.items()}


def test_clip_openai_layout_through_open_clip_timm_and_hf(tmp_path):
    from transformers import CLIPConfig, CLIPModel
    cfg = {"embed_dim": 32, "quick_gelu": True,
           "vision_cfg": {"image_size": 64, "layers": 3, "width": 48, "head_width": 16, "patch_size": 8},
           "text_cfg": {"context_length": 16, "vocab_size": 100, "width": 32, "heads": 2, "layers": 1}}
    oc = _open_clip_tiny(tmp_path, "tiny-clip-qg", cfg)
    torch.save(oc.state_dict(), tmp_path / "open_clip_pytorch_model.bin")   # full model: text tower too
    hf = CLIPModel(CLIPConfig(
        vision_config=dict(hidden_size=48, num_hidden_layers=3, num_attention_heads=3, intermediate_size=192,
                           patch_size=8, image_size=64, hidden_act="quick_gelu"),
        text_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                         vocab_size=100, max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1),
        projection_dim=32))
    missing, _ = hf.load_state_dict(_openai_to_hf_clip(oc.state_dict(), 3), strict=False)
    assert not [k for k in missing if k.startswith("vision_model.")]
    hf.save_pretrained(tmp_path / "hf-clip")
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    ckpt = tmp_path / "open_clip_pytorch_model.bin"
    oc_enc, oc_out = _features(f"open_clip:tiny-clip-qg?ckpt={ckpt}", x)
    timm_enc, timm_out = _features(f"timm:vit_base_patch16_clip_quickgelu_224?ckpt={ckpt}&depth=3&embed_dim=48"
                                   "&num_heads=3&img_size=64&patch_size=8", x)
    hf_enc, hf_out = _features(f"hf:{tmp_path / 'hf-clip'}", x)
    _assert_same(oc_out, hf_out)
    _assert_same(timm_out, hf_out)
    for norm in (False,):
        _assert_same(_features(f"open_clip:tiny-clip-qg?ckpt={ckpt}", x, norm=norm)[1],
                     _features(f"hf:{tmp_path / 'hf-clip'}", x, norm=norm)[1])
    for enc in (oc_enc, timm_enc):
        assert enc.info.mean == pytest.approx(hf_enc.info.mean) and enc.info.std == pytest.approx(hf_enc.info.std)


# ----------------------------------------------------------------------------------------------- SigLIP
def _register_tiny_siglip():
    """A timm name for a 3-block SigLIP tower, so open_clip's config (which names a timm model) can be tiny."""
    import timm
    from timm.models import register_model
    name = "vit_siglip_tiny_layout_test"
    if name not in timm.list_models(name):
        def vit_siglip_tiny_layout_test(pretrained=False, **kw):
            return timm.create_model("vit_base_patch16_siglip_224", pretrained=False,
                                     **{**dict(depth=3, embed_dim=48, num_heads=3, img_size=64, patch_size=8,
                                               act_layer="gelu_tanh"), **kw})
        vit_siglip_tiny_layout_test.__module__ = __name__
        register_model(vit_siglip_tiny_layout_test)
    return name


def _timm_siglip_to_hf(sd, depth, d, prefix="visual.trunk."):
    """open_clip/timm SigLIP tower -> transformers SiglipModel vision names (MAP head included)."""
    g = lambda k: sd[prefix + k]  # noqa: E731
    v, o = "vision_model.", {}
    o[v + "embeddings.patch_embedding.weight"] = g("patch_embed.proj.weight")
    o[v + "embeddings.patch_embedding.bias"] = g("patch_embed.proj.bias")
    o[v + "embeddings.position_embedding.weight"] = g("pos_embed")[0]
    for w in ("weight", "bias"):
        o[f"{v}post_layernorm.{w}"] = g(f"norm.{w}")
        for i in range(depth):
            b, t = f"{v}encoder.layers.{i}.", f"blocks.{i}."
            for j, (q, k, vv) in enumerate([g(f"{t}attn.qkv.{w}").chunk(3)]):
                o[b + f"self_attn.q_proj.{w}"], o[b + f"self_attn.k_proj.{w}"], o[b + f"self_attn.v_proj.{w}"] = q, k, vv
            for hf, tm in (("self_attn.out_proj", "attn.proj"), ("layer_norm1", "norm1"), ("layer_norm2", "norm2"),
                           ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")):
                o[f"{b}{hf}.{w}"] = g(f"{t}{tm}.{w}")
        h = v + "head."
        o[f"{h}attention.in_proj_{w}"] = torch.cat([g(f"attn_pool.q.{w}"), g(f"attn_pool.kv.{w}")])
        o[f"{h}attention.out_proj.{w}"] = g(f"attn_pool.proj.{w}")
        o[f"{h}layernorm.{w}"] = g(f"attn_pool.norm.{w}")
        o[f"{h}mlp.fc1.{w}"] = g(f"attn_pool.mlp.fc1.{w}")
        o[f"{h}mlp.fc2.{w}"] = g(f"attn_pool.mlp.fc2.{w}")
    o[h + "probe"] = g("attn_pool.latent")
    return {k: t.clone().contiguous() for k, t in o.items()}


def test_siglip_open_clip_layout_through_open_clip_timm_and_hf(tmp_path):
    from safetensors.torch import save_file
    from transformers import SiglipConfig, SiglipModel
    name = _register_tiny_siglip()
    cfg = {"embed_dim": 48, "init_logit_bias": -10, "custom_text": True,
           "vision_cfg": {"image_size": 64, "timm_model_name": name, "timm_model_pretrained": False,
                          "timm_pool": "map", "timm_proj": "none"},
           "text_cfg": {"context_length": 16, "vocab_size": 100, "width": 48, "heads": 3, "layers": 1,
                        "no_causal_mask": True, "proj_bias": True, "pool_type": "last", "norm_kwargs": {"eps": 1e-6}}}
    oc = _open_clip_tiny(tmp_path, "tiny-siglip", cfg)
    sd = {k: v.contiguous() for k, v in oc.state_dict().items()}
    assert "visual.trunk.attn_pool.latent" in sd and "logit_bias" in sd
    save_file(sd, tmp_path / "open_clip_model.safetensors")
    hf = SiglipModel(SiglipConfig(
        vision_config=dict(hidden_size=48, num_hidden_layers=3, num_attention_heads=3, intermediate_size=192,
                           patch_size=8, image_size=64),
        text_config=dict(hidden_size=48, num_hidden_layers=1, num_attention_heads=3, intermediate_size=96,
                         vocab_size=100, max_position_embeddings=16)))
    missing, _ = hf.load_state_dict(_timm_siglip_to_hf(sd, 3, 48), strict=False)
    assert not [k for k in missing if k.startswith("vision_model.")]
    hf.save_pretrained(tmp_path / "hf-siglip")
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    ckpt = tmp_path / "open_clip_model.safetensors"
    oc_enc, oc_out = _features(f"open_clip:tiny-siglip?ckpt={ckpt}", x)
    timm_enc, timm_out = _features(f"timm:{name}?ckpt={ckpt}", x)
    hf_enc, hf_out = _features(f"hf:{tmp_path / 'hf-siglip'}", x)
    assert oc_enc.info.num_prefix_tokens == hf_enc.info.num_prefix_tokens == 0
    _assert_same(oc_out, hf_out)           # cls = the MAP head's pooled embedding on every route
    _assert_same(timm_out, hf_out)
    _assert_same(_features(f"open_clip:tiny-siglip?ckpt={ckpt}", x, norm=False)[1],
                 _features(f"hf:{tmp_path / 'hf-siglip'}", x, norm=False)[1])
    for enc in (oc_enc, timm_enc, hf_enc):
        assert enc.info.mean == pytest.approx((0.5,) * 3) and enc.info.std == pytest.approx((0.5,) * 3)


# ------------------------------------------------------------------------------ InternViT and Qwen-VL towers
_TEXT = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
             intermediate_size=64, vocab_size=200)


def test_internvl_folder_gives_its_vision_tower(tmp_path):
    """An HF-native InternVL checkpoint (``OpenGVLab/InternVL3-*-hf`` layout): the spec reads only the
    vision tower's tensors and matches the full model's own tower."""
    from transformers import InternVLConfig, InternVLForConditionalGeneration
    cfg = InternVLConfig(vision_config=dict(hidden_size=48, num_hidden_layers=3, num_attention_heads=3,
                                            intermediate_size=96, patch_size=[8, 8], image_size=[64, 64]),
                         text_config=dict(model_type="qwen2", **_TEXT), image_token_id=199)
    full = _randomise(InternVLForConditionalGeneration(cfg))
    full.save_pretrained(tmp_path / "internvl")
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    enc, out = _features(f"hf:{tmp_path / 'internvl'}", x)
    assert enc.info.num_layers == 3 and enc.info.num_prefix_tokens == 1 and enc.info.patch_size == 8
    assert sum(p.numel() for p in enc.parameters()) == sum(p.numel() for p in full.model.vision_tower.parameters())
    with torch.no_grad():
        ref = full.model.vision_tower(pixel_values=x, output_hidden_states=True)
    torch.testing.assert_close(out.cls, ref.last_hidden_state[:, 0], **TOL)
    torch.testing.assert_close(out.patches.flatten(1, 2), ref.last_hidden_state[:, 1:], **TOL)
    torch.testing.assert_close(out.layers[1].patches.flatten(1, 2), ref.hidden_states[2][:, 1:], **TOL)


@pytest.mark.parametrize("kind", ["qwen2_vl", "qwen2_5_vl"])
def test_qwen_vl_folder_gives_its_vision_tower(kind, tmp_path):
    """Qwen2-VL / Qwen2.5-VL folders: the tower's patches on the h x w grid; the merger applied to our
    normed patches reproduces the tower's own merged output, and our patch layout is the processor's."""
    import numpy as np
    from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLConfig,
                              Qwen2VLForConditionalGeneration, Qwen2VLImageProcessor)
    text = dict(model_type=f"{kind}_text", rope_scaling={"type": "mrope", "mrope_section": [2, 2, 4]}, **_TEXT)
    if kind == "qwen2_vl":
        vision = dict(depth=3, embed_dim=48, hidden_size=32, num_heads=3, patch_size=14, spatial_merge_size=2,
                      temporal_patch_size=2, mlp_ratio=2)
        full = Qwen2VLForConditionalGeneration(Qwen2VLConfig(vision_config=vision, text_config=text,
                                                             image_token_id=199, video_token_id=198))
    else:
        vision = dict(depth=3, hidden_size=48, out_hidden_size=32, num_heads=3, intermediate_size=96,
                      patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                      fullatt_block_indexes=[2])
        full = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(vision_config=vision, text_config=text,
                                                                   image_token_id=199, video_token_id=198))
    _randomise(full)
    full.save_pretrained(tmp_path / kind)
    size = 112
    enc = build_encoder(f"hf:{tmp_path / kind}?img_size={size}")
    assert enc.info.num_layers == 3 and enc.info.patch_size == 14 and enc.info.num_prefix_tokens == 0
    img = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    proc = Qwen2VLImageProcessor(do_resize=False, image_mean=list(enc.info.mean), image_std=list(enc.info.std),
                                 patch_size=14, merge_size=2, temporal_patch_size=2)
    ref_in = proc(images=[img], return_tensors="pt")
    x = ((torch.from_numpy(img).permute(2, 0, 1).float() / 255 - torch.tensor(enc.info.mean)[:, None, None])
         / torch.tensor(enc.info.std)[:, None, None])[None]
    patches, grid = enc.patchify(x)
    torch.testing.assert_close(patches, ref_in["pixel_values"], **TOL)
    assert grid.tolist() == ref_in["image_grid_thw"].tolist()
    with torch.no_grad():
        out = enc(x, layers=[0, -1])
        ref = full.model.visual(ref_in["pixel_values"], grid_thw=ref_in["image_grid_thw"])
        g = size // 14
        groups = out.patches.reshape(1, g // 2, 2, g // 2, 2, -1).permute(0, 1, 3, 2, 4, 5).reshape(-1, 4 * 48)
        merged = full.model.visual.merger.mlp(groups)
    torch.testing.assert_close(merged, ref.pooler_output, **TOL)
    assert out.patches.shape == (1, g, g, 48)
    with torch.no_grad():   # norm=False: the raw block output, whose ln_q is the normed one
        raw = enc(x, layers=[0, -1], norm=False)
        torch.testing.assert_close(full.model.visual.merger.ln_q(raw.layers[-1].patches), out.patches, **TOL)
        torch.testing.assert_close(full.model.visual.merger.ln_q(raw.layers[0].patches), out.layers[0].patches,
                                   **TOL)
    assert not torch.allclose(raw.layers[-1].patches, out.patches, atol=1e-3)
    rnd = build_encoder(f"random:hf:{tmp_path / kind}?img_size={size}&random_seed=3")
    assert rnd.info.mean == enc.info.mean and type(rnd) is type(enc)
    with torch.no_grad():
        assert not torch.allclose(rnd(x).patches, out.patches, atol=1e-3)
    with pytest.raises(ValueError, match="multiples of 28"):
        enc(torch.zeros(1, 3, 42, 42))


REMOTE_CONFIG = '''
from transformers import PretrainedConfig

class InternVisionConfig(PretrainedConfig):
    model_type = "intern_vit_6b"
    def __init__(self, hidden_size=48, num_hidden_layers=2, num_attention_heads=3, intermediate_size=96,
                 patch_size=8, image_size=64, **kw):
        super().__init__(**kw)
        self.hidden_size, self.num_hidden_layers, self.num_attention_heads = hidden_size, num_hidden_layers, num_attention_heads
        self.intermediate_size, self.patch_size, self.image_size = intermediate_size, patch_size, image_size
'''
REMOTE_MODEL = '''
import torch
from torch import nn
from transformers import PreTrainedModel
from .configuration_intern_vit import InternVisionConfig

class InternVisionEmbeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.class_embedding = nn.Parameter(torch.randn(1, 1, c.hidden_size))
        self.patch_embedding = nn.Conv2d(3, c.hidden_size, c.patch_size, c.patch_size)
        self.position_embedding = nn.Parameter(torch.randn(1, 1 + (c.image_size // c.patch_size) ** 2, c.hidden_size))
    def forward(self, x):
        x = self.patch_embedding(x).flatten(2).transpose(1, 2)
        return torch.cat([self.class_embedding.expand(len(x), -1, -1), x], 1) + self.position_embedding

class InternVisionEncoderLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(c.hidden_size), nn.LayerNorm(c.hidden_size)
        self.attn = nn.MultiheadAttention(c.hidden_size, c.num_attention_heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(c.hidden_size, c.intermediate_size), nn.GELU(), nn.Linear(c.intermediate_size, c.hidden_size))
        self.ls1, self.ls2 = nn.Parameter(torch.ones(c.hidden_size)), nn.Parameter(torch.ones(c.hidden_size))
    def forward(self, x):
        h = self.norm1(x)
        x = x + self.ls1 * self.attn(h, h, h)[0]
        return x + self.ls2 * self.mlp(self.norm2(x))

class InternVisionEncoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.layers = nn.ModuleList([InternVisionEncoderLayer(c) for _ in range(c.num_hidden_layers)])
    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x

class InternVisionModel(PreTrainedModel):
    config_class = InternVisionConfig
    def __init__(self, config):
        super().__init__(config)
        self.embeddings, self.encoder = InternVisionEmbeddings(config), InternVisionEncoder(config)
        self.post_init()
    def _init_weights(self, module):
        pass
    def forward(self, pixel_values=None, **kw):
        return (self.encoder(self.embeddings(pixel_values)),)
'''


def test_remote_code_folders_are_refused_unless_trusted_and_local(tmp_path):
    """InternViT's original folders (``OpenGVLab/InternViT-300M-448px``) carry their own modeling code.
    (The code written here stands in for it: a tiny model with InternViT's module names.)"""
    import json
    folder = tmp_path / "InternViT-tiny"
    folder.mkdir()
    (folder / "configuration_intern_vit.py").write_text(REMOTE_CONFIG)
    (folder / "modeling_intern_vit.py").write_text(REMOTE_MODEL)
    ns: dict = {}
    exec(compile(REMOTE_CONFIG, "configuration_intern_vit", "exec"), ns)  # noqa: S102 - our own test code
    exec(compile(REMOTE_MODEL.replace("from .configuration_intern_vit import InternVisionConfig", ""),  # noqa: S102
                 "modeling_intern_vit", "exec"), ns)
    torch.manual_seed(0)
    model = ns["InternVisionModel"](ns["InternVisionConfig"]())
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "model.safetensors")
    cfg = model.config.to_dict()
    cfg["auto_map"] = {"AutoConfig": "configuration_intern_vit.InternVisionConfig",
                       "AutoModel": "modeling_intern_vit.InternVisionModel"}
    cfg["architectures"] = ["InternVisionModel"]
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(EncoderSpecError, match=r"trust_remote_code=1") as e:
        build_encoder(f"hf:{folder}")
    assert "intern_vit_6b" in str(e.value) and "modeling_intern_vit.py" in str(e.value)
    enc = build_encoder(f"hf:{folder}?trust_remote_code=1")
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = enc(x, layers=[0, -1])
        ref = model(pixel_values=x)[0]
    torch.testing.assert_close(out.cls, ref[:, 0], **TOL)         # no final norm in this tower
    torch.testing.assert_close(out.patches.flatten(1, 2), ref[:, 1:], **TOL)
    import pickle
    with torch.no_grad():
        torch.testing.assert_close(pickle.loads(pickle.dumps(enc))(x).cls, out.cls)
    # code that would come from the Hub, or files missing from the folder: refused even when trusted
    cfg["auto_map"]["AutoModel"] = "OpenGVLab/InternViT-300M-448px--modeling_intern_vit.InternVisionModel"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(EncoderSpecError, match="code is never downloaded"):
        build_encoder(f"hf:{folder}?trust_remote_code=1")
    cfg["auto_map"]["AutoModel"] = "modeling_intern_vit.InternVisionModel"
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "modeling_intern_vit.py").unlink()
    with pytest.raises(EncoderSpecError, match="modeling_intern_vit.py"):
        build_encoder(f"hf:{folder}?trust_remote_code=1")


def test_siglip2_naflex_folder(tmp_path):
    """SigLIP2 NaFlex (``google/siglip2-*-naflex``, model type ``siglip2``; the fixed-resolution SigLIP2
    releases are ``siglip`` folders, covered above): patches as its processor writes them, pooled = MAP head."""
    import numpy as np
    from transformers import Siglip2Config, Siglip2ImageProcessor, Siglip2Model
    full = _randomise(Siglip2Model(Siglip2Config(
        vision_config=dict(hidden_size=48, num_hidden_layers=3, num_attention_heads=3, intermediate_size=96,
                           patch_size=8, num_patches=64),
        text_config=dict(hidden_size=48, num_hidden_layers=1, num_attention_heads=3, intermediate_size=96,
                         vocab_size=100, max_position_embeddings=16))))
    full.save_pretrained(tmp_path / "siglip2")
    enc = build_encoder(f"hf:{tmp_path / 'siglip2'}")
    assert enc.info.image_size == (64, 64) and enc.info.num_prefix_tokens == 0
    img = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    proc = Siglip2ImageProcessor(patch_size=8, max_num_patches=64)
    ref_in = proc(images=[img], return_tensors="pt")
    assert ref_in["spatial_shapes"].tolist() == [[8, 8]] and bool(ref_in["pixel_attention_mask"].all())
    x = (torch.from_numpy(img).permute(2, 0, 1).float() / 255 - 0.5) / 0.5
    with torch.no_grad():
        ours = enc._inputs(x[None])
        torch.testing.assert_close(ours["pixel_values"], ref_in["pixel_values"], **TOL)
        out = enc(x[None], layers=[0, -1])
        ref = full.vision_model(**ref_in)
    torch.testing.assert_close(out.cls, ref.pooler_output, **TOL)
    torch.testing.assert_close(out.patches.flatten(1, 2), ref.last_hidden_state, **TOL)
