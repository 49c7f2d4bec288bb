"""Training batches from real text plus weighted pools of augmented text, resumable.

Like `lm.data.Batches` (which it generalises): each epoch is every real sequence once plus
`round(n_real * share / (1 - share))` augmented sequences, shuffled together by a numpy PCG64
stream seeded by `(seed, epoch)`, so a resumed run sees exactly the batches of a straight one.
The augmented sequences are split between pools (one per augmenter) by mixture weights, and each
pool contributes a fresh permutation of its sequences, tiled when the weight asks for more.

A pool may carry `inputs` different from its tokens: noised text as the student's input while
the targets (and the teacher's input) stay the clean parent text.

Every batch also names its rows (pool, sequence), which is how cached teacher logits are found.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from lm.data import Packed, take_rows
from lm.errors import DataError

REAL = "real"


@dataclass(frozen=True)
class Pool:
    """Packed sequences [n, context + 1]; `inputs` [n, context] replaces tokens[:, :-1] as the
    student's input when set (targets stay tokens[:, 1:])."""

    name: str
    packed: Packed
    inputs: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.packed)


@dataclass(frozen=True)
class Batch:
    inputs: np.ndarray          # [B, T] what the student reads
    clean_inputs: np.ndarray    # [B, T] what the teacher reads (the same unless noised)
    targets: np.ndarray         # [B, T]
    mask: np.ndarray            # [B, T] float32
    pools: np.ndarray           # [B] pool number (index into MixBatches.pools)
    rows: np.ndarray            # [B] sequence number within the pool


class MixBatches:
    def __init__(self, real: Pool, augmented: list[Pool], weights: Mapping[str, float], share: float,
                 batch_size: int, seed: int):
        if augmented and not 0.0 <= share < 1.0:
            raise DataError(f"augmented share must be in [0, 1), not {share}")
        self.pools = [real] + [p for p in augmented if len(p)]
        self.batch_size, self.seed = batch_size, seed
        n_aug = round(len(real) * share / (1 - share)) if len(self.pools) > 1 else 0
        w = np.asarray([max(0.0, float(weights.get(p.name, 0.0))) for p in self.pools[1:]], np.float64)
        if w.sum() <= 0:
            n_aug = 0  # every augmenter weighted out: real text only
        self.per_pool = [len(real)] + ([int(x) for x in _apportion(n_aug, w / w.sum())] if n_aug else [0] * len(w))
        self.epoch, self.index = 0, 0
        self._order_epoch, self._order = -1, np.empty((0, 2), np.int64)

    @property
    def epoch_size(self) -> int:
        return sum(self.per_pool)

    def order(self, epoch: int) -> np.ndarray:
        """Rows (pool, sequence) of one epoch, in order."""
        if epoch != self._order_epoch:
            parts = [np.stack([np.zeros(len(self.pools[0]), np.int64), np.arange(len(self.pools[0]))], 1)]
            for k in range(1, len(self.pools)):
                n = self.per_pool[k]
                if n:
                    perm = np.random.default_rng([self.seed, epoch, k]).permutation(len(self.pools[k]))
                    parts.append(np.stack([np.full(n, k, np.int64), np.resize(perm, n)], 1))
            rows = np.concatenate(parts)
            self._order = rows[np.random.default_rng([self.seed, epoch]).permutation(len(rows))]
            self._order_epoch = epoch
        return self._order

    def next(self) -> Batch:
        rows, self.epoch, self.index = take_rows(self.order, self.epoch, self.index, self.batch_size)
        ctx = self.pools[0].packed.mask.shape[1]
        toks = np.empty((len(rows), ctx + 1), np.int32)
        inputs = np.empty((len(rows), ctx), np.int32)
        mask = np.empty((len(rows), ctx), np.float32)
        for k, pool in enumerate(self.pools):
            sel = rows[:, 0] == k
            if sel.any():
                idx = rows[sel, 1]
                toks[sel] = pool.packed.tokens[idx]
                mask[sel] = pool.packed.mask[idx]
                inputs[sel] = pool.inputs[idx] if pool.inputs is not None else pool.packed.tokens[idx, :-1]
        return Batch(inputs, toks[:, :-1], toks[:, 1:], mask, rows[:, 0], rows[:, 1])

    def plan(self, steps: int) -> dict[int, np.ndarray]:
        """The rows (pool index -> sequence numbers) the next `steps` batches will read; the
        position is left where it is."""
        rows, _, _ = take_rows(self.order, self.epoch, self.index, steps * self.batch_size)
        self.order(self.epoch)  # keep the cached order of the current epoch
        return {int(k): rows[rows[:, 0] == k, 1] for k in np.unique(rows[:, 0])}

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def restore(self, state: Mapping[str, int]) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])


def _apportion(total: int, shares: np.ndarray) -> np.ndarray:
    """Integers summing to `total`, proportional to `shares` (largest remainders)."""
    raw = shares * total
    out = np.floor(raw).astype(np.int64)
    for i in np.argsort(-(raw - out), kind="stable")[: total - int(out.sum())]:
        out[i] += 1
    return out
