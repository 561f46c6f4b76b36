"""Boost variants of a campaign: each named set of BoostConfig / QA-data overrides is trained once through the
ordinary ``boost`` path, then evaluated as ``boosted:<run>/boosted`` like any other encoder.

A campaign file (see configs/ablations/) names a base boost and its variants::

    boost:
      encoder: builtin:dinov2-s14-focus        # the encoder every variant boosts
      source: /data/scannet                    # ScanNet-format root of the QA data (default: the world's)
      config: {lm: builtin:smollm2-135m, ...}  # BoostConfig overrides shared by every variant
      data:                                    # spatial QA generated from the campaign's world, per stage
        stage1: {task: caption, samples: 4}
        stage3: {task: cot, samples: 16, order: forward, levels: [pix, obj, scene], views: 1}
      suites: [depth.nyud]                     # where the boosted encoders are evaluated (default: all)
    boosts:
      - {name: reverse, data: {stage3: {order: reverse}}}
      - {name: lora, config: {variant: lora}}
      - {name: sv+mv, data: {stage3: {mix: [{views: 1, samples: 8}, {views: 2, samples: 8}]}}}
      - {name: vfm, data: {stage3: {estimators: {segmenter: "harness.commands.campaign_boost:ColourSegmenter"}}}}

QA files are cached by their options (``<workspace>/data/qa-campaign/<task>-<hash>/``); a boost whose config
hash already has an export is reused (no model is loaded), as the runner reuses finished evaluations. The
boost runs record what was varied (``boost.data.*`` tags, encoders/spatialboost/records.py) and every eval
run of a boosted encoder copies them, so the report groups rows by them (reports/ablations.py).
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.atomic import atomic_write, atomic_write_json
from harness.config import ConfigError, build, merge

BOOST_KEYS = {"encoder", "config", "data", "suites", "source"}
VARIANT_KEYS = {"name", "config", "data"}
STAGE_EXTRA = {"mix", "estimators"}     # stage data keys that are not QAOptions fields


@dataclass
class BoostPlan:
    name: str
    config: dict[str, Any]              # BoostConfig input without stage data paths
    data: dict[int, dict[str, Any]]     # stage -> QA options (+ mix / estimators)


def plan_boosts(spec) -> list[BoostPlan]:
    """Every variant's BoostConfig and QA options, validated before anything runs; errors name the variant."""
    if not spec.boosts:
        return []
    from encoders.spatialboost.boost_config import BoostConfig
    from encoders.spatialboost.qa import QAOptions
    base = dict(spec.boost or {})
    bad = set(base) - BOOST_KEYS
    if bad:
        raise ConfigError(f"boost: unknown key(s) {sorted(bad)}; allowed: {sorted(BOOST_KEYS)}")
    if not base.get("encoder"):
        raise ConfigError("boost.encoder: the encoder every boost variant starts from is required")
    plans, names = [], set()
    for i, var in enumerate(spec.boosts):
        where = f"boosts[{i}]"
        if not isinstance(var, dict) or not var.get("name"):
            raise ConfigError(f"{where}: each boost variant is a mapping with a 'name'")
        where = f"boosts[{i}] ({var['name']})"
        if var["name"] in names:
            raise ConfigError(f"{where}: duplicate name")
        names.add(var["name"])
        bad = set(var) - VARIANT_KEYS
        if bad:
            raise ConfigError(f"{where}: unknown key(s) {sorted(bad)}; allowed: {sorted(VARIANT_KEYS)}")
        cfg = merge(dict(base.get("config") or {}), var.get("config") or {})
        cfg["encoder"] = base["encoder"]
        data = merge(dict(base.get("data") or {}), var.get("data") or {})
        stages = {}
        for key, opts in data.items():
            if key not in ("stage1", "stage2", "stage3"):
                raise ConfigError(f"{where}: data.{key}: expected stage1 / stage2 / stage3")
            stages[int(key[-1])] = dict(opts or {})
        missing = [s for s in cfg.get("stages", (1, 2, 3)) if s not in stages]
        if missing:
            raise ConfigError(f"{where}: no QA data for stage(s) {missing} (boost.data.stage<k>)")
        try:
            build(BoostConfig, cfg)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
        for st, opts in stages.items():
            for part in _parts(opts):
                try:
                    QAOptions(**_qa_fields(part))
                except (TypeError, ValueError) as e:
                    raise ConfigError(f"{where}: data.stage{st}: {e}") from None
            for kind, target in (opts.get("estimators") or {}).items():
                _load_estimator(target, f"{where}: data.stage{st}.estimators.{kind}")
        plans.append(BoostPlan(var["name"], cfg, stages))
    return plans


def _parts(opts: dict) -> list[dict]:
    """A stage's QA options as the parts of its file: one, or each ``mix`` entry over the shared options."""
    shared = {k: v for k, v in opts.items() if k != "mix"}
    return [merge(dict(shared), m) for m in opts["mix"]] if opts.get("mix") else [shared]


def _qa_fields(part: dict) -> dict:
    out = {k: v for k, v in part.items() if k not in STAGE_EXTRA}
    if isinstance(out.get("levels"), list):
        out["levels"] = tuple(out["levels"])
    return out


def _load_estimator(target: str, where: str):
    """``module:Name`` -> an instance (a class or a factory called without arguments)."""
    mod, _, attr = str(target).partition(":")
    try:
        return getattr(importlib.import_module(mod), attr)()
    except Exception as e:  # noqa: BLE001 - any import / construction error names the key
        raise ConfigError(f"{where}='{target}': cannot build the estimator ({type(e).__name__}: {e})") from None


def qa_file(ws, world: Path, stage: int, opts: dict, progress: bool) -> Path:
    """Generate (once) the stage's conversation file; a mix concatenates its parts and writes a card whose
    ``parts`` are the parts' cards (records.data_tags reads them)."""
    from encoders.spatialboost.qa import QAOptions, generate_dataset
    from encoders.spatialboost.qa.estimators import Estimators
    key = hashlib.sha256(json.dumps([str(world), opts], sort_keys=True, default=str).encode()).hexdigest()[:12]
    out = Path(ws.data) / "qa-campaign" / f"stage{stage}-{opts.get('task', 'cot')}-{key}"
    data = out / "conversations.jsonl"
    if data.is_file() and (out / "dataset_card.json").is_file():
        return data
    est = {k: _load_estimator(v, f"data.stage{stage}.estimators.{k}") for k, v in (opts.get("estimators") or {}).items()}
    parts = _parts(opts)
    cards, lines = [], []
    for i, part in enumerate(parts):
        folder = out if len(parts) == 1 else out / f"part{i}"
        generate_dataset(world, folder, QAOptions(**_qa_fields(part)), progress=progress,
                         estimators=Estimators(**est) if est else None)
        text = (folder / "conversations.jsonl").read_text()
        if not text.strip():
            raise RuntimeError(f"the QA generator made no samples for stage {stage} {part} "
                               f"(see {folder}/dataset_card.json)")
        cards.append(json.loads((folder / "dataset_card.json").read_text()))
        lines.append(text.rstrip("\n"))
    if len(parts) > 1:
        atomic_write_json(out / "dataset_card.json", {"name": "spatialboost-spatial-qa-mix", "parts": cards,
                                                      "samples": sum(c["samples"] for c in cards)})
        atomic_write(data, "\n".join(lines) + "\n")
    return data


def exported(ws, cfg) -> str | None:
    """The boosted spec of a config whose run already exported (stage 3 completed), else None."""
    from harness.config import config_hash
    run_dir = Path(cfg.run_dir) if cfg.run_dir else Path(ws.root) / "boost" / config_hash(cfg)
    pipe = run_dir / "pipeline.json"
    if 3 in cfg.stages and (run_dir / "boosted" / "boosted.json").is_file() and pipe.is_file():
        if 3 in json.loads(pipe.read_text()).get("completed", []):
            return f"boosted:{run_dir / 'boosted'}"
    return None


# BoostConfig fields that act in stage 3 only: variants differing only in these share stages 1-2
STAGE3_ONLY = ("stages", "stage3", "variant", "stage3_projector", "dual_layers", "dual_a_init", "dual_share_out_proj",
               "lora_r", "lora_alpha")


def early_key(cfg) -> str:
    """Identity of a config's stages 1-2 (projector, then projector + LM; the encoder is frozen in both)."""
    from harness.config import to_dict
    d = {k: v for k, v in to_dict(cfg, hashed_only=True).items() if k not in STAGE3_ONLY}
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _index(ws) -> Path:
    return Path(ws.root) / "boost" / "early-stages"


def record_early(ws, cfg) -> None:
    """Remember a run folder whose stages 1-2 finished, for variants that only change stage 3."""
    from harness.config import config_hash
    from encoders.spatialboost.checkpoints import latest_checkpoint, read_state
    run_dir = Path(cfg.run_dir) if cfg.run_dir else Path(ws.root) / "boost" / config_hash(cfg)
    cks = [latest_checkpoint(run_dir, st) for st in (1, 2)]
    if tuple(cfg.stages) == (1, 2, 3) and all(c and read_state(c).get("done") for c in cks):
        _index(ws).mkdir(parents=True, exist_ok=True)
        atomic_write_json(_index(ws) / f"{early_key(cfg)}.json", {"run_dir": str(run_dir)})


def index_runs(ws) -> None:
    """Index the workspace's finished stage-1/2 runs (those trained before this campaign, or by another one)."""
    from encoders.spatialboost.boost_config import BoostConfig
    for pipe in sorted((Path(ws.root) / "boost").glob("*/pipeline.json")):
        try:
            cfg = build(BoostConfig, {**json.loads(pipe.read_text())["config"], "run_dir": str(pipe.parent)})
        except (ConfigError, KeyError, ValueError, TypeError):
            continue
        record_early(ws, cfg)


def share_early(ws, cfg, log) -> str | None:
    """Seed a new run folder with the finished stage-1/2 checkpoints of a run with the same early stages
    (hard links): the trainer then finds them done, loads the stage-2 weights and trains stage 3 only, as it
    does when it resumes. The same computation with the same seeds, done once per campaign workspace;
    ``shared_stages.json`` in the run folder names the source."""
    from harness.config import config_hash
    from encoders.spatialboost.checkpoints import latest_checkpoint, read_state, stage_dir
    run_dir = Path(cfg.run_dir) if cfg.run_dir else Path(ws.root) / "boost" / config_hash(cfg)
    if tuple(cfg.stages) != (1, 2, 3) or latest_checkpoint(run_dir, 1):
        return None
    if not (_index(ws) / f"{early_key(cfg)}.json").is_file():
        index_runs(ws)
    entry = _index(ws) / f"{early_key(cfg)}.json"
    if not entry.is_file():
        return None
    src = Path(json.loads(entry.read_text())["run_dir"])
    cks = [latest_checkpoint(src, st) for st in (1, 2)]
    if src == run_dir or not all(c and read_state(c).get("done") for c in cks):
        return None
    import os
    import shutil
    for st, ck in zip((1, 2), cks):
        dest = stage_dir(run_dir, st) / ck.name
        shutil.rmtree(dest, ignore_errors=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(ck, dest, copy_function=os.link)
    atomic_write_json(run_dir / "shared_stages.json", {"from": str(src), "stage1": str(cks[0]), "stage2": str(cks[1])})
    log(f"stages 1-2 shared from {src.name} (same stage-1/2 config and data)")
    return str(src)


@contextlib.contextmanager
def boost_lease(ws, cfg, log):
    """One process of this machine at a time per boost config (an flock, released if the holder dies)."""
    from filelock import FileLock, Timeout
    from harness.config import config_hash
    folder = Path(ws.root) / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder / f"boost-{config_hash(cfg)}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log(f"waiting: boost {config_hash(cfg)} is being trained by another process")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def run_boosts(spec, plans: list[BoostPlan], progress: bool, log) -> dict[str, dict]:
    """Train each variant (or reuse its export); name -> {status, spec | error, seconds}."""
    import time
    import traceback
    from encoders.spatialboost.boost_config import BoostConfig
    from harness.workspace import open_workspace
    from suites.synthetic.defaults import scannet_root, world_dir
    ws = open_workspace(spec.workspace, spec.world)
    if (spec.boost or {}).get("source"):
        world = Path(spec.boost["source"]).expanduser()
        if not world.is_dir():
            raise ConfigError(f"boost.source='{world}': no such folder (a ScanNet-format root)")
    else:
        world_dir(ws, progress=progress)
        world = scannet_root(ws)    # the QA generator reads ScanNet's format, as it would real ScanNet
    out: dict[str, dict] = {}
    for plan in plans:
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            files = {st: qa_file(ws, world, st, opts, progress) for st, opts in plan.data.items()}
            stages = {f"stage{st}": {**plan.config.get(f"stage{st}", {}), "data": str(p)} for st, p in files.items()}
            cfg = build(BoostConfig, {**plan.config, **stages, "image_root": str(world), "workspace": str(ws.root),
                                      "experiment": f"{spec.experiment}-boost", "progress": progress})
            with boost_lease(ws, cfg, log):     # two campaigns sharing a variant: one trains, the other reuses
                done = exported(ws, cfg)
                if done:
                    out[plan.name] = {"status": "reused", "spec": done, "seconds": time.perf_counter() - t0}
                else:
                    from encoders.spatialboost.trainer import run_boost
                    shared = share_early(ws, cfg, lambda m: log(f"[boost {plan.name}] {m}"))
                    boosted = run_boost(cfg, echo=lambda m: log(f"[boost {plan.name}] {m}"))
                    if not boosted:
                        raise RuntimeError("the trainer exported no encoder")
                    out[plan.name] = {"status": "done", "spec": boosted, "seconds": time.perf_counter() - t0,
                                      **({"stages_1_2_from": shared} if shared else {})}
                record_early(ws, cfg)
        except Exception as e:  # noqa: BLE001 - the other variants still run; the campaign exits 1
            out[plan.name] = {"status": "failed", "error": f"{type(e).__name__}: {e}",
                              "traceback": traceback.format_exc(), "seconds": time.perf_counter() - t0}
        out[plan.name]["cpu_seconds"] = time.process_time() - c0
        log(f"boost {plan.name}: {out[plan.name]['status']} ({out[plan.name]['seconds']:.0f}s wall, "
            f"{out[plan.name]['cpu_seconds']:.0f}s CPU) "
            f"{out[plan.name].get('spec') or out[plan.name].get('error')}")
    return out


class ColourSegmenter:
    """An image-only stand-in for a VFM segmenter (SAM) in the CPU demo of Table 19: instances = connected
    regions of one quantised colour (the synthetic world's objects are flat-shaded), labelled by their mean
    colour's name; large regions touching two image borders (walls, floor) are left out. Its errors (merged
    or split objects, lighting seams) are what a data pipeline built on an estimator inherits; the paper's
    Depth-Pro / SAM plug into the same ``estimators`` keys."""

    NAMES = {"red": (200, 50, 50), "green": (50, 170, 60), "blue": (50, 80, 200), "yellow": (210, 200, 60),
             "purple": (140, 60, 170), "orange": (230, 140, 40), "cyan": (60, 190, 200), "grey": (128, 128, 128),
             "white": (230, 230, 230), "black": (30, 30, 30), "brown": (120, 80, 40)}

    def __init__(self, levels: int = 6, min_pixels: int = 30):
        self.levels, self.min_pixels = levels, min_pixels

    def segment(self, rgb):
        import numpy as np
        from scipy import ndimage
        q = (rgb.astype(np.int32) * self.levels // 256)
        code = (q[..., 0] * self.levels + q[..., 1]) * self.levels + q[..., 2]
        inst = np.zeros(code.shape, np.int32)
        labels: dict[int, str] = {}
        H, W = code.shape
        for c in np.unique(code):
            comp, n = ndimage.label(code == c)
            for k in range(1, n + 1):
                m = comp == k
                if m.sum() < self.min_pixels:
                    continue
                ys, xs = np.nonzero(m)
                borders = (ys.min() == 0) + (ys.max() == H - 1) + (xs.min() == 0) + (xs.max() == W - 1)
                if borders >= 2 and m.sum() > 0.15 * H * W:
                    continue                      # wall / floor
                nid = len(labels) + 1
                inst[m] = nid
                mean = rgb[m].mean(0)
                labels[nid] = min(self.NAMES, key=lambda name: float(((np.array(self.NAMES[name]) - mean) ** 2).sum()))
                labels[nid] += " object"
        return inst, labels
