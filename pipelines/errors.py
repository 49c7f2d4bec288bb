"""The errors of the pipelines' commands, on the one base of `common.errors` (whose `run_cli`
every entry point uses; re-exported here with `ScarceError` for pipelines' modules).

Exit codes: 0 ok, 1 failure (bad source, download, validation), 2 usage or spec error.
"""
from __future__ import annotations

from common.errors import ScarceError, UsageError, run_cli

__all__ = ["ScarceError", "SourceError", "SpecError", "run_cli"]


class SpecError(UsageError):
    """A corpus spec or command line that is wrong: names the file, the key and the problem."""


class SourceError(ScarceError):
    """A source that cannot be read or fetched: names the source."""
