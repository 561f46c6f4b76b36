"""``random:SPEC``: the architecture of SPEC with seeded random weights (the reference row of every table).

A trained encoder is only worth its number if it beats the same architecture with no training at all on
the same protocol; reports show this row under each baseline. The weights come from the architecture's
own initialiser where the library has one (Hugging Face: a fresh ``type(model)(config)``; timm:
``init_weights()``), otherwise every module's ``reset_parameters()``; the preprocessing is SPEC's.
``?random_seed=N`` picks the seed (default 0); every other option belongs to SPEC.
"""
from __future__ import annotations

from urllib.parse import urlencode

import torch
from torch import nn

from encoders.base import Encoder


def reinit_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Re-initialise ``model`` in place, deterministically for ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        done: set[int] = set()
        try:
            from transformers import PreTrainedModel
        except ImportError:  # pragma: no cover - transformers is a core dependency
            PreTrainedModel = ()
        uncovered: list[nn.Parameter] = []
        for mod in model.modules():
            if id(mod) in done:
                continue
            if PreTrainedModel and isinstance(mod, PreTrainedModel):
                fresh = type(mod)(mod.config)
                mod.load_state_dict(fresh.state_dict())
            elif hasattr(mod, "init_weights") and hasattr(mod, "blocks") and callable(mod.init_weights):
                mod.init_weights()                                  # timm ViTs
                for sub in mod.modules():                           # LayerScale keeps its gamma otherwise
                    if hasattr(sub, "gamma") and hasattr(sub, "init_values"):
                        sub.gamma.data.fill_(float(sub.init_values))
            elif hasattr(mod, "reset_parameters") and callable(mod.reset_parameters):
                mod.reset_parameters()
                done.update(id(s) for s in mod.modules())
                continue
            elif callable(getattr(mod, "_reset_parameters", None)):
                mod._reset_parameters()     # nn.MultiheadAttention (open_clip): its children come next
                done.add(id(mod))
                continue
            else:
                # parameters held directly by a module without an initialiser (open_clip's class and
                # position embeddings, projection): redrawn below
                uncovered.extend(mod.parameters(recurse=False))
                continue
            done.update(id(s) for s in mod.modules())
        with torch.no_grad():
            for p in uncovered:   # same scale as the trained tensor (what the libraries' inits use)
                std = float(p.float().std()) if p.numel() > 1 else 0.0
                if std > 0:
                    p.normal_(0.0, std)
    return model


def build_random(target: str, opts: dict, spec: str, workspace) -> Encoder:
    from harness.registry import build_encoder
    opts = dict(opts)
    seed = int(opts.pop("random_seed", 0))
    inner = target + ("?" + urlencode(opts, safe="/:~,") if opts else "")  # paths stay readable
    enc = build_encoder(inner, workspace)
    reinit_(enc, seed)
    for p in enc.parameters():
        p.requires_grad_(False)
    enc.info = type(enc.info)(**{**enc.info.__dict__, "spec": spec})
    enc._fingerprint = None
    enc.random_of = inner
    return enc
