"""Input conditioning on hand-built scenes: a cup-like object (open cylinder with a floor and a handle), a table
patch, a box, stray points. The oracle is how each scene was built: which points belong to the object."""

import warnings

import numpy as np
import pytest

from kp_core.conditioning import ConditioningConfig, ConditioningError, ObjectSize, condition, dimensions

RADIUS, HEIGHT = 0.04, 0.10
CUP = ObjectSize(width=2 * RADIUS + 0.015, height=HEIGHT)  # the handle reaches 15 mm past the wall


def cup(rng, n=20000, underside=False):
    """Points on an open cylinder's wall (outside and in), its inner floor and a handle; its bottom at z = 0."""
    theta = rng.uniform(0, 2 * np.pi, n)
    z = rng.uniform(0, HEIGHT, n)
    r = np.where(rng.random(n) < 0.5, RADIUS, RADIUS - 0.004)
    wall = np.c_[r * np.cos(theta), r * np.sin(theta), z]
    m = n // 5
    rho, phi = RADIUS * np.sqrt(rng.random(m)), rng.uniform(0, 2 * np.pi, m)
    floor = np.c_[rho * np.cos(phi), rho * np.sin(phi), np.full(m, 0.006)]
    a = rng.uniform(-np.pi / 2, np.pi / 2, m // 2)
    handle = np.c_[RADIUS + 0.015 * np.cos(a), rng.uniform(-0.005, 0.005, len(a)), 0.05 + 0.025 * np.sin(a)]
    parts = [wall, floor, handle]
    if underside:
        parts.append(np.c_[rho * np.cos(phi), rho * np.sin(phi), np.zeros(m)])
    return np.concatenate(parts)


def table(rng, n=60000, hole=RADIUS + 0.001, half=0.4, noise=0.0015, center=(0.1, 0.05)):
    xy = rng.uniform(-half, half, (n, 2)) + center
    xy = xy[np.linalg.norm(xy, axis=1) > hole]
    return np.c_[xy, rng.normal(0, noise, len(xy))]


def box(rng, corner, size=(0.08, 0.06, 0.12), n=8000):
    """Points on the faces of a box standing on z = corner z, but its bottom face (as cameras see it)."""
    unit = rng.uniform(0, 1, (n, 3))
    axis = rng.integers(0, 3, n)
    unit[np.arange(n), axis] = np.where(axis == 2, 1, rng.integers(0, 2, n))
    return unit * size + corner


def share_kept(kept, part):
    """Share of ``part``'s points that are in ``kept`` (exact row matches)."""
    return kept_rows(part, kept).mean()


def kept_rows(points, kept):
    """(N,) bool: which of ``points`` are rows of ``kept``."""
    rows = {tuple(p) for p in kept}
    return np.array([tuple(p) in rows for p in points])


def in_cup(points, slack=0.002):
    """(N,) bool: points inside the cup's body (its wall's outline, from its bottom to its rim)."""
    return (np.linalg.norm(points[:, :2], axis=1) <= RADIUS + slack) & (points[:, 2] >= -slack) & (
        points[:, 2] <= HEIGHT + slack)


def test_an_object_cloud_passes_unchanged():
    rng = np.random.default_rng(0)
    points = cup(rng)
    out = condition(points, CUP)
    np.testing.assert_array_equal(out.points, points)
    assert out.floor_z is None and out.removed == {}


def test_stray_returns_beside_an_object_cloud_go_and_the_grid_stays_on_the_object():
    """Isolated returns within the object's size (a sensor's outliers) are dropped from an object cloud too: one
    of them would move the smallest enclosing circle, and so the grid, off the object."""
    from kp_core.placement import object_center

    points = cup(np.random.default_rng(4))
    strays = np.array([[-RADIUS - 0.025, 0.0, 0.05], [0.0, RADIUS + 0.02, 0.09], [0.01, -RADIUS - 0.02, 0.02]])
    with_strays = np.concatenate([points, strays])
    assert max(dimensions(with_strays)) < 1.3 * CUP.size  # still the object's size
    assert np.abs(object_center(with_strays) - object_center(points))[:2].max() > 0.005
    out = condition(with_strays, CUP)
    np.testing.assert_array_equal(out.points, points)
    assert sum(out.removed.values()) == 3  # each its own cluster, far from the object's
    np.testing.assert_allclose(object_center(out.points), object_center(points))


def test_a_held_object_with_its_underside_keeps_its_bottom():
    """The underside is a horizontal disk with the object above it, but inside its footprint: no support."""
    points = cup(np.random.default_rng(1), underside=True)
    out = condition(points, CUP)
    np.testing.assert_array_equal(out.points, points)
    assert out.floor_z is None


def test_a_tabletop_scene_gives_the_object_alone_and_its_floor():
    rng = np.random.default_rng(2)
    obj = cup(rng)
    other = box(rng, (0.2, 0.1, 0.0))
    stray = np.array([[1e30, 0.0, 0.0], [0.0, -3.0, 2.0]])
    scene = np.concatenate([table(rng), obj, other, stray])
    out = condition(scene, CUP)
    assert share_kept(out.points, obj[obj[:, 2] > 0.006]) > 0.99  # all but the lowest millimetres
    intruders = ~in_cup(out.points) & ~kept_rows(out.points, obj)  # the table and the box lie outside the cup
    assert intruders.sum() < 0.005 * len(out.points)
    assert out.floor_z == pytest.approx(0.0, abs=0.002)
    assert out.removed["far"] == 1 and out.removed["plane and below"] > 50000


def test_a_ring_of_table_left_around_the_base_is_removed():
    rng = np.random.default_rng(3)
    obj = cup(rng)
    ring = table(rng, n=8000, half=RADIUS + 0.02, center=(0.0, 0.0))
    ring = ring[np.linalg.norm(ring[:, :2], axis=1) < RADIUS + 0.02]
    out = condition(np.concatenate([obj, ring]), CUP)
    # The ring's points at the contact line (within 2 mm of the cup's wall) go with the cup's base.
    from scipy.spatial import cKDTree

    away = ring[np.isinf(cKDTree(obj[:, :2]).query(ring[:, :2], distance_upper_bound=0.002)[0])]
    assert share_kept(out.points, away) < 0.01
    assert share_kept(out.points, obj) > 0.9
    assert out.floor_z == pytest.approx(0.0, abs=0.002)


def test_the_wall_is_continued_down_to_the_table_where_the_camera_saw_it_reach_the_table():
    rng = np.random.default_rng(4)
    obj, surround = cup(rng), table(rng, noise=0.0005)
    lost = obj[:, 2] <= 0.0015  # within the table's band
    out = condition(np.concatenate([obj, surround]), CUP)
    low = out.points[out.points[:, 2] < 0.0015]
    assert len(low) > 0.5 * lost.sum() and in_cup(low, slack=0.001).all()
    copies = out.points[len(out.returns):]
    assert out.extended == len(copies) > 0 and not kept_rows(copies, obj).any() and kept_rows(out.returns, obj).all()
    # All the way round but under the handle: seen from above, it hides the wall's outline within about 45 deg
    # of it (the outline is the convex hull's).
    covered = np.unique(np.floor(np.degrees(np.arctan2(low[:, 1], low[:, 0])) / 10))
    assert set(range(-18, 18)) - set(range(-5, 5)) <= set(covered.astype(int))
    # A camera that saw the wall end 1 cm above the table (the rest hidden): it stands on the table, but nothing
    # is made up below what was seen.
    high = obj[(obj[:, 2] > 0.01)]
    out = condition(np.concatenate([high, surround]), CUP)
    assert out.floor_z == pytest.approx(0.0, abs=0.002)
    assert out.points[:, 2].min() >= 0.01 - 1e-12


def test_of_two_object_sized_clusters_the_matching_shape_is_chosen_or_the_hinted_one():
    rng = np.random.default_rng(4)
    obj = cup(rng)
    other = box(rng, (0.25, -0.04, 0.0), size=(0.08, 0.06, 0.125))
    scene = np.concatenate([obj, other])
    chosen = condition(scene, CUP)
    assert share_kept(chosen.points, obj) > 0.99 and share_kept(chosen.points, other) == 0
    hinted = condition(scene, CUP, hint=np.array([0.3, 0.0, 0.05]))
    assert share_kept(hinted.points, other) > 0.99 and share_kept(hinted.points, obj) == 0


def test_an_object_seen_in_pieces_stays_whole_and_its_neighbour_stays_out():
    """A far, low camera sees the cup's front and, across its opening, a strip of its inner back wall: two
    clusters with nothing between them, both the cup's. A box 3 cm beside it is not."""
    rng = np.random.default_rng(11)
    theta = rng.uniform(-np.pi / 3, np.pi / 3, 6000)
    front = np.c_[RADIUS * np.cos(theta), RADIUS * np.sin(theta), rng.uniform(0, HEIGHT, len(theta))]
    theta = rng.uniform(np.pi * 5 / 6, np.pi * 7 / 6, 800)
    inner = RADIUS - 0.004
    strip = np.c_[inner * np.cos(theta), inner * np.sin(theta), rng.uniform(0.085, HEIGHT, len(theta))]
    neighbour = box(rng, (-0.02, RADIUS + 0.03, 0.0), size=(0.05, 0.05, 0.06), n=3000)
    scene = np.concatenate([table(rng), front, strip, neighbour])
    out = condition(scene, CUP)
    assert share_kept(out.points, front[front[:, 2] > 0.006]) > 0.99
    assert share_kept(out.points, strip) > 0.99
    assert share_kept(out.points, neighbour) == 0
    assert "1 more of its parts" in out.summary


def test_no_object_sized_cluster_is_a_clear_refusal():
    rng = np.random.default_rng(5)
    with pytest.raises(ConditioningError, match="no cluster of the cloud has the model's object size"):
        condition(box(rng, (0, 0, 0), size=(0.6, 0.5, 0.4), n=20000), CUP)


@pytest.mark.parametrize("scale", [1e38, 1e300, 1e308])
def test_points_spread_over_absurd_distances_leave_nothing_and_overflow_nowhere(scale):
    rng = np.random.default_rng(6)
    points = rng.uniform(-1, 1, (3000, 3)) * scale
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow on the way
        out = condition(points, CUP)
    assert len(out.points) < 5 and out.removed["far"] > 2990


def test_without_an_object_size_only_far_points_go():
    rng = np.random.default_rng(7)
    points = np.concatenate([cup(rng), [[1e30, 0.0, 0.0]]])
    out = condition(points, None)
    np.testing.assert_array_equal(out.points, points[:-1])
    assert out.removed == {"far": 1}


def test_disabled_conditioning_keeps_scenes_whole_but_still_drops_far_points():
    rng = np.random.default_rng(8)
    scene = np.concatenate([table(rng, n=5000), cup(rng), [[1e30, 0.0, 0.0]]])
    out = condition(scene, CUP, ConditioningConfig(enabled=False))
    assert len(out.points) == len(scene) - 1


def test_dimensions_measure_width_along_eight_directions_and_height():
    square = np.array([[0, 0, 0], [0.1, 0, 0], [0, 0.1, 0.2], [0.1, 0.1, 0.2]], dtype=float)
    width, height = dimensions(square)
    assert height == pytest.approx(0.2)
    assert width == pytest.approx(0.1 * np.sqrt(2))  # the diagonal is one of the directions


def test_an_object_cloud_far_smaller_than_the_models_object_is_refused():
    """An object cloud is found only when it has the object's size: at a quarter of it, none is."""
    points = cup(np.random.default_rng(9))
    with pytest.raises(ConditioningError, match="object size"):
        condition(points, ObjectSize(width=4 * CUP.width, height=4 * CUP.height))


def organized_image(depth: np.ndarray, focal: float = 60.0) -> np.ndarray:
    """(H, W, 3) points of a pinhole camera at the origin looking along +z, from its (H, W) depth image."""
    h, w = depth.shape
    v, u = np.mgrid[0:h, 0:w] + 0.5
    return np.stack([(u - w / 2) / focal * depth, (v - h / 2) / focal * depth, depth], axis=-1)


def test_veils_at_a_depth_edge_go_and_a_noisy_or_tilted_surface_stays():
    from kp_core.conditioning import kept_pixels, veil_pixels

    depth = np.where(np.arange(64) < 32, 0.5, 0.8)[None].repeat(48, 0)
    depth[:, 32] = 0.65  # flying pixels: mixed depths between the front and the back surface
    depth[:, 40] = np.nan  # no return
    veil = veil_pixels(organized_image(depth), np.zeros(3), 10.0, 0.01)
    assert veil[:, 32].all() and veil[:, 33].all()  # the flying pixels, and the back surface just behind them
    assert not veil[:, :32].any() and not veil[:, 34:].any()
    # Moved and turned with the camera, the same image gives the same veils (only the camera's centre matters).
    turn = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    moved = organized_image(depth) @ turn.T + [3.0, -2.0, 1.0]
    assert np.array_equal(veil_pixels(moved, np.array([3.0, -2.0, 1.0]), 10.0, 0.01), veil)
    # 3 mm of depth noise on a frontal plane, and a plane turned 45 deg (17-73 deg incidence across the image),
    # are surfaces, not edges.
    rng = np.random.default_rng(0)
    noisy = organized_image(0.6 + rng.normal(0, 0.003, (48, 64)))
    assert veil_pixels(noisy, np.zeros(3), 10.0, 0.01).mean() < 0.005
    rays = organized_image(np.ones((48, 64)))
    normal = np.array([np.sin(np.pi / 4), 0.0, -np.cos(np.pi / 4)])
    tilted = rays * ((normal @ [0.0, 0.0, 0.6]) / (rays @ normal))[..., None]
    assert not veil_pixels(tilted, np.zeros(3), 10.0, 0.01).any()
    # What the node keeps: finite pixels but the veils; nothing dropped for veils with 0 deg or conditioning off.
    keep = kept_pixels(organized_image(depth), ConditioningConfig())
    assert keep.sum() == 48 * (64 - 3)
    for cfg in (ConditioningConfig(veil_angle_deg=0.0), ConditioningConfig(enabled=False)):
        assert kept_pixels(organized_image(depth), cfg).sum() == 48 * 63


def plane_image(facing: np.ndarray, distance: float = 0.5, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """(48, 64, 3) points of the camera of :func:`organized_image` looking at the plane whose normal towards the
    camera is ``facing`` (unit), ``distance`` from it, with depth noise along the rays."""
    rays = organized_image(np.ones((48, 64)))
    ranges = -distance / (rays @ facing)
    if noise:
        ranges = ranges * (1 + np.random.default_rng(seed).normal(0, noise, ranges.shape) / np.linalg.norm(rays, axis=-1)
                           / ranges)
    return rays * ranges[..., None]


def test_a_surface_facing_down_seen_from_below_is_an_underside_and_nothing_else_is():
    """The oracle is the plane's orientation and the camera's side of it: the camera sees the plane's face
    ``facing``; with the world's up opposite to it, that face is an underside seen from below."""
    from kp_core.conditioning import underside_pixels

    facing = np.array([0.0, -np.sin(np.radians(40)), -np.cos(np.radians(40))])  # seen at 40 deg incidence
    across = np.array([1.0, 0.0, 0.0])
    points = plane_image(facing)
    keep = np.ones(points.shape[:2], dtype=bool)

    def underside(up, angle=45.0, keep=keep):
        return underside_pixels(points, keep, np.zeros(3), up, angle)

    assert underside(-facing).all()  # the image's border too: its normal takes the one neighbour it has
    assert not underside(facing).any()  # a floor seen from above
    assert not underside(across).any()  # a wall
    tilt = np.radians(30)  # the face turned 30 deg away from straight down: an underside within 45 deg, not 20
    up = -(np.cos(tilt) * facing + np.sin(tilt) * across)
    assert underside(up).all() and not underside(up, angle=20.0).any()
    # Pixels not kept are never an underside, nor a pixel with no kept neighbour along a row or column.
    holed = keep.copy()
    holed[20, 30] = False
    holed[10, 8:13] = False
    holed[10, 10] = True
    found = underside(-facing, keep=holed)
    assert not found[20, 30] and found[[18, 22, 20, 20], [30, 30, 28, 32]].all() and not found[10, 10]


def test_the_organized_cloud_loses_a_noisy_underside_only_where_the_frames_up_is_known():
    from kp_core.conditioning import organized_cloud

    facing = np.array([0.0, -np.sin(np.radians(40)), -np.cos(np.radians(40))])
    points = plane_image(facing, noise=0.001).astype(np.float32)  # 1 mm along the rays, as a camera's
    _, kept = organized_cloud(points, ConditioningConfig(), up=-facing)
    assert not kept.any()  # the smoothed noise tilts no normal 45 deg away
    for up, cfg in ((None, ConditioningConfig()), (facing, ConditioningConfig()),
                    (-facing, ConditioningConfig(underside_angle_deg=0.0)), (-facing, ConditioningConfig(enabled=False))):
        assert organized_cloud(points, cfg, up=up)[1].all()
    with pytest.raises(ValueError, match="underside_angle_deg"):
        ConditioningConfig(underside_angle_deg=90.0).validate()


def test_smoothing_divides_the_depth_noise_along_each_ray_and_keeps_edges_and_planes():
    from kp_core.conditioning import kept_pixels, organized_cloud, smooth_ranges

    rng = np.random.default_rng(3)
    # A frontal plane at 0.5 m beside a wall 0.3 m behind it, 3 mm of noise along the rays, a hole, a veil kept out.
    true_depth = np.where(np.arange(64) < 32, 0.5, 0.8)[None].repeat(48, 0)
    measured = true_depth + rng.normal(0, 0.003, true_depth.shape)
    measured[10, 10] = np.nan
    focal = 500.0  # a depth camera's: about 0.5 mm of range from one pixel to the next on this plane
    image = organized_image(measured, focal)
    keep = np.isfinite(image[..., 0])
    keep[20, 20] = False
    out = smooth_ranges(image, keep, np.zeros(3), 2, 0.0025, 0.01)
    truth = organized_image(true_depth, focal)

    def range_error(points):
        return np.linalg.norm(points, axis=-1) - np.linalg.norm(truth, axis=-1)

    inside = keep.copy()
    inside[:, 30:34] = False  # beside the edge fewer neighbours share the surface
    inside[:2], inside[-2:], inside[:, :2], inside[:, -2:] = False, False, False, False  # and at the image's border
    assert np.nanstd(range_error(out)[inside]) < 0.5 * np.nanstd(range_error(image)[inside])
    assert np.median(np.abs(range_error(out)[inside])) < 0.4 * np.median(np.abs(range_error(image)[inside]))
    assert abs(np.nanmean(range_error(out)[inside])) < 3e-4
    # The edge stays sharp: every point moved ends near its own surface, none is drawn into the gap between them.
    moved = keep & (np.abs(np.linalg.norm(out, axis=-1) - np.linalg.norm(image, axis=-1)) > 1e-9)
    assert moved[:, 31].any() and moved[:, 32].any() and np.abs(range_error(out)[moved]).max() < 0.01
    # Points move along their rays only; pixels not kept, and those without a return, are left as they were.
    cross = np.cross(out[keep], image[keep])
    assert np.abs(cross).max() < 1e-9
    assert np.array_equal(out[20, 20], image[20, 20]) and np.isnan(out[10, 10]).all()
    # A plane turned 45 deg: the ranges change across the window, their mean stays on the plane.
    rays = organized_image(np.ones((48, 64)), focal)
    normal = np.array([np.sin(np.pi / 4), 0.0, -np.cos(np.pi / 4)])
    tilted = rays * ((normal @ [0.0, 0.0, 0.6]) / (rays @ normal))[..., None]
    flat = smooth_ranges(tilted, np.ones((48, 64), dtype=bool), np.zeros(3), 2, 0.0025, 0.01)
    assert np.abs(flat @ normal - normal @ [0.0, 0.0, 0.6])[2:-2, 2:-2].max() < 1e-5
    # Far from the frame's origin (the camera at 1e5 m), the same image gives the same points, to a micrometre.
    far = np.array([1e5, -2e5, 30.0])
    assert np.abs(smooth_ranges(image + far, keep, far, 2, 0.0025, 0.01) - far - out)[keep].max() < 1e-6
    # organized_cloud: veils dropped, then smoothed; off with smooth_pixels 0 or with conditioning off.
    points, kept = organized_cloud(image, ConditioningConfig())
    assert np.array_equal(kept, kept_pixels(image, ConditioningConfig()))
    assert np.abs(range_error(points)[kept & inside]).std() < 0.5 * np.nanstd(range_error(image)[inside])
    # Pixels without a return around the image change nothing (only the rectangle that holds returns is smoothed).
    padded = np.full((56, 80, 3), np.nan)
    padded[4:52, 8:72] = image
    assert np.array_equal(organized_cloud(padded, ConditioningConfig())[0][4:52, 8:72], points, equal_nan=True)
    for cfg in (ConditioningConfig(smooth_pixels=0), ConditioningConfig(enabled=False)):
        assert np.array_equal(organized_cloud(image, cfg)[0], image, equal_nan=True)
    with pytest.raises(ValueError, match="smooth_pixels"):
        ConditioningConfig(smooth_pixels=-1).validate()


def test_smoothing_keeps_a_curved_surface_and_takes_most_of_its_noise():
    """A vertical cylinder (a mug's body, 4 cm radius, 0.6 m away, a depth camera's focal length) seen by exact ray
    casting: smoothing moves noiseless points by a fraction of a millimetre, and brings noisy ones closer."""
    from kp_core.conditioning import smooth_ranges

    focal, radius, centre = 525.0, 0.04, 0.6
    rays = organized_image(np.ones((64, 128)), focal)
    rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
    a = rays[..., 0] ** 2 + rays[..., 2] ** 2  # the camera looks along +z at the axis x = 0, z = centre (along y)
    half_b = -centre * rays[..., 2]
    disc = half_b**2 - a * (centre**2 - radius**2)
    hit = np.where(disc >= 0, (-half_b - np.sqrt(np.maximum(disc, 0))) / a, np.nan)
    keep = np.isfinite(hit)
    assert keep.mean() > 0.5

    def off_surface(points):
        return np.abs(np.hypot(points[..., 0], points[..., 2] - centre) - radius)[keep]

    exact = rays * hit[..., None]
    assert np.median(off_surface(smooth_ranges(exact, keep, np.zeros(3), 2, 0.0025, 0.01))) < 2e-4
    noisy = rays * (hit + np.random.default_rng(5).normal(0, 0.003, hit.shape))[..., None]
    assert np.median(off_surface(smooth_ranges(noisy, keep, np.zeros(3), 2, 0.0025, 0.01))) < 0.4 * np.median(off_surface(noisy))


def test_smoothing_leaves_a_sharp_cameras_creases_where_they_are():
    """A table at 0.3 m meeting a wall seen at a grazing angle (its range grows 3 mm a pixel), 0.3 mm of noise (a
    close camera): the tolerance follows the image's own noise, so the crease moves by about that noise, where a
    fixed 1 cm tolerance would round it off by millimetres."""
    from kp_core.conditioning import organized_cloud

    columns = np.arange(64)
    depth = 0.3 + np.where(columns < 32, 0.0, (columns - 31) * 0.003)[None].repeat(48, 0)
    image = organized_image(depth + np.random.default_rng(1).normal(0, 0.0003, depth.shape), 600.0)

    def crease_error(cfg) -> float:
        error = (np.linalg.norm(organized_cloud(image, cfg)[0], axis=-1)
                 - np.linalg.norm(organized_image(depth, 600.0), axis=-1))
        return float(np.abs(error[2:-2, 30:34]).max())

    assert crease_error(ConditioningConfig(veil_angle_deg=0.0)) < 0.0006
    assert crease_error(ConditioningConfig(veil_angle_deg=0.0, smooth_pixels=0)) < 0.0015  # the noise alone


def test_the_images_noise_and_pixel_footprint_are_read_from_the_image():
    from kp_core.conditioning import FAR_RANGE_M, depth_noise, pixel_footprint

    rng = np.random.default_rng(2)
    depth = np.where(np.arange(64) < 32, 0.5, 0.9)[None].repeat(48, 0) + rng.normal(0, 0.002, (48, 64))
    image = organized_image(depth, 500.0)
    ranges = np.linalg.norm(image, axis=-1)
    rays = [image[..., c] for c in range(3)]
    keep = np.ones((48, 64), dtype=bool)
    keep[:, 50:] = False  # no return there
    assert depth_noise(np.where(keep, ranges, FAR_RANGE_M)) == pytest.approx(0.002, rel=0.2)
    # Neighbouring rays 1/500 rad apart; the median range lies on the near plane (32 of the 50 columns with returns).
    assert pixel_footprint(rays, ranges, keep) == pytest.approx(0.5 / 500, rel=0.05)
    assert pixel_footprint(rays, ranges, np.zeros_like(keep)) == 0.0
    assert depth_noise(np.full((48, 64), FAR_RANGE_M)) == 0.0


def test_a_planes_split_reads_each_points_own_square_where_the_thickness_decides():
    from kp_core.conditioning import Thickness

    rng = np.random.default_rng(5)
    table = rng.uniform(0.003, 0.009, size=12)  # 3 x 4 squares of 5 cm, each its own thickness
    thickness = Thickness(lo=np.array([0.0, 0.0]), shape=np.array([3, 4]), table=table, tile=0.05, tolerance=0.003)
    points = np.column_stack([rng.uniform(-0.05, 0.2, 5000), rng.uniform(-0.05, 0.25, 5000), np.zeros(5000)])
    heights = rng.uniform(-0.02, 0.02, 5000)
    above, within = thickness.split(points, heights)
    # The oracle: each point's square by its own floor division, outside the squares the plane's tolerance.
    i, j = np.floor(points[:, 0] / 0.05).astype(int), np.floor(points[:, 1] / 0.05).astype(int)
    inside = (i >= 0) & (i < 3) & (j >= 0) & (j < 4)
    own = np.where(inside, table[np.clip(i, 0, 2) * 4 + np.clip(j, 0, 3)], 0.003)
    np.testing.assert_array_equal(above, heights > own)
    np.testing.assert_array_equal(within, np.abs(heights) <= own)
    assert 0 < (np.abs(heights) <= own).sum() and not (above & within).any()


def test_group_medians_are_numpys_median_of_each_group():
    from kp_core.conditioning import group_medians

    rng = np.random.default_rng(3)
    group = rng.integers(0, 40, size=500) * 7  # sparse labels, groups of odd and even counts, some of one point
    values = rng.normal(size=500).round(2)  # ties
    labels, counts, medians = group_medians(group, values)
    expected = sorted(set(group.tolist()))
    assert labels.tolist() == expected
    assert counts.tolist() == [int((group == g).sum()) for g in expected]
    assert medians.tolist() == [float(np.median(values[group == g])) for g in expected]
