"""Memory per GPU of a boost stage, estimated before anything loads (``spatialboost boost --dry-run``).

Parameter counts come from configs, never from weights: a local LM folder's ``config.json`` (transformers
``AutoConfig``) or a known config (:data:`KNOWN_LMS`: Qwen2-7B, Vicuna-1.5-7B, SmolLM2-135M, tiny-qwen2) is
instantiated on the ``meta`` device (exact counts, no memory); encoders come from :data:`KNOWN_ENCODERS`
(DINOv2 S/B/L/g, counts of timm's ``vit_*_patch14_dinov2``) or a ``timm:NAME`` spec built on ``meta``.

The model (bytes per parameter, mixed precision as the trainer runs it on a GPU):

- trainable parameters: fp32 master weight 4 + fp32 gradient 4 + AdamW m and v 8 = 16 B; DDP adds its fp32
  gradient buckets (4 B); FSDP divides all of it by the world size;
- frozen parameters: 2 B (bf16) or 4 B (fp32), no gradient, no optimiser state (divided by W under FSDP);
- FSDP working set: the largest gathered unit (a decoder layer, the encoder, or the root = embeddings + head +
  projector) in the compute dtype, twice (prefetch), plus its unsharded fp32 gradient before reduce-scatter;
- activations of one micro-batch of ``max_length`` tokens (Korthikanti et al. 2022, flash/SDPA attention):
  ``34·s·b·h`` bytes per decoder layer (bf16; x2 in fp32), or with gradient checkpointing the layer inputs
  ``2·s·b·h`` per layer plus one layer's full set during recomputation; logits ``s·b·V·12`` B (bf16 logits, the
  fp32 copy the loss takes, its gradient); trainable-encoder activations likewise per view (stage 3);
- runtime: CUDA context + allocator fragmentation, 1.5 GB + 10 %.
Good to about +-20 %; it names the dominant term so a user knows what to change.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

GB = 1e9

# name -> transformers config kwargs (model_type picks the class); values from the models' config.json
KNOWN_LMS: dict[str, dict] = {
    "qwen2-7b": dict(model_type="qwen2", vocab_size=152064, hidden_size=3584, intermediate_size=18944,
                     num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                     tie_word_embeddings=False),
    "vicuna-7b": dict(model_type="llama", vocab_size=32000, hidden_size=4096, intermediate_size=11008,
                      num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                      tie_word_embeddings=False),
    "smollm2-135m": dict(model_type="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536,
                         num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                         tie_word_embeddings=True),
    "tiny-qwen2": dict(model_type="qwen2", vocab_size=260, hidden_size=64, intermediate_size=128,
                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True),
}
LM_ALIASES = {"qwen2-7b-instruct": "qwen2-7b", "vicuna-7b-v1.5": "vicuna-7b", "vicuna-1.5-7b": "vicuna-7b",
              "builtin:smollm2-135m": "smollm2-135m", "builtin:tiny-qwen2": "tiny-qwen2"}

# name -> (parameters, embed_dim, blocks, patch, default image size); counts of timm vit_*_patch14_dinov2
KNOWN_ENCODERS: dict[str, tuple[int, int, int, int, int]] = {
    "dinov2-s": (22_056_192, 384, 12, 14, 224),
    "dinov2-b": (86_579_712, 768, 12, 14, 224),
    "dinov2-l": (304_367_616, 1024, 24, 14, 224),
    "dinov2-g": (1_136_479_232, 1536, 40, 14, 224),
    "tiny-vit": (150_592, 64, 4, 8, 64),     # builtin:tiny-vit (timm ViT, 4 x 64 wide, patch 8)
}
ENCODER_ALIASES = {"builtin:dinov2-s14-focus": "dinov2-s", "vit_small_patch14_dinov2": "dinov2-s",
                   "vit_base_patch14_dinov2": "dinov2-b", "vit_large_patch14_dinov2": "dinov2-l",
                   "vit_giant_patch14_dinov2": "dinov2-g", "dinov2_vits14": "dinov2-s", "dinov2_vitb14": "dinov2-b",
                   "dinov2_vitl14": "dinov2-l", "dinov2_vitg14": "dinov2-g", "dinov2-large": "dinov2-l",
                   "dinov2-small": "dinov2-s", "dinov2-base": "dinov2-b", "dinov2-giant": "dinov2-g"}


class EstimateError(ValueError):
    pass


@dataclass
class LMShape:
    name: str
    params: int
    hidden: int
    layers: int
    vocab: int
    layer_params: int          # one decoder layer
    outer_params: int          # embeddings + head + final norm (the FSDP root unit's LM part)


@dataclass
class EncoderShape:
    name: str
    params: int
    embed_dim: int
    layers: int
    patch: int
    image_size: int


def _count_meta(build) -> object:
    import torch
    with torch.device("meta"):
        return build()


def lm_shape(spec: str) -> LMShape:
    """LM spec (a local folder with config.json, a known name, or a builtin) -> exact parameter counts."""
    from transformers import AutoConfig, AutoModelForCausalLM
    key = LM_ALIASES.get(spec.lower(), spec.lower())
    path = Path(spec[3:] if spec.startswith("hf:") else spec).expanduser()
    if key in KNOWN_LMS:
        kw = dict(KNOWN_LMS[key])
        cfg = AutoConfig.for_model(kw.pop("model_type"), **kw)
        name = key
    elif (path / "config.json").is_file():
        cfg = AutoConfig.from_pretrained(str(path), local_files_only=True)
        name = str(path)
    else:
        raise EstimateError(f"lm='{spec}': no config to count parameters from (a local folder with config.json, "
                            f"or one of {', '.join(sorted(KNOWN_LMS))})")
    model = _count_meta(lambda: AutoModelForCausalLM.from_config(cfg))
    total = sum(p.numel() for p in model.parameters())
    layers = model.model.layers
    per_layer = max(sum(p.numel() for p in l.parameters()) for l in layers)
    return LMShape(name, total, cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size, per_layer,
                   total - sum(sum(p.numel() for p in l.parameters()) for l in layers))


def encoder_shape(spec: str) -> EncoderShape:
    name = spec.split("?")[0]
    tail = name.split(":")[-1].rstrip("/").split("/")[-1].lower()
    key = ENCODER_ALIASES.get(name.lower(), ENCODER_ALIASES.get(tail, tail if tail in KNOWN_ENCODERS else None))
    if key is not None:
        p, d, n, ps, s = KNOWN_ENCODERS[key]
        return EncoderShape(key, p, d, n, ps, s)
    if name.startswith("timm:"):
        import timm
        m = _count_meta(lambda: timm.create_model(name[5:], pretrained=False))
        return EncoderShape(name, sum(p.numel() for p in m.parameters()), m.embed_dim, len(m.blocks),
                            m.patch_embed.patch_size[0], m.patch_embed.img_size[0])
    raise EstimateError(f"encoder='{spec}': unknown size (known: {', '.join(sorted(KNOWN_ENCODERS))}, their timm / "
                        f"torch.hub / HF names, or a timm:NAME spec)")


@dataclass
class MemoryEstimate:
    stage: int
    world: int
    strategy: str
    gpu_gb: float
    parts: dict[str, float] = field(default_factory=dict)       # GB per GPU
    trainable: int = 0
    frozen: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def total_gb(self) -> float:
        return sum(self.parts.values())

    @property
    def fits(self) -> bool:
        return self.total_gb <= self.gpu_gb

    def reason(self) -> str:
        top = max(self.parts, key=self.parts.get)
        if self.fits:
            return f"fits: {self.total_gb:.1f} GB of {self.gpu_gb:.0f} GB per GPU (largest: {top})"
        hint = ""
        if top.startswith("trainable") and (self.strategy != "fsdp" or self.world == 1):
            hint = " (unsharded: every GPU holds all of it; shard it with strategy=fsdp over more GPUs)"
        elif top.startswith(("logits", "LM activations", "encoder activations")):
            hint = " (lower micro_batch_size or max_length, or turn gradient checkpointing on)"
        return (f"does not fit: {self.total_gb:.1f} GB > {self.gpu_gb:.0f} GB per GPU; largest term {top} = "
                f"{self.parts[top]:.1f} GB{hint}")

    def table(self) -> str:
        rows = [f"stage {self.stage}: {self.strategy} x {self.world} GPU(s), trainable {self.trainable / 1e6:,.1f} M, "
                f"frozen {self.frozen / 1e6:,.1f} M parameters"]
        rows += [f"  {k:<34} {v:8.2f} GB" for k, v in self.parts.items()]
        rows.append(f"  {'total per GPU':<34} {self.total_gb:8.2f} GB -> {self.reason()}")
        rows += [f"  note: {n}" for n in self.notes]
        return "\n".join(rows)


def estimate_stage(enc: EncoderShape, lm: LMShape, stage: int, *, world: int = 1, strategy: str = "ddp",
                   precision: str = "bf16", grad_ckpt: bool = True, micro_batch: int = 4, max_length: int = 2048,
                   views: int = 1, image_size: int = 0, variant: str = "dual", gpu_gb: float = 80.0,
                   ) -> MemoryEstimate:
    """GB per GPU of one stage (see the module docstring for the model)."""
    if stage not in (1, 2, 3):
        raise EstimateError(f"stage {stage}: stages are 1, 2, 3")
    act_b = 2 if precision == "bf16" else 4
    proj = enc.embed_dim * lm.hidden + lm.hidden + lm.hidden * lm.hidden + lm.hidden
    enc_train = {"dual": enc.params // 3, "full": enc.params, "lora": enc.params // 100}[variant] if stage == 3 else 0
    trainable = proj + (lm.params if stage == 2 else 0) + enc_train
    # dual / lora add new parameters beside the frozen encoder; full trains the encoder itself
    frozen = (0 if stage == 3 and variant == "full" else enc.params) + (0 if stage == 2 else lm.params)
    shard = world if strategy == "fsdp" else 1
    est = MemoryEstimate(stage, world, strategy, gpu_gb, trainable=trainable, frozen=frozen)
    p = est.parts
    p["trainable weights+grads+AdamW (16 B)"] = 16 * trainable / shard / GB
    if strategy == "ddp" and world > 1:
        p["DDP gradient buckets (4 B)"] = 4 * trainable / GB
    p[f"frozen weights ({act_b} B)"] = act_b * frozen / shard / GB
    if strategy == "fsdp" and world > 1:
        # units as the trainer shards them: each decoder layer, the encoder, the root (embeddings, head,
        # final norm, projector)
        unit = max(lm.layer_params, enc.params, lm.outer_params + proj)
        p["FSDP gathered units (2 x largest)"] = 2 * act_b * unit / GB
        if stage == 2:
            p["FSDP unsharded fp32 grad (largest)"] = 4 * unit / GB
    s, b, h = max_length, micro_batch, lm.hidden
    per_layer = 34 * s * b * h * act_b / 2       # a frozen LM keeps them too: the backward reaches the projector
    lm_act = (lm.layers * 2 * s * b * h * act_b / 2 + per_layer) if grad_ckpt else lm.layers * per_layer
    p["LM activations (micro-batch)"] = lm_act / GB
    p["logits + loss (s*b*V*12 B)"] = s * b * lm.vocab * 12 / GB
    tokens = (image_size or enc.image_size) // enc.patch
    n = tokens * tokens + 1
    if stage == 3:
        ev = 34 * n * b * views * enc.embed_dim * act_b / 2
        p["encoder activations"] = ((enc.layers * 2 * n * b * views * enc.embed_dim * act_b / 2 + ev) if grad_ckpt
                                    else enc.layers * ev) / GB
    p["CUDA context + fragmentation"] = 1.5 + 0.1 * sum(p.values())
    if strategy == "fsdp" and world == 1:
        est.notes.append("FSDP on 1 GPU shards nothing")
    if stage != 2 and strategy == "fsdp":
        est.notes.append("the trainer uses FSDP for stage 2 only (stages 1 and 3 train small parts: DDP)")
    return est


def dry_run_report(cfg, world: int, gpu_gb: float) -> tuple[str, list[MemoryEstimate]]:
    """The ``--dry-run`` text for a BoostConfig: one estimate per configured stage (on a GPU: bf16 unless
    precision=fp32, gradient checkpointing unless grad_checkpointing=off)."""
    enc, lm = encoder_shape(cfg.encoder), lm_shape(cfg.lm)
    precision = "fp32" if cfg.precision == "fp32" else "bf16"
    ckpt = cfg.grad_checkpointing != "off"
    out = [f"memory estimate (no weights loaded): encoder {enc.name} {enc.params / 1e6:,.1f} M, LM {lm.name} "
           f"{lm.params / 1e9:,.3f} B parameters; {world} GPU(s) x {gpu_gb:.0f} GB, {precision}, gradient "
           f"checkpointing {'on' if ckpt else 'off'}, max_length {cfg.max_length}"]
    ests = []
    for st in cfg.stages:
        sc = getattr(cfg, f"stage{st}")
        strat = cfg.strategy if (st == 2 and cfg.strategy == "fsdp") else "ddp"
        e = estimate_stage(enc, lm, st, world=world, strategy=strat, precision=precision, grad_ckpt=ckpt,
                           micro_batch=sc.micro_batch_size, max_length=cfg.max_length, image_size=cfg.image_size,
                           variant=cfg.variant, gpu_gb=gpu_gb)
        ests.append(e)
        out.append(e.table())
    return "\n".join(out), ests
