"""The simulated depth sensor: z-buffer visibility checked against trimesh's ray casting, and what the
clouds look like (surface only, one side for single views, noise, density, outliers)."""

import math

import numpy as np
import pytest
import torch

from kp_training.sensor import SensorConfig, SensorSimulator, surface_samples


def test_surface_samples_are_the_skin_of_the_solid():
    spacing = 0.01
    axis = torch.arange(-0.6, 0.6, spacing)
    lattice = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    ball = lattice[lattice.norm(dim=-1) < 0.5]
    skin = surface_samples(ball, count=None)
    radius = skin.norm(dim=-1)
    cell = 2.0 / 128  # the skin lattice's cell
    assert radius.min() > 0.5 - 2.5 * cell  # only a layer about a cell or two thick
    assert len(skin) > 0.9 * 4 * math.pi * 0.5**2 / spacing**2  # and all around the sphere
    subset = surface_samples(ball, count=1000, seed=3)
    assert subset.shape == (1000, 3) and torch.equal(subset, surface_samples(ball, count=1000, seed=3))


def test_zbuffer_agrees_with_trimesh_ray_casting():
    trimesh = pytest.importorskip("trimesh")
    pytest.importorskip("rtree")
    # A cup-like annulus: its far wall, inner faces and outer back are hidden from a side camera in parts.
    mesh = trimesh.creation.annulus(r_min=0.35, r_max=0.5, height=1.0)
    points, _ = trimesh.sample.sample_surface_even(mesh, 40000, seed=0)
    points = torch.tensor(points, dtype=torch.float32)
    config = SensorConfig(pixel_m=0.03, depth_tolerance_m=0.03)
    simulator = SensorSimulator(points, metres_per_unit=1.0, config=config)
    cameras = torch.tensor([[[6.0, 1.0, 2.5]], [[0.5, -7.0, 2.0]]])  # 22 and 16 deg above the table
    seen = simulator.visible(points.expand(2, -1, -1), cameras, torch.ones(2, 1, dtype=torch.bool))
    for view in range(2):
        eye = cameras[view, 0].numpy().astype(np.float64)
        target = points.numpy().astype(np.float64)
        direction = target - eye
        distance = np.linalg.norm(direction, axis=1)
        hits, rays, _ = mesh.ray.intersects_location(np.repeat(eye[None], len(target), 0), direction / distance[:, None],
                                                     multiple_hits=False)
        first = np.full(len(target), np.inf)
        first[rays] = np.linalg.norm(hits - eye, axis=1)
        truth = first >= distance - 0.02  # nothing of the mesh lies in front of the point
        ours = seen[view].numpy()
        # Precision: what the z-buffer sees is visible (nothing shows through a wall).
        assert (ours & ~truth).sum() < 0.01 * ours.sum()
        assert ours[first < distance - 0.2].mean() < 0.005
        # Coverage: every visible part of the surface is seen, within two pixels. (Like a real depth sensor
        # the z-buffer keeps about one return per pixel, so it keeps fewer samples where the surface is oblique.)
        from scipy.spatial import cKDTree

        gap, _ = cKDTree(target[ours]).query(target[truth])
        assert (gap < 2 * config.pixel_m).mean() > 0.95
        assert 0.5 * truth.sum() < ours.sum() <= truth.sum() * 1.01


@pytest.fixture(scope="module")
def simulator(mug):
    return SensorSimulator(surface_samples(mug.points), mug.normalization["mesh_units_per_grid_unit"])


def test_single_views_see_one_side_and_whole_clouds_all_around(simulator):
    generator = torch.Generator().manual_seed(0)
    surface = simulator.surface.expand(64, -1, -1)
    clouds = simulator.clouds(surface, generator)
    assert clouds.points.shape[0] == 64 and clouds.mask.shape == clouds.points.shape[:2]
    assert 0 < clouds.whole.sum() < 64
    n = surface.shape[1]
    seen = clouds.mask[:, :n]
    unit = simulator.unit
    body_axis = torch.tensor([-0.01525 / unit, 0.0])  # the mug's body axis (its bounding box is centred on the normalized origin)
    for i in range(64):
        cam = clouds.cameras[i, 0, :2] - body_axis
        pts = surface[i][seen[i]]
        rel = pts[:, :2] - body_axis
        facing = (rel @ cam) / cam.norm()  # how far toward the first camera, seen from above
        radius = rel.norm(dim=-1) * unit
        below_rim = pts[:, 2] * unit < surface[i][:, 2].max() * unit - 0.003  # the rim's top is seen from above
        outer_wall = (radius > 0.039) & (radius < 0.0415) & below_rim  # the body's outer skin (not the handle)
        far_outer = (outer_wall & (facing < -0.3 * 0.041 / unit)).float().mean()
        if clouds.whole[i]:
            assert clouds.camera_mask[i].sum() == simulator.config.whole_cameras
            assert far_outer > 0.05  # fused cameras see all around
        else:
            assert clouds.camera_mask[i].sum() == 1
            assert far_outer < 0.01  # one camera never sees the far outer wall
    elevation = torch.asin(clouds.cameras[..., 2] / clouds.cameras.norm(dim=-1))[clouds.camera_mask]
    assert elevation.min() >= math.radians(10) - 1e-5 and elevation.max() <= math.radians(70) + 1e-5


def test_noise_density_and_outliers_follow_the_config(mug):
    surface = surface_samples(mug.points)
    unit = mug.normalization["mesh_units_per_grid_unit"]
    clean = SensorSimulator(surface, unit, SensorConfig(noise_m=(0, 0), keep=(1, 1), outliers=(0, 0)))
    noisy = SensorSimulator(surface, unit, SensorConfig(noise_m=(0.003, 0.003), keep=(0.3, 0.3), outliers=(0.01, 0.01)))
    posed = surface.expand(4, -1, -1)
    a = clean.clouds(posed, torch.Generator().manual_seed(5))
    b = noisy.clouds(posed, torch.Generator().manual_seed(5))
    n = len(surface)
    assert torch.equal(a.points[:, :n], posed) and not a.mask[:, n:].any()
    seen_a, seen_b = a.mask[:, :n].sum(1).float(), b.mask[:, :n].sum(1).float()
    torch.testing.assert_close(seen_b / seen_a, torch.full((4,), 0.3), atol=0.03, rtol=0)
    shift = (b.points[:, :n] - posed).norm(dim=-1)[b.mask[:, :n]] * unit
    assert 0.0021 < float(shift.mean()) < 0.0027  # |N(0, 3 mm)| along the ray has mean 3 mm * sqrt(2 / pi)
    outliers = b.mask[:, n:].sum(1).float()
    torch.testing.assert_close(outliers, (seen_b * 0.01).round(), atol=1, rtol=0)
    with pytest.raises(ValueError, match="keep"):
        SensorConfig(keep=(0.5, 1.5)).validate()


def test_camera_artifacts_a_ring_of_table_and_flying_pixels(mug):
    surface = surface_samples(mug.points)
    unit = mug.normalization["mesh_units_per_grid_unit"]
    exact = dict(noise_m=(0, 0), outliers=(0, 0), keep=(1, 1), whole_fraction=0.0)
    plain = SensorSimulator(surface, unit, SensorConfig(**exact))
    faulty = SensorSimulator(surface, unit, SensorConfig(**exact, artifact_fraction=1.0, artifact_noise_m=(0, 0),
                                                         ring_m=(0.01, 0.03)))
    posed = surface.expand(6, -1, -1)
    table = faulty.table.expand(6, -1, -1)
    a = plain.clouds(posed, torch.Generator().manual_seed(2))
    b = faulty.clouds(posed, torch.Generator().manual_seed(2), table)
    n, t = len(surface), table.shape[1]
    assert b.artifacts.all() and b.points.shape[1] == n + t + n + 1
    # The object's points are what the same seed shows without artifacts (the table hides none of them).
    agree = (a.mask[:, :n] == b.mask[:, :n]).float().mean()
    assert agree > 0.999
    # The table: on the base plane, outside the footprint, within each cloud's ring width (at most 3 cm).
    ring, ring_mask = b.points[:, n : n + t], b.mask[:, n : n + t]
    assert ring_mask.sum(1).min() > 100
    base = float(surface[:, 2].min())
    assert torch.allclose(ring[ring_mask][:, 2], torch.full_like(ring[ring_mask][:, 2], base))
    reach = faulty.table_reach.expand(6, -1)[ring_mask] * unit
    assert float(reach.max()) <= 0.03 + 1e-6 and float(reach.min()) >= 0
    # Flying pixels: copies of points the first camera sees at its silhouette, pushed back along its ray by 3 mm-0.3 m.
    flying, fly_mask = b.points[:, n + t : n + t + n], b.mask[:, n + t : n + t + n]
    assert fly_mask.any(1).all() and not (fly_mask & ~b.mask[:, :n]).any()
    view = torch.nonzero(fly_mask)[:, 0]
    origin = posed[fly_mask]
    ray = torch.nn.functional.normalize(origin - b.cameras[view, 0], dim=-1)
    push = flying[fly_mask] - origin
    along = (push * ray).sum(-1) * unit
    assert float(along.min()) >= 0.003 - 1e-5 and float(along.max()) <= 0.3 + 1e-5
    assert float(torch.linalg.cross(push, ray, dim=-1).norm(dim=-1).max()) < 1e-4
    shares = fly_mask.sum(1).float() / b.mask[:, :n].sum(1)
    assert float(shares.max()) <= 0.03 * 1.2  # about the drawn share (at most 3 %)


def test_held_clouds_see_the_underside_from_a_camera_below_and_no_table(mug):
    surface = surface_samples(mug.points)
    unit = mug.normalization["mesh_units_per_grid_unit"]
    exact = dict(noise_m=(0, 0), outliers=(0, 0), keep=(1, 1), whole_fraction=1.0, artifact_fraction=1.0,
                 artifact_noise_m=(0, 0), flying=(0, 0), ring_m=(0.01, 0.03))
    standing = SensorSimulator(surface, unit, SensorConfig(**exact))
    held = SensorSimulator(surface, unit, SensorConfig(**exact, held_fraction=1.0))
    posed = surface.expand(6, -1, -1)
    a = standing.clouds(posed, torch.Generator().manual_seed(4), standing.table.expand(6, -1, -1))
    b = held.clouds(posed, torch.Generator().manual_seed(4), held.table.expand(6, -1, -1))
    n, t = len(surface), held.table.shape[0]
    assert not a.held.any() and b.held.all()
    assert (b.camera_mask.sum(1) == held.config.whole_cameras + 1).all()
    below = b.cameras[:, -1]
    elevation = torch.rad2deg(torch.asin(below[:, 2] / below.norm(dim=-1)))
    assert float(elevation.min()) >= -60 - 1e-4 and float(elevation.max()) <= -10 + 1e-4
    # The underside: samples within 1 mm of the base and 1 cm inside the body's 41 mm radius (the mug's outer bottom,
    # facing down), which only a camera below sees.
    body_axis = torch.tensor([-0.01525 / unit, 0.0])
    inside = (surface[:, :2] - body_axis).norm(dim=-1) * unit < 0.031
    base = (surface[:, 2] < surface[:, 2].min() + 0.001 / unit) & inside
    assert base.sum() > 100
    assert a.mask[:, :n][:, base].float().mean() < 0.02
    underside_seen = b.mask[:, :n][:, base].float().mean(1)
    steep = elevation < -30  # a grazing view of the bottom hides much of its skin layer in the z-buffer
    assert 0 < steep.sum() < 6 and underside_seen[steep].min() > 0.8 and underside_seen.min() > 0.1
    # No table under a held object, and every point a held cloud keeps is finite.
    assert a.mask[:, n : n + t].any(1).all() and not b.mask[:, n : n + t].any()
    assert torch.isfinite(b.points[b.mask]).all()
    with pytest.raises(ValueError, match="held_elevation_deg"):
        SensorConfig(held_elevation_deg=(-20.0, 5.0)).validate()


def test_a_held_share_of_the_fused_clouds(mug):
    simulator = SensorSimulator(surface_samples(mug.points)[::4], mug.normalization["mesh_units_per_grid_unit"],
                                SensorConfig(whole_fraction=0.5, held_fraction=0.5))
    clouds = simulator.clouds(simulator.surface.expand(200, -1, -1), torch.Generator().manual_seed(0))
    assert not (clouds.held & ~clouds.whole).any()
    assert 0.35 < float(clouds.held.sum() / clouds.whole.sum()) < 0.65
