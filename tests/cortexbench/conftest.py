import pytest

from harness.registry import SUITES

for _name, _target in {
    "cortexbench.metaworld": "suites.cortexbench.suite:MetaWorldSuite",
    "cortexbench.dmc": "suites.cortexbench.suite:DMCSuite",
    "cortexbench.adroit": "suites.cortexbench.suite:AdroitSuite",
    "cortexbench.trifinger": "suites.cortexbench.suite:TriFingerSuite",
}.items():
    if _name not in SUITES:
        SUITES.register(_name, _target)


@pytest.fixture(scope="session")
def mw_demos(tmp_path_factory):
    """Three scripted-expert drawer-open episodes at 64 px (shared by the tests of this folder)."""
    pytest.importorskip("metaworld")
    from suites.cortexbench.demos import generate_metaworld
    root = tmp_path_factory.mktemp("cortexbench") / "data"
    return generate_metaworld(root, ["drawer-open"], num_demos=3, size=64, workers=2, progress=False)
