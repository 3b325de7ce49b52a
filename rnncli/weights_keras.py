"""Keras 3 weight files: `.keras` archives (config.json + model.weights.h5) and `.weights.h5`, in and out.

A `.keras` archive is a zip holding ``config.json`` (the model: a Sequential of ``InputLayer``,
``SimpleRNN`` and ``Bidirectional(SimpleRNN)`` layers here) and ``model.weights.h5``, where Keras
keys layers by position, not by the user's names: the i-th layer of class C (InputLayer left
out) is ``layers/<snake_case(C)>[_<n>]``, its cell's variables ``cell/vars/0`` (kernel (F, H)),
``1`` (recurrent kernel (H, H)) and ``2`` (bias (H,)), a Bidirectional's under ``forward_layer/``
and ``backward_layer/``. A `.weights.h5` is that HDF5 file alone: sizes come from the dataset
shapes, the layer order from how the shapes chain, and the settings from the options.

h5py (the ``rnncli[keras]`` extra) is imported only here, when such a file is read or written.
"""

from __future__ import annotations

import io
import json
import math
import re
import time
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any, BinaryIO

import numpy as np

from . import io as data_io
from .errors import WeightsError
from .io import archive_errors
from .model import MERGES, Cell, parts_of
from .weights import Found, Model, Part, from_keras, require, shown

KERAS_ACTIVATIONS = ("tanh", "relu", "sigmoid", "hard_sigmoid", "linear", "softsign", "softplus", "elu")
CONFIG_LIMIT = 64 << 20  # config.json is text; a bigger one is not a model rnncli can run
CONFIG_FILE, WEIGHTS_FILE, METADATA_FILE = "config.json", "model.weights.h5", "metadata.json"
SUPPORTED = "Sequential models made of SimpleRNN and Bidirectional(SimpleRNN) layers"


H5_ERRORS = (OSError, KeyError, ValueError, TypeError, RuntimeError, AttributeError)


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return shown(text, 120)


# --- reading ---------------------------------------------------------------------------------------


def read_keras(fp: BinaryIO, name: str) -> Found:
    """A Keras 3 `.keras` archive of a Sequential SimpleRNN model: parts as Keras runs them."""
    h5py = require("h5py", "keras", f"{name}: reading a .keras model")
    try:
        archive = zipfile.ZipFile(fp)
    except archive_errors() as exc:
        raise WeightsError(
            f"{name}: not a valid .keras (zip) archive ({_reason(exc)}); the file is damaged or cut short, "
            "save it again with model.save('model.keras')"
        ) from None
    with archive:
        members = {info.filename: info for info in archive.infolist()}
        missing = [m for m in (CONFIG_FILE, WEIGHTS_FILE) if m not in members]
        if missing:
            raise WeightsError(
                f"{name}: the archive has no {' or '.join(missing)}, so it is not a Keras 3 .keras model; "
                "save it with Keras 3: model.save('model.keras')"
            )
        config_text = _member(archive, members[CONFIG_FILE], name, CONFIG_LIMIT)
        weights = _member(archive, members[WEIGHTS_FILE], name, data_io.memory_budget())
        version = None
        if METADATA_FILE in members:
            with suppress(ValueError, TypeError, AttributeError, WeightsError):
                version = json.loads(_member(archive, members[METADATA_FILE], name, 1 << 20)).get("keras_version")
    try:
        config = json.loads(config_text)
    except (ValueError, RecursionError):
        raise WeightsError(f"{name}: config.json is not valid JSON; save the model again") from None
    specs, input_shape = _layer_specs(config, name)
    with _h5_file(h5py, io.BytesIO(weights), f"{name}[{WEIGHTS_FILE}]") as h5:
        parts, tensors = _parts_from_specs(h5py, specs, h5, name)
    _check_chain(parts, specs, input_shape, name)
    facts = {
        "keras_version": version if isinstance(version, str) else None,
        "input_shape": input_shape,
        "keras_layers": [{k: v for k, v in spec.items() if k != "label"} for spec in specs],
    }
    return_mode = "sequence" if specs[-1]["return_sequences"] else "final"
    return Found(parts, return_mode, tensors, facts)


def _member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, limit: int) -> bytes:
    label = f"{name}[{shown(info.filename)}]"
    if info.flag_bits & 0x1:
        raise WeightsError(f"{label}: the member is encrypted; rnncli reads plain .keras archives")
    resave = "if the model is genuine, save its weights with model.save_weights('model.weights.h5') and pass that"
    data_io.check_zip_member(info, label, WeightsError, resave)
    if info.file_size > limit:
        raise WeightsError(
            f"{label}: the member inflates to {info.file_size:,} bytes, more than the {limit:,} allowed "
            "(a zip bomb?); refusing to read it"
        )
    try:
        with archive.open(info) as stream:
            data = stream.read(info.file_size)  # inflated no further than the declared size, CRC checked there
    except archive_errors() as exc:
        raise WeightsError(f"{label}: corrupt archive member ({_reason(exc)}); re-create the file") from None
    if len(data) != info.file_size:
        raise WeightsError(
            f"{label}: the member holds {len(data):,} bytes but declares {info.file_size:,}; the archive is damaged, "
            "re-create the file"
        )
    return data


@contextmanager
def _h5_file(h5py: Any, source: Any, name: str) -> Iterator[Any]:
    try:
        h5 = h5py.File(source, "r")
    except H5_ERRORS as exc:
        raise WeightsError(
            f"{name}: not a readable HDF5 file ({_reason(exc)}); the file is damaged or cut short"
        ) from None
    try:
        with h5:
            yield h5
    except H5_ERRORS as exc:
        raise WeightsError(f"{name}: cannot read the HDF5 weights ({_reason(exc)}); the file is damaged") from None


def snake_case(class_name: str) -> str:
    """Keras's key for a layer class (``keras.src.utils.naming.to_snake_case``): SimpleRNN -> simple_rnn."""
    text = re.sub(r"\W+", "", class_name)
    text = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", text)
    return re.sub("([a-z])([A-Z])", r"\1_\2", text).lower()


def _layer_specs(config: Any, name: str) -> tuple[list[dict[str, Any]], list[Any] | None]:
    """The RNN layers of a Sequential config, each with its weights key; any other layer is an error."""
    if not isinstance(config, dict):
        raise WeightsError(f"{name}: config.json does not describe a model")
    kind = config.get("class_name")
    if kind != "Sequential":
        raise WeightsError(
            f"{name}: the model is a {shown(kind)}; rnncli runs Keras {SUPPORTED} (build it with keras.Sequential)"
        )
    inner = config.get("config")
    layers = inner.get("layers") if isinstance(inner, dict) else None
    if not isinstance(layers, list):
        raise WeightsError(f"{name}: config.json lists no layers")
    specs, counts, input_shape = [], {}, None
    for entry in layers:
        if not isinstance(entry, dict) or not isinstance(entry.get("config"), dict):
            raise WeightsError(f"{name}: config.json has a malformed layer entry")
        kind, cfg = entry.get("class_name"), entry["config"]
        label = f"layer '{shown(cfg.get('name', '?'))}'"
        if kind == "InputLayer":
            shape = cfg.get("batch_shape", cfg.get("batch_input_shape"))
            input_shape = shape if isinstance(shape, list) else None
            continue
        registered = entry.get("registered_name")
        if not isinstance(kind, str) or (isinstance(registered, str) and ">" in registered):
            raise WeightsError(
                f"{name}: {label} is a custom class {shown(registered or kind)}; rnncli runs Keras {SUPPORTED}"
            )
        key = snake_case(kind)
        counts[key] = counts.get(key, -1) + 1
        key = key if counts[key] == 0 else f"{key}_{counts[key]}"
        if kind not in ("SimpleRNN", "Bidirectional"):
            raise WeightsError(
                f"{name}: {label} is a {shown(kind)}; rnncli runs Keras {SUPPORTED} only "
                f"(run the {shown(kind)} on rnncli's output elsewhere, or save the model without it)"
            )
        spec = {"name": cfg.get("name", "?"), "class_name": kind, "key": key, "label": label}
        if kind == "SimpleRNN":
            spec.update(_rnn_config(cfg, label, name), merge_mode=None)
        else:
            spec.update(_bidirectional_config(cfg, label, name))
        specs.append(spec)
    if not specs:
        raise WeightsError(f"{name}: the model has no SimpleRNN layer")
    for spec in specs[:-1]:
        if not spec["return_sequences"]:
            raise WeightsError(
                f"{name}: {spec['label']} has return_sequences=False, so the layer after it gets no sequence; "
                "set return_sequences=True on every RNN layer but the last"
            )
    return specs, input_shape


def _rnn_config(cfg: dict[str, Any], label: str, name: str) -> dict[str, Any]:
    units = cfg.get("units")
    if not isinstance(units, int) or isinstance(units, bool) or units < 1:
        raise WeightsError(f"{name}: {label} has units={shown(units)!r}; expected a positive whole number")
    if cfg.get("return_state"):
        raise WeightsError(f"{name}: {label} has return_state=True, which a Sequential model cannot pass on")
    if cfg.get("time_major"):
        raise WeightsError(f"{name}: {label} is time_major (Keras 2); save the model with Keras 3")
    return {
        "units": units,
        "activation": _activation(cfg.get("activation", "tanh"), label, name),
        "bias": cfg.get("use_bias", True) is not False,
        "go_backwards": cfg.get("go_backwards", False) is True,
        "return_sequences": cfg.get("return_sequences", False) is True,
    }


def _activation(value: Any, label: str, name: str) -> str:
    if value is None:
        return "linear"
    if isinstance(value, dict) and isinstance(value.get("config"), str):  # {"class_name": "function", "config": …}
        value = value["config"]
    if value not in KERAS_ACTIVATIONS:
        raise WeightsError(
            f"{name}: {label} uses activation {shown(value)!r}; rnncli runs {', '.join(KERAS_ACTIVATIONS)}"
        )
    return value


def _bidirectional_config(cfg: dict[str, Any], label: str, name: str) -> dict[str, Any]:
    merge = cfg.get("merge_mode", "concat")
    if merge is None:
        raise WeightsError(
            f"{name}: {label} has merge_mode=None (two separate outputs); rnncli merges directions with concat, "
            "sum, mul or ave"
        )
    if merge not in MERGES:
        raise WeightsError(f"{name}: {label} has merge_mode={shown(merge)!r}; expected {', '.join(MERGES)}")
    forward = cfg.get("layer")
    backward = cfg.get("backward_layer")
    if backward is None and isinstance(forward, dict):  # Keras derives it from the forward layer
        backward = {**forward, "config": {**forward.get("config", {}), "go_backwards": True}}
    inner = []
    for entry in (forward, backward):
        if not isinstance(entry, dict) or not isinstance(entry.get("config"), dict):
            raise WeightsError(f"{name}: {label} has a malformed wrapped layer")
        if entry.get("class_name") != "SimpleRNN":
            raise WeightsError(
                f"{name}: {label} wraps a {shown(entry.get('class_name'))}; rnncli runs Bidirectional(SimpleRNN) only"
            )
        inner.append(_rnn_config(entry["config"], label, name))
    f, b = inner
    if f["go_backwards"] or not b["go_backwards"]:
        raise WeightsError(f"{name}: {label} has its forward and backward layers swapped (go_backwards)")
    for key in ("units", "activation", "bias", "return_sequences"):
        if f[key] != b[key]:
            raise WeightsError(
                f"{name}: {label} has {key}={f[key]!r} forwards but {b[key]!r} backwards; rnncli runs both "
                "directions of a layer alike"
            )
    return {**f, "go_backwards": False, "merge_mode": merge}


def _parts_from_specs(
    h5py: Any, specs: list[dict[str, Any]], h5: Any, name: str
) -> tuple[list[Part], dict[str, np.ndarray]]:
    parts, tensors = [], {}
    for spec in specs:
        base = f"layers/{spec['key']}"
        if spec["class_name"] == "SimpleRNN":
            groups = [(f"{base}/cell/vars", spec["name"])]
        else:
            groups = [
                (f"{base}/forward_layer/cell/vars", f"{spec['name']}/forward"),
                (f"{base}/backward_layer/cell/vars", f"{spec['name']}/backward"),
            ]
        cells = []
        for path, prefix in groups:
            cell, found = _cell(h5py, h5, path, name, spec["label"], spec["units"], spec["bias"])
            cells.append(cell)
            tensors.update({f"{prefix}/{role}": t for role, t in found.items()})
        settings = {"activation": spec["activation"], "reverse": spec["go_backwards"], "clip": None, "leak": 1.0}
        if spec["merge_mode"] is not None:
            settings["merge"] = spec["merge_mode"]
        parts.append(Part((tuple(cells),), settings, spec["go_backwards"], spec["label"]))
    return parts, tensors


def _cell(
    h5py: Any, h5: Any, path: str, name: str, label: str, units: int | None, bias: bool | None
) -> tuple[Cell, dict[str, np.ndarray]]:
    """One SimpleRNN cell from ``…/cell/vars/{0,1,2}``; `units`/`bias` from the config, or None (weights only)."""
    group = h5.get(path)
    if not isinstance(group, h5py.Group):
        raise WeightsError(
            f"{name}: the weights have no {path} for {label}; the weights file does not match the config"
        )
    present = set(group.keys())
    if not {"0", "1"} <= present or not present <= {"0", "1", "2"}:
        raise WeightsError(
            f"{name}: {path} holds variables {sorted(present)}, but a SimpleRNN cell has 0 (kernel), "
            "1 (recurrent kernel) and maybe 2 (bias): is it an LSTM or GRU? rnncli runs SimpleRNN only"
        )
    kernel = _dataset(h5py, group, "0", path, name)
    recurrent = _dataset(h5py, group, "1", path, name)
    vector = _dataset(h5py, group, "2", path, name) if "2" in present else None
    if units is None:
        if recurrent.ndim != 2 or recurrent.shape[0] != recurrent.shape[1]:
            raise WeightsError(
                f"{name}: {path}/1 (recurrent kernel) has shape {recurrent.shape}, not (H, H): not a SimpleRNN "
                "(an LSTM or GRU has 4H or 3H columns); rnncli runs SimpleRNN only"
            )
        units = recurrent.shape[0]
    elif bias is not None and bias != (vector is not None):
        raise WeightsError(
            f"{name}: {label} has use_bias={bias} but its weights {'lack' if bias else 'hold'} {path}/2 (bias); "
            "the weights file does not match the config"
        )
    for key, tensor, expected in (
        ("0 (kernel)", kernel, f"(input features, {units})"),
        ("1 (recurrent kernel)", recurrent, f"({units}, {units})"),
        ("2 (bias)", vector, f"({units},)"),
    ):
        if tensor is None:
            continue
        good = (
            (tensor.ndim == 2 and tensor.shape[1] == units)
            if key.startswith("0")
            else tensor.shape == ((units, units) if key.startswith("1") else (units,))
        )
        if not good:
            raise WeightsError(
                f"{name}: {path}/{key} has shape {tensor.shape}, but {label} has {units} units, so it must be "
                f"{expected}; the weights do not match the model"
            )
    found = {"kernel": kernel, "recurrent_kernel": recurrent}
    if vector is not None:
        found["bias"] = vector
    return from_keras(kernel, recurrent, vector), found


def _dataset(h5py: Any, group: Any, key: str, path: str, name: str) -> np.ndarray:
    item = group.get(key)
    where = f"{path}/{key}"
    if not isinstance(item, h5py.Dataset):
        raise WeightsError(f"{name}: {where} is not a dataset")
    if item.dtype.kind != "f" or item.shape is None:
        raise WeightsError(f"{name}: {where} holds {item.dtype} data; weights must be floating point numbers")
    needed = math.prod(item.shape) * item.dtype.itemsize
    if needed > data_io.memory_budget():
        raise WeightsError(f"{name}: {where} has shape {item.shape}, {needed:,} bytes, more than the memory available")
    array = np.asarray(item[()])
    return array if array.dtype in (np.float32, np.float64) else array.astype(np.float32)


def _check_chain(parts: list[Part], specs: list[dict[str, Any]], input_shape: list[Any] | None, name: str) -> None:
    """Each layer takes what the one before gives; messages name both layers (the model would refuse too)."""
    features = input_shape[-1] if input_shape and isinstance(input_shape[-1], int) else None
    below = "the InputLayer"
    for part, spec in zip(parts, specs):
        takes = part.layers[0][0].input_size
        if features is not None and takes != features:
            raise WeightsError(
                f"{name}: {spec['label']} kernel takes {takes} input features but {below} gives {features}; "
                "the weights do not match the model"
            )
        directions = len(part.layers[0])
        features = spec["units"] * (2 if directions == 2 and spec["merge_mode"] == "concat" else 1)
        below = spec["label"]


def read_keras_weights(fp: BinaryIO, name: str, *, input_size: int | None = None, merge: str | None = None) -> Found:
    """A Keras 3 `.weights.h5` (no config): layers from the datasets, ordered so that their shapes chain.

    `input_size` (the data's features) and `merge` (how bidirectional layers combine, default
    concat) help find the order when SimpleRNN and Bidirectional layers are mixed.
    """
    h5py = require("h5py", "keras", f"{name}: reading a Keras .weights.h5")
    with _h5_file(h5py, fp, name) as h5:
        layers = h5.get("layers")
        if not isinstance(layers, h5py.Group):
            raise WeightsError(
                f"{name}: no 'layers' group, so not a Keras 3 .weights.h5 (a Keras 2 .h5 file? load it in Keras "
                "and save it again with model.save('model.keras'))"
            )
        entries = []
        for key in layers:
            match = re.fullmatch(r"(.*?)(?:_(\d+))?", key)
            kind, index = match.group(1), int(match.group(2) or 0)
            group = layers[key]
            label = f"layers/{shown(key)}"
            if kind == "simple_rnn":
                paths = [f"{label}/cell/vars"]
            elif kind == "bidirectional":
                paths = [f"{label}/forward_layer/cell/vars", f"{label}/backward_layer/cell/vars"]
            else:
                raise WeightsError(
                    f"{name}: {label} is not a SimpleRNN or Bidirectional layer; rnncli runs Keras {SUPPORTED} only"
                )
            cells, tensors = [], {}
            for path in paths:
                cell, found = _cell(h5py, h5, path, name, label, None, None)
                cells.append(cell)
                tensors.update({f"{path}/{i}": t for i, t in enumerate(found.values())})
            if len(cells) == 2 and cells[0].units != cells[1].units:
                raise WeightsError(
                    f"{name}: {label} has {cells[0].units} units forwards but {cells[1].units} backwards"
                )
            real = group.get("vars")
            layer_name = real.attrs.get("name") if isinstance(real, h5py.Group) else None
            entry = {"key": key, "kind": kind, "index": index, "cells": tuple(cells), "tensors": tensors}
            entry.update(label=label, name=layer_name if isinstance(layer_name, str) else None)
            entries.append(entry)
    if not entries:
        raise WeightsError(f"{name}: the 'layers' group is empty; no RNN weights to run")
    ordered = order_layers(entries, input_size, merge or "concat", name)
    parts = [Part((entry["cells"],), {}, False, entry["label"]) for entry in ordered]
    tensors = {k: v for entry in ordered for k, v in entry["tensors"].items()}
    facts = {
        "layer_order": [entry["key"] for entry in ordered],
        "layer_names": [entry["name"] for entry in ordered],
        "order_from": "shapes" if len({e["kind"] for e in entries}) > 1 else "keys",
    }
    return Found(parts, None, tensors, facts)


def order_layers(
    entries: Sequence[dict[str, Any]], input_size: int | None, merge: str, name: str
) -> list[dict[str, Any]]:
    """Keras keys count each class on its own, so the order across classes is the one whose shapes chain."""
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for entry in sorted(entries, key=lambda e: (e["kind"], e["index"])):
        by_kind.setdefault(entry["kind"], []).append(entry)
    for kind, group in by_kind.items():
        if [e["index"] for e in group] != list(range(len(group))):
            raise WeightsError(
                f"{name}: the {kind} layers are numbered {[e['index'] for e in group]}; some are missing"
            )
    if len(by_kind) == 1:
        return next(iter(by_kind.values()))

    def gives(entry: dict[str, Any]) -> int:
        units = entry["cells"][0].units
        return 2 * units if len(entry["cells"]) == 2 and merge == "concat" else units

    kinds = sorted(by_kind)
    solutions: list[list[dict[str, Any]]] = []
    dead: set[tuple[tuple[int, ...], int | None]] = set()

    def search(position: tuple[int, ...], chain: list[dict[str, Any]], features: int | None) -> bool:
        if len(solutions) > 1 or (position, features) in dead:
            return False
        if all(position[i] == len(by_kind[k]) for i, k in enumerate(kinds)):
            solutions.append(list(chain))
            return True
        found = False
        for i, kind in enumerate(kinds):
            if position[i] < len(by_kind[kind]):
                entry = by_kind[kind][position[i]]
                if features is None or entry["cells"][0].input_size == features:
                    step = (*position[:i], position[i] + 1, *position[i + 1 :])
                    found = search(step, [*chain, entry], gives(entry)) or found
        if not found:
            dead.add((position, features))
        return found

    search(tuple(0 for _ in kinds), [], input_size)
    shapes = ", ".join(f"{e['label']} {e['cells'][0].input_size}→{e['cells'][0].units}" for e in entries)
    if not solutions:
        raise WeightsError(
            f"{name}: no order of the layers chains their shapes ({shapes}, bidirectional merge {merge}); "
            "give the right --merge, or use the .keras file, which records the order"
        )
    if len(solutions) > 1:
        known = "" if input_size is None else f" even for {input_size} input features"
        fix = "give the input features (--input-size N) or use" if input_size is None else "use"
        raise WeightsError(
            f"{name}: the layers fit together in more than one order{known} ({shapes}) and a .weights.h5 does not "
            f"record it; {fix} the .keras file, which records the order"
        )
    return solutions[0]


# --- writing ---------------------------------------------------------------------------------------


def _export_layers(model: Model, target: str) -> list[dict[str, Any]]:
    """The model as Keras layers, refusing what Keras's SimpleRNN cannot run."""
    layers = []
    for part, flag in parts_of(model):
        if part.clip is not None:
            raise WeightsError(
                f"{target} cannot hold this model: Keras SimpleRNN has no clip (the model clips at {part.clip:g}); "
                "write .npz, .safetensors or .onnx"
            )
        if part.leak != 1:
            raise WeightsError(
                f"{target} cannot hold this model: Keras SimpleRNN has no leaky integration (leak {part.leak:g}); "
                "write .npz or .safetensors"
            )
        if flag and (not part.reverse or len(part.layers) > 1):
            raise WeightsError(f"{target} cannot hold this model: its Keras-ordered part is not one go_backwards layer")
        for layer in part.layers:
            layers.append(
                {
                    "cells": layer,
                    "units": layer[0].units,
                    "input": layer[0].input_size,
                    "activation": part.activation,
                    "bias": part.has_bias,
                    "merge": part.merge if len(layer) == 2 else None,
                    "reverse": part.reverse,
                    "go_backwards": flag,
                }
            )
    return layers


def _keys(layers: list[dict[str, Any]]) -> None:
    counts: dict[str, int] = {}
    for layer in layers:
        kind = "bidirectional" if layer["merge"] else "simple_rnn"
        counts[kind] = counts.get(kind, -1) + 1
        layer.update(kind=kind, index=counts[kind], key=kind if counts[kind] == 0 else f"{kind}_{counts[kind]}")


def _write_h5(h5py: Any, layers: list[dict[str, Any]], dtype: np.dtype) -> bytes:
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        h5.create_group("vars").attrs["name"] = "sequential"
        root = h5.create_group("layers")
        for layer in layers:
            group = root.create_group(layer["key"])
            group.create_group("vars").attrs["name"] = layer["key"]
            if layer["merge"]:
                pairs = [("forward_layer", layer["cells"][0]), ("backward_layer", layer["cells"][1])]
            else:
                pairs = [(None, layer["cells"][0])]
            for sub, cell in pairs:
                home = group
                if sub:
                    home = group.create_group(sub)
                    home.create_group("vars").attrs["name"] = f"{sub.split('_')[0]}_{layer['key']}"
                variables = home.create_group("cell").create_group("vars")
                variables.attrs["name"] = "simple_rnn_cell"
                variables.create_dataset("0", data=np.ascontiguousarray(cell.w_ih.T, dtype=dtype))
                variables.create_dataset("1", data=np.ascontiguousarray(cell.w_hh.T, dtype=dtype))
                if cell.has_bias:
                    variables.create_dataset("2", data=np.asarray(cell.bias(), dtype=dtype))
    return buffer.getvalue()


def _policy(dtype: np.dtype) -> dict[str, Any]:
    return {"module": "keras", "class_name": "DTypePolicy", "config": {"name": str(dtype)}, "registered_name": None}


def _initializer(class_name: str, config: dict[str, Any]) -> dict[str, Any]:
    return {"module": "keras.initializers", "class_name": class_name, "config": config, "registered_name": None}


def _rnn_entry(
    name: str, layer: dict[str, Any], dtype: np.dtype, return_sequences: bool, go_backwards: bool, masked: bool
) -> dict[str, Any]:
    config = {
        "name": name,
        "trainable": True,
        "dtype": _policy(dtype),
        "return_sequences": return_sequences,
        "return_state": False,
        "go_backwards": go_backwards,
        "stateful": False,
        "unroll": False,
        "zero_output_for_mask": masked,
        "units": layer["units"],
        "activation": layer["activation"],
        "use_bias": layer["bias"],
        "kernel_initializer": _initializer("GlorotUniform", {"seed": None}),
        "recurrent_initializer": _initializer("Orthogonal", {"seed": None, "gain": 1.0}),
        "bias_initializer": _initializer("Zeros", {}),
        "kernel_regularizer": None,
        "recurrent_regularizer": None,
        "bias_regularizer": None,
        "activity_regularizer": None,
        "kernel_constraint": None,
        "recurrent_constraint": None,
        "bias_constraint": None,
        "dropout": 0.0,
        "recurrent_dropout": 0.0,
    }
    return {
        "module": "keras.layers",
        "class_name": "SimpleRNN",
        "config": config,
        "registered_name": None,
        "build_config": {"input_shape": [None, None, layer["input"]]},
    }


def keras_config(layers: list[dict[str, Any]], dtype: np.dtype, return_mode: str | None) -> dict[str, Any]:
    """config.json of a Sequential model of these layers (as Keras 3 writes it)."""
    features = layers[0]["input"]
    entries: list[dict[str, Any]] = [
        {
            "module": "keras.layers",
            "class_name": "InputLayer",
            "config": {
                "batch_shape": [None, None, features],
                "dtype": str(dtype),
                "sparse": False,
                "ragged": False,
                "name": "input_layer",
                "optional": False,
            },
            "registered_name": None,
        }
    ]
    for i, layer in enumerate(layers):
        sequences = i < len(layers) - 1 or return_mode != "final"
        if not layer["merge"]:
            entries.append(_rnn_entry(layer["key"], layer, dtype, sequences, layer["go_backwards"], False))
            continue
        entries.append(
            {
                "module": "keras.layers",
                "class_name": "Bidirectional",
                "config": {
                    "name": layer["key"],
                    "trainable": True,
                    "dtype": _policy(dtype),
                    "merge_mode": layer["merge"],
                    "layer": _rnn_entry(f"forward_{layer['key']}", layer, dtype, sequences, False, True),
                    "backward_layer": _rnn_entry(f"backward_{layer['key']}", layer, dtype, sequences, True, True),
                },
                "registered_name": None,
                "build_config": {"input_shape": [None, None, layer["input"]]},
            }
        )
    return {
        "module": "keras",
        "class_name": "Sequential",
        "config": {
            "name": "sequential",
            "trainable": True,
            "dtype": _policy(dtype),
            "layers": entries,
            "build_input_shape": [None, None, features],
        },
        "registered_name": None,
        "build_config": {"input_shape": [None, None, features]},
        "compile_config": None,
    }


def write_keras(model: Model, fp: BinaryIO, *, return_mode: str | None = None) -> list[str]:
    """A Keras 3 `.keras` archive that ``keras.saving.load_model`` opens and runs as rnncli does.

    rnncli's reverse direction (outputs aligned to input time) has no Keras equivalent and is refused;
    Keras-ordered ``go_backwards`` layers read from a .keras file are written back as they were.
    """
    h5py = require("h5py", "keras", "writing a .keras model")
    layers = _export_layers(model, ".keras")
    for layer in layers:
        if layer["reverse"] and not layer["go_backwards"]:
            raise WeightsError(
                ".keras cannot hold this model: rnncli's reverse direction aligns outputs to input time, but Keras "
                "go_backwards returns them in processing order; write .npz, .safetensors or .onnx"
            )
    _keys(layers)
    from . import __version__

    stamp = time.localtime()[:6]
    # Keras does not read metadata.json back; the version names the format generation, not a Keras install
    about = {
        "keras_version": "3.0.0",
        "date_saved": time.strftime("%Y-%m-%d@%H:%M:%S"),
        "saved_by": f"rnncli {__version__}",
    }
    files = {
        METADATA_FILE: json.dumps(about).encode(),
        CONFIG_FILE: json.dumps(keras_config(layers, model.dtype, return_mode)).encode(),
        WEIGHTS_FILE: _write_h5(h5py, layers, model.dtype),
    }
    with zipfile.ZipFile(fp, "w", zipfile.ZIP_STORED) as archive:
        for filename, data in files.items():
            archive.writestr(zipfile.ZipInfo(filename, stamp), data)
    return []


def write_keras_weights(model: Model, fp: BinaryIO) -> list[str]:
    """A Keras 3 `.weights.h5` (``model.load_weights``); returns the options that reproduce the model from it."""
    h5py = require("h5py", "keras", "writing a Keras .weights.h5")
    layers = _export_layers(model, ".weights.h5")
    if any(layer["go_backwards"] for layer in layers):
        raise WeightsError(
            ".weights.h5 cannot hold this model: its go_backwards layer needs the model's config; write .keras"
        )
    settings = {}
    for key in ("activation", "merge", "reverse"):
        values = {layer[key] for layer in layers if layer[key] is not None}
        if len(values) > 1:
            raise WeightsError(
                f".weights.h5 cannot hold this model: its layers differ in {key} ({', '.join(map(str, values))}) and "
                "the file stores no settings; write .keras"
            )
        settings[key] = values.pop() if values else None
    _keys(layers)
    kinds = {bool(layer["merge"]) for layer in layers}
    if len(kinds) > 1:  # a reader must find the order from shapes: make sure it can
        entries = [{**layer, "label": f"layers/{layer['key']}"} for layer in layers]
        order_layers(entries, layers[0]["input"], settings["merge"] or "concat", ".weights.h5")
    fp.write(_write_h5(h5py, layers, model.dtype))
    notes = []
    options = []
    if settings["activation"] != "tanh":
        options.append(f"--activation {settings['activation']}")
    if settings["merge"] not in (None, "concat"):
        options.append(f"--merge {settings['merge']}")
    if settings["reverse"]:
        options.append("--reverse")
    if options:
        notes.append(
            f"a .weights.h5 stores no settings: load it with {' '.join(options)} (in Keras, build the model "
            "with the same settings before model.load_weights)"
        )
    return notes
