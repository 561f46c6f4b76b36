"""Table 17 ablations of dual-channel attention: full fine-tuning and LoRA on the same encoder.

Both act on a *base* encoder (not a dual-channel one) in place and report how many parameters train; the
stage-3 trainer picks one of them with ``variant=full`` / ``variant=lora``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import torch
from torch import nn

from .dual_attention import (MHA, DualChannelAttention, DualChannelConfig, attention_layout, count_params,
                             find_attention_modules, join_name, select_attention)

__all__ = ["AblationReport", "apply_full_finetune", "apply_lora", "lora_target_modules"]


@dataclass
class AblationReport:
    method: str
    params_total: int
    params_trainable: int
    trainable_pct: float
    targets: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _ablation_report(model: nn.Module, method: str, targets: list[str]) -> AblationReport:
    total = count_params(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return AblationReport(method, total, trainable, 100.0 * trainable / max(total, 1), targets)


def _refuse_wrapped(model: nn.Module, what: str) -> None:
    if any(isinstance(m, DualChannelAttention) for m in model.modules()):
        raise ValueError(f"{what} is an alternative to dual-channel attention (paper Table 17); "
                         f"apply it to a base model, not to a dual-channel one")


def apply_full_finetune(model: nn.Module) -> AblationReport:
    """Table 17 'Full Fine-tuning': every parameter of the encoder trainable."""
    _refuse_wrapped(model, "full fine-tuning")
    for p in model.parameters():
        p.requires_grad_(True)
    return _ablation_report(model, "full_finetune", [])


def lora_target_modules(model: nn.Module, target: str = "attn", layers: str | Sequence[int] = "all",
                        include_non_block: bool = False) -> list[str]:
    """Exact qualified names of the attention projections for LoRA.

    target: ``"attn"`` (QKV and output projections), ``"qkv"`` (input projections only) or ``"out"``.
    ``nn.MultiheadAttention`` layers are targeted as a whole (peft then adapts in_proj and out_proj together),
    so only ``"attn"`` is possible for them."""
    if target not in ("attn", "qkv", "out"):
        raise ValueError(f"target must be 'attn', 'qkv', 'out' or a list of module names, got {target!r}")
    sel, _ = select_attention(find_attention_modules(model),
                     DualChannelConfig(layers=layers, include_non_block=include_non_block))
    names = []
    for name, mod, kind in sel:
        _, ins, outs, _ = attention_layout(mod)
        if kind == MHA and target != "attn":
            raise ValueError(f"'{name}' is a torch.nn.MultiheadAttention: peft adapts its input and output "
                             f"projections together, so only target='attn' is possible")
        rel = {"attn": ins + outs, "qkv": ins, "out": outs}[target]
        names.extend(join_name(name, r) for r in dict.fromkeys(rel))
    return names


class _LoRADelta(nn.Module):
    """Weight parametrisation ``W -> W + (alpha / r) * B @ A`` (Hu et al. 2021) with peft's default init
    (A: Kaiming-uniform with a=sqrt(5), B: zeros), used for ``nn.MultiheadAttention`` whose ``in_proj_weight``
    and ``out_proj.weight`` are read directly by ``F.multi_head_attention_forward`` (no Linear forward to hook)."""

    def __init__(self, weight: torch.Tensor, r: int, alpha: float):
        super().__init__()
        out_f, in_f = weight.shape
        self.lora_A = nn.Parameter(torch.empty(r, in_f, device=weight.device, dtype=weight.dtype))
        self.lora_B = nn.Parameter(torch.zeros(out_f, r, device=weight.device, dtype=weight.dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=5 ** 0.5)
        self.scaling = alpha / r

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w + (self.lora_B @ self.lora_A).to(w.dtype) * self.scaling


def _lora_mha(mha: nn.MultiheadAttention, r: int, alpha: float) -> None:
    from torch.nn.utils import parametrize
    if not mha._qkv_same_embed_dim:
        raise ValueError("LoRA on nn.MultiheadAttention needs a packed in_proj_weight (kdim == vdim == embed_dim)")
    parametrize.register_parametrization(mha, "in_proj_weight", _LoRADelta(mha.in_proj_weight, r, alpha))
    parametrize.register_parametrization(mha.out_proj, "weight", _LoRADelta(mha.out_proj.weight, r, alpha))


def apply_lora(model: nn.Module, r: int = 8, alpha: int = 16, dropout: float = 0.0,
               target: str | Sequence[str] = "attn", layers: str | Sequence[int] = "all",
               include_non_block: bool = False, adapter_name: str = "default") -> AblationReport:
    """Table 17 'LoRA': LoRA adapters on the attention projections, in place; only the LoRA matrices train.
    The paper does not give r / alpha; the defaults here (r=8, alpha=16, no dropout) are ours.

    target: "attn" | "qkv" | "out" (see :func:`lora_target_modules`) or an explicit list of qualified names.

    Linear projections get peft LoRA layers (``peft.inject_adapter_in_model``; keys
    ``<proj>.base_layer.weight``, ``<proj>.lora_A.<adapter>.weight``, ``<proj>.lora_B.<adapter>.weight``).
    ``nn.MultiheadAttention`` (open_clip) does NOT go through peft: peft 0.21.2's LoRA MultiheadAttention adds the
    out_proj delta twice in forward (W + 2*dW; huggingface/peft PR #3774, open) and rewrites the frozen weights
    on every call. It gets the same LoRA (same init and scaling) as a torch parametrisation of ``in_proj_weight``
    and ``out_proj.weight`` (keys ``<attn>.parametrizations.in_proj_weight.original`` /
    ``...in_proj_weight.0.lora_A`` / ``.lora_B``, and likewise under ``<attn>.out_proj.``); no dropout there."""
    _refuse_wrapped(model, "LoRA")
    names = (lora_target_modules(model, target, layers, include_non_block) if isinstance(target, str)
             else list(target))
    mha = [n for n in names if isinstance(model.get_submodule(n), nn.MultiheadAttention)]
    linear = [n for n in names if n not in mha]
    if mha and dropout:
        raise ValueError(f"LoRA dropout is not available for nn.MultiheadAttention layers ({mha[0]}, ...)")
    if linear:
        from peft import LoraConfig, inject_adapter_in_model
        config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=linear, bias="none")
        inject_adapter_in_model(config, model, adapter_name=adapter_name)
    for n in mha:
        _lora_mha(model.get_submodule(n), r, alpha)
    # peft already marks only adapters trainable; make it explicit and independent of peft defaults
    for n, p in model.named_parameters():
        p.requires_grad_("lora_" in n)
    return _ablation_report(model, "lora", names)
