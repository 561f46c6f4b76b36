"""Every bad input a new user may type (issue #14) ends as ``error: <message naming the culprit>``, exit 2,
no traceback, and leaves nothing behind: no RUNNING run, no FAILED run without an ``error`` tag, and (for
inputs refused before any work) no new MLflow run, no feature-cache temp folder, no boost run folder.

The commands run in-process through ``harness.commands.cli.main`` (one import for the whole file); two cases also
run as real processes to check the exit status and stderr end to end.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fixtures import make_imagefolder

BIN = Path(sys.executable).parent / "spatialboost"
MARKER = "/tmp/spatialboost-bad-input-pwned"


# ----------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Datasets and hostile files shared by every case (none is ever modified by a case)."""
    root = tmp_path_factory.mktemp("bad-inputs")
    imf = make_imagefolder(root / "imf", n_classes=2, train_per_class=4, val_per_class=2, size=32)
    corrupt = make_imagefolder(root / "corrupt", n_classes=2, train_per_class=4, val_per_class=2, size=32)
    victim = sorted((corrupt / "train").rglob("*.JPEG"))[0]
    victim.write_bytes(b"this is not a JPEG")

    from transformers import Dinov2Config
    evil = root / "hf-evil"
    Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                 image_size=28, patch_size=14).save_pretrained(evil)

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {MARKER}",))

    torch.save({"embeddings.cls_token": Evil()}, evil / "pytorch_model.bin")
    (root / "empty").mkdir()
    noconf = root / "hf-noconf"
    noconf.mkdir()
    torch.save({}, noconf / "pytorch_model.bin")

    yaml_evil = root / "evil.yaml"
    yaml_evil.write_text(f"encoder: !!python/object/apply:os.system ['touch {MARKER}']\nsuite: cls.imagenet\n")
    yaml_broken = root / "broken.yaml"
    yaml_broken.write_text("encoder: builtin:tiny-vit\nsuite: [cls.imagenet\n")
    qa_bad = root / "bad.jsonl"
    qa_bad.write_text('{"id": 1, "conversations": [\n')
    sweep_cfg = root / "sweep.yaml"
    sweep_cfg.write_text(f"encoder: builtin:tiny-vit\nsuite: cls.imagenet\ndata: {imf}\n"
                         "sweep:\n  space:\n    protocol.lrs: []\n")
    return {"root": root, "imf": imf, "corrupt": corrupt, "victim": victim, "evil": evil, "noconf": noconf,
            "empty": root / "empty", "yaml_evil": yaml_evil, "yaml_broken": yaml_broken, "qa_bad": qa_bad, "sweep_cfg": sweep_cfg}


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """One workspace for every case: each case checks what it added."""
    return tmp_path_factory.mktemp("bad-inputs-ws")


@pytest.fixture(autouse=True)
def _env(monkeypatch, ws):
    monkeypatch.setenv("SPATIALBOOST_HOME", str(ws))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


# ------------------------------------------------------------------------------------------ helpers
def _runs(ws: Path) -> list:
    db = ws / "mlflow.db"
    if not db.exists():
        return []
    import mlflow
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}")
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids, max_results=10000) if ids else []


def _debris(ws: Path) -> list[str]:
    found = [str(p) for p in (ws / "cache").glob("*.tmp-*")] if (ws / "cache").is_dir() else []
    boost = ws / "boost"
    if boost.is_dir():
        found += [str(p) for p in boost.iterdir() if p.is_dir() and any(p.iterdir())]
    return found


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    from harness.commands.cli import main
    capsys.readouterr()
    rc = main(argv)     # an uncaught exception (a traceback for the user) fails the test right here
    return rc, capsys.readouterr().err


def check_refused(argv, culprits, capsys, ws, *, late: bool = False):
    """exit 2, ``error: ...`` naming every culprit, no traceback; nothing left behind."""
    before = {r.info.run_id for r in _runs(ws)}
    rc, err = run_cli(argv, capsys)
    assert rc == 2, f"exit {rc}, stderr:\n{err}"
    assert "error: " in err and "Traceback" not in err, err
    for c in culprits:
        assert c.lower() in err.lower(), f"message does not name {c!r}:\n{err}"
    new = [r for r in _runs(ws) if r.info.run_id not in before]
    if not late:   # refused before any work: no run at all
        assert not new, f"a run was created for a bad input: {[(r.info.run_id, r.info.status) for r in new]}"
    for r in _runs(ws):
        assert r.info.status != "RUNNING", f"run {r.info.run_id} left RUNNING"
        if r.info.status == "FAILED":
            assert r.data.tags.get("error"), f"FAILED run {r.info.run_id} has no error tag"
    assert not _debris(ws), _debris(ws)
    assert not os.path.exists(MARKER), "a hostile file ran code"
    return err


def _no_cuda_device() -> str:
    return "cuda:99" if torch.cuda.is_available() else "cuda"


EVAL = ["--encoder", "builtin:tiny-vit", "--suite", "cls.imagenet", "--no-progress"]

# (id, extra arguments, words the message must contain). {imf} etc. are filled from the fixtures.
EVAL_CASES = [
    ("yaml-override", ["protocol.lrs=[0.1,"], ["protocol.lrs", "[0.1,"]),
    ("batch-size-0", ["protocol.batch_size=0"], ["protocol.batch_size"]),
    ("lrs-empty", ["protocol.lrs=[]"], ["protocol.lrs"]),
    ("lrs-negative", ["protocol.lrs=[-0.1]"], ["protocol.lrs"]),
    ("holdout-1.5", ["protocol.holdout_fraction=1.5"], ["protocol.holdout_fraction"]),
    ("holdout-neg", ["protocol.holdout_fraction=-0.5"], ["protocol.holdout_fraction"]),
    ("epochs-neg", ["protocol.epochs=-1"], ["protocol.epochs"]),
    ("knn-k-0", ["protocol.knn_k=[0]"], ["protocol.knn_k"]),
    ("epochs-text", ["protocol.epochs=ten"], ["protocol.epochs", "ten"]),
    ("unknown-protocol-key", ["protocol.epoch=3"], ["protocol.epoch", "protocol.epochs"]),
    ("unknown-key", ["sede=1"], ["sede", "seed"]),
    ("not-key-value", ["--", "lonely"], ["lonely"]),
    ("device-cuda", ["device={cuda}"], ["device", "{cuda}"]),
    ("device-tpu", ["device=tpu"], ["device", "tpu"]),
    ("precision", ["precision=fp8"], ["precision", "fp8"]),
    ("mode", ["mode=slow"], ["mode", "slow"]),
    ("head", ["--head", "bogus"], ["bogus", "cls.imagenet"]),
    ("missing-data", ["--data", "{root}/nowhere"], ["data", "nowhere"]),
]


@pytest.mark.parametrize("case", EVAL_CASES, ids=[c[0] for c in EVAL_CASES])
@pytest.mark.parametrize("command", ["eval", "validate"])
def test_eval_and_validate_refuse(command, case, files, ws, capsys):
    _, extra, culprits = case
    fill = {"cuda": _no_cuda_device(), "root": files["root"]}
    extra = [a.format(**fill) for a in extra]
    culprits = [c.format(**fill) for c in culprits]
    data = [] if "--data" in extra else ["--data", str(files["imf"])]
    check_refused([command, *EVAL[:4], *data, *(["--no-progress"] if command == "eval" else []), *extra],
                  culprits, capsys, ws)


ENCODER_CASES = [
    ("unknown-builtin", "builtin:tiny-vitt", ["tiny-vitt", "tiny-vit"]),
    ("unknown-scheme", "tim:vit_small_patch14_dinov2", ["tim"]),
    ("timm-bogus-kw", "timm:vit_tiny_patch16_224?random=1&bogus_kw=3", ["bogus_kw"]),
    ("timm-no-ckpt", "timm:vit_tiny_patch16_224", ["ckpt"]),
    ("timm-missing-ckpt", "timm:vit_tiny_patch16_224?ckpt={root}/none.pth", ["none.pth"]),
    ("hf-malicious-bin", "hf:{evil}", ["{evil}", "refused"]),
    ("hf-no-config", "hf:{noconf}", ["{noconf}", "config.json"]),
    ("hf-not-a-folder", "hf:{root}/nothing-here", ["nothing-here"]),
]


@pytest.mark.parametrize("case", ENCODER_CASES, ids=[c[0] for c in ENCODER_CASES])
def test_eval_refuses_bad_encoder_specs(case, files, ws, capsys):
    _, spec, culprits = case
    fill = {k: files[k] for k in ("root", "evil", "noconf")}
    check_refused(["eval", "--encoder", spec.format(**fill), "--suite", "cls.imagenet", "--data",
                   str(files["imf"]), "--no-progress"], [c.format(**fill) for c in culprits], capsys, ws)


def test_validate_refuses_malicious_hf_checkpoint(files, ws, capsys):
    check_refused(["validate", "--encoder", f"hf:{files['evil']}", "--suite", "cls.imagenet", "--data",
                   str(files["imf"])], [str(files["evil"])], capsys, ws)


def test_unknown_suite_suggests(files, ws, capsys):
    check_refused(["eval", "--encoder", "builtin:tiny-vit", "--suite", "cls.imagenett", "--data",
                   str(files["imf"])], ["cls.imagenett", "cls.imagenet"], capsys, ws)


@pytest.mark.parametrize("suite", ["retrieval.met", "retrieval.amstertime"])
def test_real_data_only_suites_need_data(suite, ws, capsys):
    check_refused(["eval", "--encoder", "builtin:tiny-vit", "--suite", suite, "--no-progress"],
                  [suite, "--data"], capsys, ws)


def test_config_files(files, ws, capsys):
    check_refused(["eval", str(files["root"] / "missing.yaml")], ["missing.yaml"], capsys, ws)
    check_refused(["eval", str(files["yaml_broken"])], ["broken.yaml"], capsys, ws)
    check_refused(["eval", str(files["yaml_evil"])], ["evil.yaml"], capsys, ws)


def test_corrupt_image_found_late_fails_the_run_with_an_error_tag(files, ws, capsys):
    """A bad file found during the run: the run exists, but it is FAILED with the message as its tag."""
    err = check_refused(["eval", *EVAL[:4], "--data", str(files["corrupt"]), "--no-progress",
                         "protocol.epochs=1"], [files["victim"].name], capsys, ws, late=True)
    failed = [r for r in _runs(ws) if r.data.tags.get("dataset") == str(files["corrupt"])]
    if failed:   # refused while reading the files for the fingerprint is fine too (then no run exists)
        assert all(r.info.status == "FAILED" and files["victim"].name in r.data.tags["error"] for r in failed), err


# ---------------------------------------------------------------------------------------------- sweep
SWEEP_CASES = [
    ("empty-space", ["{sweep_cfg}"], ["protocol.lrs"]),
    ("device-tpu", ["{sweep_cfg}", "device=tpu"], ["tpu"]),
    ("batch-size-0", ["{sweep_cfg}", "protocol.batch_size=0"], ["protocol.batch_size"]),
    ("yaml-override", ["{sweep_cfg}", "protocol.lrs=[0.1,"], ["protocol.lrs"]),
    ("sampler", ["{sweep_cfg}", "sweep.sampler=bogus", "sweep.space={{protocol.epochs: [1]}}"], ["bogus"]),
    ("storage", ["{sweep_cfg}", "sweep.space={{protocol.epochs: [1]}}", "--storage",
                 "postgresql://nobody@127.0.0.1:1/none"], ["127.0.0.1:1"]),
    ("bad-encoder", ["{sweep_cfg}", "encoder=timm:vit_tiny_patch16_224?random=1&bogus_kw=3",
                     "sweep.space={{protocol.epochs: [1]}}"], ["bogus_kw"]),
]


@pytest.mark.parametrize("case", SWEEP_CASES, ids=[c[0] for c in SWEEP_CASES])
def test_sweep_refuses(case, files, ws, capsys):
    _, extra, culprits = case
    check_refused(["sweep", *[a.format(**files) for a in extra]], culprits, capsys, ws)


# ---------------------------------------------------------------------------------------------- boost
BOOST_CASES = [
    ("lm-missing-folder", ["--lm", "does-not-exist"], ["does-not-exist"]),
    ("lm-unknown-builtin", ["--lm", "builtin:tiny-qwen3"], ["builtin:tiny-qwen3"]),
    ("data-missing", ["--data", "{root}/missing.jsonl"], ["missing.jsonl"]),
    ("data-not-json", ["--data", "{qa_bad}"], ["bad.jsonl"]),
    ("device-tpu", ["device=tpu"], ["tpu"]),
    ("encoder", ["--encoder", "builtin:tiny-vitt"], ["tiny-vitt"]),
    ("stages", ["--stages", "1,4"], ["4"]),
    ("unknown-key", ["stage9.lr=1"], ["stage9"]),
]


@pytest.mark.parametrize("case", BOOST_CASES, ids=[c[0] for c in BOOST_CASES])
def test_boost_refuses(case, files, ws, capsys):
    _, extra, culprits = case
    extra = [a.format(**files) for a in extra]
    base = {"--encoder": "builtin:tiny-vit", "--data": str(files["qa_bad"]), "--lm": "builtin:tiny-qwen2"}
    for i, a in enumerate(extra):
        if a in base:
            base[a] = extra[i + 1]
    rest = [a for i, a in enumerate(extra) if a not in base and (i == 0 or extra[i - 1] not in base)]
    argv = ["boost", *[x for kv in base.items() for x in kv], "--no-progress", "--workspace", str(ws), *rest]
    check_refused(argv, culprits, capsys, ws)


# ----------------------------------------------------------------------------------------------- data
DATA_CASES = [
    ("world-missing", ["--world", "{root}/no-world"], ["no-world"]),
    ("world-empty", ["--world", "{empty}"], ["empty"]),
    ("levels", ["--levels", "pix,bogus"], ["bogus"]),
]


@pytest.mark.parametrize("case", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_data_generate_refuses(case, files, ws, capsys, tmp_path):
    _, extra, culprits = case
    extra = [a.format(**files) for a in extra]
    world = [] if "--world" in extra else ["--world", str(files["root"] / "no-world")]
    out = tmp_path / "qa-out"
    check_refused(["data", "generate", *world, "--out", str(out), "--no-progress", *extra], culprits, capsys, ws)
    assert not (out / "conversations.jsonl").exists()


# --------------------------------------------------------------------------------------------- report
REPORT_CASES = [
    ("experiment", ["--experiment", "no-such-experiment"], ["no-such-experiment"]),
    ("table", ["--experiment", "spatialboost", "--tables", "table99"], ["table99"]),
    ("format", ["--experiment", "spatialboost", "--formats", "pdf"], ["pdf"]),
    ("tracking-uri", ["--experiment", "x", "--tracking-uri", "http://127.0.0.1:1"], ["127.0.0.1:1"]),
    ("no-finished-runs", ["--experiment", "empty-experiment"], ["empty-experiment"]),
]


@pytest.mark.parametrize("case", REPORT_CASES, ids=[c[0] for c in REPORT_CASES])
def test_report_refuses(case, ws, capsys, tmp_path):
    _, extra, culprits = case
    from harness.tracking import Tracker     # experiments that exist, so only the option is wrong
    Tracker(f"sqlite:///{ws / 'mlflow.db'}", "spatialboost", ws / "artifacts")
    Tracker(f"sqlite:///{ws / 'mlflow.db'}", "empty-experiment", ws / "artifacts")
    check_refused(["report", "--workspace", str(ws), "--out", str(tmp_path / "rep"), *extra], culprits, capsys, ws)
    assert not any((tmp_path / "rep").glob("*.html"))


# ------------------------------------------------------------------------------------ real processes
@pytest.mark.parametrize("extra,culprit", [(["protocol.lrs=[0.1,"], "protocol.lrs"), (["device=tpu"], "tpu"),
                                           (["protocol.batch_size=0"], "protocol.batch_size")])
def test_real_process_exit_status_and_stderr(extra, culprit, files, tmp_path):
    ws = tmp_path / "ws"
    p = subprocess.run([str(BIN), "eval", *EVAL[:4], "--data", str(files["imf"]), "--workspace", str(ws), *extra],
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "MLFLOW_TRACKING_URI": ""})
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith("error: ") and culprit in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert not ws.exists(), f"a refused command created {sorted(p.name for p in ws.iterdir())}"
