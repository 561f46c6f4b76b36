"""Import MuJoCo with a working offscreen GL backend.

MuJoCo picks its GL backend from ``MUJOCO_GL`` once, at import time, so the
choice must be made before the first ``import mujoco`` anywhere in the process.
Every module of this package imports MuJoCo through here.

Order: an explicit ``MUJOCO_GL`` from the user wins; otherwise EGL is probed in
a short subprocess (a failed EGL init can leave the process unusable, so it is
never tried in-process) and OSMesa is the fallback. The answer is written into
``os.environ`` so spawned worker processes inherit it without probing again.
On a CPU-only machine both end up in Mesa's llvmpipe; EGL is about 2x faster.
"""

from __future__ import annotations

import os
import subprocess
import sys

_PROBE = r"""
import mujoco
m = mujoco.MjModel.from_xml_string('<mujoco><worldbody><light pos="0 0 1"/><geom type="sphere" size=".1"/></worldbody></mujoco>')
d = mujoco.MjData(m); mujoco.mj_forward(m, d)
r = mujoco.Renderer(m, 16, 16); r.update_scene(d); img = r.render()
assert img.max() > 0, 'blank frame'
r.close()
print('ok')
"""

_BACKENDS = ("egl", "osmesa")


def _probe(backend: str) -> tuple[bool, str]:
    env = dict(os.environ)
    env["MUJOCO_GL"] = backend
    env["PYOPENGL_PLATFORM"] = backend
    try:
        p = subprocess.run(
            [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=120
        )
    except (OSError, subprocess.TimeoutExpired) as e:  # pragma: no cover - environment specific
        return False, str(e)
    ok = p.returncode == 0 and "ok" in p.stdout
    return ok, (p.stderr or p.stdout)[-400:]


def select_gl_backend() -> str:
    """Return the backend in use, choosing (and exporting) one if nobody has."""
    chosen = os.environ.get("MUJOCO_GL", "").strip().lower()
    if chosen or "mujoco" in sys.modules:
        return chosen or "glfw"
    errors = []
    for backend in _BACKENDS:
        ok, err = _probe(backend)
        if ok:
            os.environ["MUJOCO_GL"] = backend
            os.environ.setdefault("PYOPENGL_PLATFORM", backend)
            return backend
        errors.append(f"{backend}: {err.strip()}")
    raise RuntimeError(
        "no offscreen OpenGL backend works for MuJoCo here (tried "
        + ", ".join(_BACKENDS)
        + "). Install Mesa (Debian: libegl1 libegl-mesa0 libgl1-mesa-dri libosmesa6) or set "
        "MUJOCO_GL yourself.\n" + "\n".join(errors)
    )


GL_BACKEND = select_gl_backend()

import mujoco  # noqa: E402  (must come after the backend choice)

__all__ = ["mujoco", "GL_BACKEND", "select_gl_backend"]
