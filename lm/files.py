"""JAX's persistent compilation cache, in the user's cache folder (`common.files`).

XLA takes seconds to compile a train step on CPU (more than a tiny model's whole training), so
cached executables (`user_cache_dir()/xla`) make a second run, a resume, an evaluation or a test
start at once. `SCARCE_LM_NO_COMPILE_CACHE=1` turns it off.
"""
from __future__ import annotations

import os

from common.files import user_cache_dir


def enable_compile_cache() -> None:
    if os.environ.get("SCARCE_LM_NO_COMPILE_CACHE"):
        return
    import jax

    folder = user_cache_dir() / "xla"
    folder.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
