"""Offscreen rendering of RGB, metric depth and instance/semantic segmentation.

Why not one ``mujoco.Renderer`` per scene: each Renderer owns a GL context, and
when one is dropped its context is released (``eglReleaseThread``), after which
frames of other renderers in the same process can come out silently black. So
a process keeps exactly one GL context (:func:`get_renderer`) and binds a fresh
``MjrContext`` (textures, buffers) per scene, made current before every frame;
every frame is checked for being blank.

Two GL passes per frame:
1. the RGB pass, exactly what ``mujoco.Renderer.render()`` does (same flags,
   lighting, shadows, reflections, MSAA);
2. a flat-colour segmentation pass (``mjRND_SEGMENT | mjRND_IDCOLOR``: no
   lighting, textures, shadows or reflections, so it is cheap), read back
   together with its depth buffer in one ``mjr_readPixels`` call.

Camera convention (returned and stored): OpenCV. Camera-to-world 4x4 with
columns x right, y down, z forward (optical axis); K = [[f,0,cx],[0,f,cy],[0,0,1]]
with f = (H/2)/tan(fovy/2), cx = (W-1)/2, cy = (H-1)/2 (pixel centres at
integer coordinates, row 0 at the top of the image). MuJoCo cameras look along
their -z with y up, so R_mujoco = R_opencv @ diag(1, -1, -1).

Depth: distance along the optical axis (z in the camera frame) in metres,
float32; 0 where no geometry was hit (background / beyond the far clip).
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import numpy as np

from ._mj import GL_BACKEND, mujoco

__all__ = ["Frame", "FrameRenderer", "get_renderer", "intrinsics", "GL_BACKEND"]

_FLIP = np.diag([1.0, -1.0, -1.0])


def intrinsics(height: int, width: int, fovy_deg: float) -> np.ndarray:
    """3x3 pinhole K of a MuJoCo camera (square pixels, vertical field of view)."""
    f = (height / 2.0) / np.tan(np.deg2rad(fovy_deg) / 2.0)
    return np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


@dataclass
class Frame:
    rgb: np.ndarray  # uint8 HxWx3
    depth: np.ndarray  # float32 HxW metres, 0 invalid
    instance: np.ndarray  # int32 HxW, 0 = room / nothing
    semantic: np.ndarray  # int32 HxW, 0 = nothing
    geom: np.ndarray  # int32 HxW MuJoCo geom id, -1 = nothing
    K: np.ndarray  # 3x3
    cam_to_world: np.ndarray  # 4x4 OpenCV convention


class BlankFrameError(RuntimeError):
    pass


class FrameRenderer:
    """One GL context for the process; scenes are bound one at a time."""

    def __init__(self) -> None:
        self._pid = os.getpid()
        self._gl = mujoco.GLContext(2048, 2048)
        self._gl.make_current()
        self._ctx = None
        self._ctx_seg = None
        self._scene = None
        self._compiled = None
        self._opt = mujoco.MjvOption()
        self._cam = mujoco.MjvCamera()
        self._cam.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._cam.fixedcamid = 0
        self._size = (0, 0)

    # ---------------------------------------------------------------- scene binding
    def bind(self, compiled, height: int, width: int, shadows: bool = True, reflections: bool = True) -> None:
        """Upload a compiled scene (textures, buffers) into this process's GL context."""
        self._check_process()
        self._gl.make_current()
        self.unbind()
        model = compiled.model
        if width > model.vis.global_.offwidth or height > model.vis.global_.offheight:
            raise ValueError(
                f"image size {height}x{width} exceeds the model's offscreen buffer "
                f"{model.vis.global_.offheight}x{model.vis.global_.offwidth}"
            )
        font = mujoco.mjtFontScale.mjFONTSCALE_50.value
        self._ctx = mujoco.MjrContext(model, font)
        self._ctx.readDepthMap = mujoco.mjtDepthMap.mjDEPTH_ZEROFAR
        # the id/depth pass gets its own single-sample buffers: ids need no antialiasing,
        # and skipping the 4x-sample raster + resolve makes that pass ~2x cheaper
        if model.vis.quality.offsamples > 0:
            saved = model.vis.quality.offsamples
            model.vis.quality.offsamples = 0
            try:
                self._ctx_seg = mujoco.MjrContext(model, font)
            finally:
                model.vis.quality.offsamples = saved
            self._ctx_seg.readDepthMap = mujoco.mjtDepthMap.mjDEPTH_ZEROFAR
        else:
            self._ctx_seg = self._ctx
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._ctx)
        self._scene = mujoco.MjvScene(model, maxgeom=max(1000, 2 * model.ngeom + 100))
        self._scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = bool(shadows)
        self._scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = bool(reflections)
        self._compiled = compiled
        self._size = (int(height), int(width))
        self._rect = mujoco.MjrRect(0, 0, int(width), int(height))
        extent = model.stat.extent
        self._near = np.float32(model.vis.map.znear * extent)
        self._far = np.float32(model.vis.map.zfar * extent)
        fovy = float(model.cam_fovy[0])
        self._K = intrinsics(height, width, fovy)
        self._rgb = np.empty((height, width, 3), np.uint8)
        self._segbuf = np.empty((height, width, 3), np.uint8)
        self._zbuf = np.empty((height, width), np.float32)

    def unbind(self) -> None:
        if self._ctx is not None:
            self._gl.make_current()
            if self._ctx_seg is not self._ctx:
                self._ctx_seg.free()
            self._ctx.free()
        self._ctx = None
        self._ctx_seg = None
        self._scene = None
        self._compiled = None

    def close(self) -> None:
        self.unbind()
        if self._gl is not None:
            self._gl.free()
        self._gl = None

    def _check_process(self) -> None:
        if os.getpid() != self._pid:
            raise RuntimeError("a FrameRenderer cannot cross a fork; call get_renderer() in the child")

    @property
    def K(self) -> np.ndarray:
        return self._K.copy()

    # ---------------------------------------------------------------- rendering
    def _set_camera(self, cam_to_world: np.ndarray) -> None:
        T = np.asarray(cam_to_world, float)
        if T.shape != (4, 4):
            raise ValueError(f"cam_to_world must be 4x4, got {T.shape}")
        R = T[:3, :3]
        if not np.allclose(R.T @ R, np.eye(3), atol=1e-5) or np.linalg.det(R) < 0:
            raise ValueError("cam_to_world rotation is not a proper rotation matrix")
        d = self._compiled.data
        d.cam_xpos[0] = T[:3, 3]
        d.cam_xmat[0] = (R @ _FLIP).reshape(-1)

    def render(self, cam_to_world: np.ndarray, rgb: bool = True) -> Frame:
        """Render one view; ``rgb=False`` skips the shaded pass (geometry only)."""
        if self._ctx is None:
            raise RuntimeError("no scene bound: call bind() first")
        self._check_process()
        for attempt in range(2):
            self._gl.make_current()
            frame = self._render_once(cam_to_world, rgb)
            blank = (not frame.geom.size or frame.geom.max() < 0) or (rgb and frame.rgb.max() == 0)
            if not blank:
                return frame
        raise BlankFrameError(
            "blank frame: the GL context produced no image (lost/released context?) or the camera "
            f"sees no geometry at all; backend={GL_BACKEND}"
        )

    def _render_once(self, cam_to_world, want_rgb: bool) -> Frame:
        model, data = self._compiled.model, self._compiled.data
        scn, rect = self._scene, self._rect
        self._set_camera(cam_to_world)
        mujoco.mjv_updateScene(model, data, self._opt, None, self._cam, mujoco.mjtCatBit.mjCAT_ALL, scn)
        if want_rgb:
            mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._ctx)
            mujoco.mjr_render(rect, scn, self._ctx)
            mujoco.mjr_readPixels(self._rgb, None, rect, self._ctx)
        flags = scn.flags
        seg0, idc0 = flags[mujoco.mjtRndFlag.mjRND_SEGMENT], flags[mujoco.mjtRndFlag.mjRND_IDCOLOR]
        flags[mujoco.mjtRndFlag.mjRND_SEGMENT] = 1
        flags[mujoco.mjtRndFlag.mjRND_IDCOLOR] = 1
        try:
            mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._ctx_seg)
            mujoco.mjr_render(rect, scn, self._ctx_seg)
            mujoco.mjr_readPixels(self._segbuf, self._zbuf, rect, self._ctx_seg)
        finally:
            flags[mujoco.mjtRndFlag.mjRND_SEGMENT] = seg0
            flags[mujoco.mjtRndFlag.mjRND_IDCOLOR] = idc0

        # per-frame LUTs: segment id (colour) -> geom / instance / semantic
        n = scn.ngeom
        cg = self._compiled
        lut_geom = np.full(n + 2, -1, np.int32)
        geom_type = int(mujoco.mjtObj.mjOBJ_GEOM)
        for k in range(n):
            g = scn.geoms[k]
            if g.objtype == geom_type and g.segid >= 0:
                lut_geom[g.segid + 1] = g.objid
        lut_inst = np.append(cg.geom_instance, 0)[lut_geom]  # geom -1 -> 0
        lut_sem = np.append(cg.geom_semantic, 0)[lut_geom]
        buf = self._segbuf[::-1]  # GL rows run bottom-up
        if n + 1 < 256:  # ids fit in the red channel
            segid = buf[..., 0]
        else:
            b32 = buf.astype(np.int32)
            segid = np.minimum(b32[..., 0] | (b32[..., 1] << 8) | (b32[..., 2] << 16), n + 1)
        geom = lut_geom[segid]
        instance = lut_inst[segid]
        semantic = lut_sem[segid]

        # reverse-Z depth buffer -> metric depth along the optical axis (as mujoco.Renderer)
        zf, zn = self._far, self._near
        c = np.float32(zn / (zf - zn))
        dcoef = np.float32(zf * zn / (zf - zn))
        z = self._zbuf[::-1]
        with np.errstate(divide="ignore", invalid="ignore"):
            depth = dcoef / (z + c)
        depth[(geom < 0) | (depth >= zf * np.float32(0.999))] = 0.0
        rgb_img = self._rgb[::-1].copy() if want_rgb else np.zeros((*self._size, 3), np.uint8)
        return Frame(rgb_img, depth, instance, semantic, geom, self._K.copy(), np.asarray(cam_to_world, float).copy())


_RENDERER: FrameRenderer | None = None


def get_renderer() -> FrameRenderer:
    """The process-wide renderer (created on first use, recreated after a fork)."""
    global _RENDERER
    if _RENDERER is None or _RENDERER._pid != os.getpid():
        _RENDERER = FrameRenderer()
        # registered after EGL's own atexit(eglTerminate), so it runs first: the context is
        # freed while the display still exists (otherwise a noisy EGLError at exit)
        atexit.register(_close_process_renderer)
    return _RENDERER


def _close_process_renderer() -> None:
    global _RENDERER
    if _RENDERER is not None and _RENDERER._pid == os.getpid():
        try:
            _RENDERER.close()
        except Exception:  # pragma: no cover - best effort at interpreter exit
            pass
    _RENDERER = None
