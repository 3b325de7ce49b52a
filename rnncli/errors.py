"""rnncli's error hierarchy. The CLI maps these to one-line messages and exit codes in one place."""

from __future__ import annotations


def printable(text: object, limit: int | None = 60) -> str:
    """`text` made safe for a one-line message: unprintable characters escaped (no newlines, no terminal
    escape codes smuggled in by a hostile file), and cut after `limit` characters."""
    safe = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))
    return safe if limit is None or len(safe) <= limit else safe[:limit] + "…"


def byte_size(count: float, byte_unit: str = "bytes") -> str:
    """A size for a message or a table: "900 bytes" (`byte_unit` names the smallest unit), "3.1 MiB", "2.9 GiB"."""
    unit = 0
    while count >= 1024 and unit < 3:
        count, unit = count / 1024, unit + 1
    return f"{count:,.0f} {byte_unit}" if unit == 0 else f"{count:,.1f} {('KiB', 'MiB', 'GiB')[unit - 1]}"


class RnnCliError(Exception):
    """Base class: a problem the user can fix. Exit code 1 unless a subclass says otherwise."""

    exit_code = 1


class InputError(RnnCliError):
    """A data file (or stdin) is missing, malformed or of an unsupported kind."""


class ShapeError(RnnCliError):
    """Arrays whose shapes disagree with each other or with the model."""


class WeightsError(RnnCliError):
    """A weights file is malformed, inconsistent, or disagrees with the options."""


class OutputError(RnnCliError):
    """An output could not be written."""


class MissingExtraError(RnnCliError):
    """An optional dependency is needed for this file or feature."""

    def __init__(self, module: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the optional package '{module}': install it with  pip install 'rnncli[{extra}]'"
        )


class UsageError(RnnCliError):
    """Options that are invalid or contradict each other (exit code 2, as click's usage errors)."""

    exit_code = 2


class Interrupted(RnnCliError):  # noqa: N818 - it is a signal, not a fault
    """SIGINT or SIGTERM arrived; outputs in progress were discarded."""

    exit_code = 130
