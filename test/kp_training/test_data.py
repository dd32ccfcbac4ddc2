"""Training views: the paper's solid grids and simulated sensor clouds with their grid placement."""

import pytest
import torch
import torch.nn.functional as F

from kp_training.data import ValidationSet, ViewSampler, make_views, sample_transforms
from kp_core.geometry import transform_points
from kp_core.placement import object_center
from kp_core.voxelize import voxelize
from kp_training.sensor import SensorConfig


def test_solid_views_are_the_papers_voxelized_augmentations(mug):
    points = mug.points[::4]
    sampler = ViewSampler(points)
    angle, scale = sample_transforms(4, torch.Generator().manual_seed(0))
    views = sampler.views(angle, scale, torch.Generator())
    assert torch.equal(views.inputs, views.targets)
    assert torch.equal(views.targets, make_views(points, angle, scale))
    assert not views.center.any() and torch.equal(views.half_extent, torch.ones(4))


def test_solid_views_through_an_encoders_input_show_what_the_target_holds(mug):
    # A model's own input (the cylinder encoder's, here a plain voxelization) of a zoomed solid view is built from
    # the posed samples, the target through one affine map of them: the same cells but for rounding at their edges.
    points = mug.points[::4]
    sampler = ViewSampler(points, input_from_points=lambda p, m: voxelize(p, 64, m), zoom=1.3)
    angle, scale = sample_transforms(3, torch.Generator().manual_seed(5))
    views = sampler.views(angle, scale, torch.Generator())
    occupied = views.targets.sum()
    assert occupied > 1000 and (views.inputs != views.targets).sum() <= 1e-3 * occupied


@pytest.fixture(scope="module")
def sensor_views(mug):
    unit = mug.normalization["mesh_units_per_grid_unit"]
    samplers = {kind: ViewSampler(mug.points, sensor=SensorConfig(whole_fraction=share), metres_per_unit=unit, zoom=1.3)
                for kind, share in (("whole", 1.0), ("single", 0.0))}
    angle, scale = sample_transforms(6, torch.Generator().manual_seed(1))
    return {kind: (s.views(angle, scale, torch.Generator().manual_seed(2)), angle, scale) for kind, s in samplers.items()}


@pytest.mark.parametrize("kind", ["whole", "single"])
def test_sensor_views_show_a_surface_and_target_the_whole_solid(sensor_views, mug, kind):
    views, angle, scale = sensor_views[kind]
    inputs, targets = views.inputs.bool(), views.targets.bool()
    # The target is the whole posed solid, inside the grid (zoom 1.3 leaves room): as many voxels as the
    # solid has when voxelized about its own centre, whatever the camera saw.
    posed = transform_points(mug.points.expand(len(angle), -1, -1), angle, scale)
    own = voxelize(posed / 1.3).sum((1, 2, 3, 4))
    torch.testing.assert_close(targets.sum((1, 2, 3, 4)).float(), own, rtol=0.08, atol=0)
    # The input is a surface: fewer cells than the (thin-walled) solid, far fewer for one camera, and
    # (outliers aside) on or next to the solid.
    share = inputs.sum((1, 2, 3, 4)).float() / targets.sum((1, 2, 3, 4))
    assert (share < (0.95 if kind == "whole" else 0.7)).all()
    near_solid = F.max_pool3d(targets.float(), 3, stride=1, padding=1).bool()
    stray = (inputs & ~near_solid).sum((1, 2, 3, 4)).float() / inputs.sum((1, 2, 3, 4))
    assert (stray < 0.03).all()


def test_the_grid_sits_on_the_objects_axis_for_whole_clouds(mug):
    # Without outliers and noise (which widen the enclosing circle: the model is trained with them, and the goal's axis
    # comes from the decoded object, not from the grid), the fused surface has the solid's enclosing circle.
    sampler = ViewSampler(mug.points, sensor=SensorConfig(whole_fraction=1.0, outliers=(0.0, 0.0), noise_m=(0.0, 0.0)),
                          metres_per_unit=mug.normalization["mesh_units_per_grid_unit"], zoom=1.3)
    angle, scale = sample_transforms(6, torch.Generator().manual_seed(1))
    views = sampler.views(angle, scale, torch.Generator().manual_seed(2))
    posed = transform_points(mug.points.expand(len(angle), -1, -1), angle, scale)
    for center, solid in zip(views.center, posed):
        true_xy = torch.tensor(object_center(solid[::4].double().numpy())[:2], dtype=torch.float32)
        assert (center[:2] - true_xy).norm() < 0.04  # < 2.5 mm for the mug: the cloud's circle is the solid's


def test_single_views_are_placed_off_the_axis_but_keep_the_object_inside(sensor_views, mug):
    views, angle, scale = sensor_views["single"]
    posed = transform_points(mug.points.expand(len(angle), -1, -1), angle, scale)
    grid = (posed - views.center[:, None]) / views.half_extent[:, None, None]
    assert grid.abs().amax() < 1.0  # nothing of the solid falls out of the grid
    # to_posed undoes the placement exactly
    torch.testing.assert_close(views.to_posed(grid), posed)


def test_validation_batches_are_fixed(mug):
    unit = mug.normalization["mesh_units_per_grid_unit"]
    sampler = ViewSampler(mug.points[::2], sensor=SensorConfig(), metres_per_unit=unit, zoom=1.3)
    validation = ValidationSet(num_pairs=3, seed=7)
    first = [b.inputs for b in validation.batches(sampler, 2)]
    second = [b.inputs for b in validation.batches(sampler, 2)]
    assert [len(b) for b in first] == [4, 2] and all(torch.equal(a, b) for a, b in zip(first, second))


def test_bad_settings_are_refused(mug):
    with pytest.raises(ValueError, match="zoom"):
        ViewSampler(mug.points, zoom=0.9)
    with pytest.raises(ValueError, match="metres_per_unit"):
        ViewSampler(mug.points, sensor=SensorConfig())


def test_conditioning_in_the_loop_gives_the_grid_the_object_as_the_node_would(mug):
    from kp_core.conditioning import ObjectSize

    unit = mug.normalization["mesh_units_per_grid_unit"]
    sensor = SensorConfig(whole_fraction=0.0, outliers=(0, 0), artifact_fraction=1.0, artifact_noise_m=(0, 0),
                          ring_m=(0.02, 0.03), flying=(0.02, 0.03))
    size = ObjectSize(mug.normalization["width"], mug.normalization["height"])
    raw = ViewSampler(mug.points[::2], sensor=sensor, metres_per_unit=unit, zoom=1.3)
    conditioned = ViewSampler(mug.points[::2], sensor=sensor, metres_per_unit=unit, zoom=1.3, object_size=size)
    simulator = raw.simulator
    angle, scale = sample_transforms(8, torch.Generator().manual_seed(4))
    surface = transform_points(simulator.surface.expand(8, -1, -1), angle, scale)
    table = transform_points(simulator.table.expand(8, -1, -1), angle, scale)
    clouds = simulator.clouds(surface, torch.Generator().manual_seed(4), table)
    n = surface.shape[1]
    base = surface[:, :, 2].min(1).values
    truth = torch.stack([torch.as_tensor(object_center(c[m].double().numpy(), bottom=float(b))) for c, m, b in
                         zip(clouds.points[:, :n], clouds.mask[:, :n], base)]).float()
    _, _, raw_center = raw._placed(clouds.points, clouds.mask)
    points, mask, center = conditioned._placed(clouds.points, clouds.mask)
    error = (center - truth).norm(dim=-1) * unit
    # Metres: the table and the far flying pixels no longer move the grid (those next to the silhouette stay,
    # as they do in the node), where without the conditioning they moved it by about a mug's size.
    assert float(error.median()) < 0.01 and float(error.max()) < 0.02
    assert float(((raw_center - truth).norm(dim=-1) * unit).median()) > 0.05
    torch.testing.assert_close(center[:, 2], truth[:, 2], atol=0.001 / unit, rtol=0)  # it stands on the plane found
    # The ring's points are gone: what lies in the lowest 2 mm is the object's foot (its returns, and its wall
    # continued down to the table), within 3 mm of its surface seen from above; the ring reaches 2-3 cm out.
    ring = clouds.mask[:, n : n + table.shape[1]].sum(1)
    for b in range(len(points)):
        low = points[b][mask[b] & (points[b, :, 2] < base[b] + 0.002 / unit)]
        off = torch.cdist(low[:, :2], surface[b, :, :2]).min(1).values * unit > 0.003
        assert int(off.sum()) < 0.01 * int(ring[b])
