"""Team mode for real: PostgreSQL + ``mlflow server --serve-artifacts`` on localhost, two evaluations and a
boost from separate processes and workspaces, then a report built on a fresh workspace that has no local
artifacts at all."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import mlflow
import pytest

from harness.commands.server import free_port, start_mlflow_server, start_postgres, stop_process_group

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture
def server():
    base = Path(tempfile.mkdtemp(prefix="sb-team-"))      # outside pytest's 0700 tree: postgres must enter it
    os.chmod(base, 0o755)
    pg = start_postgres(base / "pg", free_port())
    port = free_port()
    try:
        proc = start_mlflow_server(pg.url, base / "artifacts", port=port, timeout=300)
    except BaseException:
        pg.stop()
        raise
    yield f"http://127.0.0.1:{port}", base
    stop_process_group(proc)
    pg.stop()


def _cli(args, ws: Path, uri: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "SPATIALBOOST_HOME": str(ws), "MLFLOW_TRACKING_URI": uri}
    return subprocess.Popen([sys.executable, "-m", "harness.commands.cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_two_evals_and_a_boost_on_one_server_then_a_report_from_a_fresh_workspace(server, tmp_path):
    uri, base = server
    common = ["--suite", "retrieval.roxford", "--world", "tiny", "--experiment", "team", "--no-progress",
              "protocol.layer=-1"]
    a = _cli(["eval", "--encoder", "builtin:tiny-vit", *common], tmp_path / "ws-a", uri)
    b = _cli(["eval", "--encoder", "random:builtin:tiny-vit", *common], tmp_path / "ws-b", uri)
    for p in (a, b):
        out, err = p.communicate(timeout=900)
        assert p.returncode == 0, err[-3000:]
    from trainer.conftest import make_dataset      # the trainer tests' QA fixture (tests/ is on sys.path)
    data = make_dataset(tmp_path / "qa", n=4)
    boost = _cli(["boost", "--encoder", "builtin:tiny-vit", "--data", str(data), "--stages", "3",
                  "--lm", "builtin:tiny-qwen2", "--no-progress", "experiment=team-boost", "max_length=512",
                  "stage3.batch_size=2", "stage3.micro_batch_size=2", "stage3.max_steps=1"],
                 tmp_path / "ws-c", uri)
    out, err = boost.communicate(timeout=900)
    assert boost.returncode == 0, err[-3000:]
    assert out.strip().splitlines()[-1].startswith("boosted:")

    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("team")
    runs = client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'")
    assert len(runs) == 2
    assert not exp.artifact_location.startswith("file:")        # the server chose it: mlflow-artifacts:/...
    boost_exp = client.get_experiment_by_name("team-boost")
    with_encoder = [r.info.run_id for r in client.search_runs([boost_exp.experiment_id])
                    if any(a.path == "encoder" for a in client.list_artifacts(r.info.run_id))]
    assert with_encoder, "the boost logged no encoder artifact to the server"
    spec = f"boosted:runs:/{with_encoder[0]}/encoder"
    assert not any((tmp_path / w / "mlflow.db").exists() for w in ("ws-a", "ws-b", "ws-c"))

    # the boosted encoder resolves from the server in yet another workspace
    from harness.registry import build_encoder
    from harness.workspace import open_workspace
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        enc = build_encoder(spec, open_workspace(tmp_path / "ws-d"))
        assert enc.boosted_from == "builtin:tiny-vit"
    finally:
        del os.environ["MLFLOW_TRACKING_URI"]

    fresh = tmp_path / "ws-report"
    rep = _cli(["report", "--experiment", "team", "--tracking-uri", uri, "--tables", "summary,table5",
                "--formats", "md", "--out", str(fresh / "out")], fresh, uri)
    out, err = rep.communicate(timeout=600)
    assert rep.returncode == 0, err[-3000:]
    md = (fresh / "out" / "team.md").read_text()
    for run in runs:
        assert run.info.run_id[:8] in md or run.info.run_id in md
