"""One TOML table read with its key path: each mistake a one-line SpecError naming file and key.

Types are checked as each key is read, and `done` says which keys were never read, so a typo is
an error rather than a silent default.
"""
from __future__ import annotations

import math
from typing import Any

from pipelines.errors import SpecError


class TomlTable:
    """Reads one TOML table, checking types and remembering which keys were used."""

    def __init__(self, file: str, where: str, data: Any):
        if not isinstance(data, dict):
            raise SpecError(f"{file}: {where or 'top level'}: must be a table")
        self.file, self.where, self.data, self.used = file, where, data, set()

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def fail(self, name: str, problem: str) -> SpecError:
        return SpecError(f"{self.file}: {self.key(name)}: {problem}")

    def get(self, name: str, kind: type | tuple[type, ...], default: Any = None, required: bool = False) -> Any:
        self.used.add(name)
        if name not in self.data:
            if required:
                raise self.fail(name, "is required")
            return default
        value = self.data[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # TOML integers are fine where floats are asked for; booleans are not numbers here.
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise self.fail(name, f"must be {names} (got {value!r})")
        return value

    def choice(self, name: str, options: tuple[str, ...], default: str | None = None, required: bool = False) -> str | None:
        value = self.get(name, str, default, required)
        if value is not None and value not in options:
            raise self.fail(name, f"must be one of {', '.join(options)} (got {value!r})")
        return value

    def fraction(self, name: str, default: float) -> float:
        value = self.get(name, float, default)
        if not 0.0 <= value < 1.0:  # also false for NaN
            raise self.fail(name, f"must be a fraction in [0, 1) (got {value})")
        return value

    def ranged(self, name: str, kind: type, default: Any, low: float, high: float) -> Any:
        """An int or float in [low, high]; NaN and infinities are never in range."""
        value = self.get(name, kind, default)
        if not (math.isfinite(value) and low <= value <= high):
            raise self.fail(name, f"must be in [{low}, {high}] (got {value})")
        return value

    def table(self, name: str) -> "TomlTable":
        """The sub-table `name` (empty when absent), read the same way."""
        return TomlTable(self.file, self.key(name), self.get(name, dict, {}))

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise self.fail(unknown[0], "unknown key")
