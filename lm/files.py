"""Files the lm commands share: the cache folder, atomic JSON writes, checksums.

The cache (`cache_root()`: `$SCARCE_LM_CACHE`, default `~/.cache/scarce-lm`) holds encoded token streams
(`tokens/`) and JAX's persistent compilation cache (`xla/`): XLA takes seconds to compile a
train step on CPU (more than a tiny model's whole training), so cached executables make a second
run, a resume, an evaluation or a test start at once. `SCARCE_LM_NO_COMPILE_CACHE=1` turns the
latter off.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def cache_root() -> Path:
    """$SCARCE_LM_CACHE, else $XDG_CACHE_HOME/scarce-lm (~/.cache): the folder `augment.util` names too."""
    base = os.environ.get("SCARCE_LM_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "scarce-lm")
    return Path(base).expanduser()


def enable_compile_cache() -> None:
    if os.environ.get("SCARCE_LM_NO_COMPILE_CACHE"):
        return
    import jax

    folder = cache_root() / "xla"
    folder.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def write_json(path: Path, doc: Any, sort_keys: bool = False) -> None:
    """Write `doc` as indented JSON atomically: readers see the old file or the new one, whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=sort_keys) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
