"""Facts about a data file for `rnncli info`: shape, dtype, size and per-feature statistics.

.npy files and .npz members are read block by block from their headers on (never whole, so a file
larger than memory is fine); CSV text is parsed whole, as `rnncli run` would. Statistics are per
feature (the last axis): min, max, mean, standard deviation over the finite values, and NaN/Inf
counts. Nothing here prints.
"""

from __future__ import annotations

import math
import os
import zipfile
from typing import Any, BinaryIO

import numpy as np

from .errors import InputError
from .io import (
    PathOrFile,
    check_npy_body,
    check_zip_method,
    format_from_name,
    iter_npy_rows,
    load_array,
    open_input,
    read_npy_header,
)

BLOCK_BYTES = 8 << 20
FEATURES_SHOWN = 64  # per-feature statistics beyond this many are summed up, not listed


class Moments:
    """Count, mean, M2, min, max, NaN and Inf per column, merged block by block (Chan et al.)."""

    def __init__(self, width: int) -> None:
        self.count = np.zeros(width, np.int64)
        self.mean = np.zeros(width)
        self.m2 = np.zeros(width)
        self.low = np.full(width, np.inf)
        self.high = np.full(width, -np.inf)
        self.nan = np.zeros(width, np.int64)
        self.inf = np.zeros(width, np.int64)

    def add(self, block: np.ndarray, columns: slice | None = None) -> None:
        """Add a (rows, width) block, or a (rows, k) block of the columns `columns`."""
        columns = slice(None) if columns is None else columns
        values = np.asarray(block, dtype=np.float64)
        finite = np.isfinite(values)
        nan = np.isnan(values).sum(axis=0)
        self.nan[columns] += nan
        self.inf[columns] += (~finite).sum(axis=0) - nan
        if finite.all():
            count = np.full(values.shape[1], values.shape[0])
            mean = values.mean(axis=0)
            m2 = ((values - mean) ** 2).sum(axis=0)
            low, high = values.min(axis=0), values.max(axis=0)
        else:
            count = finite.sum(axis=0)
            mean = np.where(finite, values, 0).sum(axis=0) / np.maximum(count, 1)
            m2 = (np.where(finite, values - mean, 0) ** 2).sum(axis=0)
            low = np.where(finite, values, np.inf).min(axis=0)
            high = np.where(finite, values, -np.inf).max(axis=0)
        self._merge(columns, count, mean, m2)
        self.low[columns] = np.minimum(self.low[columns], low)
        self.high[columns] = np.maximum(self.high[columns], high)

    def _merge(self, columns: slice, count: np.ndarray, mean: np.ndarray, m2: np.ndarray) -> None:
        n_a = self.count[columns]
        total = n_a + count
        safe = np.maximum(total, 1)
        delta = mean - self.mean[columns]
        self.mean[columns] = self.mean[columns] + delta * count / safe
        self.m2[columns] = self.m2[columns] + m2 + delta**2 * n_a * count / safe
        self.count[columns] = total

    def column(self, i: int) -> dict[str, Any]:
        n = int(self.count[i])
        return {
            "count": n,
            "min": float(self.low[i]) if n else None,
            "max": float(self.high[i]) if n else None,
            "mean": float(self.mean[i]) if n else None,
            "std": math.sqrt(self.m2[i] / n) if n else None,
            "nan": int(self.nan[i]),
            "inf": int(self.inf[i]),
        }

    def overall(self) -> dict[str, Any]:
        total = Moments(1)
        for i in range(len(self.count)):
            total._merge(slice(None), self.count[i : i + 1], self.mean[i : i + 1], self.m2[i : i + 1])
        result = total.column(0)
        n = result["count"]
        result.update(
            min=float(self.low.min()) if n else None,
            max=float(self.high.max()) if n else None,
            nan=int(self.nan.sum()),
            inf=int(self.inf.sum()),
        )
        return result


def describe_data(
    source: PathOrFile, fmt: str | None = None, *, key: str | None = None, name: str | None = None
) -> dict[str, Any]:
    """Shape, dtype, bytes and statistics of every array in a data file (or the `key` one of an .npz)."""
    if not isinstance(source, (str, os.PathLike)):
        loaded = load_array(source, fmt, key=key, name=name)
        return _document(loaded.source, loaded.fmt, None, [_in_memory(loaded.array, loaded.key)])
    path = os.fspath(source)
    name = name or path
    fmt = fmt or format_from_name(path)
    size = os.path.getsize(path) if os.path.isfile(path) else None
    if fmt == "npy" and os.path.isfile(path):
        if key is not None:
            raise InputError(f"{name}: --key {key} only applies to .npz files")
        with open_input(path) as fp:
            return _document(name, "npy", size, [_streamed(fp, name, None)])
    if fmt == "npz" and os.path.isfile(path):
        with open_input(path) as fp:
            return _document(name, "npz", size, _npz_members(fp, name, key))
    loaded = load_array(path, fmt, key=key, name=name)
    return _document(name, loaded.fmt, size, [_in_memory(loaded.array, loaded.key)])


def _document(source: str, fmt: str, size: int | None, arrays: list[dict[str, Any]]) -> dict[str, Any]:
    return {"source": source, "format": fmt, "file_bytes": size, "arrays": arrays}


def _npz_members(fp: BinaryIO, name: str, key: str | None) -> list[dict[str, Any]]:
    try:
        archive = zipfile.ZipFile(fp)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise InputError(f"{name}: not a valid .npz (zip) archive ({exc}); re-save it with numpy.savez") from None
    with archive:
        members = {info.filename[:-4]: info for info in archive.infolist() if info.filename.endswith(".npy")}
        if not members:
            raise InputError(f"{name}: the .npz archive holds no arrays")
        if key is not None and key not in members:
            raise InputError(f"{name}: no array '{key}' in the archive; it holds: {', '.join(sorted(members)[:10])}")
        described = []
        for member, info in members.items():
            if key is not None and member != key:
                continue
            label = f"{name}[{member}]"
            check_zip_method(info, label, InputError, "re-save it with numpy.savez")
            try:
                with archive.open(info) as stream:
                    described.append(_streamed(stream, label, member, size=info.file_size))
            except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
                raise InputError(f"{label}: corrupt archive member ({exc}); re-create the file") from None
        return described


def _shape_facts(shape: tuple[int, ...], dtype: np.dtype, fortran: bool, key: str | None) -> dict[str, Any]:
    reading = {
        1: f"a series of {shape[0]:,} timesteps (1 feature)" if len(shape) == 1 else "",
        2: f"{shape[0]:,} timesteps × {shape[-1]:,} features" if len(shape) == 2 else "",
        3: f"{shape[0]:,} sequences × {shape[1]:,} timesteps × {shape[2]:,} features (or time-major)"
        if len(shape) == 3
        else "",
    }.get(len(shape), f"{len(shape)}-D: rnncli runs 1-D to 3-D arrays")
    return {
        "key": key,
        "shape": list(shape),
        "dtype": str(dtype),
        "bytes": math.prod(shape) * dtype.itemsize,
        "order": "F" if fortran else "C",
        "as_input": reading,
    }


def _streamed(fp: BinaryIO, name: str, key: str | None, size: int | None = None) -> dict[str, Any]:
    """Statistics of a .npy stream read in blocks of at most BLOCK_BYTES."""
    shape, fortran, dtype = read_npy_header(fp, name)
    check_npy_body(fp, name, shape, dtype, size)
    facts = _shape_facts(shape, dtype, fortran, key)
    width = shape[-1] if len(shape) >= 2 else 1
    rows = math.prod(shape) // width if width else 0
    moments = Moments(width)
    if rows and width:
        if not fortran or len(shape) < 2:
            per_block = max(1, BLOCK_BYTES // (width * dtype.itemsize))
            for block in iter_npy_rows(fp, name, (rows, width), dtype, per_block):
                moments.add(block)
        else:  # Fortran order: each feature's values are contiguous
            per_block = max(1, BLOCK_BYTES // dtype.itemsize)
            for column in range(width):
                for block in iter_npy_rows(fp, name, (rows, 1), dtype, per_block):
                    moments.add(block, slice(column, column + 1))
    facts["stats"] = _stats(moments)
    return facts


def _in_memory(array: np.ndarray, key: str | None) -> dict[str, Any]:
    facts = _shape_facts(array.shape, array.dtype, False, key)
    width = array.shape[-1] if array.ndim >= 2 else 1
    moments = Moments(width)
    if array.size:
        flat = array.reshape(-1, width)
        rows = max(1, BLOCK_BYTES // (width * 8))
        for start in range(0, flat.shape[0], rows):
            moments.add(flat[start : start + rows])
    facts["stats"] = _stats(moments)
    return facts


def _stats(moments: Moments) -> dict[str, Any]:
    width = len(moments.count)
    return {
        **moments.overall(),
        "features": [moments.column(i) for i in range(min(width, FEATURES_SHOWN))],
        "features_left_out": max(0, width - FEATURES_SHOWN),
    }
