"""What every adapter family shares: the spec error, option parsing, rebuilding from a spec after pickling."""
from __future__ import annotations

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


def rebuild_from_spec(spec: str, state: dict):
    """Unpickle an encoder whose model class pickle cannot import (torch.hub's dynamic hubconf module,
    Hugging Face remote code): build it again from its spec (same local folder on this machine) and load
    the weights it carried."""
    from harness.registry import build_encoder
    enc = build_encoder(spec)
    enc.load_state_dict(state)
    return enc
