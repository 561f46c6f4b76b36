"""What a boost run is configured by: :class:`BoostConfig` (+ one config class per stage) and how it maps to the
dual-channel wrapper. The paper's values are the defaults (the stage table is in :mod:`.trainer`)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from harness.config import field

from .dual_attention import DualChannelConfig


@dataclass(frozen=True)
class StageConfig:
    lr: float = field(2e-5, help="peak learning rate (AdamW)")
    batch_size: int = field(128, help="global batch size (samples per optimiser step, all processes)")
    micro_batch_size: int = field(4, help="samples per forward/backward; gradient accumulation fills the batch",
                                  hash=False)
    epochs: float = field(1.0, help="passes over the stage's data")
    max_steps: int = field(0, help="stop after this many optimiser steps (0 = epochs decide)")
    warmup_ratio: float = field(0.03, help="linear warm-up fraction of the steps, then cosine to 0")
    weight_decay: float = field(0.0, help="AdamW weight decay")
    max_grad_norm: float = field(1.0, help="gradient clipping (0 = off)")
    data: str = field("", help="conversation file for this stage (default: the top-level data)")


# one class per stage so that overriding some keys of a stage (``stage1.batch_size=8``) keeps that stage's own
# defaults for the others (built from the field types: a shared class would reset stage 1's lr to 2e-5)
@dataclass(frozen=True)
class Stage1Config(StageConfig):
    lr: float = field(2e-3, help="peak learning rate (AdamW; paper: 2e-3)")
    batch_size: int = field(256, help="global batch size (samples per optimiser step, all processes)")


@dataclass(frozen=True)
class Stage2Config(StageConfig):
    lr: float = field(2e-5, help="peak learning rate (AdamW; LLaVA-1.5's value)")
    batch_size: int = field(128, help="global batch size (samples per optimiser step, all processes)")


@dataclass(frozen=True)
class Stage3Config(StageConfig):
    lr: float = field(2e-5, help="peak learning rate (AdamW; paper: 2e-5)")
    batch_size: int = field(128, help="global batch size (samples per optimiser step, all processes)")


@dataclass(frozen=True)
class BoostConfig:
    encoder: str = field("builtin:tiny-vit", help="encoder spec to boost")
    lm: str = field("builtin:tiny-qwen2", help="language model: builtin:tiny-qwen2 | builtin:smollm2-135m | PATH")
    data: str = field("", help="LLaVA-style conversation file (.json / .jsonl) used by every stage without its own")
    image_root: str = field("", help="folder image paths are relative to (default: the data file's folder)")
    stages: tuple[int, ...] = field((1, 2, 3), help="stages to run, in order (1 projector, 2 +LM, 3 encoder)")
    variant: Literal["dual", "full", "lora"] = field("dual", help="stage-3 encoder training (paper Table 17)")
    feature_layer: int = field(-1, help="encoder block whose patch tokens are the visual tokens (-2 = LLaVA)")
    image_size: int = field(0, help="input resolution (0 = the encoder's default)")
    max_length: int = field(2048, help="context length in tokens (visual tokens included)")
    overflow: Literal["truncate", "skip"] = field("truncate", help="overlong samples: cut at a turn or skip")
    stage1: Stage1Config = field(default_factory=Stage1Config, help="stage 1 (paper: lr 2e-3, batch 256)")
    stage2: Stage2Config = field(default_factory=Stage2Config, help="stage 2 (paper: batch 128)")
    stage3: Stage3Config = field(default_factory=Stage3Config, help="stage 3 (paper: lr 2e-5, batch 128)")
    stage3_projector: bool = field(True, help="also train the projector in stage 3 (paper: yes)")
    dual_layers: str = field("auto", help="dual-channel layers: auto (blocks up to feature_layer), all, last_k, "
                                          "or comma-separated block indices")
    dual_a_init: float = field(0.0, help="initial mixture logit a (alpha = sigmoid(a) = 0.5)")
    dual_share_out_proj: bool = field(False, help="Attn+ reuses the frozen output projection (+25% params)")
    lora_r: int = field(8, help="LoRA rank (variant=lora)")
    lora_alpha: int = field(16, help="LoRA alpha (variant=lora)")
    seed: int = field(0, help="seed of initialisation and data order")
    device: str = field("auto", help="auto, cpu, cuda, cuda:N", hash=False)
    precision: Literal["auto", "fp32", "bf16"] = field("auto", help="auto = bf16 autocast on GPU, fp32 on CPU")
    strategy: Literal["ddp", "fsdp"] = field("ddp", help="multi-process stage 2: ddp (replicas) or fsdp (LM, "
                                             "encoder and projector sharded; torch FSDP2); stages 1/3 use DDP",
                                             hash=False)
    grad_checkpointing: Literal["auto", "on", "off"] = field("auto", help="auto = on for GPU", hash=False)
    checkpoint_every: int = field(50, help="checkpoint every N optimiser steps (and at the end of a stage)",
                                  hash=False)
    keep_checkpoints: int = field(2, help="checkpoints kept per stage", hash=False)
    resume: bool = field(True, help="resume from the run folder's last checkpoint", hash=False)
    workspace: str = field("", help="runtime data folder (default: $SPATIALBOOST_HOME or ./workspace)", hash=False)
    run_dir: str = field("", help="run folder (default: <workspace>/boost/<config hash>)", hash=False)
    experiment: str = field("spatialboost-boost", help="MLflow experiment", hash=False)
    tracking: bool = field(True, help="log to MLflow", hash=False)
    log_every: int = field(1, help="MLflow metrics every N steps", hash=False)
    progress: bool = field(True, help="progress bars", hash=False)
    throttle_s: float = field(0.0, help="sleep after each step (tests that kill a run)", hash=False)
    prefetch_steps: int | None = field(None, min=0, help="steps whose batches (image decoding) are built in "
                                       "background threads while a step runs; None = auto: 2 on CUDA, 0 (in the "
                                       "loop) on CPU, where the threads would compete with the compute", hash=False)


PAPER_DEFAULTS = {1: (2e-3, 256), 2: (2e-5, 128), 3: (2e-5, 128)}


def dual_cfg(cfg: BoostConfig, num_layers: int, feature_layer: int) -> DualChannelConfig:
    """``dual_layers`` etc. -> the wrapper's config; ``auto`` wraps the blocks up to the feature layer (the
    blocks after it cannot change the visual tokens)."""
    layers: str | list[int] = cfg.dual_layers
    if layers == "auto":
        layers = "all" if feature_layer == num_layers - 1 else list(range(feature_layer + 1))
    elif layers not in ("all",) and not layers.startswith("last_"):
        layers = [int(x) for x in layers.split(",") if x.strip()]
    return DualChannelConfig(layers=layers, a_init=cfg.dual_a_init, share_out_proj=cfg.dual_share_out_proj)


def dual_cfg_dict(d: DualChannelConfig) -> dict:
    """JSON-ready form, as recorded in the export (``boosted.json``) and reapplied when it is loaded."""
    return {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in dataclasses.asdict(d).items()}
