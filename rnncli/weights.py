"""Weight files in and out: PyTorch state_dicts (.npz, .safetensors, .pt), Keras 3 (.keras, .weights.h5), ONNX.

Every format becomes one canonical model: an :class:`~rnncli.model.RNN`, or a :class:`~rnncli.model.Stack`
when its layers differ in settings (a Keras Sequential). Tensors use PyTorch's ``torch.nn.RNN``
names and layouts: ``weight_ih_l{k}`` (H, F), ``weight_hh_l{k}`` (H, H), ``bias_ih_l{k}`` and
``bias_hh_l{k}`` (H,), with a ``_reverse`` suffix for the backward direction. Settings that
tensors cannot carry (activation, merge, reverse, clip, leak — per part for a stack — and the
model's own output choice and input layout) travel as JSON: the ``__rnncli__`` string entry of
an .npz, the ``__metadata__`` header of a .safetensors. No file is ever unpickled: `.pt` files are
read only through ``torch.load(weights_only=True)`` when PyTorch is installed. Keras files are
handled in `weights_keras.py`, ONNX graphs in `weights_onnx.py`; this module dispatches and
converts layouts.
"""

from __future__ import annotations

import importlib
import io
import json
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Union

import numpy as np

from . import io as data_io
from .errors import MissingExtraError, RnnCliError, UsageError, WeightsError
from .io import PathOrFile, read_npz, write_array
from .model import RNN, SETTINGS, Cell, Stack, part_facts, parts_of

Model = Union[RNN, Stack]

METADATA_KEY = "__rnncli__"
METADATA_VERSION = 3  # 1: one settings block; 2: adds "parts" (a Stack) and "return"; 3: adds "layout"
RETURN_MODES = ("sequence", "final")
LAYOUTS = ("batch-first", "time-major")
_NAME = re.compile(r"^(weight_ih|weight_hh|bias_ih|bias_hh)_l(\d+)(_reverse)?$")
_PREFIXED = re.compile(r"^(.+\.)((?:weight_ih|weight_hh|bias_ih|bias_hh)_l\d+(?:_reverse)?)$")
KERAS_NAMES = ("kernel", "recurrent_kernel", "bias")

READ_FORMATS = ("npz", "safetensors", "pt", "keras", "weights.h5", "onnx")
"""What ``--weights`` and ``rnncli weights`` read, named like their extensions."""
WRITE_FORMATS = ("npz", "safetensors", "keras", "weights.h5", "onnx")
"""What ``rnncli weights convert`` writes (``--save-weights`` writes the first two)."""
STATE_DICT_FORMATS = ("npz", "safetensors", "pt")
_SUFFIXES = (
    (".weights.h5", "weights.h5"),
    (".h5", "weights.h5"),
    (".keras", "keras"),
    (".npz", "npz"),
    (".safetensors", "safetensors"),
    (".onnx", "onnx"),
    (".pt", "pt"),
    (".pth", "pt"),
)
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def shown(text: object, limit: int = 60) -> str:
    """A name from a file, safe for a one-line message: unprintable characters escaped, long names cut."""
    safe = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))
    return safe if len(safe) <= limit else safe[:limit] + "…"


def require(module: str, extra: str, purpose: str) -> Any:
    """Import an optional dependency, or raise :class:`MissingExtraError` naming the extra that brings it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(module, extra, purpose) from None


def weights_format(name: str) -> str | None:
    """The weights format a file name implies ("npz", "safetensors", "pt", "keras", "weights.h5", "onnx")."""
    lowered = name.lower()
    for suffix, fmt in _SUFFIXES:
        if lowered.endswith(suffix):
            return fmt
    return None


def save_format(path: str) -> str:
    """The format ``--save-weights PATH`` writes: .npz or .safetensors (usage error otherwise)."""
    fmt = weights_format(path)
    if fmt not in ("npz", "safetensors"):
        raise UsageError(
            f"--save-weights {path}: weights are saved as .npz or .safetensors (PyTorch names plus rnncli's "
            "settings); for .onnx or .keras use  rnncli weights convert"
        )
    return fmt


# --- the canonical model and its parts ------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """Layers that share their settings, as a format reader finds them.

    `settings` holds what the file decides (a subset of SETTINGS); options complete the rest.
    `keras_order` marks a Keras ``go_backwards`` layer whose outputs go on in processing order.
    """

    layers: tuple[tuple[Cell, ...], ...]
    settings: Mapping[str, Any] = field(default_factory=dict)
    keras_order: bool = False
    label: str = ""


@dataclass(frozen=True)
class Found:
    """What a format reader returns: the parts, the model's own output choice, the file's tensors, facts,
    and what `LoadedWeights` passes on: the input layout, an initial state, warnings."""

    parts: list[Part]
    return_mode: str | None = None
    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    layout: str | None = None
    initial_state: tuple[np.ndarray, ...] | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LoadedWeights:
    """A weights file read: the model, its format, the settings the file decides, and what it holds.

    `return_mode` is the model's own output ("final" for a Keras model whose last layer has
    ``return_sequences=False``), or None; `tensors` are named as in the file. `layout` is the model's
    own 3-D input layout ("time-major" for an ONNX graph that takes (T, B, F)), or None. `initial_state`
    is a state the file holds (an ONNX graph's constant initial_h): one (B, H) array per cell, in state
    order. `warnings` say what of the file a run leaves out (an initial state the graph takes as input).
    """

    model: Model
    fmt: str
    source: str
    stored: dict[str, Any]
    return_mode: str | None
    tensors: dict[str, np.ndarray]
    facts: dict[str, Any]
    layout: str | None = None
    initial_state: tuple[np.ndarray, ...] | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def parameters(self) -> int:
        """The parameter count as the file's framework counts it: what the file holds (one bias per Keras
        cell; PyTorch's two; ONNX's B, which holds both)."""
        return int(sum(np.asarray(t).size for t in self.tensors.values()))


def to_state_dict(model: Model) -> dict[str, np.ndarray]:
    """The model's tensors under PyTorch state_dict names (a stack's layers numbered on through its parts)."""
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


def metadata_of(model: Model, return_mode: str | None = None, layout: str | None = None) -> dict[str, Any]:
    """The ``__rnncli__`` JSON document: what `load_weights` needs besides the tensors to rebuild `model`,
    and the model's own output choice and input layout (only "time-major" is recorded: the other is the default)."""
    meta: dict[str, Any] = {"format": "rnncli-weights", "version": 1}
    if isinstance(model, Stack):
        meta["version"] = 2
        meta["parts"] = [
            {"layers": len(part.layers), **settings_of(part), "keras_order": flag} for part, flag in parts_of(model)
        ]
    else:
        meta.update(settings_of(model))
    if return_mode is not None:
        meta["version"] = 2
        meta["return"] = return_mode
    if layout == "time-major":
        meta["version"] = 3  # an older rnncli refuses the file rather than run it batch-first
        meta["layout"] = layout
    return meta


def assemble(parts: Sequence[Part], given: Mapping[str, Any] | None, source: str) -> Model:
    """Complete the parts' settings with `given` options (which must agree with the file) and build the model.

    Consecutive parts with equal settings become layers of one :class:`RNN`; a single part in
    input-time order is an RNN, anything else a :class:`Stack`.
    """
    given = {k: v for k, v in (given or {}).items() if k in SETTINGS and v is not None}
    stored = stored_settings(parts)
    for name, value in given.items():
        for part in parts:
            if name in part.settings and _relevant(name, part) and not _same(part.settings[name], value):
                raise WeightsError(
                    f"{source}: the file says {name}={stored.get(name, part.settings[name])!r} but the options say "
                    f"{value!r}; drop the option (the file decides) or use other weights"
                )
    built: list[tuple[RNN, bool]] = []
    for part in parts:
        settings = {**given, **part.settings}
        try:
            rnn = RNN(tuple(part.layers), **settings)
        except RnnCliError as exc:
            where = f"{part.label}: " if part.label and len(parts) > 1 else ""
            raise WeightsError(f"{source}: {where}{exc}") from None
        if built and not part.keras_order and not built[-1][1] and _joinable(built[-1][0], rnn):
            below = built[-1][0]
            rnn = _join(below, rnn, source)
            built[-1] = (rnn, False)
        else:
            built.append((rnn, part.keras_order))
    if len(built) == 1 and not built[0][1]:
        return built[0][0]
    try:
        return Stack(tuple(rnn for rnn, _ in built), tuple(flag for _, flag in built))
    except RnnCliError as exc:
        raise WeightsError(f"{source}: {exc}") from None


def stored_settings(parts: Sequence[Part]) -> dict[str, Any]:
    """The settings the file decides: one value, or the parts' values joined by commas where they differ."""
    stored = {}
    for name in SETTINGS:
        values = [p.settings[name] for p in parts if name in p.settings and _relevant(name, p)]
        if values:
            stored[name] = values[0] if all(_same(v, values[0]) for v in values) else ",".join(map(str, values))
    return stored


def _relevant(name: str, part: Part) -> bool:
    return name != "merge" or len(part.layers[0]) == 2  # one direction has nothing to merge


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool):
        return math.isclose(a, b, rel_tol=1e-6)  # ONNX stores clip as float32
    return a == b


def _joinable(a: RNN, b: RNN) -> bool:
    same = all(_same(getattr(a, n), getattr(b, n)) for n in SETTINGS if n != "merge" or a.directions == 2)
    return same and a.directions == b.directions and a.has_bias == b.has_bias and a.dtype == b.dtype


def _join(below: RNN, above: RNN, source: str) -> RNN:
    try:
        return RNN(below.layers + above.layers, **settings_of(below))
    except RnnCliError as exc:
        raise WeightsError(f"{source}: {exc}") from None


# --- reading ---------------------------------------------------------------------------------------


def open_weights(
    source: PathOrFile,
    *,
    fmt: str | None = None,
    settings: Mapping[str, Any] | None = None,
    input_size: int | None = None,
    name: str | None = None,
) -> LoadedWeights:
    """Read a weights file of any format rnncli knows into a model.

    `fmt` is one of READ_FORMATS (default: from the name's extension, else sniffed). `settings`
    are options (activation, merge, reverse, clip, leak) for what the file does not record; they
    must agree with what it does. `input_size` helps order the layers of a Keras .weights.h5.
    """
    with _opened(source, name) as (fp, name):
        fmt = fmt or weights_format(name) or _sniff(fp, name)
        found = _read(fp, name, fmt, input_size=input_size, settings=settings or {})
    model = assemble(found.parts, settings, name)
    return LoadedWeights(
        model,
        fmt,
        name,
        stored_settings(found.parts),
        found.return_mode,
        dict(found.tensors),
        dict(found.facts),
        found.layout,
        found.initial_state,
        list(found.warnings),
    )


def load_weights(source: PathOrFile, *, name: str | None = None, **options: Any) -> Model:
    """Read a weights file (.npz, .safetensors, .pt, .keras, .weights.h5, .onnx) into an RNN or a Stack."""
    return open_weights(source, name=name, **options).model


def read_weights(source: PathOrFile, *, name: str | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The tensors of a state_dict file (.npz, .safetensors, .pt) and the rnncli settings stored with them."""
    with _opened(source, name) as (fp, name):
        fmt = weights_format(name) or _sniff(fp, name)
        if fmt not in STATE_DICT_FORMATS:
            raise WeightsError(f"{name}: {fmt} files hold more than tensors; read them with load_weights")
        return _read_state_dict(fp, name, fmt)


@contextmanager
def _opened(source: PathOrFile, name: str | None) -> Iterator[tuple[BinaryIO, str]]:
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        name = name or path
        if not os.path.exists(path):
            raise WeightsError(f"{name}: no such weights file; check the path")
        if os.path.isdir(path):
            raise WeightsError(f"{name}: is a directory, not a weights file")
        try:
            fp = open(path, "rb")
        except OSError as exc:
            raise WeightsError(f"{name}: cannot open ({exc.strerror})") from None
        with fp:
            yield _seekable(fp, name), name
    else:
        name = name or str(getattr(source, "name", "<weights>"))
        yield _seekable(source, name), name


def _seekable(fp: BinaryIO, name: str) -> BinaryIO:
    try:
        if fp.seekable():
            return fp
    except (AttributeError, ValueError):
        pass
    return io.BytesIO(read_bounded(fp, name))


def read_bounded(fp: BinaryIO, name: str, limit: int | None = None) -> bytes:
    """The rest of `fp`, refused beyond `limit` bytes (default: the memory available)."""
    limit = data_io.memory_budget() if limit is None else limit
    try:
        here = fp.tell()
        size = fp.seek(0, io.SEEK_END) - here
        fp.seek(here)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        size = None
    if size is not None and size > limit:
        raise WeightsError(f"{name}: {size:,} bytes, more than the {limit:,} this reader allows; refusing to read it")
    data = fp.read(limit + 1)
    if len(data) > limit:
        raise WeightsError(f"{name}: more than the {limit:,} bytes this reader allows; refusing to read it")
    return data


def _sniff(fp: BinaryIO, name: str) -> str:
    head = fp.read(16)
    fp.seek(-len(head), io.SEEK_CUR)
    if head.startswith(b"PK\x03\x04"):
        import zipfile

        try:
            with zipfile.ZipFile(fp) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError):
            names = []
        fp.seek(0)
        return "keras" if "config.json" in names else "npz"
    if head.startswith(_HDF5_MAGIC):
        return "weights.h5"
    if len(head) > 8 and head[8:9] == b"{":
        return "safetensors"
    raise WeightsError(
        f"{name}: cannot tell the weights format from the name; use a file ending in "
        ".npz, .safetensors, .pt, .pth, .keras, .weights.h5 or .onnx"
    )


def _read(fp: BinaryIO, name: str, fmt: str, *, input_size: int | None, settings: Mapping[str, Any]) -> Found:
    if fmt in STATE_DICT_FORMATS:
        tensors, meta = _read_state_dict(fp, name, fmt)
        facts = {"metadata": bool(meta)}
        parts = _parts_from_state_dict(tensors, meta, name)
        return Found(parts, meta.get("return"), tensors, facts, layout=meta.get("layout"))
    if fmt == "keras":
        from .weights_keras import read_keras

        return read_keras(fp, name)
    if fmt == "weights.h5":
        from .weights_keras import read_keras_weights

        return read_keras_weights(fp, name, input_size=input_size, merge=settings.get("merge"))
    if fmt == "onnx":
        from .weights_onnx import read_onnx

        return read_onnx(fp, name)
    raise UsageError(f"unknown weights format '{fmt}'; choose one of {', '.join(READ_FORMATS)}")


def _read_state_dict(fp: BinaryIO, name: str, fmt: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    if fmt == "npz":
        tensors = read_npz(fp, name, text_keys=(METADATA_KEY,))
        entry = tensors.pop(METADATA_KEY, None)
        text = None if entry is None else str(entry.reshape(())) if entry.size == 1 else ""
        return tensors, _parse_metadata(text, name)
    if fmt == "safetensors":
        return _read_safetensors(fp, name)
    return _read_torch(fp, name), {}


def _read_safetensors(fp: BinaryIO, name: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    numpy_backend = require("safetensors.numpy", "safetensors", f"{name}: reading .safetensors")
    data = read_bounded(fp, name)
    if len(data) < 8:
        raise WeightsError(f"{name}: {len(data)} bytes is too short for .safetensors; the file was cut short")
    size = int.from_bytes(data[:8], "little")
    if size > len(data) - 8:
        raise WeightsError(
            f"{name}: the .safetensors header claims {size:,} bytes but only {len(data) - 8:,} follow; "
            "the file was cut short, re-create it"
        )
    try:
        header = json.loads(data[8 : 8 + size])
        tensors = numpy_backend.load(data)
    except Exception as exc:  # the library's own errors (SafetensorError, dtype errors) and JSON errors
        raise WeightsError(f"{name}: not a valid .safetensors file ({shown(exc, 120)}); re-create it") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    text = meta.get(METADATA_KEY) if isinstance(meta, dict) else None
    return tensors, _parse_metadata(text, name)


def _read_torch(fp: BinaryIO, name: str) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise WeightsError(
            f"{name}: .pt/.pth files are Python pickles, which rnncli reads only through PyTorch's "
            "torch.load(weights_only=True), and PyTorch is not installed; install torch, or save the state_dict "
            "as .safetensors (safetensors.torch.save_file(rnn.state_dict(), 'rnn.safetensors'))"
        ) from None
    version = tuple(int(part) for part in re.findall(r"\d+", str(getattr(torch, "__version__", "0")))[:2])
    if version < (2, 6):
        raise WeightsError(
            f"{name}: PyTorch {getattr(torch, '__version__', '?')} has a known bypass of torch.load(weights_only=True) "
            "(CVE-2025-32434), so rnncli reads .pt files only with torch >= 2.6; upgrade torch, or save the "
            "state_dict as .safetensors"
        )
    try:
        loaded = torch.load(fp, map_location="cpu", weights_only=True)
    except Exception as exc:  # weights_only refusals (UnpicklingError), corrupt archives (RuntimeError), …
        raise WeightsError(
            f"{name}: torch.load(weights_only=True) could not read it ({shown(str(exc).splitlines()[0], 120)}); "
            "save a plain state_dict: torch.save(rnn.state_dict(), path)"
        ) from None
    if not isinstance(loaded, Mapping):
        raise WeightsError(f"{name}: holds a {type(loaded).__name__}, not a state_dict of tensors")
    tensors: dict[str, np.ndarray] = {}
    _flatten(loaded, "", tensors)
    return tensors


def _flatten(value: Any, prefix: str, out: dict[str, np.ndarray]) -> None:
    """Tensors of a (nested) state_dict under dotted names; numbers and strings in a checkpoint are skipped."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            _flatten(item, f"{prefix}{key}.", out)
    elif isinstance(value, np.ndarray):
        out[prefix[:-1]] = value
    elif hasattr(value, "detach"):  # a torch.Tensor
        tensor = value.detach().cpu()
        if str(tensor.dtype) not in ("torch.float32", "torch.float64"):
            tensor = tensor.float()  # half, bfloat16: numpy has no bfloat16
        out[prefix[:-1]] = np.asarray(tensor.numpy())


def _parse_metadata(text: str | None, name: str) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        meta = json.loads(text)
    except (ValueError, TypeError, RecursionError):
        raise WeightsError(
            f"{name}: the {METADATA_KEY} entry is not valid JSON; remove it or re-save the weights"
        ) from None
    if not isinstance(meta, dict):
        raise WeightsError(f"{name}: the {METADATA_KEY} entry must be a JSON object")
    version = meta.get("version", 1)
    if not isinstance(version, int) or version > METADATA_VERSION:
        raise WeightsError(
            f"{name}: the {METADATA_KEY} entry has version {shown(version)}, newer than this rnncli reads "
            f"({METADATA_VERSION}); upgrade rnncli"
        )
    kept = _check_settings(meta, name)
    for key, allowed in (("return", RETURN_MODES), ("layout", LAYOUTS)):
        if key in meta:
            if meta[key] not in allowed:
                raise WeightsError(f"{name}: the {METADATA_KEY} entry says {key}={shown(meta[key])!r}")
            kept[key] = meta[key]
    if "parts" in meta:
        parts = meta["parts"]
        if not isinstance(parts, list) or not parts or not all(isinstance(p, dict) for p in parts):
            raise WeightsError(f"{name}: the {METADATA_KEY} entry's parts must be a list of objects")
        checked = []
        for part in parts:
            layers = part.get("layers")
            if not isinstance(layers, int) or isinstance(layers, bool) or layers < 1:
                raise WeightsError(f"{name}: every part in the {METADATA_KEY} entry needs a positive 'layers' count")
            checked.append(
                {**_check_settings(part, name), "layers": layers, "keras_order": part.get("keras_order") is True}
            )
        kept["parts"] = checked
    return kept


def _check_settings(meta: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The known settings of a metadata block, with their types checked (a hostile file gets a message)."""
    checks = {
        "activation": lambda v: isinstance(v, str),
        "merge": lambda v: isinstance(v, str),
        "reverse": lambda v: isinstance(v, bool),
        "clip": lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)),
        "leak": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    }
    kept = {}
    for key in SETTINGS:
        if key in meta:
            if not checks[key](meta[key]):
                raise WeightsError(
                    f"{name}: the {METADATA_KEY} entry has {key}={shown(repr(meta[key]))}, not a valid value"
                )
            kept[key] = meta[key]
    return kept


def _strip_prefix(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`rnn.weight_ih_l0` … as `weight_ih_l0` … when every tensor sits under one module prefix."""
    if not tensors or any(_NAME.match(n) or n in KERAS_NAMES for n in tensors):
        return tensors
    matches = [_PREFIXED.match(n) for n in tensors]
    prefixes = {m.group(1) for m in matches if m}
    if len(prefixes) == 1 and all(matches):
        return {m.group(2): t for m, t in zip(matches, tensors.values())}
    return tensors


def _parts_from_state_dict(tensors: Mapping[str, np.ndarray], meta: Mapping[str, Any], source: str) -> list[Part]:
    tensors = _strip_prefix(dict(tensors))
    decided = {k: meta[k] for k in SETTINGS if k in meta}
    if tensors and set(tensors) <= set(KERAS_NAMES) and {"kernel", "recurrent_kernel"} <= set(tensors):
        for key, tensor in tensors.items():
            if np.asarray(tensor).dtype.kind != "f":
                raise WeightsError(f"{source}: {key} has dtype {tensor.dtype}; weights must be float32 or float64")
        cell = from_keras(tensors["kernel"], tensors["recurrent_kernel"], tensors.get("bias"))
        return [Part(((cell,),), decided)]
    layers = _layers_from_names(tensors, source)
    described = meta.get("parts")
    if described is None:
        return [Part(tuple(layers), decided)]
    total = sum(p["layers"] for p in described)
    if total != len(layers):
        raise WeightsError(
            f"{source}: the {METADATA_KEY} entry describes {total} layers in {len(described)} parts but the file "
            f"holds {len(layers)}; re-save the weights"
        )
    parts, start = [], 0
    for i, part in enumerate(described):
        chunk = tuple(layers[start : start + part["layers"]])
        start += part["layers"]
        settings = {k: part[k] for k in SETTINGS if k in part}
        parts.append(Part(chunk, settings, part["keras_order"], f"part {i} (layers {start - len(chunk)}–{start - 1})"))
    return parts


def _layers_from_names(tensors: Mapping[str, np.ndarray], source: str) -> list[tuple[Cell, ...]]:
    found: dict[tuple[int, int], dict[str, np.ndarray]] = {}
    unknown = []
    for name, tensor in tensors.items():
        match = _NAME.match(name)
        if not match:
            unknown.append(shown(name, 40))
            continue
        kind, layer, reverse = match.groups()
        found.setdefault((int(layer), 1 if reverse else 0), {})[kind] = np.asarray(tensor)
    if unknown:
        listed = ", ".join(sorted(unknown)[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise WeightsError(
            f"{source}: unexpected tensor names {listed}; expected PyTorch nn.RNN names such as weight_ih_l0, "
            "weight_hh_l0, bias_ih_l0, bias_hh_l0 (and _reverse), or Keras kernel, recurrent_kernel, bias; "
            "rnncli runs an nn.RNN alone: save that module's state_dict"
        )
    if not found:
        raise WeightsError(f"{source}: no RNN tensors found (expected weight_ih_l0, weight_hh_l0, …)")
    count = 1 + max(k for k, _ in found)
    if count > 10_000:
        raise WeightsError(f"{source}: names up to layer {count - 1}; that is not an RNN rnncli can run")
    layers = []
    for k in range(count):
        layer = []
        for d in (0, 1):
            label = f"l{k}{'_reverse' if d else ''}"
            parts = found.get((k, d))
            if parts is None:
                if d == 1:
                    continue
                raise WeightsError(f"{source}: no tensors for layer {k} (weight_ih_l{k}, weight_hh_l{k}); layers skip")
            if "weight_ih" not in parts or "weight_hh" not in parts:
                raise WeightsError(f"{source}: weight_ih_{label} and weight_hh_{label} are both needed; one is missing")
            for kind in ("bias_ih", "bias_hh"):
                if (kind in parts) != ("bias_ih" in parts or "bias_hh" in parts):
                    raise WeightsError(f"{source}: {kind}_{label} is missing while its partner bias is present")
            for kind, tensor in parts.items():
                if tensor.dtype.kind != "f":
                    raise WeightsError(
                        f"{source}: {kind}_{label} has dtype {tensor.dtype}; weights must be float32 or float64"
                    )
                rank = 2 if kind.startswith("weight") else 1
                if tensor.ndim != rank:
                    raise WeightsError(
                        f"{source}: {kind}_{label} has shape {tensor.shape}; it must be {rank}-D "
                        f"({'(units, inputs)' if rank == 2 else '(units,)'})"
                    )
            dtype = np.float64 if parts["weight_ih"].dtype == np.float64 else np.float32
            cast = {kind: t.astype(dtype) for kind, t in parts.items()}
            layer.append(Cell(cast["weight_ih"], cast["weight_hh"], cast.get("bias_ih"), cast.get("bias_hh")))
        layers.append(tuple(layer))
    return layers


def from_state_dict(
    tensors: Mapping[str, np.ndarray], settings: Mapping[str, Any] | None = None, source: str = "weights"
) -> Model:
    """Build an :class:`RNN` from PyTorch-named tensors; layers, directions and sizes are inferred.

    `settings` are the rnncli settings (activation, merge, …); with per-part settings (``parts``, as
    `metadata_of` writes for a stack) the result is a :class:`Stack`.
    """
    return assemble(_parts_from_state_dict(tensors, dict(settings or {}), source), None, source)


# --- writing ---------------------------------------------------------------------------------------


def save_weights(
    model: Model, fp: BinaryIO, fmt: str = "npz", *, return_mode: str | None = None, layout: str | None = None
) -> None:
    """Write `model` as .npz or .safetensors: PyTorch-named tensors plus its settings as JSON.

    `return_mode` records the model's own output choice (a Keras model's ``return_sequences``),
    `layout` its own input layout (an ONNX graph's "time-major").
    """
    tensors = {k: np.ascontiguousarray(v) for k, v in to_state_dict(model).items()}
    meta = json.dumps(metadata_of(model, return_mode, layout))
    if fmt == "npz":
        write_array(fp, {**tensors, METADATA_KEY: np.array(meta)}, "npz")
    elif fmt == "safetensors":
        numpy_backend = require("safetensors.numpy", "safetensors", "writing .safetensors")
        fp.write(numpy_backend.save(tensors, metadata={METADATA_KEY: meta}))
    else:
        raise WeightsError(f"weights are saved as .npz or .safetensors, not {fmt}")


def write_weights(
    model: Model,
    fp: BinaryIO,
    fmt: str,
    *,
    return_mode: str | None = None,
    layout: str | None = None,
    initial_state: Sequence[np.ndarray] | None = None,
    name: str | None = None,
) -> list[str]:
    """Write `model` in any of WRITE_FORMATS; returns notes on what the target does not record.

    `return_mode`, `layout` and `initial_state` are what `LoadedWeights` says of the source beyond
    the model. Raises :class:`WeightsError` (naming `name`, the target) when the target cannot
    express the model, e.g. `leak` in ONNX or `clip` in Keras.
    """
    try:
        notes = _write_format(model, fp, fmt, return_mode, layout)
    except WeightsError as exc:
        raise WeightsError(f"{name}: {exc}" if name else str(exc)) from None
    if return_mode == "final" and fmt == "weights.h5":
        notes.append("the model returns its final state (Keras return_sequences=False): run it with --return final")
    if return_mode == "final" and fmt == "onnx":
        notes.append("the model returns its final state (Keras return_sequences=False): use the ONNX output 'final'")
    if layout == "time-major" and fmt in ("keras", "weights.h5"):
        notes.append(
            "the model takes time-major input (timesteps, batch, features) but Keras models take batch-first: "
            "run the Keras file with --time-major on time-major data"
        )
    if initial_state is not None:
        notes.append(
            f"{name or 'the target'} does not keep the initial state of the source (an ONNX graph's constant "
            "initial_h): runs of it start from zeros unless --initial-state FILE is given"
        )
    return notes


def _write_format(model: Model, fp: BinaryIO, fmt: str, return_mode: str | None, layout: str | None) -> list[str]:
    if fmt in ("npz", "safetensors"):
        save_weights(model, fp, fmt, return_mode=return_mode, layout=layout)
        return []
    if fmt == "onnx":
        from .weights_onnx import write_onnx

        return write_onnx(model, fp, return_mode=return_mode, layout=layout)
    if fmt == "keras":
        from .weights_keras import write_keras

        return write_keras(model, fp, return_mode=return_mode)
    if fmt == "weights.h5":
        from .weights_keras import write_keras_weights

        return write_keras_weights(model, fp)
    if fmt == "pt":
        raise WeightsError(
            "rnncli does not write .pt files (Python pickles); write .safetensors, which PyTorch loads with "
            "safetensors.torch.load_file, or .npz"
        )
    raise UsageError(f"unknown weights format '{fmt}'; choose one of {', '.join(WRITE_FORMATS)}")


# --- looking inside --------------------------------------------------------------------------------


def describe(loaded: LoadedWeights) -> dict[str, Any]:
    """A JSON-ready account of a weights file: the model it holds, its parts, its tensors, format facts."""
    model = loaded.model
    tensors = []
    for name, tensor in loaded.tensors.items():
        tensor = np.asarray(tensor)
        numeric = tensor.size and tensor.dtype.kind in "fiu"
        tensors.append(
            {
                "name": name,
                "shape": list(tensor.shape),
                "dtype": str(tensor.dtype),
                "min": _number(tensor.min()) if numeric else None,
                "max": _number(tensor.max()) if numeric else None,
            }
        )
    return {
        "file": loaded.source,
        "format": loaded.fmt,
        "model": {
            "kind": "stack" if isinstance(model, Stack) else "rnn",
            "layers": len(model.layers),
            "units": list(model.units),
            "input_size": model.input_size,
            "output_size": model.output_size,
            "parameters": loaded.parameters,
            "rnncli_parameters": int(model.parameter_count),  # with PyTorch's two biases (Keras's second is zeros)
            "dtype": str(model.dtype),
            "parts": part_facts(model),
        },
        "stored": loaded.stored,
        "not_stored": [name for name in SETTINGS if name not in loaded.stored],
        "return": loaded.return_mode,
        "layout": loaded.layout,
        "initial_state": None if loaded.initial_state is None else [list(s.shape) for s in loaded.initial_state],
        "warnings": loaded.warnings,
        "tensors": tensors,
        "facts": loaded.facts,
    }


def _number(value: Any) -> float | str:
    value = float(value)
    return value if math.isfinite(value) else str(value)


# --- single layouts (used by the format readers and by tests) ---------------------------------------


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
        f"{source}: ONNX activation {shown(name)}(alpha={alpha}, beta={beta}) has no rnncli equivalent; "
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
        raise WeightsError(
            f"{source}: unknown RNN direction '{shown(direction)}'; expected forward, reverse or bidirectional"
        )
    if w.ndim != 3 or r.ndim != 3 or w.shape[0] != directions or r.shape[0] != directions:
        raise WeightsError(
            f"{source}: W {w.shape} and R {r.shape} must be (directions={directions}, hidden, …) "
            f"for direction {direction}"
        )
    for label, tensor in (("W", w), ("R", r), ("B", b)):
        if tensor is not None and tensor.dtype.kind != "f":
            raise WeightsError(f"{source}: {label} has dtype {tensor.dtype}; weights must be float32 or float64")
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
