"""SpatialBoost: dual-channel attention (this package), and later the VLM, the 3-stage trainer, the QA generator."""
from .dual_attention import (  # noqa: F401
    AblationReport, DualChannelAttention, DualChannelConfig, DualChannelReport, alpha_stats, apply_full_finetune,
    apply_lora, dual_channel_modules, dual_channel_parameters, find_attention_modules, lora_target_modules,
    named_dual_channel_parameters, wrap_dual_channel,
)
