"""Token data: encode once (cached), pack into fixed-length sequences, pool, batch deterministically.

* `token_stream` encodes documents as `[EOS] doc1 [EOS] doc2 [EOS] ...` (EOS separates documents
  and starts the stream, so every text token is a prediction target) and caches the result as
  `.npy` under `$SCARCE_LM_CACHE/tokens` (default `~/.cache/scarce-lm/tokens`), keyed by corpus
  name, version, split and the tokenizer's sha256 (and `ENCODING`): a corpus is encoded once
  per tokenizer.
* `pack` cuts a stream into sequences of `context + 1` tokens that overlap by one (sequence i is
  `stream[i*L : i*L + L + 1]`), so each token after the first is a target exactly once; the last,
  short sequence is padded with EOS and its padding masked out of the loss.
* A `Pool` is one body of packed training text: the real train split, or one augmenter's kept
  variants (joined with the corpus separator, so they look like the real text). A pool may
  carry `inputs` different from its tokens: noised text as the model's input while the targets
  stay the clean parent (`noised_pool`: the noised tokens aligned to the clean ones with
  difflib opcodes; a replaced span puts the noised tokens over the clean ones as far as they go,
  deletions and insertions leave the clean tokens).
* `Batches` walks a seeded permutation per epoch (`numpy` PCG64 seeded by `(seed, epoch)`: the
  same on every machine): each epoch is every real sequence once plus
  `round(n_real * share / (1 - share))` augmented sequences, split between the augmented pools by
  mixture weights, each pool contributing a fresh permutation of its sequences (tiled when the
  weight asks for more than it holds), all shuffled together. Its position `(epoch, index)` goes
  into every checkpoint, so a resumed run sees exactly the batches a straight run would. Every
  batch names its rows (pool, sequence), which is how cached teacher outputs are found.
"""
from __future__ import annotations

import difflib
import hashlib
from pathlib import Path
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from common.files import user_cache_dir, write_npy
from lm.errors import DataError
from lm.tokenizer import Tokenizer


# how `Tokenizer.encode` segments text, part of every cached stream's name: streams cached before
# it encoded line by line (a long text's tokens could depend on where a line fell) are not read
ENCODING = "lines"


def cache_dir() -> Path:
    return user_cache_dir() / "tokens"


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
    path = cache_dir() / f"{safe}-{tokenizer.sha256[:16]}-{ENCODING}.npy"
    if path.is_file():
        try:
            return np.load(path)
        except (OSError, ValueError):
            pass  # a torn cache file is rebuilt below
    stream = encode_documents(tokenizer, docs)
    try:
        write_npy(path, stream)
    except OSError:
        pass  # a full disk or a read-only cache folder: the stream is only not cached
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


REAL = "real"


@dataclass(frozen=True)
class Pool:
    """Packed sequences [n, context + 1]; `inputs` [n, context] replaces tokens[:, :-1] as the
    model's input when set (targets stay tokens[:, 1:])."""

    name: str
    packed: Packed
    inputs: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.packed)


def real_pool(tok: Tokenizer, docs: list[str], context: int, cache_key: str | None) -> Pool:
    """Documents with EOS between them (see `token_stream`), packed."""
    return Pool(REAL, pack(token_stream(tok, docs, cache_key), context, tok.eos_id))


def text_pool(name: str, tok: Tokenizer, texts: Sequence[str], context: int, separator: str) -> Pool:
    """Texts joined with the corpus separator into one document, packed."""
    return Pool(name, pack(token_stream(tok, [separator.join(texts)], None), context, tok.eos_id))


def align_noised(clean: list[int], noised: list[int]) -> list[int]:
    """`clean` with the noised tokens written over it where the two differ (same length as clean)."""
    out = list(clean)
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, clean, noised, autojunk=False).get_opcodes():
        if tag == "replace":
            n = min(i2 - i1, j2 - j1)
            out[i1:i1 + n] = noised[j1:j1 + n]
    return out


def noised_pool(name: str, tok: Tokenizer, pairs: Sequence[tuple[str, str]], context: int, separator: str) -> Pool:
    """(clean parent, noised variant) pairs -> a pool whose inputs are noised, targets clean."""
    sep = tok.encode(separator)
    clean, noisy = [tok.eos_id], [tok.eos_id]
    for i, (parent, variant) in enumerate(pairs):
        c = tok.encode(parent)
        if i:
            clean += sep
            noisy += sep
        clean += c
        noisy += align_noised(c, tok.encode(variant))
    cp = pack(np.asarray(clean + [tok.eos_id], np.int32), context, tok.eos_id)
    npk = pack(np.asarray(noisy + [tok.eos_id], np.int32), context, tok.eos_id)
    return Pool(name, cp, inputs=npk.tokens[:, :-1])


def pool_tokens(pools: Sequence[Pool]) -> int:
    return int(sum(p.packed.tokens.shape[0] * (p.packed.tokens.shape[1] - 1) for p in pools))


@dataclass(frozen=True)
class Batch:
    inputs: np.ndarray          # [B, T] what the model reads
    clean_inputs: np.ndarray    # [B, T] what a teacher reads (the same unless noised)
    targets: np.ndarray         # [B, T]
    mask: np.ndarray            # [B, T] float32
    pools: np.ndarray           # [B] pool number (index into Batches.pools)
    rows: np.ndarray            # [B] sequence number within the pool


class Batches:
    """Deterministic, resumable batches from a real pool plus weighted augmented pools."""

    def __init__(self, real: Pool, batch_size: int, seed: int, augmented: Sequence[Pool] = (),
                 weights: Mapping[str, float] | None = None, share: float = 0.0):
        if augmented and not 0.0 <= share < 1.0:
            raise DataError(f"augmented share must be in [0, 1), not {share}")
        self.pools = [real] + [p for p in augmented if len(p)]
        self.batch_size, self.seed = batch_size, seed
        weights = weights if weights is not None else {p.name: 1.0 for p in self.pools[1:]}
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

    @property
    def n_aug(self) -> int:
        return sum(self.per_pool[1:])

    def order(self, epoch: int) -> np.ndarray:
        """Rows (pool, sequence) of one epoch, in order; pool 0 is the real text. The real
        sequences come in an order set by the seed and epoch alone, whatever the augmented pools:
        two runs with one seed read the same real text in the same order (paired seeds), the
        augmented rows falling in between."""
        if epoch != self._order_epoch:
            n_real = len(self.pools[0])
            perm = np.random.default_rng([self.seed, epoch, 0]).permutation(n_real)
            real = np.stack([np.zeros(n_real, np.int64), perm], 1)
            parts = []
            for k in range(1, len(self.pools)):
                n = self.per_pool[k]
                if n:
                    perm = np.random.default_rng([self.seed, epoch, k]).permutation(len(self.pools[k]))
                    parts.append(np.stack([np.full(n, k, np.int64), np.resize(perm, n)], 1))
            if parts:
                aug = np.concatenate(parts)
                aug = aug[np.random.default_rng([self.seed, epoch, 0, 1]).permutation(len(aug))]
                slots = np.zeros(n_real + len(aug), bool)  # where the real rows go
                slots[np.random.default_rng([self.seed, epoch]).permutation(len(slots))[:n_real]] = True
                rows = np.empty((len(slots), 2), np.int64)
                rows[slots], rows[~slots] = real, aug
            else:
                rows = real
            self._order = rows
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
