"""CortexBench BC: demos (generator, format, restricted pickles), fusion, policy, metrics, end to end."""
import json
import math
import pickle
import time

import numpy as np
import pytest
import torch

from heads.bc_policy import BCPolicy, episode_features, fuse_history, history_indices, train_epoch
from suites.cortexbench.demos import DemoError, load_demos
from suites.cortexbench.envs import MissingPackageError, UnknownTaskError, require
from suites.cortexbench.suite import MetaWorldSuite, aggregate, eval_epochs
from suites.images import DataError


# -- demos ------------------------------------------------------------------------------------------

def test_expert_demos_succeed_and_round_trip(mw_demos):
    index = json.loads((mw_demos / "drawer-open" / "index.json").read_text())
    assert index["camera"] == "corner" and index["image_size"] == 64
    assert all(e["success"] for e in index["episodes"]) and len(index["episodes"]) == 3
    demos = load_demos(mw_demos, "metaworld", "drawer-open", 3, proprio_dim=4)
    for ep, row in zip(demos.episodes, index["episodes"]):
        frames = ep.frames()
        assert frames.dtype == np.uint8 and frames.shape == (row["length"], 64, 64, 3)
        assert frames.reshape(len(frames), -1).max(1).min() > 0           # no black frame
        assert ep.actions.shape == (row["length"], 4) and ep.proprio.shape == (row["length"], 4)
        with np.load(ep.npz, allow_pickle=False) as z:
            assert z["success"][-1] and not z["success"][:-1].any()      # stops at the first success
            np.testing.assert_array_equal(z["frames"], frames)
    assert demos.frame_size == 64


def _path(T=5, bad=None):
    p = {"observations": np.random.rand(T, 39), "actions": np.random.rand(T, 4).astype(np.float32),
         "rewards": np.zeros(T), "images": np.random.randint(1, 255, (T, 16, 16, 3), np.uint8),
         "env_infos": {"gripper_proprio": np.random.rand(T, 4)}}
    if bad:
        p["actions"] = p["actions"][:bad]
    return p


def test_cortexbench_pickle_reader(tmp_path):
    f = tmp_path / "hammer-v2-goal-observable.pickle"
    paths = [_path(), _path(7)]
    f.write_bytes(pickle.dumps(paths, protocol=4))
    demos = load_demos(tmp_path, "metaworld", "hammer", 2, proprio_dim=4, proprio_key="gripper_proprio")
    assert [len(e) for e in demos.episodes] == [5, 7]
    np.testing.assert_array_equal(demos.episodes[1].frames(), paths[1]["images"])
    np.testing.assert_allclose(demos.episodes[0].proprio, paths[0]["env_infos"]["gripper_proprio"], rtol=1e-6)
    f.write_bytes(pickle.dumps([_path(), _path(6, bad=4)], protocol=4))
    with pytest.raises(DemoError, match=r"hammer-v2-goal-observable.pickle \[path 1\].*images/frames 6, "
                                        r"actions 4, observations 6"):
        load_demos(tmp_path, "metaworld", "hammer", 2, proprio_dim=4)


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_malicious_pickle_is_refused(tmp_path, capsys):
    (tmp_path / "dmc_walker_stand-v1.pickle").write_bytes(pickle.dumps([{"images": _Evil()}]))
    with pytest.raises(DemoError, match="refused global 'builtins.print'"):
        load_demos(tmp_path, "dmc", "walker_stand", 1)
    assert "pwned" not in capsys.readouterr().out


def test_missing_demos_unknown_task_missing_package(tmp_path):
    with pytest.raises(DemoError, match="no demonstrations for metaworld task 'hammer'"):
        load_demos(tmp_path, "metaworld", "hammer", 1)
    suite = MetaWorldSuite(MetaWorldSuite.Options(tasks=("drawer-opne",)))
    with pytest.raises(UnknownTaskError, match="valid tasks: assembly, bin-picking, button-press-topdown, "
                                               "drawer-open, hammer. Did you mean 'drawer-open'"):
        suite.tasks()
    try:
        import trifinger_simulation  # noqa: F401
    except ImportError:
        with pytest.raises(MissingPackageError, match="'trifinger_simulation'.*pip install trifinger_simulation"):
            require("trifinger")
    assert issubclass(MissingPackageError, DataError) and issubclass(DemoError, DataError)


# -- fusion, policy, metrics --------------------------------------------------------------------------

def test_frame_fusion_matches_hand_computation():
    e = torch.arange(4 * 2, dtype=torch.float32).reshape(4, 2) ** 2     # 4 frames, D=2
    p = torch.tensor([[0.5], [1.5], [2.5], [3.5]])
    f = episode_features(e, p, window=3)
    assert history_indices(4, 3).tolist() == [[0, 0, 0], [0, 0, 1], [0, 1, 2], [1, 2, 3]]
    for t in range(4):
        a, b, c = e[max(t - 2, 0)], e[max(t - 1, 0)], e[t]
        expected = torch.cat([b - a, c - b, c, p[t]])
        torch.testing.assert_close(f[t], expected)
    assert fuse_history(e[None, :3]).shape == (1, 6)


def test_policy_shapes_and_training_step():
    torch.manual_seed(0)
    pol = BCPolicy(10, 4)
    assert isinstance(pol.input_bn, torch.nn.BatchNorm1d) and [l.out_features for l in pol.layers] == [256, 256, 256, 4]
    x, y = torch.randn(300, 10), torch.randn(300, 4).clamp(-1, 1)
    opt = torch.optim.Adam(pol.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    l1 = train_epoch(pol, opt, x, y, 256, g)
    for _ in range(20):
        l2 = train_epoch(pol, opt, x, y, 256, g)
    assert l2 < l1 and not pol.training
    assert pol(x[:1]).shape == (1, 4)                                   # eval mode: batch of one works
    steps = []
    train_epoch(BCPolicy(10, 4), opt, x[:257], y[:257], 256, g, on_step=steps.append)
    assert len(steps) == 1                                              # trailing batch of one is skipped


def test_metric_aggregation_best_vs_last():
    curves = {"a": {100: [(5, 10.0), (10, 50.0), (15, 30.0)], 200: [(5, 20.0), (10, 40.0), (15, 40.0)]},
              "b": {100: [(5, 0.0), (10, 0.0), (15, 100.0)], 200: [(5, 60.0), (10, 20.0), (15, 20.0)]}}
    m = aggregate(curves, "success")
    assert m["success.a"] == 45.0 and m["success.a.last"] == 35.0
    assert m["success.b"] == 80.0 and m["success.b.last"] == 60.0
    assert m["success.a.std"] == pytest.approx(np.std([50, 40], ddof=1))
    # per seed: best (50+100)/2=75, (40+60)/2=50; last (30+100)/2=65, (40+20)/2=30
    assert m["success"] == 62.5 and m["success.std"] == pytest.approx(np.std([75, 50], ddof=1))
    assert m["success.last"] == 47.5 and m["success.last.std"] == pytest.approx(np.std([65, 30], ddof=1))
    assert np.isnan(aggregate({"a": {1: [(1, 3.0)]}}, "score")["score.std"])   # one seed: no std, not 0
    assert eval_epochs(100, 5) == list(range(5, 101, 5)) and eval_epochs(7, 5) == [5, 7]


# -- end to end --------------------------------------------------------------------------------------

def _mean_action_reference(task, mean_action, env_seeds, horizon):
    """Independent of the suite's rollout code: MetaWorld's own env, seeded per episode as documented
    (fresh positions from env.np_random), the constant action for the full horizon, no rendering."""
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE as ENVS
    env = ENVS[f"{task}-v3-goal-observable"](seed=0)
    env._freeze_rand_vec, env.seeded_rand_vec = False, True
    out = []
    for s in env_seeds:
        env.seed(int(s))
        env.reset()
        ret, info = 0.0, {}
        for _ in range(horizon):
            _, r, _, _, info = env.step(np.clip(mean_action, -1, 1).astype(np.float32))
            ret += float(r)
        out.append((float(info["success"]), ret))
    return out


def test_metaworld_end_to_end(mw_demos, workspace):
    import mlflow
    from harness.config import build
    from harness.runner import EvalConfig, evaluate
    from harness.samples import PerSample
    assert MetaWorldSuite.spec.validation is None
    proto = {"tasks": ["drawer-open"], "num_demos": 3, "eval_rollouts": 2, "epochs": 2, "eval_every": 1,
             "seeds": [100], "horizon": 40}
    cfg = build(EvalConfig, {"encoder": "builtin:tiny-vit", "suite": "cortexbench.metaworld", "data": str(mw_demos),
                             "workspace": str(workspace), "progress": False, "protocol": proto})
    rec = evaluate(cfg)
    assert not rec.reused
    m = rec.metrics
    for k in ("success", "success.std", "success.last", "success.last.std", "success.drawer-open",
              "success.drawer-open.last", "success_reached", "floor.success", "floor.success_reached",
              "floor.success.drawer-open", "floor_proprio.success", "floor_proprio.success.std"):
        if k.endswith(".std") and len(proto["seeds"]) == 1:
            assert math.isnan(m[k]), k                 # one seed: no std (a table shows no ± 0)
        else:
            assert 0 <= m[k] <= 100, k
    assert m["success"] >= m["success.last"] and m["success_reached"] >= m["success.last"]
    client = mlflow.MlflowClient(f"sqlite:///{workspace}/mlflow.db")
    local = client.download_artifacts(rec.run_id, "per_sample")
    ids = [f"drawer-open/seed100/rollout{i:03d}" for i in range(2)]
    for name in ("success", "success.last", "success_reached", "floor.success", "floor.success_reached",
                 "floor_proprio.success"):
        ps = PerSample.load(f"{local}/{name}.npz")
        assert ps.ids == ids and ps.reduce == "mean" and ps.scale == 100, name
        assert ps.value() == pytest.approx(m[name], rel=1e-9), name
        assert set(np.unique(ps.stats[:, 0])) <= {0.0, 1.0}
        np.testing.assert_array_equal(ps.stats[:, 6], [12345, 12346])          # env seed of rollout i
        if name != "success_reached" and not name.endswith("success_reached"):
            np.testing.assert_array_equal(ps.stats[:, 0], ps.stats[:, 1])      # success at the last step
        assert (ps.stats[:, 4] == 40).all(), name                             # full horizon, never cut short
    # oracle: the floor equals an independent rollout of the mean training action
    acts = np.concatenate([np.load(p)["actions"] for p in sorted((mw_demos / "drawer-open").glob("*.npz"))])
    ref = _mean_action_reference("drawer-open", acts.mean(0), [12345, 12346], 40)
    floor = PerSample.load(f"{local}/floor.success.npz")
    np.testing.assert_array_equal(floor.stats[:, 1], [r[0] for r in ref])
    np.testing.assert_allclose(floor.stats[:, 5], [r[1] for r in ref], rtol=1e-5)
    assert m["floor.success"] == pytest.approx(100 * np.mean([r[0] for r in ref]))
    again = evaluate(cfg)
    assert again.reused and again.run_id == rec.run_id
    # the run's frame strip (one recorded rollout of the encoder's policy per task)
    assert [f.path for f in client.list_artifacts(rec.run_id, "figures")] == ["figures/rollouts.png"]
    from PIL import Image
    with Image.open(client.download_artifacts(rec.run_id, "figures/rollouts.png")) as im:
        assert im.format == "PNG" and im.width > 300


class _FakeEnv:
    """Succeeds at steps 3 and 4 (0-based), then loses success again (like a dropped hammer)."""
    horizon = 8

    def reset(self, seed):
        self.t = 0

    def step(self, action):
        from suites.cortexbench.envs import StepResult
        self.t += 1
        return StepResult(1.0, self.t in (4, 5))

    def proprio(self):
        return np.zeros(4, np.float32)


def test_success_is_scored_at_the_last_step_of_the_full_horizon():
    from heads.bc_policy import MeanActionPolicy
    from suites.cortexbench.rollout import run_rollouts
    from suites.cortexbench.vecenv import LocalEnvs
    pol = MeanActionPolicy(torch.zeros(4))
    full = run_rollouts(LocalEnvs([_FakeEnv()]), [pol], [(0, 7)], stop_at_success=False)[0]
    assert full["steps"] == 8 and full["success"] is False and full["reached"] is True and full["first_success"] == 3
    early = run_rollouts(LocalEnvs([_FakeEnv()]), [pol], [(0, 7)], stop_at_success=True)[0]
    assert early["steps"] == 4 and early["success"] is True and early["reached"] is True
    suite = MetaWorldSuite(MetaWorldSuite.Options())
    assert suite.metric_names() == ("success", "success_reached")
    assert suite.score([full], "success") == 0.0 and suite.score([full], "success_reached") == 100.0
    fast = MetaWorldSuite(MetaWorldSuite.Options(stop_at_success=True))
    assert fast.metric_names() == ("success_reached",)            # the speed option never reports 'success'
    ps = suite.per_sample({("drawer-open", 100): [full]}, "success", "bc")
    assert ps.ids == ["drawer-open/seed100/rollout000"] and ps.value() == 0.0
    assert ps.stats[0, 2] == 1.0 and ps.stats[0, 3] == 3.0


def test_mean_action_policy_and_option_ranges():
    from harness.config import ConfigError, build
    from heads.bc_policy import MeanActionPolicy, policy_from_config
    y = torch.tensor([[0.0, 1.0, -1.0, 0.5], [1.0, 0.0, 1.0, 0.5]])
    pol = MeanActionPolicy.fit(y)
    torch.testing.assert_close(pol(torch.randn(3, 9)), torch.tensor([[0.5, 0.5, 0.0, 0.5]] * 3))
    again = policy_from_config(pol.config(), pol.state_dict())
    torch.testing.assert_close(again(None), pol(None))
    bc = BCPolicy(4, 4, kind="proprio")
    assert policy_from_config(bc.config(), bc.state_dict()).kind == "proprio"
    for key, bad in (("eval_rollouts", 0), ("seeds", []), ("lr", 0.0), ("batch_size", 1), ("crop_size", 4),
                     ("horizon", 0), ("frame_size", 8), ("msaa", -1), ("rollout_batch", 0)):
        with pytest.raises(ConfigError, match=f"protocol.{key}"):
            build(MetaWorldSuite.Options, {key: bad}, prefix="protocol.")   # as the runner resolves it


DMC_WRITER = r"""
import pickle, sys
import numpy as np
from dm_control import suite
env = suite.load("walker", "stand", task_kwargs={"random": 0})
rng = np.random.default_rng(0)
paths = []
for ep in range(2):
    ts = env.reset()
    images, actions, obs, rewards = [], [], [], []
    for t in range(12):
        images.append(env.physics.render(64, 64, camera_id=0))
        obs.append(np.concatenate([np.ravel(v) for v in ts.observation.values()]))
        a = rng.uniform(-1, 1, env.action_spec().shape).astype(np.float32)
        ts = env.step(a)
        actions.append(a)
        rewards.append(ts.reward or 0.0)
    paths.append({"observations": np.stack(obs), "actions": np.stack(actions), "rewards": np.array(rewards),
                  "images": np.stack(images).astype(np.uint8), "env_infos": {}})
with open(sys.argv[1], "wb") as f:
    pickle.dump(paths, f)
"""


def test_dmc_from_cortexbench_demo_pickle(tmp_path, workspace):
    """`cortexbench.dmc` trains and rolls out from a demo file in CortexBench's format (written here from the
    real walker environment in a subprocess, so this process never holds a GL context)."""
    import subprocess
    import sys

    from harness.config import build
    from harness.runner import EvalConfig, evaluate
    pkl = tmp_path / "dmc_walker_stand-v1.pickle"
    subprocess.run([sys.executable, "-c", DMC_WRITER, str(pkl)], check=True, timeout=300)
    rec = evaluate(build(EvalConfig, {
        "encoder": "builtin:tiny-vit", "suite": "cortexbench.dmc", "data": str(tmp_path), "workspace": str(workspace),
        "progress": False, "protocol": {"tasks": ["walker_stand"], "num_demos": 2, "eval_rollouts": 1, "epochs": 2,
                                        "eval_every": 1, "seeds": [100], "crop_size": 64, "frame_skip": 2,
                                        "horizon": 12}}))
    assert 0 <= rec.metrics["score"] <= 100 and "score.last" in rec.metrics
    assert rec.metrics["score"] >= rec.metrics["score.last"]          # best epoch >= last epoch


def test_demo_presets_build():
    """Both presets pass the option ranges and score the full horizon; the default is not the saturated task."""
    from harness.config import build
    for preset in ("tiny", "default"):
        o = build(MetaWorldSuite.Options, MetaWorldSuite.demo_protocol(preset), prefix="protocol.")
        assert not o.stop_at_success and o.horizon and o.frame_size
    default = MetaWorldSuite.demo_protocol("default")
    assert "drawer-open" not in default["tasks"]                  # saturated: 100 % for every encoder
    assert MetaWorldSuite.demo_protocol("tiny")["horizon"] <= 60    # the tests' preset stays seconds-fast


class _RenderingEnv(_FakeEnv):
    """_FakeEnv whose frame at step t is filled with the value t; the proprioception carries the env seed
    and the step, so a policy's action depends on the episode."""

    def reset(self, seed):
        self.t, self.seed = 0, seed

    def step(self, action):
        from suites.cortexbench.envs import StepResult
        self.t += 1
        self.actions = getattr(self, "actions", []) + [np.asarray(action).copy()]
        return StepResult(float(np.sum(action)), bool(action[0] > 0))

    def render(self):
        return np.full((6, 6, 3), self.t, np.uint8)

    def proprio(self):
        return np.array([self.seed % 7, self.t, 1, 0], np.float32)


def _frame_mean_embed(frames):
    return torch.stack([torch.from_numpy(f).float().mean((0, 1)) for f in frames])


def test_rollout_records_evenly_spaced_frames_of_one_episode():
    from heads.bc_policy import BCPolicy
    from suites.cortexbench.rollout import run_rollouts
    from suites.cortexbench.vecenv import LocalEnvs
    pol = BCPolicy(6, 4, (8,)).eval()
    rows = run_rollouts(LocalEnvs([_RenderingEnv(), _RenderingEnv()]), [pol], [(0, 7), (0, 8)],
                        embed=lambda f: torch.zeros(len(f), 3), history=2, use_proprio=False, record_job=1,
                        record_frames=3)
    assert "frames" not in rows[0]                                   # only the episode of record_job
    steps = [t for t, _ in rows[1]["frames"]]
    assert steps == [0, 4, 7]                                        # stride ceil(8 / 2), plus the last step
    assert [int(f[0, 0, 0]) for _, f in rows[1]["frames"]] == steps  # each the frame rendered at that step
    plain = run_rollouts(LocalEnvs([_RenderingEnv()]), [pol], [(0, 8)], embed=lambda f: torch.zeros(len(f), 3),
                         history=2, use_proprio=False)[0]
    assert "frames" not in plain and plain["steps"] == rows[1]["steps"]


def test_lockstep_rows_equal_one_episode_at_a_time():
    """Several policies (BC on frames, proprio-only, mean action) x env seeds stepped together give every
    episode exactly the row and the actions it gets alone; the frame history starts with the first frame
    repeated and each BC policy sees its own episode's frames."""
    from heads.bc_policy import BCPolicy, MeanActionPolicy
    from suites.cortexbench.rollout import run_rollouts
    from suites.cortexbench.vecenv import LocalEnvs
    torch.manual_seed(0)
    pols = [BCPolicy(3 * 3 + 4, 4, (16,)).eval(), BCPolicy(3 * 3 + 4, 4, (16,)).eval(),
            BCPolicy(4, 4, (16,), kind="proprio").eval(), MeanActionPolicy(torch.tensor([0.5, -1, 0, 0]))]
    for p in pols[:3]:
        p.input_bn.running_var.fill_(4.0)
    jobs = [(p, s) for p in range(4) for s in (3, 4, 5)]
    envs = [_RenderingEnv() for _ in range(5)]                      # 12 jobs in chunks of 5
    together = run_rollouts(LocalEnvs(envs), pols, jobs, embed=_frame_mean_embed, history=3)
    for (p, s), row in zip(jobs, together):
        env = _RenderingEnv()
        alone = run_rollouts(LocalEnvs([env]), pols, [(p, s)], embed=_frame_mean_embed, history=3)[0]
        for k in ("seed", "return", "success", "reached", "first_success", "steps", "kind"):
            assert row[k] == alone[k], (p, s, k)
        # the first action of a BC policy: history = the reset frame (value 0) three times, then proprio
        first = torch.cat([torch.zeros(1, 6), torch.zeros(1, 3), torch.tensor([[s % 7, 0, 1, 0]])], 1).float()
        if p < 2:
            with torch.inference_mode():
                np.testing.assert_array_equal(env.actions[0], pols[p](first)[0].numpy())
    assert {r["kind"] for r in together} == {"bc", "proprio", "mean_action"}
    assert len({r["return"] for r in together}) > 4                  # the episodes really differ


def test_rollout_strip_marks_success():
    from matplotlib.colors import to_rgba
    from suites.cortexbench.figures import COLOURS, rollout_strip
    frames = [(t, np.zeros((6, 6, 3), np.uint8)) for t in (0, 4, 7)]
    won = {"frames": frames, "first_success": 3, "steps": 8, "success": True, "reached": True, "seed": 1,
           "policy_seed": 100, "epoch": 2}
    lost = {**won, "success": False}                                 # reached at t=3, lost again by the end
    never = {**won, "first_success": -1, "reached": False, "success": False}
    fig = rollout_strip({"a": won, "b": lost, "c": never}, "success")
    axes = np.array(fig.axes).reshape(3, 3)
    colour = [[next(iter(ax.spines.values())).get_edgecolor() for ax in row] for row in axes]
    g, r, n = (to_rgba(COLOURS[k]) for k in ("success", "failure", "neutral"))
    assert colour == [[n, g, g], [n, g, r], [n, n, r]]
    assert [ax.get_title() for ax in axes[0]] == ["t=0", "t=4", "t=7"]
    assert "SUCCESS (first at t=3)" in axes[0, 0].get_ylabel() and "FAILURE" in axes[1, 0].get_ylabel()
    reached = rollout_strip({"b": lost}, "success_reached")          # ever succeeded counts here
    assert next(iter(reached.axes[2].spines.values())).get_edgecolor() == g


def test_lockstep_metaworld_workers_match_sequential_and_rerun():
    """Real MetaWorld envs in a spawned worker (one renderer, shared by its 3 envs) and the tiny ViT:
    3 episodes in lockstep give the rows that each episode gives alone, and a rerun gives them again."""
    pytest.importorskip("metaworld")
    from harness.registry import build_encoder
    from heads.bc_policy import BCPolicy
    from suites.cortexbench.rollout import Embedder, run_rollouts
    from suites.cortexbench.vecenv import EnvSpec, EnvWorkers
    from suites.images import eval_transform
    enc = build_encoder("builtin:tiny-vit").eval()
    embed = Embedder(enc, eval_transform(enc.info, 64)[0], 2, torch.device("cpu"))
    torch.manual_seed(0)
    pol = BCPolicy(3 * enc.info.embed_dim + 4, 4, (32,)).eval()
    pol.input_bn.running_var.fill_(0.01)                          # large actions: the episodes move
    envs = EnvWorkers(EnvSpec.of("metaworld", "drawer-open", 64, {"horizon": 12}), 3, workers=1)
    try:
        jobs = [(0, 12345), (0, 12346), (0, 12347)]
        together = run_rollouts(envs, [pol], jobs, embed=embed)
        again = run_rollouts(envs, [pol], jobs, embed=embed, record_job=2, record_frames=2)
        alone = [run_rollouts(envs, [pol], [j], embed=embed)[0] for j in jobs]
    finally:
        envs.close()
    keys = ("seed", "return", "success", "first_success", "steps")
    assert [[r[k] for k in keys] for r in together] == [[r[k] for k in keys] for r in alone]
    assert [[r[k] for k in keys] for r in together] == [[r[k] for k in keys] for r in again]
    assert len({r["return"] for r in together}) == 3 and all(r["steps"] == 12 for r in together)
    frames = again[2]["frames"]
    assert [t for t, _ in frames] == [0, 11] and frames[0][1].shape == (64, 64, 3) and frames[1][1].any()
    assert not np.array_equal(frames[0][1], frames[1][1])         # the arm moved


def test_render_flags_must_match_the_demos():
    """Rollouts render with the demos' flags; a protocol asking for other anti-aliasing is refused."""
    from types import SimpleNamespace
    demos = SimpleNamespace(info={"fast_render": True, "msaa": 0, "camera": "corner"}, source="/d")
    kw = MetaWorldSuite(MetaWorldSuite.Options(msaa=0)).env_kwargs(demos)
    assert kw["msaa"] == 0 and kw["fast_render"] is True and kw["camera"] == "corner"
    old = SimpleNamespace(info={"fast_render": True, "camera": "corner"}, source="/old")   # no msaa recorded
    assert "msaa" not in MetaWorldSuite(MetaWorldSuite.Options()).env_kwargs(old)
    with pytest.raises(DataError, match="msaa=None.*msaa=0"):
        MetaWorldSuite(MetaWorldSuite.Options(msaa=0)).env_kwargs(old)
