"""What every adapter family shares: the spec error, option parsing, rebuilding from a spec after pickling."""
from __future__ import annotations

from contextlib import contextmanager

from harness.errors import UserError


class EncoderSpecError(UserError, ValueError):
    """A spec the adapter cannot serve (missing folder or checkpoint, unknown option); says what to pass."""


def literal_option(v: str):
    """'3' -> 3, '0.5' -> 0.5, 'true' -> True, else the string."""
    import yaml
    try:
        return yaml.safe_load(v)
    except yaml.YAMLError:
        return v


def flag(opts: dict, key: str) -> bool:
    return str(opts.get(key, "0")).lower() in ("1", "true", "yes")


@contextmanager
def seeded_build(opts: dict):
    """Build a model under a fixed seed (``?random_seed=N``, default 0) without touching the caller's RNG.

    A ``?random=1`` model keeps its library initialisation, and an unseeded one would give every run a
    different encoder (and fingerprint) under the same spec; a checkpoint overwrites the weights anyway."""
    import torch
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(opts.get("random_seed", 0)))
        yield


def rebuild_from_spec(spec: str, state: dict):
    """Unpickle an encoder whose model class pickle cannot import (torch.hub's dynamic hubconf module,
    Hugging Face remote code): build it again from its spec (same local folder on this machine) and load
    the weights it carried."""
    from harness.registry import build_encoder
    enc = build_encoder(spec)
    enc.load_state_dict(state)
    return enc
