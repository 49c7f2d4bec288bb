"""Cached top-k teacher outputs: `RUN/teacher-cache/POOL.{indices,logprobs,filled}.npy` + `meta.json`.

For every packed sequence of a pool (see `lm.data`) and every position, the teacher's K most
likely next tokens (`indices`, uint16 when the vocabulary allows, else int32) and their
log-probabilities at the distillation temperature (`logprobs`, float16: logits / T less their
log-partition, so the mass outside the K tokens is 1 - sum exp(logprobs) and both tails of
`lm.losses.kl_topk` come from the cache). The teacher reads the clean input of each sequence.

The cache fills as the students ask: a batch's rows that are not cached yet go through the
teacher (one jitted top-k forward, padded to the batch size) and are stored; every later visit
(the next epoch, the next student) reads them. So the teacher never runs twice on a sequence and
never runs on a sequence no student reads. `filled.npy` marks the stored rows; it is saved with
every checkpoint of the student, and a row whose flag was lost is simply computed again. A
pool is started afresh when its tokens, the teacher, K or T change (`meta.json` keys them).

`pays()`: computing the teacher in each step costs `students x steps x batch x context` teacher
tokens; the cache costs at most the pools' size.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from common.files import read_json, write_json, write_npy
from lm.data import Batch, Pool
from lm.losses import TopK

if TYPE_CHECKING:
    from lm.distill.ngram_teacher import NgramMix

CACHE_DIR = "teacher-cache"


def pool_key(pool: Pool, teacher_id: str, k: int, temperature: float) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(pool.packed.tokens).tobytes())
    h.update(f"{teacher_id}|{k}|{temperature}".encode())
    return h.hexdigest()[:20]


def pays(students: int, steps: int, batch: int, context: int, pool_tokens: int) -> bool:
    """A cache pays when the students would read more teacher tokens than the pools hold."""
    return students * steps * batch * context > pool_tokens


class TeacherCache:
    """Top-k teacher outputs for pools of sequences, filled on demand, memory-mapped."""

    def __init__(self, run_dir: Path, teacher_id: str, k: int, temperature: float,
                 apply: Callable, params: Any, mix: NgramMix | None = None):
        self.dir = Path(run_dir) / CACHE_DIR
        self.k, self.temperature, self.mix = k, temperature, mix
        # a mixed cache is its own (files and key): the teacher's alone stays valid beside it
        self.tag = f"+{mix.key}" if mix else ""
        self.teacher_id = teacher_id + self.tag
        self.params = params
        self._open: dict[str, dict[str, Any]] = {}
        self.computed_tokens, self.seconds = 0, 0.0

        @jax.jit
        def top(p, x):
            logp = jax.nn.log_softmax(apply(p, x).astype(jnp.float32) / temperature, axis=-1)
            vals, idx = jax.lax.top_k(logp, k)
            return idx, vals.astype(jnp.float16)

        self._top = top

    # ---- files -------------------------------------------------------------------------------
    def _meta(self) -> dict:
        try:
            return read_json(self.dir / "meta.json")
        except (OSError, ValueError):
            return {}

    def _write_meta(self, meta: dict) -> None:
        write_json(self.dir / "meta.json", meta, sort_keys=True)

    def _path(self, name: str, part: str) -> Path:
        return self.dir / f"{name}.{part}.npy"

    def prepare(self, pools: list[Pool]) -> None:
        """Open (or start) the cache of every pool."""
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self._meta()
        for pool in pools:
            key = pool_key(pool, self.teacher_id, self.k, self.temperature)
            name = pool.name + self.tag
            if self._open.get(name, {}).get("key") == key:
                continue
            n, ctx = pool.packed.tokens.shape[0], pool.packed.tokens.shape[1] - 1
            idx_p, val_p, fill_p = (self._path(name, x) for x in ("indices", "logprobs", "filled"))
            fresh = meta.get(name, {}).get("key") != key or not (idx_p.is_file() and val_p.is_file())
            if fresh:
                dtype = np.uint16 if int(pool.packed.tokens.max(initial=0)) < 65536 else np.int32
                idx = np.lib.format.open_memmap(idx_p, "w+", dtype, (n, ctx, self.k))
                val = np.lib.format.open_memmap(val_p, "w+", np.float16, (n, ctx, self.k))
                filled = np.zeros(n, bool)
                write_npy(fill_p, filled)
                meta[name] = {"key": key, "sequences": n, "context": ctx, "k": self.k,
                              "temperature": self.temperature, "teacher": self.teacher_id}
                self._write_meta(meta)
            else:
                idx = np.load(idx_p, mmap_mode="r+")
                val = np.load(val_p, mmap_mode="r+")
                try:
                    filled = np.load(fill_p)
                except (OSError, ValueError):
                    filled = np.zeros(n, bool)  # lost flags: those rows are computed again
            self._open[name] = {"indices": idx, "logprobs": val, "filled": filled, "key": key}

    def flush(self) -> None:
        """Write the stored rows and then their flags (flags never run ahead of the data)."""
        for name, c in self._open.items():
            c["indices"].flush()
            c["logprobs"].flush()
            write_npy(self._path(name, "filled"), c["filled"])

    # ---- filling -----------------------------------------------------------------------------
    def _compute(self, pool: Pool, rows: np.ndarray, width: int) -> None:
        """Teacher top-k of `rows` of a pool, in batches of `width` rows (the last one padded)."""
        c = self._open[pool.name + self.tag]
        start = time.perf_counter()
        for i in range(0, len(rows), width):
            r = rows[i:i + width]
            x = pool.packed.tokens[r, :-1]
            if len(r) < width:
                x = np.concatenate([x, np.zeros((width - len(r), x.shape[1]), x.dtype)])
            idx, val = (np.asarray(a) for a in self._top(self.params, jnp.asarray(x)))
            if self.mix:
                val = self.mix.mix(x, idx, val).astype(np.float16)
            c["indices"][r] = idx[:len(r)]
            c["logprobs"][r] = val[:len(r)]
            c["filled"][r] = True
            self.computed_tokens += len(r) * x.shape[1]
        self.seconds += time.perf_counter() - start

    def fill(self, pools: list[Pool], rows: dict[int, np.ndarray], width: int, quiet: bool = True) -> None:
        """Compute, in full batches, every planned row (pool index -> rows) not cached yet."""
        from tqdm import tqdm
        todo = []
        for k, r in rows.items():
            c = self._open[pools[k].name + self.tag]
            r = np.unique(r)
            todo.append((pools[k], r[~c["filled"][r]]))
        total = sum(len(r) for _, r in todo)
        with tqdm(total=total, desc="teacher cache", unit="seq", disable=quiet or not total) as bar:
            for pool, r in todo:
                for i in range(0, len(r), width * 8):
                    self._compute(pool, r[i:i + width * 8], width)
                    bar.update(len(r[i:i + width * 8]))
        self.flush()

    # ---- reading -----------------------------------------------------------------------------
    def lookup(self, batch: Batch, pools: list[Pool]) -> TopK:
        """The top-k of every row of a batch ([B, T, K]); rows not cached yet are computed first."""
        b, t = batch.targets.shape
        out_i = np.empty((b, t, self.k), np.int32)
        out_v = np.empty((b, t, self.k), np.float16)
        for k in np.unique(batch.pools):
            sel = batch.pools == k
            rows = batch.rows[sel]
            c = self._open[pools[int(k)].name + self.tag]
            missing = rows[~c["filled"][rows]]
            if len(missing):
                self._compute(pools[int(k)], np.unique(missing), b)
            out_i[sel] = c["indices"][rows]
            out_v[sel] = c["logprobs"][rows]
        return TopK(out_i, out_v)

    def stats(self) -> dict[str, Any]:
        """What the cache holds on disk (every pool ever cached in this run) and what this process computed."""
        rows = total = 0
        for name in self._meta():
            try:
                filled = np.load(self._path(name, "filled"))
            except (OSError, ValueError):
                continue
            rows, total = rows + int(filled.sum()), total + len(filled)
        size = sum(p.stat().st_size for p in self.dir.glob("*.npy")) if self.dir.is_dir() else 0
        return {"k": self.k, "temperature": self.temperature, "rows_filled": rows, "rows": total,
                "teacher_tokens_this_run": self.computed_tokens, "teacher_seconds_this_run": round(self.seconds, 2),
                "bytes": size}
