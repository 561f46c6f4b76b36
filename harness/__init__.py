"""Harness core: config, registries, feature cache, tracking, runner, CLI."""
__version__ = "0.1.0"
