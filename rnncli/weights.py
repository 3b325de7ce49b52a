"""Weight files: the PyTorch ``torch.nn.RNN`` state_dict layout, to and from :class:`RNN`.

Tensors are named ``weight_ih_l{k}`` (H, F), ``weight_hh_l{k}`` (H, H), ``bias_ih_l{k}`` and
``bias_hh_l{k}`` (H,), with a ``_reverse`` suffix for the backward direction. Settings the
tensors cannot carry (activation, merge, reverse, clip, leak) travel as JSON in the
``__rnncli__`` entry; no file is ever unpickled.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any, BinaryIO

import numpy as np

from .errors import RnnCliError, WeightsError
from .io import PathOrFile, read_npz, write_array
from .model import RNN, Cell

METADATA_KEY = "__rnncli__"
SETTINGS = ("activation", "merge", "reverse", "clip", "leak")
_NAME = re.compile(r"^(weight_ih|weight_hh|bias_ih|bias_hh)_l(\d+)(_reverse)?$")


def to_state_dict(model: RNN) -> dict[str, np.ndarray]:
    """The model's tensors under PyTorch state_dict names."""
    tensors = {}
    for k, layer in enumerate(model.layers):
        for d, cell in enumerate(layer):
            suffix = f"_l{k}" + ("_reverse" if d else "")
            tensors["weight_ih" + suffix] = cell.w_ih
            tensors["weight_hh" + suffix] = cell.w_hh
            if cell.has_bias:
                tensors["bias_ih" + suffix] = cell.b_ih
                tensors["bias_hh" + suffix] = cell.b_hh
    return tensors


def settings_of(model: RNN) -> dict[str, Any]:
    """The settings that tensors alone cannot carry."""
    return {name: getattr(model, name) for name in SETTINGS}


def from_state_dict(
    tensors: Mapping[str, np.ndarray], settings: Mapping[str, Any] | None = None, source: str = "weights"
) -> RNN:
    """Build an :class:`RNN` from PyTorch-named tensors; layers, directions and sizes are inferred."""
    found: dict[tuple[int, int], dict[str, np.ndarray]] = {}
    unknown = []
    for name, tensor in tensors.items():
        match = _NAME.match(name)
        if not match:
            unknown.append(name)
            continue
        kind, layer, reverse = match.groups()
        found.setdefault((int(layer), 1 if reverse else 0), {})[kind] = np.asarray(tensor)
    if unknown:
        raise WeightsError(
            f"{source}: unexpected tensor names {', '.join(sorted(unknown)[:5])}; expected PyTorch nn.RNN "
            "names such as weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0 (and _reverse)"
        )
    if not found:
        raise WeightsError(f"{source}: no RNN tensors found (expected weight_ih_l0, weight_hh_l0, …)")
    layers = 1 + max(k for k, _ in found)
    directions = 1 + max(d for _, d in found)
    stack = []
    for k in range(layers):
        layer = []
        for d in range(directions):
            label = f"l{k}{'_reverse' if d else ''}"
            parts = found.get((k, d))
            if parts is None or "weight_ih" not in parts or "weight_hh" not in parts:
                raise WeightsError(f"{source}: weight_ih_{label} and weight_hh_{label} are both needed; one is missing")
            for kind in ("bias_ih", "bias_hh"):
                if (kind in parts) != ("bias_ih" in parts or "bias_hh" in parts):
                    raise WeightsError(f"{source}: {kind}_{label} is missing while its partner bias is present")
            dtype = parts["weight_ih"].dtype
            if dtype.kind != "f":
                raise WeightsError(f"{source}: weight_ih_{label} has dtype {dtype}; weights must be float32 or float64")
            cast = {kind: t.astype(np.float64 if dtype == np.float64 else np.float32) for kind, t in parts.items()}
            layer.append(Cell(cast["weight_ih"], cast["weight_hh"], cast.get("bias_ih"), cast.get("bias_hh")))
        stack.append(tuple(layer))
    settings = dict(settings or {})
    try:
        return RNN(tuple(stack), **{k: v for k, v in settings.items() if k in SETTINGS})
    except RnnCliError as exc:
        raise WeightsError(f"{source}: {exc}") from None


def save_weights(model: RNN, fp: BinaryIO, fmt: str = "npz") -> None:
    """Write the model as an .npz of PyTorch-named tensors plus its settings as JSON."""
    if fmt != "npz":
        raise WeightsError(f"weights can be saved as .npz, not {fmt}")
    arrays: dict[str, np.ndarray] = dict(to_state_dict(model))
    arrays[METADATA_KEY] = np.array(json.dumps({"format": "rnncli-weights", "version": 1, **settings_of(model)}))
    write_array(fp, arrays, "npz")


def read_weights(source: PathOrFile, *, name: str | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The tensors of an .npz weights file and the rnncli settings stored with them (if any)."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        name = name or path
        if os.path.splitext(path)[1].lower() != ".npz":
            raise WeightsError(f"{name}: weights are read from .npz files (PyTorch state_dict names)")
        if not os.path.isfile(path):
            raise WeightsError(f"{name}: no such weights file" if not os.path.exists(path) else f"{name}: not a file")
        with open(path, "rb") as fp:
            tensors = read_npz(fp, name, text_keys=(METADATA_KEY,))
    else:
        name = name or str(getattr(source, "name", "<weights>"))
        tensors = read_npz(source, name, text_keys=(METADATA_KEY,))
    return tensors, _parse_settings(tensors.pop(METADATA_KEY, None), name)


def load_weights(source: PathOrFile, *, name: str | None = None) -> RNN:
    """Read an .npz of PyTorch-named tensors (and rnncli settings, when present) into an :class:`RNN`."""
    tensors, settings = read_weights(source, name=name)
    return from_state_dict(tensors, settings, name or str(source))


def _parse_settings(entry: np.ndarray | None, name: str) -> dict[str, Any]:
    if entry is None:
        return {}
    try:
        settings = json.loads(str(entry.reshape(())))
    except (ValueError, TypeError):
        raise WeightsError(
            f"{name}: the {METADATA_KEY} entry is not valid JSON; remove it or re-save the weights"
        ) from None
    if not isinstance(settings, dict):
        raise WeightsError(f"{name}: the {METADATA_KEY} entry must be a JSON object")
    return {k: v for k, v in settings.items() if k in SETTINGS}


ONNX_ACTIVATIONS = {
    "Tanh": "tanh",
    "Relu": "relu",
    "Sigmoid": "sigmoid",
    "Softsign": "softsign",
    "Softplus": "softplus",
}
# ONNX activations with parameters that rnncli has only at one setting: (name, alpha, beta) -> rnncli name
_ONNX_PARAMETRIC = {
    ("Elu", 1.0, None): "elu",
    ("Affine", 1.0, 0.0): "linear",
    ("HardSigmoid", 1 / 6, 0.5): "hard_sigmoid",
}
_ONNX_DEFAULTS = {"Elu": (1.0, None), "Affine": (1.0, 0.0), "HardSigmoid": (0.2, 0.5)}


def _onnx_activation(name: str, alpha: float | None, beta: float | None, source: str) -> str:
    if name in ONNX_ACTIVATIONS:
        return ONNX_ACTIVATIONS[name]
    default_alpha, default_beta = _ONNX_DEFAULTS.get(name, (None, None))
    alpha = default_alpha if alpha is None else alpha
    beta = default_beta if beta is None else beta
    for (known, a, b), ours in _ONNX_PARAMETRIC.items():
        if known == name and np.isclose(alpha, a) and (b is None or np.isclose(beta, b)):
            return ours
    raise WeightsError(
        f"{source}: ONNX activation {name}(alpha={alpha}, beta={beta}) has no rnncli equivalent; "
        f"rnncli runs {', '.join(ONNX_ACTIVATIONS)}, Elu(1), Affine(1, 0) and HardSigmoid(1/6, 1/2)"
    )


def from_onnx(
    w: np.ndarray,
    r: np.ndarray,
    b: np.ndarray | None = None,
    *,
    direction: str = "forward",
    activations: list[str] | None = None,
    activation_alpha: list[float] | None = None,
    activation_beta: list[float] | None = None,
    clip: float | None = None,
    source: str = "onnx",
) -> RNN:
    """One ONNX ``RNN`` node as a one-layer :class:`RNN`: W (D, H, F), R (D, H, H), B (D, 2H) = [Wb, Rb].

    Bidirectional nodes merge by concatenation, as ONNX's ``Y`` does when its direction axis is flattened.
    """
    directions = {"forward": 1, "reverse": 1, "bidirectional": 2}.get(direction)
    if directions is None:
        raise WeightsError(f"{source}: unknown RNN direction '{direction}'; expected forward, reverse or bidirectional")
    if w.ndim != 3 or r.ndim != 3 or w.shape[0] != directions or r.shape[0] != directions:
        raise WeightsError(
            f"{source}: W {w.shape} and R {r.shape} must be (directions={directions}, hidden, …) "
            f"for direction {direction}"
        )
    units = w.shape[1]
    if b is not None and b.shape != (directions, 2 * units):
        raise WeightsError(
            f"{source}: B has shape {b.shape}, expected ({directions}, {2 * units}) to match W {w.shape}"
        )
    names = activations or ["Tanh"] * directions
    alphas = list(activation_alpha or [])
    betas = list(activation_beta or [])
    chosen = {
        _onnx_activation(name, alphas[i] if i < len(alphas) else None, betas[i] if i < len(betas) else None, source)
        for i, name in enumerate(names[:directions])
    }
    if len(chosen) != 1:
        raise WeightsError(f"{source}: directions use different activations {names}; rnncli runs one activation")
    dtype = np.float64 if w.dtype == np.float64 else np.float32
    cells = tuple(
        Cell(
            w[d].astype(dtype),
            r[d].astype(dtype),
            None if b is None else b[d, :units].astype(dtype),
            None if b is None else b[d, units:].astype(dtype),
        )
        for d in range(directions)
    )
    try:
        return RNN((cells,), activation=chosen.pop(), reverse=direction == "reverse", clip=clip)
    except RnnCliError as exc:
        raise WeightsError(f"{source}: {exc}") from None


def from_keras(kernel: np.ndarray, recurrent_kernel: np.ndarray, bias: np.ndarray | None = None) -> Cell:
    """One Keras SimpleRNN cell (kernel (F, H), recurrent_kernel (H, H), bias (H,)) in PyTorch layout."""
    dtype = np.float64 if kernel.dtype == np.float64 else np.float32
    w_ih = np.ascontiguousarray(kernel.T, dtype=dtype)
    w_hh = np.ascontiguousarray(recurrent_kernel.T, dtype=dtype)
    if bias is None:
        return Cell(w_ih, w_hh)
    return Cell(w_ih, w_hh, bias.astype(dtype), np.zeros_like(bias, dtype=dtype))
