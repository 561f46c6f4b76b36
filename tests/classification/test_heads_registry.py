"""HEADS and METRICS list every head type and metric implementation of the built-in suites, lazily, each with
a one-line description, and every entry loads."""
from harness.registry import HEADS, METRICS, SUITES

FAMILIES = ("cls", "depth", "seg", "retrieval", "cortexbench", "lexicon3d")   # the built-in suite families


def test_every_head_of_every_builtin_suite_is_registered():
    for name in SUITES.names():
        family = name.split(".")[0]
        if family not in FAMILIES:
            continue
        spec = SUITES.get(name).spec
        for head in spec.heads:
            assert f"{family}.{head}" in HEADS, (name, head)


def test_entries_describe_themselves_and_load():
    import harness.commands.cli as cli
    for reg in (HEADS, METRICS):
        for name in reg.names():
            entry = reg.get(name)
            line = cli._summary(entry)
            assert len(line) > 20 and "\n" not in line, name
            assert callable(entry.load()), name
    assert {"cls.topk", "depth.errors", "seg.miou", "retrieval.map", "retrieval.gap",
            "cortexbench.success"} <= set(METRICS.names())
