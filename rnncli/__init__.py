"""rnncli: run recurrent neural networks over sequence data, from the shell or from Python.

>>> import rnncli
>>> x = rnncli.load_array("sample_data/sines.npy").array        # (T, F)
>>> model = rnncli.init_model(x.shape[-1], 32, seed=0)          # Keras-style random weights
>>> out = model.forward(x)                                       # out.sequence (T, 32), out.final (32,)
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = [
    "RNN",
    "Cell",
    "Output",
    "RnnCliError",
    "Stack",
    "__version__",
    "atomic_output",
    "init_model",
    "load_array",
    "load_weights",
    "open_weights",
    "save_weights",
    "write_array",
]

# Names resolve lazily (PEP 562) so that `import rnncli` — and `rnncli --help` — does not load numpy.
_LOCATIONS = {
    "RNN": "model",
    "Cell": "model",
    "Output": "model",
    "RnnCliError": "errors",
    "Stack": "model",
    "atomic_output": "io",
    "init_model": "initializers",
    "load_array": "io",
    "load_weights": "weights",
    "open_weights": "weights",
    "save_weights": "weights",
    "write_array": "io",
}


def __getattr__(name: str) -> Any:
    if name in _LOCATIONS:
        from importlib import import_module

        return getattr(import_module(f".{_LOCATIONS[name]}", __name__), name)
    raise AttributeError(f"module 'rnncli' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(__all__)
