"""Errors with documented exit codes for the `lm` commands, and their one command-line wrapper.

Mirrors `pipelines.errors` (lm core must not import pipelines): 0 ok, 1 failure (missing or
corrupt checkpoint, empty split, a corpus too small for the vocabulary, a NaN loss), 2 usage error.
"""
from __future__ import annotations

import sys
from typing import Callable


class LMError(Exception):
    """A failure the user can act on; its message is one line that names its cause."""

    exit_code = 1


class UsageError(LMError):
    """A command line or configuration that is wrong: names the option and the problem."""

    exit_code = 2


class CheckpointError(LMError):
    """A run folder or checkpoint that is missing, incomplete or unreadable."""


class DataError(LMError):
    """A corpus snapshot or split that cannot be used: missing, empty, too small."""


class TrainingDiverged(LMError):
    """The loss became NaN or infinite; the message names the step."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type when it has none), for one-line errors."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:limit]


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run `main`, turning LMError into its one-line message and exit code."""
    try:
        return main(argv)
    except LMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
