"""Small helpers the project's packages share: the cache folder, one-line error messages, atomic writes.

They live here because `augment` is the bottom layer (it imports nothing of ours) and
`pipelines` may import it; `lm` keeps its own copy, as its core imports neither.
"""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

CACHE_ENV = "SCARCE_LM_CACHE"


def cache_dir() -> Path:
    """The user's cache for this project: $SCARCE_LM_CACHE, else $XDG_CACHE_HOME/scarce-lm (~/.cache)."""
    base = os.environ.get(CACHE_ENV) or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "scarce-lm")
    return Path(base).expanduser()


def first_line(exc: BaseException | str, default: str = "") -> str:
    """The first non-empty line of an exception's message: errors we raise are one line long."""
    return (str(exc).strip().splitlines() or [default])[0]


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, then rename it over `path`.

    A reader (or a crash) sees the old file or the new one, never half of one; the temporary
    name is unique, so two writers never write into the same temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: str | Path, obj: Any, **dumps: Any) -> None:
    """`write_text_atomic` of `json.dumps(obj, **dumps)`."""
    write_text_atomic(path, json.dumps(obj, **dumps))
