"""`boost --dry-run`: parameter counts from configs (checked against instantiated models), the per-GPU estimate
(checked against a hand computation), DINOv2-L + Qwen2-7B stage 2 fits 8 x 80 GB with FSDP and not 1 GPU.
bf16 storage of frozen parameters trains (CPU autocast)."""
import json

import numpy as np
import pytest
import torch

from encoders.spatialboost.cli import main
from encoders.spatialboost.memory import encoder_shape, estimate_stage, lm_shape

from .conftest import tiny_overrides


def test_counts_from_configs_match_models(tmp_path):
    assert lm_shape("qwen2-7b").params == 7_615_616_512            # Qwen2-7B's published 7.62 B
    assert lm_shape("vicuna-7b").params == 6_738_415_616           # Llama-2-7B's 6.74 B
    # a local folder: config.json only; the count equals a really built model's
    from transformers import Qwen2Config, Qwen2ForCausalLM
    cfg = Qwen2Config(vocab_size=300, hidden_size=48, intermediate_size=96, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    cfg.save_pretrained(tmp_path / "lm")
    real = Qwen2ForCausalLM(cfg)
    shape = lm_shape(str(tmp_path / "lm"))
    assert shape.params == sum(p.numel() for p in real.parameters())
    assert shape.layer_params == sum(p.numel() for p in real.model.layers[0].parameters())
    from encoders.spatialboost.lm import load_lm
    assert lm_shape("builtin:tiny-qwen2").params == sum(p.numel() for p in load_lm("builtin:tiny-qwen2").model.parameters())
    import timm
    with torch.device("meta"):
        vitl = timm.create_model("vit_large_patch14_dinov2", pretrained=False)
    assert encoder_shape("dinov2-l").params == sum(p.numel() for p in vitl.parameters())
    assert encoder_shape("timm:vit_large_patch14_dinov2").params == encoder_shape("dinov2-l").params
    from encoders.builtin import build_builtin
    assert encoder_shape("builtin:tiny-vit").params == sum(
        p.numel() for p in build_builtin("tiny-vit", {}, "builtin:tiny-vit", None).parameters())
    with pytest.raises(ValueError, match="no config to count"):
        lm_shape(str(tmp_path / "nowhere"))


def test_estimate_by_hand():
    enc, lm = encoder_shape("dinov2-l"), lm_shape("qwen2-7b")
    e8 = estimate_stage(enc, lm, 2, world=8, strategy="fsdp", micro_batch=4, max_length=2048)
    proj = 1024 * 3584 + 3584 + 3584 * 3584 + 3584
    assert e8.trainable == lm.params + proj and e8.frozen == enc.params       # no optimiser state for the encoder
    assert e8.parts["trainable weights+grads+AdamW (16 B)"] == pytest.approx(16 * (lm.params + proj) / 8 / 1e9)
    assert e8.parts["logits + loss (s*b*V*12 B)"] == pytest.approx(2048 * 4 * 152064 * 12 / 1e9)
    assert e8.fits and e8.total_gb < 80
    e1 = estimate_stage(enc, lm, 2, world=1, strategy="ddp")
    assert not e1.fits and e1.parts["trainable weights+grads+AdamW (16 B)"] > 80
    assert "trainable weights+grads+AdamW" in e1.reason() and "fsdp" in e1.reason()
    # stage 1 trains the projector only: the frozen LM costs 2 B per parameter, nothing else
    s1 = estimate_stage(enc, lm, 1, world=1)
    assert s1.trainable == proj and s1.parts["frozen weights (2 B)"] == pytest.approx(2 * (lm.params + enc.params) / 1e9)
    # gradient checkpointing shrinks activations; DDP on 8 GPUs shards nothing
    assert estimate_stage(enc, lm, 2, world=8, strategy="fsdp", grad_ckpt=False).parts["LM activations (micro-batch)"] \
        > 5 * e8.parts["LM activations (micro-batch)"]
    assert not estimate_stage(enc, lm, 2, world=8, strategy="ddp").fits


def test_dry_run_cli(tmp_path, capsys):
    ws = tmp_path / "ws"
    args = ["boost", "--dry-run", "--encoder", "dinov2-l", "--lm", "qwen2-7b", "--stages", "2",
            "--workspace", str(ws)]
    assert main(args + ["--world-size", "8", "strategy=fsdp"]) == 0
    out = capsys.readouterr().out
    assert "stage 2: fsdp x 8 GPU(s)" in out and "fits:" in out and "does not fit" not in out
    assert main(args + ["--world-size", "1"]) == 3
    out = capsys.readouterr().out
    assert "does not fit" in out and "trainable weights+grads+AdamW (16 B) = 122.1 GB" in out
    assert not (ws / "boost").exists()                                         # nothing was created
    assert main(["boost", "--dry-run", "--lm", "nowhere-7b"]) == 2
    assert "lm='nowhere-7b'" in capsys.readouterr().err


def test_bf16_frozen_storage_trains(qa_file, tmp_path):
    from harness.config import build
    from encoders.spatialboost.trainer import BoostConfig, BoostTrainer
    ov = tiny_overrides(qa_file, tmp_path / "ws", stages=[1, 3], tracking=False, precision="bf16")
    ov["stage1"]["max_steps"] = 1
    ov["stage3"]["max_steps"] = 2
    tr = BoostTrainer(build(BoostConfig, ov), echo=lambda m: None)
    spec = tr.run()
    assert spec.startswith("boosted:")
    dtypes = {(p.requires_grad, p.dtype) for p in tr.vlm.parameters()}
    assert dtypes == {(True, torch.float32), (False, torch.bfloat16)}         # state after stage 3
    assert all(np.isfinite(tr.results[3].losses))
    st = json.loads(sorted((tr.run_dir / "stage3").glob("ckpt-*"))[-1].joinpath("state.json").read_text())
    assert st["done"]
