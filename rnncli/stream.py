"""Live streams (`rnncli run - --stream`): CSV rows in, output rows out, one at a time.

Each text row is run through the model as soon as its line arrives, as a (1, F) sequence that
starts from the state the previous row left (`Output.state`, every layer), and its output row
is written and flushed at once. The rows equal a whole-file run of the same data and weights to
float rounding: a one-row input projection may round differently from the many-row product.
Only models that run forwards in time can stream. Nothing here prints or exits.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import BinaryIO, NamedTuple

import numpy as np

from .errors import InputError, UsageError
from .io import is_number, sniff_delimiter
from .model import RNN, Output, Stack
from .pipeline import BuiltModel, ModelOptions, build_model

NOT_STREAMABLE = (
    "--stream runs forwards in time, one row at a time, but {what} needs the whole sequence first; "
    "drop --stream, or use a forward-only model"
)


def numeric_rows(lines: Iterable[bytes], name: str) -> Iterator[np.ndarray]:
    """Each data row of CSV/TSV text as a (F,) float64 array, yielded as soon as its line is read.

    Blank lines and `#` comments are skipped, a first row that is not numeric is a header, and
    the delimiter (`,` tab `;` `|` or whitespace) is sniffed from the first data row; every later
    row must have as many values.
    """
    delimiter: str | None = None
    width = first_row = 0
    header_seen = False
    for number, raw in enumerate(lines, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"{name}: line {number}, byte {exc.start}: not UTF-8; expected CSV/TSV rows") from None
        line = (text.removeprefix("\ufeff") if number == 1 else text).split("#", 1)[0].strip()
        if not line:
            continue
        if not width:
            delimiter = sniff_delimiter([line])
        cells = [cell.strip() for cell in line.split(delimiter)]
        if width and len(cells) != width:
            raise InputError(
                f"{name}: line {number} has {len(cells)} values but the first data row (line {first_row}) has "
                f"{width}; every row needs the same number of values"
            )
        numeric = [is_number(cell) for cell in cells]  # the rules of whole-file reading
        if not all(numeric):
            if not width and not header_seen and not any(numeric):  # a first row of names only is a header
                header_seen = True
                continue
            column, cell = next((i, c) for i, (c, ok) in enumerate(zip(cells, numeric), start=1) if not ok)
            raise InputError(
                f"{name}: line {number}, column {column}: '{cell[:20]}' is not a number; fix the row "
                "(NaN may be written as nan)"
            )
        values = np.array([float(cell) for cell in cells])
        if not width:
            width, first_row = len(values), number
        yield values


def check_streamable(model: RNN | Stack) -> None:
    """Refuse models that need the whole sequence: bidirectional, or reversed in time."""
    if model.directions == 2:
        raise UsageError(NOT_STREAMABLE.format(what="a bidirectional model"))
    if model.reverse:
        raise UsageError(NOT_STREAMABLE.format(what="--reverse"))


def open_stream(options: ModelOptions, lines: Iterable[bytes], name: str) -> tuple[BuiltModel, Iterator[np.ndarray]]:
    """Wait for the first data row, build the model for its width; returns the model and every row.

    Options that cannot stream are refused before anything is read.
    """
    if options.bidirectional:
        raise UsageError(NOT_STREAMABLE.format(what="--bidirectional"))
    if options.reverse:
        raise UsageError(NOT_STREAMABLE.format(what="--reverse"))
    rows = numeric_rows(lines, name)
    first = next(rows, None)
    if first is None:
        raise InputError(f"{name}: no data rows (empty, or only comments); expected numbers in CSV rows")
    built = build_model(options, first.size)
    check_streamable(built.model)
    return built, itertools.chain([first], rows)


class StreamFacts(NamedTuple):
    """A finished stream: rows processed, seconds spent computing and formatting, the last output."""

    rows: int
    seconds: float
    last: Output | None


def stream_rows(
    model: RNN | Stack,
    rows: Iterable[np.ndarray],
    sink: BinaryIO,
    initial_state: np.ndarray | Sequence[np.ndarray] | None = None,
    *,
    name: str = "<stdin>",
    nan_policy: str = "warn",
    warn: Callable[[str], None] | None = None,
) -> StreamFacts:
    """Run each (F,) row as it arrives, carrying the state, and write its output row to `sink` as CSV.

    Every line is flushed as soon as it is written. The output row of a forward-only model is
    also its running final state, so `--return sequence` and `--return final` stream the same rows.
    Digits as in rnncli's CSV files: enough to read back the same float32/float64 numbers.
    A row holding NaN/Inf stops the stream under `nan_policy` "error" (the rows before it are out);
    under "warn" the first such row is reported through `warn` as it arrives.
    """
    check_streamable(model)
    digits = "%.17g" if model.dtype == np.float64 else "%.9g"
    state, output, count, busy, warned = initial_state, None, 0, 0.0, False
    for row in rows:
        if nan_policy != "ignore" and not warned and not np.isfinite(row).all():
            if nan_policy == "error":
                raise InputError(
                    f"{name}: data row {count + 1} holds NaN or Inf and --on-nan error stops there; "
                    "clean the data, or use --on-nan warn"
                )
            warned = True
            if warn is not None:
                warn(f"{name}: data row {count + 1} holds NaN or Inf; it propagates through the state to later rows")
        start = time.perf_counter()
        output = model.forward(row[None, :], initial_state=state)
        state = output.state
        line = ",".join(digits % value for value in output.final.tolist()) + "\n"
        busy += time.perf_counter() - start
        sink.write(line.encode())
        sink.flush()
        count += 1
    return StreamFacts(count, busy, output)
