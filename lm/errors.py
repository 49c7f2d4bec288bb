"""The errors of the `lm` commands, on the one base of `common.errors` (its `run_cli` and
`first_line` too, re-exported for lm's modules).

Exit codes: 0 ok, 1 failure (missing or corrupt checkpoint, empty split, a corpus too small for
the vocabulary, a NaN loss, non-finite weights or score), 2 usage error (`UsageError`), 75 a run folder
in use by another command (`common.lock.Busy`).
"""
from __future__ import annotations

from common.errors import DataError, ScarceError, UsageError, first_line, run_cli

LMError = ScarceError  # the common base, under the name lm's modules have used

__all__ = ["CheckpointError", "DataError", "LMError", "TrainingDiverged", "UsageError", "first_line", "run_cli"]


class CheckpointError(ScarceError):
    """A run folder or checkpoint that is missing, incomplete or unreadable."""


class TrainingDiverged(ScarceError):
    """The loss became NaN or infinite; the message names the step."""
