"""Reading and writing arrays: .npy, .npz, CSV/TSV text, stdin; format sniffing; atomic writes.

Readers take paths or binary file objects and never unpickle. Every problem is raised as an
:class:`~rnncli.errors.InputError` naming the source, the position and the fix.
"""

from __future__ import annotations

import errno
import functools
import importlib
import io
import itertools
import math
import os
import re
import stat
import struct
import sys
import tokenize
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from types import SimpleNamespace
from typing import TYPE_CHECKING, BinaryIO, NamedTuple, Union

import numpy as np

if TYPE_CHECKING:  # zipfile is imported where used: quick start-up for plain .npy runs
    import zipfile

from .errors import InputError, OutputError, RnnCliError, UsageError, byte_size, printable

PathOrFile = Union[str, "os.PathLike[str]", BinaryIO]

FORMATS = ("npy", "npz", "csv")
EXTENSIONS = {".npy": "npy", ".npz": "npz", ".csv": "csv", ".tsv": "csv", ".txt": "csv"}
NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"
NUMERIC_KINDS = "biuf"
MAX_DIMS = 32  # numpy 1.x's limit; rnncli itself uses 1-D to 3-D arrays
TEXT_EXPANSION = 5  # parsing text holds the bytes, the decoded lines, the joined body and the floats at once
# numpy parses .npy headers with ast and tokenize: hostile text raises more than ValueError
HEADER_ERRORS = (ValueError, EOFError, UnicodeDecodeError, SyntaxError, TypeError, OverflowError, tokenize.TokenError)
NPY_HEADER_LIMIT = 10_000  # numpy's own bound: it refuses longer headers as unsafe to parse
NPY_HEADER_EXAMPLE = "{'descr': '<f4', 'fortran_order': False, 'shape': (500, 3)}"
NOT_LITERAL = ("malformed node or string", "Cannot parse header")  # ast.literal_eval's and numpy's words


class LoadedArray(NamedTuple):
    """An array read from `source` (a path or "<stdin>") in format `fmt` ("npy", "npz", "csv")."""

    array: np.ndarray
    fmt: str
    source: str
    key: str | None = None


def memory_budget() -> int:
    """Bytes this process may reasonably allocate: MemAvailable, capped by a container's cgroup memory
    limit (what is left of it), or 8 GiB where neither is known."""
    available = None
    with suppress(OSError, ValueError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
                break
    limit = _cgroup_room()
    candidates = [value for value in (available, limit) if value is not None]
    return min(candidates) if candidates else 8 << 30


CGROUP_FILES = (  # (limit, usage): cgroup v2, then v1
    ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
    ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
)


def _cgroup_room() -> int | None:
    """Memory left under this container's cgroup limit, if one is set."""
    for limit_path, usage_path in CGROUP_FILES:
        with suppress(OSError, ValueError):
            with open(limit_path) as f:
                text = f.read().strip()
            if text == "max" or int(text) >= 1 << 60:  # no limit (v1 writes a huge number)
                return None
            used = 0
            with suppress(OSError, ValueError), open(usage_path) as f:
                used = int(f.read().strip())
            return max(int(text) - used, 0)
    return None


def format_from_name(name: str) -> str | None:
    """The format an extension implies ("npy", "npz", "csv"), or None."""
    return EXTENSIONS.get(os.path.splitext(name)[1].lower())


def sniff_format(head: bytes) -> str:
    """Guess a stream's format from its first bytes: npy/npz by magic, else text."""
    if head.startswith(NPY_MAGIC):
        return "npy"
    if head.startswith(ZIP_MAGIC):
        return "npz"
    return "csv"


def load_array(
    source: PathOrFile, fmt: str | None = None, *, key: str | None = None, name: str | None = None
) -> LoadedArray:
    """Read one numeric array from a path or a binary file object.

    `fmt` is "npy", "npz" or "csv" (CSV/TSV/whitespace text); by default it comes from the
    file's extension, or for file objects from its first bytes. `key` picks an array in an
    `.npz`. Non-seekable streams (stdin) are read into memory first.
    """
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        name = name or path
        with open_input(path) as fp:
            fmt = fmt or format_from_name(path)
            if fmt is None:
                raise InputError(
                    f"{name}: unknown extension '{os.path.splitext(path)[1]}'; "
                    "use .npy, .npz, .csv, .tsv or .txt, or say the format with --from npy|npz|csv"
                )
            return _load(fp if fp.seekable() else _in_memory(fp, name), fmt, key, name)
    fp = source
    name = name or str(getattr(fp, "name", "<stream>"))
    if not fp.seekable():
        fp = _in_memory(fp, name)
    if fmt is None:
        head = fp.read(len(NPY_MAGIC))
        fp.seek(-len(head), io.SEEK_CUR)
        if not head:
            raise InputError(f"{name}: no data (the input is empty); pipe a .npy file or CSV rows")
        fmt = sniff_format(head)
    return _load(fp, fmt, key, name)


def open_input(path: str) -> BinaryIO:
    """Open a data file for reading, with rnncli's messages for missing files and directories."""
    if os.path.isdir(path):
        raise InputError(f"{path}: is a directory; give a .npy, .npz or CSV file (or - for stdin)")
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file; check the path (or use - for stdin)") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot open ({exc.strerror})") from None


def _in_memory(fp: BinaryIO, name: str) -> BinaryIO:
    """A non-seekable stream (stdin, a pipe, `<(…)`) read into memory, but no more than the memory budget."""
    limit, size = memory_budget(), 1 << 20
    buffer = io.BytesIO()
    while True:
        chunk = fp.read(size)
        buffer.write(chunk)
        if buffer.tell() > limit:
            raise InputError(
                f"{name}: the stream holds more than the {limit / 2**30:.1f} GiB of memory available; "
                "save it to a .npy file and pass its path (long .npy files are read block by block)"
            )
        # A buffered reader returns less than asked for only at the end: asking again would wait for
        # a second Ctrl-D on a terminal.
        if not chunk or (len(chunk) < size and isinstance(fp, io.BufferedReader)):
            break
    buffer.seek(0)
    return buffer


def _load(fp: BinaryIO, fmt: str, key: str | None, name: str) -> LoadedArray:
    if fmt not in FORMATS:
        raise UsageError(f"unknown input format '{fmt}'; choose one of {', '.join(FORMATS)}")
    if key is not None and fmt != "npz":
        raise UsageError(f"--key {key} only applies to .npz input, but {name} is {fmt}")
    if fmt == "npy":
        return LoadedArray(read_npy(fp, name), fmt, name)
    if fmt == "npz":
        array, key = _read_npz(fp, name, key)
        return LoadedArray(array, fmt, name, key)
    remaining = _remaining_bytes(fp)
    if remaining is not None and remaining * TEXT_EXPANSION > memory_budget():
        raise InputError(
            f"{name}: {remaining / 2**20:,.0f} MiB of text needs about {remaining * TEXT_EXPANSION / 2**30:.1f} GiB "
            f"to parse, more than the {memory_budget() / 2**30:.1f} GiB available; split the file or convert it to .npy"
        )
    return LoadedArray(_read_text(fp.read(), name), fmt, name)


def _remaining_bytes(fp: BinaryIO) -> int | None:
    try:
        here = fp.tell()
        end = fp.seek(0, io.SEEK_END)
        fp.seek(here)
        return end - here
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return None


def read_npy_header(fp: BinaryIO, name: str, allow_text: bool = False) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Parse and validate a .npy header; returns (shape, fortran_order, dtype), fp at the data."""
    text = b""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy warns about Python 2 headers: noise on stderr, not our message
            version = np.lib.format.read_magic(fp)
            # The header is read here, not by numpy, so that a message can show it (and a huge one is never read)
            length_field = _read_exactly(fp, 2 if version == (1, 0) else 4, "array header length")
            length = int.from_bytes(length_field, "little")
            if length > NPY_HEADER_LIMIT:
                raise _bad_header(name, f"{length:,} bytes long, more than the {NPY_HEADER_LIMIT:,} numpy reads")
            text = _read_exactly(fp, length, "array header")
            parse = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = parse(io.BytesIO(length_field + text))
    except HEADER_ERRORS as exc:
        raise _bad_header(name, _header_reason(exc, text)) from None
    if not (allow_text and dtype.kind == "U"):
        check_dtype(dtype, name)
    shape = tuple(int(n) for n in shape)
    if any(n < 0 for n in shape):
        raise _bad_header(name, f"negative dimension in shape {shape}")
    if len(shape) > MAX_DIMS:
        raise _bad_header(name, f"{len(shape)} dimensions, more than numpy's {MAX_DIMS}")
    if math.prod(max(n, 1) for n in shape) * max(dtype.itemsize, 1) > sys.maxsize:
        raise _bad_header(name, f"shape {shape} is larger than any array can be")
    return shape, bool(fortran), dtype


def _read_exactly(fp: BinaryIO, size: int, what: str) -> bytes:
    data = fp.read(size)
    if len(data) < size:
        raise EOFError(f"EOF: reading {what}, expected {size} bytes got {len(data)}")
    return data


def _header_reason(exc: BaseException, text: bytes) -> str:
    """Why a header did not parse, in words: numpy's own reason, or for text that is not a literal (where
    Python's message names AST objects: "<ast.BinOp object at 0x…>") the text itself and a valid example."""
    reason = _reason(exc)
    if isinstance(exc, (SyntaxError, tokenize.TokenError)) or reason.startswith(NOT_LITERAL):
        found = printable(text.decode("latin1").strip(), 80)
        return f"{found} is not a dict of plain values like {NPY_HEADER_EXAMPLE}"
    return reason


def _bad_header(name: str, reason: str) -> InputError:
    return InputError(f"{name}: not a valid .npy file (header: {printable(reason, 200)}); re-save it with numpy.save")


def check_dtype(dtype: np.dtype, name: str) -> None:
    """Refuse anything but plain booleans, integers and floats (no objects, strings, complex)."""
    if dtype.hasobject:
        raise InputError(
            f"{name}: holds Python objects (a pickled array), which rnncli never loads; save a numeric array instead"
        )
    if dtype.kind not in NUMERIC_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise InputError(
            f"{name}: dtype {dtype} is not a real number type; "
            "rnncli reads integer and float arrays (convert complex/string data first)"
        )


def read_npy(fp: BinaryIO, name: str, size: int | None = None, allow_text: bool = False) -> np.ndarray:
    """Read a .npy array without pickle, checking the header's promise against the data present.

    `size` is the stream's total size if the caller knows it (zip members); `allow_text`
    admits unicode-string arrays (metadata entries).
    """
    shape, fortran, dtype = read_npy_header(fp, name, allow_text)
    nbytes = check_npy_body(fp, name, shape, dtype, size)
    if nbytes > memory_budget():
        raise InputError(
            f"{name}: array of shape {shape} needs {nbytes / 2**30:.1f} GiB, more than the "
            "memory available; split the file or use a machine with more memory"
        )
    flat = np.empty(math.prod(shape), dtype=dtype)
    _fill(fp, flat, name, shape)
    return flat.reshape(shape, order="F" if fortran else "C")


def check_npy_body(fp: BinaryIO, name: str, shape: tuple[int, ...], dtype: np.dtype, size: int | None = None) -> int:
    """The body's size in bytes; refuses a header that promises more data than the stream holds."""
    count = 1
    for n in shape:
        count *= n
    nbytes = count * dtype.itemsize
    remaining = _remaining_bytes(fp) if size is None else size - fp.tell()
    if remaining is not None and remaining < nbytes:
        raise InputError(
            f"{name}: truncated .npy: the header promises shape {shape} {dtype} ({nbytes:,} bytes) "
            f"but only {remaining:,} bytes follow; the file was cut short, re-create it"
        )
    return nbytes


def _fill(fp: BinaryIO, array: np.ndarray, name: str, shape: tuple[int, ...]) -> None:
    view = memoryview(array.reshape(-1).view(np.uint8))
    filled = 0
    while filled < len(view):
        got = fp.readinto(view[filled:])
        if not got:
            raise InputError(
                f"{name}: truncated .npy: data for shape {shape} ended after {filled:,} of {len(view):,} bytes "
                "in this block; the file was cut short, re-create it"
            )
        filled += got


def iter_npy_rows(fp: BinaryIO, name: str, shape: tuple[int, int], dtype: np.dtype, rows: int) -> Iterator[np.ndarray]:
    """Blocks of up to `rows` rows of a C-order 2-D .npy body (fp just past the header).

    One buffer is reused: a block is valid until the next one is requested.
    """
    total, width = shape
    buffer = np.empty((max(1, min(rows, total)), width), dtype)
    for start in range(0, total, rows):
        block = buffer[: min(rows, total - start)]
        _fill(fp, block, name, shape)
        yield block


class NpyWriter:
    """Writes a 2-D .npy progressively: a fixed 128-byte header, then blocks of rows.

    When the row count is not known in advance the header is patched on `close` (needs a
    seekable file, as `atomic_output` gives).
    """

    HEADER_BYTES = 128

    def __init__(self, fp: BinaryIO, dtype: np.dtype, width: int, rows: int | None = None) -> None:
        self._fp, self._dtype, self._width, self._rows = fp, np.dtype(dtype), width, rows
        self._written = 0
        fp.write(self._header(rows if rows is not None else 0))

    def _header(self, rows: int) -> bytes:
        descr = np.lib.format.dtype_to_descr(self._dtype)
        body = f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': ({rows}, {self._width}), }}".encode("latin1")
        padding = self.HEADER_BYTES - len(NPY_MAGIC) - 4 - len(body) - 1
        size = (self.HEADER_BYTES - 10).to_bytes(2, "little")
        return NPY_MAGIC + bytes([1, 0]) + size + body + b" " * padding + b"\n"

    def write(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=self._dtype)
        self._fp.write(memoryview(block.reshape(-1).view(np.uint8)))
        self._written += block.shape[0]

    def close(self) -> None:
        if self._rows is None:
            self._fp.seek(0)
            self._fp.write(self._header(self._written))
            self._fp.seek(0, io.SEEK_END)
        elif self._written != self._rows:
            raise OutputError(f"wrote {self._written} rows but the .npy header promised {self._rows}")


@contextmanager
def npy_in_place(fp: BinaryIO, shape: tuple[int, ...], dtype: np.dtype) -> Iterator[np.ndarray | None]:
    """An .npy of `shape` and `dtype` laid out in `fp`, its data yielded as a writable array mapped
    onto the file, so that what is computed into the array is the file: no second buffer in memory
    and no copy (the header is numpy's own, so the file is byte for byte what `write_array` writes).

    The space is reserved first, so a full disk is an OSError here, never a crash on a page write;
    the mapping is flushed when the block succeeds. Yields None where this cannot be done: `fp` is
    not an empty regular file open for reading and writing, there is no data, or the platform or
    filesystem cannot reserve space up front or map the file.
    """
    import mmap

    dtype = np.dtype(dtype)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)}
    )
    offset, count = len(header.getvalue()), math.prod(shape)
    size = offset + count * dtype.itemsize
    mapped = None
    try:
        import fcntl

        fd = fp.fileno()
        status = os.fstat(fd)
        usable = stat.S_ISREG(status.st_mode) and status.st_size == 0 and fp.tell() == 0
        usable = usable and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDWR
    except (AttributeError, ImportError, OSError, ValueError):  # not a real file, or not POSIX
        usable = False
    if usable and count and size <= sys.maxsize and hasattr(os, "posix_fallocate"):
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENODEV):
                raise  # a full disk or quota: the caller's write error
        else:
            try:
                mapped = mmap.mmap(fd, size)
            except (OSError, ValueError, OverflowError):  # a filesystem without mmap, no address space
                os.ftruncate(fd, 0)
    if mapped is None:
        yield None
        return
    mapped[:offset] = header.getvalue()
    yield np.frombuffer(mapped, dtype, count, offset).reshape(shape)
    mapped.flush()
    fp.seek(0, io.SEEK_END)


@functools.cache
def archive_errors() -> tuple[type[Exception], ...]:
    """What zipfile and its decompressors raise on corrupt archives (lzma may be missing from a Python build)."""
    import zipfile

    errors: list[type[Exception]] = [zipfile.BadZipFile, OSError, EOFError, ValueError, struct.error]
    errors += [NotImplementedError, RuntimeError]  # unknown compression or zip version; encryption
    for module, attribute in (("zlib", "error"), ("lzma", "LZMAError")):
        with suppress(ImportError):
            errors.append(getattr(importlib.import_module(module), attribute))
    return tuple(errors)


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return printable(text, 120)


def _open_zip(fp: BinaryIO, name: str) -> zipfile.ZipFile:
    import zipfile

    try:
        return zipfile.ZipFile(fp)
    except archive_errors() as exc:
        raise InputError(
            f"{name}: not a valid .npz (zip) archive ({_reason(exc)}); re-save it with numpy.savez"
        ) from None


def _npy_members(archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    return {info.filename[:-4]: info for info in archive.infolist() if info.filename.endswith(".npy")}


def _keys(members: Mapping[str, object]) -> str:
    """Member names for a message: escaped, at most ten."""
    names = sorted(members)
    listed = ", ".join(printable(key, 40) for key in names[:10])
    return listed + (f", … ({len(names)} in all)" if len(names) > 10 else "")


def read_npz(fp: BinaryIO, name: str, text_keys: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Every array of an .npz archive by key; `text_keys` may hold unicode strings (metadata)."""
    with _open_zip(fp, name) as archive:
        members = _npy_members(archive)
        total = sum(info.file_size for info in members.values())
        if total > memory_budget():
            raise InputError(
                f"{name}: members inflate to {total:,} bytes, more than the memory available "
                "(a zip bomb?); refusing to read it"
            )
        return {
            key: read_zip_member_npy(archive, info, f"{name}[{printable(key)}]", allow_text=key in text_keys)
            for key, info in members.items()
        }


def _read_npz(fp: BinaryIO, name: str, key: str | None) -> tuple[np.ndarray, str]:
    with _open_zip(fp, name) as archive:
        members = _npy_members(archive)
        if not members:
            raise InputError(f"{name}: the .npz archive holds no arrays")
        if key is None:
            if len(members) > 1:
                raise InputError(
                    f"{name}: the archive holds {len(members)} arrays ({_keys(members)}); choose one with --key NAME"
                )
            key = next(iter(members))
        if key not in members:
            raise InputError(f"{name}: no array '{printable(key)}' in the archive; it holds: {_keys(members)}")
        label = f"{name}[{printable(key)}]"
        member = members[key]
        return read_zip_member_npy(archive, member, label), key


def read_zip_member_npy(
    archive: zipfile.ZipFile, member: zipfile.ZipInfo, label: str, allow_text: bool = False
) -> np.ndarray:
    """Read one .npy member, refused before inflating if it would not fit in memory or looks like a zip bomb."""
    if member.flag_bits & 0x1:
        raise InputError(f"{label}: the member is encrypted; rnncli reads unencrypted .npz archives")
    check_zip_member(member, label, InputError, "if the data is genuine, re-save it with numpy.savez (uncompressed)")
    try:
        with archive.open(member) as stream:
            return read_npy(stream, label, size=member.file_size, allow_text=allow_text)
    except archive_errors() as exc:
        raise InputError(f"{label}: corrupt archive member ({_reason(exc)}); re-create the file") from None


ZIP_BOMB_SIZE = 64 << 20  # a member this small inflates harmlessly, whatever its compression ratio
ZIP_BOMB_RATIO = 200  # only long runs of one byte deflate this well; real arrays and HDF5 weights stay far below
# zipfile.ZIP_BZIP2 and ZIP_LZMA: zipfile inflates all it reads of these at once, whatever size the member declares
UNBOUNDED_COMPRESSION = {12: "bzip2", 14: "LZMA"}


def check_zip_method(info: zipfile.ZipInfo, label: str, error: type[RnnCliError], resave: str) -> None:
    """Refuse a bzip2 or LZMA member: zipfile inflates a whole read of those at once, past any bound."""
    if info.compress_type in UNBOUNDED_COMPRESSION:
        raise error(
            f"{label}: the member is compressed with {UNBOUNDED_COMPRESSION[info.compress_type]}, which rnncli "
            f"does not inflate (its memory use cannot be bounded); {resave}"
        )


def check_zip_member(info: zipfile.ZipInfo, label: str, error: type[RnnCliError], resave: str) -> None:
    """Refuse, before inflating it, an archive member that would not fit in memory or looks like a zip bomb.

    Reading a member takes about twice its declared size, so it may declare half the memory budget;
    zipfile inflates stored and deflated members no further than that size (and checks the CRC there),
    while bzip2 and LZMA members are refused. `resave` tells the user how to make a genuine file readable.
    """
    check_zip_method(info, label, error, resave)
    size, packed, budget = info.file_size, info.compress_size, memory_budget()
    ratio = size / max(packed, 1)
    if size > ZIP_BOMB_SIZE and ratio > ZIP_BOMB_RATIO:
        raise error(
            f"{label}: the member inflates {ratio:,.0f}× ({byte_size(size)} from {byte_size(packed)}), "
            f"which looks like a zip bomb; refusing to read it; {resave}"
        )
    if 2 * size > budget:
        raise error(
            f"{label}: the member inflates to {byte_size(size)} and reading it needs about {byte_size(2 * size)}, "
            f"more than the {byte_size(budget)} of memory available (a zip bomb?); refusing to read it; "
            "free some memory or use a smaller file"
        )


def _read_text(data: bytes, name: str) -> np.ndarray:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{name}: byte {exc.start} is not UTF-8 text; expected CSV/TSV rows (for binary data use a .npy file)"
        ) from None
    rows = [(number, line.split("#", 1)[0].strip()) for number, line in enumerate(text.splitlines(), start=1)]
    rows = [(number, line) for number, line in rows if line]
    if not rows:
        raise InputError(f"{name}: no data rows (empty, or only comments); expected numbers in CSV rows")
    delimiter = sniff_delimiter([line for _, line in rows[:20]])
    if not any(is_number(cell) for cell in _split(rows[0][1], delimiter)):
        rows = rows[1:]  # a header row: names only (a row with some numbers is data, and its bad cells are named)
        if not rows:
            raise InputError(f"{name}: only a header row, no data rows")
    body = "\n".join(line for _, line in rows)
    try:
        return np.loadtxt(io.StringIO(body), delimiter=delimiter, ndmin=2, dtype=np.float64)
    except ValueError:
        raise _text_error(rows, delimiter, name) from None


def _text_lines(fp: BinaryIO, name: str) -> Iterator[tuple[int, str]]:
    """(line number, text without comments) of every non-blank line, decoded as it is read."""
    for number, raw in enumerate(fp, start=1):
        try:
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(
                f"{name}: line {number} is not UTF-8 text (byte {exc.start + 1}); expected CSV/TSV rows "
                "(for binary data use a .npy file)"
            ) from None
        line = text.split("#", 1)[0].strip()
        if line:
            yield number, line


def text_table_width(fp: BinaryIO, name: str) -> int | None:
    """The number of columns of a CSV/TSV table, from its first rows (None if it has no data row)."""
    head = list(itertools.islice(_text_lines(fp, name), 20))
    if not head:
        return None
    delimiter = sniff_delimiter([line for _, line in head])
    return len(_split(head[0][1], delimiter))


def iter_text_blocks(fp: BinaryIO, name: str, rows: int) -> Iterator[np.ndarray]:
    """Blocks of up to `rows` data rows of CSV/TSV text, (n, F) float64, parsed while the file is read.

    The rules of whole-file reading: `#` comments and blank lines skipped, the delimiter sniffed from
    the first 20 data rows, a first row without any number is a header, every row as wide as the first.
    """
    lines = _text_lines(fp, name)
    head = list(itertools.islice(lines, 20))
    if not head:
        raise InputError(f"{name}: no data rows (empty, or only comments); expected numbers in CSV rows")
    delimiter = sniff_delimiter([line for _, line in head])
    if not any(is_number(cell) for cell in _split(head[0][1], delimiter)):
        head = head[1:]  # a header row
    pending = itertools.chain(head, lines)
    first: tuple[int, int] | None = None  # (line number, width) of the first data row
    while block := list(itertools.islice(pending, rows)):
        try:
            array = np.loadtxt([line for _, line in block], delimiter=delimiter, ndmin=2, dtype=np.float64)
        except ValueError:
            raise _text_error(block, delimiter, name) from None
        if first is None:
            first = (block[0][0], array.shape[1])
        elif array.shape[1] != first[1]:
            raise InputError(
                f"{name}: line {block[0][0]} has {array.shape[1]} columns but line {first[0]} has {first[1]}; "
                "every row needs the same number of values"
            )
        yield array
    if first is None:
        raise InputError(f"{name}: only a header row, no data rows")


def sniff_delimiter(lines: list[str]) -> str | None:
    """The delimiter used consistently by `lines` among , tab ; | — None means whitespace."""
    for candidate in (",", "\t", ";", "|"):
        counts = {line.count(candidate) for line in lines}
        if len(counts) == 1 and counts != {0}:
            return candidate
    present = [c for c in (",", "\t", ";", "|") if c in lines[0]]  # ragged rows: trust the first line
    return max(present, key=lambda c: sum(line.count(c) for line in lines)) if present else None


def _split(line: str, delimiter: str | None) -> list[str]:
    return [cell.strip() for cell in line.split(delimiter)]


def is_number(cell: str) -> bool:
    """What np.loadtxt accepts: float() without its extras (1_000, non-ASCII digits)."""
    if not cell.isascii() or "_" in cell:
        return False
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _text_error(rows: list[tuple[int, str]], delimiter: str | None, name: str) -> InputError:
    """Find the first row or cell that stops the table from parsing."""
    expected = len(_split(rows[0][1], delimiter))
    for number, line in rows:
        cells = _split(line, delimiter)
        if len(cells) != expected:
            return InputError(
                f"{name}: line {number} has {len(cells)} columns but line {rows[0][0]} has {expected}; "
                "every row needs the same number of values"
            )
        for column, cell in enumerate(cells, start=1):
            if not is_number(cell):
                return InputError(
                    f"{name}: line {number}, column {column}: '{printable(cell, 20)}' is not a number; "
                    "fix the cell (NaN may be written as nan)"
                )
    return InputError(f"{name}: could not parse the text as a table of numbers")


def as_sequences(array: np.ndarray, source: str) -> np.ndarray:
    """Check and shape an input: 1-D -> (T, 1), 2-D (T, F), 3-D (B, T, F) stay; others refused."""
    check_dtype(array.dtype, source)
    if array.ndim == 1:
        array = array.reshape(-1, 1)
    if array.ndim not in (2, 3):
        raise InputError(
            f"{source}: a {array.ndim}-D array of shape {array.shape}; expected (timesteps, features), "
            "(batch, timesteps, features) or a 1-D series"
        )
    if array.shape[-2] == 0 or array.shape[-1] == 0 or array.shape[0] == 0:
        raise InputError(f"{source}: shape {array.shape} has no timesteps or no features; nothing to run")
    return array


def write_array(fp: BinaryIO, data: np.ndarray | Mapping[str, np.ndarray], fmt: str) -> None:
    """Write an array (npy, csv) or a mapping of named arrays (npz) to a binary file object.

    CSV holds 1-D (one row) or 2-D arrays, with enough digits to read back the same numbers.
    """
    if fmt == "npz":
        arrays = data if isinstance(data, Mapping) else {"arr_0": data}
        import zipfile

        with zipfile.ZipFile(fp, "w", allowZip64=True) as archive:  # works on pipes too, unlike np.savez
            for name, array in arrays.items():
                with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asarray(array), allow_pickle=False)
        return
    if isinstance(data, Mapping):
        raise UsageError(f"{fmt} holds one array; several outputs need .npz (--to npz)")
    if fmt == "npy":
        # numpy writes a real file with tofile(), which needs a file position: a pipe gets Python writes
        sink = SimpleNamespace(write=fp.write) if np.lib.format.isfileobj(fp) and not fp.seekable() else fp
        np.lib.format.write_array(sink, np.asarray(data), allow_pickle=False)
    elif fmt == "csv":
        if data.ndim > 2:
            raise UsageError(
                f"CSV holds a 2-D table but the output has shape {data.shape}; write .npy/.npz, or use --return final"
            )
        digits = "%.17g" if data.dtype == np.float64 else "%.9g"
        np.savetxt(fp, np.atleast_2d(data), delimiter=",", fmt=digits)
    else:
        raise UsageError(f"unknown output format '{fmt}'; choose one of {', '.join(FORMATS)}")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_output_path(path: str | os.PathLike[str]) -> str:
    """Refuse an output path that cannot be written (a directory, a read-only file, or in a missing
    directory); returns its directory.

    Callers check every output before a long run, so a typo fails in a second, not after the work.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise OutputError(f"{path}: is a directory; give a file name for the output")
    if not os.path.isdir(directory):
        existing = directory
        while not os.path.lexists(existing):
            existing = os.path.dirname(existing)
        if os.path.isfile(existing):
            raise OutputError(f"{path}: {existing} is a file, not a directory; choose another output path")
        raise OutputError(f"{path}: directory {directory} does not exist; create it first")
    if os.path.isfile(path) and not os.path.islink(path) and not os.access(path, os.W_OK):
        raise OutputError(f"{path}: is read-only; chmod u+w it or choose another output")
    return directory


def writes_in_place(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is written straight into rather than replaced: an existing device, FIFO or socket
    (symlinks followed: /dev/null), or a name for an open descriptor (/dev/stdout; bash's `-o >(gzip)`
    passes /dev/fd/63). Such an output cannot be renamed into place, seeked or synced."""
    if _descriptor(os.fspath(path)) is not None:
        return True
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def _descriptor(path: str) -> int | None:
    """The number of this process's open descriptor that `path` names (/dev/fd/3, /proc/self/fd/3, or a
    symlink to one: /dev/stdout), else None."""
    descriptors = {os.path.realpath("/proc/self/fd"), "/dev/fd"}
    for _ in range(40):  # the kernel's limit on symlinks in a path
        number = os.path.basename(path)
        if os.path.realpath(os.path.dirname(os.path.abspath(path))) in descriptors and re.fullmatch("[0-9]+", number):
            return int(number)
        if not os.path.islink(path):
            return None
        try:
            path = os.path.join(os.path.dirname(os.path.abspath(path)), os.readlink(path))
        except OSError:
            return None
    return None


def sync_output(fp: BinaryIO) -> None:
    """Flush `fp` and make its data durable (a full disk shows here); a pipe or device has nothing to sync."""
    fp.flush()
    if stat.S_ISREG(os.fstat(fp.fileno()).st_mode):
        os.fsync(fp.fileno())


def _permissions(path: str) -> int:
    """The mode for a new output: an existing regular file keeps its own, anything else gets the umask's default."""
    with suppress(OSError):
        mode = os.lstat(path).st_mode
        if stat.S_ISREG(mode):
            return stat.S_IMODE(mode) & 0o777
    return 0o666 & ~_umask()


def _temporary_name(directory: str, name: str) -> str:
    """A fresh name `.NAME.XXXXXXXX.part` in `directory` for a private temporary file."""
    return os.path.join(directory, f".{name}.{os.urandom(6).hex()}.part")


def _create_exclusive(path: str) -> int:
    """Create `path`, which must not exist, readable and writable by its owner only (as tempfile.mkstemp
    does, without importing tempfile and its dependencies at start-up)."""
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)


@contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Open a temporary file next to `path`; rename it into place only if the block succeeds.

    On any failure or interruption the temporary file is removed and an existing `path` is
    left exactly as it was; a replaced file keeps its permissions. A device, FIFO or descriptor
    (see `writes_in_place`) is written straight into instead: a stream cannot be atomic.
    """
    path = os.fspath(path)
    directory = check_output_path(path)
    if writes_in_place(path):
        with _in_place(path) as fp:
            yield fp
        return
    # The name is chosen before the file is created, so the cleanup below also covers an interrupt
    # that lands the instant os.open returns (a signal arriving during the call raises right after it).
    temporary = _temporary_name(directory, os.path.basename(path))
    try:
        try:
            fd = _create_exclusive(temporary)
        except OSError as exc:  # nothing of ours to remove (EEXIST: another's file, a 1 in 2^48 clash)
            temporary = ""
            raise OutputError(f"{path}: cannot write here ({exc.strerror})") from None
        with os.fdopen(fd, "wb") as fp:
            yield fp
            sync_output(fp)
        os.chmod(temporary, _permissions(path))
        os.replace(temporary, path)
    except OSError as exc:
        _remove_quietly(temporary)
        raise OutputError(
            f"{path}: write failed ({exc.strerror or exc}); nothing was written and any existing file is unchanged"
        ) from None
    except BaseException:
        _remove_quietly(temporary)
        raise


def _remove_quietly(path: str) -> None:
    if path:
        with suppress(OSError):
            os.unlink(path)


@contextmanager
def _in_place(path: str) -> Iterator[BinaryIO]:
    """Write into an existing device, FIFO or descriptor: no temporary file, no rename, no fsync."""
    descriptor = _descriptor(path)
    try:  # a descriptor is duplicated, not reopened: it keeps its offset and its append mode
        fd = os.dup(descriptor) if descriptor is not None else os.open(path, os.O_WRONLY | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise OutputError(f"{path}: cannot open it for writing ({exc.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as fp:
            yield fp
            fp.flush()
    except BrokenPipeError:
        raise  # the reader has gone: the CLI ends quietly, as for a closed stdout
    except OSError as exc:
        raise OutputError(f"{path}: write failed ({exc.strerror or exc}); the output is incomplete") from None
