"""The adapters on a GPU (skipped where there is none): same features as on the CPU in float32, close
ones under bf16 autocast, for both norm choices; the input layouts built on the images' device."""
import pytest
import torch

from encoders.spec import build_encoder

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _specs(tmp_path):
    from transformers import (Dinov2Config, Dinov2Model, DINOv3ViTConfig, DINOv3ViTModel, Qwen2_5_VLConfig,
                              Qwen2_5_VLForConditionalGeneration, Siglip2Config, Siglip2Model)
    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(hidden_size=48, num_hidden_layers=3, num_attention_heads=3, intermediate_size=96,
                             patch_size=8, image_size=64)).save_pretrained(tmp_path / "d2")
    DINOv3ViTModel(DINOv3ViTConfig(hidden_size=48, num_hidden_layers=3, num_attention_heads=3,
                                   intermediate_size=96, patch_size=16, image_size=64)).save_pretrained(tmp_path / "d3")
    Siglip2Model(Siglip2Config(
        vision_config=dict(hidden_size=48, num_hidden_layers=3, num_attention_heads=3, intermediate_size=96,
                           patch_size=8, num_patches=64),
        text_config=dict(hidden_size=48, num_hidden_layers=1, num_attention_heads=3, intermediate_size=96,
                         vocab_size=100, max_position_embeddings=16))).save_pretrained(tmp_path / "s2")
    Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(
        vision_config=dict(depth=3, hidden_size=48, out_hidden_size=32, num_heads=3, intermediate_size=96,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                           fullatt_block_indexes=[2]),
        text_config=dict(model_type="qwen2_5_vl_text", rope_scaling={"type": "mrope", "mrope_section": [2, 2, 4]},
                         hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                         intermediate_size=64, vocab_size=200),
        image_token_id=199, video_token_id=198)).save_pretrained(tmp_path / "q")
    return {"builtin": ("builtin:tiny-vit", 64),
            "timm-siglip": ("timm:vit_base_patch16_siglip_224?random=1&depth=2&embed_dim=48&num_heads=3"
                            "&img_size=64&patch_size=8", 64),
            "hf-dinov2": (f"hf:{tmp_path / 'd2'}", 64), "hf-dinov3": (f"hf:{tmp_path / 'd3'}", 64),
            "hf-siglip2": (f"hf:{tmp_path / 's2'}", 64), "hf-qwen2_5_vl": (f"hf:{tmp_path / 'q'}?img_size=112", 112)}


def test_adapters_on_cuda(tmp_path):
    for name, (spec, size) in _specs(tmp_path).items():
        enc = build_encoder(spec)
        x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            ref = {n: enc(x, layers=[0, -1], norm=n) for n in (True, False)}
            enc = enc.cuda()
            for norm in (True, False):
                out = enc(x.cuda(), layers=[0, -1], norm=norm)
                for a, b in ((out.cls, ref[norm].cls), (out.layers[0].patches, ref[norm].layers[0].patches)):
                    torch.testing.assert_close(a.cpu(), b, rtol=1e-3, atol=1e-3, msg=name)
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    low = enc(x.cuda(), layers=[0, -1], norm=norm)
                cos = torch.nn.functional.cosine_similarity(low.layers[0].patches.float().flatten(0, 2).cpu(),
                                                            ref[norm].layers[0].patches.flatten(0, 2), dim=-1)
                assert float(cos.min()) > 0.98, (name, norm, float(cos.min()))
        print(name, "ok")
