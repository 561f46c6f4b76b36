"""``spatialboost campaign FILE.yaml``: encoders x suites x seeds as evaluation jobs on an existing engine.

A campaign file expands into one ``EvalConfig`` per (encoder, suite, seed); every job is validated
before any runs. Jobs run through an executor from the field's own engines — a local process pool, a Ray
cluster (``ray start --head`` / ``ray start --address``), or Slurm job arrays through submitit — and each
job is an ordinary ``evaluate`` call, so the campaign is resumable and idempotent by construction:

- a job whose config hash already has a FINISHED run is reused, not recomputed (the runner's rule);
- two processes of one machine never run the same config at once (the runner's flock lease), and a job
  RUNNING on another machine of the same tracking server (fresh heartbeat) is waited for and reused;
- a killed job leaves a run that the next command marks KILLED (heartbeat/pid), and rerunning the
  campaign computes exactly the jobs without a finished run.

A failed job keeps its error as the run's ``error`` tag and ``traceback.txt`` artifact; the campaign goes
on with the others and exits 1 at the end. A report of the campaign's experiment is built last.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from harness.config import ConfigError, build, field, load_yaml, merge, to_dict
from harness.registry import SUITES
from harness.runner import EvalConfig, resolve

EXECUTORS = ("local", "ray", "slurm")


@dataclass(frozen=True)
class CampaignSpec:
    experiment: str = field(help="MLflow experiment of every job (and of the final report)", nonempty=True)
    encoders: list[str] = field(help="encoder specs", nonempty=True)
    suites: dict[str, Any] = field(help="suite name -> {protocol: {...}, head: ..., data: ...} (or {})")
    seeds: list[int] = field(default_factory=lambda: [0], help="seeds; one job per seed", nonempty=True)
    preset: str | None = field(None, help="start each suite's protocol from its demo_protocol(preset) "
                                          "(tiny|default); None = the paper protocol")
    world: str | None = field(None, help="embedded-world preset for suites without data")
    eval: dict[str, Any] = field(default_factory=dict, help="EvalConfig keys shared by every job "
                                                            "(batch_size, precision, mode, ...)")
    executor: Literal["local", "ray", "slurm"] = field("local", help="local process pool, Ray or Slurm")
    workers: int = field(1, min=1, help="jobs at once (local pool size; Slurm array parallelism)")
    devices: list[str] = field(default_factory=list, help="devices assigned round-robin to jobs "
                                                          "(e.g. [cuda:0, cuda:1]); empty = each job's own")
    ray_address: str | None = field(None, help="Ray cluster address (default: a local Ray instance)")
    ray_num_cpus: float = field(1.0, min=0, help="CPUs Ray reserves per job")
    ray_num_gpus: float = field(0.0, min=0, help="GPUs Ray reserves per job")
    slurm: dict[str, Any] = field(default_factory=dict, help="submitit parameters, e.g. {cluster: slurm, "
                                  "slurm_partition: gpu, timeout_min: 120, gpus_per_node: 1, "
                                  "cpus_per_task: 8}; cluster: local runs the same path on this machine")
    workspace: str | None = field(None, help="runtime data folder, shared by all workers (default "
                                             "$SPATIALBOOST_HOME)")
    tracking_uri: str | None = field(None, help="MLflow URI shared by all workers (a server for "
                                                "several machines)")
    report: bool = field(True, help="build the report of the experiment at the end")
    boost: dict[str, Any] = field(default_factory=dict, help="the base of every boost variant: {encoder, config: "
                                  "BoostConfig overrides, data: {stage<k>: QA options}, suites: [...]} "
                                  "(harness/commands/campaign_boost.py)")
    boosts: list[Any] = field(default_factory=list, help="boost variants [{name, config, data}]: each trained once "
                              "(`boost`), then evaluated as boosted:<run>/boosted on boost.suites")
    variants: dict[str, Any] = field(default_factory=dict, help="named overrides of this file, applied with "
                                     "--variant NAME (e.g. demo: CPU sizes)")


@dataclass
class Job:
    index: int
    config: dict[str, Any]      # EvalConfig input

    @property
    def label(self) -> str:
        c = self.config
        return f"{c['suite']} {c['encoder'].split('?')[0]} seed={c['seed']}"


def load_campaign(path: str | Path, overrides: dict[str, Any] | None = None,
                  variant: str | None = None) -> CampaignSpec:
    """The file, then its ``variants[variant]`` (each top-level key it names replaces the file's: a demo
    variant states its whole ``boost`` / ``suites``, nothing of the paper's leaks in), then overrides."""
    data = load_yaml(path)
    if variant:
        named = data.get("variants") or {}
        if variant not in named:
            raise ConfigError(f"{path}: no variant '{variant}'; variants: {', '.join(named) or '(none)'}")
        if not isinstance(named[variant], dict) or "variants" in named[variant]:
            raise ConfigError(f"{path}: variants.{variant} must be a mapping of top-level keys (without 'variants')")
        data = {**data, **named[variant]}
    return build(CampaignSpec, merge(data, overrides or {}))


def boost_suites(spec: CampaignSpec) -> dict[str, Any]:
    """The suites boosted encoders are evaluated on: ``boost.suites`` (names of the campaign's suites) or all."""
    names = (spec.boost or {}).get("suites") or list(spec.suites)
    unknown = [n for n in names if n not in spec.suites]
    if unknown:
        raise ConfigError(f"boost.suites: {unknown} not in the campaign's suites ({', '.join(spec.suites)})")
    return {n: spec.suites[n] for n in names}


def expand_boosted(spec: CampaignSpec, encoders: list[str], start: int = 0) -> list[Job]:
    """Eval jobs of boosted encoders (or, before boosting, of the base encoder standing in for them)."""
    if not encoders:
        return []
    jobs = expand(dataclasses.replace(spec, encoders=list(encoders), suites=boost_suites(spec)))
    for j in jobs:
        j.index += start
    return jobs


def expand(spec: CampaignSpec) -> list[Job]:
    """Every (suite, encoder, seed) as a validated EvalConfig input; errors name the job."""
    jobs: list[Job] = []
    for suite, extra in spec.suites.items():
        extra = dict(extra or {})
        bad = set(extra) - {"protocol", "head", "data", "mode"}
        if bad:
            raise ConfigError(f"suites.{suite}: unknown key(s) {sorted(bad)}; allowed: protocol, head, data, mode")
        suite_cls = SUITES.get(suite)
        protocol = dict(suite_cls.demo_protocol(spec.preset)) if spec.preset else {}
        protocol.update(extra.get("protocol") or {})
        head = extra.get("head") or (suite_cls.demo_heads(spec.preset) if spec.preset else None)
        for encoder in spec.encoders:
            for seed in spec.seeds:
                cfg = merge(dict(spec.eval), {"encoder": encoder, "suite": suite, "seed": seed,
                                              "experiment": spec.experiment, "protocol": protocol,
                                              "progress": False})
                for key, value in (("head", head), ("data", extra.get("data")), ("mode", extra.get("mode")),
                                   ("world", spec.world), ("workspace", spec.workspace),
                                   ("tracking_uri", spec.tracking_uri)):
                    if value is not None:
                        cfg[key] = value
                if spec.devices:
                    cfg["device"] = spec.devices[len(jobs) % len(spec.devices)]
                try:
                    resolve(build(EvalConfig, cfg), data=False)   # suite, heads, protocol, device: no weights
                except ConfigError as e:
                    raise ConfigError(f"job {suite} x {encoder} x seed {seed}: {e}") from None
                jobs.append(Job(len(jobs), cfg))
    return jobs


def run_job(config: dict[str, Any]) -> dict[str, Any]:
    """One job in whatever process the executor chose: an ordinary evaluation. An error becomes a failed
    result (an executor would lose the message; the run itself records error and traceback in MLflow);
    Ctrl-C / SIGTERM still stop the campaign."""
    from harness.runner import evaluate
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        rec = evaluate(build(EvalConfig, config))
        return {"status": "reused" if rec.reused else "done", "run_id": rec.run_id,
                "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0}
    except Exception as e:   # noqa: BLE001 - reported by the driver
        return {"status": "failed", "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(),
                "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0}


def prepare_data(jobs: list[Job]) -> None:
    """Generate the embedded default data of each suite once, in the driver, before workers start (else
    every worker would render the same world at the same time)."""
    from harness.runner import resolve_data
    seen = set()
    for job in jobs:
        key = (job.config["suite"], job.config.get("world"), job.config.get("workspace"), job.config.get("data"))
        if key in seen or job.config.get("data"):
            continue
        seen.add(key)
        resolve_data(resolve(build(EvalConfig, job.config), data=False))


# ----------------------------------------------------------------------------------------------- executors
def _pool_init(threads: int) -> None:
    import torch
    torch.set_num_threads(threads)


def execute_local(spec: CampaignSpec, jobs: list[Job], progress):
    """``workers`` processes of a spawn pool; one worker = the jobs in this process, one after another
    (no second interpreter to start: a one-job campaign costs what the plain ``eval`` costs)."""
    if spec.workers == 1:
        progress.running(1)
        for job in jobs:
            yield job, run_job(job.config)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed
    threads = max(1, (os.cpu_count() or 1) // spec.workers)
    with ProcessPoolExecutor(spec.workers, mp_context=mp.get_context("spawn"), initializer=_pool_init,
                             initargs=(threads,)) as pool:
        futures = {pool.submit(run_job, j.config): j for j in jobs}
        progress.running(min(spec.workers, len(jobs)))
        for fut in as_completed(futures):
            yield futures[fut], fut.result()


def execute_ray(spec: CampaignSpec, jobs: list[Job], progress):
    import ray
    env = {k: v for k, v in os.environ.items() if k.startswith(("SPATIALBOOST_", "MLFLOW_", "MUJOCO_"))}
    ray.init(address=spec.ray_address, runtime_env={"env_vars": env}, include_dashboard=False,
             log_to_driver=False, ignore_reinit_error=True)
    remote = ray.remote(num_cpus=spec.ray_num_cpus, num_gpus=spec.ray_num_gpus, max_retries=0)(run_job)
    pending = {remote.remote(j.config): j for j in jobs}
    try:
        while pending:
            progress.running(min(len(pending), max(1, int(ray.available_resources().get("CPU", 0)) or 1)))
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                yield pending.pop(ref), ray.get(ref)
    finally:
        ray.shutdown()


def execute_slurm(spec: CampaignSpec, jobs: list[Job], progress):
    import submitit
    params = dict(spec.slurm)
    cluster = params.pop("cluster", None)
    folder = params.pop("folder", None) or str(Path(spec.workspace or os.environ.get("SPATIALBOOST_HOME", "workspace"))
                                               / "campaigns" / spec.experiment)
    ex = submitit.AutoExecutor(folder=folder, cluster=cluster)
    if cluster != "local":
        params.setdefault("slurm_array_parallelism", spec.workers)
    ex.update_parameters(**params)
    submitted = ex.map_array(run_job, [j.config for j in jobs])     # one Slurm job array
    pending = dict(zip(submitted, jobs))
    while pending:
        progress.running(sum(1 for s in pending if s.state in ("RUNNING", "R")) or min(spec.workers, len(pending)))
        for s in [s for s in pending if s.done()]:
            job = pending.pop(s)
            try:
                yield job, s.result()
            except Exception as e:   # noqa: BLE001 - the job died before run_job could report (OOM, time limit)
                yield job, {"status": "failed", "error": f"{type(e).__name__}: {e}", "traceback": str(e)}
        time.sleep(1.0)


EXECUTE = {"local": execute_local, "ray": execute_ray, "slurm": execute_slurm}


class Progress:
    """jobs done / reused / running / failed, on one tqdm line."""

    def __init__(self, total: int, enabled: bool = True):
        from tqdm import tqdm
        self.counts = {"done": 0, "reused": 0, "failed": 0}
        self.bar = tqdm(total=total, desc="campaign", unit="job", disable=not enabled, file=sys.stderr)
        self._running = 0

    def running(self, n: int) -> None:
        self._running = n
        self.bar.set_postfix(**self.counts, running=n)

    def finished(self, status: str) -> None:
        self.counts[status] = self.counts.get(status, 0) + 1
        self.bar.update(1)
        self.bar.set_postfix(**self.counts, running=self._running)

    def close(self) -> None:
        self.bar.close()


@dataclass
class CampaignResult:
    jobs: list[Job]
    results: dict[int, dict]
    boosts: dict[str, dict] = dataclasses.field(default_factory=dict)   # variant name -> status, spec / error

    def count(self, status: str) -> int:
        return sum(1 for r in self.results.values() if r.get("status") == status)

    @property
    def failed(self) -> int:
        return self.count("failed") + sum(1 for b in self.boosts.values() if b["status"] == "failed")


def run_campaign(spec: CampaignSpec, *, progress: bool = True, log=print) -> CampaignResult:
    from harness.commands.campaign_boost import plan_boosts, run_boosts
    jobs = expand(spec)
    plans = plan_boosts(spec)
    if plans:       # every boosted job validated (base encoder standing in) before anything trains
        expand_boosted(spec, [spec.boost["encoder"]])
    log(f"campaign '{spec.experiment}': {len(jobs)} jobs ({len(spec.suites)} suites x {len(spec.encoders)} "
        f"encoders x {len(spec.seeds)} seeds) on executor '{spec.executor}'"
        + (f"; {len(plans)} boost variants, each then evaluated on {', '.join(boost_suites(spec))}" if plans else ""))
    prepare_data(jobs)
    boosts = run_boosts(spec, plans, progress, log) if plans else {}
    specs = [b["spec"] for b in boosts.values() if b.get("spec")]
    jobs += expand_boosted(spec, list(dict.fromkeys(specs)), len(jobs))
    bar = Progress(len(jobs), progress)
    results: dict[int, dict] = {}
    try:
        for job, res in EXECUTE[spec.executor](spec, jobs, bar):
            results[job.index] = res
            bar.finished(res["status"])
            if res["status"] == "failed":
                log(f"FAILED {job.label}: {res['error']}")
            elif not progress:      # the time each job took (wall; CPU of the worker process: all its threads)
                log(f"{res['status']} {job.label} in {res.get('seconds', 0):.0f}s wall, "
                    f"{res.get('cpu_seconds', 0):.0f}s CPU (run {res.get('run_id')})")
    finally:
        bar.close()
    return CampaignResult(jobs, results, boosts)


def tracking_of(spec: CampaignSpec) -> tuple[str, Any]:
    from harness.workspace import open_workspace
    ws = open_workspace(spec.workspace, spec.world)
    return spec.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or ws.tracking_uri, ws


def cmd_campaign(args) -> int:
    from harness.config import parse_overrides
    spec = load_campaign(args.file, parse_overrides(args.overrides), args.variant)
    if args.executor:
        spec = build(CampaignSpec, {**to_dict(spec), "executor": args.executor})
    if args.dry_run:
        from harness.commands.campaign_boost import plan_boosts
        for job in expand(spec):
            print(f"{job.index:4d}  {job.label}  {job.config.get('device', '')}".rstrip())
        for plan in plan_boosts(spec):
            print(f"boost {plan.name}: {json.dumps({'config': plan.config, 'data': plan.data}, default=str)}"
                  f" -> eval on {', '.join(boost_suites(spec))} x seeds {spec.seeds}")
        return 0
    res = run_campaign(spec, progress=not args.no_progress)
    if res.boosts:
        print(f"{len(res.boosts)} boost variants: " + ", ".join(f"{k} {v['status']}" for k, v in res.boosts.items()))
    print(f"{len(res.jobs)} jobs: {res.count('done')} computed, {res.count('reused')} reused, "
          f"{res.count('failed')} failed")
    if spec.report:
        from reports.build import build_report
        uri, ws = tracking_of(spec)
        paths = build_report(uri, spec.experiment, ws.reports / spec.experiment, allow_missing=True)
        print(f"report: {paths['md']}")
    return 1 if res.failed else 0


def add_campaign_parser(sub) -> None:
    p = sub.add_parser("campaign", help="run encoders x suites x seeds through a local pool, Ray or Slurm",
                       description=__doc__.split("\n\n")[0] + " Resumable: rerunning computes only the jobs "
                                   "without a finished run. See configs/campaigns/.")
    p.add_argument("file", help="campaign YAML (keys: see CampaignSpec in harness/commands/campaign.py)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. workers=2 seeds=[0,1]")
    p.add_argument("--executor", choices=EXECUTORS, help="override the file's executor")
    p.add_argument("--variant", help="apply the file's variants.NAME overrides (e.g. demo: the CPU-sized ablation)")
    p.add_argument("--dry-run", action="store_true", help="list the jobs and stop")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_campaign)
