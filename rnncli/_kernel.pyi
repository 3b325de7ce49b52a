"""Type stub of the compiled kernel (rnncli/_kernel.c)."""

from typing import Any

TANH: int
RELU: int
SIGMOID: int
LINEAR: int

def recur(buf: Any, U: Any, h: Any, activation: int, clip: float, leak: float, reverse: bool) -> None:  # noqa: N803
    """Run the simple-RNN recurrence in place (see the C docstring)."""

def project(x: Any, W: Any, out: Any, bias: Any = None) -> None:  # noqa: N803
    """out = x @ W + bias with a row-independent summation order (see the C docstring)."""

def isa() -> str: ...
def available_isas() -> tuple[str, ...]: ...
def _set_isa(name: str) -> None: ...
