"""What a finished build says on stderr beyond its summary: sources rejected whole, and empty
results (no record kept, an empty split). stats.json holds both too; these lines make them
impossible to miss, one line each. Build and refresh share them (see their --allow-empty).
"""
from __future__ import annotations

import sys
from typing import Any

from common.snapshot_format import SPLITS
from pipelines.readers import WHOLE_SOURCE, whole_source_hint
from pipelines.spec import CorpusSpec

ALLOW_EMPTY_HINT = "pass --allow-empty to accept an empty result"


def whole_source_warnings(spec: CorpusSpec, stats: dict[str, Any]) -> list[str]:
    """One line per source that the reader rejected whole (binary, undeclared UTF-16, ...)."""
    lines = []
    for source in spec.sources:
        for reason in stats["sources"].get(source.name, {}).get("by_reason", {}):
            if reason in WHOLE_SOURCE:
                lines.append(f"source {source.name} ({source.location}): rejected whole as {reason}: "
                             f"{whole_source_hint(reason, source.name)}")
    return lines


def empty_warnings(name: str, version: str, stats: dict[str, Any]) -> list[str]:
    """One line if nothing was kept, else one per empty split; none when every split has records."""
    if not stats["kept"]:
        return [f"{name} {version}: no records kept: all {stats['input']} input units were rejected "
                f"({stats['rejected']}) or duplicates ({stats['duplicates']}); see rejected/ in the snapshot"]
    return [f"{name} {version}: split {s} is empty" for s in SPLITS if not stats["splits"].get(s)]


def announce(spec: CorpusSpec, version: str, stats: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Print every notice of a finished build or refresh; returns (all of them, the empty ones)."""
    empty = empty_warnings(spec.name, version, stats)
    notices = whole_source_warnings(spec, stats) + empty
    warn(notices)
    return notices, empty


def warn(lines: list[str]) -> None:
    for line in lines:
        print(f"warning: {line}", file=sys.stderr)
