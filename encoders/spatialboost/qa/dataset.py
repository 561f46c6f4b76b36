"""Dataset generation: units (views or view groups) -> samples -> streamed LLaVA JSONL + dataset card.

Deterministic by seed: the unit order is a seeded permutation, sample ``k`` draws from
``default_rng([seed, k])`` and per-view geometry from ``default_rng([seed, crc32(view key)])``.
The JSONL is written to a temporary name and renamed when complete (``harness.atomic``); the card likewise.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter, OrderedDict, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from harness.atomic import atomic_file, atomic_write_json

from . import geometry as G
from .builder import SceneContext, Skip, build_caption_sample, build_cot_sample, build_mvqa_sample, to_llava
from .estimators import Estimators
from .multiview import extend_views, make_metric, select_pairs, _gray64
from .options import QAOptions
from .scene import ViewGeometry, compute_view_geometry, fused_objects, single_view_objects
from .sources import Source, ViewError, ViewRef, complete_observation, open_source

__all__ = ["Generator", "generate_dataset", "iter_samples", "GenStats", "DATA_FILE", "CARD_FILE", "export_json",
           "log_dataset_to_mlflow"]

DATA_FILE = "conversations.jsonl"
CARD_FILE = "dataset_card.json"
CANONICAL_FRAME = ("right-handed, metres; +Y up (floor normal), floor at Y=0, +X = the (first) camera's right "
                   "projected on the floor, +Z = X x Y (horizontal, towards the viewer); origin on the floor below "
                   "the camera. Camera-relative (origin at the camera, +Y = camera up) when no floor was found.")


@dataclass
class GenStats:
    samples: int = 0
    attempts: int = 0
    skipped: Counter = field(default_factory=Counter)
    skip_examples: dict = field(default_factory=lambda: defaultdict(list))
    levels: Counter = field(default_factory=Counter)
    families: Counter = field(default_factory=Counter)
    views: Counter = field(default_factory=Counter)
    floor_fallback_views: int = 0
    geometry_views: int = 0
    pair_distances: list = field(default_factory=list)

    def skip(self, reason: str, detail: str) -> None:
        self.skipped[reason] += 1
        if len(self.skip_examples[reason]) < 5:
            self.skip_examples[reason].append(detail)


class Generator:
    """Holds the source, estimators, options and the per-view geometry cache."""

    def __init__(self, source: Source | str | os.PathLike, options: QAOptions = QAOptions(),
                 estimators: Estimators | None = None, cache_size: int = 4096, metric=None):
        self.source = source if isinstance(source, Source) else open_source(source, label_map=options.label_map)
        self.opt = options
        self.est = estimators or Estimators()
        self.stats = GenStats()
        self._geo: OrderedDict = OrderedDict()
        self._ctx: OrderedDict = OrderedDict()
        self._cache_size = cache_size
        self._refs = self.source.refs()
        if not self._refs:   # nothing to ask about: refuse before any output file exists
            raise ViewError(f"'{source}': no views found ({type(self.source).__name__}: expected a ScanNet-format "
                            "folder (scannet_2d/<scene>/color/) or a folder of images)", "no views")
        self._by_group: dict[str, list[ViewRef]] = defaultdict(list)
        for r in self._refs:
            self._by_group[r.group].append(r)
        self._recon: dict = {}
        self._metric_override = metric
        self.metric_name = None
        self.window = None
        self.vocabulary: set = set()

    # ------------------------------------------------------------------ geometry
    def geometry(self, ref: ViewRef) -> ViewGeometry:
        """Per-view geometry (cached); raises ViewError for an unusable view."""
        if ref.key in self._geo:
            self._geo.move_to_end(ref.key)
            g = self._geo[ref.key]
            if isinstance(g, ViewError):
                raise g
            return g
        try:
            obs = self.source.load(ref)
            if self.est.image_filter is not None:
                ok, why = self.est.image_filter.accept(obs.rgb)
                if not ok:
                    raise ViewError(f"{ref.image}: filtered out ({why})", "image filter")
            if self.est.reconstructor is not None and self.opt.views > 1:
                d, K, T = self._reconstructed(ref)
                obs.depth, obs.K, obs.cam_to_world = d, K, T
            obs = complete_observation(obs, self.est)
            g = compute_view_geometry(obs, self.opt.seed, self.opt.min_object_pixels, self.opt.min_object_points,
                                      dense=self.opt.dense_backprojection)
            self.stats.geometry_views += 1
            self.stats.floor_fallback_views += int(not g.canonical.floor_found)
            self.vocabulary.update(o.category for o in g.objects)
        except ViewError as e:
            if self.opt.strict:
                raise
            g = e
        self._geo[ref.key] = g
        if len(self._geo) > self._cache_size:
            self._geo.popitem(last=False)
        if isinstance(g, ViewError):
            raise g
        return g

    def _reconstructed(self, ref: ViewRef):
        if ref.group not in self._recon:
            refs = self._by_group[ref.group]
            rgbs = [self.source.load(r).rgb for r in refs]
            out = self.est.reconstructor.reconstruct(rgbs)
            if len(out) != len(refs):
                raise ValueError(f"reconstructor returned {len(out)} views for {len(refs)} in group {ref.group}")
            self._recon[ref.group] = {r.key: o for r, o in zip(refs, out)}
        return self._recon[ref.group][ref.key]

    # ------------------------------------------------------------------ units
    def units(self) -> list[tuple[ViewRef, ...]]:
        opt = self.opt
        if opt.views == 1 and opt.task in ("cot", "caption"):
            units = [(r,) for r in self._refs]
        else:
            units = self._pair_units()
        order = np.random.default_rng([opt.seed, 7919]).permutation(len(units))
        return [units[k] for k in order]

    def _pair_units(self) -> list[tuple[ViewRef, ...]]:
        name = self.opt.metric
        if self._metric_override is not None:
            name, fn, win = "custom", self._metric_override, (self.opt.window or (0.0, float("inf")))
        else:
            name, fn, win = make_metric(name)
        win = self.opt.window or win
        self.metric_name, self.window = name, win
        if name == "pose" or self.opt.views > 1:
            if not self.source.has_poses() and self.est.reconstructor is None:
                first = self._refs[0].image if self._refs else str(self.source.root)
                raise ValueError(f"{self.source.root}: multi-view samples need camera poses, and this source "
                                 f"({self.source.kind}, e.g. {first}) has none; give a reconstructor")
        units = []
        for group in sorted(self._by_group):
            refs = self._by_group[group]
            if len(refs) < 2:
                continue
            poses = None
            if self.source.has_poses():
                poses = [self.source.pose(r) for r in refs]
            if name == "pose":
                def dist(i, j, poses=poses):
                    if poses[i] is None or poses[j] is None:
                        return float("nan")
                    return G.pose_distance(poses[i], poses[j])
            elif name == "ssim":
                grays = {}

                def dist(i, j, refs=refs, grays=grays):
                    from skimage.metrics import structural_similarity

                    for k in (i, j):
                        if k not in grays:
                            grays[k] = _gray64(self._rgb(refs[k]))
                    return float(1.0 - structural_similarity(grays[i], grays[j], data_range=1.0))
            else:
                rgbs = {}

                def dist(i, j, refs=refs, rgbs=rgbs, fn=fn):
                    for k in (i, j):
                        if k not in rgbs:
                            rgbs[k] = self._rgb(refs[k])
                    return fn(rgbs[i], rgbs[j])
            pairs, alld = select_pairs([r.key for r in refs], dist, win)
            self.stats.pair_distances += alld
            if not pairs:
                self.stats.skip("no view pair in the perceptual window", f"{group}: {len(refs)} views")
            n = self.opt.views
            for i, j, _ in pairs:
                if n == 2:
                    units.append((refs[i], refs[j]))
                    continue
                if poses is None or any(p is None for p in poses):
                    self.stats.skip(f"cannot extend to {n} views", f"{group}: poses missing")
                    continue
                try:
                    gi, gj = self.geometry(refs[i]), self.geometry(refs[j])
                except ViewError as e:
                    self.stats.skip(e.reason, str(e))
                    continue
                common = {o.instance_id for o in gi.objects} & {o.instance_id for o in gj.objects}
                big = sorted(gi.objects, key=lambda o: -o.pixels)
                req = set(sorted(common, key=lambda k: -(gi.object(k).pixels))[:2]) if len(common) >= 2 \
                    else {o.instance_id for o in big[:2]}
                vis = []
                for r in refs:
                    try:
                        vis.append({o.instance_id for o in self.geometry(r).objects})
                    except ViewError:
                        vis.append(set())
                ext = extend_views((i, j), n, list(range(len(refs))), poses, vis, req)
                if ext is None:
                    self.stats.skip(f"cannot extend to {n} views", f"{group}: pair {refs[i].index},{refs[j].index}")
                    continue
                units.append(tuple(refs[k] for k in ext))
        return units

    def _rgb(self, ref: ViewRef) -> np.ndarray:
        from PIL import Image

        p = Path(self.source.root) / ref.image
        if not p.is_file():
            raise ValueError(f"{p}: image of view {ref.key} is missing")
        return np.asarray(Image.open(p).convert("RGB"))

    # ------------------------------------------------------------------ samples
    def context(self, unit: tuple[ViewRef, ...]) -> SceneContext:
        """Objects boxed in the anchor's canonical frame (cached per unit; deterministic)."""
        key = tuple(r.key for r in unit)
        ctx = self._ctx.get(key)
        if ctx is None:
            ctx = self._context(unit)
            self._ctx[key] = ctx
            if len(self._ctx) > 512:
                self._ctx.popitem(last=False)
        return ctx

    def _context(self, unit: tuple[ViewRef, ...]) -> SceneContext:
        geoms = [self.geometry(r) for r in unit]
        if len(geoms) == 1:
            g = geoms[0]
            objs = single_view_objects(g)
            return SceneContext(g, objs, [g.image], g.canonical.floor_found, [g.size])
        objs, canon = fused_objects(geoms)
        return SceneContext(geoms[0], objs, [g.image for g in geoms], canon.floor_found, [g.size for g in geoms])

    def make_sample(self, unit: tuple[ViewRef, ...], k: int, cycle: int = 0) -> dict:
        """Build sample number ``k`` from ``unit``; raises Skip / ViewError."""
        rng = np.random.default_rng([self.opt.seed, k])
        if self.opt.task == "mvqa":
            g1, g2 = self.geometry(unit[0]), self.geometry(unit[1])
            turns = build_mvqa_sample(g1, g2, sorted(self.vocabulary), rng, self.opt.min_object_pixels)
            images = [g1.image, g2.image]
        elif self.opt.task == "caption":
            ctx = self.context(unit)
            turns = build_caption_sample(ctx, rng, self.est.captioner)
            images = ctx.images
        else:
            ctx = self.context(unit)
            turns = build_cot_sample(ctx, self.opt, rng, self.est.captioner)
            images = ctx.images
        sid = "|".join(r.key for r in unit) + f"#{cycle}"
        meta = {"task": self.opt.task, "views": len(images), "source_views": [r.key for r in unit],
                "order": self.opt.order}
        return to_llava(sid, images, turns, meta)

    def __iter__(self) -> Iterator[dict]:
        opt = self.opt
        units = self.units()
        target = opt.samples if opt.samples is not None else len(units)
        bad: set = set()
        k = 0
        cycle = 0
        while self.stats.samples < target and units:
            made_this_cycle = 0
            for unit in units:
                if self.stats.samples >= target:
                    break
                uk = tuple(r.key for r in unit)
                if uk in bad:
                    continue
                self.stats.attempts += 1
                k += 1
                try:
                    rec = self.make_sample(unit, k, cycle)
                except ViewError as e:
                    if opt.strict:
                        raise
                    self.stats.skip(e.reason, str(e))
                    bad.add(uk)
                    continue
                except Skip as e:
                    self.stats.skip(e.reason, " ".join(uk))
                    if e.reason == "fewer than two objects":
                        bad.add(uk)
                    continue
                self.stats.samples += 1
                made_this_cycle += 1
                self.stats.views[rec["meta"]["views"]] += 1
                for t in rec["meta"]["turns"]:
                    self.stats.levels[t["level"]] += 1
                    self.stats.families[t["family"]] += 1
                yield rec
            cycle += 1
            if made_this_cycle == 0 or opt.samples is None:
                break

    def card(self, out_file: str | None = None, elapsed: float | None = None) -> dict:
        s = self.stats
        d = {
            "name": "spatialboost-spatial-qa",
            "task": self.opt.task,
            "format": "llava-conversations-jsonl",
            "data_file": out_file or DATA_FILE,
            "source": {"path": str(Path(self.source.root).resolve()), "kind": self.source.kind,
                       "fingerprint": self.source.fingerprint(), "image_root": str(Path(self.source.root).resolve()),
                       "notes": list(self.source.notes)},
            "options": self.opt.to_dict(),
            "seed": self.opt.seed,
            "estimators": self.est.describe(),
            "samples": s.samples,
            "attempts": s.attempts,
            "turns_per_level": dict(s.levels),
            "turns_per_template_family": dict(sorted(s.families.items())),
            "samples_per_view_count": {str(k): v for k, v in sorted(s.views.items())},
            "skipped": dict(s.skipped),
            "skip_examples": {k: v for k, v in s.skip_examples.items()},
            "geometry_views": s.geometry_views,
            "floor_fallback_views": s.floor_fallback_views,
            "canonical_frame": CANONICAL_FRAME,
            "units": "metres (lengths < 1 m in whole centimetres, else 2 decimals); points as normalized (x, y) of the "
                     "first image" if self.opt.point_format == "normalized" else "metres; points as pixel (x, y)",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        if self.metric_name:
            pdist = np.asarray(s.pair_distances, np.float64)
            d["view_pairs"] = {"metric": self.metric_name, "window": list(self.window),
                               "pairs_considered": int(len(pdist)),
                               "distance_quantiles": (np.nanquantile(pdist, [0.05, 0.25, 0.5, 0.75, 0.95]).round(3).tolist()
                                                      if len(pdist) else [])}
        if elapsed is not None:
            d["seconds"] = round(elapsed, 2)
        return d


def iter_samples(source, options: QAOptions = QAOptions(), estimators: Estimators | None = None) -> Iterator[dict]:
    """Stream LLaVA records (no files written)."""
    yield from Generator(source, options, estimators)


def generate_dataset(source_dir, out_dir, options: QAOptions = QAOptions(), progress: bool = True,
                     estimators: Estimators | None = None, tracking_uri: str | None = None,
                     experiment: str = "spatialboost-data") -> Path:
    """Write ``out_dir/conversations.jsonl`` (streamed, renamed into place when complete) and
    ``out_dir/dataset_card.json``; returns ``out_dir``. With ``tracking_uri`` the folder is also
    logged as an MLflow artifact (``dataset/``) of a run in ``experiment``."""
    t0 = time.perf_counter()
    gen = Generator(source_dir, options, estimators)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bar = None
    try:
        with atomic_file(out / DATA_FILE) as tmp, open(tmp, "w") as f:
            if progress:
                from tqdm import tqdm

                # no --samples: the total is unknown until the units are listed, so the bar just counts
                bar = tqdm(total=options.samples, desc=f"spatial QA ({options.task}, {options.views} view)", unit="sample")
            for rec in gen:
                f.write(json.dumps(rec, separators=(",", ":")) + "\n")
                if bar is not None:     # (a tqdm without total has no truth value: `if bar` raises)
                    bar.update(1)
                    if gen.stats.skipped:
                        bar.set_postfix(skipped=sum(gen.stats.skipped.values()), refresh=False)
    finally:
        if bar is not None:
            bar.close()
    atomic_write_json(out / CARD_FILE, gen.card(DATA_FILE, time.perf_counter() - t0))
    if tracking_uri:
        log_dataset_to_mlflow(out, tracking_uri, experiment, options)
    return out


def export_json(jsonl_path, json_path) -> Path:
    """LLaVA's original loader wants one JSON list: stream the JSONL into it (atomic)."""
    src, dst = Path(jsonl_path), Path(json_path)
    with atomic_file(dst) as tmp, open(src) as fi, open(tmp, "w") as fo:
        fo.write("[")
        first = True
        for line in fi:
            if line.strip():
                fo.write(("" if first else ",\n") + line.strip())
                first = False
        fo.write("]\n")
    return dst


def log_dataset_to_mlflow(out_dir, tracking_uri: str, experiment: str = "spatialboost-data",
                          options: QAOptions | None = None) -> str:
    """Log the dataset folder as an artifact with MLflow's client; returns the run id."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    card = json.loads((Path(out_dir) / CARD_FILE).read_text())
    run = client.create_run(exp_id, tags={"kind": "dataset", "task": card["task"],
                                          "source_fingerprint": card["source"]["fingerprint"]})
    rid = run.info.run_id
    try:
        for k, v in (options.to_dict() if options else card["options"]).items():
            client.log_param(rid, k, json.dumps(v) if isinstance(v, (list, dict)) else v)
        client.log_metric(rid, "samples", card["samples"])
        client.log_metric(rid, "skipped", sum(card["skipped"].values()))
        client.log_artifacts(rid, str(out_dir), "dataset")
        client.set_terminated(rid, "FINISHED")
    except Exception:
        client.set_terminated(rid, "FAILED")
        raise
    return rid
