"""Token data: encode once (cached), pack into fixed-length sequences, batch deterministically.

* `token_stream` encodes documents as `[EOS] doc1 [EOS] doc2 [EOS] ...` (EOS separates documents
  and starts the stream, so every text token is a prediction target) and caches the result as
  `.npy` under `$SCARCE_LM_CACHE/tokens` (default `~/.cache/scarce-lm/tokens`), keyed by corpus
  name, version, split and the tokenizer's sha256: a corpus is encoded once per tokenizer.
* `pack` cuts a stream into sequences of `context + 1` tokens that overlap by one (sequence i is
  `stream[i*L : i*L + L + 1]`), so each token after the first is a target exactly once; the last,
  short sequence is padded with EOS and its padding masked out of the loss.
* `Batches` walks a seeded permutation of the sequences per epoch (`numpy` PCG64 seeded by
  `(seed, epoch)`: the same on every machine); its position `(epoch, index)` goes into every
  checkpoint, so a resumed run sees exactly the batches a straight run would. With augmented text,
  each epoch is every real sequence once plus `round(n_real * w / (1 - w))` augmented ones
  (w = the augmented mixture weight), shuffled together.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from lm.errors import DataError
from lm.tokenizer import Tokenizer


def cache_dir() -> Path:
    base = os.environ.get("SCARCE_LM_CACHE") or Path.home() / ".cache" / "scarce-lm"
    return Path(base) / "tokens"


def encode_documents(tokenizer: Tokenizer, docs: Iterable[str]) -> np.ndarray:
    eos = tokenizer.eos_id
    parts: list[int] = [eos]
    for doc in docs:
        parts += tokenizer.encode(doc)
        parts.append(eos)
    return np.asarray(parts, dtype=np.int32)


def token_stream(tokenizer: Tokenizer, docs: list[str], key: str | None) -> np.ndarray:
    """Encoded documents, from the cache when `key` (corpus name/version/split) was seen before."""
    if key is None:
        return encode_documents(tokenizer, docs)
    safe = hashlib.sha1(key.encode()).hexdigest()[:12]
    path = cache_dir() / f"{safe}-{tokenizer.sha256[:16]}.npy"
    if path.is_file():
        try:
            return np.load(path)
        except (OSError, ValueError):
            pass  # a torn cache file is rebuilt below
    stream = encode_documents(tokenizer, docs)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, stream)
    os.replace(tmp, path)  # atomic: readers see a whole file or none
    return stream


@dataclass(frozen=True)
class Packed:
    """`tokens[i]` is sequence i (length context + 1); `mask[i, j]` weighs target tokens[i, j + 1]."""

    tokens: np.ndarray
    mask: np.ndarray

    def __len__(self) -> int:
        return len(self.tokens)


def pack(stream: np.ndarray, context: int, pad_id: int) -> Packed:
    if len(stream) < 2:
        raise DataError("no tokens to train on: the split is empty")
    n = -(-(len(stream) - 1) // context)  # ceil: the last partial sequence is kept, padded
    padded = np.full(n * context + 1, pad_id, dtype=np.int32)
    padded[:len(stream)] = stream
    idx = np.arange(n)[:, None] * context + np.arange(context + 1)[None, :]
    mask = (idx[:, 1:] < len(stream)).astype(np.float32)
    return Packed(tokens=padded[idx], mask=mask)


def take_rows(order: Callable[[int], np.ndarray], epoch: int, index: int, n: int) -> tuple[np.ndarray, int, int]:
    """The next `n` rows of a stream of epochs (`order(epoch)`: that epoch's rows in order) from
    position (epoch, index), and the position after them."""
    picked: list[np.ndarray] = []
    while n > 0:
        rows = order(epoch)
        take = rows[index:index + n]
        picked.append(take)
        n -= len(take)
        index += len(take)
        if index >= len(rows):
            epoch, index = epoch + 1, 0
    return (np.concatenate(picked) if picked else np.empty((0, 2), np.int64)), epoch, index


class Batches:
    """Deterministic, resumable batches of (inputs, targets, mask), each [batch, context]."""

    def __init__(self, real: Packed, batch_size: int, seed: int,
                 augmented: Packed | None = None, augmented_weight: float = 0.0):
        if augmented is not None and not 0.0 <= augmented_weight < 1.0:
            raise DataError(f"augmented mixture weight must be in [0, 1), not {augmented_weight}")
        self.real, self.aug, self.batch_size, self.seed = real, augmented, batch_size, seed
        self.n_aug = round(len(real) * augmented_weight / (1 - augmented_weight)) if augmented is not None else 0
        self.epoch, self.index = 0, 0
        self._order_epoch, self._order = -1, np.empty((0, 2), np.int64)

    @property
    def epoch_size(self) -> int:
        return len(self.real) + self.n_aug

    def order(self, epoch: int) -> np.ndarray:
        """Rows (pool, sequence index) in this epoch's order; pool 0 is real text, 1 augmented."""
        if epoch != self._order_epoch:
            rng = np.random.default_rng([self.seed, epoch])
            rows = [np.stack([np.zeros(len(self.real), np.int64), np.arange(len(self.real))], 1)]
            if self.n_aug:
                # augmented sequences: a fresh permutation of the pool, tiled when the weight asks
                # for more than the pool holds
                perm = np.random.default_rng([self.seed, epoch, 1]).permutation(len(self.aug))
                picks = np.resize(perm, self.n_aug)
                rows.append(np.stack([np.ones(self.n_aug, np.int64), picks], 1))
            rows_all = np.concatenate(rows)
            self._order = rows_all[rng.permutation(len(rows_all))]
            self._order_epoch = epoch
        return self._order

    def next(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows, self.epoch, self.index = take_rows(self.order, self.epoch, self.index, self.batch_size)
        toks = np.empty((len(rows), self.real.tokens.shape[1]), np.int32)
        mask = np.empty((len(rows), self.real.mask.shape[1]), np.float32)
        for pool, packed in ((0, self.real), (1, self.aug)):
            sel = rows[:, 0] == pool
            if sel.any():
                toks[sel] = packed.tokens[rows[sel, 1]]
                mask[sel] = packed.mask[rows[sel, 1]]
        return toks[:, :-1], toks[:, 1:], mask

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def restore(self, state: dict[str, int]) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
