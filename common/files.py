"""Files every package writes the same way: the user's cache folder, atomic writes, checksums.

`user_cache_dir()` is `$SCARCE_LM_CACHE`, else `$XDG_CACHE_HOME/scarce-lm` (`~/.cache/scarce-lm`):
downloads (`pipelines.fetch`), per-source output of gs:// corpora, NLTK data (`augment`), token
streams and compiled XLA (`lm`) live under it, each in its own sub-folder.
"""
from __future__ import annotations

import hashlib
import json
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

CACHE_ENV = "SCARCE_LM_CACHE"


def user_cache_dir() -> Path:
    """$SCARCE_LM_CACHE, else $XDG_CACHE_HOME/scarce-lm (~/.cache)."""
    base = os.environ.get(CACHE_ENV) or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "scarce-lm")
    return Path(base).expanduser()


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to; renamed over `path` when the block ends
    without an error, removed otherwise. A reader (or a crash) sees the old file or the new one,
    never half of one; the name is unique, so two writers never share a temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_npy(path: str | Path, array: Any) -> None:
    """Save `array` as a .npy file atomically (`replacing`): a re-run reads it whole or not at all."""
    import numpy as np

    with replacing(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically (`replacing`)."""
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, doc: Any, sort_keys: bool = False) -> None:
    """Write `doc` as indented JSON, with a final newline, atomically."""
    write_text_atomic(path, json.dumps(doc, indent=2, sort_keys=sort_keys) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
