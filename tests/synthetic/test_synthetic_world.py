"""World generation: annotations, determinism, resume, refusals, bad input."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from suites.synthetic import categories as C
from suites.synthetic import scene as S
from suites.synthetic import world as Wd
from suites.synthetic.world import WorldConfig, generate_world, iter_views, list_views, load_view

SMALL = dict(seed=11, num_scenes=2, views_per_scene=2, image_size=(48, 64), min_objects=3, max_objects=5)


def _tree_digest(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name not in ("world.json", ".lock"):
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


# ---------------------------------------------------------------- annotations of a generated world
def test_world_layout_and_views(tiny_world, tiny_cfg):
    m = json.loads((tiny_world / "world.json").read_text())
    assert m["complete"] is True and m["params"] == tiny_cfg.to_params()
    views = list_views(tiny_world)
    assert views == [(s, v) for s in range(3) for v in range(2)]
    v = load_view(tiny_world, 1, 1)
    assert v.rgb.shape == (96, 128, 3) and v.rgb.dtype == np.uint8
    assert v.depth.dtype == np.float32 and v.instance.dtype == np.int32 and v.semantic.dtype == np.int32
    assert v.K.shape == (3, 3) and v.cam_to_world.shape == (4, 4)
    assert np.allclose(v.cam_to_world[:3, :3].T @ v.cam_to_world[:3, :3], np.eye(3), atol=1e-9)
    assert (v.depth > 0).mean() > 0.9  # closed rooms: nearly every pixel hits something
    assert load_view(tiny_world, "scene_00001", 1).view_id == 1


def test_segmentation_ids_consistent_with_objects(tiny_world):
    stuff = {C.category_id(n) for n in ("wall", "floor", "ceiling")}
    for v in iter_views(tiny_world):
        ids = {o.instance_id: o for o in v.objects}
        present = set(np.unique(v.instance)) - {0}
        assert present <= set(ids)
        counts = np.bincount(v.instance.ravel(), minlength=len(ids) + 1)
        for k, o in ids.items():
            assert o.pixels == counts[k]
            m = v.instance == k
            if o.pixels:
                assert set(np.unique(v.semantic[m])) == {o.category_id}
                ys, xs = np.nonzero(m)
                assert o.bbox2d == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            else:
                assert o.bbox2d is None
            assert C.by_id(o.category_id).name == o.category
        assert set(np.unique(v.semantic[v.instance == 0])) <= stuff | {0}
        assert v.rgb.max() > 0


def test_backprojected_depth_lands_in_object_boxes(tiny_world):
    checked = 0
    for v in iter_views(tiny_world):
        T, K = v.cam_to_world, v.K
        for o in v.objects:
            if o.pixels < 30:
                continue
            yy, xx = np.nonzero(v.instance == o.instance_id)
            z = v.depth[yy, xx].astype(np.float64)
            pc = np.stack([(xx - K[0, 2]) / K[0, 0] * z, (yy - K[1, 2]) / K[1, 1] * z, z], 1)
            pw = pc @ T[:3, :3].T + T[:3, 3]
            local = (pw - o.obb_world["center"]) @ o.obb_world["R"]
            inside = np.all(np.abs(local) <= o.obb_world["size"] / 2 + 5e-3, axis=1)
            assert inside.mean() > 0.999, (v.scene_id, v.view_id, o.category)
            assert np.all(pw >= o.aabb_world["min"] - 5e-3) and np.all(pw <= o.aabb_world["max"] + 5e-3)
            # camera-frame boxes are the same boxes seen from the camera
            lc = (pc - o.obb_cam["center"]) @ o.obb_cam["R"]
            assert np.all(np.abs(lc) <= o.obb_cam["size"] / 2 + 5e-3)
            checked += 1
    assert checked >= 5


def test_objects_do_not_interpenetrate_and_rest_on_support():
    rng = np.random.default_rng(5)
    for _ in range(15):
        spec = S.sample_scene(rng)
        S.validate_spec(spec)  # raises on overlap / outside room
        tables = [o for o in spec.objects if o.category == "table"]
        for o in spec.objects:
            lo, _ = S.object_box(o)
            bottom = o.base_z + lo[2]
            sup = C.by_name(o.category).support
            if sup == "wall":
                continue
            tops = [0.0] + [t.base_z + S.object_box(t)[1][2] for t in tables]
            assert min(abs(bottom - t) for t in tops) < 1e-6, o
        assert len(spec.objects) >= 3


def test_categories_cover_at_least_12_objects():
    assert len(C.THINGS) >= 12
    ids = [c.id for c in C.CATEGORIES]
    assert ids == list(range(1, len(ids) + 1))
    for name in C.THING_NAMES:  # every category has a builder that stays inside its dims
        for dims in ((0.5, 0.4, 0.6), (1.5, 2.0, 1.0), (0.08, 0.08, 0.1), (0.3, 0.03, 0.5)):
            for style in range(4):
                lo, hi = S.object_box(S.ObjectSpec(name, (0.0, 0.0), dims, style=style))
                d = np.array(dims)
                assert lo[2] >= -1e-9 and hi[2] <= d[2] + 1e-9, (name, dims)
                assert np.all(lo[:2] >= -d[:2] / 2 - 1e-9) and np.all(hi[:2] <= d[:2] / 2 + 1e-9), (name, dims)


# ---------------------------------------------------------------- determinism / resume / refusal
def test_determinism_by_seed_and_worker_count(tmp_path):
    cfg = WorldConfig(**SMALL)
    a = generate_world(cfg, tmp_path / "a", workers=0, progress=False)
    b = generate_world(cfg, tmp_path / "b", workers=2, progress=False)
    da, db = _tree_digest(a), _tree_digest(b)
    assert da == db and len(da) > 8
    c = generate_world(WorldConfig(**dict(SMALL, seed=12)), tmp_path / "c", workers=0, progress=False)
    assert _tree_digest(c) != da


def test_resume_after_interrupted_generation(tmp_path, monkeypatch):
    cfg = WorldConfig(**SMALL)
    ref = _tree_digest(generate_world(cfg, tmp_path / "ref", workers=0, progress=False))

    out = tmp_path / "w"
    real = Wd._generate_scene
    calls = []

    def dies_on_second(params, out_dir, i):
        calls.append(i)
        if len(calls) == 2:
            # killed while writing: a half-written temp dir is left behind
            (Path(out_dir) / "scenes" / f".tmp-scene_{i:05d}-4242" / "000").mkdir(parents=True)
            raise KeyboardInterrupt
        return real(params, out_dir, i)

    monkeypatch.setattr(Wd, "_generate_scene", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        generate_world(cfg, out, workers=0, progress=False)
    monkeypatch.setattr(Wd, "_generate_scene", real)
    assert json.loads((out / "world.json").read_text())["complete"] is False
    assert [p.name for p in (out / "scenes").iterdir() if not p.name.startswith(".")] == ["scene_00000"]
    with pytest.raises(ValueError, match="not complete"):
        list_views(out)
    generate_world(cfg, out, workers=0, progress=False)
    assert not list((out / "scenes").glob(".tmp-*"))
    assert _tree_digest(out) == ref
    # a deleted scene is regenerated identically
    shutil.rmtree(out / "scenes" / "scene_00001")
    generate_world(cfg, out, workers=2, progress=False)
    assert _tree_digest(out) == ref


def test_refuses_folder_with_different_parameters(tmp_path):
    cfg = WorldConfig(**SMALL)
    generate_world(cfg, tmp_path / "w", workers=0, progress=False)
    with pytest.raises(ValueError) as e:
        generate_world(WorldConfig(**dict(SMALL, seed=99, views_per_scene=3)), tmp_path / "w", workers=0, progress=False)
    msg = str(e.value)
    assert "seed" in msg and "views_per_scene" in msg and "image_size" not in msg
    # the same parameters are fine (nothing to do)
    generate_world(cfg, tmp_path / "w", workers=0, progress=False)
    # a foreign non-empty folder is refused too
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="not a synthetic world"):
        generate_world(cfg, tmp_path / "junk", workers=0, progress=False)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kw, needle",
    [
        (dict(categories=("chair", "unicorn")), "unicorn"),
        (dict(categories=("chair", "floor")), "floor"),
        (dict(categories=()), "categories"),
        (dict(views_per_scene=0), "views_per_scene"),
        (dict(num_scenes=0), "num_scenes"),
        (dict(min_objects=5, max_objects=3), "max_objects"),
        (dict(image_size=(8, 8)), "image_size"),
        (dict(fovy=0.0), "fovy"),
        (dict(seed=1.5), "seed"),
    ],
)
def test_bad_config_values_are_named(kw, needle):
    with pytest.raises(ValueError, match=needle):
        WorldConfig(**kw)


def test_unknown_category_suggests_a_name():
    with pytest.raises(ValueError, match="did you mean 'chair'"):
        C.by_name("chiar")


def test_unbuildable_specs_are_rejected():
    a = S.ObjectSpec("box", (0.0, 0.0), (0.5, 0.5, 0.5))
    b = S.ObjectSpec("chair", (0.2, 0.1), (0.5, 0.5, 0.9))
    with pytest.raises(ValueError, match="interpenetrate"):
        S.validate_spec(S.SceneSpec(objects=(a, b)))
    with pytest.raises(ValueError, match="outside the room"):
        S.validate_spec(S.SceneSpec(room=(3.0, 3.0, 2.5), objects=(S.ObjectSpec("sofa", (1.2, 0.0), (2.0, 0.9, 0.8)),)))
    with pytest.raises(ValueError, match="unknown category"):
        S.build_mjcf(S.SceneSpec(objects=(S.ObjectSpec("dragon", (0.0, 0.0), (1, 1, 1)),)))
    with pytest.raises(ValueError, match="dims"):
        S.validate_spec(S.SceneSpec(objects=(S.ObjectSpec("box", (0.0, 0.0), (0.5, -1.0, 0.5)),)))
    with pytest.raises(ValueError, match="room"):
        S.validate_spec(S.SceneSpec(room=(0.0, 4.0, 2.5)))
    # a mug on the table is fine: stacked boxes do not overlap in z
    t = S.ObjectSpec("table", (0.0, 0.0), (1.2, 0.8, 0.75))
    m = S.ObjectSpec("mug", (0.1, 0.1), (0.1, 0.1, 0.1), base_z=0.75)
    S.validate_spec(S.SceneSpec(objects=(t, m)))
    # too many big objects for the room cannot be placed
    with pytest.raises(ValueError, match="could not build"):
        S.sample_scene(np.random.default_rng(0), ("bed",), 12, 12, max_tries=2)


def test_bad_view_requests(tiny_world, tmp_path):
    with pytest.raises(ValueError, match="view 7"):
        load_view(tiny_world, 0, 7)
    with pytest.raises(ValueError, match="scene"):
        load_view(tiny_world, 42, 0)
    with pytest.raises(ValueError, match="not a synthetic world"):
        list_views(tmp_path)
    with pytest.raises(ValueError, match="views must be >= 1"):
        S.orbit_cameras(S.SceneSpec(), 0, np.random.default_rng(0))


def test_unbuildable_world_fails_in_workers_with_named_scene(tmp_path):
    cfg = WorldConfig(**dict(SMALL, categories=("bed", "sofa"), min_objects=30, max_objects=30))
    with pytest.raises(ValueError, match=r"scene \d+ .*could not build.*m\^2 of floor"):
        generate_world(cfg, tmp_path / "w", workers=2, progress=False)
    assert not list((tmp_path / "w" / "scenes").glob("scene_*"))
