"""``spatialboost demo``: the embedded default end to end on one CPU machine, nothing downloaded.

Synthetic world -> every registered suite (fast mode) for each baseline encoder -> MLflow -> report.
"""
from __future__ import annotations

import time
import traceback
from dataclasses import dataclass

from harness.config import build
from harness.registry import SUITES
from harness.runner import EvalConfig, evaluate
from harness.workspace import use_workspace


@dataclass(frozen=True)
class DemoPreset:
    world: str
    encoders: tuple[str, ...]
    batch_size: int


PRESETS = {
    "tiny": DemoPreset(world="tiny", encoders=("builtin:tiny-vit",), batch_size=32),
    "default": DemoPreset(world="default", encoders=("builtin:dinov2-s14-focus",), batch_size=32),
}


def run_demo(preset: str = "default", workspace=None, force: bool = False, suites: list[str] | None = None,
             progress: bool = True) -> int:
    from reports.build import build_report
    from suites.synthetic.defaults import use_preset, world_dir
    p = PRESETS[preset]
    ws = use_workspace(workspace)
    experiment = f"demo-{preset}"
    t0 = time.perf_counter()
    print(f"[demo] workspace {ws.root}")
    with use_preset(p.world):
        print(f"[demo] synthetic world '{p.world}' ...")
        world = world_dir(ws, progress=progress)
        print(f"[demo] world ready at {world} ({time.perf_counter() - t0:.0f}s)")
        skipped: list[str] = []
        for name in suites or SUITES.names():
            try:
                suite_cls = SUITES.get(name)
            except ImportError as e:
                skipped.append(f"{name}: not installed ({e})")
                print(f"[demo] skip {name}: {e}")
                continue
            for enc in p.encoders:
                t = time.perf_counter()
                cfg = build(EvalConfig, {"encoder": enc, "suite": name, "workspace": str(ws.root),
                                         "experiment": experiment, "protocol": suite_cls.demo_protocol(preset),
                                         "batch_size": p.batch_size, "force": force, "progress": progress})
                try:
                    rec = evaluate(cfg)
                except NotImplementedError as e:   # the suite has no embedded default data
                    skipped.append(f"{name}: {e}")
                    print(f"[demo] skip {name}: {e}")
                    break
                except Exception as e:  # noqa: BLE001 - one failing suite must not hide the others
                    traceback.print_exc()
                    skipped.append(f"{name} with {enc}: failed ({type(e).__name__}: {e})")
                    continue
                primary = suite_cls.spec.primary
                print(f"[demo] {name:<22} {enc:<28} {primary}={rec.metrics.get(primary, float('nan')):.3f} "
                      f"({'reused' if rec.reused else f'{time.perf_counter() - t:.0f}s'}, run {rec.run_id})")
    import os
    notes = [f"preset `{preset}`: world `{p.world}` at {world}", "mode: fast (cached features)",
             "classification: head selected on held-out train, reported on val"] + [f"skipped {s}" for s in skipped]
    paths = build_report(os.environ.get("MLFLOW_TRACKING_URI") or ws.tracking_uri, experiment, ws.reports,
                         notes=notes)
    report = paths["md"]
    print(f"[demo] report: {paths['md']} (also {paths['html'].name}, {paths['tex'].name})")
    print(f"[demo] done in {time.perf_counter() - t0:.0f}s")
    print(f"[demo] MLflow UI: spatialboost ui --workspace {ws.root}   (then open http://127.0.0.1:5000)")
    return 1 if any("failed" in s for s in skipped) else 0
