"""Readers of the per-frame files a DeepSense scenario CSV points at (text, .mat, .npy, .ply, images)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import BinaryIO

import numpy as np


def read_vector_txt(path: Path) -> np.ndarray:
    """All numbers of a whitespace/comma separated text file, flattened."""
    text = path.read_text().replace(",", " ")
    values = np.array([float(token) for token in text.split()], dtype=np.float64)
    if values.size == 0:
        raise ValueError("no numbers in the file")
    return values


def read_latlon(path: Path) -> tuple[float, float]:
    values = read_vector_txt(path)
    if values.size < 2:
        raise ValueError(f"expected latitude and longitude, found {values.size} number(s)")
    lat, lon = float(values[0]), float(values[1])
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise ValueError(f"not a latitude/longitude: {lat}, {lon}")
    return lat, lon


def read_mat(path: Path) -> dict[str, np.ndarray]:
    import scipy.io

    try:
        data = scipy.io.loadmat(path)
    except NotImplementedError:
        raise ValueError("MATLAB v7.3 (HDF5) files are not supported; re-save with -v7") from None
    return {k: v for k, v in data.items() if not k.startswith("__")}


def read_radar_cube(path: Path) -> np.ndarray:
    """Complex radar cube ``[rx, samples, chirps]`` from .mat (key ``data``) or .npy."""
    if path.suffix.lower() == ".npy":
        cube = np.load(path, allow_pickle=False)
    else:
        arrays = read_mat(path)
        if "data" not in arrays:
            raise ValueError(f"no variable 'data' in the .mat file (found: {', '.join(arrays) or 'none'})")
        cube = arrays["data"]
    cube = np.asarray(cube)
    if cube.ndim != 3:
        raise ValueError(f"expected a 3-D cube [rx, samples, chirps], got shape {cube.shape}")
    return cube.astype(np.complex64)


def read_lidar_scr(path: Path, bins: int = 216) -> np.ndarray:
    """The preprocessed LiDAR scan (a ``bins``-vector in metres) from a .mat (or .npy/.txt).

    The published ``unit1_lidar_SCR`` files hold ``data`` of shape ``[216, 2]``;
    every reference loader takes column 0 (``loadmat(path)['data'][:, 0]`` in
    AZakeri94/DF-KD-for-LiDAR-aided-Beam-Tracking, utils/data_feed.py), as here.
    A plain 216-vector (or ``[1, 216]``) is read as it is.
    """
    if path.suffix.lower() == ".npy":
        candidates = {"array": np.load(path, allow_pickle=False)}
    elif path.suffix.lower() == ".txt":
        candidates = {"array": read_vector_txt(path)}
    else:
        candidates = read_mat(path)
    if "data" in candidates:
        candidates = {"data": candidates["data"]}
    fitting = [_scan_column(np.asarray(v), bins) for v in candidates.values()
               if isinstance(v, np.ndarray) and v.dtype.kind in "iuf"]
    found = [v for v in fitting if v is not None]
    if len(found) != 1:
        raise ValueError(f"expected one [{bins}] or [{bins}, k] array, found "
                         f"{', '.join(f'{k} {np.shape(v)}' for k, v in candidates.items()) or 'none'}")
    return found[0]


def _scan_column(value: np.ndarray, bins: int) -> np.ndarray | None:
    if value.size == bins:
        return value.astype(np.float64).ravel()
    if value.ndim == 2 and value.shape[0] == bins:
        return value[:, 0].astype(np.float64)   # [216, k]: column 0, as the reference loaders
    if value.ndim == 2 and value.shape[1] == bins:
        return value[0].astype(np.float64)
    return None


def read_lidar_2d(path: Path) -> np.ndarray:
    """A raw 2-D LiDAR scan ``[N, 2]`` (range in metres, angle) from a .mat (key ``data``) or .npy."""
    if path.suffix.lower() == ".npy":
        value = np.load(path, allow_pickle=False)
    else:
        arrays = read_mat(path)
        if "data" not in arrays:
            raise ValueError(f"no variable 'data' in the .mat file (found: {', '.join(arrays) or 'none'})")
        value = arrays["data"]
    value = np.asarray(value, dtype=np.float64)
    if value.ndim != 2 or value.shape[1] != 2:
        raise ValueError(f"expected a 2-D scan [N, 2] (range, angle), got shape {value.shape}")
    return value


def read_lidar_raw(path: Path) -> np.ndarray:
    """The ``unit1_lidar`` file: a 3-D cloud ``[N, 3]`` (.ply) or a 2-D scan ``[N, 2]`` (.mat/.npy)."""
    return read_ply_points(path) if path.suffix.lower() == ".ply" else read_lidar_2d(path)


_PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
              "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
              "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}


@dataclasses.dataclass
class _PlyElement:
    name: str
    count: int
    props: list[tuple[str, str]] = dataclasses.field(default_factory=list)   # (name, numpy type code)


def read_ply_points(path: Path) -> np.ndarray:
    """``[N, 3]`` x/y/z of the vertex element of a PLY file (ascii or binary, no list properties)."""
    with open(path, "rb") as handle:
        fmt, vertex = _read_ply_header(handle)
        names = [name for name, _ in vertex.props]
        if not {"x", "y", "z"} <= set(names):
            raise ValueError(f"vertex has no x/y/z properties (has {', '.join(names)})")
        count = vertex.count
        if fmt == "ascii":
            rows = [handle.readline() for _ in range(count)]
            values = np.array(b" ".join(rows).split(), dtype=np.float64)
            if values.size != count * len(names):
                raise ValueError(f"expected {count} vertices of {len(names)} values, file is short or ragged")
            table = values.reshape(count, len(names))
            return table[:, [names.index("x"), names.index("y"), names.index("z")]]
        if fmt in ("binary_little_endian", "binary_big_endian"):
            order = "<" if fmt == "binary_little_endian" else ">"
            dtype = np.dtype([(name, order + code) for name, code in vertex.props])
            data = np.frombuffer(handle.read(dtype.itemsize * count), dtype=dtype)
            if data.size != count:
                raise ValueError(f"expected {count} vertices, file is short")
            return np.stack([data["x"], data["y"], data["z"]], axis=1).astype(np.float64)
        raise ValueError(f"unknown PLY format {fmt!r}")


def _read_ply_header(handle: BinaryIO) -> tuple[str | None, _PlyElement]:
    """(format, the vertex element) from a PLY header; ``handle`` is left at the first data byte."""
    if handle.readline().strip() != b"ply":
        raise ValueError("not a PLY file (no 'ply' magic line)")
    fmt: str | None = None
    elements: list[_PlyElement] = []
    while True:
        line = handle.readline()
        if not line:
            raise ValueError("PLY header has no end_header")
        words = line.decode("ascii", "replace").split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "end_header":
            break
        if words[0] == "format":
            fmt = words[1]
        elif words[0] == "element":
            elements.append(_PlyElement(words[1], int(words[2])))
        elif words[0] == "property" and elements:
            if words[1] == "list":
                raise ValueError("list properties are not supported for point clouds")
            if words[1] not in _PLY_TYPES:
                raise ValueError(f"unknown PLY property type {words[1]!r}")
            elements[-1].props.append((words[2], _PLY_TYPES[words[1]]))
    if not elements or elements[0].name != "vertex":
        raise ValueError("the first PLY element must be 'vertex'")
    return fmt, elements[0]


def read_image(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        img.load()
        return np.asarray(img.convert("L") if img.mode not in ("L", "RGB") else img)

