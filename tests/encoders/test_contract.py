"""The encoder contract, checked for every adapter on small random models and checkpoints written here."""
import json
import textwrap

import pytest
import torch
from safetensors.torch import save_file

from encoders.adapters import EncoderSpecError
from encoders.checkpoint import CheckpointError
from encoders.spec import build_encoder
from harness.registry import ENCODERS


def _timm_spec(tmp_path):
    import timm
    torch.manual_seed(0)
    m = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0, depth=3, embed_dim=48,
                          num_heads=3, img_size=64)
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, tmp_path / "timm.safetensors")
    return (f"timm:vit_small_patch16_224?ckpt={tmp_path / 'timm.safetensors'}"
            "&img_size=64&depth=3&embed_dim=48&num_heads=3")


def _hf_dinov2(tmp_path):
    from transformers import Dinov2Config, Dinov2Model
    torch.manual_seed(0)
    cfg = Dinov2Config(hidden_size=48, num_hidden_layers=3, num_attention_heads=3, intermediate_size=96,
                       patch_size=8, image_size=64)
    Dinov2Model(cfg).save_pretrained(tmp_path / "dinov2")
    return f"hf:{tmp_path / 'dinov2'}"


def _hf_clip(tmp_path):
    from transformers import CLIPVisionConfig, CLIPVisionModel
    torch.manual_seed(0)
    cfg = CLIPVisionConfig(hidden_size=48, num_hidden_layers=3, num_attention_heads=3, intermediate_size=96,
                           patch_size=8, image_size=64)
    CLIPVisionModel(cfg).save_pretrained(tmp_path / "clip")
    return f"hf:{tmp_path / 'clip'}"


def _hf_siglip(tmp_path):
    from transformers import SiglipVisionConfig, SiglipVisionModel
    torch.manual_seed(0)
    cfg = SiglipVisionConfig(hidden_size=48, num_hidden_layers=3, num_attention_heads=3, intermediate_size=96,
                             patch_size=8, image_size=64)
    SiglipVisionModel(cfg).save_pretrained(tmp_path / "siglip")
    return f"hf:{tmp_path / 'siglip'}"


def _open_clip(tmp_path):
    import open_clip
    cfg = {"embed_dim": 32, "vision_cfg": {"image_size": 64, "layers": 3, "width": 48, "head_width": 16,
                                           "patch_size": 8},
           "text_cfg": {"context_length": 16, "vocab_size": 100, "width": 32, "heads": 2, "layers": 1}}
    (tmp_path / "oc").mkdir()
    (tmp_path / "oc" / "tiny-test-vit.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "oc")
    torch.manual_seed(0)
    m = open_clip.create_model("tiny-test-vit", pretrained=None)
    torch.save(m.state_dict(), tmp_path / "oc.pt")
    return f"open_clip:tiny-test-vit?ckpt={tmp_path / 'oc.pt'}"


HUBCONF = '''
import torch
from timm.models.vision_transformer import VisionTransformer

class HubViT(VisionTransformer):
    """Mimics DINOv2's hub model API: get_intermediate_layers(x, n, reshape, return_class_token, norm)."""
    def get_intermediate_layers(self, x, n=1, reshape=False, return_class_token=False, norm=True):
        idx = list(range(len(self.blocks) - n, len(self.blocks))) if isinstance(n, int) else list(n)
        outs = self.forward_intermediates(x, indices=idx, norm=norm, output_fmt="NCHW",
                                          return_prefix_tokens=True, intermediates_only=True)
        return tuple((sp, pre[:, 0]) for sp, pre in outs)

def tiny_hub_vit(pretrained=False):
    return VisionTransformer.__new__(HubViT) if False else HubViT(img_size=64, patch_size=8, embed_dim=48,
        depth=3, num_heads=3, num_classes=0, dynamic_img_size=True)
'''


def _torchhub(tmp_path):
    repo = tmp_path / "hubrepo"
    repo.mkdir()
    (repo / "hubconf.py").write_text(textwrap.dedent(HUBCONF))
    torch.manual_seed(0)
    m = torch.hub.load(str(repo), "tiny_hub_vit", source="local")
    torch.save({"model": m.state_dict()}, tmp_path / "hub.pth")   # wrapped, as many checkpoints are
    return f"torchhub:{repo}:tiny_hub_vit?ckpt={tmp_path / 'hub.pth'}&img_size=64"


MAKERS = {"timm": _timm_spec, "hf-dinov2": _hf_dinov2, "hf-clip": _hf_clip, "hf-siglip": _hf_siglip,
          "open_clip": _open_clip, "torchhub": _torchhub, "builtin": lambda p: "builtin:tiny-vit"}


def test_every_registered_scheme_is_covered():
    covered = {k.split("-")[0] for k in MAKERS}
    # boosted: tests/trainer; random: test_random_of_every_family below
    assert set(ENCODERS.names()) <= covered | {"boosted", "random"}, "add the new adapter to MAKERS"


@pytest.mark.parametrize("family", sorted(MAKERS))
def test_contract(family, tmp_path):
    spec = MAKERS[family](tmp_path)
    enc = build_encoder(spec)
    info = enc.info
    assert not any(p.requires_grad for p in enc.parameters())  # frozen
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = enc(x, layers=[0, -1])
        out2 = enc(x, layers=[0, -1])
    g = 64 // info.patch_size
    assert out.cls.shape == (2, info.embed_dim)
    assert out.patches.shape == (2, g, g, info.embed_dim)
    assert set(out.layers) == {0, -1}
    assert out.layers[0].patches.shape == (2, g, g, info.embed_dim)
    assert torch.equal(out.layers[-1].patches, out.patches)
    assert not torch.allclose(out.layers[0].patches, out.patches)
    assert torch.equal(out.cls, out2.cls)  # deterministic
    import pickle  # worker processes receive encoders pickled: the copy must give the same features
    with torch.no_grad():
        copy_out = pickle.loads(pickle.dumps(enc))(x, layers=[0, -1])
    torch.testing.assert_close(copy_out.layers[0].patches, out.layers[0].patches)
    assert info.num_layers == 3 or family == "builtin"
    assert len(info.mean) == 3 and len(info.std) == 3
    with pytest.raises(ValueError, match="out of range"):
        enc(x, layers=[info.num_layers])
    # fingerprint: stable across rebuilds, sensitive to weights
    fp = enc.fingerprint()
    assert build_encoder(spec).fingerprint() == fp
    with torch.no_grad():
        next(enc.parameters()).add_(1.0)
    enc._fingerprint = None
    assert enc.fingerprint() != fp


def test_checkpoint_that_does_not_fit_lists_keys(tmp_path):
    spec = _timm_spec(tmp_path)
    ckpt = tmp_path / "timm.safetensors"
    from safetensors.torch import load_file
    sd = load_file(ckpt)
    sd.pop("blocks.0.attn.qkv.weight")
    sd["extra.weight"] = torch.zeros(1)
    sd["norm.weight"] = torch.zeros(49)      # (a position table of another grid is resampled, not refused)
    save_file(sd, tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointError) as e:
        build_encoder(spec.replace("timm.safetensors", "bad.safetensors"))
    msg = str(e.value)
    assert "missing keys (1): blocks.0.attn.qkv.weight" in msg
    assert "unexpected keys (1): extra.weight" in msg
    assert "norm.weight (49,) vs model (48,)" in msg


def test_remap_renames_keys(tmp_path):
    spec = _timm_spec(tmp_path)
    from safetensors.torch import load_file
    sd = {f"trunk.{k}": v for k, v in load_file(tmp_path / "timm.safetensors").items()}
    save_file(sd, tmp_path / "prefixed.safetensors")
    enc = build_encoder(spec.replace("timm.safetensors", "prefixed.safetensors") + "&remap=trunk.:")
    assert enc.fingerprint() == build_encoder(spec).fingerprint()


@pytest.mark.parametrize("spec, message", [
    ("timm:vit_small_patch16_224", "never downloaded"),
    ("hf:facebook/dinov2-small", "is not a local folder"),
    ("torchhub:/nowhere:dinov2_vits14", "not a local torch.hub repo"),
    ("nosuch:thing", "unknown encoders 'nosuch'"),
    ("builtin:tiny-vitt", "unknown builtin encoder"),
])
def test_specs_that_would_download_or_are_unknown_fail_clearly(spec, message):
    with pytest.raises((EncoderSpecError, KeyError)) as e:
        build_encoder(spec)
    assert message in str(e.value)


def test_pickled_objects_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    torch.save({"model": Evil()}, tmp_path / "evil.pth")
    spec = _timm_spec(tmp_path).replace(str(tmp_path / "timm.safetensors"), str(tmp_path / "evil.pth"))
    with pytest.raises(CheckpointError, match="weights_only"):
        build_encoder(spec)


def _blocks_and_norm(enc):
    """The transformer blocks and the final norm, found from the model's own attributes (independent of
    the adapter's code path)."""
    m = enc.model
    if hasattr(m, "blocks"):                                   # timm, torch.hub
        return m.blocks, m.norm, m.norm
    if hasattr(m, "transformer") and hasattr(m, "ln_post"):    # open_clip
        return m.transformer.resblocks, m.ln_post, m.ln_post
    body = getattr(m, "vision_model", m)                       # Hugging Face
    norm = getattr(body, "post_layernorm", None) or body.layernorm
    return body.encoder.layer if hasattr(body.encoder, "layer") else body.encoder.layers, norm, norm


@pytest.mark.parametrize("family", sorted(MAKERS))
def test_norm_choice_matches_raw_block_outputs(family, tmp_path):
    """norm=False = the block's raw output (read by a hook); norm=True = the final norm applied to it."""
    enc = build_encoder(MAKERS[family](tmp_path))
    blocks, norm_patch, norm_cls = _blocks_and_norm(enc)
    captured = {}
    handles = [blocks[i].register_forward_hook(
        lambda _m, _a, out, i=i: captured.__setitem__(i, out[0] if isinstance(out, (tuple, list)) else out))
        for i in range(len(blocks))]
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    p, g = enc.info.num_prefix_tokens, 64 // enc.info.patch_size
    try:
        with torch.no_grad():
            raw = enc(x, layers=[0, 1, -1], norm=False)
            tokens = {i: captured[i].clone() for i in (0, 1, len(blocks) - 1)}
            normed = enc(x, layers=[0, 1, -1], norm=True)
            default = enc(x, layers=[0, 1, -1])
    finally:
        for h in handles:
            h.remove()
    for i, idx in ((0, 0), (1, 1), (-1, len(blocks) - 1)):
        t = tokens[idx]
        if t.shape[0] != 2:                                     # sequence-first transformer
            t = t.transpose(0, 1)
        patches = t[:, p:].reshape(2, g, g, -1)
        torch.testing.assert_close(raw.layers[i].patches, patches, rtol=1e-5, atol=1e-5)
        with torch.no_grad():
            torch.testing.assert_close(normed.layers[i].patches, norm_patch(patches), rtol=1e-5, atol=1e-5)
            if p:
                torch.testing.assert_close(raw.layers[i].cls, t[:, 0], rtol=1e-5, atol=1e-5)
                if i != -1 or family != "hf-siglip":
                    torch.testing.assert_close(normed.layers[i].cls, norm_cls(t[:, 0]), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(default.layers[i].patches, normed.layers[i].patches)
        assert not torch.allclose(raw.layers[i].patches, normed.layers[i].patches, atol=1e-3)
    # the final embedding keeps its meaning whatever the layers' norm
    torch.testing.assert_close(raw.patches, normed.patches)
    torch.testing.assert_close(raw.cls, normed.cls)
    torch.testing.assert_close(normed.layers[-1].patches, normed.patches)


def test_siglip_final_embedding_is_its_pooler_output(tmp_path):
    enc = build_encoder(_hf_siglip(tmp_path))
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = enc(x, layers=[-1], norm=False)
        ref = enc.model(pixel_values=x, interpolate_pos_encoding=True)
    torch.testing.assert_close(out.cls, ref.pooler_output, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.patches.flatten(1, 2), ref.last_hidden_state, rtol=1e-5, atol=1e-5)


def test_bad_options_and_unsafe_or_incomplete_hf_folders_name_the_culprit(tmp_path):
    with pytest.raises(EncoderSpecError, match="option 'bogus_kw' is not an argument of timm model"):
        build_encoder("timm:vit_tiny_patch16_224?random=1&bogus_kw=3")
    folder = tmp_path / "dinov2"
    _hf_dinov2(tmp_path)
    (folder / "config.json").rename(tmp_path / "config.json")
    with pytest.raises(EncoderSpecError, match=f"'{folder}' has no config.json"):
        build_encoder(f"hf:{folder}")
    (tmp_path / "config.json").rename(folder / "config.json")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    for f in folder.glob("*.safetensors"):
        f.unlink()
    torch.save({"embeddings.cls_token": Evil()}, folder / "pytorch_model.bin")
    with pytest.raises(EncoderSpecError, match="refused") as e:
        build_encoder(f"hf:{folder}")
    assert str(folder) in str(e.value)
    from harness.errors import UserError
    assert issubclass(EncoderSpecError, UserError) and issubclass(CheckpointError, UserError)


@pytest.mark.parametrize("family", sorted(MAKERS))
def test_random_of_every_family(family, tmp_path):
    """random:SPEC keeps SPEC's architecture and preprocessing, replaces every weight matrix, and is a
    deterministic function of the seed."""
    spec = MAKERS[family](tmp_path)
    base = build_encoder(spec)
    def rand(seed):   # (seed 0 would rebuild the fixtures' own weights, written from torch.manual_seed(0))
        return build_encoder(f"random:{spec}{'&' if '?' in spec else '?'}random_seed={seed}")
    rnd, again, other = rand(5), rand(5), rand(6)
    assert rnd.random_of == spec and rnd.info.spec.startswith("random:")
    for field in ("embed_dim", "num_layers", "patch_size", "num_prefix_tokens", "image_size", "mean", "std",
                  "interpolation", "family"):
        assert getattr(rnd.info, field) == getattr(base.info, field), field
    assert rnd.fingerprint() == again.fingerprint() != base.fingerprint()
    assert other.fingerprint() not in (rnd.fingerprint(), base.fingerprint())
    b_sd, r_sd = base.state_dict(), rnd.state_dict()
    assert list(b_sd) == list(r_sd)
    weights = [k for k, v in b_sd.items() if v.ndim >= 2 and v.numel() > 1 and v.float().std() > 0]
    unchanged = [k for k in weights if torch.equal(b_sd[k], r_sd[k])]
    assert weights and not unchanged
    assert not any(p.requires_grad for p in rnd.parameters())
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = rnd(x, layers=[0], norm=False), again(x, layers=[0], norm=False)
        assert torch.equal(a.layers[0].patches, b.layers[0].patches)
        assert not torch.allclose(a.patches, base(x).patches, atol=1e-3)


@pytest.mark.parametrize("family", sorted(MAKERS))
def test_final_false_stops_after_the_deepest_requested_block(family, tmp_path):
    """final=False gives the same block features (both norm choices) without the final embedding; the
    adapters that can stop early do not run the blocks after the deepest requested one."""
    enc = build_encoder(MAKERS[family](tmp_path))
    blocks, _, _ = _blocks_and_norm(enc)
    calls = []
    handles = [b.register_forward_pre_hook(lambda _m, _a, i=i: calls.append(i)) for i, b in enumerate(blocks)]
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    try:
        with torch.no_grad():
            for norm in (True, False):
                full = enc(x, layers=[0, 1], norm=norm)
                calls.clear()
                early = enc(x, layers=[0, 1], norm=norm, final=False)
                assert early.cls is None and early.patches is None
                for i in (0, 1):
                    torch.testing.assert_close(early.layers[i].patches, full.layers[i].patches)
                    torch.testing.assert_close(early.layers[i].cls, full.layers[i].cls)
                if family != "torchhub":      # DINOv2's hub get_intermediate_layers always runs every block
                    assert max(calls) == 1, f"{family}: ran blocks {sorted(set(calls))} for layers [0, 1]"
            # the hook-based stop leaves the model usable: a full forward afterwards is unchanged
            torch.testing.assert_close(enc(x, layers=[0, 1]).cls, full.cls)
    finally:
        for h in handles:
            h.remove()
