"""Seeded random weights: Keras, PyTorch, seed-notebook, normal and echo-state (reservoir) schemes.

Every tensor is drawn in float64 from ``numpy.random.default_rng(seed)`` in a fixed order
(layer by layer, forward then backward: W_ih, W_hh, b_ih, b_hh) and then cast, so a seed gives
the same weights on every machine and in both dtypes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import UsageError
from .io import memory_budget
from .model import DTYPES, RNN, Cell

INITS = ("keras", "torch", "uniform", "normal", "esn")


def _glorot_uniform(rng: np.random.Generator, units: int, features: int) -> np.ndarray:
    limit = np.sqrt(6.0 / (features + units))
    return rng.uniform(-limit, limit, size=(features, units)).T  # Keras draws the (F, H) kernel


def _orthogonal(rng: np.random.Generator, units: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((units, units)))
    return (q * np.sign(np.diag(r))).T  # Keras draws the (H, H) recurrent kernel


def spectral_radius(matrix: np.ndarray) -> float:
    """The largest absolute eigenvalue of a square matrix."""
    if matrix.size == 0:
        return 0.0
    return float(np.max(np.abs(np.linalg.eigvals(matrix.astype(np.float64)))))


def _draw_cell(rng: np.random.Generator, init: str, units: int, features: int) -> list[np.ndarray]:
    if init == "keras":
        return [_glorot_uniform(rng, units, features), _orthogonal(rng, units), np.zeros(units), np.zeros(units)]
    if init == "torch":
        k = 1.0 / np.sqrt(units)
        shapes = [(units, features), (units, units), (units,), (units,)]
        return [rng.uniform(-k, k, size=shape) for shape in shapes]
    if init == "uniform":
        return [rng.random((units, features)), rng.random((units, units)), rng.random(units), np.zeros(units)]
    if init == "normal":
        return [
            rng.standard_normal((units, features)) / np.sqrt(features),
            rng.standard_normal((units, units)) / np.sqrt(units),
            np.zeros(units),
            np.zeros(units),
        ]
    if init == "esn":
        return [
            rng.uniform(-1, 1, size=(units, features)),
            rng.standard_normal((units, units)),
            rng.uniform(-1, 1, size=units),
            np.zeros(units),
        ]
    raise UsageError(f"unknown init '{init}'; choose one of {', '.join(INITS)}")


def init_model(
    input_size: int,
    units: int | Sequence[int],
    *,
    layers: int | None = None,
    bidirectional: bool = False,
    merge: str = "concat",
    reverse: bool = False,
    activation: str = "tanh",
    bias: bool = True,
    clip: float | None = None,
    leak: float = 1.0,
    init: str = "keras",
    seed: int = 0,
    dtype: str = "float32",
    spectral_radius_target: float | None = None,
    input_scaling: float | None = None,
    density: float | None = None,
) -> RNN:
    """Build an :class:`RNN` with seeded random weights.

    `units` is one size for every layer or one per layer; `layers` defaults to their count.
    `spectral_radius_target`, `input_scaling` and `density` (share of non-zero W_hh entries)
    shape the weights of any scheme; ``init="esn"`` defaults them to 0.9, 1 and 0.1.
    """
    sizes = [units] if isinstance(units, int) else list(units)
    if layers is None:
        layers = len(sizes)
    if len(sizes) == 1:
        sizes = sizes * layers
    if len(sizes) != layers or layers < 1:
        raise UsageError(f"--units gives {len(sizes)} sizes but --layers is {layers}; give one size or one per layer")
    if any(size < 1 for size in sizes) or input_size < 1:
        raise UsageError(f"units must be positive, got {','.join(map(str, sizes))}")
    if dtype not in DTYPES:
        raise UsageError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype}")
    if init not in INITS:
        raise UsageError(f"unknown init '{init}'; choose one of {', '.join(INITS)}")
    if init == "esn":
        spectral_radius_target = 0.9 if spectral_radius_target is None else spectral_radius_target
        density = 0.1 if density is None else density
    if density is not None and not 0 < density <= 1:
        raise UsageError(f"density must be in (0, 1], got {density}")
    if spectral_radius_target is not None and spectral_radius_target < 0:
        raise UsageError(f"spectral radius must be >= 0, got {spectral_radius_target}")
    directions = 2 if bidirectional else 1
    _check_parameter_memory(input_size, sizes, directions, merge, np.dtype(dtype).itemsize)

    rng = np.random.default_rng(seed)
    stack = []
    features = input_size
    for size in sizes:
        layer = []
        for _ in range(directions):
            w_ih, w_hh, b_ih, b_hh = _draw_cell(rng, init, size, features)
            if input_scaling is not None:
                w_ih = w_ih * input_scaling
                b_ih = b_ih * input_scaling
            w_hh = _recurrent(rng, w_hh, density, spectral_radius_target)
            cast = [np.ascontiguousarray(t, dtype=dtype) for t in (w_ih, w_hh, b_ih, b_hh)]
            layer.append(Cell(*cast) if bias else Cell(cast[0], cast[1]))
        stack.append(tuple(layer))
        features = 2 * size if directions == 2 and merge == "concat" else size
    return RNN(tuple(stack), activation=activation, merge=merge, reverse=reverse, clip=clip, leak=leak)


_REDRAWS = 100
"""Masks drawn for a sparse W_hh before giving up on one whose spectral radius is not 0."""
_NEGLIGIBLE = 1e-6
"""A spectral radius below this share of the largest weight is 0 in effect: there is nothing to rescale."""


def _recurrent(rng: np.random.Generator, w_hh: np.ndarray, density: float | None, target: float | None) -> np.ndarray:
    """W_hh thinned to `density` (share of non-zeros kept) and rescaled to spectral radius `target`.

    A thinned matrix whose non-zeros form no cycle has spectral radius 0 and cannot be rescaled; its
    mask is then drawn again from the same generator, so seeds that never hit one keep their weights.
    """
    sparse = density is not None and density < 1
    for _ in range(_REDRAWS if sparse else 1):
        thinned = w_hh * (rng.random(w_hh.shape) < density) if sparse else w_hh
        if target is None:
            return thinned
        radius = spectral_radius(thinned)
        if radius > _NEGLIGIBLE * np.abs(thinned).max(initial=0) or target == 0 or not sparse:
            return thinned * (target / radius) if radius > 0 else thinned
    units = len(w_hh)
    raise UsageError(
        f"{_REDRAWS} draws of a {units}×{units} recurrent matrix at density {density:g} all had spectral radius 0 "
        f"(too few non-zeros to form a cycle), so none scales to spectral radius {target:g}; "
        f"use a higher --density, e.g. {min(1.0, 4 / units):g}"
    )


def _check_parameter_memory(input_size: int, sizes: list[int], directions: int, merge: str, itemsize: int) -> None:
    count = 0
    features = input_size
    for size in sizes:
        count += directions * (size * features + size * size + 2 * size)
        features = 2 * size if directions == 2 and merge == "concat" else size
    needed = count * 8 * 2 + count * itemsize  # float64 draws (two live at once) + the cast copy
    if needed > memory_budget():
        raise UsageError(
            f"these sizes need about {needed / 2**30:,.1f} GiB for the weights alone "
            f"({count:,} parameters), more than the {memory_budget() / 2**30:.1f} GiB available; use fewer --units"
        )
