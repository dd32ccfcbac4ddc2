"""sensor_msgs/PointCloud2 <-> numpy, vectorized, with no dependency beyond numpy.

Reading works on any object with the PointCloud2 attributes (``height``, ``width``, ``fields``,
``is_bigendian``, ``point_step``, ``row_step``, ``data``), so the converter is testable without ROS.
It handles any field order, float32 or float64 x/y/z, either endianness, padding inside a point
(``point_step`` larger than the fields) and at the end of each row (``row_step`` larger than
``width * point_step``), organized (``height > 1``) and unorganized clouds. Points with a NaN or infinite
coordinate are dropped.
"""

from __future__ import annotations

import array
from pathlib import Path

import numpy as np

# sensor_msgs/PointField datatype constants.
INT8, UINT8, INT16, UINT16, INT32, UINT32, FLOAT32, FLOAT64 = range(1, 9)
DATATYPES = {
    INT8: ("i1", 1),
    UINT8: ("u1", 1),
    INT16: ("i2", 2),
    UINT16: ("u2", 2),
    INT32: ("i4", 4),
    UINT32: ("u4", 4),
    FLOAT32: ("f4", 4),
    FLOAT64: ("f8", 8),
}
XYZ = ("x", "y", "z")


class CloudError(ValueError):
    """A PointCloud2 message that cannot be read as x/y/z points (the message says why)."""

    category = "unreadable cloud"  # /diagnostics' refusal counts


class CloudTooLarge(CloudError):
    category = "too many points"


def cloud_size(msg) -> int:
    """Number of points the message declares (``width * height``)."""
    return int(msg.width) * int(msg.height)


MAX_POINT_STEP = 2**31 - 1
"""The largest point_step numpy can describe (a record's size is a C int)."""


def _fields_by_name(msg) -> dict:
    """The message's fields by name; a name given twice is refused (which one would be meant?), except the empty
    name and "_", which drivers use for padding."""
    by_name = {}
    for field in msg.fields:
        if field.name in by_name and field.name not in ("", "_"):
            raise CloudError(f"the cloud has two fields named {field.name!r}")
        by_name[field.name] = field
    return by_name


def xyz_dtype(msg) -> np.dtype:
    """A numpy structured dtype reading the x, y, z fields of one point of ``msg``.

    Raises:
        CloudError: a missing or duplicated coordinate field, an unsupported datatype (x/y/z must be FLOAT32 or
            FLOAT64), a coordinate field whose count is not 1, coordinate fields that overlap, or a field that does
            not fit inside ``point_step``.
    """
    by_name = _fields_by_name(msg)
    missing = [name for name in XYZ if name not in by_name]
    if missing:
        present = [f.name for f in msg.fields]
        raise CloudError(f"the cloud has no {'/'.join(missing)} field (fields: {present or 'none'})")
    order = ">" if msg.is_bigendian else "<"
    names, formats, offsets, spans = [], [], [], []
    point_step = int(msg.point_step)
    if not 0 < point_step <= MAX_POINT_STEP:
        raise CloudError(f"point_step is {point_step}; it must be in 1..{MAX_POINT_STEP}")
    for name in XYZ:
        field = by_name[name]
        if field.datatype not in (FLOAT32, FLOAT64):
            kind = DATATYPES.get(field.datatype, (f"unknown datatype {field.datatype}",))[0]
            raise CloudError(f"field {name!r} has datatype {kind}; only FLOAT32 and FLOAT64 coordinates are supported")
        if field.count != 1:
            raise CloudError(f"field {name!r} has count {field.count}; a coordinate field has count 1")
        code, size = DATATYPES[field.datatype]
        if field.offset < 0 or field.offset + size > point_step:
            raise CloudError(f"field {name!r} at offset {field.offset} (+{size} bytes) does not fit in point_step {point_step}")
        for other, (start, end) in zip(names, spans):
            if field.offset < end and start < field.offset + size:
                raise CloudError(f"fields {other!r} and {name!r} overlap (offsets {start} and {field.offset})")
        names.append(name)
        formats.append(order + code)
        offsets.append(int(field.offset))
        spans.append((int(field.offset), int(field.offset) + size))
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": point_step})


def coordinate_dtype(msg) -> np.dtype:
    """float64 if any of x/y/z is FLOAT64, else float32: the precision the cloud carries."""
    by_name = {field.name: field for field in msg.fields}
    return np.dtype(np.float64 if any(getattr(by_name.get(n), "datatype", None) == FLOAT64 for n in XYZ) else np.float32)


def read_xyz(msg, dtype=None, max_points: int | None = None, keep_nonfinite: bool = False) -> np.ndarray:
    """The finite x/y/z points of a PointCloud2 as an (N, 3) array.

    Args:
        msg: a sensor_msgs/PointCloud2 (or any object with its attributes).
        dtype: output dtype; None: the cloud's own precision (:func:`coordinate_dtype`), so float64
            coordinates (map or UTM frames, far from the origin) are never cut to float32.
        max_points: refuse clouds declaring more points than this (before touching the data).
        keep_nonfinite: keep points with NaN/inf coordinates (organized clouds, in row-major order).

    The result may be a view with a row stride (of a fresh array, never of the message's buffer).

    Raises:
        CloudError: see :func:`xyz_dtype`, plus inconsistent sizes (``point_step``, ``row_step`` or a
            data buffer too short for ``width * height`` points) and clouds over ``max_points``.
    """
    height, width = int(msg.height), int(msg.width)
    count = height * width
    if max_points is not None and count > max_points:
        raise CloudTooLarge(f"the cloud has {count} points, more than the limit of {max_points}")
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    out_dtype = np.dtype(dtype) if dtype is not None else coordinate_dtype(msg)
    if count == 0:
        return np.zeros((0, 3), dtype=out_dtype)
    if point_step <= 0:
        raise CloudError(f"point_step is {point_step}")
    # Sizes first, in Python integers: a header can declare more than numpy can describe.
    row_bytes = width * point_step
    if height > 1 and row_step < row_bytes:
        raise CloudError(f"row_step {row_step} is smaller than width * point_step = {row_bytes}")
    stride = row_step if height > 1 else row_bytes
    data = np.frombuffer(msg.data, dtype=np.uint8)
    needed = (height - 1) * stride + row_bytes
    if data.size < needed:
        raise CloudError(f"the data holds {data.size} bytes, the header needs {needed} ({height} x {width} points)")
    record = xyz_dtype(msg)
    if height > 1 and stride != row_bytes:
        # Padding at the end of each row: view each row separately, then join them.
        rows = np.lib.stride_tricks.as_strided(data, shape=(height, row_bytes), strides=(stride, 1))
        data = np.ascontiguousarray(rows).reshape(-1)
    else:
        data = data[:needed]
    # Whole points as opaque records: selecting records is a plain copy of point_step bytes each, much cheaper
    # than selecting rows of an (N, 3) array or of a structured array.
    records = data.view(np.dtype((np.void, point_step)))
    if keep_nonfinite:
        selected = records.copy()
    else:
        fields = records.view(record)
        # One pass per coordinate over its own strided view: several times faster than isfinite(...).all(axis=1)
        # on an (N, 3) array, whose reduction runs along a length-3 axis.
        finite = np.isfinite(fields["x"])
        finite &= np.isfinite(fields["y"])
        finite &= np.isfinite(fields["z"])
        selected = records[finite]
    return _coordinates(selected, record, out_dtype)


def _coordinates(records: np.ndarray, record: np.dtype, out_dtype: np.dtype) -> np.ndarray:
    """(M, 3) x/y/z of opaque point records: a strided view when x, y, z are evenly spaced fields of one type."""
    formats = {record.fields[n][0] for n in XYZ}
    offsets = [record.fields[n][1] for n in XYZ]
    if len(formats) == 1:
        item = formats.pop()
        size, step = item.itemsize, offsets[1] - offsets[0]
        if (record.itemsize % size == 0 and offsets[0] % size == 0 and step > 0 and step % size == 0
                and offsets[2] - offsets[1] == step):
            table = records.view(item).reshape(len(records), record.itemsize // size)
            first, every = offsets[0] // size, step // size
            view = table[:, first:first + 2 * every + 1:every]
            return view.astype(out_dtype, copy=False) if item.isnative else view.astype(out_dtype)
    fields = records.view(record)
    out = np.empty((len(records), 3), dtype=out_dtype)
    for axis, name in enumerate(XYZ):
        out[:, axis] = fields[name]
    return out


def xyz_fields(point_field_cls, dtype=np.float32):
    """PointField descriptions of packed x, y, z of ``dtype`` (float32 or float64)."""
    datatype, size = (FLOAT32, 4) if np.dtype(dtype) == np.float32 else (FLOAT64, 8)
    return [point_field_cls(name=n, offset=i * size, datatype=datatype, count=1) for i, n in enumerate(XYZ)]


def make_xyz_cloud(points: np.ndarray, header=None, msg_cls=None, field_cls=None, dtype=np.float32):
    """A dense, unorganized little-endian PointCloud2 with x, y, z of ``dtype`` (float32: point_step 12,
    float64: 24).

    ``msg_cls``/``field_cls`` default to the sensor_msgs classes (imported lazily).
    """
    if msg_cls is None or field_cls is None:
        from sensor_msgs.msg import PointCloud2, PointField

        msg_cls, field_cls = msg_cls or PointCloud2, field_cls or PointField
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"x/y/z must be float32 or float64, got {dtype}")
    points = np.ascontiguousarray(np.asarray(points, dtype=dtype.newbyteorder("<")).reshape(-1, 3))
    msg = msg_cls()
    if header is not None:
        msg.header = header
    msg.height = 1
    msg.width = len(points)
    msg.fields = xyz_fields(field_cls, dtype)
    msg.is_bigendian = False
    msg.point_step = 3 * dtype.itemsize
    msg.row_step = msg.point_step * len(points)
    # An array.array('B') is taken as is; bytes would be checked one by one by the generated setter.
    msg.data = array.array("B", points.tobytes())
    msg.is_dense = True
    return msg


def write_ply(path: str | Path, points: np.ndarray) -> Path:
    """Write points as a binary little-endian PLY: float32 x, y, z vertices, or double for float64 points (so
    coordinates far from the origin keep their precision)."""
    path = Path(path)
    wide = np.asarray(points).dtype == np.float64
    points = np.ascontiguousarray(np.asarray(points, dtype="<f8" if wide else "<f4").reshape(-1, 3))
    kind = "double" if wide else "float"
    header = (
        "ply\nformat binary_little_endian 1.0\ncomment kp_perception goal cloud\n"
        f"element vertex {len(points)}\nproperty {kind} x\nproperty {kind} y\nproperty {kind} z\nend_header\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(points.tobytes())
    return path
