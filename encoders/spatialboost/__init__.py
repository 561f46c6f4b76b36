"""SpatialBoost: dual-channel attention and its Table 17 ablations, the VLM, the 3-stage trainer, the QA generator."""
from .ablations import AblationReport, apply_full_finetune, apply_lora, lora_target_modules
from .dual_attention import (
    DualChannelAttention, DualChannelConfig, DualChannelReport, alpha_stats, dual_channel_modules,
    dual_channel_parameters, find_attention_modules, named_dual_channel_parameters, wrap_dual_channel,
)

__all__ = ["AblationReport", "apply_full_finetune", "apply_lora", "lora_target_modules", "DualChannelAttention",
           "DualChannelConfig", "DualChannelReport", "alpha_stats", "dual_channel_modules", "dual_channel_parameters",
           "find_attention_modules", "named_dual_channel_parameters", "wrap_dual_channel"]
