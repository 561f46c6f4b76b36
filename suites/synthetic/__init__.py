"""Embedded synthetic 3D world (MuJoCo) that writes real benchmark formats.

Public API (imported lazily so ``categories`` works without MuJoCo/GL):
``WorldConfig``, ``generate_world``, ``load_view``, ``iter_views``, ``list_views``,
``View``, ``ObjectAnno``, ``world_fingerprint`` and the writers in ``writers``.
See README.md in this folder.
"""

from __future__ import annotations

_WORLD = ("WorldConfig", "generate_world", "load_view", "iter_views", "list_views", "View", "ObjectAnno",
          "world_fingerprint", "read_manifest")

__all__ = list(_WORLD)


def __getattr__(name):
    if name in _WORLD:
        from . import world

        return getattr(world, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
