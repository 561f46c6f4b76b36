"""Simulators behind CortexBench: one small ``SimEnv`` interface over MetaWorld v3, DMControl, Adroit.

Every env renders through ``mujoco.Renderer`` bound to the env's own ``MjModel`` (MetaWorld moves bodies
in the model at reset, so a renderer must follow its env). Only ONE env and ONE renderer live in a process
(see ``suites.cortexbench.rollout``): with EGL, dropping a renderer and creating another in the same
process can silently turn later frames black, so every frame is also checked for being non-empty.

Heavy imports (metaworld, dm_control, gymnasium_robotics) happen inside the functions, so importing this
module is cheap and a missing package is reported with the pip command that installs it.
"""
from __future__ import annotations

import atexit
import importlib
import os
from dataclasses import dataclass

import numpy as np

from suites.images import DataError


class MissingPackageError(DataError):
    """A simulator package needed by a CortexBench suite is not installed."""


class UnknownTaskError(DataError):
    """A task name that the suite does not know."""


# -- task tables ----------------------------------------------------------------------------------

METAWORLD_TASKS = ("assembly", "bin-picking", "button-press-topdown", "drawer-open", "hammer")
DMC_TASKS = ("walker_stand", "walker_walk", "reacher_easy", "cheetah_run", "finger_spin")
ADROIT_TASKS = ("pen", "relocate")
TRIFINGER_TASKS = ("reach_cube", "move_cube")

# CortexBench's demo-file names (data_dir/<env_name>.pickle) per task.
CORTEXBENCH_ENV_NAMES = {
    **{t: f"{t}-v2-goal-observable" for t in METAWORLD_TASKS},
    **{t: f"dmc_{t}-v1" for t in DMC_TASKS},
    "pen": "pen-v0", "relocate": "relocate-v0",
}

PACKAGES = {  # suite -> (import name, pip command)
    "metaworld": ("metaworld", 'pip install metaworld==3.1.1 "gymnasium[mujoco]==1.4.0"'),
    "dmc": ("dm_control", "pip install dm_control==1.0.28"),
    "adroit": ("gymnasium_robotics", "pip install gymnasium-robotics"),
    "trifinger": ("trifinger_simulation", "pip install trifinger_simulation"),
}

METAWORLD_CAMERA = "corner"   # CortexBench used top_cap2, which MetaWorld v3 no longer has


def check_task(suite: str, task: str, valid: tuple[str, ...]) -> str:
    if task not in valid:
        import difflib
        close = difflib.get_close_matches(task, valid, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise UnknownTaskError(f"unknown {suite} task '{task}'; valid tasks: {', '.join(valid)}.{hint}")
    return task


def require(suite: str):
    """Import the simulator package of ``suite`` or raise MissingPackageError naming it."""
    name, pip = PACKAGES[suite]
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise MissingPackageError(f"cortexbench.{suite} needs the Python package '{name}', which is not "
                                  f"installed ({e}); install it with: {pip}") from None


# -- rendering ------------------------------------------------------------------------------------

_RENDERERS: list = []


def _close_renderers():  # close while the GL context still exists (avoids EGL errors at shutdown)
    while _RENDERERS:
        try:
            _RENDERERS.pop().close()
        except Exception:
            pass


class FrameRenderer:
    """One ``mujoco.Renderer`` per process, bound to one model; shadows/reflections off by default
    (3-5x faster with EGL software/GPU rendering; recorded in the run's details)."""

    def __init__(self, model, size: int, camera, fast: bool = True, flip: bool = False, msaa: int | None = None):
        os.environ.setdefault("MUJOCO_GL", "egl")
        import mujoco
        if _RENDERERS:
            raise RuntimeError("a renderer already exists in this process; CortexBench keeps one renderer "
                               "per process (a dropped EGL renderer can silently blank later frames)")
        if msaa is not None:    # offscreen multisamples (the model's vis.quality.offsamples; MetaWorld 4)
            model.vis.quality.offsamples = int(msaa)
        self.renderer = mujoco.Renderer(model, size, size)
        _RENDERERS.append(self.renderer)
        # registered after mujoco.egl's own atexit (eglTerminate), so it runs before it
        atexit.register(_close_renderers)
        if fast:
            self.renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            self.renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        self.model, self.camera, self.flip, self.frames = model, camera, flip, 0
        self._option = mujoco.MjvOption()           # mujoco.Renderer's default scene options
        self._cam = mujoco.MjvCamera()
        cam_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera) if isinstance(camera, str) else camera
        if cam_id is None or cam_id < -1 or cam_id >= model.ncam:
            raise ValueError(f"camera {camera!r} does not exist in the model")
        self._cam.fixedcamid = cam_id
        if cam_id == -1:
            self._cam.type = mujoco.mjtCamera.mjCAMERA_FREE
            mujoco.mjv_defaultFreeCamera(model, self._cam)
        else:
            self._cam.type = mujoco.mjtCamera.mjCAMERA_FIXED

    def __call__(self, data, model=None) -> np.ndarray:
        """Render ``data``; ``model`` = the model of ``data`` when it is not the renderer's own: another env of
        the same task (identical assets, its own body positions), so one renderer serves several envs in
        lockstep rollouts (`suites.cortexbench.rollout`); the frame is the one that env's own renderer gives."""
        import mujoco
        mujoco.mjv_updateScene(self.model if model is None else model, data, self._option, None, self._cam,
                               mujoco.mjtCatBit.mjCAT_ALL.value, self.renderer.scene)
        img = self.renderer.render()
        if self.flip:  # MetaWorld's corner camera looks upside down: rotate by 180 degrees
            img = img[::-1, ::-1]
        img = np.ascontiguousarray(img)
        self.frames += 1
        if not img.any():
            raise RuntimeError(f"rendered frame {self.frames} is all black (camera {self.camera!r}): the "
                               f"renderer lost its GL context; keep one renderer per process")
        return img


# -- environments ---------------------------------------------------------------------------------

@dataclass
class StepResult:
    reward: float
    success: bool


class SimEnv:
    """reset(seed) / step(action) / render() / proprio(); ``horizon`` steps at most."""
    suite: str
    task: str
    horizon: int
    action_dim: int
    proprio_dim: int = 0
    stops_at_success: bool = False     # whether a success ends the episode (when the protocol allows)

    def reset(self, seed: int) -> None: ...
    def step(self, action: np.ndarray) -> StepResult: ...
    def render(self) -> np.ndarray: ...
    def proprio(self) -> np.ndarray: return np.zeros(0, np.float32)
    def expert_action(self) -> np.ndarray: raise NotImplementedError


def _camel(task: str) -> str:
    return "".join(p.capitalize() for p in task.split("-"))


class MetaWorldEnv(SimEnv):
    """MetaWorld v3, goal-observable (as CortexBench), fresh random object/goal positions per seed."""
    suite = "metaworld"

    def __init__(self, task: str, size: int = 256, camera: str = METAWORLD_CAMERA, fast_render: bool = True,
                 horizon: int = 500, renderer: "FrameRenderer | None" = None, msaa: int | None = None):
        check_task("metaworld", task, METAWORLD_TASKS)
        require("metaworld")
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE as ENVS
        import metaworld.policies as policies
        self.task = task
        self.env = ENVS[f"{task}-v3-goal-observable"](seed=0)
        self.env._freeze_rand_vec = False   # new positions at every reset, drawn from env.np_random
        self.env.seeded_rand_vec = True
        self.horizon = min(horizon, self.env.max_path_length)
        self.action_dim = 4
        self.proprio_dim = 4
        self.expert = getattr(policies, f"Sawyer{_camel(task)}V3Policy")()
        self.renderer = renderer or FrameRenderer(self.env.model, size, camera, fast_render, flip=camera == "corner",
                                                  msaa=msaa)
        self._obs = None

    def reset(self, seed: int) -> None:
        self.env.seed(int(seed))
        self._obs, _ = self.env.reset()

    def step(self, action):
        self._obs, reward, _, _, info = self.env.step(np.clip(np.asarray(action, np.float32), -1, 1))
        return StepResult(float(reward), bool(info["success"]))

    def render(self):
        return self.renderer(self.env.data, self.env.model)

    def proprio(self):  # CortexBench: env._get_obs()[:4] = hand xyz + gripper opening
        return np.asarray(self._obs[:4], np.float32)

    def expert_action(self):
        return np.asarray(self.expert.get_action(self._obs), np.float32)


class DMCEnv(SimEnv):
    """DeepMind Control; action repeat ``frame_skip``; reward summed over repeats; no proprioception."""
    suite = "dmc"

    def __init__(self, task: str, size: int = 256, camera: int = 0, fast_render: bool = True,
                 frame_skip: int = 1, horizon: int | None = None, renderer: "FrameRenderer | None" = None,
                 msaa: int | None = None):
        check_task("dmc", task, DMC_TASKS)
        require("dmc")
        self.task = task
        self.domain, self.task_name = task.split("_", 1)
        self.frame_skip = int(frame_skip)
        self.horizon = int(horizon or 1000 // self.frame_skip)
        from dm_control import suite
        self.env = suite.load(self.domain, self.task_name, task_kwargs={"random": 0})
        spec = self.env.action_spec()
        self.action_dim = int(spec.shape[0])
        self._lo, self._hi = spec.minimum, spec.maximum
        self.renderer = renderer or FrameRenderer(self.env.physics.model.ptr, size, camera, fast_render, msaa=msaa)

    def reset(self, seed: int) -> None:
        self.env.task.random.seed(int(seed))   # the task's RandomState draws the initial state
        self.env.reset()

    def step(self, action):
        a = np.clip(np.asarray(action, np.float64), self._lo, self._hi)
        total = 0.0
        for _ in range(self.frame_skip):
            ts = self.env.step(a)
            total += float(ts.reward or 0.0)
            if ts.last():
                break
        return StepResult(total, False)

    def render(self):
        return self.renderer(self.env.physics.data.ptr, self.env.physics.model.ptr)


class AdroitEnv(SimEnv):
    """Adroit through gymnasium-robotics (AdroitHandPen-v1 / AdroitHandRelocate-v1). CortexBench used
    mj_envs (mujoco-py, pen-v0/relocate-v0); success follows mj_envs: goal achieved on > 20 (pen) or
    > 25 (relocate) steps of an episode."""
    suite = "adroit"
    IDS = {"pen": "AdroitHandPen-v1", "relocate": "AdroitHandRelocate-v1"}
    PROPRIO = {"pen": 24, "relocate": 30}
    HORIZON = {"pen": 100, "relocate": 200}
    SUCCESS_STEPS = {"pen": 20, "relocate": 25}

    def __init__(self, task: str, size: int = 256, camera: str | None = None, fast_render: bool = True,
                 horizon: int | None = None, renderer: "FrameRenderer | None" = None, msaa: int | None = None):
        check_task("adroit", task, ADROIT_TASKS)
        require("adroit")
        import gymnasium as gym
        import gymnasium_robotics  # noqa: F401  (registers the envs)
        self.task = task
        self.env = gym.make(self.IDS[task]).unwrapped
        self.horizon = int(horizon or self.HORIZON[task])
        self.action_dim = int(self.env.action_space.shape[0])
        self.proprio_dim = self.PROPRIO[task]
        self.renderer = renderer or FrameRenderer(self.env.model, size, camera if camera is not None else -1,
                                                  fast_render, msaa=msaa)
        self._obs = None
        self.goal_steps = 0

    def reset(self, seed: int) -> None:
        self._obs, _ = self.env.reset(seed=int(seed))
        self.goal_steps = 0

    def step(self, action):
        self._obs, reward, _, _, info = self.env.step(np.asarray(action, np.float32))
        self.goal_steps += int(bool(info.get("success", False)))
        return StepResult(float(reward), self.goal_steps > self.SUCCESS_STEPS[self.task])

    def render(self):
        return self.renderer(self.env.data, self.env.model)

    def proprio(self):
        return np.asarray(self._obs[:self.proprio_dim], np.float32)


def make_env(suite: str, task: str, size: int, **kw) -> SimEnv:
    if suite == "metaworld":
        return MetaWorldEnv(task, size, **kw)
    if suite == "dmc":
        return DMCEnv(task, size, **kw)
    if suite == "adroit":
        return AdroitEnv(task, size, **kw)
    if suite == "trifinger":
        require("trifinger")
        raise DataError("cortexbench.trifinger: trifinger_simulation is installed, but the TriFinger "
                        "rollout protocol (trifinger_vc) is not implemented in this harness yet")
    raise DataError(f"unknown CortexBench suite '{suite}'")
