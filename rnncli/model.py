"""The simple RNN: parameters (a validated container, not changed after construction) and the forward pass.

One step of one direction (a *cell*) is ``h' = act(W_ih x + b_ih + W_hh h + b_hh)``; a layer
runs one cell forward in time, or two (forward and backward) merged; layers stack.
Weights use PyTorch's ``torch.nn.RNN`` layout: ``W_ih`` is (H, F), ``W_hh`` is (H, H).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from .errors import ShapeError, UsageError, WeightsError

DTYPES = ("float32", "float64")
MERGES = ("concat", "sum", "mul", "ave")
SETTINGS = ("activation", "merge", "reverse", "clip", "leak")
"""Model settings besides the tensors: what a weights file may or may not record."""


def _tanh(a: np.ndarray) -> None:
    np.tanh(a, out=a)


def _relu(a: np.ndarray) -> None:
    np.maximum(a, 0, out=a)


def _sigmoid(a: np.ndarray) -> None:
    # 1 / (1 + e^-x) == (1 + tanh(x / 2)) / 2, which cannot overflow
    a *= 0.5
    np.tanh(a, out=a)
    a += 1
    a *= 0.5


def _hard_sigmoid(a: np.ndarray) -> None:
    # Keras 3: clip(x / 6 + 1/2, 0, 1)
    a /= 6
    a += 0.5
    np.clip(a, 0, 1, out=a)


def _linear(a: np.ndarray) -> None:
    pass


def _softsign(a: np.ndarray) -> None:
    np.divide(a, np.abs(a) + 1, out=a)


def _softplus(a: np.ndarray) -> None:
    np.logaddexp(0, a, out=a)


def _elu(a: np.ndarray) -> None:
    negative = a < 0
    a[negative] = np.expm1(a[negative])


ACTIVATIONS: dict[str, Callable[[np.ndarray], None]] = {
    "tanh": _tanh,
    "relu": _relu,
    "sigmoid": _sigmoid,
    "hard_sigmoid": _hard_sigmoid,
    "linear": _linear,
    "softsign": _softsign,
    "softplus": _softplus,
    "elu": _elu,
}
"""Activation name -> function applied in place."""

# Activations the compiled kernel implements, by its integer code.
_KERNEL_ACTIVATIONS = {"tanh": 0, "relu": 1, "sigmoid": 2, "linear": 3}


ENGINES = ("auto", "numpy")
"""Values of RNNCLI_ENGINE: "auto" (the compiled kernel when it is installed) or "numpy" (the fallback)."""


def _load_kernel():
    engine = os.environ.get("RNNCLI_ENGINE") or "auto"  # set but empty: as if unset
    if engine not in ENGINES:
        raise UsageError(f"RNNCLI_ENGINE={engine} is not an engine; set it to {' or '.join(ENGINES)}, or unset it")
    if engine == "numpy":
        return None
    try:
        from . import _kernel
    except ImportError:
        return None
    return _kernel


_kernel = _load_kernel()
ENGINE = "compiled" if _kernel is not None else "numpy"
"""Which recurrence loop this install runs: "compiled" (C extension) or "numpy" (fallback)."""


class Cell(NamedTuple):
    """One direction of one layer: ``w_ih`` (H, F), ``w_hh`` (H, H), biases (H,) or None."""

    w_ih: np.ndarray
    w_hh: np.ndarray
    b_ih: np.ndarray | None = None
    b_hh: np.ndarray | None = None

    @property
    def units(self) -> int:
        return self.w_ih.shape[0]

    @property
    def input_size(self) -> int:
        return self.w_ih.shape[1]

    @property
    def has_bias(self) -> bool:
        return self.b_ih is not None

    def tensors(self) -> list[np.ndarray]:
        return [t for t in (self.w_ih, self.w_hh, self.b_ih, self.b_hh) if t is not None]

    def bias(self) -> np.ndarray | None:
        """The two biases added, as they enter every step."""
        if self.b_ih is None:
            return None
        return self.b_ih + self.b_hh

    def check(self, where: str) -> None:
        if self.w_ih.ndim != 2 or self.w_hh.ndim != 2:
            raise WeightsError(f"{where}: W_ih {self.w_ih.shape} and W_hh {self.w_hh.shape} must both be 2-D matrices")
        units = self.units
        if self.w_hh.shape != (units, units):
            raise WeightsError(
                f"{where}: W_hh has shape {self.w_hh.shape} but W_ih {self.w_ih.shape} "
                f"implies {units} units, so W_hh must be ({units}, {units})"
            )
        if (self.b_ih is None) != (self.b_hh is None):
            raise WeightsError(f"{where}: has one bias but not the other; give both b_ih and b_hh or neither")
        for label, b in (("b_ih", self.b_ih), ("b_hh", self.b_hh)):
            if b is not None and b.shape != (units,):
                raise WeightsError(
                    f"{where}: {label} has shape {b.shape}, expected ({units},) to match W_ih {self.w_ih.shape}"
                )
        dtypes = {str(t.dtype) for t in self.tensors()}
        if len(dtypes) != 1 or not dtypes <= set(DTYPES):
            raise WeightsError(f"{where}: tensors must all be float32 or all float64, got {sorted(dtypes)}")


class Output(NamedTuple):
    """The result of a forward pass.

    `sequence`: top-layer outputs for every timestep, (T, D), (B, T, D), or (T, B, D) time-major.
    `final`: top-layer final output, (D,) or (B, D) (directions merged like the sequence).
    `state`: the state of every layer and direction, index ``layer * directions + direction``,
    each (H,) or (B, H) — what ``initial_state`` takes to continue the sequence.
    """

    sequence: np.ndarray
    final: np.ndarray
    state: tuple[np.ndarray, ...]

    def state_tensor(self) -> np.ndarray:
        """The state as one array (layers*directions, [B,] H), like PyTorch's ``h_n``."""
        return stack_state(self.state)


def stack_state(state: Sequence[np.ndarray]) -> np.ndarray:
    """Per-layer/direction states as one (layers*directions, [B,] H) array; equal sizes needed."""
    if len({s.shape for s in state}) != 1:
        raise ShapeError(
            f"layers have different sizes {[s.shape[-1] for s in state]}; the state "
            "cannot be one tensor (PyTorch's h_n needs equal sizes)"
        )
    return np.stack(state)


class RNN:
    """A stack of simple-RNN layers with one or two directions each.

    `layers[k]` holds one :class:`Cell` (unidirectional) or two (forward, backward).
    `merge` combines the two directions ("concat", "sum", "mul", "ave"); `reverse` runs a
    single direction backwards in time (outputs aligned to input time); `clip` clamps the
    pre-activation to [-clip, clip]; `leak` is the leaky-integration rate (1 = none).
    """

    # a plain slotted class, not a dataclass: building one of those costs ~0.6 ms of start-up
    __slots__ = ("_projections", "activation", "clip", "dtype", "layers", "leak", "merge", "reverse")

    def __init__(
        self,
        layers: tuple[tuple[Cell, ...], ...],
        activation: str = "tanh",
        merge: str = "concat",
        reverse: bool = False,
        clip: float | None = None,
        leak: float = 1.0,
    ) -> None:
        self.layers, self.activation, self.merge = layers, activation, merge
        self.reverse, self.clip, self.leak = reverse, clip, leak
        self.dtype = self._validate()
        self._projections: tuple[object, list[tuple[np.ndarray, np.ndarray | None]]] | None = None

    def __repr__(self) -> str:
        return (
            f"RNN(units={self.units}, directions={self.directions}, activation={self.activation!r}, "
            f"merge={self.merge!r}, reverse={self.reverse}, clip={self.clip}, leak={self.leak}, dtype={self.dtype})"
        )

    def _validate(self) -> np.dtype:
        """Check every setting and shape; returns the one dtype of all tensors."""
        if not self.layers:
            raise WeightsError("a model needs at least one layer")
        if self.activation not in ACTIVATIONS:
            raise UsageError(f"unknown activation '{self.activation}'; choose one of {', '.join(ACTIVATIONS)}")
        if self.merge not in MERGES:
            raise UsageError(f"unknown merge mode '{self.merge}'; choose one of {', '.join(MERGES)}")
        if self.clip is not None and not self.clip > 0:
            raise UsageError(f"clip must be positive, got {self.clip}")
        if not 0 < self.leak <= 1:
            raise UsageError(f"leak must be in (0, 1], got {self.leak}")
        directions = {len(layer) for layer in self.layers}
        if len(directions) != 1 or not directions <= {1, 2}:
            raise WeightsError(
                f"every layer needs the same number of directions (1 or 2), got {[len(c) for c in self.layers]}"
            )
        if self.reverse and self.directions == 2:
            raise UsageError("reverse applies to one direction; a bidirectional model already runs both ways")
        expected = self.input_size
        for k, layer in enumerate(self.layers):
            for d, cell in enumerate(layer):
                where = f"layer {k}{' backward' if d else ''}"
                cell.check(where)
                if cell.input_size != expected:
                    raise WeightsError(
                        f"{where}: W_ih has shape {cell.w_ih.shape}, so it takes {cell.input_size} inputs, "
                        f"but the layer below gives {expected}"
                    )
            if len(layer) == 2 and layer[0].units != layer[1].units:
                raise WeightsError(
                    f"layer {k}: forward has {layer[0].units} units, backward {layer[1].units}; they must match"
                )
            expected = self._merged_size(layer[0].units)
        dtypes = {str(t.dtype) for layer in self.layers for cell in layer for t in cell.tensors()}
        if len(dtypes) != 1:
            raise WeightsError(f"all tensors must share one dtype, got {sorted(dtypes)}")
        biases = {cell.has_bias for layer in self.layers for cell in layer}
        if len(biases) != 1:
            raise WeightsError("some layers have biases and others not; give biases everywhere or nowhere")
        return np.dtype(dtypes.pop())

    def _projection_weights(self) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """Per cell, W_ih transposed (F, H) and the summed bias, contiguous: made on the first forward
        pass and kept for these `layers`, so a stream of one-row runs does not copy them each time
        (tensors changed in place are not seen: the class is a container not changed after construction)."""
        if self._projections is None or self._projections[0] is not self.layers:
            made = [
                (np.ascontiguousarray(cell.w_ih.T), None if cell.b_ih is None else np.ascontiguousarray(cell.bias()))
                for cell in self.cells()
            ]
            self._projections = (self.layers, made)
        return self._projections[1]

    def _merged_size(self, units: int) -> int:
        return 2 * units if self.directions == 2 and self.merge == "concat" else units

    @property
    def directions(self) -> int:
        return len(self.layers[0])

    @property
    def input_size(self) -> int:
        return self.layers[0][0].input_size

    @property
    def units(self) -> tuple[int, ...]:
        return tuple(layer[0].units for layer in self.layers)

    @property
    def output_size(self) -> int:
        return self._merged_size(self.units[-1])

    @property
    def has_bias(self) -> bool:
        return self.layers[0][0].has_bias

    @property
    def parameter_count(self) -> int:
        return sum(t.size for layer in self.layers for cell in layer for t in cell.tensors())

    def cells(self) -> list[Cell]:
        """Every cell, in state order (``layer * directions + direction``)."""
        return [cell for layer in self.layers for cell in layer]

    def astype(self, dtype: str | np.dtype) -> RNN:
        """The same model with every tensor cast to `dtype` (float32 or float64)."""
        dtype = np.dtype(dtype)
        if dtype == self.dtype:
            return self
        if str(dtype) not in DTYPES:
            raise UsageError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype}")

        def cast(t: np.ndarray | None) -> np.ndarray | None:
            return None if t is None else t.astype(dtype)

        layers = tuple(
            tuple(Cell(cast(c.w_ih), cast(c.w_hh), cast(c.b_ih), cast(c.b_hh)) for c in layer) for layer in self.layers
        )
        return RNN(layers, self.activation, self.merge, self.reverse, self.clip, self.leak)

    def working_bytes(self, timesteps: int, batch: int) -> int:
        """Memory a forward pass over (batch, timesteps) needs, roughly, in bytes."""
        per_step = self.input_size + sum(2 * self.directions * h for h in self.units) + self.output_size
        packed = available_threads() * max(self.units) ** 2  # the kernel's copy of W_hh^T in each thread
        return (timesteps * batch * per_step + packed) * self.dtype.itemsize

    def forward(
        self,
        x: np.ndarray,
        initial_state: np.ndarray | Sequence[np.ndarray] | None = None,
        lengths: np.ndarray | None = None,
        time_major: bool = False,
        out: np.ndarray | None = None,
    ) -> Output:
        """Run the model over `x`: (T, F) one sequence, (B, T, F) a batch, or (T, B, F) if `time_major`.

        `initial_state`: (layers*directions, [B,] H) or a list of (…, H) arrays (zeros if None).
        `lengths` (B,): valid timesteps per batch row; later steps output zeros and leave the
        state alone, and the backward direction starts at each row's last valid step.
        `out`: a C-contiguous array of the output sequence's shape and dtype to compute it in (the
        last layer works in it directly); the returned sequence is then `out`.
        """
        x = np.asarray(x)
        if x.ndim not in (2, 3):
            raise ShapeError(f"input must be (T, F) or 3-D, got shape {x.shape}")
        if x.shape[-1] != self.input_size:
            raise ShapeError(
                f"the model takes {self.input_size} input features but the data has {x.shape[-1]} "
                f"(shape {x.shape}); give data with {self.input_size} columns or matching weights"
            )
        single = x.ndim == 2
        # Work in the caller's layout (no transposes of big arrays): time on axis 0 or 1.
        sequence = x[None] if single else x
        time_axis = 0 if time_major and not single else 1
        steps = sequence.shape[time_axis]
        batch = sequence.shape[1 - time_axis]
        states = self._initial_states(initial_state, batch, single)
        lengths = self._check_lengths(lengths, batch, steps, single)
        target = None
        if out is not None:
            self._check_out(out, (*x.shape[:-1], self.output_size))
            if np.may_share_memory(out, x):
                raise ShapeError("out must not overlap the input: the first layer reads x while the last writes out")
            target = out[None] if single else out

        finals = []
        projections = self._projection_weights()
        for k, layer in enumerate(self.layers):
            last = k == len(self.layers) - 1
            outputs = []
            for d, cell in enumerate(layer):
                into = target if last and self.directions == 1 else None
                weights, bias = projections[k * self.directions + d]
                buffer = _project(sequence, weights, bias, time_axis, into)
                h = states[k * self.directions + d]
                by_step = buffer if time_axis == 0 else buffer.transpose(1, 0, 2)  # (T, B, H) view
                _recur(by_step, cell.w_hh, h, self, reverse=self.reverse or d == 1, lengths=lengths)
                outputs.append(buffer)
                finals.append(h)
            sequence = self._merge(outputs, target if last else None)
        final = self._merge(finals[-self.directions :])
        if single:
            return Output(sequence[0] if out is None else out, final[0], tuple(h[0] for h in finals))
        return Output(sequence, final, tuple(finals))

    def _check_out(self, out: np.ndarray, shape: tuple[int, ...]) -> None:
        if out.shape != shape or out.dtype != self.dtype or not out.flags.c_contiguous or not out.flags.writeable:
            raise ShapeError(
                f"out must be a writable C-contiguous {self.dtype} array of shape {shape}, got {out.dtype} {out.shape}"
            )

    def _merge(self, parts: list[np.ndarray], out: np.ndarray | None = None) -> np.ndarray:
        if len(parts) == 1:  # with `out`, the last layer was computed in it
            return parts[0]
        forward, backward = parts
        if self.merge == "concat":
            return np.concatenate(parts, axis=-1, out=out)
        if self.merge == "sum":
            return np.add(forward, backward, out=out)
        if self.merge == "mul":
            return np.multiply(forward, backward, out=out)
        merged = np.add(forward, backward, out=out)
        merged *= self.dtype.type(0.5)
        return merged

    def _initial_states(
        self, initial: np.ndarray | Sequence[np.ndarray] | None, batch: int, single: bool
    ) -> list[np.ndarray]:
        cells = self.cells()
        if initial is None:
            return [np.zeros((batch, cell.units), self.dtype) for cell in cells]
        parts = list(initial)
        if len(parts) != len(cells):
            raise ShapeError(
                f"the initial state has {len(parts)} entries but the model has {len(cells)} "
                f"(layers*directions = {len(self.layers)}*{self.directions})"
            )
        states = []
        for i, (part, cell) in enumerate(zip(parts, cells)):
            expected = (cell.units,) if single else (batch, cell.units)
            part = np.asarray(part)
            if part.shape != expected:
                raise ShapeError(
                    f"initial state entry {i} has shape {part.shape}, expected {expected} "
                    f"(layers*directions, {'' if single else 'batch, '}units)"
                )
            states.append(np.array(part, dtype=self.dtype).reshape(batch, cell.units))
        return states

    def _check_lengths(self, lengths: np.ndarray | None, batch: int, steps: int, single: bool) -> np.ndarray | None:
        if lengths is None:
            return None
        lengths = np.asarray(lengths)
        if single:
            lengths = lengths.reshape(-1)
        if lengths.shape != (batch,) or (
            lengths.dtype.kind not in "iu" and not (lengths.dtype.kind == "f" and np.all(np.mod(lengths, 1) == 0))
        ):
            raise ShapeError(f"lengths must be {batch} whole numbers (one per batch row), got shape {lengths.shape}")
        lengths = lengths.astype(np.int64)
        if lengths.min() < 0 or lengths.max() > steps:
            raise ShapeError(
                f"lengths must lie in 0..{steps} (the number of timesteps), got {lengths.min()}..{lengths.max()}"
            )
        return None if np.all(lengths == steps) else lengths


class Stack:
    """RNNs run one after another, for stacks whose layers differ in settings (a Keras Sequential).

    `keras_order[i]` marks a part whose reversed outputs are passed on in processing order, as
    Keras ``go_backwards=True`` does, instead of aligned to input time. The state is the parts'
    states concatenated, in order. Properties mirror :class:`RNN`'s for summaries.
    """

    __slots__ = ("keras_order", "parts")

    def __init__(self, parts: tuple[RNN, ...], keras_order: tuple[bool, ...] = ()) -> None:
        if not parts:
            raise WeightsError("a stack needs at least one part")
        self.parts, self.keras_order = parts, keras_order or (False,) * len(parts)
        if len(self.keras_order) != len(self.parts):
            raise WeightsError("keras_order needs one flag per part")
        for k, (below, above) in enumerate(zip(self.parts, self.parts[1:])):
            if above.input_size != below.output_size:
                raise WeightsError(
                    f"part {k + 1} takes {above.input_size} inputs but part {k} gives {below.output_size}"
                )
        if len({p.dtype for p in self.parts}) != 1:
            raise WeightsError("all parts of a stack must share one dtype")

    def __repr__(self) -> str:
        return f"Stack(parts={self.parts!r}, keras_order={self.keras_order})"

    layers = property(lambda self: tuple(layer for p in self.parts for layer in p.layers))
    units = property(lambda self: tuple(u for p in self.parts for u in p.units))
    input_size = property(lambda self: self.parts[0].input_size)
    output_size = property(lambda self: self.parts[-1].output_size)
    dtype = property(lambda self: self.parts[0].dtype)
    directions = property(lambda self: max(p.directions for p in self.parts))
    reverse = property(lambda self: any(p.reverse for p in self.parts))
    has_bias = property(lambda self: all(p.has_bias for p in self.parts))
    parameter_count = property(lambda self: sum(p.parameter_count for p in self.parts))
    activation = property(lambda self: ",".join(p.activation for p in self.parts))
    merge = property(lambda self: ",".join(p.merge for p in self.parts))
    clip = property(lambda self: self._common("clip"))
    leak = property(lambda self: self._common("leak"))

    def _common(self, name: str) -> float | None:
        """A setting every part shares, else None (the summary then names no single value)."""
        values = {getattr(p, name) for p in self.parts}
        return values.pop() if len(values) == 1 else None

    def cells(self) -> list[Cell]:
        return [cell for p in self.parts for cell in p.cells()]

    def astype(self, dtype: str | np.dtype) -> Stack:
        return Stack(tuple(p.astype(dtype) for p in self.parts), self.keras_order)

    def working_bytes(self, timesteps: int, batch: int) -> int:
        return max(p.working_bytes(timesteps, batch) for p in self.parts)

    def forward(
        self,
        x: np.ndarray,
        initial_state: np.ndarray | Sequence[np.ndarray] | None = None,
        lengths: np.ndarray | None = None,
        time_major: bool = False,
        out: np.ndarray | None = None,
    ) -> Output:
        """As :meth:`RNN.forward`; parts marked in `keras_order` hand on their outputs flipped in time."""
        if lengths is not None and any(self.keras_order):
            raise ShapeError("--lengths cannot be combined with Keras go_backwards ordering")
        states = None if initial_state is None else list(initial_state)
        time_axis = 0 if time_major or x.ndim == 2 else 1
        collected: list[np.ndarray] = []
        output = None
        for k, (part, flip) in enumerate(zip(self.parts, self.keras_order)):
            count = len(part.cells())
            mine = None if states is None else states[:count]
            states = None if states is None else states[count:]
            into = out if k == len(self.parts) - 1 and not flip else None
            output = part.forward(x, initial_state=mine, lengths=lengths, time_major=time_major, out=into)
            x = np.flip(output.sequence, axis=time_axis) if flip else output.sequence
            collected.extend(output.state)
        if out is None:
            x = np.ascontiguousarray(x)
        elif x is not out:  # the last part hands on its outputs flipped: copied in
            self.parts[-1]._check_out(out, x.shape)
            out[...] = x
            x = out
        return Output(x, output.final, tuple(collected))


def parts_of(model: RNN | Stack) -> list[tuple[RNN, bool]]:
    """(RNN, keras_order) for every part: one for an RNN, each part of a Stack."""
    if isinstance(model, Stack):
        return list(zip(model.parts, model.keras_order))
    return [(model, False)]


def part_facts(model: RNN | Stack) -> list[dict[str, Any]]:
    """The settings of every part of `model` (one for an RNN), JSON-ready: what differs between layers."""
    return [
        {
            "layers": len(part.layers),
            "units": list(part.units),
            "directions": part.directions,
            "activation": part.activation,
            "merge": part.merge if part.directions == 2 else None,
            "reverse": part.reverse,
            "keras_order": flag,
            "clip": part.clip,
            "leak": part.leak,
            "bias": part.has_bias,
        }
        for part, flag in parts_of(model)
    ]


BLOCK_STEPS = 1 << 15
"""Timesteps per input-projection block. Long inputs are streamed in blocks of this size too."""

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")
"""Thread limits honoured: BLAS reads them, and rnncli's own threads follow the first one set."""

MIN_THREAD_WORK = 1 << 24
"""Multiply-adds per thread (0.1-0.3 ms of work): starting and joining a thread costs about 0.15 ms,
so smaller jobs measured no faster or slower with threads (2026-12-01, 2 cores)."""

RECURRENCE_CHUNK_WORK = 1 << 28
"""Multiply-adds per call of the compiled recurrence (5-30 ms), what Ctrl-C waits for at most, unless:"""

CHUNK_ROW_STEPS = 8192
"""Row-steps per call at least: each call packs W_hh afresh (about 1 ns per element), which made calls of
2**28 multiply-adds 18% slower than one call at H = 1024 and 8 rows (34% on 2 threads); 2048 and 512
row-steps per call cost 1.4% and 6% (2026-12-01). At H = 1024 a call then takes about 0.25 s."""

MIN_THREAD_ROWS = 8
"""Batch rows per recurrence thread: the kernel runs 4 or more rows through one code path, whose
bits do not depend on where a row sits, so a batch split among threads gives the bits of one."""


def usable_cpus() -> int:
    """The cores this process may use (CPU affinity, e.g. a SLURM allocation), else the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def available_threads() -> int:
    """Threads for the input projection and the batch recurrence: the cores this process may run on,
    capped by the first of THREAD_VARIABLES set to a positive whole number (batch workers get 1 each)."""
    cores = usable_cpus()
    for name in THREAD_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return min(cores, int(value))
    return cores


def _thread_count(useful: int) -> int:
    """Threads for a job that `useful` threads could share: at most the available ones, at least 1 (the
    CPUs are only looked up when more than one would help)."""
    return min(available_threads(), useful) if useful > 1 else 1


def _project(
    sequence: np.ndarray, weights: np.ndarray, bias: np.ndarray | None, time_axis: int, into: np.ndarray | None = None
) -> np.ndarray:
    """The input projection x W_ih^T + b, block by block, in `sequence`'s layout (`weights` is W_ih^T).

    Each row is projected on its own terms (the kernel's `project`, or einsum without the kernel),
    never by BLAS, whose result for a row depends on how many rows share the call: so a sequence
    run in pieces, streamed, continued from a saved state or split among threads gives the bits
    of one whole run. `into`, if given, is the (C-contiguous) buffer to fill and return."""
    units, dtype = weights.shape[1], weights.dtype
    buffer = np.empty((*sequence.shape[:2], units), dtype) if into is None else into
    steps = sequence.shape[time_axis]
    for start in range(0, steps, BLOCK_STEPS):
        window = (slice(None),) * time_axis + (slice(start, min(start + BLOCK_STEPS, steps)),)
        block = np.ascontiguousarray(sequence[window], dtype=dtype)
        out = buffer[window]
        if out.flags.c_contiguous:
            pieces = [(block.reshape(-1, block.shape[-1]), out.reshape(-1, units))]
        else:  # a block of a long batch-first buffer: one piece per sequence
            pieces = list(zip(block, out))
        _project_pieces(pieces, weights, bias)
    return buffer


def _project_pieces(pieces: list[tuple[np.ndarray, np.ndarray]], weights: np.ndarray, bias: np.ndarray | None) -> None:
    """out = rows @ weights + bias for each (rows, out) piece, the rows shared evenly among threads."""
    total = sum(len(rows) for rows, _ in pieces)
    threads = _thread_count(total * weights.size // MIN_THREAD_WORK)
    edges = [total * k // threads for k in range(threads + 1)]
    shares: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(threads)]
    offset = 0
    for rows, out in pieces:
        for share, low, high in zip(shares, edges, edges[1:]):
            start, stop = max(low - offset, 0), min(high - offset, len(rows))
            if start < stop:
                share.append((rows[start:stop], out[start:stop]))
        offset += len(rows)
    _in_threads([lambda stop, share=share: _project_share(share, weights, bias, stop) for share in shares])


def _project_share(
    share: list[tuple[np.ndarray, np.ndarray]], weights: np.ndarray, bias: np.ndarray | None, stop: list[bool]
) -> None:
    for rows, out in share:
        if stop[0]:
            return
        if _kernel is not None:
            _kernel.project(rows, weights, out, bias)
        else:
            np.einsum("nf,fh->nh", rows, weights, out=out)
            if bias is not None:
                out += bias


def _in_threads(tasks: list[Callable[[list[bool]], None]]) -> None:
    """Run the tasks at once, the first in the calling thread (the work releases the GIL), and return
    only when all have ended. Each task gets a flag, `stop[0]`, that turns true when another failed or
    the caller was interrupted: it checks it between chunks of work. Re-raises the first error (an
    interrupt of the caller first)."""
    stop = [False]
    if len(tasks) == 1:
        tasks[0](stop)
        return
    import threading

    errors: list[BaseException] = []

    def guarded(task: Callable[[list[bool]], None]) -> None:
        try:
            task(stop)
        except BaseException as error:  # handed to the calling thread
            errors.append(error)
            stop[0] = True

    helpers = [threading.Thread(target=guarded, args=(task,), daemon=True) for task in tasks[1:]]
    try:
        for helper in helpers:
            helper.start()
        tasks[0](stop)
    except BaseException as error:
        errors.insert(0, error)
        stop[0] = True
    for helper in helpers:  # nothing may still write into the caller's arrays once this returns
        while helper.is_alive():
            try:
                helper.join()
            except BaseException as error:  # an interrupt while waiting: stop the others, then raise it
                errors.insert(0, error)
                stop[0] = True
    if errors:
        raise errors[0]


def _recur(
    by_step: np.ndarray, w_hh: np.ndarray, h: np.ndarray, model: RNN, reverse: bool, lengths: np.ndarray | None
) -> None:
    """Run the recurrence in place: `by_step` (T, B, H) projections -> outputs; `h` (B, H) -> final."""
    code = _KERNEL_ACTIVATIONS.get(model.activation)
    batch, units = by_step.shape[1:]
    if _kernel is not None and code is not None and lengths is None and _kernel_wins(batch, units):
        # in place, also on a batch-first buffer (the kernel takes any strides between rows)
        clip, leak, steps = model.clip or 0.0, model.leak, by_step.shape[0]

        def rows_through_time(rows: slice, stop: list[bool]) -> None:
            # in chunks of steps, the state carried in h (the same bits as one call), so that an
            # interrupt or another thread's failure is seen within a fraction of a second
            count = max(1, rows.stop - rows.start)  # no rows at all: one call that does nothing
            chunk = max(1, RECURRENCE_CHUNK_WORK // (count * units * units), CHUNK_ROW_STEPS // count)
            starts = range(0, steps, chunk)
            for start in reversed(starts) if reverse else starts:
                if stop[0]:
                    return
                window = by_step[start : start + chunk, rows]
                _kernel.recur(window, w_hh, h[rows], code, clip, leak, reverse)

        work = steps * batch * units * units
        _in_threads([lambda stop, rows=rows: rows_through_time(rows, stop) for rows in _row_ranges(batch, work)])
        return
    _recur_numpy(by_step, w_hh, h, ACTIVATIONS[model.activation], model.clip, model.leak, reverse, lengths)


def _row_ranges(batch: int, work: int) -> list[slice]:
    """Batch rows shared among threads for the whole recurrence (rows never depend on each other, so
    threads never wait): at least MIN_THREAD_ROWS rows each (less up to 2), starting on multiples of 4."""
    threads = _thread_count(min(batch // MIN_THREAD_ROWS, work // MIN_THREAD_WORK))
    edges = [(batch * k // threads + 2) // 4 * 4 for k in range(threads)] + [batch]
    return [slice(start, stop) for start, stop in zip(edges, edges[1:])]


def _kernel_wins(batch: int, units: int) -> bool:
    """Whether the compiled loop beats a BLAS product per step. Measured on whole forward passes
    (2026-12-01, AVX-512, 2 cores, float32): from 4 batch rows the kernel, its rows shared among
    threads, took 0.45-0.83x numpy's time at every shape tried (H 128-2048, B*H up to 2**20; with one
    thread each, 0.34-0.97x). Below 4 rows the matrix-vector work is bound by reading the recurrent
    matrix, where two BLAS threads win from H = 768 (2.6x the kernel's speed for one sequence)."""
    return batch >= 4 or units <= 512


def _recur_numpy(
    buffer: np.ndarray,
    w_hh: np.ndarray,
    h: np.ndarray,
    activate: Callable[[np.ndarray], None],
    clip: float | None,
    leak: float,
    reverse: bool,
    lengths: np.ndarray | None,
) -> None:
    single = h.shape[0] == 1  # one sequence: matrix-vector products (BLAS gemv; a 1-row matmul is far slower)
    rows = buffer[:, 0] if single else buffer
    recurrent = w_hh if single else np.ascontiguousarray(w_hh.T)
    limits = None if lengths is None else (lengths[0] if single else lengths[:, None])
    # Two contiguous state buffers used in turn: every product reads and writes contiguous memory even
    # when `buffer` is a strided (batch-first) view; each step's result is copied into its row once.
    previous = h[0].copy() if single else h.copy()
    current = np.empty_like(previous)
    for t in range(buffer.shape[0] - 1, -1, -1) if reverse else range(buffer.shape[0]):
        out = rows[t]
        if single:
            np.dot(recurrent, previous, out=current)
        else:
            np.matmul(previous, recurrent, out=current)
        current += out
        if clip is not None:
            np.clip(current, -clip, clip, out=current)
        activate(current)
        if leak != 1:
            current *= leak
            current += (1 - leak) * previous
        if limits is not None:
            active = t < limits
            np.copyto(current, previous, where=~active)  # rows past their length keep their state
            np.multiply(current, active, out=out)  # and output zeros
        else:
            out[...] = current
        previous, current = current, previous
    h[...] = previous


def cell_step(
    cell: Cell, x: np.ndarray, h: np.ndarray, activation: str = "tanh", clip: float | None = None, leak: float = 1.0
) -> np.ndarray:
    """One step of one cell, computed directly: x (F,) or (B, F), h (H,) or (B, H) -> new h."""
    pre = x @ cell.w_ih.T + h @ cell.w_hh.T
    if cell.has_bias:
        pre = pre + cell.b_ih + cell.b_hh
    if clip is not None:
        pre = np.clip(pre, -clip, clip)
    pre = np.array(pre, dtype=cell.w_ih.dtype)
    ACTIVATIONS[activation](pre)
    return (1 - leak) * h + leak * pre if leak != 1 else pre
