"""The `run` job as a library: model from options or a weights file, forward pass, facts for summaries.

Shared by the `run` and `batch` commands; nothing here prints or knows about click.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from .errors import ShapeError, UsageError, WeightsError
from .initializers import INITS, init_model
from .io import (
    LoadedArray,
    as_sequences,
    atomic_output,
    format_from_name,
    load_array,
    open_input,
    read_npz,
    write_array,
)
from .model import ENGINE, RNN, Output
from .weights import load_weights

RETURNS = ("sequence", "final", "both")
SATURATION = 0.99
_BOUNDED = {"tanh", "sigmoid", "hard_sigmoid", "softsign"}


@dataclass(frozen=True)
class ModelOptions:
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
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


DEFAULT_UNITS = 64
_RANDOM_ONLY = ("init", "seed", "spectral_radius", "input_scaling", "density")


@dataclass(frozen=True)
class BuiltModel:
    """A model and where its weights came from ("init keras, seed 0" or the weights file)."""

    model: RNN
    origin: str
    init: str | None = None
    seed: int | None = None
    weights: str | None = None


def build_model(options: ModelOptions, input_size: int) -> BuiltModel:
    """Load `options.weights` (checking it against the other options) or draw seeded weights."""
    if options.weights is None:
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
    model = load_weights(options.weights)
    model = _apply_settings(model, options)
    if options.dtype:
        model = model.astype(options.dtype)
    _check_agrees(model, options)
    if model.input_size != input_size:
        raise ShapeError(
            f"weights {options.weights} take {model.input_size} input features but the data has "
            f"{input_size}; give data with {model.input_size} features or other weights"
        )
    return BuiltModel(model, f"weights {options.weights}", weights=options.weights)


def _apply_settings(model: RNN, options: ModelOptions) -> RNN:
    """Options not stored in the weights file (file without settings) fill in; stored ones must agree."""
    changes = {}
    for name in ("activation", "merge", "reverse", "clip", "leak"):
        value = getattr(options, name)
        if value is not None and value != getattr(model, name):
            changes[name] = value
    if not changes:
        return model
    try:
        return RNN(
            model.layers,
            **{
                name: changes.get(name, getattr(model, name))
                for name in ("activation", "merge", "reverse", "clip", "leak")
            },
        )
    except UsageError:
        raise
    except WeightsError as exc:
        raise WeightsError(f"{options.weights}: {exc}") from None


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


def count_nonfinite(array: np.ndarray) -> dict[str, int]:
    """Counts of NaN and ±Inf entries."""
    if array.dtype.kind != "f":
        return {"nan": 0, "inf": 0}
    nan = int(np.count_nonzero(np.isnan(array)))
    inf = int(np.count_nonzero(np.isinf(array)))
    return {"nan": nan, "inf": inf}


def output_statistics(array: np.ndarray, activation: str) -> dict[str, Any]:
    """min/mean/max over finite values, non-finite counts, and the share of saturated units."""
    finite = array[np.isfinite(array)]
    stats: dict[str, Any] = count_nonfinite(array)
    if finite.size:
        stats.update(min=float(finite.min()), mean=float(finite.mean(dtype=np.float64)), max=float(finite.max()))
    else:
        stats.update(min=None, mean=None, max=None)
    if activation in _BOUNDED and array.size:
        limit = SATURATION if activation in ("tanh", "softsign") else None
        values = np.abs(array) if limit else np.abs(2 * array - 1)  # sigmoid-like: distance from 0/1
        stats["saturated"] = float(np.count_nonzero(values > SATURATION) / array.size)
    else:
        stats["saturated"] = None
    return stats


@dataclass
class RunFacts:
    """Everything a summary shows; `as_dict` is the --summary-json document."""

    input: dict[str, Any]
    model: dict[str, Any]
    output: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

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
        "parameters": model.parameter_count,
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


@dataclass(frozen=True)
class RunSettings:
    """How to run and what to return: "sequence", "final" or "both"; `time_major` 3-D layout."""

    return_mode: str = "sequence"
    time_major: bool = False


@dataclass
class RunResult:
    output: Output
    items: dict[str, np.ndarray]
    facts: RunFacts


def output_format(path: str, to: str | None, return_mode: str) -> str:
    """The output format: `to`, else from `path`'s extension, else npy (stdout); "both" needs npz."""
    fmt = to or (format_from_name(path) if path != "-" else None)
    if path != "-" and fmt is None:
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


def run_loaded(
    built: BuiltModel,
    loaded: LoadedArray,
    settings: RunSettings,
    initial_state: np.ndarray | None = None,
    lengths: np.ndarray | None = None,
) -> RunResult:
    """Run a built model over a loaded array; returns the outputs asked for and the run's facts."""
    x = as_sequences(loaded.array, loaded.source)
    facts = RunFacts(
        input={
            "source": loaded.source,
            "format": loaded.fmt,
            "key": loaded.key,
            "shape": list(loaded.array.shape),
            "dtype": str(loaded.array.dtype),
            **count_nonfinite(loaded.array),
        },
        model=describe_model(built),
    )
    if facts.input["nan"] or facts.input["inf"]:
        facts.warnings.append(
            f"{loaded.source} holds {facts.input['nan']} NaN and {facts.input['inf']} Inf values; "
            "they propagate through the recurrence"
        )
    output, seconds = timed_forward(
        built.model, x, initial_state=initial_state, lengths=lengths, time_major=settings.time_major
    )
    steps = x.shape[0] if x.ndim == 2 else x.shape[0] * x.shape[1]
    items = {"sequence": output.sequence, "final": output.final}
    if settings.return_mode != "both":
        items = {settings.return_mode: items[settings.return_mode]}
    stats = output_statistics(output.sequence, built.model.activation)
    if stats["nan"] or stats["inf"]:
        facts.warnings.append(f"the output holds {stats['nan']} NaN and {stats['inf']} Inf values")
    hint = saturation_hint(stats, built.origin)
    if hint:
        facts.warnings.append(hint)
    facts.output = {
        "return": settings.return_mode,
        "items": [{"name": k, "shape": list(v.shape), "dtype": str(v.dtype)} for k, v in items.items()],
        "stats": stats,
        "also": {},
    }
    facts.timing = {
        "seconds": seconds,
        "timesteps": int(steps),
        "timesteps_per_second": steps / seconds if seconds else float("inf"),
    }
    return RunResult(output, items, facts)


def process_file(
    built: BuiltModel,
    source: str,
    destination: str,
    settings: RunSettings,
    *,
    in_fmt: str | None = None,
    key: str | None = None,
    out_fmt: str | None = None,
) -> RunFacts:
    """Read `source`, run the model, write `destination` atomically; returns the run's facts."""
    out_fmt = output_format(destination, out_fmt, settings.return_mode)
    run = run_loaded(built, load_array(source, in_fmt, key=key), settings)
    with atomic_output(destination) as fp:
        write_array(fp, output_data(run.items, out_fmt), out_fmt)
    run.facts.output.update(destination=destination, format=out_fmt)
    return run.facts


def state_to_save(output: Output, path: str) -> np.ndarray | dict[str, np.ndarray]:
    """One (layers*directions, [B,] H) array for .npy; entries state_0, state_1, … for .npz (any sizes)."""
    if path.lower().endswith(".npz"):
        return {f"state_{i}": s for i, s in enumerate(output.state)}
    return output.state_tensor()


def load_state(path: str) -> np.ndarray | list[np.ndarray]:
    """An initial state from .npy/CSV (one tensor) or .npz (state_0, state_1, … as `state_to_save` writes)."""
    if not path.lower().endswith(".npz"):
        return load_array(path).array
    with open_input(path) as fp:
        entries = read_npz(fp, path)
    names = [f"state_{i}" for i in range(len(entries))]
    if sorted(entries) != sorted(names):
        raise ShapeError(f"{path}: expected entries {', '.join(names)} (as --save-state FILE.npz writes)")
    return [entries[name] for name in names]
