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


def load_weights(source: PathOrFile, *, name: str | None = None) -> RNN:
    """Read an .npz of PyTorch-named tensors (and rnncli settings, when present) into an :class:`RNN`."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        name = name or path
        if os.path.splitext(path)[1].lower() != ".npz":
            raise WeightsError(f"{name}: weights are read from .npz files (PyTorch state_dict names)")
        try:
            with open(path, "rb") as fp:
                tensors = read_npz(fp, name, text_keys=(METADATA_KEY,))
        except FileNotFoundError:
            raise WeightsError(f"{name}: no such weights file") from None
        except IsADirectoryError:
            raise WeightsError(f"{name}: is a directory, not a weights file") from None
    else:
        name = name or str(getattr(source, "name", "<weights>"))
        tensors = read_npz(source, name, text_keys=(METADATA_KEY,))
    settings = _parse_settings(tensors.pop(METADATA_KEY, None), name)
    return from_state_dict(tensors, settings, name)


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
