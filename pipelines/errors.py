"""Errors with documented exit codes, and the one wrapper every command-line entry point uses.

Exit codes: 0 ok, 1 failure (bad source, download, validation), 2 usage or spec error.
"""
from __future__ import annotations

import sys
from typing import Callable


class ScarceError(Exception):
    """A failure the user can act on; its message is one line."""

    exit_code = 1


class SpecError(ScarceError):
    """A corpus spec or command line that is wrong: names the file, the key and the problem."""

    exit_code = 2


class SourceError(ScarceError):
    """A source that cannot be read or fetched: names the source."""

    exit_code = 1


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
