"""The GL backend is chosen automatically: EGL when it works, else OSMesa."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SNIPPET = """
import sys; sys.path.insert(0, {root!r})
from suites.synthetic._mj import GL_BACKEND
from suites.synthetic import scene as S
from suites.synthetic.render import get_renderer
spec = S.SceneSpec(objects=(S.ObjectSpec('ball', (0.0, 0.0), (0.3, 0.3, 0.3)),))
cs = S.compile_scene(spec, (32, 48))
r = get_renderer(); r.bind(cs, 32, 48)
f = r.render(S.look_at([1.5, 0, 1.2], [0, 0, 0.15]))
assert f.rgb.max() > 0 and (f.instance == 1).any()
print('BACKEND', GL_BACKEND)
"""


def _run(env_extra: dict) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM")}
    env.update(env_extra)
    p = subprocess.run([sys.executable, "-c", SNIPPET.format(root=str(ROOT))], env=env, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout.split("BACKEND")[-1].strip()


def test_falls_back_to_osmesa_when_egl_is_unusable():
    # no EGL vendor library -> EGL cannot initialise -> OSMesa
    assert _run({"__EGL_VENDOR_LIBRARY_FILENAMES": "/nonexistent/egl_vendor.json"}) == "osmesa"


def test_explicit_choice_is_respected():
    assert _run({"MUJOCO_GL": "osmesa"}) == "osmesa"
