"""``random:SPEC``: same architecture and preprocessing, new seeded weights, tagged with its origin."""
import torch

from encoders.spec import build_encoder


def test_random_spec_reinitialises_deterministically():
    base = build_encoder("builtin:tiny-vit")
    rnd = build_encoder("random:builtin:tiny-vit?random_seed=3")
    again = build_encoder("random:builtin:tiny-vit?random_seed=3")
    other = build_encoder("random:builtin:tiny-vit?random_seed=4")
    assert rnd.random_of == "builtin:tiny-vit"
    assert rnd.info.embed_dim == base.info.embed_dim and rnd.info.mean == base.info.mean
    assert rnd.fingerprint() == again.fingerprint() != base.fingerprint()
    assert other.fingerprint() != rnd.fingerprint()
    changed = [k for k, v in rnd.state_dict().items() if not torch.equal(v, base.state_dict()[k])]
    weights = [k for k, v in base.state_dict().items() if v.ndim >= 2]
    assert set(weights) <= set(changed)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(rnd(x).cls, base(x).cls)


def test_random_hf_model_uses_fresh_init():
    from transformers import Dinov2Config, Dinov2Model

    from encoders.adapters import HFVisionEncoder
    from encoders.random_init import reinit_
    torch.manual_seed(0)
    model = Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, patch_size=8, image_size=32))
    enc = HFVisionEncoder(model, "hf:x")
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    reinit_(enc, seed=1)
    after = enc.state_dict()
    assert not torch.equal(before["model.embeddings.patch_embeddings.projection.weight"],
                           after["model.embeddings.patch_embeddings.projection.weight"])
    enc2 = HFVisionEncoder(Dinov2Model(model.config), "hf:x")
    reinit_(enc2, seed=1)
    assert all(torch.equal(v, enc2.state_dict()[k]) for k, v in after.items())
