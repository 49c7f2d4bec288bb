"""JAX's persistent compilation cache for the lm commands.

XLA takes seconds to compile a train step on CPU (more than a tiny model's whole training);
cached executables make a second run, a resume, an evaluation or a test start at once. Cached in
`$SCARCE_LM_CACHE/xla` (default `~/.cache/scarce-lm/xla`); `SCARCE_LM_NO_COMPILE_CACHE=1` turns it off.
"""
from __future__ import annotations

import os
from pathlib import Path

import jax


def enable_compile_cache() -> None:
    if os.environ.get("SCARCE_LM_NO_COMPILE_CACHE"):
        return
    base = os.environ.get("SCARCE_LM_CACHE") or Path.home() / ".cache" / "scarce-lm"
    folder = Path(base) / "xla"
    folder.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
