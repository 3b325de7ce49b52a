"""The `run` job as a library: model from options or a weights file, forward pass, facts for summaries.

Shared by the `run` and `batch` commands; nothing here prints or knows about click.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from typing import Any, BinaryIO, NamedTuple

import numpy as np

from .errors import InputError, RnnCliError, ShapeError, UsageError, WeightsError
from .initializers import INITS, init_model
from .io import (
    LoadedArray,
    NpyWriter,
    as_sequences,
    atomic_output,
    check_npy_body,
    format_from_name,
    iter_npy_rows,
    iter_text_blocks,
    load_array,
    memory_budget,
    npy_in_place,
    open_input,
    read_npy_header,
    read_npz,
    text_table_width,
    write_array,
    writes_in_place,
)
from .model import ENGINE, RNN, SETTINGS, Output, Stack, part_facts, stack_state

SATURATION = 0.99
_BOUNDED = {"tanh", "sigmoid", "hard_sigmoid", "softsign"}


class ModelOptions(NamedTuple):
    """What the user asked for; None means "not given" (a default, or the weights file decides)."""

    units: tuple[int, ...] | None = None
    layers: int | None = None
    bidirectional: bool | None = None
    merge: str | None = None
    reverse: bool | None = None
    activation: str | None = None
    bias: bool | None = None
    clip: float | None = None
    leak: float | None = None
    init: str | None = None
    seed: int | None = None
    dtype: str | None = None
    spectral_radius: float | None = None
    input_scaling: float | None = None
    density: float | None = None
    weights: str | None = None

    def given(self) -> dict[str, Any]:
        return {name: value for name, value in self._asdict().items() if value is not None}


DEFAULT_UNITS = 64
_RANDOM_ONLY = ("init", "seed", "spectral_radius", "input_scaling", "density")


class BuiltModel(NamedTuple):
    """A model and where its weights came from ("init keras, seed 0" or the weights file).

    `return_mode` is the model's own output choice ("final" for a Keras model whose last layer has
    return_sequences=False), which applies unless --return is given; None for everything else.
    `layout` is its own 3-D input layout ("time-major" for an ONNX graph that takes (T, B, F)), which
    3-D data follow; `layout_from` names what decided it. The rest comes from a weights file too:
    `parameters` counted as its framework counts them, the `initial_state` it holds (one (B, H) array
    per cell, used unless a run is given one), and its `warnings`, added to every run's.
    """

    model: RNN | Stack
    origin: str
    init: str | None = None
    seed: int | None = None
    weights: str | None = None
    return_mode: str | None = None
    layout: str | None = None
    layout_from: str | None = None
    parameters: int | None = None
    initial_state: tuple[np.ndarray, ...] | None = None
    warnings: tuple[str, ...] = ()


def build_model(
    options: ModelOptions, input_size: int, *, source: str | None = None, shape: Sequence[int | None] | None = None
) -> BuiltModel:
    """Load `options.weights` (checking it against the other options) or draw seeded weights.

    `source` and `shape` name the data the model is built for, in the message when the weights do not fit it.
    """
    if options.weights is None:
        if options.merge is not None and not options.bidirectional:
            raise UsageError(
                f"--merge {options.merge} combines the two directions of --bidirectional; "
                "add --bidirectional or drop --merge"
            )
        init = options.init or "keras"
        seed = 0 if options.seed is None else options.seed
        if init not in INITS:
            raise UsageError(f"unknown init '{init}'; choose one of {', '.join(INITS)}")
        model = init_model(
            input_size,
            options.units or (DEFAULT_UNITS,),
            layers=options.layers,
            bidirectional=bool(options.bidirectional),
            merge=options.merge or "concat",
            reverse=bool(options.reverse),
            activation=options.activation or "tanh",
            bias=True if options.bias is None else options.bias,
            clip=options.clip,
            leak=1.0 if options.leak is None else options.leak,
            init=init,
            seed=seed,
            dtype=options.dtype or "float32",
            spectral_radius_target=options.spectral_radius,
            input_scaling=options.input_scaling,
            density=options.density,
        )
        return BuiltModel(model, f"init {init}, seed {seed}", init=init, seed=seed)

    given = options.given()
    random_only = [name for name in _RANDOM_ONLY if name in given]
    if random_only:
        flags = ", ".join("--" + name.replace("_", "-") for name in random_only)
        raise UsageError(f"{flags} shape random weights; they do not apply with --weights {options.weights}")
    # Any format (.npz, .safetensors, .pt, .keras, .weights.h5, .onnx); the settings options fill in what the
    # file does not record and must agree with what it does (weights.assemble says so otherwise).
    from .weights import open_weights  # weight formats load only when a weights file is given

    loaded = open_weights(options.weights, settings=weights_settings(options), input_size=input_size)
    model = loaded.model
    if options.dtype:
        model = model.astype(options.dtype)
    _check_agrees(model, options)
    built = BuiltModel(
        model,
        f"weights {options.weights}" + ("" if loaded.fmt in ("npz", "safetensors") else f" ({loaded.fmt})"),
        weights=options.weights,
        return_mode=loaded.return_mode,
        layout=loaded.layout,
        layout_from="the ONNX graph" if loaded.fmt == "onnx" else "the weights file",
        parameters=loaded.parameters,
        initial_state=loaded.initial_state,
        warnings=tuple(loaded.warnings),
    )
    check_features(built, input_size, source, shape)
    return built


def check_features(
    built: BuiltModel, features: int, source: str | None = None, shape: Sequence[int | None] | None = None
) -> None:
    """Refuse data with another number of features than the model takes, naming the file and both shapes."""
    wanted = built.model.input_size
    if features == wanted:
        return
    where = f"{source}: " if source else ""
    shapes = f"W_ih is {built.model.cells()[0].w_ih.shape}"
    if source and shape is not None:
        shapes += f", {source} is {_shape_text(shape)}"
    if built.weights is not None:
        raise ShapeError(
            f"{where}weights {built.weights} take {wanted} input features but the data has {features}; "
            f"give data with {wanted} features or other weights ({shapes})"
        )
    raise ShapeError(
        f"{where}the model takes {wanted} input features but the data has {features}; its random weights were "
        f"drawn for {wanted}, so run data with {features} features separately ({shapes})"
    )


def _shape_text(shape: Sequence[int | None]) -> str:
    """(T, F) as in numpy's messages; a T not known yet (CSV read in blocks) is `?`."""
    return "(" + ", ".join("?" if n is None else str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"


def weights_settings(options: ModelOptions) -> dict[str, Any]:
    """The options that complete what a weights file does not record (activation, merge, …)."""
    return {name: getattr(options, name) for name in SETTINGS}


def _check_agrees(model: RNN, options: ModelOptions) -> None:
    source = options.weights
    problems = []
    if options.units is not None:
        wanted = options.units * len(model.units) if len(options.units) == 1 else options.units
        if tuple(wanted) != model.units:
            problems.append(
                f"--units {','.join(map(str, options.units))} but the file has {','.join(map(str, model.units))}"
            )
    if options.layers is not None and options.layers != len(model.layers):
        problems.append(f"--layers {options.layers} but the file has {len(model.layers)}")
    if options.bidirectional is not None and options.bidirectional != (model.directions == 2):
        problems.append(f"--bidirectional={options.bidirectional} but the file has {model.directions} direction(s)")
    if options.bias is not None and options.bias != model.has_bias:
        problems.append(
            f"{'' if options.bias else '--no-bias '}but the file {'has' if model.has_bias else 'has no'} biases"
        )
    if problems:
        raise WeightsError(f"{source}: options disagree with the weights: {'; '.join(problems)}; drop those options")


_CHUNK = 1 << 16
"""Elements per pass of the statistics: temporaries stay in the CPU cache, whatever the array's size."""


def _chunks(array: np.ndarray) -> Iterator[np.ndarray]:
    flat = array.reshape(-1)  # a view for the contiguous arrays rnncli makes
    for start in range(0, flat.size, _CHUNK):
        yield flat[start : start + _CHUNK]


def count_nonfinite(array: np.ndarray) -> dict[str, int]:
    """Counts of NaN and ±Inf entries."""
    nan = inf = 0
    if array.dtype.kind == "f":
        with np.errstate(all="ignore"):
            for chunk in _chunks(array):
                if not np.isfinite(chunk.sum()):  # one pass when all is well; overflow only costs a recount
                    nan += int(np.count_nonzero(np.isnan(chunk)))
                    inf += int(np.count_nonzero(np.isinf(chunk)))
    return {"nan": nan, "inf": inf}


class Statistics:
    """min/mean/max of the finite values, NaN/Inf counts and the saturated share, block by block."""

    def __init__(self, activation: str) -> None:
        self._bounded = activation in _BOUNDED
        # saturated: |h| > 0.99 for tanh-like activations, |2h - 1| > 0.99 for sigmoid-like ones
        self._limits = (
            (0.5 + SATURATION / 2, 0.5 - SATURATION / 2)
            if activation in ("sigmoid", "hard_sigmoid")
            else (SATURATION, -SATURATION)
        )
        self.nan = self.inf = self._count = self._finite = self._saturated = 0
        self._sum = 0.0
        self._min = self._max = None

    def add(self, block: np.ndarray) -> None:
        with np.errstate(all="ignore"):
            for chunk in _chunks(block):
                self._add(chunk)

    def _add(self, chunk: np.ndarray) -> None:
        self._count += chunk.size
        low, high = chunk.min(), chunk.max()
        finite = chunk
        if not (np.isfinite(low) and np.isfinite(high)):  # min and max propagate NaN, so this catches both
            self.nan += int(np.count_nonzero(np.isnan(chunk)))
            self.inf += int(np.count_nonzero(np.isinf(chunk)))
            finite = chunk[np.isfinite(chunk)]
            if finite.size:
                low, high = finite.min(), finite.max()
        if finite.size:
            self._min = float(low) if self._min is None else min(self._min, float(low))
            self._max = float(high) if self._max is None else max(self._max, float(high))
            self._sum += float(finite.sum(dtype=np.float64))
            self._finite += finite.size
        if self._bounded:
            upper, lower = self._limits
            self._saturated += int(np.count_nonzero(chunk > upper)) + int(np.count_nonzero(chunk < lower))

    def result(self) -> dict[str, Any]:
        return {
            "nan": self.nan,
            "inf": self.inf,
            "min": self._min,
            "mean": self._sum / self._finite if self._finite else None,
            "max": self._max,
            "saturated": self._saturated / self._count if self._bounded and self._count else None,
        }


def output_statistics(array: np.ndarray, activation: str) -> dict[str, Any]:
    """min/mean/max over finite values, non-finite counts, and the share of saturated units."""
    stats = Statistics(activation)
    stats.add(array)
    return stats.result()


class RunFacts:
    """Everything a summary shows; `as_dict` is the --summary-json document."""

    __slots__ = ("input", "model", "output", "timing", "warnings")

    def __init__(self, input: dict[str, Any], model: dict[str, Any]) -> None:
        self.input, self.model = input, model
        self.output: dict[str, Any] = {}
        self.timing: dict[str, Any] = {}
        self.warnings: list[str] = []

    def as_dict(self) -> dict[str, Any]:
        from . import __version__

        return {
            "rnncli": __version__,
            "input": self.input,
            "model": self.model,
            "output": self.output,
            "timing": self.timing,
            "warnings": self.warnings,
        }


def describe_model(built: BuiltModel) -> dict[str, Any]:
    model = built.model
    return {
        "layers": len(model.layers),
        "units": list(model.units),
        "directions": model.directions,
        "merge": model.merge if model.directions == 2 else None,
        "reverse": model.reverse,
        "activation": model.activation,
        "bias": model.has_bias,
        "clip": model.clip,
        "leak": model.leak,
        "input_size": model.input_size,
        "output_size": model.output_size,
        "parameters": model.parameter_count if built.parameters is None else built.parameters,
        "parts": part_facts(model),
        "initial_state": None,
        "dtype": str(model.dtype),
        "origin": built.origin,
        "init": built.init,
        "seed": built.seed,
        "weights": built.weights,
        "engine": ENGINE,
    }


def timed_forward(model: RNN, x: np.ndarray, **kwargs: Any) -> tuple[Output, float]:
    """Run the forward pass; returns the output and the seconds it took."""
    start = time.perf_counter()
    # overflow and NaN are counted and reported in the facts; numpy's own warnings would be stray stderr text
    with np.errstate(all="ignore"):
        output = model.forward(x, **kwargs)
    return output, time.perf_counter() - start


def saturation_hint(stats: dict[str, Any], origin: str) -> str | None:
    """A hint when most outputs sit at the activation's limits."""
    share = stats.get("saturated")
    if share is None or share <= 0.5:
        return None
    cause = (
        "U[0,1) weights (--init uniform, as in the seed notebook) push every pre-activation far from 0"
        if "init uniform" in origin
        else "the pre-activations are large"
    )
    return (
        f"{share:.0%} of outputs are saturated (|h| > {SATURATION}): {cause}; "
        "try --init keras or torch, scale your inputs, or lower --input-scaling/--spectral-radius"
    )


NAN_POLICIES = ("error", "warn", "ignore")
RETURN_MODES = ("sequence", "final", "both")


class RunSettings(NamedTuple):
    """How to run and what to return: "sequence", "final" or "both"; `time_major` 3-D layout.

    `nan_policy` decides what NaN/Inf in the input or the output do: "error" stops the run before
    anything is written, "warn" (the default) adds a warning, "ignore" only counts them in the facts.
    """

    return_mode: str = "sequence"
    time_major: bool = False
    nan_policy: str = "warn"


def _check_settings(settings: RunSettings) -> None:
    if settings.nan_policy not in NAN_POLICIES:
        raise UsageError(f"unknown NaN policy '{settings.nan_policy}'; choose one of {', '.join(NAN_POLICIES)}")
    if settings.return_mode not in RETURN_MODES:
        raise UsageError(f"unknown return mode '{settings.return_mode}'; choose one of {', '.join(RETURN_MODES)}")


def check_working_memory(model: RNN | Stack, steps: int, batch: int, source: str) -> None:
    """Refuse, before allocating, a forward pass whose working set exceeds the memory available."""
    needed, available = model.working_bytes(steps, batch), memory_budget()
    if needed > available:
        units = ",".join(map(str, model.units))
        raise UsageError(
            f"{source}: {units} units over {steps:,} timesteps × {batch:,} sequences need about "
            f"{needed / 2**30:,.1f} GiB of working memory, more than the {available / 2**30:.1f} GiB available; "
            "use fewer --units, or split the input (in time, carrying --save-state into --initial-state)"
        )


def check_values(array: np.ndarray, source: str, settings: RunSettings, dtype: Any, first_row: int = 0) -> int:
    """Count finite values beyond `dtype`'s range (the cast to the model's dtype makes them ±Inf); with
    nan_policy "error", stop at those or at NaN/Inf, naming the first (rows of a block count from `first_row`)."""
    beyond = None  # only float64 data run in float32 can exceed the model dtype's range
    if array.dtype.kind == "f" and array.dtype.itemsize > np.dtype(dtype).itemsize:
        with np.errstate(invalid="ignore"):
            beyond = (np.abs(array) > np.finfo(dtype).max) & np.isfinite(array)
    if settings.nan_policy != "error" or array.dtype.kind != "f":
        return 0 if beyond is None else int(np.count_nonzero(beyond))
    counts = count_nonfinite(array)
    cases = [
        (
            ~np.isfinite(array) if counts["nan"] or counts["inf"] else None,
            f"{counts['nan']} NaN and {counts['inf']} Inf values",
            "clean the data",
        ),
        (
            beyond,
            f"{0 if beyond is None else np.count_nonzero(beyond)} values beyond {np.dtype(dtype)}'s range",
            "use --dtype float64",
        ),
    ]
    for bad, what, fix in cases:
        if bad is not None and bad.any():
            first = [int(i) for i in np.argwhere(bad)[0]]
            first[0] += first_row
            raise InputError(
                f"{source}: holds {what} (the first at index {tuple(first)}) and --on-nan error stops there; "
                f"{fix}, or use --on-nan warn"
            )
    return 0


def _warn_beyond(facts: RunFacts, beyond: int, settings: RunSettings, dtype: Any) -> None:
    if beyond and settings.nan_policy != "ignore":
        facts.warnings.append(
            f"{facts.input['source']} holds {beyond} values beyond {np.dtype(dtype)}'s range, which became ±Inf; "
            "use --dtype float64 or scale the data"
        )


def _nonfinite_weights(built: BuiltModel) -> str | None:
    """`weights w.npz hold 2 NaN and 0 Inf values` when they do (every output is then NaN), else None."""
    counts = {"nan": 0, "inf": 0}
    for cell in built.model.cells():
        for tensor in cell:
            if tensor is not None:
                for kind, count in count_nonfinite(tensor).items():
                    counts[kind] += count
    if not (counts["nan"] or counts["inf"]):
        return None
    return f"{built.origin} hold {counts['nan']} NaN and {counts['inf']} Inf values"


def _refuse_nonfinite_output(sequence: np.ndarray, settings: RunSettings, built: BuiltModel, source: str) -> None:
    if settings.nan_policy == "error" and not np.isfinite(sequence).all():
        counts = count_nonfinite(sequence)
        bad_weights = _nonfinite_weights(built)
        overflow = (
            "unbounded activations overflow on large inputs: scale the data, use --clip C or a bounded --activation"
        )
        cause = f"the {bad_weights}: use other weights" if bad_weights else overflow
        raise RnnCliError(
            f"{source}: the output holds {counts['nan']} NaN and {counts['inf']} Inf values and --on-nan error "
            f"stops there; {cause}"
        )


def check_lengths(lengths: np.ndarray, name: str, batch: int, steps: int, source: str) -> None:
    """Refuse lengths that are not one whole number in 0..steps per batch row of `source`, naming `name`
    (the lengths' file) and the first bad entry."""
    values = np.asarray(lengths).reshape(-1)
    if values.size != batch:
        raise ShapeError(
            f"{name}: {values.size} lengths for the {batch} batch rows of {source}; give one length per batch row"
        )
    with np.errstate(invalid="ignore"):
        whole = np.mod(values, 1) == 0 if values.dtype.kind == "f" else np.full(values.shape, values.dtype.kind in "iu")
        bad = ~whole | (values < 0) | (values > steps)
    if bad.any():
        i = int(np.argmax(bad))
        value = values[i].item()
        what = "not a whole number" if not whole[i] else f"outside 0..{steps} (the timesteps of {source})"
        raise ShapeError(f"{name}: entry {i + 1} is {value:g}, {what}; give whole numbers of timesteps in 0..{steps}")


def check_initial_state(
    model: RNN | Stack, state: np.ndarray | Sequence[np.ndarray], name: str, batch: int | None, source: str
) -> None:
    """Refuse an initial state that does not fit the model over `source` (`batch` rows, or None for one
    sequence): one (layers*directions, [batch,] units) tensor, or one ([batch,] units) entry per layer/direction."""
    expected = [(cell.units,) if batch is None else (batch, cell.units) for cell in model.cells()]
    if isinstance(state, np.ndarray):
        have: Any = state.shape
        want: Any = (len(expected), *expected[0]) if len(set(expected)) == 1 else expected
    else:
        have, want = [np.shape(part) for part in state], expected
    if have != want:
        layout = f"(layers*directions, {'' if batch is None else 'batch, '}units)"
        raise ShapeError(
            f"{name}: shape {have} but the model over {source} starts from {want} {layout}; "
            "give the state saved by a run of the same model over data of the same layout"
        )


class RunResult(NamedTuple):
    """A finished forward pass: `items` still to be written (empty when streamed), the state, the facts."""

    items: dict[str, np.ndarray]
    state: tuple[np.ndarray, ...]
    facts: RunFacts
    sequence: np.ndarray | None = None


def output_format(path: str, to: str | None, return_mode: str) -> str:
    """The output format: `to`, else from `path`'s extension, else npy for a stream (stdout, a pipe, a
    device: `-o >(gzip > y.npy.gz)`); "both" needs npz."""
    fmt = to or (format_from_name(path) if path != "-" else None)
    if fmt is None and path != "-" and not writes_in_place(path):
        raise UsageError(f"cannot tell the format of -o {path} from its extension; use .npy/.npz/.csv or --to")
    if return_mode == "both":
        if fmt not in (None, "npz"):
            raise UsageError(
                f"--return both writes two arrays, which needs .npz, not {fmt}; use -o FILE.npz or --to npz"
            )
        return "npz"
    return fmt or "npy"


def output_data(items: dict[str, np.ndarray], fmt: str) -> np.ndarray | dict[str, np.ndarray]:
    """What to write: the named arrays for npz, the single array otherwise."""
    return items if fmt == "npz" else next(iter(items.values()))


def _start_facts(built: BuiltModel, source: str, fmt: str, key: str | None, shape: Any, dtype: Any) -> RunFacts:
    facts = RunFacts(
        input={"source": source, "format": fmt, "key": key, "shape": list(shape), "dtype": str(dtype)},
        model=describe_model(built),
    )
    facts.warnings.extend(built.warnings)
    return facts


def starting_state(
    built: BuiltModel,
    given: np.ndarray | Sequence[np.ndarray] | None,
    given_name: str,
    batch: int | None,
    source: str,
) -> tuple[np.ndarray | Sequence[np.ndarray] | None, bool]:
    """The state a run over `source` (`batch` rows, None for one sequence) starts from, checked against
    the model: the one `given` (`given_name` in messages), else the one the weights file holds, as one
    sequence's when it is for a batch of one (then the flag is true), else None: zeros."""
    held = given is None and built.initial_state is not None
    state, name = given, given_name
    if held:
        state, name = built.initial_state, f"the initial state {built.weights} holds"
        if batch is None and len(state[0]) == 1:
            state = [s[0] for s in state]
    if state is not None:
        check_initial_state(built.model, state, name, batch, source)
    return state, held


def _finish_facts(
    facts: RunFacts,
    built: BuiltModel,
    settings: RunSettings,
    items: dict[str, tuple[Any, Any]],
    input_counts: dict[str, int],
    stats: dict[str, Any],
    seconds: float,
    steps: int,
) -> None:
    """Fill in counts, warnings, outputs (name -> (shape, dtype)) and timing."""
    facts.input.update(input_counts)
    if settings.nan_policy != "ignore" and (input_counts["nan"] or input_counts["inf"]):
        facts.warnings.append(
            f"{facts.input['source']} holds {input_counts['nan']} NaN and {input_counts['inf']} Inf values; "
            "they propagate through the recurrence"
        )
    if settings.nan_policy != "ignore" and (stats["nan"] or stats["inf"]):
        bad_weights = _nonfinite_weights(built)
        facts.warnings.append(
            f"the output holds {stats['nan']} NaN and {stats['inf']} Inf values"
            + (f" (the {bad_weights})" if bad_weights else "")
        )
    hint = saturation_hint(stats, built.origin)
    if hint:
        facts.warnings.append(hint)
    facts.output = {
        "return": settings.return_mode,
        "items": [{"name": k, "shape": list(shape), "dtype": str(dtype)} for k, (shape, dtype) in items.items()],
        "stats": stats,
        "also": {},
    }
    facts.timing = {
        "seconds": seconds,
        "timesteps": int(steps),
        "timesteps_per_second": steps / seconds if seconds else float("inf"),
    }


IN_PLACE_MIN_BYTES = 64 << 20
"""Outputs from this size on are computed into their file (`npy_in_place`). Measured on this project's
machine (2026-12-01, ext4): writing took 0.7x the mapping's time at 16-48 MB per file, the mapping
0.5-0.9x writing's from 64 MB (and 0.4-0.5x at 256 MB, where writes also varied 2x from run to run)."""


def run_loaded(
    built: BuiltModel,
    loaded: LoadedArray,
    settings: RunSettings,
    initial_state: np.ndarray | Sequence[np.ndarray] | None = None,
    lengths: np.ndarray | None = None,
    *,
    state_source: str = "the initial state",
    lengths_source: str = "the lengths",
    sink: BinaryIO | None = None,
    out_fmt: str = "npy",
    sink_is_temporary: bool = False,
) -> RunResult:
    """Run a built model over a loaded array; returns the outputs asked for and the run's facts.

    `state_source` and `lengths_source` name where those came from (`--lengths l.csv`) in messages.
    With a `sink`, the outputs are also written to it as `out_fmt`. If the sink is a temporary file
    that a failure removes (`atomic_output`'s), a large .npy sequence is computed straight into it
    (`npy_in_place`); anything else sees no byte before the run has succeeded.
    """
    _check_settings(settings)
    x = as_sequences(loaded.array, loaded.source)
    facts = _start_facts(built, loaded.source, loaded.fmt, loaded.key, loaded.array.shape, loaded.array.dtype)
    steps, batch = (x.shape[0], 1) if x.ndim == 2 else x.shape[:2] if settings.time_major else x.shape[1::-1]
    if x.ndim == 3:
        own = settings.time_major and built.layout == "time-major"
        facts.input.update(
            layout="time-major" if settings.time_major else "batch-first",
            layout_from=built.layout_from if own else None,
        )
    check_features(built, x.shape[-1], loaded.source, loaded.array.shape)
    initial_state, held = starting_state(
        built, initial_state, state_source, None if x.ndim == 2 else batch, loaded.source
    )
    if held:
        facts.model["initial_state"] = "the weights file"
    if lengths is not None:
        check_lengths(lengths, lengths_source, batch, steps, loaded.source)
    check_working_memory(built.model, steps, batch, loaded.source)
    beyond = check_values(x, loaded.source, settings, built.model.dtype)
    shape = (*x.shape[:-1], built.model.output_size)
    in_place = sink_is_temporary and sink is not None and out_fmt == "npy" and settings.return_mode == "sequence"
    in_place = in_place and math.prod(shape) * built.model.dtype.itemsize >= IN_PLACE_MIN_BYTES
    with npy_in_place(sink, shape, built.model.dtype) if in_place else nullcontext() as out:
        output, seconds = timed_forward(
            built.model, x, initial_state=initial_state, lengths=lengths, time_major=settings.time_major, out=out
        )
        _refuse_nonfinite_output(output.sequence, settings, built, loaded.source)
    items = {"sequence": output.sequence, "final": output.final}
    if settings.return_mode != "both":
        items = {settings.return_mode: items[settings.return_mode]}
    if sink is not None and out is None:
        write_array(sink, output_data(items, out_fmt), out_fmt)
    steps = x.shape[0] if x.ndim == 2 else x.shape[0] * x.shape[1]
    _finish_facts(
        facts,
        built,
        settings,
        {k: (v.shape, v.dtype) for k, v in items.items()},
        count_nonfinite(loaded.array),
        output_statistics(output.sequence, built.model.activation),
        seconds,
        steps,
    )
    _warn_beyond(facts, beyond, settings, built.model.dtype)
    return RunResult(items, output.state, facts, output.sequence)


def streamable_shape(source: str, fmt: str | None = None, key: str | None = None) -> tuple[int | None, int] | None:
    """(T, F) of a file that can be read block by block — a 1-D or C-order 2-D .npy, or CSV/TSV text,
    whose T is known only at the end (None) — else None."""
    fmt = fmt or format_from_name(source)
    if source == "-" or key is not None or fmt not in ("npy", "csv"):
        return None
    if not os.path.isfile(source):  # a pipe (`<(…)`, a FIFO) cannot be opened twice: read it whole
        return None
    with open_input(source) as fp:
        if fmt == "csv":
            width = text_table_width(fp, source)
            return None if width is None else (None, width)
        shape, fortran, _ = read_npy_header(fp, source)
    if len(shape) == 1:
        shape = (shape[0], 1)
    if len(shape) != 2 or fortran or 0 in shape:
        return None
    return shape


def can_stream(model: RNN, settings: RunSettings, out_fmt: str) -> bool:
    """Whether outputs can be produced block by block: one forward direction, one output array."""
    return model.directions == 1 and not model.reverse and settings.return_mode != "both" and out_fmt != "npz"


def run_streamed(
    built: BuiltModel,
    source: str,
    sink: BinaryIO,
    settings: RunSettings,
    out_fmt: str,
    initial_state: np.ndarray | Sequence[np.ndarray] | None = None,
    fmt: str | None = None,
    *,
    state_source: str = "the initial state",
) -> RunResult:
    """Run over a (T, F) .npy or CSV file block by block, writing the output to `sink` as it goes.

    Memory stays bounded by blocks of `model.BLOCK_STEPS` timesteps, the same blocks a whole-array
    run projects with, so the outputs are bit-for-bit those of a whole-array run.
    """
    from . import model as model_module

    _check_settings(settings)
    model = built.model
    block_steps = model_module.BLOCK_STEPS
    text = (fmt or format_from_name(source)) == "csv"
    initial_state, held = starting_state(built, initial_state, state_source, None, source)
    with open_input(source) as fp:
        if text:
            steps, width, dtype = None, model.input_size, np.dtype(np.float64)
            blocks = iter_text_blocks(fp, source, block_steps)
            # a CSV row of F columns takes at least 2F bytes ("0," per cell): a short, wide file has few rows
            most = min(block_steps, os.fstat(fp.fileno()).st_size // (2 * width) + 1)
        else:
            shape, _, dtype = read_npy_header(fp, source)
            check_npy_body(fp, source, shape, dtype)
            steps, width = shape[0], (shape[1] if len(shape) == 2 else 1)
            blocks = iter_npy_rows(fp, source, (steps, width), dtype, block_steps)
            most = min(steps, block_steps)
        check_working_memory(model, most, 1, source)
        facts = _start_facts(built, source, "csv" if text else "npy", None, (steps, width), dtype)
        if held:
            facts.model["initial_state"] = "the weights file"
        input_counts = {"nan": 0, "inf": 0}
        stats = Statistics(model.activation)
        writer = None
        if settings.return_mode == "sequence" and out_fmt == "npy":
            writer = NpyWriter(sink, model.dtype, model.output_size, rows=steps)
        state, seconds, done, beyond, output = initial_state, 0.0, 0, 0, None
        for block in blocks:
            if block.shape[1] != model.input_size:
                raise ShapeError(
                    f"{source}: {block.shape[1]} columns but the model takes {model.input_size} input features"
                )
            for k, v in count_nonfinite(block).items():
                input_counts[k] += v
            beyond += check_values(block, source, settings, model.dtype, first_row=done)
            output, elapsed = timed_forward(model, block, initial_state=state)
            _refuse_nonfinite_output(output.sequence, settings, built, source)
            done += len(block)
            seconds += elapsed
            state = output.state
            stats.add(output.sequence)
            if writer is not None:
                writer.write(output.sequence)
            elif settings.return_mode == "sequence":
                write_array(sink, output.sequence, out_fmt)
    if writer is not None:
        writer.close()
    if settings.return_mode == "final":
        write_array(sink, output.final, out_fmt)
    facts.input["shape"] = [done, width]
    produced = (done, model.output_size) if settings.return_mode == "sequence" else (model.output_size,)
    _finish_facts(
        facts,
        built,
        settings,
        {settings.return_mode: (produced, model.dtype)},
        input_counts,
        stats.result(),
        seconds,
        done,
    )
    _warn_beyond(facts, beyond, settings, model.dtype)
    return RunResult({}, output.state, facts)


def run_to_file(
    built: BuiltModel, loaded: LoadedArray, destination: str, settings: RunSettings, out_fmt: str | None = None
) -> RunFacts:
    """Run the model over a loaded array and write `destination` atomically; returns the run's facts."""
    out_fmt = output_format(destination, out_fmt, settings.return_mode)
    with atomic_output(destination) as fp:
        run = run_loaded(
            built, loaded, settings, sink=fp, out_fmt=out_fmt, sink_is_temporary=not writes_in_place(destination)
        )
    run.facts.output.update(destination=destination, format=out_fmt)
    return run.facts


STATE_FORMATS = ("npy", "npz")


def state_format(path: str) -> str:
    """The format of a --save-state file from its extension: .npy (one tensor) or .npz (one entry per layer)."""
    fmt = format_from_name(path)
    if fmt not in STATE_FORMATS:
        raise UsageError(
            f"--save-state {path}: a state is saved as .npy (one tensor, as PyTorch's h_n) or .npz (one entry "
            "per layer and direction); name the file .npy or .npz"
        )
    return fmt


def check_state_file(model: RNN, path: str) -> None:
    """Refuse, before any work, a .npy state file for layers of different sizes (it cannot be one tensor)."""
    if state_format(path) == "npy" and len(set(model.units)) > 1:
        raise ShapeError(
            f"{path}: layers have different sizes {list(model.units)}, so the state cannot be one tensor "
            "(PyTorch's h_n needs equal sizes); save it as .npz instead"
        )


def state_to_save(state: tuple[np.ndarray, ...], path: str) -> np.ndarray | dict[str, np.ndarray]:
    """One (layers*directions, [B,] H) array for .npy; entries state_0, state_1, … for .npz (any sizes)."""
    if state_format(path) == "npz":
        return {f"state_{i}": s for i, s in enumerate(state)}
    return stack_state(state)


def load_option_array(path: str, flag: str) -> np.ndarray:
    """The array of a small file given to an option (`--lengths`, `--initial-state`): .npy, or CSV/TSV text.

    Messages start with the option, and suggest nothing that only applies to the data input (--from, stdin).
    """
    name = f"{flag} {path}"
    fmt = format_from_name(path)
    if fmt is None:
        raise InputError(f"{name}: unknown extension '{os.path.splitext(path)[1]}'; save it as .npy or .csv")
    if not os.path.exists(path) or os.path.isdir(path):
        raise InputError(f"{name}: {'is a directory' if os.path.isdir(path) else 'no such file'}; check the path")
    return load_array(path, fmt, name=name).array


def load_state(path: str) -> np.ndarray | list[np.ndarray]:
    """An initial state from .npy/CSV (one tensor) or .npz (state_0, state_1, … as `state_to_save` writes)."""
    if format_from_name(path) != "npz":
        return load_option_array(path, "--initial-state")
    with open_input(path) as fp:
        entries = read_npz(fp, f"--initial-state {path}")
    names = [f"state_{i}" for i in range(len(entries))]
    if sorted(entries) != sorted(names):
        raise ShapeError(
            f"--initial-state {path}: expected entries {', '.join(names)} (as --save-state FILE.npz writes)"
        )
    return [entries[name] for name in names]
