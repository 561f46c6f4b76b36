"""CortexBench behaviour cloning on frozen encoders (paper Table 4, App. A.5; eai-vc @e782c35 mujoco_vc).

Per task and seed: demo frames -> frozen [CLS] embeddings through the feature cache -> last 3 frames fused
(deltas + last) (+ proprioception for MetaWorld/Adroit) -> BatchNorm-MLP (256,256,256) trained with MSE,
Adam 1e-3, batch 256, for 100 epochs; every ``eval_every`` epochs (and after the last) the policy is rolled
out in the simulator (spawned workers, frames embedded on the fly). Reported: best-epoch (the paper's /
CortexBench's convention, optimistic) and last-epoch numbers, mean +- std over seeds 100/200/300.

There is no held-out split in CortexBench, so ``SuiteSpec.validation`` is None: sweeps have no honest
selection metric here.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from harness.config import field
from harness.workspace import current as current_workspace
from harness.suite import MetricSpec, RunContext, Suite, SuiteResult, SuiteSpec
from heads.bc_policy import BCPolicy, episode_features, train_epoch
from suites.cortexbench.demos import DemoFrames, demo_fingerprint, generate_metaworld, load_demos
from suites.cortexbench.envs import (ADROIT_TASKS, DMC_TASKS, METAWORLD_CAMERA, METAWORLD_TASKS,
                                     TRIFINGER_TASKS, check_task, require)
from suites.images import DataError, eval_transform

DEFAULT_DATA_SIZE = 256


# -- metric aggregation ---------------------------------------------------------------------------

def _std(x) -> float:
    x = np.asarray(x, float)
    return float(x.std(ddof=1)) if len(x) > 1 else 0.0


def aggregate(curves: dict[str, dict[int, list[tuple[int, float]]]], metric: str) -> dict[str, float]:
    """curves[task][seed] = [(epoch, value), ...] in epoch order -> flat metrics.

    Per task and seed: best = max over evaluations (CortexBench's ``highest_success``/``highest_score``),
    last = the final evaluation. ``<metric>.<task>[.last]`` = mean over seeds, ``.std`` = sample std over
    seeds (ddof=1; 0 for one seed). The suite numbers ``<metric>[.last]`` average the tasks per seed, then
    take mean and std over seeds.
    """
    out: dict[str, float] = {}
    seeds = sorted({s for per in curves.values() for s in per})
    per_seed = {"best": {s: [] for s in seeds}, "last": {s: [] for s in seeds}}
    for task, per in curves.items():
        for kind in ("best", "last"):
            vals = []
            for s in seeds:
                evals = [v for _, v in per[s]]
                v = max(evals) if kind == "best" else evals[-1]
                vals.append(v)
                per_seed[kind][s].append(v)
            suffix = "" if kind == "best" else ".last"
            out[f"{metric}.{task}{suffix}"] = float(np.mean(vals))
            out[f"{metric}.{task}{suffix}.std"] = _std(vals)
    for kind, suffix in (("best", ""), ("last", ".last")):
        avg = [float(np.mean(per_seed[kind][s])) for s in seeds]
        out[f"{metric}{suffix}"] = float(np.mean(avg))
        out[f"{metric}{suffix}.std"] = _std(avg)
    return out


def eval_epochs(epochs: int, every: int) -> list[int]:
    """1-based epochs after which the policy is rolled out: every ``every``-th and the last."""
    return sorted({e for e in range(1, epochs + 1) if e % every == 0} | {epochs})


# -- options --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CortexOptions:
    tasks: tuple[str, ...] = field((), help="tasks to run (default: the suite's CortexBench tasks)")
    num_demos: int = field(25, help="expert demonstrations per task used for training")
    eval_rollouts: int = field(25, help="simulator rollouts per evaluation")
    epochs: int = field(100, help="BC training epochs")
    eval_every: int = field(5, help="roll out after every N-th epoch (and after the last)")
    seeds: tuple[int, ...] = field((100, 200, 300), help="training seeds (CortexBench: 100, 200, 300); the run's "
                                                         "--seed is added to each")
    batch_size: int = field(256, help="BC batch size")
    lr: float = field(1e-3, help="Adam learning rate")
    hidden: tuple[int, ...] = field((256, 256, 256), help="hidden sizes of the BatchNorm-MLP")
    history: int = field(3, help="frames fused (deltas of consecutive embeddings + the last)")
    proprio: bool = field(True, help="append proprioception (CortexBench: MetaWorld/Adroit yes, DMC no)")
    layer: int = field(-1, help="encoder block whose [CLS] embedding is used")
    crop_size: int | None = field(None, help="encoder input size (resize to size*256/224, centre crop); "
                                             "None = the encoder's default (224 for the paper's encoders)")
    horizon: int | None = field(None, help="max steps per rollout; None = the env's (MetaWorld 500)")
    stop_at_success: bool = field(True, help="end a rollout at its first success (MetaWorld/Adroit); "
                                             "the reference always runs the full horizon")
    eval_seed: int = field(12345, help="env seed of the first evaluation episode (+i for the i-th); "
                                       "demos use other seeds")
    fast_render: bool = field(True, help="shadows/reflections off when rendering (must match the demos)")
    rollout_workers: int = field(2, hash=False, help="spawned rollout processes (one renderer each)")


@dataclass(frozen=True)
class MetaWorldOptions(CortexOptions):
    camera: str = field(METAWORLD_CAMERA, help="MetaWorld camera (CortexBench's top_cap2 is gone in v3)")


@dataclass(frozen=True)
class DMCOptions(CortexOptions):
    num_demos: int = field(100, help="expert demonstrations per task used for training")
    eval_rollouts: int = field(10, help="simulator rollouts per evaluation")
    proprio: bool = field(False, help="append proprioception (CortexBench: none for DMC)")
    stop_at_success: bool = field(False, help="DMC has no success; episodes run the full horizon")
    frame_skip: int | None = field(None, help="action repeat; None = 1000 // (longest demo length)")
    camera: int = field(0, help="DMC camera id")


@dataclass(frozen=True)
class AdroitOptions(CortexOptions):
    num_demos: int = field(100, help="expert demonstrations per task used for training")
    proprio_key: str | None = field(None, help="env_infos key of proprioception in the demo pickles; None = "
                                               "the first 24 (pen) / 30 (relocate) observation entries")


@dataclass(frozen=True)
class TriFingerOptions(CortexOptions):
    pass


# -- suites ---------------------------------------------------------------------------------------

def _spec(name, kind, metric, desc):
    what = ("mean final success over rollouts (%)" if metric == "success" else "return / 1000 * 100")
    return SuiteSpec(
        name=name, version="1", task="robot-bc", heads=("bc_mlp",), paper_table="Table 4",
        metrics=(MetricSpec(metric, "max", f"best-epoch {what}, mean over seeds (paper convention)"),
                 MetricSpec(f"{metric}.std", "min", "std over seeds of the best-epoch number"),
                 MetricSpec(f"{metric}.last", "max", f"last-epoch {what}, mean over seeds"),
                 MetricSpec(f"{metric}.last.std", "min", "std over seeds of the last-epoch number")),
        primary=metric, validation=None, description=desc)


class CortexBenchSuite(Suite):
    kind: str = ""
    TASKS: tuple[str, ...] = ()
    metric: str = "success"
    proprio_dims: dict[str, int] = {}

    # -- data ---------------------------------------------------------------------------------
    def tasks(self) -> tuple[str, ...]:
        tasks = self.options.tasks or self.TASKS
        for t in tasks:
            check_task(self.kind, t, self.TASKS)
        return tuple(tasks)

    def dataset_fingerprint(self, data: Path) -> str:
        return "-".join(demo_fingerprint(data, t) for t in self.tasks())

    def _demos(self, data: Path, task: str, num: int | None = None):
        o = self.options
        pdim = self.proprio_dims.get(task, 0) if o.proprio else 0
        demos = load_demos(data, self.kind, task, num if num is not None else o.num_demos, pdim,
                           getattr(o, "proprio_key", None) or ("gripper_proprio" if self.kind == "metaworld" else None))
        if not o.proprio:
            for e in demos.episodes:
                e.proprio = np.zeros((len(e), 0), np.float32)
        return demos

    def env_kwargs(self, demos) -> dict:
        o = self.options
        kw = {"fast_render": bool(demos.info.get("fast_render", o.fast_render))}
        if o.horizon:
            kw["horizon"] = o.horizon
        return kw

    @classmethod
    def demo_protocol(cls, preset: str) -> dict:
        return {}

    # -- protocol -----------------------------------------------------------------------------
    def validate(self, ctx: RunContext) -> dict:
        require(self.kind)
        task = self.tasks()[0]
        demos = self._demos(ctx.data, task, num=1)
        enc = ctx.encoder
        tf, _ = eval_transform(enc.info, self.options.crop_size)
        frames = demos.episodes[0].frames()[:2]
        blk = enc.resolve_layers([self.options.layer])[0]
        emb = enc(torch.stack([tf(f) for f in frames]).to(ctx.device), layers=[blk]).layers[blk].cls.float().cpu()
        o = self.options
        proprio = torch.from_numpy(demos.episodes[0].proprio[:2])
        feats = episode_features(emb, proprio, o.history)
        policy = BCPolicy(feats.shape[1], demos.action_dim, o.hidden).eval()
        act = policy(feats)
        return {"task": task, "demo_source": demos.source, "frame_size": demos.frame_size,
                "embed_dim": int(emb.shape[1]), "policy_input": int(feats.shape[1]), "action_dim": int(act.shape[1])}

    def run(self, ctx: RunContext) -> SuiteResult:
        from suites.cortexbench.rollout import RolloutPool, WorkerSpec
        o = self.options
        enc = ctx.encoder
        blk = enc.resolve_layers([o.layer])[0]
        tf, tf_id = eval_transform(enc.info, o.crop_size)
        epochs_eval = eval_epochs(o.epochs, o.eval_every)
        eval_seeds = [o.eval_seed + i for i in range(o.eval_rollouts)]
        curves: dict[str, dict[int, list[tuple[int, float]]]] = {}
        details: dict = {"tasks": {}, "eval_epochs": epochs_eval, "eval_env_seeds": [eval_seeds[0], eval_seeds[-1]],
                         "block": blk, "transform": tf_id, "stop_at_success": o.stop_at_success,
                         "metric": self.metric, "seeds": [s + ctx.seed for s in o.seeds]}
        timing = {"render": 0.0, "embed": 0.0, "policy": 0.0, "sim": 0.0, "frames": 0, "train": 0.0}
        require(self.kind)
        for task in self.tasks():
            demos = self._demos(ctx.data, task)
            feats = ctx.features(DemoFrames(demos, tf, tf_id), [blk], ("cls",), desc=f"{task} demo frames")
            emb = feats.tensor(f"cls.{blk}")
            xs, ys, off = [], [], 0
            for ep in demos.episodes:
                n = len(ep)
                xs.append(episode_features(emb[off:off + n], torch.from_numpy(ep.proprio), o.history))
                ys.append(torch.from_numpy(ep.actions))
                off += n
            x, y = torch.cat(xs), torch.cat(ys)
            env_kw = self.env_kwargs(demos)
            info = {"demos": len(demos.episodes), "samples": len(x), "frame_size": demos.frame_size,
                    "demo_source": demos.source, "policy_input": int(x.shape[1]), "env": env_kw,
                    **{k: v for k, v in demos.info.items() if v is not None}, "curves": {}}
            spec = WorkerSpec(self.kind, task, demos.frame_size, env_kw, enc.cpu() if ctx.device.type != "cuda" else enc,
                              o.crop_size, str(ctx.device), ctx.precision, blk, o.history, x.shape[1] > o.history * emb.shape[1],
                              workspace=str(current_workspace().root))
            curves[task] = {}
            with RolloutPool(spec, o.rollout_workers) as pool:
                for seed0 in o.seeds:
                    seed = seed0 + ctx.seed
                    gen = torch.Generator().manual_seed(seed)
                    with torch.random.fork_rng():
                        torch.manual_seed(seed)
                        policy = BCPolicy(x.shape[1], y.shape[1], o.hidden)
                    opt = torch.optim.Adam(policy.parameters(), lr=o.lr)
                    curve = []
                    for epoch in range(1, o.epochs + 1):
                        t0 = time.perf_counter()
                        loss = train_epoch(policy, opt, x, y, o.batch_size, gen)
                        timing["train"] += time.perf_counter() - t0
                        if epoch not in epochs_eval:
                            continue
                        rows = pool.evaluate(policy, eval_seeds, o.stop_at_success)
                        value = self.score(rows)
                        curve.append((epoch, value))
                        for r in rows:
                            timing["render"] += r["t_render"]
                            timing["embed"] += r["t_embed"]
                            timing["policy"] += r["t_policy"]
                            timing["sim"] += r["t_sim"]
                            timing["frames"] += r["steps"]
                        ctx.log_curve({f"{self.metric}.{task}.seed{seed}": value,
                                       f"bc_loss.{task}.seed{seed}": loss}, epoch)
                    curves[task][seed] = curve
                    info["curves"][str(seed)] = [{"epoch": e, self.metric: v} for e, v in curve]
            details["tasks"][task] = info
        metrics = aggregate(curves, self.metric)
        busy = sum(timing[k] for k in ("render", "embed", "policy", "sim")) or 1.0
        details["rollout_timing"] = {**{k: round(v, 2) if isinstance(v, float) else v for k, v in timing.items()},
                                     **{f"share_{k}": round(timing[k] / busy, 3) for k in ("render", "embed", "policy", "sim")}}
        selection = {"bc_mlp": {"rule": "best evaluation epoch per seed (CortexBench/paper convention); "
                                        "'.last' = final epoch", "validation": "none (CortexBench has no held-out split)"}}
        return SuiteResult(metrics=metrics, selection=selection, details=details)

    def score(self, rows: list[dict]) -> float:
        return float(np.mean([r["success"] for r in rows]) * 100)


class MetaWorldSuite(CortexBenchSuite):
    kind = "metaworld"
    TASKS = METAWORLD_TASKS
    proprio_dims = {t: 4 for t in METAWORLD_TASKS}
    spec = _spec("cortexbench.metaworld", "metaworld", "success",
                 "MetaWorld v3 (assembly, bin-picking, button-press-topdown, drawer-open, hammer), goal-observable; "
                 "BC on frozen [CLS] embeddings of the last 3 frames + proprioception; corner camera.")
    Options = MetaWorldOptions

    def env_kwargs(self, demos) -> dict:
        kw = super().env_kwargs(demos)
        cam = demos.info.get("camera") or self.options.camera
        if cam != self.options.camera:
            raise DataError(f"demos in '{demos.source}' were rendered from camera '{cam}', the protocol asks for "
                            f"'{self.options.camera}'")
        kw["camera"] = cam
        return kw

    @classmethod
    def demo_protocol(cls, preset: str) -> dict:
        if preset == "tiny":
            return {"tasks": ["drawer-open"], "num_demos": 2, "eval_rollouts": 2, "epochs": 2, "eval_every": 2,
                    "seeds": [100], "horizon": 100, "crop_size": 64}
        # one evaluation at the end, 112 px frames: a ViT-S/14 embeds ~4x faster than at 224 on a CPU
        return {"tasks": ["drawer-open"], "num_demos": 10, "eval_rollouts": 2, "epochs": 20, "eval_every": 20,
                "seeds": [100], "horizon": 200, "crop_size": 112}

    def default_data(self, workspace) -> Path:
        """Expert demos of the protocol's tasks (as many as it uses; 256 px, corner camera), generated once
        with MetaWorld's scripted policies and kept (and extended on demand) under
        ``<workspace>/data/cortexbench-metaworld``."""
        require("metaworld")
        return generate_metaworld(Path(workspace.data) / "cortexbench-metaworld", self.options.tasks,
                                  self.options.num_demos, DEFAULT_DATA_SIZE)


class DMCSuite(CortexBenchSuite):
    kind = "dmc"
    TASKS = DMC_TASKS
    metric = "score"
    spec = _spec("cortexbench.dmc", "dmc", "score",
                 "DeepMind Control walker_stand/walk, reacher_easy, cheetah_run, finger_spin from CortexBench's "
                 "demo pickles (--data); no proprioception; score = return/1000*100.")
    Options = DMCOptions

    def env_kwargs(self, demos) -> dict:
        kw = super().env_kwargs(demos)
        longest = max(len(e) for e in demos.episodes)
        kw["frame_skip"] = self.options.frame_skip or max(1, 1000 // longest)
        kw["camera"] = self.options.camera
        kw.setdefault("horizon", longest)
        return kw

    def score(self, rows):
        return float(np.mean([r["return"] for r in rows]) / 1000 * 100)

    @classmethod
    def demo_protocol(cls, preset: str) -> dict:
        return {"tasks": ["walker_stand"], "num_demos": 5, "eval_rollouts": 2, "epochs": 2, "eval_every": 2,
                "seeds": [100]}


class AdroitSuite(CortexBenchSuite):
    kind = "adroit"
    TASKS = ADROIT_TASKS
    proprio_dims = {"pen": 24, "relocate": 30}
    spec = _spec("cortexbench.adroit", "adroit", "success",
                 "Adroit pen/relocate from CortexBench's demo pickles; rollouts through gymnasium-robotics.")
    Options = AdroitOptions


class TriFingerSuite(CortexBenchSuite):
    kind = "trifinger"
    TASKS = TRIFINGER_TASKS
    spec = _spec("cortexbench.trifinger", "trifinger", "success",
                 "TriFinger reach_cube/move_cube (scaled success); needs trifinger_simulation; "
                 "protocol not implemented yet.")
    Options = TriFingerOptions

    def run(self, ctx):
        require(self.kind)
        raise DataError("cortexbench.trifinger: the TriFinger protocol (trifinger_vc) is not implemented yet")
