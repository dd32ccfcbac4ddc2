import math

import numpy as np
import pytest
import torch

from kp_core.geometry import (
    MetricGridMap,
    bounds,
    fitting_half_extent,
    grid_points,
    inverse_transform_points,
    point_to_index,
    rotate_grid_z,
    rotate_z_points,
    rotation_z,
    transform_points,
    voxel_centers,
    yaw_to_template,
)
from kp_core.models import spatial_expectation


def test_rotation_z_is_counter_clockwise_and_batched():
    r = rotation_z(torch.tensor([math.pi / 2, 0.0]))
    assert r.shape == (2, 3, 3)
    torch.testing.assert_close(r[0] @ torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(r[1], torch.eye(3))
    torch.testing.assert_close(r[0] @ r[0].T, torch.eye(3), atol=1e-6, rtol=0)


def test_transform_matches_matrix_form_and_inverse_round_trips():
    points = torch.randn(4, 50, 3)
    angle = torch.rand(4) * 2 * math.pi
    scale = 0.75 + 0.25 * torch.rand(4, 3)
    moved = transform_points(points, angle, scale)
    # Written out by hand (scale first, then a counter-clockwise turn), independent of rotation_z.
    x, y, z = (points * scale[:, None, :]).unbind(-1)
    c, s = torch.cos(angle)[:, None], torch.sin(angle)[:, None]
    expected = torch.stack([c * x - s * y, s * x + c * y, z], dim=-1)
    torch.testing.assert_close(moved, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(inverse_transform_points(moved, angle, scale), points, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("call", [
    lambda: transform_points(torch.zeros(5, 3), torch.zeros(1), torch.ones(1, 3)),  # unbatched points
    lambda: transform_points(torch.zeros(2, 5, 3), torch.zeros(3), torch.ones(3, 3)),  # batch sizes differ
    lambda: inverse_transform_points(torch.zeros(2, 5, 2), torch.zeros(2), torch.ones(2, 3)),  # 2-D points
    lambda: inverse_transform_points(torch.zeros(2, 5, 3), torch.zeros(2), torch.ones(2)),  # one scale per item
    lambda: rotate_grid_z(torch.zeros(2, 8, 8, 8), torch.zeros(2)),  # no channel axis
    lambda: rotate_grid_z(torch.zeros(2, 1, 8, 8, 8), torch.zeros(1)),
    lambda: point_to_index(torch.zeros(4, 2)),
])
def test_wrong_shapes_are_refused_with_the_shapes_received(call):
    with pytest.raises(ValueError, match="expected .* got"):
        call()


def test_rotate_z_points_turns_counter_clockwise_seen_from_above():
    points = torch.tensor([[1.0, 0.0, 0.3], [0.0, 2.0, -0.1]])
    turned = rotate_z_points(points, math.pi / 2)
    torch.testing.assert_close(turned, torch.tensor([[0.0, 1.0, 0.3], [-2.0, 0.0, -0.1]]), atol=1e-6, rtol=0)
    angles = torch.tensor([0.3, -1.2])  # one angle per batch item
    batched = rotate_z_points(torch.tensor([[[1.0, 0.0, 0.0]]]).expand(2, 1, 3), angles)
    expected = torch.tensor([[[math.cos(a), math.sin(a), 0.0]] for a in angles.tolist()])
    torch.testing.assert_close(batched, expected, atol=1e-6, rtol=0)


def test_rotate_z_points_composes_angles():
    p = torch.randn(10, 3)
    torch.testing.assert_close(rotate_z_points(rotate_z_points(p, 0.3), 0.5), rotate_z_points(p, 0.8), atol=1e-5, rtol=0)


def test_rotate_grid_z_turns_a_voxel_as_rotate_z_points_turns_its_centre():
    grid = torch.zeros(2, 1, 64, 64, 64)
    grid[:, 0, 50, 32, 10] = 1.0  # centre x = -1 + 101/64, y = 1/64
    turned = rotate_grid_z(grid, torch.tensor([math.pi / 2, 0.0]))
    centre = torch.tensor([[-1 + 101 / 64, 1 / 64, -1 + 21 / 64]])
    expected = point_to_index(rotate_z_points(centre, math.pi / 2))[0].tolist()
    assert (turned[0, 0] > 1e-5).nonzero().tolist() == [expected]  # a quarter turn moves the voxel whole
    assert torch.equal(turned[1], grid[1])  # no turn: unchanged


def test_rotate_grid_z_matches_turning_the_points_before_voxelizing(mug):
    from kp_core.voxelize import voxelize

    points = mug.points[None, ::2] * 0.8
    angle = torch.tensor([0.4, 2.0, -1.1])
    turned = rotate_grid_z(voxelize(points).expand(3, -1, -1, -1, -1), angle)
    truth = voxelize(rotate_z_points(points.expand(3, -1, -1), angle))
    hard = turned > 0.5
    iou = (hard & (truth > 0)).flatten(1).sum(1) / (hard | (truth > 0)).flatten(1).sum(1)
    # Measured 0.89-0.90: a turned grid cannot say where inside its voxels the surface was.
    assert float(iou.min()) > 0.85
    ninety = rotate_grid_z(voxelize(points), torch.tensor([math.pi / 2]))
    torch.testing.assert_close(ninety, torch.rot90(voxelize(points), 1, dims=(2, 3)), atol=1e-5, rtol=0)  # quarter turns: exact


def test_yaw_to_template_adds_the_turn_about_any_vertical_axis():
    generator = torch.Generator().manual_seed(0)
    layout = torch.rand(6, 3, generator=generator) - 0.5
    template = (layout[:, :2] - layout[:, :2].mean(0))
    assert abs(float(yaw_to_template(layout[None], template))) < 1e-6
    for angle in (0.3, 2.5, -3.0):
        pivot = torch.tensor([0.2, -0.4, 0.0])
        turned = rotate_z_points(layout - pivot, angle) + pivot + torch.tensor([0.1, 0.0, 0.3])
        torch.testing.assert_close(yaw_to_template(turned[None], template), torch.tensor([angle]), atol=1e-5, rtol=0)
    noisy = layout + 0.01 * torch.randn(6, 3, generator=generator)
    assert abs(float(yaw_to_template(noisy[None], template))) < 0.1
    assert float(yaw_to_template(layout[None], torch.zeros(6, 2))) == 0.0  # no template: no turn


def test_voxel_centers_follow_the_convention():
    c = voxel_centers(64)
    assert c[0] == pytest.approx(-1 + 1 / 64) and c[-1] == pytest.approx(1 - 1 / 64)
    g = grid_points(4)
    assert g.shape == (4, 4, 4, 3)
    torch.testing.assert_close(g[1, 2, 3], torch.tensor([-0.25, 0.25, 0.75]))
    # A centre maps back to its own index; the cube's border clips into the border voxels.
    idx = point_to_index(torch.stack([c, c, c], -1))
    assert torch.equal(idx[:, 0], torch.arange(64))
    assert point_to_index(torch.tensor([[-5.0, 1.0, 0.99999]])).tolist() == [[0, 63, 63]]


def test_keypoint_expectation_conventions():
    size = 32
    logits = torch.full((1, 3, size, size, size), -1e4)
    logits[0, 0, 5, 17, 30] = 0.0  # one hot: keypoint at that cell's centre, axes (x, y, z)
    logits[0, 1] = 0.0  # uniform: the cube's centre
    logits[0, 2, 0, 0, 0] = 0.0
    logits[0, 2, 31, 31, 31] = 0.0  # two equal peaks: their midpoint
    kp, prob = spatial_expectation(logits, grid_points(size).reshape(-1, 3))
    c = voxel_centers(size)
    torch.testing.assert_close(kp[0, 0], torch.stack([c[5], c[17], c[30]]))
    torch.testing.assert_close(kp[0, 1], torch.zeros(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(kp[0, 2], torch.zeros(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(prob.sum((2, 3, 4)), torch.ones(1, 3))


def test_keypoint_expectation_reads_channels_last_maps_alike():
    # The node's encoder hands over channels-last heatmaps; they are read in place, and must mean the same.
    logits = torch.randn(2, 5, 4, 6, 3, generator=torch.Generator().manual_seed(0)) * 3
    centers = torch.randn(4 * 6 * 3, 3, generator=torch.Generator().manual_seed(1))
    kp, prob = spatial_expectation(logits, centers, 0.7)
    kp_cl, prob_cl = spatial_expectation(logits.contiguous(memory_format=torch.channels_last_3d), centers, 0.7)
    expected = torch.softmax(logits.reshape(2, 5, -1) / 0.7, -1) @ centers  # the definition, written out
    torch.testing.assert_close(kp, expected)
    torch.testing.assert_close(kp_cl, expected)
    torch.testing.assert_close(prob_cl, prob)
    with pytest.raises(ValueError, match="cell centres"):
        spatial_expectation(logits, centers[:-1])


def test_keypoint_expectation_gradcheck():
    logits = torch.randn(1, 2, 4, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: spatial_expectation(x.float(), grid_points(4).reshape(-1, 3), 0.5)[0].double(), (logits,), eps=1e-3, atol=1e-3)


def test_metric_grid_map_round_trip_and_fit():
    pts = np.random.default_rng(0).normal(size=(100, 3)) * [0.1, 0.05, 0.2] + [1.0, -2.0, 0.5]
    m = MetricGridMap(center=[1.0, -2.0, 0.5], half_extent=0.7)
    grid = m.to_grid(pts)
    np.testing.assert_allclose(grid, (pts - [1.0, -2.0, 0.5]) / 0.7)
    np.testing.assert_allclose(m.to_metric(grid), pts)
    torch.testing.assert_close(m.to_metric(m.to_grid(torch.tensor(pts))), torch.tensor(pts))
    assert m.voxel_size == pytest.approx(2 * m.half_extent / 64)
    with pytest.raises(ValueError):
        MetricGridMap(center=[0, 0, np.nan], half_extent=1.0)
    with pytest.raises(ValueError):
        MetricGridMap(center=[0, 0, 0], half_extent=0.0)


def test_fitting_half_extent_keeps_every_z_rotation_inside():
    pts = np.random.default_rng(0).normal(size=(100, 3)) * [0.1, 0.05, 0.2]
    half = fitting_half_extent(pts, margin=0.1)
    for angle in np.linspace(0, 2 * np.pi, 13):
        c, s = np.cos(angle), np.sin(angle)
        turned = pts @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]).T / half
        assert np.abs(turned).max() <= 0.9 + 1e-9
    # the tightest such extent: the farthest point from the z axis, or the highest, touches 1 - margin
    assert max(np.hypot(pts[:, 0], pts[:, 1]).max(), np.abs(pts[:, 2]).max()) / half == pytest.approx(0.9)
    with pytest.raises(ValueError):
        fitting_half_extent(np.zeros((4, 3)), margin=0.1)


def test_bounds_matches_numpy_reductions():
    points = np.random.default_rng(0).normal(size=(1000, 3)) * [1.0, 5.0, 0.1]
    lo, hi = bounds(points)
    np.testing.assert_array_equal(lo, points.min(axis=0))
    np.testing.assert_array_equal(hi, points.max(axis=0))
    lo2, hi2 = bounds(points[:, :2].astype(np.float32))
    assert lo2.shape == (2,) and np.array_equal(hi2, points[:, :2].astype(np.float32).max(axis=0))


def test_metric_grid_maps_compare_and_hash_by_value():
    a = MetricGridMap(center=np.array([1.0, 2.0, 3.0]), half_extent=0.2)
    same = MetricGridMap(center=[1.0, 2.0, 3.0], half_extent=0.2)
    assert a == same and hash(a) == hash(same) and len({a, same}) == 1
    assert a != MetricGridMap(center=[1.0, 2.0, 3.5], half_extent=0.2)
    assert a != MetricGridMap(center=[1.0, 2.0, 3.0], half_extent=0.25)
    assert a != "a grid"


def test_yaw_alignment_is_one_for_a_turned_template_and_lower_for_another_layout():
    from kp_core.geometry import yaw_alignment, yaw_to_template

    g = torch.Generator().manual_seed(3)
    template = torch.randn(8, 2, generator=g)
    template -= template.mean(0)
    turned = torch.cat([template, torch.zeros(8, 1)], 1)[None]
    angle = torch.tensor(0.7)
    c, s = torch.cos(angle), torch.sin(angle)
    turned = turned @ torch.tensor([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]]) + torch.tensor([0.3, -0.2, 0.1])
    assert yaw_to_template(turned, template)[0] == pytest.approx(0.7, abs=1e-5)
    assert yaw_alignment(turned, template)[0] == pytest.approx(1.0, abs=1e-6)
    other = torch.randn(1, 8, 3, generator=g)
    assert 0.0 <= float(yaw_alignment(other, template)[0]) < 0.9
    assert float(yaw_alignment(torch.zeros(1, 8, 3), template)[0]) == 0.0  # no horizontal spread
