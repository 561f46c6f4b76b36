"""The suite contract over every registered suite, like the encoder contract over every adapter.

A new suite passes this file or it is not done: its metrics are declared with directions, its primary and
validation metrics are among them, every key it offers to sweeps and to the demo is a protocol option (and
passes the option's range checks), and its folder's README says how to run it, how long it takes and what
number to expect.
"""
import dataclasses
import re
from pathlib import Path

import pytest

from harness.config import build
from harness.registry import SUITES

ROOT = Path(__file__).resolve().parents[2]


def _suite(name):
    try:
        return SUITES.get(name)
    except ImportError as e:  # an optional extra that is not installed
        pytest.skip(f"{name}: {e}")


@pytest.mark.parametrize("name", SUITES.names())
def test_spec_declares_its_metrics(name):
    cls = _suite(name)
    spec = cls.spec
    assert spec.name == name
    declared = {m.name for m in spec.metrics}
    assert spec.primary in declared
    assert all(m.direction in ("max", "min") for m in spec.metrics)
    if spec.validation is not None:  # held-out version of the primary metric, never the reported split
        assert spec.validation != spec.primary
        assert spec.validation.endswith(spec.primary.split(".")[-1]), (spec.validation, spec.primary)
    assert spec.heads and all(h in spec.heads for h in (spec.default_head or spec.heads[0]).split(","))
    assert re.fullmatch(r"[\w.]+", spec.version), spec.version


@pytest.mark.parametrize("name", SUITES.names())
def test_search_space_and_demo_keys_are_options(name):
    cls = _suite(name)
    fields = {f.name for f in dataclasses.fields(cls.Options)}
    assert set(cls.search_space()) <= fields, set(cls.search_space()) - fields
    for preset in ("tiny", "default"):
        demo = cls.demo_protocol(preset)
        assert set(demo) <= fields, (preset, set(demo) - fields)
        build(cls.Options, demo, prefix="protocol.")        # the demo's sizes pass the options' own checks
        heads = cls.demo_heads(preset)
        assert heads is None or set(heads.split(",")) <= set(cls.spec.heads), (preset, heads)


@pytest.mark.parametrize("name", SUITES.names())
def test_readme_states_command_runtime_and_reference(name):
    cls = _suite(name)
    folder = ROOT / Path(*cls.__module__.split(".")[:-1])
    readme = folder / "README.md"
    assert readme.is_file(), f"{folder} has no README.md"
    text = readme.read_text()
    assert f"--suite {name}" in text or f"--suite {name.split('.')[0]}." in text, "no command for this suite"
    assert re.search(r"(?i)runtime|takes|min(utes)?\b|\d+\s?s\b", text), "no expected runtime"
    assert re.search(r"(?i)reference|paper|expected", text), "no reference number"
