"""Memory-scaled stage 2 (``strategy=fsdp``): PyTorch FSDP2 (``torch.distributed.fsdp.fully_shard``) over the VLM,
and the parameter dtypes of mixed precision.

Sharding units: every decoder layer of the LM, the vision encoder, and the root (embeddings, LM head, final norm,
projector). Each process keeps 1/W of every parameter, gradient and AdamW state; a unit is all-gathered for its
forward / backward and freed after. Frozen parameters (the encoder in stage 2) are sharded too and get no
optimiser state (the optimiser only sees ``requires_grad`` parameters). On a GPU with ``precision=bf16`` the
units are gathered and computed in bf16 (``MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)``) while the
sharded master weights stay fp32.

Checkpoints stay world-size independent: the trainer gathers a *full* state dict (``torch.distributed.checkpoint.
state_dict``, offloaded to rank 0's CPU) and the optimiser state keyed by parameter name, so a run written by
W processes resumes with any other number (FSDP or not).

:func:`set_param_dtypes` (no FSDP): with ``precision=bf16`` the frozen parts are stored in bf16 (a frozen 7B LM:
15 GB instead of 30 GB) and the trained ones in fp32 (AdamW's master copy; autocast computes in bf16).
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn


def decoder_layers(lm: nn.Module) -> list[nn.Module]:
    """The repeated blocks of a Hugging Face causal LM (``model.layers`` for Llama / Qwen2 / Mistral...)."""
    inner = getattr(lm, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise ValueError(f"{type(lm).__name__}: no .model.layers to shard (not a Llama/Qwen2-style LM)")
    return list(layers)


def shard_vlm(vlm: nn.Module, world: int, device: torch.device, precision: str) -> nn.Module:
    """Apply FSDP2 to ``vlm`` in place (decoder layers, encoder, root); returns it."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    mesh = init_device_mesh(device.type, (world,))
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
        if precision == "bf16" and device.type == "cuda" else MixedPrecisionPolicy()
    for p in vlm.parameters():           # one dtype per unit; the master copy is fp32
        p.data = p.data.float()
    for layer in decoder_layers(vlm.lm):
        fully_shard(layer, mesh=mesh, mp_policy=mp)
    fully_shard(vlm.encoder, mesh=mesh, mp_policy=mp)
    fully_shard(vlm, mesh=mesh, mp_policy=mp)
    return vlm


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule
    return isinstance(model, FSDPModule)


def grad_sync(model: nn.Module, last_micro_batch: bool):
    """Gradient accumulation under FSDP: reduce-scatter only on the last micro-batch of a step."""
    model.set_requires_gradient_sync(last_micro_batch)
    return contextlib.nullcontext()


def full_params(model: nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    """Collective: the named parameters, unsharded, on rank 0's CPU (empty on the other ranks)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {n: sd[n] for n in names if n in sd}


def full_optimizer_state(model: nn.Module, opt: torch.optim.Optimizer) -> dict:
    """Collective: the optimiser state keyed by parameter name, unsharded, on rank 0 (empty elsewhere)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict
    return get_optimizer_state_dict(model, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_optimizer_state(model: nn.Module, opt: torch.optim.Optimizer, state: dict) -> None:
    """Every rank passes the same name-keyed full state; each keeps its shard."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict
    set_optimizer_state_dict(model, opt, optim_state_dict=state, options=StateDictOptions(full_state_dict=True))


# ------------------------------------------------------------------------- plain (unsharded) models
def optimizer_state_by_name(model: nn.Module, opt: torch.optim.Optimizer) -> dict:
    """``opt.state_dict()`` with parameter names instead of indices (the FSDP format: portable across world
    sizes and strategies)."""
    names = {id(p): n for n, p in model.named_parameters()}
    order = [names[id(p)] for g in opt.param_groups for p in g["params"]]
    sd = opt.state_dict()
    return {"state": {order[i]: v for i, v in sd["state"].items()},
            "param_groups": [{**g, "params": [order[i] for i in g["params"]]} for g in sd["param_groups"]]}


def load_optimizer_state(model: nn.Module, opt: torch.optim.Optimizer, sd: dict) -> None:
    """Load a name-keyed (or an older index-keyed) optimiser state into ``opt`` of an unsharded model."""
    groups = sd.get("param_groups") or []
    if all(isinstance(i, int) for g in groups for i in g["params"]):
        opt.load_state_dict(sd)
        return
    names = {id(p): n for n, p in model.named_parameters()}
    order = [names[id(p)] for g in opt.param_groups for p in g["params"]]
    idx = {n: i for i, n in enumerate(order)}
    saved = [n for g in groups for n in g["params"]]
    if sorted(saved) != sorted(order):
        raise RuntimeError(f"optimizer state is for other parameters ({len(saved)} saved, {len(order)} trained; "
                           f"e.g. {sorted(set(saved) ^ set(order))[:3]})")
    if len(groups) != len(opt.param_groups):
        raise RuntimeError(f"optimizer state has {len(groups)} parameter group(s), the optimiser {len(opt.param_groups)}")
    # load_state_dict pairs saved and current parameters by position: list each group's own, in current order
    cur, k = [], 0
    for g_saved, g in zip(groups, opt.param_groups):
        cur.append({**g_saved, "params": list(range(k, k + len(g["params"])))})
        k += len(g["params"])
    opt.load_state_dict({"state": {idx[n]: v for n, v in sd["state"].items()}, "param_groups": cur})


def set_param_dtypes(model: nn.Module, precision: str) -> None:
    """bf16 storage for frozen parameters, fp32 for trained ones (``precision=bf16``); all fp32 otherwise."""
    with torch.no_grad():
        for p in model.parameters():
            want = torch.float32 if (p.requires_grad or precision != "bf16") else torch.bfloat16
            if p.dtype != want and p.is_floating_point():
                p.data = p.data.to(want)


def lm_train_mode(lm: nn.Module, stage: int, grad_ckpt: bool) -> bool:
    """Whether the LM runs in train mode: always in stage 2; in stages 1/3 (frozen LM) only to let Hugging Face
    gradient checkpointing recompute (it does so only in train mode), and only when the LM has no active
    dropout, so that train mode computes exactly what eval mode would."""
    if stage == 2:
        return True
    if not grad_ckpt:
        return False
    cfg = getattr(lm, "config", None)
    rates = [float(getattr(cfg, k, 0.0) or 0.0) for k in ("attention_dropout", "hidden_dropout", "dropout",
                                                          "resid_pdrop", "embd_pdrop", "attn_pdrop")]
    rates += [m.p for m in lm.modules() if isinstance(m, nn.Dropout)]
    return all(r == 0 for r in rates)
