"""``spatialboost``: the command line. Every command validates its whole config before any work."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

from harness.config import ConfigError, build, describe, load_yaml, merge, parse_overrides, to_yaml

EPILOG = """examples:
  spatialboost eval --encoder builtin:dinov2-s14-focus --suite cls.imagenet --data ~/data/imagenet
  spatialboost eval configs/demo_cls.yaml protocol.epochs=2 seed=1
  spatialboost validate --encoder timm:vit_small_patch14_dinov2?ckpt=dinov2.pth --suite cls.imagenet --data D
  spatialboost ls suites --verbose
  spatialboost data generate --world workspace/data/scannet-default --out qa/ --levels pix,obj,scene
  spatialboost boost --encoder builtin:dinov2-s14-focus --data qa/conversations.jsonl --stages 1,2,3
  spatialboost sweep configs/sweep_cls.yaml --storage postgresql://optuna@127.0.0.1/sweeps
  spatialboost campaign configs/campaigns/tiny.yaml workers=2
  spatialboost report --experiment demo-default
  spatialboost demo --preset tiny
"""


def _eval_config(args):
    from harness.runner import EvalConfig
    data = load_yaml(args.config) if args.config else {}
    flags = {k: v for k, v in {"encoder": args.encoder, "suite": args.suite, "data": args.data,
                               "head": args.head, "mode": args.mode, "device": args.device,
                               "experiment": args.experiment, "workspace": args.workspace,
                               "world": args.world}.items()
             if v is not None}
    if getattr(args, "force", False):
        flags["force"] = True
    if getattr(args, "no_progress", False):
        flags["progress"] = False
    data = merge(merge(data, flags), parse_overrides(args.overrides))
    return build(EvalConfig, data)


def _add_eval_args(p):
    p.add_argument("config", nargs="?", help="YAML config (optional; flags and key=value override it)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. protocol.epochs=2 seed=1")
    p.add_argument("--encoder", help="encoder spec (see `spatialboost ls encoders`)")
    p.add_argument("--suite", help="suite name (see `spatialboost ls suites`)")
    p.add_argument("--data", help="dataset root in the suite's native layout (default: synthetic world)")
    p.add_argument("--head", help="head(s), comma separated (default: the suite's)")
    p.add_argument("--mode", choices=["fast", "exact"], help="fast = cached features (default), exact = "
                                                              "on-the-fly augmentation as the paper")
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:N, mps")
    p.add_argument("--experiment", help="MLflow experiment (default: spatialboost)")
    p.add_argument("--workspace", help="runtime data folder (default: $SPATIALBOOST_HOME or ./workspace)")
    p.add_argument("--world", help="embedded-world preset used without --data: tiny, default or vqa (960 views, "
                                   "the VQA signal runs; default: $SPATIALBOOST_WORLD_PRESET or default)")


def _split_config_arg(args):
    """argparse puts a first key=value into ``config``; move it to the overrides."""
    if args.config and "=" in args.config and not Path(args.config).exists():
        args.overrides = [args.config, *args.overrides]
        args.config = None


def cmd_eval(args):
    from harness.runner import evaluate
    _split_config_arg(args)
    cfg = _eval_config(args)
    rec = evaluate(cfg)
    from harness.runner import resolve
    spec = resolve(cfg).suite.spec
    shown = {m.name: rec.metrics[m.name] for m in spec.metrics if m.name in rec.metrics}
    status = "reused finished run" if rec.reused else "finished run"
    print(f"{status} {rec.run_id} ({spec.name}, {cfg.encoder})")
    if rec.reused:
        from harness.device import resolve_device
        ran_on, now = rec.tags.get("device", ""), str(resolve_device(cfg.device))
        if ran_on and ran_on != now:
            print(f"  (computed on {ran_on}; the device is not part of a run's identity: --force recomputes "
                  f"on {now})")
    for k, v in shown.items():
        print(f"  {k:<12} {v:8.3f}")
    return 0


def cmd_validate(args):
    from harness.runner import validate
    _split_config_arg(args)
    cfg = _eval_config(args)
    print(to_yaml(cfg), end="")
    report = validate(cfg)
    print(json.dumps(report, indent=1, default=str))
    print("ok: config resolved, encoder built, one batch ran through encoder and heads")
    return 0


def _summary(obj) -> str:
    """First line of an entry's docstring (what ``ls`` prints beside its name)."""
    doc = getattr(obj, "describe", None) or getattr(obj, "__doc__", None) or ""
    return doc.strip().splitlines()[0] if isinstance(doc, str) and doc.strip() else ""


def cmd_ls(args):
    from harness.registry import ENCODERS, HEADS, METRICS, SUITES
    if args.what == "encoders":
        from encoders.builtin import BUILTINS
        for scheme in ENCODERS.names():
            name = scheme + ":" + ("|".join(BUILTINS) if scheme == "builtin" else "...")
            print(f"{name:<36} {_summary(ENCODERS.get(scheme)) if args.verbose else ''}".rstrip())
    elif args.what in ("heads", "metrics"):
        reg = HEADS if args.what == "heads" else METRICS
        for name in reg.names():
            try:
                line = _summary(reg.get(name))
            except ImportError as e:
                line = f"(unavailable: {e})"
            print(f"{name:<22} {line}".rstrip())
    elif args.what == "suites":
        for name in SUITES.names():
            try:
                cls = SUITES.get(name)
            except ImportError as e:
                print(f"{name:<26} (unavailable: {e})")
                continue
            spec = cls.spec
            print(f"{name:<26} heads={','.join(spec.heads):<16} primary={spec.primary:<10} {spec.paper_table}")
            if args.verbose:
                print(f"    {spec.description}")
                for key, tp, default, help_ in describe(cls.Options):
                    print(f"    protocol.{key:<20} {tp:<18} default={default!s:<22} {help_}")
    return 0


def cmd_ui(args):
    """``mlflow ui`` as a child in its own process group. SIGTERM/SIGINT/SIGHUP are forwarded to that whole
    group (mlflow, uvicorn and its workers) and we wait for it, so no server is left listening; if this
    process is killed with SIGKILL, the child gets SIGTERM from the kernel (Linux parent-death signal)."""
    import signal
    import subprocess
    from harness.workspace import open_workspace
    ws = open_workspace(args.workspace)
    uri = os.environ.get("MLFLOW_TRACKING_URI") or ws.tracking_uri
    print(f"MLflow UI for {uri} at http://127.0.0.1:{args.port}", flush=True)
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
                             "--host", "127.0.0.1", "--port", str(args.port)],
                            start_new_session=True, preexec_fn=_parent_death_signal(signal.SIGTERM))
    received: list[int] = []

    def forward(signum, frame):
        received.append(signum)
        _signal_group(proc.pid, signal.SIGTERM if signum == signal.SIGHUP else signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    try:
        while True:
            try:
                rc = proc.wait()
                break
            except KeyboardInterrupt:    # SIGINT before our handler was installed
                _signal_group(proc.pid, signal.SIGINT)
    finally:
        _stop_group(proc.pid)           # uvicorn workers may outlive mlflow's own process
    return 0 if received else rc


def _parent_death_signal(sig: int):
    """A ``preexec_fn`` that asks Linux to send ``sig`` to the child when this process dies."""
    def set_pdeathsig() -> None:
        try:
            import ctypes
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(sig), 0, 0, 0)   # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    return set_pdeathsig if sys.platform.startswith("linux") else None


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _stop_group(pgid: int, grace: float = 10.0) -> None:
    """SIGTERM the process group, wait up to ``grace`` seconds for it to empty, then SIGKILL the rest."""
    import signal
    import time
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.time() + grace
    while time.time() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.2)
    _signal_group(pgid, signal.SIGKILL)


def cmd_sweep(args):
    from harness.runner import EvalConfig
    from harness.commands.sweep import SweepSpec, run_sweep
    _split_config_arg(args)
    data = load_yaml(args.config) if args.config else {}
    flags = {k: v for k, v in {"encoder": args.encoder, "suite": args.suite, "data": args.data,
                               "head": args.head, "mode": args.mode, "device": args.device,
                               "experiment": args.experiment, "workspace": args.workspace,
                               "world": args.world}.items() if v}
    data = merge(merge(data, flags), parse_overrides(args.overrides))
    sweep = dict(data.pop("sweep", {}) or {})
    for key, value in {"storage": args.storage, "study": args.study, "n_trials": args.n_trials}.items():
        if value is not None:
            sweep[key] = value
    data.setdefault("progress", False)
    base = build(EvalConfig, data)
    spec = build(SweepSpec, sweep, prefix="sweep.")
    res = run_sweep(base, spec, max_trials_this_worker=args.max_trials)
    print(f"study '{res.study}': {res.completed} trials complete ({res.duplicates} duplicates pruned)")
    print(f"best {res.best_params} -> {res.best_value:.4f} (validation), run {res.best_run_id}; "
          f"parent run {res.parent_run_id}")
    return 0


REPORT_FORMATS = ("md", "tex", "html")


def cmd_report(args):
    from harness.workspace import open_workspace
    from reports.build import build_report
    from results.runs import ResultsError
    from harness.tracking import check_reachable, reap_dead_runs
    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    bad = [f for f in formats if f not in REPORT_FORMATS]
    if bad or not formats:
        raise ConfigError(f"--formats: '{bad[0] if bad else args.formats}' is not one of "
                          f"{', '.join(REPORT_FORMATS)}")
    ws = open_workspace(args.workspace)
    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or ws.tracking_uri
    check_reachable(uri)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        raise ResultsError(f"no MLflow store at '{uri[len('sqlite:///'):]}': run an evaluation first "
                           "(or pass --workspace / --tracking-uri)")
    import mlflow
    reap_dead_runs(mlflow.MlflowClient(tracking_uri=uri))   # a killed run is never shown as in progress
    try:
        paths = build_report(uri, args.experiment, Path(args.out) if args.out else ws.reports,
                             tables=args.tables.split(",") if args.tables else None,
                             formats=formats, allow_missing=args.allow_missing)
    except ResultsError:
        raise
    except ValueError as e:          # report options (unknown table/format) are checked inside build_report
        raise ConfigError(str(e)) from None
    for fmt, path in paths.items():
        print(f"{fmt:<5} {path}")
    from reports.publish import log_report_run      # the same files as artifacts of a kind=report run
    run_id = log_report_run(uri, args.experiment, Path(args.out) if args.out else ws.reports,
                            paths.source_run_ids, paths.tables, ws.artifacts, formats=list(paths))
    print(f"mlflow report run {run_id} (experiment {args.experiment})")
    return 0


def cmd_demo(args):
    from harness.commands.demo import run_demo
    return run_demo(preset=args.preset, workspace=args.workspace, force=args.force,
                    suites=args.suites.split(",") if args.suites else None, boost=not args.no_boost)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="spatialboost", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Benchmark harness for frozen vision encoders, baseline vs SpatialBoost-boosted.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("eval", help="evaluate one encoder on one suite (reuses a finished identical run)",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_eval_args(p)
    p.add_argument("--force", action="store_true", help="recompute even if an identical run finished")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("validate", help="resolve a config and run one batch without training")
    _add_eval_args(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("sweep", help="resumable Optuna search over a suite's protocol options",
                       description="Runs, resumes or joins (as one more worker) an Optuna study. The objective "
                                   "is the suite's validation metric; every trial is a nested MLflow run. "
                                   "Config: EvalConfig keys plus a 'sweep:' section (space, sampler, n_trials, "
                                   "storage, study).")
    _add_eval_args(p)
    p.add_argument("--storage", help="Optuna storage URL (default: sqlite in the workspace), e.g. "
                                     "postgresql://user:pw@127.0.0.1:5432/optuna for many workers")
    p.add_argument("--study", help="study name (default: derived from suite, head, encoder and config)")
    p.add_argument("--n-trials", type=int, help="trials to complete for tpe/random (grids run every point)")
    p.add_argument("--max-trials", type=int, help="stop this worker after N trials (others may continue)")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("report", help="rebuild the paper's tables from an experiment's MLflow runs",
                       description="Markdown, LaTeX (booktabs) and a self-contained HTML page with plots. Each "
                                   "baseline row is followed by its boosted candidates and the delta; empty "
                                   "cells say why; every cell is traceable to its MLflow run ids.")
    p.add_argument("--experiment", required=True, help="MLflow experiment name (e.g. demo-default)")
    p.add_argument("--tables", help="comma list of summary,table1,table2,table3,table4,table5,table8 and the "
                                    "ablations table6,table7,table15-table19 (default: all main tables + the "
                                    "ablations the runs vary; docs/ablations.md)")
    p.add_argument("--formats", default="md,tex,html", help="comma list of md, tex, html")
    p.add_argument("--out", help="output folder (default: workspace/reports)")
    p.add_argument("--workspace")
    p.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI or the workspace store")
    p.add_argument("--allow-missing", action="store_true",
                   help="skip runs whose results cannot be read (listed in the report) instead of failing")
    p.set_defaults(func=cmd_report)

    from encoders.spatialboost.cli import add_boost_parser
    from encoders.spatialboost.qa.cli import add_data_parser
    from harness.commands.campaign import add_campaign_parser
    add_campaign_parser(sub)  # spatialboost campaign FILE.yaml (harness/commands/campaign.py)
    from harness.commands.server import add_server_parser
    add_server_parser(sub)    # spatialboost server: PostgreSQL + mlflow server for a team trial
    add_boost_parser(sub)    # spatialboost boost ...          (encoders/spatialboost/README.md)
    add_data_parser(sub)     # spatialboost data generate ...  (encoders/spatialboost/qa/README.md)

    p = sub.add_parser("ls", help="list registered encoders, suites, heads or metrics")
    p.add_argument("what", choices=["encoders", "suites", "heads", "metrics"])
    p.add_argument("--verbose", "-v", action="store_true", help="show protocol options")
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("ui", help="start the MLflow UI on 127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--workspace")
    p.set_defaults(func=cmd_ui)

    p = sub.add_parser("demo", help="the embedded default: world -> every suite -> MLflow -> report")
    p.add_argument("--preset", choices=["tiny", "default"], default="default",
                   help="tiny: tests, < 3 min on 2 cores; default: < 15 min on 2 cores")
    p.add_argument("--workspace")
    p.add_argument("--force", action="store_true", help="recompute runs even if finished ones exist")
    p.add_argument("--suites", help="comma list of suites (default: every registered suite)")
    p.add_argument("--no-boost", action="store_true", help="evaluate the baseline only (no SpatialBoost training)")
    p.set_defaults(func=cmd_demo)

    for name, p in sub.choices.items():   # every command honours a team's tracking server
        if name not in ("ls",) and not any("--tracking-uri" in a.option_strings for a in p._actions):
            p.add_argument("--tracking-uri", help="MLflow tracking URI, e.g. http://host:5000 (default: "
                                                  "$MLFLOW_TRACKING_URI or the workspace's sqlite store)")
    args = parser.parse_args(argv)
    if getattr(args, "tracking_uri", None) and args.command != "report":
        os.environ["MLFLOW_TRACKING_URI"] = args.tracking_uri
    return run_command(args.func, args)


def _terminate(signum, frame):
    from harness.errors import Terminated
    raise Terminated(signum)


def run_command(func, args) -> int:
    """The one place where user errors become ``error: <message>`` and exit status 2 (no traceback).
    SIGTERM/SIGHUP raise :class:`harness.errors.Terminated` so cleanup runs as on Ctrl-C."""
    import signal
    import threading
    from harness.errors import Terminated, UserError
    previous = {}
    if func is not cmd_ui and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):   # (ui forwards these to its server instead)
            previous[sig] = signal.signal(sig, _terminate)
    try:
        return func(args)
    except Terminated as e:
        print(f"interrupted: {e}", file=sys.stderr)
        return 128 + e.signum
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 2)
    except FileNotFoundError as e:    # a path the user gave that vanished between checks and use
        print(f"error: {e.strerror or e}: '{e.filename}'" if e.filename else f"error: {e}", file=sys.stderr)
        return 2
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
