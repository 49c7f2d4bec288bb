"""Errors with documented exit codes, and the one command-line wrapper of every entry point.

Exit codes: 0 ok, 1 failure (a bad source, a download, a missing or corrupt snapshot or
checkpoint, validation), 2 usage or spec error, 130 interrupted. `pipelines.errors` and
`lm.errors` add their own kinds on top of these.
"""
from __future__ import annotations

import sys
from typing import Callable


class ScarceError(Exception):
    """A failure the user can act on; its message is one line that names its cause."""

    exit_code = 1


class UsageError(ScarceError):
    """A command line, spec or configuration that is wrong: names the option or key and the problem."""

    exit_code = 2


class DataError(ScarceError):
    """A corpus snapshot or split that cannot be used: missing, changed after publication, empty."""


def first_line(exc: BaseException | str, default: str | None = None, limit: int | None = 200) -> str:
    """The first line of an exception's message, for one-line errors: `default` (else the
    exception's type name) when it has none; at most `limit` characters (None: all)."""
    fallback = type(exc).__name__ if default is None else default
    return (str(exc).strip().splitlines() or [fallback])[0][:limit]


def run_cli(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run `main`, turning ScarceError into its one-line message and exit code."""
    try:
        return main(argv)
    except ScarceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
