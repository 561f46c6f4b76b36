"""The command layer: the only part of the harness that wires plugins (encoders, suites, heads, results,
reports) together. The core below it (``harness/*.py``) knows plugins only through the registries."""
