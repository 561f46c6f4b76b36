"""Range rules on config fields are checked by ``build`` before any work."""
from dataclasses import dataclass

import pytest

from harness.config import ConfigError, build, field


@dataclass(frozen=True)
class Opts:
    frac: float = field(0.1, min=0, max=1, max_open=True)
    lrs: tuple[float, ...] = field((0.1,), min=0, min_open=True, nonempty=True)
    epochs: int = field(10, min=1)


def test_ranges_accept_and_refuse():
    assert build(Opts, {"frac": "0.5", "lrs": "[0.1,0.2]"}).lrs == (0.1, 0.2)
    for key, value, msg in [("frac", 1.5, "frac=1.5: must be < 1"), ("frac", -0.5, "must be >= 0"),
                            ("frac", 1, "must be < 1"), ("lrs", "[]", "lrs: must not be empty"),
                            ("lrs", "[0.1,0]", r"lrs\[1\]=0.0: must be > 0"), ("epochs", -1, "epochs=-1")]:
        with pytest.raises(ConfigError, match=msg):
            build(Opts, {key: value}, prefix="protocol.")
