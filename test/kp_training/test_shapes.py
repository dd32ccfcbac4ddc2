import math

import numpy as np
import pytest
import torch
import trimesh

from kp_core.geometry import GRID_SIZE, point_to_index
from kp_training.shapes import NORMALIZE_MARGIN, in_metres, load_mesh_shape, load_shape, metres_per_unit
from kp_core.voxelize import voxelize


def occupancy_at(shape, points):
    """Whether the voxel (at a fine 64^3 grid) containing each query point holds solid samples."""
    grid = voxelize(shape.points[None])[0, 0].bool()
    idx = point_to_index(torch.as_tensor(points, dtype=torch.float32))
    return grid[idx[:, 0], idx[:, 1], idx[:, 2]].numpy()


def to_grid(shape, metric_points):
    n = shape.normalization
    return (np.asarray(metric_points) - n["center"]) / n["mesh_units_per_grid_unit"]


def test_mug_is_a_solid_cup_with_a_handle(mug):
    dims_probe = to_grid(
        mug,
        [
            [0.0, 0.0, 0.06],  # inside the cavity: empty
            [0.0, 0.0, 0.003],  # in the bottom: solid
            [0.039, 0.0, 0.05],  # in the wall (outer radius 0.041, wall 0.0045): solid
            [-0.039, 0.0, 0.05],
            [0.05, 0.0, 0.05],  # the handle's gap: empty
            [0.037 + 0.028, 0.0, 0.05],  # on the handle's bar: solid
            [0.0, 0.06, 0.05],  # outside: empty
        ],
    )
    assert occupancy_at(mug, dims_probe).tolist() == [False, True, True, True, False, True, False]
    assert mug.normalization["source"] == "procedural:mug"


def test_normalization_leaves_the_margin_for_every_rotation(mug):
    p = mug.points.numpy()
    limit = 1.0 - NORMALIZE_MARGIN + 1e-2  # lattice jitter can reach half a cell past the surface
    assert np.hypot(p[:, 0], p[:, 1]).max() <= limit and np.abs(p[:, 2]).max() <= limit
    lo, hi = p.min(0), p.max(0)
    np.testing.assert_allclose((lo + hi) / 2, 0.0, atol=0.02)  # bounding-box centre at the origin
    assert np.hypot(p[:, 0], p[:, 1]).max() > 0.9  # and the shape is not shrunk needlessly


def test_mug_points_fill_every_voxel_at_the_smallest_scale(mug):
    small = voxelize(mug.points[None] * 0.75)
    dense = voxelize(mug.points[None] * 0.75, GRID_SIZE)
    assert torch.equal(small, dense) and small.sum() > 1000


def open_cup_mesh(scale=1000.0, offset=(5000.0, -200.0, 30.0)):
    """A cylinder with its top cap removed (an open tube with a bottom) in millimetres, off-origin,
    plus a separate small box as a second part; not watertight."""
    cup = trimesh.creation.cylinder(radius=0.04, height=0.1, sections=48)
    top = cup.triangles_center[:, 2] > 0.0499
    flat = np.abs(cup.face_normals[:, 2]) > 0.99
    cup.update_faces(~(top & flat))
    cup.remove_unreferenced_vertices()
    assert not cup.is_watertight
    knob = trimesh.creation.box(extents=(0.01, 0.01, 0.01))
    knob.apply_translation((0.06, 0.0, 0.0))
    mesh = trimesh.util.concatenate([cup, knob])
    mesh.apply_scale(scale)
    mesh.apply_translation(offset)
    return mesh


@pytest.mark.parametrize("suffix", [".stl", ".obj", ".ply", ".off", ".glb"])
def test_loads_imperfect_meshes_in_every_format(tmp_path, suffix):
    path = tmp_path / f"cup{suffix}"
    open_cup_mesh().export(path)
    shape = load_mesh_shape(path, cache_dir=tmp_path / "cache", spacing=0.03)
    p = shape.points.numpy()
    assert len(p) > 100 and np.isfinite(p).all()
    assert np.hypot(p[:, 0], p[:, 1]).max() <= 1.0 - NORMALIZE_MARGIN + 0.03
    assert shape.normalization["mesh_units_per_grid_unit"] > 10  # millimetres: tens per grid unit
    # The open cup is a thin shell; its inside is reachable from the top, so it stays empty.
    inside = to_grid(shape, [[5000.0, -200.0, 30.0]])
    assert not occupancy_at(shape, inside)[0]


def test_closed_mesh_is_filled_and_cache_is_reused(tmp_path):
    path = tmp_path / "box.stl"
    trimesh.creation.box(extents=(2.0, 1.0, 1.0)).export(path)
    shape = load_mesh_shape(path, cache_dir=tmp_path, spacing=0.025)
    assert occupancy_at(shape, to_grid(shape, [[0.0, 0.0, 0.0]]))[0]  # a closed shell is solid inside
    again = load_mesh_shape(path, cache_dir=tmp_path, spacing=0.025)
    assert torch.equal(shape.points, again.points)
    assert len(list(tmp_path.glob("box-*.npz"))) == 1
    # A corrupt cache entry is rebuilt, not trusted.
    next(tmp_path.glob("box-*.npz")).write_bytes(b"not a zip")
    assert torch.equal(load_mesh_shape(path, cache_dir=tmp_path, spacing=0.025).points, shape.points)


def test_y_up_meshes_are_turned_z_up(tmp_path):
    path = tmp_path / "tall.obj"
    trimesh.creation.box(extents=(0.2, 1.0, 0.2)).export(path)  # tall along y
    shape = load_mesh_shape(path, up_axis="y", cache_dir=tmp_path, spacing=0.05)
    extent = shape.points.max(0).values - shape.points.min(0).values
    assert extent[2] > 3 * extent[0]


def test_bad_mesh_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_shape(str(tmp_path / "missing.obj"))
    garbage = tmp_path / "garbage.stl"
    garbage.write_bytes(b"\x00\x01 definitely not a mesh")
    with pytest.raises(ValueError):
        load_shape(str(garbage))
    cloud = tmp_path / "cloud.ply"
    trimesh.PointCloud(np.random.rand(20, 3)).export(cloud)
    with pytest.raises(ValueError, match="no triangles"):
        load_shape(str(cloud))
    with pytest.raises(ValueError, match="up_axis"):
        load_shape(str(cloud), up_axis="w")


def test_mesh_units_make_the_shape_metric(tmp_path):
    path = tmp_path / "box.stl"
    trimesh.creation.box(extents=(80.0, 80.0, 100.0)).export(path)  # millimetres
    plain = load_mesh_shape(path, cache_dir=tmp_path, spacing=0.05)
    metric = in_metres(plain, "mm")
    assert plain.normalization["units"] == "mesh" and metric.normalization["units"] == "m"
    assert metric.points is plain.points  # the solid is normalized: only the metadata changes
    assert metric.normalization["height"] == pytest.approx(0.1, rel=0.05)
    assert metric.normalization["width"] == pytest.approx(0.08 * math.sqrt(2), rel=0.08)  # the diagonal (on a coarse lattice)
    assert metric.normalization["mesh_units_per_grid_unit"] == pytest.approx(
        plain.normalization["mesh_units_per_grid_unit"] / 1000)
    assert metres_per_unit(metric) == pytest.approx(metric.normalization["mesh_units_per_grid_unit"])
    with pytest.raises(ValueError, match="mesh units must be one of"):
        in_metres(plain, "furlong")
    with pytest.raises(ValueError, match="in metres already"):
        load_shape("mug", mesh_units="cm")
    assert load_shape("mug", mesh_units="m").normalization == load_shape("mug").normalization
