from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.config import ConfigError, build, config_hash, field, parse_overrides
from harness.registry import Registry, RegistryError


def test_registry_decorator_lazy_and_did_you_mean():
    reg = Registry("things")

    @reg.register("alpha")
    class Alpha:
        pass

    reg.register("lazy", "pathlib:PurePosixPath")
    assert reg.get("alpha") is Alpha
    assert reg.get("lazy").__name__ == "PurePosixPath"  # imported only now
    with pytest.raises(RegistryError, match="Did you mean: alpha"):
        reg.get("alpah")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("alpha", int)


def test_registry_entry_points(monkeypatch):
    from importlib import metadata

    class EP:
        name, value = "outside", "pathlib:Path"

    def fake(group):
        return [EP()] if group == "spatialboost.things2" else []

    monkeypatch.setattr(metadata, "entry_points", fake)
    reg = Registry("things2")
    assert "outside" in reg.names()
    assert reg.get("outside") is Path


@dataclass(frozen=True)
class Inner:
    lr: float = 0.1
    layers: tuple[int, ...] = (1, 4)


@dataclass(frozen=True)
class Outer:
    name: str = field(help="a name")
    steps: int = 10
    inner: Inner = field(default_factory=Inner)
    path: Path | None = field(None, must_exist=True)
    device: str = field("cpu", hash=False)


def test_build_types_overrides_and_hash(tmp_path):
    cfg = build(Outer, {"name": "x", **parse_overrides(["steps=20", "inner.lr=1e-3", "inner.layers=1,2,3"])})
    assert cfg.steps == 20 and cfg.inner.lr == 1e-3 and cfg.inner.layers == (1, 2, 3)
    h = config_hash(cfg)
    assert h == config_hash(build(Outer, {"name": "x", "steps": 20, "inner": {"lr": 0.001, "layers": [1, 2, 3]}}))
    assert h == config_hash(build(Outer, {"name": "x", "steps": 20, "device": "cuda",
                                          "inner": {"lr": 0.001, "layers": [1, 2, 3]}}))  # not hashed
    assert h != config_hash(build(Outer, {"name": "x", "steps": 21, "inner": {"lr": 0.001, "layers": [1, 2, 3]}}))
    with pytest.raises(Exception):
        cfg.steps = 3  # frozen


@pytest.mark.parametrize("data, message", [
    ({"name": "x", "stesp": 3}, "unknown config key 'stesp' (did you mean 'steps'?)"),
    ({"name": "x", "steps": "many"}, "steps: expected an integer"),
    ({"steps": 3}, "missing required config key 'name'"),
    ({"name": "x", "inner": {"lrr": 1}}, "unknown config key 'inner.lrr' (did you mean 'inner.lr'?)"),
    ({"name": "x", "path": "/does/not/exist"}, "path: path '/does/not/exist' does not exist"),
])
def test_build_errors_name_the_key(data, message):
    with pytest.raises(ConfigError) as e:
        build(Outer, data)
    assert message in str(e.value)


def test_override_syntax_error():
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["steps"])
