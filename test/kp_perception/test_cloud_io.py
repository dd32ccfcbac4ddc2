"""The PointCloud2 converter against hand-built clouds of several layouts and an independent reader."""

import struct
from types import SimpleNamespace

import numpy as np
import pytest

from kp_perception.cloud_io import (
    FLOAT32,
    FLOAT64,
    INT16,
    UINT8,
    CloudError,
    make_xyz_cloud,
    read_xyz,
    write_ply,
)


def read_xyz_reference(msg) -> np.ndarray:
    """A slow, independent reader (``struct.unpack`` per point): the oracle for :func:`read_xyz`.

    Returns every point, NaNs included, as float64 (N, 3).
    """
    fields = {f.name: f for f in msg.fields}
    order = ">" if msg.is_bigendian else "<"
    data = bytes(msg.data)
    out = []
    for row in range(msg.height):
        for col in range(msg.width):
            base = row * msg.row_step + col * msg.point_step
            point = []
            for name in "xyz":
                field = fields[name]
                fmt = order + ("f" if field.datatype == FLOAT32 else "d")
                point.append(struct.unpack_from(fmt, data, base + field.offset)[0])
            out.append(point)
    return np.asarray(out, dtype=np.float64).reshape(-1, 3)


def field(name, offset, datatype, count=1):
    return SimpleNamespace(name=name, offset=offset, datatype=datatype, count=count)


def build_cloud(points, layout, bigendian=False, height=1, row_pad=0, point_step=None, extra=()):
    """Pack points by hand with struct: ``layout`` is [(name, offset, 'f'|'d')], ``extra`` adds other fields."""
    points = np.asarray(points, dtype=np.float64)
    n = len(points)
    width = n // height
    sizes = {"f": 4, "d": 8, "B": 1, "h": 2}
    codes = {"f": FLOAT32, "d": FLOAT64, "B": UINT8, "h": INT16}
    all_fields = list(layout) + list(extra)
    end = max(off + sizes[c] for _, off, c in all_fields)
    point_step = point_step or end
    row_step = width * point_step + row_pad
    order = ">" if bigendian else "<"
    data = bytearray(row_step * height)
    for idx, p in enumerate(points):
        row, col = divmod(idx, width)
        base = row * row_step + col * point_step
        for name, off, code in layout:
            struct.pack_into(order + code, data, base + off, p["xyz".index(name)])
        for name, off, code in extra:
            struct.pack_into(order + code, data, base + off, 7)
    fields = [field(name, off, codes[c]) for name, off, c in all_fields]
    return SimpleNamespace(height=height, width=width, fields=fields, is_bigendian=bigendian,
                           point_step=point_step, row_step=row_step, data=bytes(data), is_dense=False)


@pytest.fixture
def points():
    rng = np.random.default_rng(3)
    return rng.normal(size=(24, 3)) * [1.0, 2.0, 0.5] + [0.1, -3.0, 5.0]


LAYOUTS = {
    "xyz_f32": [("x", 0, "f"), ("y", 4, "f"), ("z", 8, "f")],
    "zyx_f32": [("z", 0, "f"), ("y", 4, "f"), ("x", 8, "f")],
    "xyz_f64": [("x", 0, "d"), ("y", 8, "d"), ("z", 16, "d")],
    "mixed_scattered": [("y", 2, "f"), ("x", 12, "d"), ("z", 24, "f")],
}


@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_layouts_match_reference(points, layout, bigendian):
    msg = build_cloud(points, LAYOUTS[layout], bigendian=bigendian, extra=[("intensity", 40, "f")])
    got = read_xyz(msg, dtype=np.float64)
    ref = read_xyz_reference(msg)
    np.testing.assert_array_equal(got, ref)
    tol = 1e-6 if "f64" in layout else 1e-5
    np.testing.assert_allclose(got, points, rtol=tol, atol=tol)


def test_point_step_padding_and_other_fields(points):
    layout = [("x", 0, "f"), ("y", 4, "f"), ("z", 8, "f")]
    msg = build_cloud(points, layout, point_step=32, extra=[("rgb", 16, "f"), ("ring", 20, "h"), ("tag", 22, "B")])
    np.testing.assert_allclose(read_xyz(msg), points, rtol=1e-6, atol=1e-5)


def test_organized_cloud_with_row_padding(points):
    layout = [("x", 0, "f"), ("y", 4, "f"), ("z", 8, "f")]
    msg = build_cloud(points, layout, height=4, row_pad=20, point_step=16)
    got = read_xyz(msg, dtype=np.float64)
    assert got.shape == (24, 3)
    np.testing.assert_array_equal(got, read_xyz_reference(msg))


def test_nan_and_inf_are_dropped_in_order(points):
    pts = points.copy()
    pts[2, 0] = np.nan
    pts[5, 2] = np.inf
    pts[7, 1] = -np.inf
    msg = build_cloud(pts, LAYOUTS["xyz_f64"], height=3)
    keep = np.ones(len(pts), bool)
    keep[[2, 5, 7]] = False
    np.testing.assert_array_equal(read_xyz(msg, dtype=np.float64), pts[keep])
    assert read_xyz(msg, keep_nonfinite=True).shape == (24, 3)


def test_nan_only_and_empty_clouds(points):
    nan = np.full_like(points, np.nan)
    assert read_xyz(build_cloud(nan, LAYOUTS["xyz_f32"])).shape == (0, 3)
    empty = SimpleNamespace(height=0, width=0, fields=[], is_bigendian=False, point_step=0, row_step=0, data=b"")
    assert read_xyz(empty).shape == (0, 3)


def test_missing_field_is_refused(points):
    msg = build_cloud(points, [("x", 0, "f"), ("y", 4, "f")], extra=[("intensity", 8, "f")])
    with pytest.raises(CloudError, match="no z field"):
        read_xyz(msg)


def test_unsupported_datatype_is_refused(points):
    msg = build_cloud(points, [("x", 0, "f"), ("y", 4, "f")], extra=[("z", 8, "h")])
    with pytest.raises(CloudError, match="only FLOAT32 and FLOAT64"):
        read_xyz(msg)


def test_inconsistent_sizes_are_refused(points):
    msg = build_cloud(points, LAYOUTS["xyz_f32"])
    short = SimpleNamespace(**{**vars(msg), "data": msg.data[:-1]})
    with pytest.raises(CloudError, match="bytes"):
        read_xyz(short)
    outside = SimpleNamespace(**{**vars(msg), "point_step": 8})
    with pytest.raises(CloudError, match="does not fit"):
        read_xyz(outside)
    with pytest.raises(CloudError, match="more than the limit"):
        read_xyz(msg, max_points=10)


def test_make_xyz_cloud_round_trip_with_ros_messages(points):
    pytest.importorskip("sensor_msgs.msg")
    msg = make_xyz_cloud(points)
    assert (msg.width, msg.height, msg.point_step, msg.row_step) == (24, 1, 12, 288)
    np.testing.assert_allclose(read_xyz(msg), points.astype(np.float32))
    np.testing.assert_array_equal(read_xyz_reference(msg), read_xyz(msg, dtype=np.float64))


def test_write_ply(tmp_path, points):
    path = write_ply(tmp_path / "g.ply", points.astype(np.float32))
    raw = path.read_bytes()
    head, body = raw.split(b"end_header\n", 1)
    assert b"element vertex 24" in head
    np.testing.assert_allclose(np.frombuffer(body, "<f4").reshape(-1, 3), points.astype(np.float32))


def test_native_precision_by_default(points):
    """float64 coordinates stay float64 (a map frame 1e5 m away keeps its millimetres); float32 stay float32."""
    far = points + [1.0e5, -2.0e5, 3.0]
    f64 = read_xyz(build_cloud(far, LAYOUTS["xyz_f64"]))
    assert f64.dtype == np.float64
    np.testing.assert_array_equal(f64, far)
    assert read_xyz(build_cloud(points, LAYOUTS["xyz_f32"])).dtype == np.float32
    assert read_xyz(build_cloud(points, LAYOUTS["mixed_scattered"])).dtype == np.float64


@pytest.mark.parametrize("bigendian", [False, True])
def test_organized_rgb_cloud_with_nans_matches_reference(bigendian):
    """The depth-camera layout (x, y, z, rgb; point_step 16) with 40% NaN, row-major order kept."""
    rng = np.random.default_rng(7)
    pts = rng.normal(size=(6 * 40, 3))
    pts[rng.random(len(pts)) < 0.4] = np.nan
    pts[3, 1] = np.inf  # one bad coordinate is enough to drop a point
    msg = build_cloud(pts, LAYOUTS["xyz_f32"], height=6, bigendian=bigendian, extra=[("rgb", 12, "f")])
    ref = read_xyz_reference(msg)
    keep = np.isfinite(ref).all(axis=1)
    got = read_xyz(msg)
    assert got.dtype == np.float32 and got.shape == (keep.sum(), 3)
    np.testing.assert_array_equal(got, ref[keep].astype(np.float32))
    np.testing.assert_array_equal(read_xyz(msg, keep_nonfinite=True, dtype=np.float64), ref)


def test_unevenly_spaced_fields_and_odd_point_step(points):
    layout = [("x", 1, "f"), ("y", 9, "f"), ("z", 13, "f")]  # unaligned, uneven: the per-field path
    msg = build_cloud(points, layout, point_step=19)
    np.testing.assert_array_equal(read_xyz(msg, dtype=np.float64), read_xyz_reference(msg))


def test_make_xyz_cloud_float64(points):
    pytest.importorskip("sensor_msgs.msg")
    far = points + 1.0e5
    msg = make_xyz_cloud(far, dtype=np.float64)
    assert (msg.point_step, msg.fields[0].datatype) == (24, FLOAT64)
    np.testing.assert_array_equal(read_xyz(msg), far)


def test_write_ply_double_for_float64(tmp_path, points):
    far = points + 1.0e5
    head, body = write_ply(tmp_path / "g.ply", far).read_bytes().split(b"end_header\n", 1)
    assert b"property double z" in head
    np.testing.assert_array_equal(np.frombuffer(body, "<f8").reshape(-1, 3), far)


def test_a_point_step_numpy_cannot_describe_is_refused_before_any_dtype_is_built():
    msg = SimpleNamespace(height=1, width=1, fields=[field(n, 4 * i, FLOAT32) for i, n in enumerate("xyz")],
                          is_bigendian=False, point_step=2**31, row_step=2**31, data=bytes(12))
    with pytest.raises(CloudError, match="the header needs 2147483648"):
        read_xyz(msg)


@pytest.mark.parametrize("layout, message", [
    ([("x", 0, "f"), ("y", 0, "f"), ("z", 0, "f")], "overlap"),
    ([("x", 0, "d"), ("y", 4, "f"), ("z", 12, "f")], "overlap"),
])
def test_overlapping_coordinate_fields_are_refused(points, layout, message):
    with pytest.raises(CloudError, match=message):
        read_xyz(build_cloud(points, layout, point_step=16))


@pytest.mark.parametrize("count", [0, 2, 3, 1000, 2**32 - 1])
def test_a_coordinate_field_with_count_other_than_one_is_refused(points, count):
    msg = build_cloud(points, LAYOUTS["xyz_f32"])
    msg.fields[1] = field("y", 4, FLOAT32, count=count)
    with pytest.raises(CloudError, match=f"count {count}"):
        read_xyz(msg)


def test_duplicate_field_names_are_refused_but_padding_fields_may_repeat(points):
    msg = build_cloud(points, LAYOUTS["xyz_f32"], point_step=20)
    padded = SimpleNamespace(**{**vars(msg), "fields": msg.fields + [field("_", 12, UINT8), field("_", 13, UINT8)]})
    np.testing.assert_allclose(read_xyz(padded), read_xyz(msg))
    twice = SimpleNamespace(**{**vars(msg), "fields": msg.fields + [field("x", 12, FLOAT32)]})
    with pytest.raises(CloudError, match="two fields named 'x'"):
        read_xyz(twice)
