"""One generic registry for encoders, suites, heads and metrics.

Entries are registered with a decorator, as lazy ``"module:attr"`` strings (so nothing depends on import
side effects and heavy suites import only when asked for), or by outside packages through the Python
entry-point group ``spatialboost.<kind>``.
"""
from __future__ import annotations

import difflib
import importlib
from importlib import metadata
from typing import Callable, Generic, Iterator, TypeVar

from harness.errors import UserError

T = TypeVar("T")


class RegistryError(UserError, KeyError):
    """Unknown name; the message lists close matches."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T | str] = {}
        self._entry_points_loaded = False

    # -- registration -------------------------------------------------------------------------
    def register(self, name: str, obj: T | str | None = None) -> Callable[[T], T] | T | str:
        """``@reg.register("name")`` on a class/function, or ``reg.register("name", "pkg.mod:attr")``."""
        if obj is not None:
            self._add(name, obj)
            return obj

        def deco(o: T) -> T:
            self._add(name, o)
            return o

        return deco

    def _add(self, name: str, obj: T | str) -> None:
        if name in self._entries and self._entries[name] is not obj:
            existing = self._entries[name]
            # re-registering the same lazy target after import is fine
            if not (isinstance(existing, str) and not isinstance(obj, str)
                    and existing == f"{obj.__module__}:{getattr(obj, '__qualname__', '')}"):
                raise ValueError(f"{self.kind} '{name}' is already registered")
        self._entries[name] = obj

    # -- lookup -------------------------------------------------------------------------------
    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in metadata.entry_points(group=f"spatialboost.{self.kind}"):
            self._entries.setdefault(ep.name, ep.value)

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        self._load_entry_points()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> T:
        self._load_entry_points()
        if name not in self._entries:
            close = difflib.get_close_matches(name, self._entries, n=3, cutoff=0.5)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise RegistryError(
                f"unknown {self.kind} '{name}'.{hint} Known: {', '.join(self.names()) or '(none)'}")
        entry = self._entries[name]
        if isinstance(entry, str):
            module_name, _, attr = entry.partition(":")
            obj = importlib.import_module(module_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
            self._entries[name] = entry = obj
        return entry


ENCODERS: Registry = Registry("encoders")   # spec scheme -> factory(target, opts, spec, workspace) -> Encoder
SUITES: Registry = Registry("suites")       # suite name -> Suite class
HEADS: Registry = Registry("heads")         # head name -> head factory
METRICS: Registry = Registry("metrics")     # metric name -> Metric class

# Built-in entries, lazily imported on first use.
for _scheme, _target in {
    "timm": "encoders.adapters.timm_vit:build_timm",
    "hf": "encoders.adapters.hf:build_hf",
    "open_clip": "encoders.adapters.openclip:build_open_clip",
    "torchhub": "encoders.adapters.torchhub:build_torchhub",
    "builtin": "encoders.builtin:build_builtin",
    "boosted": "encoders.spatialboost.boosted:build_boosted",
    "random": "encoders.random_init:build_random",
}.items():
    ENCODERS.register(_scheme, _target)

for _suite, _target in {
    "cls.imagenet": "suites.classification.suite:ClassificationSuite",
    "depth.nyud": "suites.depth.suite:NYUdSuite",
    "depth.kitti": "suites.depth.suite:KittiSuite",
    "seg.ade20k": "suites.segmentation.suite:ADE20KSuite",
    "seg.voc": "suites.segmentation.suite:VOCSuite",
    "retrieval.roxford": "suites.retrieval.suite:ROxfordSuite",
    "retrieval.rparis": "suites.retrieval.suite:RParisSuite",
    "retrieval.met": "suites.retrieval.suite:MetSuite",
    "retrieval.amstertime": "suites.retrieval.suite:AmsterTimeSuite",
    "cortexbench.metaworld": "suites.cortexbench.suite:MetaWorldSuite",
    "cortexbench.dmc": "suites.cortexbench.suite:DMCSuite",
    "cortexbench.adroit": "suites.cortexbench.suite:AdroitSuite",
    "cortexbench.trifinger": "suites.cortexbench.suite:TriFingerSuite",
}.items():
    SUITES.register(_suite, _target)


def parse_encoder_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """``scheme:target?key=value&...`` -> (scheme, target, options)."""
    from urllib.parse import parse_qsl
    if ":" not in spec:
        raise RegistryError(f"encoder spec '{spec}' has no scheme; expected one of "
                            f"{', '.join(s + ':...' for s in ENCODERS.names())}")
    scheme, rest = spec.split(":", 1)
    target, _, query = rest.partition("?")
    opts = dict(parse_qsl(query, keep_blank_values=True)) if query else {}
    return scheme, target, opts


def build_encoder(spec: str, workspace=None):
    """The frozen, eval-mode encoder of ``spec``; ``workspace`` (a :class:`harness.workspace.Workspace`;
    default: the one ``$SPATIALBOOST_HOME`` names) holds converted weights (models/) and the tracking store
    that ``boosted:runs:/...`` resolves against."""
    if workspace is None:
        from harness.workspace import open_workspace
        workspace = open_workspace()
    scheme, target, opts = parse_encoder_spec(spec)
    factory = ENCODERS.get(scheme)
    enc = factory(target, opts, spec, workspace)
    for p in enc.parameters():
        p.requires_grad_(False)
    return enc.eval()


for _head, _target in {"linear": "heads.linear_grid:LinearGrid", "knn": "heads.knn:knn_predict"}.items():
    HEADS.register(_head, _target)
