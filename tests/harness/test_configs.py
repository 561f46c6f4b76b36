"""Every shipped config file resolves against the schema (unknown keys and bad types would fail here)."""
from pathlib import Path

import pytest

from harness.config import build, load_yaml
from harness.registry import SUITES
from harness.runner import EvalConfig

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_resolves(path):
    data = load_yaml(path)
    if path.parent.name in ("campaigns", "ablations"):   # campaign files: their own schema, every suite's protocol
        from harness.commands.campaign import CampaignSpec
        spec = build(CampaignSpec, data)
        for name, extra in spec.suites.items():
            build(SUITES.get(name).Options, dict((extra or {}).get("protocol") or {}), prefix="protocol.")
        return
    if "suite" not in data:
        pytest.fail(f"{path} has no suite")
    sweep = data.pop("sweep", None)
    cfg = build(EvalConfig, data)
    suite = SUITES.get(cfg.suite)
    build(suite.Options, cfg.protocol, prefix="protocol.")
    if sweep is not None:
        from harness.commands.sweep import SweepSpec, parse_space
        parse_space(build(SweepSpec, sweep, prefix="sweep.").space)
